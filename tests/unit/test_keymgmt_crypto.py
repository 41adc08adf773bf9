"""The key-management crypto boundary (rmsec.security.keycrypto) against published vectors.

AES Key Wrap: RFC 3394 §4.1 and §4.6.  Ed25519: RFC 8032 §7.1 test 1 (key derivation; our
signatures are over a domain-separated message, checked against the primitive directly).
HKDF-Expand: against ``cryptography``'s RFC 5869 implementation.  Every failure is the one
opaque AuthenticationFailed; caller mistakes are LocalError.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import assume, given
from hypothesis import strategies as st

from rmsec.errors import AuthenticationFailed, LocalError, MalformedPacket
from rmsec.security import keycrypto

from .keymgmt_support import counter_rng

RFC3394 = [
    # (KEK, key data, ciphertext): §4.1 128-bit KEK / 128-bit data, §4.6 256 / 256
    (
        "000102030405060708090A0B0C0D0E0F",
        "00112233445566778899AABBCCDDEEFF",
        "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
    ),
    (
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
    ),
]


@pytest.mark.parametrize(("kek", "key", "wrapped"), RFC3394)
def test_key_wrap_rfc3394(kek: str, key: str, wrapped: str) -> None:
    assert keycrypto.wrap_key(bytes.fromhex(kek), bytes.fromhex(key)) == bytes.fromhex(wrapped)
    assert keycrypto.unwrap_key(bytes.fromhex(kek), bytes.fromhex(wrapped)) == bytes.fromhex(key)


def test_key_wrap_accepts_tree_slices() -> None:
    store = bytearray(bytes.fromhex(RFC3394[0][0]) + bytes.fromhex(RFC3394[0][1]))
    assert keycrypto.wrap_key(store[:16], store[16:]).hex().upper() == RFC3394[0][2]


@given(st.binary(min_size=24, max_size=24), st.integers(min_value=0, max_value=23), st.integers(1, 255))
def test_unwrap_tampered_is_opaque(wrapped: bytes, index: int, flip: int) -> None:
    kek = bytes(range(16))
    good = keycrypto.wrap_key(kek, bytes(16))
    bad = bytearray(good)
    bad[index] ^= flip
    with pytest.raises(AuthenticationFailed):
        keycrypto.unwrap_key(kek, bytes(bad))
    assume(wrapped != good)
    with pytest.raises(AuthenticationFailed):
        keycrypto.unwrap_key(kek, wrapped)


@pytest.mark.parametrize("wrapped", [b"", b"x" * 8, b"x" * 23, b"x" * 25, b"x" * 48])
def test_unwrap_wrong_length_is_opaque(wrapped: bytes) -> None:
    with pytest.raises(AuthenticationFailed):
        keycrypto.unwrap_key(bytes(16), wrapped)
    with pytest.raises(AuthenticationFailed):
        keycrypto.unwrap_key(bytes(15), bytes(24))


def test_wrap_misuse_is_local_error() -> None:
    with pytest.raises(LocalError):
        keycrypto.wrap_key(bytes(15), bytes(16))
    with pytest.raises(LocalError):
        keycrypto.wrap_key(bytes(16), bytes(8))


def test_seal_roundtrip_and_context_binding() -> None:
    rng = counter_rng(1)
    key = bytes(range(16))
    sealed = keycrypto.seal(key, b"path keys", context=b"ctx", rng=rng)
    assert len(sealed) == len(b"path keys") + keycrypto.SEAL_OVERHEAD
    assert keycrypto.open_sealed(key, sealed, context=b"ctx") == b"path keys"
    for bad_key, bad_box, ctx in (
        (bytes(16), sealed, b"ctx"),
        (key, sealed, b"other"),
        (key, sealed[:-1], b"ctx"),
        (key, sealed[:5], b"ctx"),
        (key, bytes([sealed[0] ^ 1]) + sealed[1:], b"ctx"),
        (bytes(3), sealed, b"ctx"),
    ):
        with pytest.raises(AuthenticationFailed):
            keycrypto.open_sealed(bad_key, bad_box, context=ctx)


def test_seal_nonce_comes_from_the_rng() -> None:
    key = bytes(16)
    a = keycrypto.seal(key, b"x", context=b"", rng=counter_rng(7))
    b = keycrypto.seal(key, b"x", context=b"", rng=counter_rng(7))
    c = keycrypto.seal(key, b"x", context=b"", rng=counter_rng(8))
    assert a == b != c
    assert a[: keycrypto.NONCE_LEN] == counter_rng(7)(keycrypto.NONCE_LEN)


@given(st.binary(min_size=16, max_size=32), st.binary(max_size=40), st.integers(1, 32))
def test_expand_is_hkdf_expand(key: bytes, context: bytes, length: int) -> None:
    label = b"rmsec test label"
    reference = HKDFExpand(hashes.SHA256(), length, label + b"\x00" + context).derive(key)
    assert keycrypto.expand(key, label, context, length) == reference


def test_mix_is_expand_of_both_inputs() -> None:
    a, b = bytes(16), bytes(range(16))
    assert keycrypto.mix(a, b, b"l", b"c") == keycrypto.expand(a + b, b"l", b"c")
    assert keycrypto.mix(a, b, b"l") != keycrypto.mix(b, a, b"l")
    with pytest.raises(LocalError):
        keycrypto.mix(a, b[:8], b"l")


def test_hkdf_matches_rfc5869_construction() -> None:
    ikm, salt = bytes(22), bytes(range(13))
    expected = HKDF(hashes.SHA256(), 42, salt, b"lbl\x00ctx").derive(ikm)
    assert keycrypto.hkdf(ikm, salt=salt, label=b"lbl", context=b"ctx", length=42) == expected


def test_labels_refuse_nul_and_lengths_are_bounded() -> None:
    with pytest.raises(LocalError):
        keycrypto.expand(bytes(16), b"bad\x00label")
    with pytest.raises(LocalError):
        keycrypto.expand(bytes(16), b"label", length=33)


def test_digest_and_uint_context() -> None:
    assert keycrypto.digest(b"l", b"d") == hashlib.sha256(b"l\x00d").digest()
    assert keycrypto.uint_context(1, 2) == (1).to_bytes(8, "big") + (2).to_bytes(8, "big")


def test_rng_is_checked() -> None:
    with pytest.raises(LocalError):
        keycrypto.random_bytes(lambda n: b"short", 16)
    with pytest.raises(LocalError):
        keycrypto.random_bytes(lambda n: bytearray(n), 16)  # type: ignore[arg-type, return-value]
    assert keycrypto.random_keys(counter_rng(1), 0) == b""
    assert len(keycrypto.random_keys(counter_rng(1), 3)) == 48


# RFC 8032 §7.1, TEST 1
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_ed25519_rfc8032_key_and_domain_separation() -> None:
    key = keycrypto.Ed25519SigningKey(RFC8032_SECRET)
    assert key.public_key == RFC8032_PUBLIC
    # the primitive under the wrapper is RFC 8032 Ed25519 itself
    raw = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    assert raw.sign(b"") == RFC8032_SIGNATURE
    signature = key.sign(b"rmsec test v1\x00", b"message")
    assert signature == raw.sign(b"rmsec test v1\x00message")
    keycrypto.verify_signature(RFC8032_PUBLIC, b"rmsec test v1\x00", b"message", signature)
    for domain, message, sig in (
        (b"rmsec other v1\x00", b"message", signature),
        (b"rmsec test v1\x00", b"messagf", signature),
        (b"rmsec test v1\x00", b"message", signature[:-1] + bytes([signature[-1] ^ 1])),
        (b"rmsec test v1\x00", b"message", signature[:63]),
    ):
        with pytest.raises(AuthenticationFailed):
            keycrypto.verify_signature(RFC8032_PUBLIC, domain, message, sig)


def test_ed25519_generation_and_misuse() -> None:
    key = keycrypto.Ed25519SigningKey.generate(counter_rng(3))
    assert key.seed == counter_rng(3)(32)
    with pytest.raises(LocalError):
        key.sign(b"no nul", b"m")
    with pytest.raises(LocalError):
        key.sign(b"two\x00nuls\x00", b"m")
    with pytest.raises(LocalError):
        keycrypto.Ed25519SigningKey(bytes(31))
    with pytest.raises(MalformedPacket):
        keycrypto.load_public_key_untrusted(bytes(31))


def test_hmac_construction_of_expand_is_documented_one() -> None:
    key = bytes(range(16))
    manual = hmac.digest(key, b"rmsec lkh group secret\x00" + (5).to_bytes(8, "big") + b"\x01", "sha256")
    assert keycrypto.expand(key, b"rmsec lkh group secret", keycrypto.uint_context(5), 32) == manual
