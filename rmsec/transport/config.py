"""Transport parameters (DESIGN.md §3), with the TRAM/NORM/PGM starting defaults."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from rmsec.errors import ConfigError

SlowReceiverPolicy = Literal["block", "prune", "skip"]
JoinPolicyName = Literal["from_now", "from_cache", "from_start"]

#: Bytes a DATA packet spends on its CBOR header at most (array, version, type, session,
#: stream, 64-bit sequence, flags, payload length); the payload gets ``mtu`` minus this.
DATA_HEADER_MAX = 40


@dataclasses.dataclass(frozen=True, slots=True)
class TransportConfig:
    """Everything a sender, repair head or receiver needs to agree on or tune.

    Times are seconds, rates bytes per second, sizes bytes unless named ``*_packets``.
    """

    mtu: int = 1400
    max_message: int = 64 * 1024 * 1024
    ack_window: int = 32
    max_children: int = 32
    hello_interval: float = 1.0
    head_loss_hellos: int = 5
    advertise_interval: float = 2.0
    #: Unsolicited head advertisements on the multicast group (multicast mode only), as in
    #: TRAM.  Every member receives each one (we cannot scope them by TTL), so they are
    #: scoped otherwise: only the root and its children advertise, at an interval that
    #: doubles after each one, and never while data flows (TreeNode._advertise).  Turning
    #: them off leaves members to their bootstrap list and the solicitation/referral walk.
    advertise: bool = True
    solicit_wait: float = 0.2
    repair_suppress: float = 0.005
    ack_interval: float = 0.05
    cache_packets: int = 4096
    min_rate: float = 64_000.0
    max_rate: float = 400_000_000.0
    start_rate: float = 2_000_000.0
    congestion_loss: float = 0.3
    #: Seconds of queueing a root sender accepts in front of its first-level children:
    #: it keeps at most ``rate x (2 x min_rtt + queue_target)`` packets (at least
    #: ``8 x ack_window``) beyond what they have seen, so repairs do not wait behind a full
    #: socket buffer (rmsec/transport/inflight.py).  0 turns the bound off.
    queue_target: float = 0.002
    slow_receiver: SlowReceiverPolicy = "prune"
    slow_timeout: float = 3.0
    join_policy: JoinPolicyName = "from_now"
    retain_stream: bool = False
    receive_buffer: int = 16 * 1024 * 1024
    multicast: bool = False

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError("invalid transport config: " + "; ".join(problems))

    def _problems(self) -> Any:
        if not 256 <= self.mtu <= 65000:
            yield f"mtu={self.mtu} must be within 256..65000 bytes"
        if not 1 <= self.max_message <= 1 << 32:
            yield f"max_message={self.max_message} must be within 1..4 GiB"
        if not 1 <= self.ack_window <= 1024:
            yield f"ack_window={self.ack_window} must be within 1..1024 packets"
        if not 1 <= self.max_children <= 65535:
            yield f"max_children={self.max_children} must be within 1..65535"
        if self.cache_packets < 2 * self.ack_window:
            yield f"cache_packets={self.cache_packets} must be at least twice ack_window"
        if not 0 < self.min_rate <= self.start_rate <= self.max_rate:
            yield "rates must satisfy 0 < min_rate <= start_rate <= max_rate"
        if self.slow_receiver not in ("block", "prune", "skip"):
            yield f"slow_receiver={self.slow_receiver!r}: choose block, prune or skip"
        if self.join_policy not in ("from_now", "from_cache", "from_start"):
            yield f"join_policy={self.join_policy!r}: choose from_now, from_cache or from_start"
        for name in ("hello_interval", "advertise_interval", "solicit_wait", "repair_suppress",
                     "ack_interval", "slow_timeout"):
            if getattr(self, name) <= 0:
                yield f"{name} must be positive"
        if not 0 <= self.queue_target <= 10:
            yield f"queue_target={self.queue_target} must be within 0..10 seconds (0: no bound)"
        if self.head_loss_hellos < 1:
            yield "head_loss_hellos must be at least 1"

    @property
    def payload_size(self) -> int:
        """Application bytes per DATA packet."""
        return self.mtu - DATA_HEADER_MAX

    @property
    def head_timeout(self) -> float:
        """Silence after which a member declares its head lost."""
        return self.hello_interval * self.head_loss_hellos

    @property
    def child_timeout(self) -> float:
        """Silence after which a head drops a child: twice the member's own patience, so a
        member re-affiliates before anyone upstream forgets it (and frees what it lacks)."""
        return 2 * self.head_timeout

    def replace(self, **changes: Any) -> TransportConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TransportConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown transport option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
