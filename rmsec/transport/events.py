"""Events a transport machine reports through ``next_event()``: small frozen dataclasses."""

from __future__ import annotations

import dataclasses

from rmsec.wire.packets import Addr


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A whole application message, delivered in order and exactly once per stream."""

    stream: int
    seq: int  # sequence number of its first packet
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Bound(Event):
    """This member is attached to ``parent`` (first time, or after re-affiliation)."""

    parent_id: bytes
    parent_addr: Addr
    level: int
    previous_id: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class HeadLost(Event):
    """The member's head went silent; it is re-affiliating."""

    parent_id: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ChildJoined(Event):
    node_id: bytes
    addr: Addr
    role: int


@dataclasses.dataclass(frozen=True, slots=True)
class ChildLost(Event):
    """A child left, went silent or was pruned; ``reason`` is a :class:`~rmsec.wire.packets.Reason`."""

    node_id: bytes
    addr: Addr
    reason: int


@dataclasses.dataclass(frozen=True, slots=True)
class MemberPruned(Event):
    """Slow-receiver policy ``prune`` removed a member (reported by the head that did it)."""

    node_id: bytes
    addr: Addr
    lag_packets: int


@dataclasses.dataclass(frozen=True, slots=True)
class PrunedByParent(Event):
    """This node was removed from the tree by its parent."""

    reason: int


@dataclasses.dataclass(frozen=True, slots=True)
class GapSkipped(Event):
    """Policy ``skip``: packets ``[start, end)`` of ``stream`` will never be delivered here."""

    stream: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """Every packet of ``stream`` up to its announced end has been delivered."""

    stream: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamConfirmed(Event):
    """Sender side: every live member has acknowledged the whole (ended) stream."""

    stream: int
