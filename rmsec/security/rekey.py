"""The rekey envelope: a key-management message signed by the controller.

Key-management schemes produce opaque bytes (``Update.rekey``, ``recover(member)``); the
controller wraps each in an envelope it signs with its Ed25519 key, always, whatever the
scheme does inside: the transport is unauthenticated and a repair head could otherwise feed
members anything.  Encoding (CBOR array, decoded strictly)::

    [1, kind, session (8 bytes), epoch, from_epoch, member_id, payload, signature (64)]

- ``kind`` 0 ``REKEY``: multicast on the controller's rekey stream; ``member_id`` empty;
  moves every member from ``from_epoch`` to ``epoch``.
- ``kind`` 1 ``RECOVERY``: sent to one member over its control connection (key recovery);
  ``member_id`` names it; brings it from any earlier epoch to ``epoch``.

The signature covers ``"rmsec rekey v1\\0" || CBOR [kind, session, epoch, from_epoch,
member_id, payload]``.  Members accept only envelopes with ``epoch`` above their own
(monotonic: an old envelope replayed, even genuine, changes nothing and is counted), of
their own session, and for a recovery, naming them.
"""

from __future__ import annotations

import dataclasses

from rmsec.errors import AuthenticationFailed, MalformedPacket
from rmsec.security import sigkeys
from rmsec.security.untrusted import loads_array
from rmsec.wire.codec import byte_string, check_fields, dumps, int_range, uint

VERSION = 1
DOMAIN = b"rmsec rekey v1\x00"
#: Largest envelope accepted (a flat rekey grows with the group: ~50 bytes a member).
MAX_ENVELOPE = 16 * 1024 * 1024
MAX_EPOCH = (1 << 32) - 1
MAX_MEMBER_ID = 255


class EnvelopeKind:
    REKEY = 0
    RECOVERY = 1


_FIELDS = (
    uint(8),
    int_range(0, 1),
    byte_string(max_len=8, exact=8),
    int_range(0, MAX_EPOCH),
    int_range(0, MAX_EPOCH),
    byte_string(max_len=MAX_MEMBER_ID),
    byte_string(max_len=MAX_ENVELOPE),
    byte_string(max_len=sigkeys.SIGNATURE_LEN, exact=sigkeys.SIGNATURE_LEN),
)


@dataclasses.dataclass(frozen=True, slots=True)
class RekeyEnvelope:
    kind: int
    session: bytes
    epoch: int
    from_epoch: int
    member_id: bytes
    payload: bytes
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        """What the signature covers, after the domain ``"rmsec rekey v1\\0"``."""
        return dumps(
            [self.kind, self.session, self.epoch, self.from_epoch, self.member_id, self.payload]
        )

    def encode(self) -> bytes:
        return dumps([
            VERSION, self.kind, self.session, self.epoch, self.from_epoch, self.member_id,
            self.payload, self.signature,
        ])

    @classmethod
    def seal(
        cls,
        key: sigkeys.SigningKey,
        *,
        kind: int,
        session: bytes,
        epoch: int,
        from_epoch: int,
        payload: bytes,
        member_id: bytes = b"",
    ) -> bytes:
        """Sign and encode one envelope (controller side)."""
        unsigned = cls(kind, session, epoch, from_epoch, member_id, payload)
        signature = key.sign(DOMAIN, unsigned.signed_bytes())
        return dataclasses.replace(unsigned, signature=signature).encode()

    @classmethod
    def decode_untrusted(cls, data: bytes) -> RekeyEnvelope:
        """Parse without verifying; only :class:`MalformedPacket`."""
        values = check_fields(loads_array(data, max_len=MAX_ENVELOPE + 1024, what="rekey"), _FIELDS)
        version, kind, session, epoch, from_epoch, member_id, payload, signature = values
        if version != VERSION:
            raise MalformedPacket("unknown rekey envelope version")
        if kind == EnvelopeKind.REKEY and (member_id or from_epoch >= epoch):
            raise MalformedPacket("a rekey moves the whole group forward")
        if kind == EnvelopeKind.RECOVERY and not member_id:
            raise MalformedPacket("a recovery names its member")
        return cls(kind, session, epoch, from_epoch, member_id, payload, signature)

    def verify(self, controller_key: bytes) -> None:
        """:class:`AuthenticationFailed` unless the controller signed exactly this."""
        sigkeys.verify(controller_key, DOMAIN, self.signed_bytes(), self.signature)


def open_envelope(data: bytes, key: bytes, *, session: bytes) -> RekeyEnvelope:
    """Decode and verify against the controller's public ``key``; :class:`MalformedPacket` or
    :class:`AuthenticationFailed`."""
    envelope = RekeyEnvelope.decode_untrusted(data)
    envelope.verify(key)
    if envelope.session != session:
        raise AuthenticationFailed("envelope of another session")
    return envelope
