"""Rekey envelopes: controller-signed, session-bound, strictly decoded."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsec.errors import AuthenticationFailed, LocalError, MalformedPacket
from rmsec.security import sigkeys
from rmsec.security.rekey import EnvelopeKind, RekeyEnvelope, open_envelope

SESSION = b"s" * 8
KEY = sigkeys.signing_key_from_seed(b"\x01" * 32)
OTHER = sigkeys.signing_key_from_seed(b"\x02" * 32)
PUBLIC = sigkeys.public_key(KEY)


def seal(key: sigkeys.SigningKey = KEY, **changes: object) -> bytes:
    fields: dict[str, object] = dict(kind=EnvelopeKind.REKEY, session=SESSION, epoch=5,
                                     from_epoch=4, payload=b"keys")
    fields.update(changes)
    return RekeyEnvelope.seal(key, **fields)  # type: ignore[arg-type]


def test_round_trip() -> None:
    envelope = open_envelope(seal(), PUBLIC, session=SESSION)
    assert (envelope.kind, envelope.epoch, envelope.from_epoch, envelope.payload) == (0, 5, 4, b"keys")


def test_forged_by_another_key_is_rejected() -> None:
    with pytest.raises(AuthenticationFailed):
        open_envelope(seal(OTHER), PUBLIC, session=SESSION)


@pytest.mark.parametrize("index,value", [(3, 6), (4, 3), (6, b"other keys"), (1, 1)])
def test_any_changed_field_breaks_the_signature(index: int, value: object) -> None:
    values = cbor2.loads(seal())
    values[index] = value
    if index == 1:
        values[5] = b"someone"
    with pytest.raises(AuthenticationFailed):
        open_envelope(cbor2.dumps(values), PUBLIC, session=SESSION)


def test_other_session_is_rejected() -> None:
    with pytest.raises(AuthenticationFailed):
        open_envelope(seal(session=b"t" * 8), PUBLIC, session=SESSION)


def test_structure_rules() -> None:
    with pytest.raises(MalformedPacket):  # a rekey must move forward
        RekeyEnvelope.decode_untrusted(seal(epoch=4, from_epoch=4))
    with pytest.raises(MalformedPacket):  # a recovery names its member
        RekeyEnvelope.decode_untrusted(seal(kind=EnvelopeKind.RECOVERY))
    recovery = RekeyEnvelope.decode_untrusted(seal(kind=EnvelopeKind.RECOVERY, member_id=b"bob",
                                                   from_epoch=0))
    assert recovery.member_id == b"bob"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_only_raises_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket, AuthenticationFailed):
        open_envelope(data, PUBLIC, session=SESSION)


def test_seed_keys_are_deterministic() -> None:
    assert sigkeys.public_key(sigkeys.signing_key_from_seed(b"\x01" * 32)) == sigkeys.public_key(KEY)
    with pytest.raises(LocalError):
        sigkeys.signing_key_from_seed(b"short")
