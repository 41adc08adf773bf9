"""What the node driver needs from a network, and what every network factory offers.

A *network* (memory, UDP overlay, IP multicast) is a small factory object; for each node it
opens a :class:`NodeSockets`: one *primary* socket that sends everything and receives unicast,
plus zero or more receive-only sockets (the IP multicast group socket).  Every socket offers
the same non-blocking verbs, so the driver is written once: wait until readable, drain with
``recv_nowait`` until :class:`BlockingIOError`, send with ``send_nowait`` and wait until
writable only when the kernel (or the fake) pushes back.

The destination :data:`MULTICAST` (from :mod:`rmsec.transport`) is translated by the primary
socket: to the group's subscribers on the memory net, to ``(group, port)`` on IP multicast.
A network without a multicast data plane counts and drops such datagrams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, Protocol

from rmsec.transport import MULTICAST
from rmsec.wire.packets import Addr

__all__ = [
    "MULTICAST",
    "Addr",
    "DatagramSocket",
    "Network",
    "NetworkInfo",
    "NetworkKind",
    "NodeSockets",
    "SocketCounters",
]

NetworkKind = Literal["memory", "udp", "ip_multicast"]
#: Largest datagram a socket reads; bigger ones are truncated by the kernel and then fail
#: strict decoding, which is what we want.
RECV_SIZE = 65536


@dataclasses.dataclass(slots=True)
class SocketCounters:
    """Per-socket figures for ``stats()``: what crossed this socket and what it dropped."""

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    dropped_loss: int = 0  # the ``loss=`` option discarded it on purpose
    dropped_unroutable: int = 0  # MULTICAST on a network without a multicast data plane
    send_errors: int = 0  # the kernel refused a sendto (other than "would block")
    recv_errors: int = 0

    def add_to(self, totals: dict[str, int]) -> None:
        for field in dataclasses.fields(self):
            key = "io_" + field.name
            totals[key] = totals.get(key, 0) + getattr(self, field.name)


class DatagramSocket(Protocol):
    """One datagram endpoint with non-blocking verbs (a UDP socket or its in-memory fake)."""

    counters: SocketCounters

    @property
    def local_addr(self) -> Addr: ...

    def recv_nowait(self) -> tuple[bytes, Addr]:
        """Next datagram and its source; :class:`BlockingIOError` when none is waiting."""
        ...

    def send_nowait(self, data: bytes, addr: Addr) -> None:
        """Queue one datagram; :class:`BlockingIOError` when the send buffer is full."""
        ...

    async def wait_readable(self) -> None: ...

    async def wait_writable(self) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSockets:
    """The sockets of one node; ``primary`` sends everything and gives the node's address."""

    primary: DatagramSocket
    extra: tuple[DatagramSocket, ...] = ()

    @property
    def local_addr(self) -> Addr:
        return self.primary.local_addr

    @property
    def receivers(self) -> tuple[DatagramSocket, ...]:
        """Every socket that needs a receive task."""
        return (self.primary, *self.extra)

    def stats(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for sock in self.receivers:
            sock.counters.add_to(totals)
        return totals

    def close(self) -> None:
        for sock in self.receivers:
            sock.close()


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkInfo:
    """How an announcement describes the network, so another process can open the same one."""

    kind: NetworkKind
    group: str | None = None
    port: int | None = None


class Network(Protocol):
    """A factory for node sockets; ``rmsec.io.memory()``, ``udp()`` and ``ip_multicast()``."""

    @property
    def info(self) -> NetworkInfo: ...

    @property
    def supports_multicast(self) -> bool:
        """True when ``MULTICAST`` reaches the group (so a config may set ``multicast=True``)."""
        ...

    @property
    def requires_multicast(self) -> bool:
        """True when the data plane *is* multicast (the config must set ``multicast=True``)."""
        ...

    async def open_node(self, host: str | None = None, *, join_group: bool = False) -> NodeSockets:
        """Bind a node's sockets; ``join_group`` subscribes it to the multicast data plane."""
        ...

    def node_rng(self) -> Callable[[int], bytes]:
        """Randomness for one node's machine: seeded on a seeded network, else ``os.urandom``."""
        ...
