"""Real UDP sockets: the unicast overlay network (``rmsec.io.udp``) and the socket wrapper that
the IP multicast network reuses.

The sockets are plain non-blocking stdlib sockets; trio only tells us when they are readable or
writable (``trio.lowlevel.wait_readable``), so a receive task can drain a whole burst with
``recvfrom`` calls that never enter the event loop.  ``loss=`` drops *received* datagrams at
random (as NORM's test options do), so repair can be exercised on a loss-free loopback.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Callable

import trio

from rmsec.io.base import MULTICAST, RECV_SIZE, Addr, NetworkInfo, NodeSockets, SocketCounters

#: Socket buffers we ask for; the kernel may cap them (net.core.rmem_max), which is fine.
SOCKET_BUFFER = 4 * 1024 * 1024


def make_udp_socket(*, reuse_addr: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # A smaller buffer than asked only means more loss under bursts.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSocket:
    """A non-blocking UDP socket with receive-side loss (the ``DatagramSocket`` protocol).

    ``multicast_dest`` is where the destination ``MULTICAST`` goes; without it such datagrams
    are counted as unroutable and dropped (the overlay forwards down the tree instead).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        loss: float = 0.0,
        rng: random.Random | None = None,
        multicast_dest: Addr | None = None,
    ) -> None:
        self.sock = sock
        self.loss = loss
        self.rng = rng or random.Random()
        self.multicast_dest = multicast_dest
        self.counters = SocketCounters()
        host, port = sock.getsockname()[:2]
        self._local: Addr = (host, port)
        self._closed = False

    @property
    def local_addr(self) -> Addr:
        return self._local

    def recv_nowait(self) -> tuple[bytes, Addr]:
        counters = self.counters
        while True:
            try:
                data, src = self.sock.recvfrom(RECV_SIZE)
            except BlockingIOError:
                raise
            except OSError:
                # e.g. ECONNREFUSED reported for an earlier sendto: not about this datagram.
                counters.recv_errors += 1
                continue
            if self.loss and self.rng.random() < self.loss:
                counters.dropped_loss += 1
                continue
            counters.datagrams_in += 1
            counters.bytes_in += len(data)
            return data, (src[0], src[1])

    def send_nowait(self, data: bytes, addr: Addr) -> None:
        if addr == MULTICAST:
            if self.multicast_dest is None:
                self.counters.dropped_unroutable += 1
                return
            addr = self.multicast_dest
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            raise
        except OSError:
            # Unreachable, too big, no route: the transport's repair handles it like a loss.
            self.counters.send_errors += 1
            return
        self.counters.datagrams_out += 1
        self.counters.bytes_out += len(data)

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.sock)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.sock)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


class SeededSockets:
    """Shared by the real-socket networks: one loss generator per socket, derived from a seed."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._root = random.Random(seed)

    def socket_rng(self) -> random.Random:
        return random.Random(self._root.getrandbits(64)) if self.seed is not None else random.Random()

    def node_rng(self) -> Callable[[int], bytes]:
        if self.seed is None:
            return os.urandom
        return random.Random(self._root.getrandbits(64)).randbytes


class UdpNetwork(SeededSockets):
    """``rmsec.io.udp(...)``: every node one UDP socket on ``host``; no multicast data plane."""

    def __init__(self, *, host: str = "127.0.0.1", loss: float = 0.0, seed: int | None = None) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss={loss} must be within [0, 1)")
        super().__init__(seed)
        self.host = host
        self.loss = loss

    @property
    def info(self) -> NetworkInfo:
        return NetworkInfo("udp")

    @property
    def supports_multicast(self) -> bool:
        return False

    @property
    def requires_multicast(self) -> bool:
        return False

    async def open_node(self, host: str | None = None, *, join_group: bool = False) -> NodeSockets:
        sock = make_udp_socket()
        try:
            sock.bind((host or self.host, 0))
        except BaseException:
            sock.close()
            raise
        await trio.lowlevel.checkpoint()
        return NodeSockets(UdpSocket(sock, loss=self.loss, rng=self.socket_rng()))


def udp(host: str = "127.0.0.1", loss: float = 0.0, seed: int | None = None) -> UdpNetwork:
    """Real UDP sockets on ``host`` (unicast overlay: heads forward down the tree)."""
    return UdpNetwork(host=host, loss=loss, seed=seed)
