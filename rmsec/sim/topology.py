"""Plan of a repair tree for a simulated group: which head sits under which, who serves whom.

The transport builds its tree itself (solicit / offer / bind); the plan only decides each
node's bootstrap list so that the tree that forms is the one we mean to measure: every
receiver below a repair head, heads no more than ``max_children`` wide, as many levels as
needed.  The root (the sender) takes heads only, because a receiver bound directly to the
sender would be repaired by the sender and would blur the "share served by heads" figure.
"""

from __future__ import annotations

import dataclasses
import heapq
import math

from rmsec.errors import ConfigError

ROOT = -1


@dataclasses.dataclass(frozen=True, slots=True)
class TreePlan:
    """``head_parent[h]`` is a head index or :data:`ROOT`; levels count from 1 below the root."""

    head_level: tuple[int, ...]
    head_parent: tuple[int, ...]
    receiver_head: tuple[int, ...]
    max_children: int

    @property
    def heads(self) -> int:
        return len(self.head_level)

    @property
    def depth(self) -> int:
        return max(self.head_level, default=0)

    def children_of(self, head: int) -> tuple[list[int], list[int]]:
        """(child heads, receivers) planned under ``head`` (or under the root for ``ROOT``)."""
        heads = [h for h, p in enumerate(self.head_parent) if p == head]
        receivers = [r for r, h in enumerate(self.receiver_head) if h == head]
        return heads, receivers


def default_heads(receivers: int, max_children: int = 32) -> int:
    """``ceil(N / (max_children - 2))``: heads run two below capacity, room to re-affiliate."""
    fill = max(1, max_children - 2)
    return max(1, math.ceil(receivers / fill)) if receivers else 0


def plan_tree(
    receivers: int, *, heads: int | None = None, max_children: int = 32, root_children: int | None = None
) -> TreePlan:
    """Lay ``heads`` out breadth first below the root, then spread receivers over free slots.

    Level 1 holds up to ``root_children`` heads (default ``max_children``) under the root;
    each further level hangs round-robin under the level above, at most ``max_children`` per
    parent.  A fixed ``root_children`` keeps the sender's fan-out, and so its control load,
    the same at every group size: larger groups get deeper trees instead.  Receivers go, one
    by one, to the head with the most free slots (ties to the lower index), which evens out
    the load between heads that carry child heads and those that do not.
    """
    if receivers < 0 or max_children < 1 or (root_children is not None and root_children < 1):
        raise ConfigError("receivers must be >= 0, max_children and root_children >= 1")
    count = default_heads(receivers, max_children) if heads is None else heads
    if count < 0 or (receivers and count == 0):
        raise ConfigError("at least one repair head is needed for a group with receivers")
    level: list[int] = []
    parent: list[int] = []
    previous = [ROOT]
    depth = 1
    while len(level) < count:
        fan_out = root_children if depth == 1 and root_children is not None else max_children
        width = min(count - len(level), len(previous) * fan_out)
        start = len(level)
        for k in range(width):
            level.append(depth)
            parent.append(previous[k % len(previous)])
        previous = list(range(start, start + width))
        depth += 1
    free = [max_children] * count
    for p in parent:
        if p != ROOT:
            free[p] -= 1
    if sum(free) < receivers:
        raise ConfigError(
            f"{count} heads of {max_children} children cannot hold {receivers} receivers; "
            f"use at least {default_heads(receivers, max_children)}"
        )
    order = [(-f, h) for h, f in enumerate(free)]
    heapq.heapify(order)
    assignment: list[int] = []
    for _ in range(receivers):
        slots, head = heapq.heappop(order)
        assignment.append(head)
        if slots + 1 < 0:
            heapq.heappush(order, (slots + 1, head))
    return TreePlan(tuple(level), tuple(parent), tuple(assignment), max_children)
