"""Source authentication ``multimac``: Canetti et al.'s multiple-MAC construction.

The sender holds ``l`` keys; each receiver holds a random subset, each key independently with
probability ``1 / (w + 1)``, assigned at registration and delivered in its welcome
(:meth:`Signer.material_for`).  Every packet carries one ``mac_bits``-bit MAC per key; a
receiver checks the MACs of the keys it holds.  A coalition ``C`` of receivers forging towards
receiver ``u`` must produce the MACs of the keys ``u`` holds and nobody in ``C`` holds; each
key is such a key with probability ``p' = p (1 - p)^|C|`` (``p = 1/(w+1)``), and each such MAC
is guessed with probability ``2^-mac_bits``, so a forgery attempt succeeds with probability::

    P(|C|) = (1 - p (1 - p)^|C| (1 - 2^-mac_bits)) ** l

``l`` is the smallest value making ``P(w) <= q`` (Canetti, Garay, Itkis, Micciancio, Naor and
Pinkas, "Multicast security: a taxonomy and some efficient constructions", INFOCOM 1999; with
1-bit MACs, as they suggest, ``l ~ 2 e (w + 1) ln(1/q)``).  Coalitions larger than ``w`` win
with the same formula's (growing) probability: the bound is real and tested.
:func:`cost` shows the price: ``l`` MACs per packet for the sender, about ``l / (w + 1)`` for
each receiver, ``l * mac_bits / 8`` bytes per packet.

A receiver's subset is a deterministic function of a secret seed and its member id, so
registering twice does not give a member two subsets to pool.

Encodings (CBOR, strict):

- params:   ``[1, sender_id, l, mac_bits]``;
- material: ``[1, bitmap, keys]``: ``bitmap`` has ``ceil(l / 8)`` bytes, bit ``i`` (most
  significant bit of byte ``i // 8`` first) set when key ``i`` is held; ``keys`` is the held
  16-byte keys in index order; padding bits are zero;
- trailer:  ``[macs]``: the ``l * mac_bits``-bit big-endian number whose most significant
  ``mac_bits`` bits are key 0's MAC, in ``ceil(l * mac_bits / 8)`` bytes (leading padding bits
  zero).  Key ``i``'s MAC of a packet is the top ``mac_bits`` bits of
  ``AES-128_{K_i}(SHA-256("rmsec multimac v1\\0" || len(sender_id) || sender_id ||
  packet)[:16])``.
"""

from __future__ import annotations

import dataclasses
import math
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
    float_option,
    int_option,
)

VERSION = 1
KEY_LEN = authcrypto.BitMacBank.KEY_LEN
MAX_KEYS = 1 << 16


def forgery_probability(keys: int, coalition: int, w: int, mac_bits: int) -> float:
    """Chance that ``coalition`` receivers pooling everything forge one packet for another."""
    p = 1 / (w + 1)
    escape = p * (1 - p) ** coalition * (1 - 2.0**-mac_bits)
    return (1 - escape) ** keys


def keys_needed(w: int, q: float, mac_bits: int) -> int:
    """Smallest ``l`` with ``forgery_probability(l, w, w, mac_bits) <= q``."""
    p = 1 / (w + 1)
    escape = p * (1 - p) ** w * (1 - 2.0**-mac_bits)
    return math.ceil(math.log(q) / math.log1p(-escape))


@dataclasses.dataclass(frozen=True, slots=True)
class MultiMacCost:
    """What the chosen ``w`` and ``q`` cost (shown by ``rmsec bench auth`` and the docs)."""

    w: int
    q: float
    mac_bits: int
    keys: int
    trailer_bytes: int
    sender_macs: int
    receiver_macs: float
    receiver_key_bytes: float


def cost(w: int, q: float, mac_bits: int) -> MultiMacCost:
    keys = keys_needed(w, q, mac_bits)
    macs_bytes = (keys * mac_bits + 7) // 8
    return MultiMacCost(
        w, q, mac_bits, keys, len(dumps([bytes(macs_bytes)])), keys, keys / (w + 1),
        KEY_LEN * keys / (w + 1),
    )


def decode_material_untrusted(material: bytes, keys: int) -> dict[int, bytes]:
    """Key index -> key held, from a welcome's material (a coalition pools these)."""
    version, bitmap, blob = check_fields(
        loads_untrusted(material),
        (uint(8), byte_string(max_len=MAX_KEYS // 8), byte_string(max_len=KEY_LEN * MAX_KEYS)),
    )
    if version != VERSION or len(bitmap) != (keys + 7) // 8:
        raise MalformedPacket("material does not fit these params")
    value = int.from_bytes(bitmap, "big")
    pad = len(bitmap) * 8 - keys
    if value & ((1 << pad) - 1):
        raise MalformedPacket("material padding bits set")
    held = [i for i in range(keys) if value >> (len(bitmap) * 8 - 1 - i) & 1]
    if not held or len(blob) != KEY_LEN * len(held):
        raise MalformedPacket("material key count does not match its bitmap")
    return {i: blob[n * KEY_LEN : (n + 1) * KEY_LEN] for n, i in enumerate(held)}


def encode_macs(value: int, keys: int, mac_bits: int) -> bytes:
    return dumps([value.to_bytes((keys * mac_bits + 7) // 8, "big")])


class MultiMacSigner(Signer):
    def __init__(
        self, sender_id: bytes, keys: list[bytes], seed: bytes, w: int, mac_bits: int
    ) -> None:
        self._sender_id = sender_id
        self._keys = keys
        self._seed = seed
        self._w = w
        self._bits = mac_bits
        self._bank = authcrypto.BitMacBank(keys, mac_bits)
        self._nbytes = (len(keys) * mac_bits + 7) // 8
        self._params = dumps([VERSION, sender_id, len(keys), mac_bits])
        self._head = cbor_array_head(1) + cbor_bytes_head(self._nbytes)

    @property
    def params(self) -> bytes:
        return self._params

    def subset(self, member_id: bytes) -> list[int]:
        """The key indices ``member_id`` holds: each with probability 1/(w+1), fixed per id."""
        n = len(self._keys)
        draws = authcrypto.expand(
            self._seed, b"subset" + len(member_id).to_bytes(2, "big") + member_id, 4 * n + 4
        )
        limit = (1 << 32) // (self._w + 1)
        held = [i for i in range(n) if int.from_bytes(draws[4 * i : 4 * i + 4], "big") < limit]
        # An empty subset would accept anything: give such a receiver one key.
        return held or [int.from_bytes(draws[4 * n :], "big") % n]

    def material_for(self, member_id: bytes) -> bytes:
        held = self.subset(member_id)
        n = len(self._keys)
        nbytes = (n + 7) // 8
        bitmap = 0
        for i in held:
            bitmap |= 1 << (nbytes * 8 - 1 - i)
        return dumps(
            [VERSION, bitmap.to_bytes(nbytes, "big"), b"".join(self._keys[i] for i in held)]
        )

    def protect(self, packet: bytes, now: float) -> bytes:
        digest = authcrypto.multimac_digest(self._sender_id, packet)
        return self._head + self._bank.macs(digest).to_bytes(self._nbytes, "big")


class MultiMacVerifier(Verifier):
    def __init__(self, params: bytes, material: bytes) -> None:
        version, sender_id, keys, mac_bits = check_fields(
            loads_untrusted(params),
            (uint(8), byte_string(max_len=64), int_range(1, MAX_KEYS), int_range(1, 8)),
        )
        if version != VERSION or not sender_id:
            raise MalformedPacket("params are not for multimac v1")
        held = decode_material_untrusted(material, keys)
        self._sender_id = sender_id
        self._bits = mac_bits
        self._nbytes = (keys * mac_bits + 7) // 8
        self._limit = 1 << (keys * mac_bits)
        self._bank = authcrypto.BitMacBank(list(held.values()), mac_bits)
        self._shifts = [mac_bits * (keys - 1 - i) for i in held]
        self._mask = sum(((1 << mac_bits) - 1) << shift for shift in self._shifts)
        self._trailer = byte_string(max_len=self._nbytes, exact=self._nbytes)
        self._head = cbor_array_head(1) + cbor_bytes_head(self._nbytes)
        self._trailer_len = len(self._head) + self._nbytes
        self.keys_held = len(held)

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        if len(trailer) == self._trailer_len and trailer.startswith(self._head):
            macs = trailer[len(self._head) :]  # the canonical encoding: skip the parser
        else:
            (macs,) = check_fields(loads_untrusted(trailer), (self._trailer,))
        value = int.from_bytes(macs, "big")
        if value >= self._limit:
            raise MalformedPacket("multimac padding bits set")
        expected = self._bank.macs_at(
            authcrypto.multimac_digest(self._sender_id, packet), self._shifts
        )
        # Compare every MAC this receiver can check at once, in constant time: which one
        # failed must not leak.
        if not authcrypto.mac_equal(
            (value & self._mask).to_bytes(self._nbytes, "big"), expected.to_bytes(self._nbytes, "big")
        ):
            raise AuthenticationFailed("bad multimac")
        return [Verified(packet, trailer)]


class MultiMacAuth(SourceAuth):
    """Multiple short MACs, secure against coalitions of up to ``w`` receivers except with
    probability ``q`` (options: w = 8, q = 1e-6, mac_bits = 1)."""

    name = "multimac"
    non_repudiable = True  # against coalitions of at most w receivers, except with prob. q

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        check_options(self.options, {"w", "q", "mac_bits"})
        o = self.options
        self.w = int_option(o, "w", 8, 1, 1 << 12)
        self.q = float_option(o, "q", 1e-6, 1e-30, 0.5)
        self.mac_bits = int_option(o, "mac_bits", 1, 1, 8)
        self.cost = cost(self.w, self.q, self.mac_bits)
        if self.cost.keys > MAX_KEYS:
            raise ConfigError(
                f"multimac with w={self.w}, q={self.q} needs {self.cost.keys} keys "
                f"(more than {MAX_KEYS}); lower w or raise q"
            )

    def signer(self, *, sender_id: bytes, now: float) -> MultiMacSigner:
        n = self.cost.keys
        blob = self.rng(KEY_LEN * n)
        keys = [blob[i * KEY_LEN : (i + 1) * KEY_LEN] for i in range(n)]
        return MultiMacSigner(check_sender_id(sender_id), keys, self.rng(32), self.w, self.mac_bits)

    def verifier(self, params: bytes, material: bytes, *, now: float) -> MultiMacVerifier:
        return MultiMacVerifier(params, material)


@hookimpl
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    registry.add(MultiMacAuth)
