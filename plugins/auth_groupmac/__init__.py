"""Source authentication ``groupmac``: one MAC key shared by the sender and every receiver.

This proves only that a packet came from *some holder of the key*: any receiver can forge
packets as the sender (``non_repudiable = False``; the insider-forgery test shows it
succeeding).  It is here as the cheap end of the comparison and for groups where every member
is trusted (a conference of peers).

The key is drawn from the injected ``rng`` per sender stream and reaches each receiver in its
welcome (:meth:`Signer.material_for`, the same bytes for everyone).  Start a new signer when
the group moves to a new epoch if evicted members must stop passing the check.

Encodings (CBOR, strict):

- params:   ``[1, sender_id, key_id (8 bytes), mac_len]`` where
  ``key_id = SHA-256("rmsec groupmac key id" || key)[:8]`` lets a receiver check that its
  material belongs to these params;
- material: ``[1, key (32 bytes)]``;
- trailer:  ``[tag]``, ``tag = HMAC-SHA256(key, "rmsec groupmac v1\\0" || len(sender_id) ||
  sender_id || packet)[:mac_len]``, ``mac_len`` 10..32 (option, default 16).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rmsec.errors import AuthenticationFailed, ConfigError, MalformedPacket
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import Rng, Signer, SourceAuth, Verified, Verifier
from rmsec.registry import SourceAuthRegistry
from rmsec.security import authcrypto
from rmsec.wire.codec import byte_string, check_fields, dumps, int_range, loads_untrusted, uint

from ..auth_ed25519.persig import (
    cbor_array_head,
    cbor_bytes_head,
    check_options,
    check_sender_id,
)

VERSION = 1
DOMAIN = b"rmsec groupmac v1\x00"
KEY_LEN = 32


def _key_id(key: bytes) -> bytes:
    return authcrypto.tagged_hash(b"rmsec groupmac key id", key)[:8]


class GroupMacSigner(Signer):
    def __init__(self, key: bytes, sender_id: bytes, mac_len: int) -> None:
        self._mac_len = mac_len
        # The key schedule and the fixed domain / sender prefix are hashed once.
        self._mac = authcrypto.MacKey(key, authcrypto.signed_message(DOMAIN, sender_id))
        self._params = dumps([VERSION, sender_id, _key_id(key), mac_len])
        self._material = dumps([VERSION, key])
        self._head = cbor_array_head(1) + cbor_bytes_head(mac_len)

    @property
    def params(self) -> bytes:
        return self._params

    def material_for(self, member_id: bytes) -> bytes:
        return self._material

    def protect(self, packet: bytes, now: float) -> bytes:
        return self._head + self._mac.tag(packet, self._mac_len)


class GroupMacVerifier(Verifier):
    def __init__(self, params: bytes, material: bytes) -> None:
        version, sender_id, key_id, mac_len = check_fields(
            loads_untrusted(params),
            (uint(8), byte_string(max_len=64), byte_string(max_len=8, exact=8), int_range(10, 32)),
        )
        mversion, key = check_fields(
            loads_untrusted(material), (uint(8), byte_string(max_len=KEY_LEN, exact=KEY_LEN))
        )
        if version != VERSION or mversion != VERSION or not sender_id:
            raise MalformedPacket("unknown groupmac version")
        if not authcrypto.mac_equal(_key_id(key), key_id):
            raise AuthenticationFailed("material does not match params")
        self._key = key
        self._mac_len = mac_len
        self._prefix = authcrypto.signed_message(DOMAIN, sender_id)
        self._mac = authcrypto.MacKey(key, self._prefix)
        self._tag = byte_string(max_len=mac_len, exact=mac_len)
        self._head = cbor_array_head(1) + cbor_bytes_head(mac_len)
        self._trailer_len = len(self._head) + mac_len

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        if len(trailer) == self._trailer_len and trailer.startswith(self._head):
            tag = trailer[len(self._head) :]  # the canonical encoding: skip the parser
        else:
            (tag,) = check_fields(loads_untrusted(trailer), (self._tag,))
        if not self._mac.matches(packet, tag):
            raise AuthenticationFailed("bad group MAC")
        return [Verified(packet, trailer)]


class GroupMacAuth(SourceAuth):
    """HMAC-SHA256 under a key every member holds: cheap, and forgeable by any member."""

    name = "groupmac"
    non_repudiable = False

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        check_options(self.options, {"mac_len"})
        mac_len = self.options.get("mac_len", 16)
        if type(mac_len) is not int or not 10 <= mac_len <= 32:
            raise ConfigError("groupmac mac_len must be an integer in 10..32")
        self.mac_len: int = mac_len

    def signer(self, *, sender_id: bytes, now: float) -> Signer:
        return GroupMacSigner(self.rng(KEY_LEN), check_sender_id(sender_id), self.mac_len)

    def verifier(self, params: bytes, material: bytes, *, now: float) -> Verifier:
        return GroupMacVerifier(params, material)


@hookimpl
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    registry.add(GroupMacAuth)
