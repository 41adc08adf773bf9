"""The node driver and the memory network, with a fake machine (no transport involved)."""

from __future__ import annotations

import collections
import math

import pytest
import trio
import trio.testing

import rmsec.io
from rmsec.io.base import MULTICAST, Addr, NodeSockets, SocketCounters
from rmsec.io.driver import NodeDriver
from rmsec.testing.echo import EchoMachine
from rmsec.transport.events import MessageReceived


async def start(
    nursery: trio.Nursery, machine: EchoMachine, sockets: NodeSockets, **kw: object
) -> NodeDriver:
    driver = NodeDriver(machine, sockets, **kw)  # type: ignore[arg-type]
    await nursery.start(driver.run)
    return driver


async def test_ping_pong_and_events(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory(delay=0.01)
    a_sock, b_sock = await net.open_node(), await net.open_node()
    a, b = EchoMachine(b"a" * 8), EchoMachine(b"b" * 8)
    async with trio.open_nursery() as nursery:
        da = await start(nursery, a, a_sock, keep=lambda e: True)
        await start(nursery, b, b_sock)
        da.command(lambda now: a.send(b"ping1", b_sock.local_addr, now))
        event = await da.events.receive()
        assert isinstance(event, MessageReceived) and event.data == b"pong1"
        # one delay out, one delay back
        assert a.received[0][2] == pytest.approx(0.02)
        assert b.received[0][1] == a_sock.local_addr
        nursery.cancel_scope.cancel()


async def test_timer_moves_with_every_call(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory()
    machine = EchoMachine()
    async with trio.open_nursery() as nursery:
        driver = await start(nursery, machine, await net.open_node())
        driver.command(lambda now: machine.add_deadline(now + 5))
        await trio.sleep(1)
        driver.command(lambda now: machine.add_deadline(now + 1))  # earlier than 5: must win
        await trio.sleep(0.5)
        driver.command(lambda now: machine.add_deadline(now + 10))  # later: no effect
        await trio.sleep(20)
        assert machine.fired == [pytest.approx(2.0), pytest.approx(5.0), pytest.approx(11.5)]
        driver.command(lambda now: machine.clear_deadlines())
        await trio.sleep(100)
        assert len(machine.fired) == 3
        nursery.cancel_scope.cancel()


async def test_loss_duplicate_reorder_are_seeded(autojump_clock: trio.testing.MockClock) -> None:
    async def run(seed: int) -> list[bytes]:
        net = rmsec.io.memory(loss=0.2, duplicate=0.2, reorder=0.3, jitter=0.001, seed=seed)
        src, dst = await net.open_node(), await net.open_node()
        sink = EchoMachine()
        async with trio.open_nursery() as nursery:
            await start(nursery, sink, dst)
            for i in range(1000):
                src.primary.send_nowait(b"d%04d" % i, dst.local_addr)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
        return [data for data, _, _ in sink.received]

    first, second, other = await run(7), await run(7), await run(8)
    assert first == second
    assert first != other
    counts = collections.Counter(first)
    assert 700 < len(counts) < 900  # about 20 % lost
    assert any(n == 2 for n in counts.values())  # some duplicated
    assert first != sorted(first)  # some reordered


async def test_partitions_and_isolation(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory()
    a, b, c = [await net.open_node() for _ in range(3)]
    sinks = {s.local_addr: EchoMachine() for s in (b, c)}
    async with trio.open_nursery() as nursery:
        for s in (b, c):
            await start(nursery, sinks[s.local_addr], s)

        async def burst(tag: bytes) -> None:
            for s in (b, c):
                a.primary.send_nowait(tag, s.local_addr)
            await trio.sleep(0.1)

        await burst(b"1")
        net.cut(a.local_addr, b.local_addr)
        await burst(b"2")
        net.heal(a.local_addr, b.local_addr)
        net.isolate(c.local_addr)
        await burst(b"3")
        net.heal_all()
        await burst(b"4")
        nursery.cancel_scope.cancel()
    got = {addr: [d for d, _, _ in m.received] for addr, m in sinks.items()}
    assert got[b.local_addr] == [b"1", b"3", b"4"]
    assert got[c.local_addr] == [b"1", b"2", b"4"]
    assert net.received_from[b.local_addr][a.local_addr] == 3


async def test_multicast_reaches_every_subscriber_but_the_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory()
    sender = await net.open_node(join_group=True)
    members = [await net.open_node(join_group=True) for _ in range(5)]
    outsider = await net.open_node()
    machines = [EchoMachine() for _ in range(7)]
    async with trio.open_nursery() as nursery:
        for m, s in zip(machines, [sender, *members, outsider], strict=True):
            await start(nursery, m, s)
        sender.primary.send_nowait(b"to all", MULTICAST)
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert [len(m.received) for m in machines] == [0, 1, 1, 1, 1, 1, 0]


async def test_back_pressure_stops_pulling_events(autojump_clock: trio.testing.MockClock) -> None:
    """A full event channel leaves events in the machine, which then refuses datagrams."""
    net = rmsec.io.memory()
    src, dst = await net.open_node(), await net.open_node()
    machine = EchoMachine(event_limit=10)
    async with trio.open_nursery() as nursery:
        driver = NodeDriver(machine, dst, keep=lambda e: True, event_capacity=5)
        await nursery.start(driver.run)
        for i in range(100):
            src.primary.send_nowait(b"%d" % i, dst.local_addr)
            await trio.sleep(0.01)
        # 5 in the channel, one held by the event task, 10 waiting in the machine
        assert len(machine.received) == 16
        assert machine.refused == 84
        got = [await driver.events.receive() for _ in range(16)]
        assert [e.data for e in got if isinstance(e, MessageReceived)] == [
            b"%d" % i for i in range(16)
        ]
        nursery.cancel_scope.cancel()


class PushBackSocket:
    """A socket that refuses every other send, to drive the writer task."""

    def __init__(self) -> None:
        self.counters = SocketCounters()
        self.sent: list[bytes] = []
        self._refuse = False
        self.waits = 0

    @property
    def local_addr(self) -> Addr:
        return ("fake", 1)

    def recv_nowait(self) -> tuple[bytes, Addr]:
        raise BlockingIOError

    def send_nowait(self, data: bytes, addr: Addr) -> None:
        self._refuse = not self._refuse
        if self._refuse:
            raise BlockingIOError
        self.sent.append(data)

    async def wait_readable(self) -> None:
        await trio.sleep_forever()

    async def wait_writable(self) -> None:
        self.waits += 1
        await trio.sleep(0.001)

    def close(self) -> None:
        pass


async def test_writer_keeps_order_when_the_socket_pushes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sock = PushBackSocket()
    machine = EchoMachine()
    async with trio.open_nursery() as nursery:
        driver = await start(nursery, machine, NodeSockets(sock))  # type: ignore[arg-type]
        for batch in range(3):
            driver.command(
                lambda now, b=batch: [
                    machine.send(b"%d-%d" % (b, i), ("x", 1), now) for i in range(10)
                ]
            )
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert sock.sent == [b"%d-%d" % (b, i) for b in range(3) for i in range(10)]
    assert sock.waits >= 10
    assert driver.stats()["io_send_backlog"] == 0


async def test_udp_echo_and_receive_loss() -> None:
    net = rmsec.io.udp(loss=0.5, seed=3)
    a_sock, b_sock = await net.open_node(), await net.open_node()
    a, b = EchoMachine(), EchoMachine()
    try:
        async with trio.open_nursery() as nursery:
            await start(nursery, a, a_sock)
            db = await start(nursery, b, b_sock)
            for i in range(400):
                a_sock.primary.send_nowait(b"ping%d" % i, b_sock.local_addr)
            with trio.fail_after(5):
                await db.wait_until(
                    lambda: len(b.received) + b_sock.stats()["io_dropped_loss"] >= 400
                )
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    finally:
        a_sock.close()
        b_sock.close()
    assert 120 < len(b.received) < 280
    assert b.received[0][1] == a_sock.local_addr
    # pongs were themselves subject to loss at a
    assert 0 < len(a.received) < len(b.received)
    assert a_sock.stats()["io_datagrams_out"] == 400


async def test_udp_drops_multicast_destination() -> None:
    net = rmsec.io.udp()
    sock = await net.open_node()
    try:
        sock.primary.send_nowait(b"x", MULTICAST)
        assert sock.stats()["io_dropped_unroutable"] == 1
    finally:
        sock.close()


def test_memory_rejects_bad_probabilities() -> None:
    with pytest.raises(ValueError):
        rmsec.io.memory(loss=1.0)
    with pytest.raises(ValueError):
        rmsec.io.memory(delay=-1)
    assert math.isfinite(rmsec.io.memory().delay)


async def test_command_soon_writes_a_burst_at_the_next_scheduling_point(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory()
    a_sock, b_sock = await net.open_node(), await net.open_node()
    a, b = EchoMachine(b"a" * 8), EchoMachine(b"b" * 8)
    async with trio.open_nursery() as nursery:
        da = await start(nursery, a, a_sock)
        await start(nursery, b, b_sock)
        for i in range(10):
            da.command_soon(lambda now, i=i: a.send(b"m%d" % i, b_sock.local_addr, now))
        # Nothing has left yet: the burst waits for the caller's next checkpoint ...
        assert a_sock.primary.counters.datagrams_out == 0
        await trio.testing.wait_all_tasks_blocked()
        # ... and then leaves together, in order.
        assert a_sock.primary.counters.datagrams_out == 10
        await trio.sleep(0.1)
        assert [data for data, _, _ in b.received] == [b"m%d" % i for i in range(10)]
        nursery.cancel_scope.cancel()
