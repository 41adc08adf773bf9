"""A whole group in one trio run: one sender, some heads, many receivers.

Used by ``rmsec demo`` and by the trio / UDP tests, so what the demo shows is what CI checks.
Every receiver records the count and SHA-256 of what it delivered (in order), which makes
"everyone got everything, exactly once, in order" a comparison of digests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

import rmsec.api as api
from rmsec.errors import Pruned
from rmsec.io.base import Addr, Network
from rmsec.transport import events
from rmsec.transport.config import JoinPolicyName, TransportConfig

Progress = Callable[[str], None]


@dataclasses.dataclass(slots=True)
class Delivery:
    """What one receiver delivered: count, running SHA-256, and whether order held."""

    address: Addr
    count: int = 0
    bytes: int = 0
    in_order: bool = True
    pruned: bool = False
    parent: Addr | None = None
    _hash: Any = dataclasses.field(default_factory=hashlib.sha256, repr=False)
    _last_seq: dict[int, int] = dataclasses.field(default_factory=dict, repr=False)
    _changed: trio.Event = dataclasses.field(default_factory=trio.Event, repr=False)

    def add(self, message: api.Message) -> None:
        last = self._last_seq.get(message.sender, -1)
        if message.seq <= last:
            self.in_order = False
        self._last_seq[message.sender] = message.seq
        self.count += 1
        self.bytes += len(message.data)
        self._hash.update(message.data)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_count(self, count: int) -> None:
        while self.count < count:
            await self._changed.wait()

    @property
    def sha256(self) -> str:
        return str(self._hash.hexdigest())


def message_payloads(count: int, size: int, seed: int) -> list[bytes]:
    """Deterministic, distinct messages (the first 8 bytes number them)."""
    rng = random.Random(seed)
    return [i.to_bytes(8, "big") + rng.randbytes(max(0, size - 8)) for i in range(count)]


def digest(messages: list[bytes]) -> str:
    h = hashlib.sha256()
    for m in messages:
        h.update(m)
    return h.hexdigest()


def tree_config(receivers: int, heads: int, **changes: Any) -> TransportConfig:
    """A config whose ``max_children`` makes the heads useful: without it every receiver of a
    small group would bind to the sender directly (the lowest level wins)."""
    if heads > 0 and "max_children" not in changes:
        changes["max_children"] = max(2, heads, math.ceil(receivers / heads))
    return TransportConfig(**changes)


async def collect(rx: api.ReceiverChannel, delivery: Delivery) -> None:
    """Iterate ``rx`` to its end into ``delivery`` (a prune is recorded, not raised)."""
    try:
        async for message in rx:
            delivery.add(message)
    except Pruned:
        delivery.pruned = True
    delivery.parent = rx.bound_to


@dataclasses.dataclass(slots=True)
class GroupResult:
    sent_count: int
    sent_sha256: str
    deliveries: list[Delivery]
    elapsed: float
    sender_stats: dict[str, int]
    head_stats: list[dict[str, int]]
    root_address: Addr
    sender_events: list[events.Event]
    addresses: list[Addr]  # every head and receiver

    @property
    def all_identical(self) -> bool:
        return all(
            d.count == self.sent_count and d.sha256 == self.sent_sha256 and d.in_order
            for d in self.deliveries
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": {"count": self.sent_count, "sha256": self.sent_sha256},
            "receivers": [
                {
                    "address": list(d.address),
                    "count": d.count,
                    "sha256": d.sha256,
                    "in_order": d.in_order,
                    "pruned": d.pruned,
                }
                for d in self.deliveries
            ],
            "all_identical": self.all_identical,
            "elapsed": round(self.elapsed, 3),
            "sender_stats": self.sender_stats,
        }


@asynccontextmanager
async def background(
    nursery: trio.Nursery,
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Enter async context managers in tasks of ``nursery`` and keep them open until the block
    ends: ``node = await enter(rmsec.open_head, ann, network=net)``.  Leaving the block exits
    every one of them (most recent first) and waits for that."""
    stops: list[tuple[trio.Event, trio.Event]] = []

    async def hold(cm: Any, stop: trio.Event, done: trio.Event, *, task_status: Any) -> None:
        try:
            async with cm as node:
                task_status.started(node)
                await stop.wait()
        finally:
            done.set()

    async def enter(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        stop, done = trio.Event(), trio.Event()
        node = await nursery.start(hold, factory(*args, **kwargs), stop, done)
        stops.append((stop, done))
        return node

    try:
        yield enter
    finally:
        for stop, _ in reversed(stops):
            stop.set()
        # Not shielded: a sender waiting for confirmation must stay cancellable by the caller.
        for _, done in stops:
            await done.wait()


async def enter_all(
    enter: Callable[..., Awaitable[Any]], count: int, factory: Callable[..., Any], *args: Any,
    **kwargs: Any,
) -> list[Any]:
    """Open ``count`` nodes concurrently with ``enter`` (from :func:`background`), in order."""
    nodes: list[Any] = [None] * count

    async def one(index: int) -> None:
        nodes[index] = await enter(factory, *args, **kwargs)

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return nodes


async def run_group(
    network: Network,
    *,
    receivers: int = 20,
    heads: int = 2,
    messages: int = 100,
    size: int = 1024,
    seed: int = 0,
    config: TransportConfig | None = None,
    join_policy: JoinPolicyName | None = None,
    progress: Progress | None = None,
) -> GroupResult:
    """Run the whole group once: open everyone, send, close, wait for every receiver's end."""
    cfg = config or tree_config(receivers, heads, multicast=network.requires_multicast)
    payloads = message_payloads(messages, size, seed)
    deliveries: list[Delivery] = []
    head_stats: list[dict[str, int]] = []
    say = progress or (lambda text: None)
    started = trio.current_time()
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        tx: api.SenderChannel = await enter(api.open_sender, config=cfg, network=network)
        head_nodes = await enter_all(enter, heads, api.open_head, tx.announcement, network=network)
        say(f"sender and {heads} heads ready")
        rx_nodes = await enter_all(
            enter, receivers, api.open_receiver, tx.announcement, network=network,
            join_policy=join_policy,
        )
        say(f"{receivers} receivers bound; sending {messages} x {size} bytes")
        async with trio.open_nursery() as receiving:
            for rx in rx_nodes:
                delivery = Delivery(rx.address)
                deliveries.append(delivery)
                receiving.start_soon(collect, rx, delivery)
            step = max(1, messages // 10)
            for i, payload in enumerate(payloads):
                await tx.send(payload)
                if (i + 1) % step == 0 and messages >= 50:
                    say(f"queued {i + 1}/{messages}")
            await tx.aclose()
            say("stream confirmed by every member")
        sender_stats = tx.stats()
        head_stats = [h.stats() for h in head_nodes]
        sender_events = list(tx.events)
        addresses = [n.address for n in (*head_nodes, *rx_nodes)]
    return GroupResult(
        sent_count=messages,
        sent_sha256=digest(payloads),
        deliveries=deliveries,
        elapsed=trio.current_time() - started,
        sender_stats=sender_stats,
        head_stats=head_stats,
        root_address=tx.address,
        sender_events=sender_events,
        addresses=addresses,
    )
