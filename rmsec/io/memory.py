"""An in-process datagram network for tests: seeded loss, delay, jitter, duplication, reordering,
partitions and a multicast group, all in trio time (so it runs under ``MockClock``).

Each socket's inbox is a heap ordered by arrival time: sending computes when (and whether, and
how many times) a datagram arrives, and the receiver simply does not see it before then.  No
background task is needed, so the network has no lifetime of its own and a node that stops
simply stops receiving.

Addresses are ``("mem", n)``.  Random decisions come from one ``random.Random`` per sending
socket, seeded from the network seed and the socket's address, so a run is reproducible as far
as trio's scheduling of the nodes is.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable

import trio

from rmsec.io.base import MULTICAST, Addr, NetworkInfo, NodeSockets, SocketCounters

#: Datagrams one inbox holds before it drops (a kernel receive buffer of sorts).
INBOX_LIMIT = 65536
#: Extra delay of a reordered datagram when the network has no delay of its own.
REORDER_DELAY = 0.002

Tap = Callable[[Addr, Addr, bytes], None]


def _derive_seed(seed: int | None, *parts: object) -> int | None:
    if seed is None:
        return None
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class MemoryNetwork:
    """``rmsec.io.memory(...)``: see the module docstring.  Probabilities are per datagram and
    per destination (a multicast datagram is lost independently at each subscriber)."""

    def __init__(
        self,
        *,
        loss: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int | None = None,
    ) -> None:
        for name, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}={p} must be within [0, 1)")
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        self.loss, self.delay, self.jitter = loss, delay, jitter
        self.duplicate, self.reorder, self.seed = duplicate, reorder, seed
        self._sockets: dict[Addr, MemorySocket] = {}
        self._group: dict[Addr, MemorySocket] = {}
        self._cut: set[frozenset[Addr]] = set()
        self._isolated: set[Addr] = set()
        self._next_port = 1
        self._node_count = 0
        #: destination -> source -> datagrams received (as the receiving socket read them).
        self.received_from: dict[Addr, Counter[Addr]] = {}
        #: Callbacks ``tap(src, dst, data)`` run for every datagram a socket reads.
        self.taps: list[Tap] = []
        self.dropped_partition = 0

    # -- the Network protocol ----------------------------------------------------------------

    @property
    def info(self) -> NetworkInfo:
        return NetworkInfo("memory")

    @property
    def supports_multicast(self) -> bool:
        return True

    @property
    def requires_multicast(self) -> bool:
        return False

    async def open_node(self, host: str | None = None, *, join_group: bool = False) -> NodeSockets:
        await trio.lowlevel.checkpoint()
        addr: Addr = ("mem", self._next_port)
        self._next_port += 1
        sock = MemorySocket(self, addr, random.Random(_derive_seed(self.seed, "socket", addr)))
        self._sockets[addr] = sock
        self.received_from[addr] = Counter()
        if join_group:
            self._group[addr] = sock
        return NodeSockets(sock)

    def node_rng(self) -> Callable[[int], bytes]:
        if self.seed is None:
            return os.urandom
        self._node_count += 1
        return random.Random(_derive_seed(self.seed, "node", self._node_count)).randbytes

    # -- partitions ---------------------------------------------------------------------------

    def cut(self, a: Addr, b: Addr) -> None:
        """Drop every datagram between ``a`` and ``b`` (both directions) until :meth:`heal`."""
        self._cut.add(frozenset((a, b)))

    def heal(self, a: Addr, b: Addr) -> None:
        self._cut.discard(frozenset((a, b)))

    def isolate(self, addr: Addr) -> None:
        """Cut ``addr`` off from everyone (a crashed or unplugged node)."""
        self._isolated.add(addr)

    def rejoin(self, addr: Addr) -> None:
        self._isolated.discard(addr)

    def heal_all(self) -> None:
        self._cut.clear()
        self._isolated.clear()

    def partition(self, side_a: Iterable[Addr], side_b: Iterable[Addr]) -> None:
        """Cut every link between the two sides."""
        b = list(side_b)
        for x in side_a:
            for y in b:
                self.cut(x, y)

    def _blocked(self, src: Addr, dst: Addr) -> bool:
        return (
            src in self._isolated
            or dst in self._isolated
            or (bool(self._cut) and frozenset((src, dst)) in self._cut)
        )

    # -- transmission -------------------------------------------------------------------------

    def _transmit(self, src: MemorySocket, data: bytes, dst: Addr) -> None:
        if dst == MULTICAST:
            targets: Iterable[MemorySocket] = [s for a, s in self._group.items() if a != src.addr]
        else:
            target = self._sockets.get(dst)
            if target is None:
                return  # nobody there: the datagram vanishes, as on a real network
            targets = (target,)
        now = trio.current_time()
        rng = src.rng
        for target in targets:
            if self._blocked(src.addr, target.addr):
                self.dropped_partition += 1
                continue
            copies = 1
            if self.duplicate and rng.random() < self.duplicate:
                copies = 2
            for _ in range(copies):
                if self.loss and rng.random() < self.loss:
                    continue
                arrival = now + self.delay
                if self.jitter:
                    arrival += rng.random() * self.jitter
                if self.reorder and rng.random() < self.reorder:
                    arrival += rng.random() * max(REORDER_DELAY, 2 * (self.delay + self.jitter))
                target._deliver(arrival, data, src.addr)

    def _forget(self, sock: MemorySocket) -> None:
        if self._sockets.get(sock.addr) is sock:
            del self._sockets[sock.addr]
        self._group.pop(sock.addr, None)


class MemorySocket:
    """One endpoint of a :class:`MemoryNetwork` (the ``DatagramSocket`` protocol)."""

    def __init__(self, network: MemoryNetwork, addr: Addr, rng: random.Random) -> None:
        self.network = network
        self.addr = addr
        self.rng = rng
        self.counters = SocketCounters()
        self._inbox: list[tuple[float, int, bytes, Addr]] = []
        self._order = 0
        self._wakeup: trio.Event | None = None
        self._closed = False

    @property
    def local_addr(self) -> Addr:
        return self.addr

    def _deliver(self, arrival: float, data: bytes, src: Addr) -> None:
        if self._closed:
            return
        if len(self._inbox) >= INBOX_LIMIT:
            self.counters.recv_errors += 1
            return
        self._order += 1
        heapq.heappush(self._inbox, (arrival, self._order, data, src))
        if self._wakeup is not None:
            self._wakeup.set()

    def recv_nowait(self) -> tuple[bytes, Addr]:
        if self._closed:
            raise trio.ClosedResourceError("socket closed")
        inbox = self._inbox
        if not inbox or inbox[0][0] > trio.current_time():
            raise BlockingIOError
        _, _, data, src = heapq.heappop(inbox)
        self.counters.datagrams_in += 1
        self.counters.bytes_in += len(data)
        self.network.received_from[self.addr][src] += 1
        for tap in self.network.taps:
            tap(src, self.addr, data)
        return data, src

    def send_nowait(self, data: bytes, addr: Addr) -> None:
        if self._closed:
            raise trio.ClosedResourceError("socket closed")
        self.counters.datagrams_out += 1
        self.counters.bytes_out += len(data)
        self.network._transmit(self, bytes(data), addr)

    async def wait_readable(self) -> None:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("socket closed")
            due = self._inbox[0][0] if self._inbox else math.inf
            if due <= trio.current_time():
                await trio.lowlevel.checkpoint()  # a ready socket must not starve the others
                return
            self._wakeup = trio.Event()
            with trio.move_on_at(due):
                await self._wakeup.wait()
            self._wakeup = None

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()  # the fake never pushes back

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.clear()
            self.network._forget(self)
            if self._wakeup is not None:
                self._wakeup.set()


def memory(
    loss: float = 0.0,
    delay: float = 0.0,
    jitter: float = 0.0,
    duplicate: float = 0.0,
    reorder: float = 0.0,
    seed: int | None = None,
) -> MemoryNetwork:
    """An in-process network (see :class:`MemoryNetwork`); deterministic when ``seed`` is set."""
    return MemoryNetwork(
        loss=loss, delay=delay, jitter=jitter, duplicate=duplicate, reorder=reorder, seed=seed
    )
