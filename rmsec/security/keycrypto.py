"""Named constructions for group key management: the hazardous-materials boundary for keys.

Key-management schemes (``plugins/keymgmt_*``) and the security layer call the names below and
never a primitive, so every algorithm choice, label, length and error collapse is in one
reviewed place (as :mod:`rmsec.security.aead` is for packet protection and
:mod:`rmsec.security.authcrypto` for source authentication).

Constructions
=============

``wrap_key`` / ``unwrap_key``
    AES Key Wrap (RFC 3394, NIST SP 800-38F "KW") of a 16- or 32-byte key under a 16- or
    32-byte key-encryption key.  It is deterministic authenticated encryption: 8 bytes of
    overhead and a 64-bit integrity check, no nonce to transmit or to get wrong.  That makes it
    the right tool for key trees, where a rekey is mostly wrapped keys and its size is the cost
    that matters (a one-member leave at a million members is 39 wraps: 936 bytes instead of
    1,716 with AES-GCM and a 12-byte nonce).  KW carries no associated data: which node a wrap
    belongs to is fixed by the enclosing rekey message, which the controller signs.  Wrapping
    the same key twice under one KEK gives the same bytes, and reveals only that equality.
``seal`` / ``open_sealed``
    AES-GCM with a fresh 96-bit nonce from the injected ``rng`` (sent in front), bound to a
    caller-given ``context`` as associated data: for payloads that are not a single key (a
    member's whole path in a key-recovery message) or that must name their context.
``expand``
    HKDF-Expand-SHA256 (RFC 5869) of one block under a uniformly random key, with a label and a
    context: ``HMAC-SHA256(key, label || 0x00 || context || 0x01)[:length]``.  Keys here are
    fresh random bytes, so the extract step is skipped, as MLS does with ``ExpandWithLabel``.
    It is the PRF behind every derived key: group secrets from tree roots, recovery keys, the
    hash-forward ("one-way") key updates of LKH joins and the one-way function tree's blinding.
``mix``
    The same PRF keyed by two secrets at once (``HMAC-SHA256(a || b, ...)``), for a node whose
    key is a function of both children (one-way function trees); the output is unpredictable
    to anyone missing either input.
``hkdf``
    Full HKDF-SHA256 (extract then expand) for input keying material that is not uniform.
``Ed25519SigningKey`` / ``verify_signature``
    Ed25519 (RFC 8032) over ``domain || message``; domains are short ASCII strings ending in
    NUL so one key never signs two kinds of message that could be confused.

Every failure to open, unwrap or verify raises the one opaque
:class:`~rmsec.errors.AuthenticationFailed`, as Fernet's ``InvalidToken`` does; malformed public
keys raise :class:`~rmsec.errors.MalformedPacket`; misuse by the caller (bad lengths, an ``rng``
that returned the wrong number of bytes) raises :class:`~rmsec.errors.LocalError`.

Sans-IO: no clock, no randomness of its own; anything random comes from the injected ``rng``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rmsec.errors import AuthenticationFailed, LocalError, MalformedPacket

Rng = Callable[[int], bytes]
#: Keys may be slices of the ``bytearray`` a key tree is stored in.
Key = bytes | bytearray

#: Length of every node key and key-encryption key of the key trees (AES-128).
KEY_LEN = 16
#: Length of a group secret handed to the packet-protection key schedule.
SECRET_LEN = 32
#: AES Key Wrap adds one 8-byte integrity block.
WRAP_OVERHEAD = 8
WRAP_LEN = KEY_LEN + WRAP_OVERHEAD
NONCE_LEN = 12
TAG_LEN = 16
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN
SIGNATURE_LEN = 64
PUBLIC_KEY_LEN = 32
SEED_LEN = 32

_KEY_LENGTHS = (16, 32)


# ------------------------------------------------------------------------------ randomness


def random_bytes(rng: Rng, n: int) -> bytes:
    """``n`` bytes from the injected ``rng``, refusing an ``rng`` that returns anything else."""
    out = rng(n)
    if type(out) is not bytes or len(out) != n:
        raise LocalError(f"rng({n}) must return {n} bytes")
    return out


def random_keys(rng: Rng, count: int, length: int = KEY_LEN) -> bytes:
    """``count`` fresh keys of ``length`` bytes, concatenated (one ``rng`` call for all)."""
    return random_bytes(rng, count * length) if count else b""


# -------------------------------------------------------------------------------- key wrap


def wrap_key(kek: Key, key: Key) -> bytes:
    """AES Key Wrap (RFC 3394) of ``key`` under ``kek``: ``len(key) + 8`` bytes."""
    if len(kek) not in _KEY_LENGTHS or len(key) not in _KEY_LENGTHS:
        raise LocalError("key wrap takes 16- or 32-byte keys")
    return aes_key_wrap(bytes(kek), bytes(key))


def unwrap_key(kek: Key, wrapped: bytes) -> bytes:
    """The key inside ``wrapped``; :class:`AuthenticationFailed` for anything else."""
    if len(kek) not in _KEY_LENGTHS or len(wrapped) - WRAP_OVERHEAD not in _KEY_LENGTHS:
        raise AuthenticationFailed("key did not unwrap")
    try:
        return aes_key_unwrap(bytes(kek), wrapped)
    except (InvalidUnwrap, ValueError):
        raise AuthenticationFailed("key did not unwrap") from None


# ---------------------------------------------------------------------------------- AEAD


def seal(key: bytes, plaintext: bytes, *, context: bytes, rng: Rng) -> bytes:
    """AES-GCM of ``plaintext`` bound to ``context``: ``nonce (12) || ciphertext || tag``."""
    if len(key) not in _KEY_LENGTHS:
        raise LocalError("seal takes a 16- or 32-byte key")
    nonce = random_bytes(rng, NONCE_LEN)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_sealed(key: bytes, sealed: bytes, *, context: bytes) -> bytes:
    """The plaintext of :func:`seal`; :class:`AuthenticationFailed` for anything else."""
    if len(key) not in _KEY_LENGTHS or len(sealed) < SEAL_OVERHEAD:
        raise AuthenticationFailed("sealed box did not open")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], context)
    except (InvalidTag, ValueError, OverflowError):
        raise AuthenticationFailed("sealed box did not open") from None


# ----------------------------------------------------------------------------- derivation


def _info(label: bytes, context: bytes) -> bytes:
    if b"\x00" in label:
        raise LocalError("labels are ASCII without NUL")
    return label + b"\x00" + context


def expand(key: Key, label: bytes, context: bytes = b"", length: int = KEY_LEN) -> bytes:
    """One block of HKDF-Expand-SHA256: ``HMAC(key, label || 0 || context || 1)[:length]``."""
    if not 1 <= length <= 32:
        raise LocalError("expand yields 1..32 bytes")
    return hmac.digest(key, _info(label, context) + b"\x01", "sha256")[:length]


def mix(a: bytes, b: bytes, label: bytes, context: bytes = b"", length: int = KEY_LEN) -> bytes:
    """A key that depends on two secrets: :func:`expand` keyed by ``a || b`` (equal lengths)."""
    if len(a) != len(b):
        raise LocalError("mix takes two secrets of one length")
    return expand(a + b, label, context, length)


def hkdf(ikm: bytes, *, salt: bytes, label: bytes, context: bytes = b"", length: int = SECRET_LEN) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-then-expand, for keying material that is not uniform."""
    return HKDF(hashes.SHA256(), length, salt, _info(label, context)).derive(ikm)


def digest(label: bytes, data: bytes) -> bytes:
    """SHA-256 of ``label || 0 || data`` (public values: identifiers, fingerprints)."""
    return hashlib.sha256(_info(label, data)).digest()


def uint_context(*values: int) -> bytes:
    """A fixed-layout context of unsigned integers (8 bytes each, big-endian)."""
    return b"".join(v.to_bytes(8, "big") for v in values)


# ------------------------------------------------------------------------------ signatures


def _signed(domain: bytes, message: bytes) -> bytes:
    if not domain.endswith(b"\x00") or b"\x00" in domain[:-1]:
        raise LocalError("signature domains end in one NUL and contain no other")
    return domain + message


class Ed25519SigningKey:
    """An Ed25519 private key, kept as its RFC 8032 32-byte seed."""

    __slots__ = ("_key", "seed")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != SEED_LEN:
            raise LocalError(f"an Ed25519 private key is {SEED_LEN} bytes")
        self.seed = seed
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)

    @classmethod
    def generate(cls, rng: Rng) -> Ed25519SigningKey:
        return cls(random_bytes(rng, SEED_LEN))

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """A 64-byte signature over ``domain || message``."""
        return self._key.sign(_signed(domain, message))


def load_public_key_untrusted(data: bytes) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from untrusted bytes; :class:`MalformedPacket` otherwise."""
    if type(data) is not bytes or len(data) != PUBLIC_KEY_LEN:
        raise MalformedPacket("an Ed25519 public key is 32 bytes")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise MalformedPacket("not an Ed25519 public key") from None


def verify_signature(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    """Raise the one opaque :class:`AuthenticationFailed` unless ``signature`` is valid."""
    key = load_public_key_untrusted(public_key)
    if type(signature) is not bytes or len(signature) != SIGNATURE_LEN:
        raise AuthenticationFailed("bad signature")
    try:
        key.verify(signature, _signed(domain, message))
    except InvalidSignature:
        raise AuthenticationFailed("bad signature") from None
