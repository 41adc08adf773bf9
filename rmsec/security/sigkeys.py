"""Ed25519 keys of the controller (signs rekeys) and the group owner (signs announcements).

Both are 32-byte seeds (RFC 8032 private keys) used through the key boundary
:mod:`rmsec.security.keycrypto` (``Ed25519SigningKey``, ``verify_signature``), so this module
holds no primitive of its own; it only fixes the names the security core uses.  Signatures are
always over ``domain || message`` with a NUL-terminated domain (``"rmsec rekey v1\\0"``,
``"rmsec announcement v1\\0"``), so one key can never be tricked into signing a message of
one kind that verifies as another; that is also why an owner key may double as an X.509 CA
key (a certificate's to-be-signed bytes start with a DER SEQUENCE, never with ``rmsec``).
"""

from __future__ import annotations

from rmsec.interfaces import Rng
from rmsec.security import keycrypto

SEED_LEN = keycrypto.SEED_LEN
PUBLIC_LEN = keycrypto.PUBLIC_KEY_LEN
SIGNATURE_LEN = keycrypto.SIGNATURE_LEN

SigningKey = keycrypto.Ed25519SigningKey


def signing_key_from_seed(seed: bytes) -> SigningKey:
    """The Ed25519 key whose RFC 8032 private key is ``seed`` (32 bytes; LocalError otherwise)."""
    return keycrypto.Ed25519SigningKey(seed)


def new_signing_key(rng: Rng) -> SigningKey:
    """A fresh key from the injected randomness."""
    return keycrypto.Ed25519SigningKey.generate(rng)


def public_key(key: SigningKey) -> bytes:
    return key.public_key


def check_public_key_untrusted(data: bytes) -> bytes:
    """``data`` if it is a valid Ed25519 public key; :class:`MalformedPacket` otherwise."""
    keycrypto.load_public_key_untrusted(data)
    return data


def verify(public: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    """Raise the one opaque :class:`AuthenticationFailed` unless ``signature`` is valid
    (:class:`MalformedPacket` if ``public`` is not a key at all)."""
    keycrypto.verify_signature(public, domain, message, signature)
