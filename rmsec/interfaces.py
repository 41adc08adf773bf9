"""Plugin interfaces (DESIGN.md §5, **contract**): what key-management schemes, source
authentication methods and access policies implement.

Every interface is sans-IO: bytes in, bytes out, ``now`` passed in, randomness injected as
``rng(n) -> bytes``.  Schemes are plain objects handed to the core by the plugin manager; the
core never calls hooks itself.  Untrusted input raises only :class:`MalformedPacket`,
:class:`AuthenticationFailed` or :class:`NotForMe` (from :mod:`rmsec.errors`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from rmsec.errors import LocalError

#: Injected randomness: ``rng(n)`` returns ``n`` cryptographically strong random bytes.
Rng = Callable[[int], bytes]


# --------------------------------------------------------------------------- key management


@dataclasses.dataclass(frozen=True, slots=True)
class Update:
    """One epoch change produced by the controller-side scheme.

    ``rekey`` is multicast to the group on the controller's stream (empty when the change
    needs no multicast, e.g. a join handled by one-way hashing); ``welcomes`` holds the private
    message for each member that joined in this update.
    """

    epoch: int
    rekey: bytes
    welcomes: dict[bytes, bytes]


class KeyManagementMember(abc.ABC):
    """Member side of a scheme: holds this member's keys and follows the group's epochs."""

    epoch: int
    group_secret: bytes

    @abc.abstractmethod
    def apply(self, rekey: bytes) -> None:
        """Move to the epoch in ``rekey``.

        Raises ``NotForMe`` (nothing for this member, e.g. it was evicted),
        ``AuthenticationFailed`` or ``MalformedPacket``; on any error the state is unchanged.
        """


class KeyManagement(abc.ABC):
    """Controller side of a scheme, one object per group."""

    name: ClassVar[str]
    #: Properties the scheme claims and the tests prove.
    forward_secrecy: ClassVar[bool] = True
    backward_secrecy: ClassVar[bool] = True
    collusion_resistant: ClassVar[bool] = True

    epoch: int
    group_secret: bytes

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        self.rng = rng
        self.options: Mapping[str, Any] = dict(options or {})

    @property
    @abc.abstractmethod
    def members(self) -> int:
        """Number of current members."""

    @abc.abstractmethod
    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        """Apply one batch of membership changes as a single new epoch."""

    @abc.abstractmethod
    def refresh(self) -> Update:
        """Periodic rekey: new group secret, same membership."""

    @property
    def part_refresh_periods(self) -> Mapping[int, float]:
        """Parts of the group that rekey on periods of their own (``regions``: a region's
        ``refresh``), as part index -> seconds; the controller calls :meth:`refresh_part`
        on each part's timer.  Schemes without parts have none."""
        return {}

    def refresh_part(self, part: int) -> Update:
        """One part's own periodic rekey (its keys and a new group secret, same membership)."""
        raise LocalError(f"{type(self).__name__} has no parts to refresh on their own")

    @abc.abstractmethod
    def recover(self, member_id: bytes) -> bytes:
        """A message that brings ``member_id`` from any earlier epoch to the current one
        (decoded by :meth:`KeyManagementMember.apply`)."""

    @classmethod
    @abc.abstractmethod
    def member_from_welcome(cls, welcome: bytes) -> KeyManagementMember:
        """Build the member-side state from a welcome (untrusted bytes)."""


# ----------------------------------------------------------------------- source authentication


class Signer(abc.ABC):
    """Sender side of a source-authentication method."""

    @property
    @abc.abstractmethod
    def params(self) -> bytes:
        """Public parameters every receiver needs (e.g. a public key, a TESLA bootstrap)."""

    def material_for(self, member_id: bytes) -> bytes:
        """Per-receiver secret material for a welcome (multimac key subsets); ``b""`` otherwise."""
        return b""

    @abc.abstractmethod
    def protect(self, packet: bytes, now: float) -> bytes:
        """The trailer authenticating ``packet`` (header + ciphertext) as sent at ``now``."""

    def pending(self, now: float) -> list[bytes]:
        """Extra authentication packets due by ``now`` (signature packets, key disclosures)."""
        return []

    def outstanding_until(self) -> float | None:
        """When :meth:`pending` will have given out everything the packets protected so far
        need to verify (TESLA: their keys' disclosure; EMSS: the signature packet over the
        tail); ``None`` when nothing is outstanding.  A stream does not end before then:
        receivers could not verify its last packets."""
        return None


class DeferredSigner(Signer):
    """Optional capability of a :class:`Signer` whose trailers depend on packets still to
    come (one signature over a batch, as ``batchsig`` does), so it cannot give a trailer per
    packet at once without paying a signature per packet.

    The core detects it with ``isinstance(signer, DeferredSigner)`` and then calls
    :meth:`submit` for every packet instead of :meth:`Signer.protect`; finished packets come
    back from :meth:`ready`, which the core calls right after each :meth:`submit` and again
    once ``now`` reaches :meth:`get_timer`, and from :meth:`flush` at the end of the stream.
    Contract:

    - every submitted packet comes out exactly once, as ``(packet, trailer)``, in submit
      order (the core keeps a stream's sequence order that way);
    - latency is bounded: :meth:`get_timer` names when the oldest held packet must come out,
      and :meth:`ready` at that time returns it (a batch closed by size *or* by deadline);
    - :meth:`Signer.protect` still works on its own (immediately, at whatever cost) for
      callers that cannot wait.
    """

    @abc.abstractmethod
    def submit(self, packet: bytes, now: float) -> None:
        """Take ``packet`` (header + ciphertext, sent at ``now``); its trailer comes later."""

    @abc.abstractmethod
    def ready(self, now: float) -> list[tuple[bytes, bytes]]:
        """Every ``(packet, trailer)`` finished by ``now`` and not yet returned."""

    @abc.abstractmethod
    def flush(self, now: float) -> list[tuple[bytes, bytes]]:
        """Finish every held packet now (end of stream) and return what :meth:`ready` would."""

    @abc.abstractmethod
    def get_timer(self) -> float | None:
        """When the oldest packet not yet finished must be (then :meth:`ready` returns it);
        ``None`` while every submitted packet is finished (collected or not)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    """A packet whose authenticity is now established (possibly released later than arrival)."""

    packet: bytes
    trailer: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class ClockBound:
    """What a receiver knows of a sender's clock (loose time synchronisation, for methods
    whose security rests on time such as TESLA): at local time ``at`` the sender's clock read
    at most ``at + offset`` and at least ``at + offset - error``.

    The core measures it over authenticated channels (:mod:`rmsec.security.clocks`) but
    knows nothing of clock drift, so it says how much drift the bound has not yet absorbed:
    it combines measurements taken ``age`` seconds apart (through the controller's clock).  A
    method that bounds the relative rate error of any two clocks by ``rho`` widens the upper
    end by ``rho * age`` and the width by ``2 * rho * age`` at ``at``, and both by ``rho``
    per second away from ``at``.
    """

    offset: float
    error: float
    at: float
    age: float = 0.0


class Verifier(abc.ABC):
    """Receiver side of a source-authentication method."""

    @abc.abstractmethod
    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        """Check ``trailer`` over ``packet``; return every packet now verified (this one, and
        any buffered ones this arrival released).  Raises ``AuthenticationFailed`` for a
        forgery and ``MalformedPacket`` for a trailer that does not parse."""

    def receive_auth_packet(self, data: bytes, now: float) -> list[Verified]:
        """Process an extra authentication packet from :meth:`Signer.pending`."""
        return []

    def set_clock(self, bound: ClockBound) -> None:  # noqa: B027 - optional, no-op default
        """Adopt a (fresher) bound on the sender's clock; methods that need no clock ignore
        it (see :attr:`SourceAuth.needs_clock`)."""

    def poll(self, now: float) -> list[Verified]:
        """Packets that became verified without a packet of their own (released by time);
        the core calls it once :meth:`get_timer` is due."""
        return []

    def get_timer(self) -> float | None:
        """When :meth:`poll` should next run (``now`` scale), or None."""
        return None


class SourceAuth(abc.ABC):
    """A source-authentication method: a factory of signers and verifiers."""

    name: ClassVar[str]
    #: True when a receiver holding everything it is given still cannot forge the sender.
    non_repudiable: ClassVar[bool] = True
    #: True when verifiers need a bound on the sender's clock (:class:`ClockBound`): the
    #: core then synchronises each receiver with the controller, and the controller with
    #: each sender, and hands verifiers the composed bound through :meth:`Verifier.set_clock`.
    needs_clock: bool = False
    #: Seconds between refreshes of those bounds (None: never).  A bound widens with clock
    #: drift (:class:`ClockBound`) until the method refuses it; the core keeps it fresh: the
    #: controller re-measures each sender's clock every ``clock_refresh / 4`` seconds and each
    #: receiver re-measures the controller's every ``clock_refresh / 2`` to ``clock_refresh``
    #: seconds (jittered), recomposing every sender's bound.  The method picks the period so
    #: that what drift adds over ``1.25 * clock_refresh`` leaves room for the round trips.
    clock_refresh: float | None = None

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        self.rng = rng
        self.options: Mapping[str, Any] = dict(options or {})

    @abc.abstractmethod
    def signer(self, *, sender_id: bytes, now: float) -> Signer:
        """A new signer for one sender's stream."""

    @abc.abstractmethod
    def verifier(self, params: bytes, material: bytes, *, now: float) -> Verifier:
        """A verifier from the signer's ``params`` and this receiver's ``material``."""


# ------------------------------------------------------------------------------ access policy


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """What a member presents at registration.

    ``member_id`` is the identity the member claims; ``certificate`` the DER X.509 certificate
    verified by TLS (``None`` without one); ``token`` any other credential a policy accepts.
    """

    member_id: bytes
    certificate: bytes | None = None
    token: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """Admit or deny, with the reason the member is told, and optional expiry (``now`` scale)."""

    admit: bool
    reason: str
    valid_until: float | None = None


class AccessPolicy(abc.ABC):
    """Channel-manager policy deciding who may join (and when a member must be expelled)."""

    name: ClassVar[str]

    def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
        self.options: Mapping[str, Any] = dict(options or {})

    @abc.abstractmethod
    def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
        """Decide whether ``credentials`` may be in ``group`` at ``now``."""

    def still_valid(self, credentials: Credentials, group: str, now: float) -> Decision:
        """Re-check a current member (periodically, or after :meth:`reload`)."""
        return self.decide(credentials, group, now)

    def reload(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Re-read external state (allow lists, revocation lists)."""
