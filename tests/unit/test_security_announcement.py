"""Signed announcements: owner-signed, trusted key required, forgeries rejected."""

from __future__ import annotations

import cbor2
import pytest

from rmsec.announcement import Announcement
from rmsec.errors import AuthenticationFailed, MalformedPacket
from rmsec.security import sigkeys
from rmsec.security.announcement import SecurityDescription, SignedAnnouncement, is_signed

OWNER = sigkeys.signing_key_from_seed(b"\x03" * 32)
MALLORY = sigkeys.signing_key_from_seed(b"\x04" * 32)
TRANSPORT = Announcement(b"A" * 8, ("127.0.0.1", 4000)).encode()


def description(owner: sigkeys.SigningKey = OWNER, **changes: object) -> SecurityDescription:
    fields: dict[str, object] = dict(
        group="quotes", controller=("127.0.0.1", 5000), controller_key=b"\x05" * 32,
        key_management="flat", source_auth="ed25519", access_policy="x509",
        aead="aes-128-gcm", owner_key=sigkeys.public_key(owner), serial=3, issued_at=100.0,
        expires=200.0,
    )
    fields.update(changes)
    return SecurityDescription(**fields)  # type: ignore[arg-type]


def test_round_trip_and_transport_part_decodes() -> None:
    signed = SignedAnnouncement.sign(OWNER, TRANSPORT, description())
    assert is_signed(signed) and not is_signed(TRANSPORT)
    ann = SignedAnnouncement.decode_untrusted(signed, owner_keys=[sigkeys.public_key(OWNER)],
                                             now_wall=150.0)
    assert ann.security == description()
    assert Announcement.decode_untrusted(ann.transport).root == ("127.0.0.1", 4000)


def test_signed_by_an_untrusted_key_is_rejected() -> None:
    forged = SignedAnnouncement.sign(MALLORY, TRANSPORT, description(MALLORY))
    with pytest.raises(AuthenticationFailed):
        SignedAnnouncement.decode_untrusted(forged, owner_keys=[sigkeys.public_key(OWNER)])


@pytest.mark.parametrize("part", [1, 2])
def test_tampering_is_rejected(part: int) -> None:
    values = cbor2.loads(SignedAnnouncement.sign(OWNER, TRANSPORT, description()))
    if part == 1:
        values[1] = Announcement(b"A" * 8, ("10.0.0.66", 4000)).encode()  # redirect the root
    else:
        values[2] = description(controller=("10.0.0.66", 5000)).encode()
    with pytest.raises(AuthenticationFailed):
        SignedAnnouncement.decode_untrusted(cbor2.dumps(values), owner_keys=[sigkeys.public_key(OWNER)])


def test_expired_or_older_serial_rejected() -> None:
    signed = SignedAnnouncement.sign(OWNER, TRANSPORT, description())
    keys = [sigkeys.public_key(OWNER)]
    with pytest.raises(AuthenticationFailed):
        SignedAnnouncement.decode_untrusted(signed, owner_keys=keys, now_wall=201.0)
    with pytest.raises(AuthenticationFailed):
        SignedAnnouncement.decode_untrusted(signed, owner_keys=keys, min_serial=4)


def test_sign_refuses_a_description_of_another_owner() -> None:
    with pytest.raises(ValueError):
        SignedAnnouncement.sign(OWNER, TRANSPORT, description(MALLORY))


@pytest.mark.parametrize("junk", [b"", b"\x84", b"\xa0", cbor2.dumps([1, b"", b"", b""]),
                                  cbor2.dumps([1, b"x", b"\xa1\x01\x01", b"\x00" * 64])])
def test_garbage_is_malformed(junk: bytes) -> None:
    with pytest.raises(MalformedPacket):
        SignedAnnouncement.decode_untrusted(junk, owner_keys=[sigkeys.public_key(OWNER)])


def test_description_for_a_group_config() -> None:
    from rmsec.config import GroupConfig

    config = GroupConfig(group="quotes", source_auth="groupmac", aead="chacha20-poly1305")
    desc = SecurityDescription.for_group(
        config, controller=("127.0.0.1", 5000), controller_key=b"\x05" * 32,
        owner_key=sigkeys.public_key(OWNER), issued_at=1000.5,
    )
    assert (desc.group, desc.source_auth, desc.aead, desc.serial) == ("quotes", "groupmac", "chacha20-poly1305", 1000500)
    signed = SignedAnnouncement.sign(OWNER, TRANSPORT, desc)
    assert SignedAnnouncement.decode_untrusted(signed, owner_keys=[sigkeys.public_key(OWNER)]).security == desc
