"""Signed session announcements (DESIGN.md §4): what a secured group tells the world, signed.

A signed announcement wraps the transport announcement of :mod:`rmsec.announcement` (kept as
its exact encoded bytes, so that module stays the one authority on its fields) together with
a *security description*, and the group owner's Ed25519 signature over both::

    [1, transport announcement (bytes), security description (bytes), signature (64 bytes)]

    security description = canonical CBOR map:
      1 version (1)            2 group name (text)        3 controller address [host, port]
      4 controller key (32)    5 key management (text)    6 source auth (text)
      7 access policy (text)   8 aead (text)              9 serial (uint)
      10 issued at (wall s)   11 expires (wall s / null) 12 owner key (32)
      13 controller TLS name (text)

The signed string is ``"rmsec announcement v1\\0" || CBOR [transport, security]``.

A signature by a key the reader does not already trust proves nothing, so
:meth:`SignedAnnouncement.decode_untrusted` takes the trusted owner key(s) as an argument and
accepts nothing else; ``serial`` lets a member refuse an older announcement than one it has
seen, and ``expires`` bounds how long a captured one can be replayed.  The first byte tells
a signed announcement (CBOR array) from an unsigned one (CBOR map): :func:`is_signed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import cbor2

from rmsec.errors import AuthenticationFailed, MalformedPacket
from rmsec.security import sigkeys
from rmsec.security.untrusted import loads_array
from rmsec.wire.codec import byte_string, check_fields, dumps, parse_single, uint

if TYPE_CHECKING:
    from rmsec.config import GroupConfig

VERSION = 1
DOMAIN = b"rmsec announcement v1\x00"
MAX_SIGNED = 32 * 1024
MAX_NAME = 255

(K_VERSION, K_GROUP, K_CONTROLLER, K_CONTROLLER_KEY, K_KEY_MANAGEMENT, K_SOURCE_AUTH,
 K_ACCESS_POLICY, K_AEAD, K_SERIAL, K_ISSUED, K_EXPIRES, K_OWNER, K_TLS_NAME) = range(1, 14)
_KEYS = frozenset(range(1, 14))


@dataclasses.dataclass(frozen=True, slots=True)
class SecurityDescription:
    """The security half of an announcement: who controls the group and with which plugins."""

    group: str
    controller: tuple[str, int]
    controller_key: bytes
    key_management: str
    source_auth: str
    access_policy: str
    aead: str
    owner_key: bytes
    serial: int = 0
    issued_at: float = 0.0
    expires: float | None = None
    tls_name: str = "rmsec-controller"

    @classmethod
    def for_group(
        cls,
        config: GroupConfig,
        *,
        controller: tuple[str, int],
        controller_key: bytes,
        owner_key: bytes,
        issued_at: float,
        serial: int | None = None,
        expires: float | None = None,
        tls_name: str = "rmsec-controller",
    ) -> SecurityDescription:
        """The description of ``config``'s group served by a controller at ``controller``
        (``serial`` defaults to the issue time in milliseconds, so later ones are larger)."""
        return cls(
            group=config.group, controller=controller, controller_key=controller_key,
            key_management=config.key_management, source_auth=config.source_auth,
            access_policy=config.access_policy, aead=config.aead, owner_key=owner_key,
            serial=int(issued_at * 1000) if serial is None else serial, issued_at=issued_at,
            expires=expires, tls_name=tls_name,
        )

    def encode(self) -> bytes:
        return bytes(cbor2.dumps({
            K_VERSION: VERSION,
            K_GROUP: self.group,
            K_CONTROLLER: [self.controller[0], self.controller[1]],
            K_CONTROLLER_KEY: self.controller_key,
            K_KEY_MANAGEMENT: self.key_management,
            K_SOURCE_AUTH: self.source_auth,
            K_ACCESS_POLICY: self.access_policy,
            K_AEAD: self.aead,
            K_SERIAL: self.serial,
            K_ISSUED: float(self.issued_at),
            K_EXPIRES: None if self.expires is None else float(self.expires),
            K_OWNER: self.owner_key,
            K_TLS_NAME: self.tls_name,
        }, canonical=True))

    @classmethod
    def decode_untrusted(cls, data: bytes) -> SecurityDescription:
        value = parse_single(data, "security description", major=5)
        if type(value) is not dict or set(value) != _KEYS:
            raise MalformedPacket("security description has missing or unknown keys")
        if value[K_VERSION] != VERSION or type(value[K_VERSION]) is not int:
            raise MalformedPacket("unsupported security description version")
        return cls(
            group=_name(value[K_GROUP]),
            controller=_addr(value[K_CONTROLLER]),
            controller_key=_key(value[K_CONTROLLER_KEY]),
            key_management=_name(value[K_KEY_MANAGEMENT]),
            source_auth=_name(value[K_SOURCE_AUTH]),
            access_policy=_name(value[K_ACCESS_POLICY]),
            aead=_name(value[K_AEAD]),
            serial=uint(64)(value[K_SERIAL]),
            issued_at=_time(value[K_ISSUED]),
            expires=None if value[K_EXPIRES] is None else _time(value[K_EXPIRES]),
            owner_key=_key(value[K_OWNER]),
            tls_name=_name(value[K_TLS_NAME]),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class SignedAnnouncement:
    """A verified announcement: the transport part (bytes, decode with
    :meth:`rmsec.announcement.Announcement.decode_untrusted`) and the security part."""

    transport: bytes
    security: SecurityDescription
    encoded: bytes

    @classmethod
    def sign(cls, owner: sigkeys.SigningKey, transport: bytes, security: SecurityDescription) -> bytes:
        """Sign and encode (the group owner's side); ``security.owner_key`` must be ``owner``'s."""
        if security.owner_key != sigkeys.public_key(owner):
            raise ValueError("the security description names another owner key")
        body = security.encode()
        signature = owner.sign(DOMAIN, dumps([transport, body]))
        return dumps([VERSION, transport, body, signature])

    @classmethod
    def decode_untrusted(
        cls, data: bytes, *, owner_keys: Collection[bytes], now_wall: float | None = None,
        min_serial: int = 0,
    ) -> SignedAnnouncement:
        """Parse and verify.  :class:`MalformedPacket` for bad encoding; the one opaque
        :class:`AuthenticationFailed` for a signature that is not by a trusted owner key, an
        expired announcement, or one older than ``min_serial``."""
        version, transport, body, signature = check_fields(
            loads_array(data, max_len=MAX_SIGNED, what="announcement"),
            (uint(8), byte_string(max_len=MAX_SIGNED), byte_string(max_len=MAX_SIGNED),
             byte_string(max_len=sigkeys.SIGNATURE_LEN, exact=sigkeys.SIGNATURE_LEN)),
        )
        if version != VERSION:
            raise MalformedPacket("unknown signed announcement version")
        security = SecurityDescription.decode_untrusted(body)
        if security.owner_key not in set(owner_keys):
            raise AuthenticationFailed("announcement not signed by a trusted owner")
        sigkeys.verify(security.owner_key, DOMAIN, dumps([transport, body]), signature)
        if now_wall is not None and security.expires is not None and now_wall > security.expires:
            raise AuthenticationFailed("announcement expired")
        if security.serial < min_serial:
            raise AuthenticationFailed("announcement older than one already seen")
        return cls(transport, security, bytes(data))


def is_signed(data: bytes) -> bool:
    """True for a signed announcement (CBOR array), False for an unsigned one (CBOR map)."""
    return bool(data) and (data[0] & 0xE0) == 0x80


def _name(value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME:
        raise MalformedPacket("bad name in announcement")
    return value


def _key(value: Any) -> bytes:
    if type(value) is not bytes or len(value) != sigkeys.PUBLIC_LEN:
        raise MalformedPacket("bad key in announcement")
    return value


def _time(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise MalformedPacket("bad time in announcement")
    return float(value)


def _addr(value: Any) -> tuple[str, int]:
    if (
        type(value) is not list or len(value) != 2 or type(value[0]) is not str
        or not 0 < len(value[0]) <= 255 or type(value[1]) is not int or not 0 <= value[1] < 65536
    ):
        raise MalformedPacket("bad controller address in announcement")
    return (value[0], value[1])
