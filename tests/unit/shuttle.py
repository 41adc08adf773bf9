"""Move datagrams between sans-IO machines by hand, in virtual time (no event loop).

The smallest honest network: a heap of in-flight datagrams with a fixed delay, optional seeded
loss, multicast fan-out, and each machine's timer fired when virtual time reaches it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from rmsec.transport import MULTICAST
from rmsec.transport.events import Event
from rmsec.wire.packets import Addr


class Shuttle:
    def __init__(self, *, delay: float = 0.001, loss: float = 0.0, seed: int = 1) -> None:
        self.now = 0.0
        self.delay = delay
        self.loss = loss
        self.random = random.Random(seed)
        self.nodes: dict[Addr, Any] = {}
        self.events: dict[Addr, list[Event]] = {}
        self.heap: list[tuple[float, int, bytes, Addr, Addr]] = []
        self.counter = 0
        self.received_from: dict[Addr, set[Addr]] = {}
        self.down: set[Addr] = set()
        self.drop: Callable[[bytes, Addr, Addr], bool] | None = None
        self.multicast_sent: dict[Addr, int] = {}

    def rng(self, n: int) -> bytes:
        return self.random.randbytes(n)

    def add(self, addr: Addr, node: Any) -> Any:
        self.nodes[addr] = node
        self.events[addr] = []
        self.flush(addr)
        return node

    def flush(self, addr: Addr) -> None:
        node = self.nodes[addr]
        for data, dest in node.datagrams_to_send(self.now):
            targets = [a for a in self.nodes if a != addr] if dest == MULTICAST else [dest]
            if dest == MULTICAST:
                self.multicast_sent[addr] = self.multicast_sent.get(addr, 0) + 1
            for target in targets:
                self.counter += 1
                heapq.heappush(self.heap, (self.now + self.delay, self.counter, data, addr, target))
        while (event := node.next_event()) is not None:
            self.events[addr].append(event)

    def run(self, until: float, *, stop: Callable[[], bool] | None = None, max_steps: int = 5_000_000) -> None:
        for _ in range(max_steps):
            if stop is not None and stop():
                return
            timers = [
                (t, a) for a, n in self.nodes.items() if a not in self.down and (t := n.get_timer()) is not None
            ]
            next_timer = min(timers, key=lambda x: x[0]) if timers else (float("inf"), None)
            next_packet = self.heap[0][0] if self.heap else float("inf")
            t = min(next_timer[0], next_packet)
            if t > until:
                self.now = until
                return
            self.now = max(self.now, t)
            if next_packet <= next_timer[0]:
                _, _, data, src, dst = heapq.heappop(self.heap)
                if dst in self.down or dst not in self.nodes:
                    continue
                if self.loss and self.random.random() < self.loss:
                    continue
                if self.drop is not None and self.drop(data, src, dst):
                    continue
                self.received_from.setdefault(dst, set()).add(src)
                self.nodes[dst].receive_datagram(data, src, self.now)
                self.flush(dst)
            else:
                addr = next_timer[1]
                assert addr is not None
                self.nodes[addr].handle_timer(self.now)
                self.flush(addr)
        raise AssertionError("shuttle exceeded max_steps")
