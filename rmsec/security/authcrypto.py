"""Named constructions for source authentication, over ``cryptography`` and ``hashlib``.

This is the hazardous-materials boundary for the ``auth_*`` plugins: they call the names below
(``SIGNATURES``, :func:`packet_mac`, :class:`MerkleBatch`, :class:`OneWayChain`,
:class:`BitMacBank`, ...) and never touch a primitive directly, so every domain separation
string, truncation and comparison lives in one reviewed place.

Why two back ends: signatures come from ``cryptography`` (OpenSSL).  Per-packet hashing and
MACs go through :mod:`hashlib` / :func:`hmac.digest`, which call the same OpenSSL code in one C
call; ``cryptography``'s hash objects cost about 1 µs of Python overhead per packet, which is
larger than SHA-256 of a whole 1 KiB packet on this machine (SHA-NI), and the MAC-based methods
exist precisely to be cheap per packet.

Sans-IO: no clock, no randomness of its own.  Key generation takes the injected ``rng``.
Every public-key or signature decoder raises only :class:`~rmsec.errors.MalformedPacket`;
verification returns ``False`` rather than raising, so callers turn every failure into one
opaque :class:`~rmsec.errors.AuthenticationFailed`.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rmsec.errors import ConfigError, MalformedPacket

Rng = Callable[[int], bytes]

# ------------------------------------------------------------------------------- hashing


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


def tagged_hash(tag: bytes, *parts: bytes) -> bytes:
    """SHA-256 of a domain tag and fixed-layout parts (callers fix the layout's lengths)."""
    h = hashlib.sha256(tag)
    for part in parts:
        h.update(part)
    return h.digest()


def prefixed_hash(prefix: bytes, data: bytes, length: int) -> bytes:
    """SHA-256 of ``prefix || data`` truncated to ``length`` (hash-chain links, EMSS)."""
    h = hashlib.sha256(prefix)
    h.update(data)
    return h.digest()[:length]


def u64(value: int) -> bytes:
    """Big-endian 8-byte encoding used inside hashed and signed strings."""
    return value.to_bytes(8, "big")


# ---------------------------------------------------------------------------------- MACs


_hmac_digest = hmac.digest


def packet_mac(key: bytes, data: bytes, length: int) -> bytes:
    """HMAC-SHA256 of ``data`` truncated to ``length`` bytes (RFC 2104 truncation, >= 10)."""
    return _hmac_digest(key, data, "sha256")[:length]


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_compare_digest = hmac.compare_digest


class MacKey:
    """HMAC-SHA256 under one key, with the key schedule done once (RFC 2104 §4).

    ``hmac.digest`` pads and hashes the key on every call (two extra SHA-256 blocks), and on
    OpenSSL 3 also looks the digest up again: ~0.8 µs of a 1.8 µs MAC of a 1 KiB packet
    here.  Keeping the two padded-key states and copying them costs ~0.1 µs.  An optional
    fixed ``prefix`` (a domain tag and sender id) is absorbed into the inner state once too:
    ``tag(data)`` is then ``HMAC(key, prefix || data)``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def tag(self, data: bytes, length: int) -> bytes:
        """``HMAC-SHA256(key, prefix || data)`` truncated to ``length`` bytes."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:length]

    def matches(self, data: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is the MAC of ``data`` truncated to ``len(tag)`` bytes, compared
        in constant time (callers fix ``len(tag)``: the method's MAC length, >= 10)."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return _compare_digest(outer.digest()[: len(tag)], tag)


def mac_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two MACs (no timing oracle on secrets)."""
    return hmac.compare_digest(a, b)


class BitMacBank:
    """Many independent short MACs of one digest: the multiple-MAC construction's core.

    Each key ``K_i`` (16 bytes) is an AES-128 key; the MAC of a 16-byte digest ``d`` under
    ``K_i`` is the top ``bits`` bits of ``AES_{K_i}(d)``, a PRF output.  The digest is the
    first 16 bytes of a domain-separated SHA-256 of the packet (see :func:`multimac_digest`).
    AES with a kept key schedule costs about a tenth of a microsecond per key, several times
    less than any hash-based MAC called from Python, which matters with hundreds of keys.
    """

    KEY_LEN = 16

    def __init__(self, keys: Sequence[bytes], bits: int) -> None:
        if not 1 <= bits <= 8:
            raise ConfigError("mac_bits must be in 1..8")
        self.bits = bits
        self._shift = 8 - bits
        # ECB on exactly one block is the raw block cipher, used here as a PRF.
        self._enc = [
            Cipher(algorithms.AES(k), modes.ECB()).encryptor() for k in keys
        ]

    def __len__(self) -> int:
        return len(self._enc)

    def macs_at(self, digest16: bytes, shifts: Sequence[int]) -> int:
        """Every key's MAC placed at its own bit offset (``shifts[i]`` for key ``i``): a
        receiver compares the result with the trailer under a mask, with no extraction loop."""
        shift = self._shift
        acc = 0
        for enc, at in zip(self._enc, shifts, strict=True):
            acc |= (enc.update(digest16)[0] >> shift) << at
        return acc

    def macs(self, digest16: bytes) -> int:
        """Every key's MAC concatenated, first key in the most significant position."""
        shift, bits = self._shift, self.bits
        acc = 0
        for enc in self._enc:
            acc = (acc << bits) | (enc.update(digest16)[0] >> shift)
        return acc


def multimac_digest(sender_id: bytes, packet: bytes) -> bytes:
    """The 16-byte value every multimac key MACs (sender-bound, domain separated)."""
    h = hashlib.sha256(b"rmsec multimac v1\x00")
    h.update(len(sender_id).to_bytes(1, "big") + sender_id)
    h.update(packet)
    return h.digest()[:16]


def expand(seed: bytes, label: bytes, length: int) -> bytes:
    """Deterministic pseudo-random bytes from a secret seed (keyed BLAKE2b in counter mode).

    Used where the same input must always give the same secret choice (a receiver's key subset
    must not change if it registers twice, or two registrations would pool subsets).
    """
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.blake2b(
            label + counter.to_bytes(4, "big"), key=seed[:64], digest_size=64
        ).digest()
        counter += 1
    return bytes(out[:length])


# ---------------------------------------------------------------------------- signatures


class VerifyingKey(abc.ABC):
    @abc.abstractmethod
    def verify(self, signature: bytes, message: bytes) -> bool:
        """True only for a valid signature; never raises on bad signatures."""

    @abc.abstractmethod
    def public_bytes(self) -> bytes: ...


class SigningKey(abc.ABC):
    @abc.abstractmethod
    def sign(self, message: bytes) -> bytes: ...

    @abc.abstractmethod
    def verifying_key(self) -> VerifyingKey: ...


class SignatureAlgorithm(abc.ABC):
    """A signature algorithm with fixed-size encodings (so trailers have fixed size)."""

    name: ClassVar[str]
    code: ClassVar[int]  # the number used on the wire
    public_len: ClassVar[int]
    signature_len: ClassVar[int]

    @abc.abstractmethod
    def generate(self, rng: Rng) -> SigningKey:
        """A key pair drawn from ``rng`` (deterministic for a seeded ``rng``)."""

    @abc.abstractmethod
    def load_public_untrusted(self, data: bytes) -> VerifyingKey:
        """A public key from untrusted bytes; :class:`MalformedPacket` if invalid."""


class _Ed25519Verifying(VerifyingKey):
    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key

    def verify(self, signature: bytes, message: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def public_bytes(self) -> bytes:
        return self._key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class _Ed25519Signing(SigningKey):
    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifying_key(self) -> VerifyingKey:
        return _Ed25519Verifying(self._key.public_key())


class Ed25519(SignatureAlgorithm):
    name = "ed25519"
    code = 1
    public_len = 32
    signature_len = 64

    def generate(self, rng: Rng) -> SigningKey:
        return _Ed25519Signing(ed25519.Ed25519PrivateKey.from_private_bytes(rng(32)))

    def load_public_untrusted(self, data: bytes) -> VerifyingKey:
        if len(data) != self.public_len:
            raise MalformedPacket("bad Ed25519 public key length")
        try:
            return _Ed25519Verifying(ed25519.Ed25519PublicKey.from_public_bytes(data))
        except ValueError:
            raise MalformedPacket("invalid Ed25519 public key") from None


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA = ec.ECDSA(hashes.SHA256())


class _P256Verifying(VerifyingKey):
    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key

    def verify(self, signature: bytes, message: bytes) -> bool:
        # Raw r || s (fixed 64 bytes on the wire), re-encoded as DER for OpenSSL.
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            return False
        try:
            self._key.verify(encode_dss_signature(r, s), message, _ECDSA)
        except InvalidSignature:
            return False
        return True

    def public_bytes(self) -> bytes:
        return self._key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


class _P256Signing(SigningKey):
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign(self, message: bytes) -> bytes:
        # The per-signature nonce comes from OpenSSL's DRBG: deterministic RFC 6979 signing
        # needs OpenSSL >= 3.2, which this machine lacks.
        r, s = decode_dss_signature(self._key.sign(message, _ECDSA))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verifying_key(self) -> VerifyingKey:
        return _P256Verifying(self._key.public_key())


class EcdsaP256(SignatureAlgorithm):
    name = "ecdsa-p256"
    code = 2
    public_len = 33
    signature_len = 64

    def generate(self, rng: Rng) -> SigningKey:
        # 40 bytes reduced mod (n - 1) then + 1: bias below 2^-64, never zero.
        scalar = int.from_bytes(rng(40), "big") % (_P256_ORDER - 1) + 1
        return _P256Signing(ec.derive_private_key(scalar, ec.SECP256R1()))

    def load_public_untrusted(self, data: bytes) -> VerifyingKey:
        if len(data) != self.public_len:
            raise MalformedPacket("bad P-256 public key length")
        try:
            return _P256Verifying(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data))
        except ValueError:
            raise MalformedPacket("invalid P-256 public key") from None


#: Signature algorithms by name (options) and by wire code (params).
SIGNATURES: dict[str, SignatureAlgorithm] = {"ed25519": Ed25519(), "ecdsa-p256": EcdsaP256()}
SIGNATURES_BY_CODE: dict[int, SignatureAlgorithm] = {a.code: a for a in SIGNATURES.values()}


def signature_algorithm(name: object) -> SignatureAlgorithm:
    """The algorithm an option names; :class:`ConfigError` with the choices otherwise."""
    if not isinstance(name, str) or name not in SIGNATURES:
        raise ConfigError(f"signature must be one of {sorted(SIGNATURES)}, got {name!r}")
    return SIGNATURES[name]


def signed_message(domain: bytes, sender_id: bytes, *parts: bytes) -> bytes:
    """The exact string a method signs: domain tag, length-prefixed sender id, then parts."""
    return b"".join((domain, len(sender_id).to_bytes(1, "big"), sender_id, *parts))


# ----------------------------------------------------------------------- Merkle batches


_LEAF_STATE = hashlib.sha256(b"\x00")


def merkle_leaf(packet: bytes, length: int) -> bytes:
    """Leaf hash (RFC 9162 prefix 0x00), truncated to ``length`` bytes.  From a kept state
    that has absorbed the prefix: no copy of the packet to prepend one byte (0.12 µs)."""
    h = _LEAF_STATE.copy()
    h.update(packet)
    return h.digest()[:length]


def _node(left: bytes, right: bytes, length: int) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()[:length]


class MerkleBatch:
    """The RFC 9162 (Certificate Transparency 2.0) Merkle tree over one batch of packets.

    Any count is allowed (the tree splits at the largest power of two below the count), so a
    batch closed early by its deadline needs no padding.  Hashes are SHA-256 truncated to
    ``length`` bytes: the sender is trusted, so only second preimages matter and 128 bits are
    ample (a malicious sender could exploit collisions, but it can sign anything anyway).
    """

    def __init__(self, leaves: Sequence[bytes], length: int) -> None:
        if not leaves:
            raise ValueError("empty batch")
        self.length = length
        self.leaves = list(leaves)
        #: the inclusion path of every leaf, leaf-side first (RFC 9162 §2.1.3.1)
        self.paths: list[list[bytes]] = [[] for _ in self.leaves]
        self.root = self._build(0, len(self.leaves))

    def _build(self, start: int, end: int) -> bytes:
        if end - start == 1:
            return self.leaves[start]
        k = _split(end - start)
        left = self._build(start, start + k)
        right = self._build(start + k, end)
        for i in range(start, start + k):
            self.paths[i].append(right)
        for i in range(start + k, end):
            self.paths[i].append(left)
        return _node(left, right, self.length)


def _split(n: int) -> int:
    """Largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


@functools.lru_cache(maxsize=4096)
def merkle_path_length(index: int, count: int) -> int:
    """How many hashes the inclusion path of ``index`` in a tree of ``count`` leaves has."""
    length = 0
    while count > 1:
        k = _split(count)
        if index < k:
            count = k
        else:
            index -= k
            count -= k
        length += 1
    return length


def merkle_root_from_path(
    leaf: bytes, index: int, count: int, path: Sequence[bytes], length: int
) -> bytes | None:
    """The root an inclusion path leads to (RFC 9162 §2.1.3.2); ``None`` if it cannot fit."""
    nodes = merkle_climb(leaf, index, count, path, length)
    return nodes[-1] if nodes is not None else None


def merkle_climb(
    leaf: bytes,
    index: int,
    count: int,
    path: Sequence[bytes],
    length: int,
    known: set[bytes] | frozenset[bytes] = frozenset(),
) -> list[bytes] | None:
    """Every node from ``leaf`` up the inclusion path (RFC 9162 §2.1.3.2).

    The climb stops early at the first node in ``known`` (nodes already authenticated in this
    batch): a node that hashes up to an authentic node is authentic, whatever its position,
    because leaves and inner nodes are domain separated.  Returns the nodes computed (the last
    is the root or the known node), or ``None`` when the path does not fit ``index``/``count``.
    """
    if any(len(p) != length for p in path):
        return None  # every node is a hash truncated to ``length``: no path of others fits
    return merkle_climb_packed(leaf, index, count, b"".join(path), length, length, known)


def merkle_climb_packed(
    leaf: bytes,
    index: int,
    count: int,
    packed: bytes,
    step: int,
    length: int,
    known: set[bytes] | frozenset[bytes] = frozenset(),
) -> list[bytes] | None:
    """:func:`merkle_climb` with the path as it lies in a trailer: node ``k`` is the last
    ``length`` bytes of ``packed[k * step : (k + 1) * step]`` (each node after a fixed-size
    CBOR head).  Only the nodes the climb reaches are sliced out: a receiver that knows most
    of a batch's nodes usually needs one.  ``packed`` must hold a whole number of nodes."""
    if not 0 <= index < count or len(packed) % step:
        return None
    fn, sn = index, count - 1
    r = leaf
    nodes = [r]
    if r in known:
        return nodes
    sha = hashlib.sha256
    for at in range(step - length, len(packed), step):
        if sn == 0:
            return None
        p = packed[at : at + length]
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()[:length]
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()[:length]
        fn >>= 1
        sn >>= 1
        nodes.append(r)
        if r in known:
            return nodes
    return nodes if sn == 0 else None


# -------------------------------------------------------------------- one-way key chains


class OneWayChain:
    """A one-way chain ``K_{j-1} = step(K_j, j)`` for ``j = n .. 1``, kept as checkpoints.

    The sender uses keys in increasing order ``K_1, K_2, ...`` but can only compute them
    downwards from the secret tip ``K_n``.  Storing all ``n`` keys costs ``n`` entries; here
    every ``s``-th key is a checkpoint (``s ~ sqrt(n)``) and one segment of ``s`` keys is
    recomputed from the checkpoint above it when first needed, so memory is ``O(sqrt n)`` and
    each key costs one hash amortised.  ``K_0`` is the public commitment.
    """

    def __init__(self, tip: bytes, length: int, step: Callable[[bytes, int], bytes]) -> None:
        if length < 1:
            raise ValueError("chain length must be positive")
        self.length = length
        self._step = step
        s = 1
        while s * s < length:
            s += 1
        self._every = s
        self._checkpoints: dict[int, bytes] = {length: tip}
        key = tip
        for j in range(length, 0, -1):
            key = step(key, j)
            if (j - 1) % s == 0:
                self._checkpoints[j - 1] = key
        self.commitment = key
        self._segment_start = -1
        self._segment: list[bytes] = []

    @property
    def stored_keys(self) -> int:
        """Keys held in memory (checkpoints plus one segment): the O(sqrt n) claim, testable."""
        return len(self._checkpoints) + len(self._segment)

    def key(self, j: int) -> bytes:
        """``K_j`` for ``0 <= j <= n``."""
        if not 0 <= j <= self.length:
            raise IndexError(j)
        start = j - j % self._every
        if start != self._segment_start:
            top = min(start + self._every, self.length)
            key = self._checkpoints[top]
            segment = [b""] * (top - start + 1)
            segment[top - start] = key
            for t in range(top, start, -1):
                key = self._step(key, t)
                segment[t - 1 - start] = key
            self._segment_start, self._segment = start, segment
        return self._segment[j - start]


def chain_step(prefix: bytes, chain: int, index: int, key: bytes, length: int) -> bytes:
    """One link of a salted one-way key chain: ``K_{index-1}`` from ``K_index``.

    ``prefix`` names the method and the sender, ``chain`` and ``index`` salt every link, so a
    precomputed table cannot attack many links, chains or senders at once (Hu, Jakobsson and
    Perrig's fractal hash chains discussion).
    """
    return hashlib.sha256(
        prefix + chain.to_bytes(8, "big") + index.to_bytes(4, "big") + key
    ).digest()[:length]


def derive_key(label: bytes, key: bytes) -> bytes:
    """A 32-byte key for another purpose from ``key`` (TESLA's ``F'``: MAC key from chain key)."""
    return hashlib.sha256(label + key).digest()
