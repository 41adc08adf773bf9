"""IP multicast data plane with unicast control (``rmsec.io.ip_multicast``).

Every node has a unicast socket on ``interface`` (its address; all control, repairs and its own
sends go out of it; data for ``MULTICAST`` is sent to ``(group, port)``).  Members that take
part in the data plane also open a receive-only socket bound to ``(group, port)`` and joined to
the group on ``interface``.  Loop-back is on so several members on one host (or one network
namespace) all hear the group; the TTL is 1 so nothing leaves the link.
"""

from __future__ import annotations

import ipaddress
import socket

import trio

from rmsec.io.base import NetworkInfo, NodeSockets
from rmsec.io.udp import SeededSockets, UdpSocket, make_udp_socket

DEFAULT_GROUP = "239.255.82.77"
DEFAULT_PORT = 47_082


class IpMulticastNetwork(SeededSockets):
    """See the module docstring.  ``interface`` is an IPv4 address of the interface to use."""

    def __init__(
        self,
        *,
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        interface: str = "127.0.0.1",
        loss: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not ipaddress.IPv4Address(group).is_multicast:
            raise ValueError(f"group {group!r} is not an IPv4 multicast address")
        if not 0 < port < 65536:
            raise ValueError(f"port={port} must be within 1..65535")
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss={loss} must be within [0, 1)")
        super().__init__(seed)
        self.group, self.port, self.interface, self.loss = group, port, interface, loss

    @property
    def info(self) -> NetworkInfo:
        return NetworkInfo("ip_multicast", self.group, self.port)

    def for_group(self, group: str, port: int) -> IpMulticastNetwork:
        """The same local options (interface, loss, seed) on another group: the announcement
        says where a session's data plane is, ``network=`` only how this host reaches it."""
        if (group, port) == (self.group, self.port):
            return self
        return IpMulticastNetwork(
            group=group, port=port, interface=self.interface, loss=self.loss, seed=self.seed
        )

    @property
    def supports_multicast(self) -> bool:
        return True

    @property
    def requires_multicast(self) -> bool:
        return True

    async def open_node(self, host: str | None = None, *, join_group: bool = False) -> NodeSockets:
        interface = host or self.interface
        if_bytes = socket.inet_aton(interface)
        unicast = make_udp_socket()
        group_sock: socket.socket | None = None
        try:
            unicast.bind((interface, 0))
            unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, if_bytes)
            unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            if join_group:
                group_sock = make_udp_socket(reuse_addr=True)
                # Bound to the group address, the socket hears this group only.
                group_sock.bind((self.group, self.port))
                membership = socket.inet_aton(self.group) + if_bytes
                group_sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except BaseException:
            unicast.close()
            if group_sock is not None:
                group_sock.close()
            raise
        await trio.lowlevel.checkpoint()
        dest = (self.group, self.port)
        primary = UdpSocket(unicast, loss=self.loss, rng=self.socket_rng(), multicast_dest=dest)
        if group_sock is None:
            return NodeSockets(primary)
        return NodeSockets(primary, (UdpSocket(group_sock, loss=self.loss, rng=self.socket_rng()),))


def ip_multicast(
    group: str = DEFAULT_GROUP,
    port: int = DEFAULT_PORT,
    interface: str = "127.0.0.1",
    loss: float = 0.0,
    seed: int | None = None,
) -> IpMulticastNetwork:
    """IP multicast to ``group:port`` on ``interface`` for data, unicast for control.

    The transport config must set ``multicast=True`` (``open_sender`` does so by default).
    """
    return IpMulticastNetwork(group=group, port=port, interface=interface, loss=loss, seed=seed)
