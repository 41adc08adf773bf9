"""Source authentication ``emss``: hash chaining with periodic signature packets.

Perrig, Canetti, Tygar and Song's efficient multi-chained stream signature (EMSS, IEEE S&P
2000): packet ``P_n`` carries the hashes of the ``m`` packets before it (offsets ``1..m``), and
every ``every`` packets (or ``deadline`` seconds after the first unsigned packet) the sender
emits a signature packet carrying, signed, the hashes of the last ``m`` packets.  A receiver
releases a packet once a chain of received packets links it to a verified signature packet:
one signature verification per ``every`` packets, one short hash per packet.

Redundancy.  With contiguous offsets ``1..m`` a received packet is cut off from every later
signature only if ``m`` consecutive packets after it are lost before a received signature.
Under independent loss ``p`` a union bound gives::

    P(received packet never verifiable) <= every * p**m / (1 - p)      (+ p**copies at the end)

so ``m`` is the smallest value making that at most ``1 - fraction`` at the design ``loss``
(options ``loss`` = 0.2, ``fraction`` = 0.99: ``m`` = 6 with ``every`` = 64; at 5 % loss the
same ``m`` leaves below 1e-6).  The last signature of a burst (closed by the deadline) is sent
``copies`` times so the tail is covered too.  Explicit ``offsets`` override the choice (then
the bound above does not apply).

Encodings (CBOR, strict; ``H_n`` below is ``hash_len`` bytes):

- params:   ``[1, alg, sender_id, public_key, hash_len, every, [offset, ...]]``;
- material: empty;
- trailer:  ``[n u64, [H_{n-o} for o in offsets if n - o >= 0]]``;
- auth packet (signature): ``[1, t u64, [H_{t+1-o} for o in offsets if t + 1 - o >= 0],
  signature]``, signed string ``"rmsec emss sig v1\\0" || len(sender_id) || sender_id ||
  t (8 B) || hashes concatenated``;
- ``H_n = SHA-256("rmsec emss v1\\0" || n (8 B) || hashes in P_n's trailer || P_n)[:hash_len]``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

from rmsec.errors import AuthenticationFailed, ConfigError, MalformedPacket
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import Rng, Signer, SourceAuth, Verified, Verifier
from rmsec.registry import SourceAuthRegistry
from rmsec.security import authcrypto
from rmsec.wire.codec import (
    array,
    byte_string,
    check_fields,
    dumps,
    int_range,
    loads_untrusted,
    uint,
)

from ..auth_ed25519.persig import (
    bad_algorithm,
    cbor_array_head,
    cbor_bytes_head,
    cbor_uint,
    check_options,
    check_sender_id,
    float_option,
    int_option,
    read_uint,
)

VERSION = 1
#: Receivers verify one signature per batch / per ``every`` packets: the algorithm that
#: verifies fastest on this OpenSSL (P-256 ~43 µs, Ed25519 ~60 µs; docs/bench-auth.md).
DEFAULT_SIGNATURE = "ecdsa-p256"
SIG_PACKET = 1
DOMAIN = b"rmsec emss v1\x00"
SIG_DOMAIN = b"rmsec emss sig v1\x00"
MAX_OFFSET = 256
MAX_OFFSETS = 16
_U64 = (1 << 64) - 1


def redundancy_for(every: int, loss: float, fraction: float) -> int:
    """Smallest ``m`` with ``every * loss**m / (1 - loss) <= 1 - fraction`` (see module doc)."""
    if loss <= 0:
        return 1
    for m in range(1, MAX_OFFSETS + 1):
        if every * loss**m / (1 - loss) <= 1 - fraction:
            return m
    raise ConfigError(
        f"emss cannot promise {fraction} at {loss} loss with at most {MAX_OFFSETS} hashes per "
        "packet; sign more often (smaller 'every') or lower the target"
    )


def unverifiable_bound(every: int, offsets: Sequence[int], loss: float) -> float:
    """The union bound on P(received packet never verifiable) for contiguous offsets."""
    m = len(offsets)
    if tuple(offsets) != tuple(range(1, m + 1)) or loss >= 1:
        return 1.0
    return min(1.0, every * loss**m / (1 - loss))


def packet_hash(n: int, vouch: Sequence[bytes], packet: bytes, hash_len: int) -> bytes:
    """``H_n`` (see the module doc): what later packets and signature packets vouch for."""
    return authcrypto.prefixed_hash(DOMAIN + authcrypto.u64(n) + b"".join(vouch), packet, hash_len)


class EmssSigner(Signer):
    """Sender side.  Call :meth:`pending` after each :meth:`protect` and at :meth:`get_timer`."""

    def __init__(
        self,
        alg: authcrypto.SignatureAlgorithm,
        key: authcrypto.SigningKey,
        sender_id: bytes,
        *,
        offsets: tuple[int, ...],
        every: int,
        deadline: float,
        copies: int,
        hash_len: int,
    ) -> None:
        self._key = key
        self._prefix = authcrypto.signed_message(SIG_DOMAIN, sender_id)
        self._params = dumps(
            [
                VERSION,
                alg.code,
                sender_id,
                key.verifying_key().public_bytes(),
                hash_len,
                every,
                list(offsets),
            ]
        )
        self.offsets = offsets
        self.every = every
        self.deadline = deadline
        self.copies = copies
        self.hash_len = hash_len
        self._next = 0
        self._recent: dict[int, bytes] = {}
        self._keep = max(offsets)
        self._contiguous = offsets == tuple(range(1, len(offsets) + 1))
        self._last: list[bytes] = []
        self._unsigned_since: float | None = None
        self._queue: list[bytes] = []
        self._hash_head = cbor_bytes_head(hash_len)
        self.signatures = 0

    @property
    def params(self) -> bytes:
        return self._params

    def protect(self, packet: bytes, now: float) -> bytes:
        n = self._next
        self._next = n + 1
        vouch = self._vouch(n)
        h = authcrypto.prefixed_hash(DOMAIN + authcrypto.u64(n) + b"".join(vouch), packet, self.hash_len)
        if self._contiguous:
            # Offsets 1..m: the hashes the next packet carries are this one and the newest
            # m - 1 of those this one carries.
            self._last = [h, *vouch[: self._keep - 1]]
        else:
            self._recent[n] = h
            self._recent.pop(n - self._keep, None)
        if self._unsigned_since is None:
            self._unsigned_since = now
        if (n + 1) % self.every == 0:
            self._queue_signature(1)
        # Canonical CBOR [n, [hash, ...]] without the general encoder (see persig).
        hh = self._hash_head
        return (
            b"\x82" + cbor_uint(n) + cbor_array_head(len(vouch)) + (hh + hh.join(vouch) if vouch else b"")
        )

    def pending(self, now: float) -> list[bytes]:
        if self._unsigned_since is not None and now >= self._unsigned_since + self.deadline:
            # A pause (or the end of the stream): sign the tail, with copies against loss.
            self._queue_signature(self.copies)
        out, self._queue = self._queue, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`pending` next has something to send (``-inf``: right now)."""
        if self._queue:
            return float("-inf")
        if self._unsigned_since is None:
            return None
        return self._unsigned_since + self.deadline

    def _vouch(self, n: int) -> list[bytes]:
        """The hashes packet ``n`` carries (``n`` is the next index, or the virtual one a
        signature packet stands for)."""
        if self._contiguous:
            return self._last
        recent = self._recent
        if n >= self._keep:
            return [recent[n - o] for o in self.offsets]
        return [recent[n - o] for o in self.offsets if n - o >= 0]

    def _queue_signature(self, copies: int) -> None:
        t = self._next - 1
        hashes = self._vouch(t + 1)
        signature = self._key.sign(self._prefix + authcrypto.u64(t) + b"".join(hashes))
        self.signatures += 1
        packet = dumps([SIG_PACKET, t, hashes, signature])
        self._queue.extend([packet] * copies)
        self._unsigned_since = None


class EmssVerifier(Verifier):
    """Receiver side: buffers packets until a chain links them to a verified signature."""

    def __init__(self, params: bytes, material: bytes, *, window: int, max_pending: int) -> None:
        version, code, sender_id, public, hash_len, _every, offsets = check_fields(
            loads_untrusted(params),
            (
                uint(8),
                uint(8),
                byte_string(max_len=64),
                byte_string(max_len=64),
                int_range(8, 32),
                int_range(1, 1 << 16),
                array(int_range(1, MAX_OFFSET), max_len=MAX_OFFSETS),
            ),
        )
        if version != VERSION or not sender_id or not offsets or material:
            raise MalformedPacket("params are not for emss v1")
        if list(offsets) != sorted(set(offsets)):
            raise MalformedPacket("emss offsets must be strictly increasing")
        alg = authcrypto.SIGNATURES_BY_CODE.get(code) or bad_algorithm()
        self._key = alg.load_public_untrusted(public)
        self._sig_len = alg.signature_len
        self._prefix = authcrypto.signed_message(SIG_DOMAIN, sender_id)
        self._hash_len = hash_len
        self._offsets: tuple[int, ...] = offsets
        self._max_offset = max(offsets)
        self._window = window
        self._max_pending = max_pending
        #: hashes known authentic (from a signature or a verified packet), oldest first.
        #: Keyed by hash alone: H_n covers n, so a hash names one packet at one position.
        self._authentic: dict[bytes, None] = {}
        self._high = -1
        #: hash -> (index, packet, trailer, vouched hashes) of buffered packets, oldest first
        self._pending: dict[bytes, tuple[int, bytes, bytes, list[bytes]]] = {}
        self._hash_head = cbor_bytes_head(hash_len)
        self._step = len(self._hash_head) + hash_len
        self._full = len(offsets)
        #: where each hash starts after the array head, for one-byte hash heads (< 24 bytes)
        self._starts: list[int] | None = (
            [k * self._step + 1 for k in range(len(offsets))] if len(self._hash_head) == 1 else None
        )
        self._seen_signatures: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.stats = {"signatures_verified": 0, "evicted": 0, "too_old": 0}

    # -- data packets ----------------------------------------------------------------

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        parsed = self._parse_canonical(trailer)
        n, vouch = parsed if parsed is not None else self._decode_trailer_untrusted(trailer)
        h = packet_hash(n, vouch, packet, self._hash_len)
        if h in self._authentic:
            released = [Verified(packet, trailer)]
            self._release(list(vouch), released)
            return released
        if n < self._high - self._window:
            self.stats["too_old"] += 1
            raise AuthenticationFailed("packet too old to verify")
        # Not (yet) linked to a signature: buffer it.  A forgery stays here until evicted,
        # since no authentic hash can ever name it.
        pending = self._pending
        pending[h] = (n, packet, trailer, vouch)
        if len(pending) > self._max_pending:
            del pending[next(iter(pending))]
            self.stats["evicted"] += 1
        return []

    def _expected_count(self, n: int) -> int:
        if n >= self._max_offset:
            return len(self._offsets)
        return sum(1 for o in self._offsets if n - o >= 0)

    def _parse_canonical(self, trailer: bytes) -> tuple[int, list[bytes]] | None:
        """Fast path for the signer's own encoding; ``None`` defers to the general decoder
        (which accepts the same values in any CBOR encoding, only slower)."""
        try:
            if trailer[0] != 0x82 or self._starts is None:
                return None
            b = trailer[1]
            if b < 24:
                n, pos = b, 2
            elif b == 25:
                n, pos = (trailer[2] << 8) | trailer[3], 4
            else:
                n, pos = read_uint(trailer, 1)
                if n < 0:
                    return None
            count = trailer[pos] - 0x80
            if count != (self._full if n >= self._max_offset else self._expected_count(n)):
                return None
            rest = trailer[pos + 1 :]
            size, step = self._hash_len, self._step
            # Byte 0 of every chunk is the (one-byte) hash head; the rest is the hash.
            if len(rest) != count * step or rest[::step] != self._hash_head * count:
                return None
            return n, [rest[k : k + size] for k in self._starts[:count]]
        except IndexError:
            return None

    def _decode_trailer_untrusted(self, trailer: bytes) -> tuple[int, list[bytes]]:
        fields = loads_untrusted(trailer)
        if len(fields) != 2:
            raise MalformedPacket("emss trailer has 2 fields")
        n, vouch = fields
        if type(n) is not int or type(vouch) is not list or not 0 <= n <= _U64:
            raise MalformedPacket("bad emss trailer")
        self._check_hashes(vouch, n)
        return n, vouch

    def _check_hashes(self, hashes: list[Any], n: int) -> None:
        if len(hashes) != self._expected_count(n):
            raise MalformedPacket("wrong number of emss hashes")
        for h in hashes:
            if type(h) is not bytes or len(h) != self._hash_len:
                raise MalformedPacket("bad emss hash")

    # -- signature packets -------------------------------------------------------------

    def receive_auth_packet(self, data: bytes, now: float) -> list[Verified]:
        fields = loads_untrusted(data)
        if len(fields) != 4:
            raise MalformedPacket("emss signature packet has 4 fields")
        kind, t, hashes, signature = fields
        if (
            kind != SIG_PACKET
            or type(kind) is not int
            or type(t) is not int
            or type(hashes) is not list
            or type(signature) is not bytes
            or not 0 <= t < _U64
            or len(signature) != self._sig_len
        ):
            raise MalformedPacket("bad emss signature packet")
        self._check_hashes(hashes, t + 1)
        if data in self._seen_signatures:
            return []  # a copy of a signature already verified
        if not self._key.verify(signature, self._prefix + authcrypto.u64(t) + b"".join(hashes)):
            raise AuthenticationFailed("bad emss signature")
        self.stats["signatures_verified"] += 1
        self._seen_signatures[data] = None
        if len(self._seen_signatures) > 64:
            self._seen_signatures.popitem(last=False)
        if t > self._high:
            self._high = t
        released: list[Verified] = []
        self._release(list(hashes), released)
        return released

    # -- propagation -------------------------------------------------------------------

    def _release(self, work: list[bytes], released: list[Verified]) -> None:
        """Mark hashes authentic and release every buffered packet they reach, transitively."""
        authentic, pending = self._authentic, self._pending
        append, push = released.append, work.append
        while work:
            h = work.pop()
            if h in authentic:
                continue
            authentic[h] = None
            entry = pending.pop(h, None)
            if entry is None:
                continue
            _, packet, trailer, vouch = entry
            append(Verified(packet, trailer))
            for v in vouch:
                if v not in authentic:
                    push(v)
        if len(authentic) > 2 * self._window:
            # Forget the oldest half: packets that old are refused as too old anyway.
            self._authentic = dict.fromkeys(list(authentic)[-self._window :])


class EmssAuth(SourceAuth):
    """Hash-chained stream signatures (options: every, loss, fraction, offsets, hash_len,
    deadline, copies, signature, window, max_pending)."""

    name = "emss"
    non_repudiable = True

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        check_options(
            self.options,
            {"every", "loss", "fraction", "offsets", "hash_len", "deadline", "copies",
             "signature", "window", "max_pending"},
        )
        o = self.options
        self.every = int_option(o, "every", 64, 1, 1 << 16)
        self.loss = float_option(o, "loss", 0.2, 0.0, 0.9)
        self.fraction = float_option(o, "fraction", 0.99, 0.0, 0.999999)
        self.hash_len = int_option(o, "hash_len", 16, 8, 32)
        self.deadline = float_option(o, "deadline", 0.05, 0.0, 60.0)
        self.copies = int_option(o, "copies", 3, 1, 16)
        self.window = int_option(o, "window", 4096, 16, 1 << 20)
        self.max_pending = int_option(o, "max_pending", 4096, 1, 1 << 20)
        self.alg = authcrypto.signature_algorithm(o.get("signature", DEFAULT_SIGNATURE))
        offsets = o.get("offsets")
        if offsets is None:
            offsets = tuple(range(1, redundancy_for(self.every, self.loss, self.fraction) + 1))
        if (
            not isinstance(offsets, (list, tuple))
            or not 1 <= len(offsets) <= MAX_OFFSETS
            or any(type(x) is not int or not 1 <= x <= MAX_OFFSET for x in offsets)
            or len(set(offsets)) != len(offsets)
        ):
            raise ConfigError(f"emss offsets must be 1..{MAX_OFFSETS} distinct ints in 1..256")
        self.offsets: tuple[int, ...] = tuple(sorted(offsets))

    @property
    def guaranteed_fraction(self) -> float:
        """Lower bound on the verifiable fraction of received packets at the design loss."""
        return 1.0 - unverifiable_bound(self.every, self.offsets, self.loss)

    def signer(self, *, sender_id: bytes, now: float) -> EmssSigner:
        return EmssSigner(
            self.alg,
            self.alg.generate(self.rng),
            check_sender_id(sender_id),
            offsets=self.offsets,
            every=self.every,
            deadline=self.deadline,
            copies=self.copies,
            hash_len=self.hash_len,
        )

    def verifier(self, params: bytes, material: bytes, *, now: float) -> EmssVerifier:
        return EmssVerifier(params, material, window=self.window, max_pending=self.max_pending)


@hookimpl
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    registry.add(EmssAuth)
