"""Sans-IO transport machines: sender, repair head, receiver (DESIGN.md §3).

No I/O, no clock, no randomness of their own: every entry point takes ``now`` and an injected
``rng``; drivers in :mod:`rmsec.io` and the simulator in :mod:`rmsec.sim` move the bytes.
"""

from rmsec.transport import events
from rmsec.transport.config import TransportConfig
from rmsec.transport.head import RepairHead
from rmsec.transport.node import MULTICAST, TreeNode
from rmsec.transport.receiver import Receiver
from rmsec.transport.sender import Sender

__all__ = ["MULTICAST", "Receiver", "RepairHead", "Sender", "TransportConfig", "TreeNode", "events"]
