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


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    """A packet whose authenticity is now established (possibly released later than arrival)."""

    packet: bytes
    trailer: bytes


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


class SourceAuth(abc.ABC):
    """A source-authentication method: a factory of signers and verifiers."""

    name: ClassVar[str]
    #: True when a receiver holding everything it is given still cannot forge the sender.
    non_repudiable: ClassVar[bool] = True

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
