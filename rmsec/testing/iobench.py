"""How many datagrams per second the node driver moves, with a machine that does nothing.

    python -m rmsec.testing.iobench [--count N] [--size BYTES]

Prints JSON: for the memory network and for UDP on 127.0.0.1, datagrams per second from one
blasting socket through a ``NodeDriver`` into a counting machine, and the round-trip time of
a ping through two drivers.  The figures bound what the I/O layer costs next to the
transport machines (see docs/bench-io.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import trio

import rmsec.io
from rmsec.io.base import Network
from rmsec.io.driver import NodeDriver
from rmsec.testing.echo import EchoMachine
from rmsec.transport.events import Event
from rmsec.wire.packets import Addr


class CountingMachine:
    """Counts datagrams and does nothing else (no events, no output, no timer)."""

    node_id = b"count000"

    def __init__(self) -> None:
        self.count = 0

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.count += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def next_event(self) -> Event | None:
        return None

    def stats(self) -> dict[str, int]:
        return {"count": self.count}


async def throughput(network: Network, count: int, size: int) -> float:
    """Datagrams per second received through a driver (the sender is a bare socket)."""
    src, dst = await network.open_node(), await network.open_node()
    machine = CountingMachine()
    payload = b"x" * size
    try:
        async with trio.open_nursery() as nursery:
            driver = NodeDriver(machine, dst)
            await nursery.start(driver.run)
            started = time.perf_counter()
            sent = 0
            while sent < count:
                # Bursts small enough for the kernel buffer, then let the receiver run.
                for _ in range(min(64, count - sent)):
                    try:
                        src.primary.send_nowait(payload, dst.local_addr)
                    except BlockingIOError:
                        await src.primary.wait_writable()
                    sent += 1
                await trio.lowlevel.checkpoint()
            with trio.move_on_after(2):
                await driver.wait_until(lambda: machine.count >= count)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    finally:
        src.close()
        dst.close()
    return machine.count / elapsed


async def round_trip(network: Network, pings: int) -> float:
    """Median seconds for ping → pong through two drivers."""
    a_sock, b_sock = await network.open_node(), await network.open_node()
    a, b = EchoMachine(b"a" * 8), EchoMachine(b"b" * 8)
    samples = []
    try:
        async with trio.open_nursery() as nursery:
            da = NodeDriver(a, a_sock, keep=lambda e: True)
            await nursery.start(da.run)
            await nursery.start(NodeDriver(b, b_sock).run)
            dest = b_sock.local_addr
            for i in range(pings):
                started = time.perf_counter()
                ping = b"ping%d" % i
                da.command(lambda now: a.send(ping, dest, now))  # noqa: B023 - called at once
                await da.events.receive()
                samples.append(time.perf_counter() - started)
            nursery.cancel_scope.cancel()
    finally:
        a_sock.close()
        b_sock.close()
    return statistics.median(samples)


async def run(count: int, size: int) -> dict[str, Any]:
    results: dict[str, Any] = {"count": count, "size": size}
    for name, network in (("memory", rmsec.io.memory()), ("udp", rmsec.io.udp())):
        results[name] = {
            "datagrams_per_second": round(await throughput(network, count, size)),
            "round_trip_median_us": round(await round_trip(network, 200) * 1e6, 1),
        }
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmsec.testing.iobench")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1400)
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(run, args.count, args.size), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
