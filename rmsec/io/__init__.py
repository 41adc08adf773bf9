"""The trio I/O layer: networks (memory, UDP overlay, IP multicast) and the node driver.

Every network is a small factory with the same shape (:class:`~rmsec.io.base.Network`); pass
one as ``network=`` to any ``rmsec.open_*``.
"""

from rmsec.io.base import MULTICAST, DatagramSocket, Network, NetworkInfo, NodeSockets
from rmsec.io.driver import NodeDriver
from rmsec.io.memory import MemoryNetwork, memory
from rmsec.io.multicast import IpMulticastNetwork, ip_multicast
from rmsec.io.udp import UdpNetwork, udp

__all__ = [
    "MULTICAST",
    "DatagramSocket",
    "IpMulticastNetwork",
    "MemoryNetwork",
    "Network",
    "NetworkInfo",
    "NodeDriver",
    "NodeSockets",
    "UdpNetwork",
    "ip_multicast",
    "memory",
    "udp",
]
