"""Named constructions for packet protection: the AEADs and the HKDF key schedule.

This is the packet half of the hazardous-materials boundary (``keycrypto`` holds the key
half, whose HKDF it uses; ``authcrypto`` is the source-authentication plugins'): the rest of
:mod:`rmsec.security` calls :class:`PacketKey`, :func:`derive_traffic_key` and
:func:`aead_algorithm` and never a primitive, so every label, nonce construction and error
collapse lives in one reviewed place.

Nonces follow TLS 1.3 (RFC 8446 §5.3): a per-key 12-byte IV XORed with the 64-bit sequence
number.  Keys are per (session, epoch, sender) (see :mod:`rmsec.security.epochs`), sequence
numbers never repeat within one sender's stream, and a sender id is 8 random bytes drawn once
per sending node, so a (key, nonce) pair is never used twice.

Sans-IO: no clock, no randomness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from rmsec.errors import AuthenticationFailed, ConfigError
from rmsec.security import keycrypto

NONCE_LEN = 12
TAG_LEN = 16
MAX_SEQ = (1 << 64) - 1

_Cipher = AESGCM | ChaCha20Poly1305


@dataclasses.dataclass(frozen=True, slots=True)
class AeadAlgorithm:
    """One AEAD: its configuration name, its one-byte wire code and its key length."""

    name: str
    code: int
    key_len: int
    factory: Callable[[bytes], _Cipher]


#: Every AEAD by configuration name; ``aes-128-gcm`` is the default (DESIGN.md §4).
AEADS: dict[str, AeadAlgorithm] = {
    a.name: a
    for a in (
        AeadAlgorithm("aes-128-gcm", 1, 16, AESGCM),
        AeadAlgorithm("chacha20-poly1305", 2, 32, ChaCha20Poly1305),
        AeadAlgorithm("aes-256-gcm", 3, 32, AESGCM),
    )
}
AEADS_BY_CODE: dict[int, AeadAlgorithm] = {a.code: a for a in AEADS.values()}
DEFAULT_AEAD = "aes-128-gcm"


def aead_algorithm(name: object) -> AeadAlgorithm:
    """The AEAD a configuration names; :class:`ConfigError` listing the choices otherwise."""
    if not isinstance(name, str) or name not in AEADS:
        raise ConfigError(f"aead must be one of {sorted(AEADS)}, got {name!r}")
    return AEADS[name]


class PacketKey:
    """One sender's traffic key in one epoch: seal and open by sequence number.

    Every failure to open (wrong key, tampered bytes, wrong associated data) raises the same
    opaque :class:`AuthenticationFailed`, as Fernet's ``InvalidToken`` does.
    """

    __slots__ = ("_cipher", "_iv")

    def __init__(self, algorithm: AeadAlgorithm, key: bytes, iv: bytes) -> None:
        if len(key) != algorithm.key_len or len(iv) != NONCE_LEN:
            raise ValueError("bad key or iv length")
        self._cipher = algorithm.factory(key)
        self._iv = int.from_bytes(iv, "big")

    def _nonce(self, seq: int) -> bytes:
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError("sequence number out of range")
        return (self._iv ^ seq).to_bytes(NONCE_LEN, "big")

    def seal(self, seq: int, plaintext: bytes, associated: bytes) -> bytes:
        """Ciphertext and 16-byte tag of ``plaintext`` bound to ``associated``."""
        return self._cipher.encrypt(self._nonce(seq), plaintext, associated)

    def open(self, seq: int, ciphertext: bytes, associated: bytes) -> bytes:
        """The plaintext; :class:`AuthenticationFailed` for anything not sealed by this key."""
        try:
            return self._cipher.decrypt(self._nonce(seq), ciphertext, associated)
        except (InvalidTag, ValueError, OverflowError):
            raise AuthenticationFailed("packet did not authenticate") from None

    def tag(self, seq: int, associated: bytes) -> bytes:
        """A 16-byte tag over ``associated`` alone (authenticated plaintext: GMAC-style)."""
        return self.seal(seq, b"", associated)

    def check_tag(self, seq: int, tag: bytes, associated: bytes) -> None:
        """Check :meth:`tag`; :class:`AuthenticationFailed` otherwise."""
        if len(tag) != TAG_LEN:
            raise AuthenticationFailed("packet did not authenticate")
        self.open(seq, tag, associated)


EPOCH_SALT = b"rmsec epoch v1\x00"
TRAFFIC_LABEL = b"rmsec traffic v1"


def derive_traffic_key(
    algorithm: AeadAlgorithm, group_secret: bytes, *, session: bytes, epoch: int, sender_id: bytes
) -> PacketKey:
    """The traffic key of ``sender_id`` in ``epoch`` of ``session``.

    ``salt = "rmsec epoch v1\\0" || session || epoch (8 bytes)`` binds the key to the group and
    the epoch; ``info = "rmsec traffic v1\\0" || aead code || len(sender_id) || sender_id``
    separates senders and algorithms, so one group secret never keys two ciphers the same way.
    """
    salt = EPOCH_SALT + session + epoch.to_bytes(8, "big")
    context = bytes([algorithm.code, len(sender_id)]) + sender_id
    okm = keycrypto.hkdf(group_secret, salt=salt, label=TRAFFIC_LABEL, context=context,
                         length=algorithm.key_len + NONCE_LEN)
    return PacketKey(algorithm, okm[: algorithm.key_len], okm[algorithm.key_len :])
