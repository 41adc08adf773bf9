"""The root sender's in-flight bound: the queue in front of a slow link stays near
``queue_target`` (so repairs do not wait behind it), without holding a fast path back, and a
child far behind is left to the slow-receiver policy."""

from __future__ import annotations

import heapq

import pytest

from rmsec.transport import Receiver, Sender, TransportConfig
from rmsec.transport.events import Event, MemberPruned
from rmsec.transport.inflight import MIN_RTT_WINDOW, InFlightLimit
from rmsec.wire.packets import Addr
from tests.unit.shuttle import Shuttle
from tests.unit.test_transport_basic import ROOT, SESSION, nid

RX: Addr = ("rx", 0)


class Bottleneck(Shuttle):
    """A shuttle whose link into ``RX`` carries ``rate`` datagrams per second: datagrams wait
    in a FIFO in front of it (a socket buffer filling), and their wait is recorded."""

    def __init__(self, *, rate: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rate = rate
        self.link_free = 0.0
        self.waits: list[float] = []

    def flush(self, addr: Addr) -> None:
        node = self.nodes[addr]
        for data, dest in node.datagrams_to_send(self.now):
            self.counter += 1
            arrive = self.now + self.delay
            if dest == RX:
                start = max(arrive, self.link_free)
                self.link_free = start + 1 / self.rate
                self.waits.append(start - arrive)
                arrive = self.link_free
            heapq.heappush(self.heap, (arrive, self.counter, data, addr, dest))
        while (event := node.next_event()) is not None:
            self.events[addr].append(event)


def _run(config: TransportConfig, *, rate: float, messages: int) -> tuple[Bottleneck, Sender, Receiver]:
    net = Bottleneck(rate=rate, delay=0.0002, seed=3)
    sender = net.add(ROOT, Sender(config, session=SESSION, node_id=nid(1), rng=net.rng, now=0.0))
    rx = net.add(RX, Receiver(config, session=SESSION, node_id=nid(2), rng=net.rng, now=0.0,
                              bootstrap=[ROOT]))
    net.run(0.5)
    start = net.now
    for i in range(messages):
        sender.send(i.to_bytes(4, "big") * 100, net.now)
    sender.close(net.now)
    net.flush(ROOT)
    net.run(start + 60, stop=lambda: sender.confirmed)
    assert sender.confirmed
    return net, sender, rx


def test_the_queue_in_front_of_a_slow_link_stays_near_the_target() -> None:
    config = TransportConfig(start_rate=50_000_000.0)  # the source can outrun the link at once
    bounded, _, rx = _run(config, rate=100_000, messages=6000)
    unbounded, _, _ = _run(config.replace(queue_target=0), rate=100_000, messages=6000)
    assert rx.stats()["messages_delivered"] == 6000
    # Without the bound the queue grows to the cache window (4096 packets: ~41 ms at
    # 100,000/s); with it, it stays near 2 x min_rtt + queue_target (a few ms; the floor of
    # 8 x ack_window = 256 packets is 2.6 ms at this rate).
    assert max(unbounded.waits) > 0.03
    steady = sorted(bounded.waits[1000:])
    assert steady[int(0.99 * len(steady))] < 0.006
    # ... and the link stays busy: the bound costs no throughput.
    assert bounded.now <= unbounded.now * 1.05


def test_a_fast_path_is_not_held_back() -> None:
    config = TransportConfig(start_rate=50_000_000.0)
    fast, sender, _ = _run(config, rate=500_000, messages=6000)
    unbounded, _, _ = _run(config.replace(queue_target=0), rate=500_000, messages=6000)
    assert sender._inflight is not None and sender._inflight.limit(0) is not None  # measured
    assert fast.now <= unbounded.now * 1.1


class NotReading(Receiver):
    """A receiver whose application stops taking messages once ``reading`` is False."""

    reading = True

    def next_event(self) -> Event | None:
        return super().next_event() if self.reading else None


def test_a_child_far_behind_is_left_to_the_slow_receiver_policy() -> None:
    """A child whose application stops reading is pruned under ``prune`` as before, and
    the others get everything: the in-flight bound does not turn ``prune`` into ``block``
    (children half a cache window behind do not count towards it; hellos keep even a
    non-reading child's ``next_known`` moving, which also keeps the bound from sticking)."""
    config = TransportConfig(start_rate=50_000_000.0, slow_timeout=0.5, cache_packets=512)
    net = Shuttle(delay=0.0002, seed=4)
    sender = net.add(ROOT, Sender(config, session=SESSION, node_id=nid(1), rng=net.rng, now=0.0))
    net.add(("rx", 0), Receiver(config, session=SESSION, node_id=nid(10), rng=net.rng, now=0.0,
                                bootstrap=[ROOT]))
    slow = net.add(("rx", 1), NotReading(config.replace(receive_buffer=50_000), session=SESSION,
                                         node_id=nid(11), rng=net.rng, now=0.0, bootstrap=[ROOT]))
    net.run(0.5)
    for i in range(1000):
        sender.send(i.to_bytes(4, "big") * 100, net.now)
    net.flush(ROOT)
    net.run(net.now + 1.0)
    assert sender._inflight is not None and sender._inflight.limit(0) is not None  # measured
    slow.reading = False  # its application stops reading: its buffer fills, it falls behind
    for i in range(1000, 3000):
        sender.send(i.to_bytes(4, "big") * 100, net.now)
    sender.close(net.now)
    net.flush(ROOT)
    net.run(net.now + 30, stop=lambda: sender.confirmed)
    assert sender.confirmed
    assert any(isinstance(e, MemberPruned) for e in net.events[ROOT])
    assert net.nodes[("rx", 0)].stats()["messages_delivered"] == 3000


def test_the_bound_follows_rate_and_round_trip() -> None:
    limit = InFlightLimit(stride=32, min_packets=256, queue_target=0.002)
    assert limit.limit(0) is None  # nothing measured: only the cache window applies
    for seq in range(0, 3200, 32):
        limit.on_sent(seq, seq / 100_000)  # 100,000 packets/s
    now = 0.0
    for seen in range(32, 3200, 32):  # each seen 1 ms after it was sent
        now = seen / 100_000 + 0.001
        limit.on_seen(seen, now)
    assert limit.min_rtt == pytest.approx(0.001 + 31 / 100_000, abs=1e-4)
    assert limit.rate == pytest.approx(100_000, rel=0.05)
    assert limit.limit(1000) == 1000 + int(limit.rate * (2 * limit.min_rtt + 0.002))
    # a slow path: the bound falls to the floor, never below
    slow = InFlightLimit(stride=32, min_packets=256, queue_target=0.002)
    slow.on_sent(0, 0.0)
    slow.on_seen(32, 0.5)
    slow.on_sent(32, 0.5)
    slow.on_seen(64, 1.0)
    assert slow.limit(64) == 64 + 256
    # the smallest round trip is forgotten after MIN_RTT_WINDOW, so a longer route is learnt
    limit.on_sent(3200, now)
    limit.on_seen(3232, now + MIN_RTT_WINDOW + 1)
    assert limit.min_rtt > 1.0


def test_a_secondary_sender_is_neither_held_back_nor_pruned_by_its_own_stream() -> None:
    """A secondary sender is a child of the root and reports its own stream only with its
    acks (keep-alives, when it receives nothing).  The root must not read that stale report
    as the sender lagging on its own stream: it held the stream's floor (so the sender's
    cache window stalled until the next keep-alive) and, past ``slow_timeout``, pruned the
    sender as a slow receiver, whose ``send`` then blocked for good."""
    config = TransportConfig(cache_packets=256, slow_timeout=0.5, start_rate=50_000_000.0)
    net = Shuttle(delay=0.0002, seed=6)
    root = net.add(ROOT, Sender(config, session=SESSION, node_id=nid(1), rng=net.rng, now=0.0))
    rx = net.add(RX, Receiver(config, session=SESSION, node_id=nid(2), rng=net.rng, now=0.0,
                              bootstrap=[ROOT]))
    net.run(0.5)
    second: Addr = ("tx", 2)
    tx = net.add(second, Sender(config, session=SESSION, node_id=nid(3), rng=net.rng,
                                now=net.now, bootstrap=[ROOT]))
    net.run(net.now + 0.5)
    start = net.now
    for i in range(5000):
        tx.send(i.to_bytes(4, "big") * 100, net.now)
    tx.close(net.now)
    net.flush(second)
    net.run(net.now + 60, stop=lambda: tx.confirmed)
    assert tx.confirmed
    assert rx.stats()["messages_delivered"] == 5000
    assert root.stats().get("pruned", 0) == 0
    assert tx.stats().get("pruned_by_parent", 0) == 0
    # 20 cache windows of data: paced by the keep-alive (1 s) it would take 20 s
    assert net.now - start < 2.0
