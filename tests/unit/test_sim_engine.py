"""The discrete-event engine, driven by tiny fake machines (no transport logic involved)."""

from __future__ import annotations

import pytest

from rmsec.sim.engine import SimulationError, Simulator
from rmsec.sim.network import NetworkModel
from rmsec.sim.wireinfo import DATA_TYPE, UNKNOWN_TYPE, classify
from rmsec.transport.events import Event, StreamEnded
from rmsec.wire.packets import Addr, Data, DataFlags, Hello, Leave, StreamState

GROUP: Addr = ("239.1.1.1", 5000)
SESSION = b"sessionX"


class Beacon:
    """Sends ``count`` DATA packets to ``dst``, one every ``period`` seconds, via its timer."""

    def __init__(self, dst: Addr, count: int, period: float = 0.01) -> None:
        self.dst, self.count, self.period = dst, count, period
        self.sent: list[float] = []
        self._out: list[tuple[bytes, Addr]] = []
        self._next: float | None = 0.0
        self._events: list[Event] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        seq = len(self.sent)
        self.sent.append(now)
        self._out.append((Data(SESSION, 1, seq, DataFlags.FIRST | DataFlags.LAST, b"x" * 100).encode(), self.dst))
        if len(self.sent) == self.count:
            self._next = None
            self._events.append(StreamEnded(1))
        else:
            self._next = now + self.period

    def next_event(self) -> Event | None:
        return self._events.pop(0) if self._events else None


class Sink:
    """Records every datagram; optionally raises on the first one (to test error reports)."""

    def __init__(self, explode: bool = False) -> None:
        self.got: list[tuple[bytes, Addr, float]] = []
        self.explode = explode

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.explode:
            raise ValueError("boom")
        self.got.append((data, addr, now))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("no timer was armed")

    def next_event(self) -> Event | None:
        return None


class Fickle(Sink):
    """Moves its deadline on every datagram: only the latest one may fire."""

    def __init__(self) -> None:
        super().__init__()
        self.deadline: float | None = None
        self.fired: list[float] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self.deadline = now + 0.5 if len(self.got) % 2 else now + 0.05

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = None


def addr(i: int) -> Addr:
    return (f"10.0.0.{i}", 4000)


def build(network: NetworkModel, sinks: int, count: int, seed: int = 3) -> tuple[Simulator, Beacon, list[Sink]]:
    sim = Simulator(network, seed=seed, multicast_addr=GROUP)
    beacon = Beacon(GROUP, count)
    sim.add_node(addr(0), beacon, "sender")
    nodes = [Sink() for _ in range(sinks)]
    for i, node in enumerate(nodes, start=1):
        sim.add_node(addr(i), node, "receiver")
    for i in range(sinks + 1):
        sim.start(i)
    return sim, beacon, nodes


def test_multicast_reaches_every_member_once_with_link_delay() -> None:
    sim, beacon, sinks = build(NetworkModel(delay_min=0.001, delay_max=0.005), sinks=20, count=10)
    sim.run(until=10.0)
    assert len(beacon.sent) == 10
    for index, sink in enumerate(sinks, start=1):
        assert len(sink.got) == 10
        assert all(a == addr(0) for _, a, _ in sink.got)
        delay = sim.link_delay(0, index)
        assert 0.001 <= delay <= 0.005
        for (_, _, at), sent in zip(sink.got, beacon.sent, strict=True):
            assert at == pytest.approx(sent + delay)
    assert sim.counters.copies_delivered == 200
    assert sim.counters.sent[("sender", DATA_TYPE)] == 10


def test_loss_is_per_copy_and_counted() -> None:
    sim, _, sinks = build(NetworkModel(loss=0.3), sinks=50, count=40)
    sim.run(until=10.0)
    received = sum(len(s.got) for s in sinks)
    assert received + sim.counters.lost_data == 50 * 40
    assert sim.counters.lost_data == sim.counters.lost_data_original
    assert 0.2 < sim.counters.lost_data / (50 * 40) < 0.4
    assert len({len(s.got) for s in sinks}) > 1  # copies are lost independently


def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        sim, _, sinks = build(NetworkModel(loss=0.2, jitter=0.002), sinks=10, count=30, seed=9)
        sim.run(until=10.0)
        runs.append([[round(at, 9) for _, _, at in s.got] for s in sinks])
    assert runs[0] == runs[1]


def test_only_the_latest_timer_fires() -> None:
    sim = Simulator(NetworkModel(delay_min=0.001, delay_max=0.001), multicast_addr=GROUP)
    beacon = Beacon(addr(1), count=3, period=0.01)
    fickle = Fickle()
    sim.add_node(addr(0), beacon, "sender")
    sim.add_node(addr(1), fickle, "receiver")
    sim.start(0)
    sim.start(1)
    sim.run(until=5.0)
    # Arrivals at 0.001, 0.011, 0.021 set deadlines 0.501, 0.061, 0.521: only the last fires.
    assert fickle.fired == [pytest.approx(0.521)]


def test_unicast_to_unknown_address_is_counted_not_fatal() -> None:
    sim = Simulator(NetworkModel(), multicast_addr=GROUP)
    sim.add_node(addr(0), Beacon(("192.0.2.1", 9), count=2), "sender")
    sim.start(0)
    sim.run(until=1.0)
    assert sim.counters.undeliverable == 2


def test_crashed_node_receives_nothing_more() -> None:
    sim, _, sinks = build(NetworkModel(), sinks=2, count=10)
    sim.call_at(0.0455, lambda: sim.crash(1))
    sim.run(until=1.0)
    assert 3 <= len(sinks[0].got) <= 6
    assert len(sinks[1].got) == 10


def test_machine_errors_name_the_node() -> None:
    sim = Simulator(NetworkModel(), multicast_addr=GROUP)
    sim.add_node(addr(0), Beacon(GROUP, count=1), "sender")
    sim.add_node(addr(1), Sink(explode=True), "receiver")
    sim.start(0)
    sim.start(1)
    with pytest.raises(SimulationError, match=r"node 1 \(receiver\).*boom"):
        sim.run(until=1.0)


def test_events_reach_the_hook_and_can_stop_the_run() -> None:
    sim = Simulator(NetworkModel(), multicast_addr=GROUP)
    seen: list[tuple[int, Event]] = []

    def on_event(index: int, event: Event, now: float) -> None:
        seen.append((index, event))
        sim.request_stop()

    sim.add_node(addr(0), Beacon(GROUP, count=5), "sender", on_event=on_event)
    sim.start(0)
    assert sim.run(until=100.0) is True
    assert seen == [(0, StreamEnded(1))]
    assert sim.now == pytest.approx(0.04)


def test_classify_reads_type_and_repair_flag() -> None:
    for seq in (0, 23, 24, 255, 256, 70000, 2**40):
        for flags in (0, DataFlags.REPAIR, DataFlags.REPAIR | DataFlags.END | DataFlags.FIRST):
            packet = Data(SESSION, 70000, seq, flags, b"payload").encode()
            assert classify(packet) == (DATA_TYPE, bool(flags & DataFlags.REPAIR))
    assert classify(Leave(SESSION, b"node0001").encode()) == (Leave.TYPE, False)
    hello = Hello(SESSION, b"node0001", 1, (StreamState(1, 10, -1),)).encode()
    assert classify(hello) == (Hello.TYPE, False)
    assert classify(b"") == (UNKNOWN_TYPE, False)
    assert classify(b"\x87\x01\x01\x48") == (UNKNOWN_TYPE, False)


def test_a_node_outside_the_group_gets_no_multicast() -> None:
    """The root sender only sends to the group (rmsec.api opens it with join_group=False)."""
    sim = Simulator(NetworkModel(), multicast_addr=GROUP)
    sim.add_node(addr(0), Beacon(GROUP, count=5), "sender")
    outside, inside = Sink(), Sink()
    sim.add_node(addr(1), outside, "sender")
    sim.add_node(addr(2), inside, "receiver")
    sim.start(0)
    sim.start(1, join_group=False)
    sim.start(2)
    sim.run(until=1.0)
    assert outside.got == [] and len(inside.got) == 5
    sim.crash(1)  # leaving works for a node that never joined
