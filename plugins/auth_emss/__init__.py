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

Encodings (CBOR, strict; ``H_n`` below is ``hash_len`` bytes; docs/protocol.md has the full
byte layout):

- params:   ``[2, alg, sender_id, public_key, hash_len, every, [offset, ...]]``;
- material: empty;
- trailer:  ``[n u64, [H_{n-o} for o in offsets if n - o >= 0]]`` in canonical CBOR (shortest
  heads), the only encoding that can verify because ``H_n`` covers the trailer's bytes;
- auth packet (signature): ``[1, t u64, [H_{t+1-o} for o in offsets if t + 1 - o >= 0],
  signature]``, signed string ``"rmsec emss sig v2\\0" || len(sender_id) || sender_id ||
  t (8 B) || hashes concatenated``;
- ``H_n = SHA-256("rmsec emss v2\\0" || trailer of P_n || P_n)[:hash_len]``.

Why ``H_n`` covers the trailer bytes (version 2; version 1 hashed ``n`` and the concatenated
hashes): the trailer already holds exactly that information, so both sides hash the bytes
they have instead of re-serialising, and a receiver can authenticate a trailer before it
parses it.  A hash still names one packet at one position.

Receiver bookkeeping.  Authentic hashes are kept by position (``index -> H``) and the
reverse: a source that is itself authentic (a verified signature packet, or a released
packet, which only the sender can have made) vouches for them.  An arriving packet is hashed
and looked up; found, it is released at once, otherwise it waits in a buffer keyed by its
hash.  Newly known positions are resolved by one downward sweep (hashes only ever vouch for
earlier packets), and with contiguous offsets a packet released right after its successor
adds a single new position, so releasing a chain costs a few dictionary operations per
packet.  A signature packet follows every ``every`` packets after the previous one.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

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
)

VERSION = 2
#: Receivers verify one signature per batch / per ``every`` packets: the algorithm that
#: verifies fastest on this OpenSSL (P-256 ~43 µs, Ed25519 ~60 µs; docs/bench-auth.md).
DEFAULT_SIGNATURE = "ecdsa-p256"
SIG_PACKET = 1
DOMAIN = b"rmsec emss v2\x00"
SIG_DOMAIN = b"rmsec emss sig v2\x00"
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


def packet_hash(trailer: bytes, packet: bytes, hash_len: int) -> bytes:
    """``H_n`` (see the module doc): what later packets and signature packets vouch for."""
    return authcrypto.prefixed_hash(DOMAIN + trailer, packet, hash_len)


def vouched_count(n: int, offsets: Sequence[int]) -> int:
    """How many hashes the trailer of packet ``n`` (or a signature for ``n - 1``) carries."""
    return sum(1 for o in offsets if n - o >= 0)


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
        self._contiguous = offsets == tuple(range(1, len(offsets) + 1))
        self._hash_head = cbor_bytes_head(hash_len)
        self._step = len(self._hash_head) + hash_len
        self._array_heads = [cbor_array_head(c) for c in range(len(offsets) + 1)]
        # What the next trailer carries after [n, ...: the array of `_count` hashes, newest
        # first, each with its CBOR head, encoded (contiguous offsets: this packet's hash,
        # then all but the oldest of those this packet carried).
        self._tail = self._array_heads[0]
        self._count = 0
        self._full = len(offsets)
        self._lead = self._array_heads[-1] + self._hash_head
        self._keep = (len(offsets) - 1) * self._step
        #: recent hashes by index (only for non-contiguous offsets)
        self._recent: dict[int, bytes] = {}
        self._oldest = max(offsets)
        #: packet index after which a signature packet is due
        self._sign_at = every - 1
        #: stream time when the unsigned tail must be signed (deadline), None if all signed
        self._due: float | None = None
        self._queue: list[bytes] = []
        self.signatures = 0

    @property
    def params(self) -> bytes:
        return self._params

    def protect(self, packet: bytes, now: float) -> bytes:
        n = self._next
        self._next = n + 1
        if not self._contiguous:
            self._tail = self._sparse_tail(n)
        # Canonical CBOR [n, [hash, ...]]: the array is kept encoded between packets.
        trailer = b"\x82" + cbor_uint(n) + self._tail
        h = authcrypto.prefixed_hash(DOMAIN + trailer, packet, self.hash_len)
        if self._count == self._full:
            self._tail = self._lead + h + self._tail[1 : 1 + self._keep]
        elif self._contiguous:
            self._count += 1
            self._tail = self._array_heads[self._count] + self._hash_head + h + self._tail[1:]
        else:
            self._recent[n] = h
            self._recent.pop(n - self._oldest, None)
        if self._due is None:
            self._due = now + self.deadline
        if n == self._sign_at:
            self._queue_signature(1)
        return trailer

    def pending(self, now: float) -> list[bytes]:
        if self._due is not None and now >= self._due:
            # A pause (or the end of the stream): sign the tail, with copies against loss.
            self._queue_signature(self.copies)
        if not self._queue:
            return []
        out, self._queue = self._queue, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`pending` next has something to send (``-inf``: right now)."""
        if self._queue:
            return float("-inf")
        return self._due

    def outstanding_until(self) -> float | None:
        """When the tail's signature packet goes out (``pending`` signs it at the deadline)."""
        return self.get_timer()

    def _sparse_tail(self, n: int) -> bytes:
        """The encoded hash array packet ``n`` (or a signature standing for ``n``) carries,
        for offsets other than ``1..m``."""
        vouch = [self._recent[n - o] for o in self.offsets if n - o >= 0]
        hh = self._hash_head
        return self._array_heads[len(vouch)] + (hh + hh.join(vouch) if vouch else b"")

    def _queue_signature(self, copies: int) -> None:
        t = self._next - 1
        tail = self._tail if self._contiguous else self._sparse_tail(t + 1)
        skip, size, step = 1 + len(self._hash_head), self.hash_len, self._step
        hashes = [tail[k : k + size] for k in range(skip, len(tail), step)]
        signature = self._key.sign(self._prefix + authcrypto.u64(t) + b"".join(hashes))
        self.signatures += 1
        packet = dumps([SIG_PACKET, t, hashes, signature])
        self._queue.extend([packet] * copies)
        self._due = None
        self._sign_at = t + self.every


class EmssVerifier(Verifier):
    """Receiver side: buffers packets until a chain links them to a verified signature.

    Authenticate, then parse: ``H_n`` covers the trailer's bytes, so on arrival a packet is
    only hashed and looked up among the hashes authentic sources vouched for; its trailer
    is decoded once it is known to be the sender's (and so in canonical form).  Trailers
    that cannot be one the sender made (not a two-element array starting with an unsigned
    integer, or a length no canonical trailer has) are decoded at once, to report
    MalformedPacket (or AuthenticationFailed for a valid but re-encoded one, which can never
    match).  Anything else waits, bounded, and is only ever released if it is the sender's.
    """

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
            raise MalformedPacket(f"params are not for emss v{VERSION}")
        if list(offsets) != sorted(set(offsets)):
            raise MalformedPacket("emss offsets must be strictly increasing")
        alg = authcrypto.SIGNATURES_BY_CODE.get(code) or bad_algorithm()
        self._key = alg.load_public_untrusted(public)
        self._sig_len = alg.signature_len
        self._prefix = authcrypto.signed_message(SIG_DOMAIN, sender_id)
        self._hash_len = hash_len
        self._offsets: tuple[int, ...] = tuple(offsets)
        self._m = len(offsets)
        self._max_offset = max(offsets)
        self._contiguous = self._offsets == tuple(range(1, self._m + 1))
        self._window = window
        self._max_pending = max_pending
        hash_head = cbor_bytes_head(hash_len)
        self._skip = len(hash_head)
        self._step = len(hash_head) + hash_len
        #: every length a canonical trailer can have: 0x82, n (1, 2, 3, 5 or 9 bytes), the
        #: array head (1 byte: at most 16 hashes), and count (head, hash) chunks
        self._lengths = frozenset(
            3 + u + count * self._step for u in (0, 1, 2, 4, 8) for count in range(self._m + 1)
        )
        #: index -> H_index, for every position an authentic source has vouched for, and
        #: the reverse map, which is what an arriving packet's hash is looked up in
        self._known: dict[int, bytes] = {}
        self._position: dict[bytes, int] = {}
        #: H -> the buffered packet (made Verified at once: it needs no other record)
        self._pending: dict[bytes, Verified] = {}
        self._high = -1
        self._seen_signatures: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.stats = {"signatures_verified": 0, "evicted": 0, "forged": 0}

    # -- data packets ----------------------------------------------------------------

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        if len(trailer) not in self._lengths or trailer[0] != 0x82 or trailer[1] > 0x1B:
            self._refuse_other_encoding(trailer)  # no array of an unsigned n and hashes
        h = authcrypto.prefixed_hash(DOMAIN + trailer, packet, self._hash_len)
        n = self._position.get(h)
        if n is not None:
            # An authentic source vouched for exactly these bytes: the sender's packet n.
            released = [Verified(packet, trailer)]
            low = self._mark(n, trailer)
            if low < n:
                self._sweep(n - 1, low, released)
            return released
        # Not (yet) linked to a signature: buffer it.  A forgery stays here until evicted.
        pending = self._pending
        pending[h] = Verified(packet, trailer)
        if len(pending) > self._max_pending:
            del pending[next(iter(pending))]
            self.stats["evicted"] += 1
        return []

    def _refuse_other_encoding(self, trailer: bytes) -> NoReturn:
        """Not a shape the sender emits: MalformedPacket if it is no valid trailer at all,
        otherwise AuthenticationFailed (``H_n`` covers the sender's exact bytes)."""
        fields = loads_untrusted(trailer)
        if len(fields) != 2:
            raise MalformedPacket("emss trailer has 2 fields")
        n, vouch = fields
        if type(n) is not int or type(vouch) is not list or not 0 <= n <= _U64:
            raise MalformedPacket("bad emss trailer")
        self._check_hashes(vouch, n)
        self.stats["forged"] += 1
        raise AuthenticationFailed("emss trailer not in the sender's encoding")

    def _check_hashes(self, hashes: list[Any], n: int) -> None:
        if len(hashes) != vouched_count(n, self._offsets):
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
        known, position = self._known, self._position
        low = t + 1
        for o, h in zip(self._offsets, hashes, strict=False):
            j = t + 1 - o
            if j not in known:
                known[j] = h
                position[h] = j
                low = min(low, j)
        released: list[Verified] = []
        if low <= t:
            self._sweep(t, low, released)
        if len(known) > 2 * self._window:
            # Forget positions far behind the newest signature: a packet that late is
            # buffered like an unknown one, and evicted.
            floor = self._high - self._window
            self._known = {j: h for j, h in known.items() if j >= floor}
            self._position = {h: j for j, h in self._known.items()}
        return released

    # -- propagation -------------------------------------------------------------------

    def _mark(self, n: int, trailer: bytes) -> int:
        """Learn the positions a released packet vouches for; the lowest new one (or ``n``).

        Released means authentic, so ``trailer`` is the sender's canonical encoding: its
        hashes are the last ``count * step`` bytes, one head before each.
        """
        known, position, size, step = self._known, self._position, self._hash_len, self._step
        count = self._m if n >= self._max_offset else vouched_count(n, self._offsets)
        pos = len(trailer) - count * step + self._skip
        low = n
        for o in self._offsets[:count]:
            j = n - o
            if j not in known:
                h = trailer[pos : pos + size]
                known[j] = h
                position[h] = j
                if j < low:
                    low = j
            pos += step
        return low

    def _sweep(self, j: int, low: int, released: list[Verified]) -> None:
        """Release buffered packets at known positions from ``j`` down to ``low``.

        Hashes only vouch for earlier packets, so one downward pass settles everything; a
        packet's newly learnt positions lower ``low``.  With contiguous offsets a packet
        released right after its successor adds only position ``j - m``, whose hash ends
        its trailer: the others are the successor's, known already.
        """
        known, position = self._known, self._position
        pending_pop, append = self._pending.pop, released.append
        m, size = self._m, self._hash_len
        shortcut = self._contiguous
        # True when position j + 1 was released here (its hashes learnt) and j >= m.
        after = False
        while j >= low:
            h = known.get(j)
            v = pending_pop(h, None) if h is not None else None
            if v is None:
                after = False
                j -= 1
                continue
            append(v)
            if after:
                jj = j - m
                if jj not in known:
                    h = v.trailer[-size:]
                    known[jj] = h
                    position[h] = jj
                    if jj < low:
                        low = jj
            else:
                new = self._mark(j, v.trailer)
                if new < low:
                    low = new
            after = shortcut and j > m
            j -= 1


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
