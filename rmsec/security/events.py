"""Events the security machines report through ``next_event()``: small frozen dataclasses.

Controller events map one to one onto the observation hooks of :mod:`rmsec.hookspecs`
(``MemberJoined`` → ``rmsec_member_joined``, ``MemberLeft`` → ``rmsec_member_left``,
``MemberExpelled`` → ``rmsec_member_expelled``, ``RekeyDone`` → ``rmsec_rekey_done``,
``AuthFailure`` → ``rmsec_auth_failure``); the trio layer calls the hooks, never the core.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityEvent:
    pass


# ------------------------------------------------------------------------------ controller


@dataclasses.dataclass(frozen=True, slots=True)
class MemberJoined(SecurityEvent):
    member_id: bytes
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class MemberDenied(SecurityEvent):
    member_id: bytes
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class MemberLeft(SecurityEvent):
    member_id: bytes
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class MemberExpelled(SecurityEvent):
    member_id: bytes
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class RekeyDone(SecurityEvent):
    """The group moved to ``epoch``; ``rekey_bytes`` is the signed envelope's size (0 when no
    existing member needed one)."""

    epoch: int
    rekey_bytes: int
    members: int


@dataclasses.dataclass(frozen=True, slots=True)
class SenderAdded(SecurityEvent):
    sender_id: bytes
    owner: bytes
    stream: int


@dataclasses.dataclass(frozen=True, slots=True)
class SenderRemoved(SecurityEvent):
    sender_id: bytes
    owner: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class RecoveryServed(SecurityEvent):
    member_id: bytes
    from_epoch: int
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class ProtocolError(SecurityEvent):
    """A peer misbehaved on its control connection (which is then closed)."""

    conn: int | None
    member_id: bytes | None
    detail: str


# ---------------------------------------------------------------------------------- member


@dataclasses.dataclass(frozen=True, slots=True)
class Welcomed(SecurityEvent):
    """Admitted: keys for ``epoch`` are installed (``keyed`` is False for a key-less head)."""

    epoch: int
    keyed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Denied(SecurityEvent):
    """The controller refused the registration; ``reason`` is the access policy's."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Expelled(SecurityEvent):
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class EpochChanged(SecurityEvent):
    epoch: int
    previous: int
    recovered: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered(SecurityEvent):
    """An authentic message: ``owner`` is the member the controller says registered the
    sender; ``encrypted`` is False for authenticated plaintext."""

    sender_id: bytes
    owner: bytes
    stream: int
    seq: int
    epoch: int
    data: bytes
    encrypted: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SenderKnown(SecurityEvent):
    sender_id: bytes
    owner: bytes
    stream: int


@dataclasses.dataclass(frozen=True, slots=True)
class SenderGone(SecurityEvent):
    sender_id: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SenderRegistered(SecurityEvent):
    """The controller accepted (``ok``) or refused one of this member's senders."""

    sender_id: bytes
    ok: bool
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class RecoveryRequested(SecurityEvent):
    have_epoch: int
    why: str


@dataclasses.dataclass(frozen=True, slots=True)
class AuthFailure(SecurityEvent):
    """Something failed authentication here: ``what`` is ``rekey``, ``recovery``, ``data``,
    ``aead`` (a frame that does not open under the group key), ``translation``, ``welcome``."""

    what: str
    detail: str
