"""TESLA receiver: the safety condition on arrival, bounded buffering, release on disclosure.

On arrival of a packet of interval ``i`` at local time ``now`` the receiver computes ``x``, the
latest interval the sender's clock can be in (from its :class:`ClockSync` bound).  The packet is
*safe* only if ``i + d > x``: the key of ``i`` cannot have been disclosed yet, so nobody but the
sender can have made its MAC.  Unsafe ("late") packets are refused; safe ones are buffered until
a disclosed key (in a later trailer or a DISCLOSE packet) is checked against the one-way chain
and their MACs can be checked.  A receiver without a clock bound, or whose bound has grown
(drift) beyond ``max_sync_error``, refuses every packet rather than accept one it cannot judge.
"""

from __future__ import annotations

import math

from rmsec.errors import AuthenticationFailed, MalformedPacket
from rmsec.interfaces import ClockBound, Verified, Verifier
from rmsec.security import authcrypto
from rmsec.wire.codec import loads_untrusted

from ..auth_ed25519.persig import bad_algorithm, cbor_bytes_head, read_uint
from . import wire
from .clock import ClockSync
from .wire import Schedule

_Buffered = tuple[bytes, bytes, bytes]  # packet, trailer, tag


class TeslaVerifier(Verifier):
    """Receiver side.  Besides the interface: :meth:`poll`, :meth:`synchronise`, ``stats``."""

    _tag_head: bytes
    _key_head: bytes
    _key_part_len: int
    _lag: int
    _mac_len: int
    # the frame of the last canonical trailer parsed (see verify)
    _frame_len: int
    _frame_head: bytes
    _frame_tail: bytes
    _frame_i: int
    _frame_key: bytes
    _frame_tag: int
    _frame_tag_end: int

    def __init__(
        self,
        params: bytes,
        material: bytes,
        *,
        sync: ClockSync | None,
        max_sync_error: float,
        drift: float,
        max_buffer: int,
        hold: int,
    ) -> None:
        alg_code, sender_id, public, boots = wire.decode_params_untrusted(params)
        if material:
            raise MalformedPacket("tesla takes no per-receiver material")
        alg = authcrypto.SIGNATURES_BY_CODE.get(alg_code) or bad_algorithm()
        self._sig_key = alg.load_public_untrusted(public)
        self._sender_id = sender_id
        self._schedule: Schedule | None = None
        #: chain -> (k, K_{chain,k}): the newest key of each chain known authentic
        self._anchors: dict[int, tuple[int, bytes]] = {}
        self._seen_boots: set[bytes] = set()
        self._step_prefix = authcrypto.signed_message(wire.F_DOMAIN, sender_id)
        self._sync: ClockSync | None = sync
        self._max_sync_error = max_sync_error
        self._drift = drift
        self._max_buffer = max_buffer
        self._hold = hold
        self._buffers: dict[int, list[_Buffered]] = {}
        self._buffered = 0
        self._keys: dict[int, bytes] = {}
        self._ready: list[Verified] = []
        #: the bucket the fast path in verify appends to; None: take the full path
        self._hot: list[_Buffered] | None = None
        self._expire_checked = -1
        #: the sender's clock is known (from signed anchors) to be at least this interval
        self._sender_at_least = 0
        #: the newest interval whose key is known (packets up to it can be checked at once)
        self._newest_key = -1
        self._x, self._x_from, self._x_until = -1, math.inf, -math.inf
        #: the last local time seen, and whether poll found the bound lost (no timer then)
        self._seen = -math.inf
        self._polled = -math.inf
        self._poll_blocked = False
        self.stats: dict[str, int] = {
            "late": 0, "future": 0, "forged": 0, "unsynchronised": 0, "evicted": 0,
            "expired": 0, "unknown_chain": 0,
        }
        for boot in boots:
            self._accept_bootstrap(boot)
        if self._schedule is None:  # unreachable: decoding demands a bootstrap
            raise MalformedPacket("no TESLA bootstrap")
        self.schedule: Schedule = self._schedule
        self._lag = self.schedule.lag
        self._mac_len = self.schedule.mac_len
        self._tag_head = cbor_bytes_head(self.schedule.mac_len)
        self._key_head = cbor_bytes_head(self.schedule.key_len)
        self._key_part_len = len(self._key_head) + self.schedule.key_len
        #: the previous canonical trailer minus its tag (see verify); nothing matches at first
        self._frame_len, self._frame_head, self._frame_tail = -1, b"", b""
        self._frame_i, self._frame_key = -1, b""
        self._frame_tag, self._frame_tag_end = 0, 0

    # -- clock ---------------------------------------------------------------------------

    @property
    def sync(self) -> ClockSync | None:
        return self._sync

    def clock_ok(self, now: float) -> bool:
        """Whether this receiver's bound on the sender's clock is still tight enough."""
        sync = self._sync
        return sync is not None and sync.uncertainty(now) <= self._max_sync_error

    def synchronise(self, nonce: bytes, sent_at: float, reply: bytes, now: float) -> ClockSync:
        """Adopt the bound from the sender's signed answer to ``nonce`` sent at ``sent_at``."""
        got_nonce, sender_time, signature = wire.decode_sync_reply_untrusted(reply)
        message = authcrypto.signed_message(
            wire.SYNC_DOMAIN, self._sender_id, got_nonce, wire.time_bytes(sender_time)
        )
        if not authcrypto.mac_equal(got_nonce, nonce) or not self._sig_key.verify(
            signature, message
        ):
            raise AuthenticationFailed("bad sync reply")
        self._sync = ClockSync.from_exchange(
            sent_at=sent_at, sender_time=sender_time, received_at=now, drift=self._drift
        )
        self._poll_blocked = False
        self._forget_bound()
        return self._sync

    def set_clock(self, bound: ClockBound) -> None:
        """Adopt the core's bound (:class:`~rmsec.interfaces.ClockBound`), widened by this
        receiver's ``drift`` (any two clocks of the group) for the measurements' age."""
        drift = self._drift
        self._sync = ClockSync(
            offset=bound.offset + drift * bound.age,
            error=bound.error + 2 * drift * bound.age,
            at=bound.at,
            drift=drift,
        )
        self._poll_blocked = False
        self._forget_bound()

    def _latest_interval(self, now: float) -> int:
        """``x``: the latest interval the sender can be in; refuses when the bound is lost.

        Runs for every packet, so the answer is kept for a span of local time ``[from,
        until]`` over which it provably cannot change: for ``now`` at or after the sync
        exchange, ``x`` and the uncertainty are non-decreasing functions of ``now`` (IEEE
        arithmetic rounds monotonically), so equal answers at both ends of the span hold
        everywhere in it.  Both ends are checked with the very same computation.
        """
        if self._x_from <= now <= self._x_until:
            return self._x
        x = self._bound(now)
        sync = self._sync
        if sync is not None and now >= sync.at:
            until = self._span_end(sync, x, now)
            if until > now and self._evaluate(until) == (x, None):
                self._x, self._x_from, self._x_until = x, now, until
        return x

    def _bound(self, now: float) -> int:
        """The uncached check: ``x`` at ``now``, or AuthenticationFailed (counted)."""
        x, refusal = self._evaluate(now)
        if refusal is not None:
            self.stats["unsynchronised"] += 1
            raise AuthenticationFailed(refusal)
        return x

    def _evaluate(self, now: float) -> tuple[int, str | None]:
        """``(x, None)``, or ``(-1, why the receiver must refuse)``."""
        sync = self._sync
        if sync is None:
            return -1, "no clock bound: synchronise first"
        # ClockSync.uncertainty and .sender_time_upper, inlined.
        elapsed = now - sync.at if now >= sync.at else sync.at - now
        if sync.error + 2 * sync.drift * elapsed > self._max_sync_error:
            return -1, "clock bound exceeded: resynchronise"
        s = self.schedule
        upper = now + sync.offset + sync.drift * elapsed
        x = math.floor((upper - s.t0) / s.interval + 1e-9)  # Schedule.interval_at
        if x < self._sender_at_least:
            # A signed anchor proves the sender was already past this point: the bound is
            # wrong (the clock stepped back, or the sync lied), so nothing can be judged.
            return -1, "clock bound contradicts the sender's signed anchor"
        return x, None

    def _span_end(self, sync: ClockSync, x: int, now: float) -> float:
        """A local time, a little before the bound reaches interval ``x + 1`` or exceeds
        ``max_sync_error``; only a candidate: the caller checks it with :meth:`_evaluate`."""
        s = self.schedule
        margin = s.interval * 1e-6
        # upper(t) = t (1 + drift) + offset - drift at  reaches  t0 + (x + 1 - 1e-9) interval
        boundary = s.t0 + (x + 1 - 1e-9) * s.interval
        until = (boundary - sync.offset + sync.drift * sync.at) / (1 + sync.drift) - margin
        if sync.drift > 0:
            limit = sync.at + (self._max_sync_error - sync.error) / (2 * sync.drift)
            until = min(until, limit - margin)
        return until

    def _forget_bound(self) -> None:
        """The sync or the anchors changed: recompute ``x`` on the next packet."""
        self._x, self._x_from, self._x_until = -1, math.inf, -math.inf
        self._hot = None

    # -- data packets ----------------------------------------------------------------------

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        self._seen = now
        hot = self._hot
        if (
            hot is not None
            and len(trailer) == self._frame_len
            and trailer.startswith(self._frame_head)
            and trailer.endswith(self._frame_tail)
            and self._x_from <= now <= self._x_until
        ):
            # The steady state: another packet of the interval the previous one was
            # buffered in, nothing changed since (see _arrive): buffer it the same way.
            hot.append((packet, trailer, trailer[self._frame_tag : self._frame_tag_end]))
            self._buffered += 1
            if self._buffered > self._max_buffer:
                self._evict_oldest()
            return []
        return self._arrive(packet, trailer, now)

    def _arrive(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        """Every check, for a packet the fast path in :meth:`verify` cannot take.

        When this ends by buffering the packet with nothing to release, ``_hot`` keeps its
        bucket: a later packet whose trailer has the same frame (same interval, same
        disclosed key) and whose arrival time is in the same cached span of ``x`` passes
        every check here the same way and lands in the same bucket, as long as no key,
        anchor, clock bound or buffer changes in between; everything that changes one of
        those clears ``_hot``.
        """
        self._hot = None
        if (
            len(trailer) == self._frame_len
            and trailer.startswith(self._frame_head)
            and trailer.endswith(self._frame_tail)
        ):
            # Same interval and disclosed key as the last canonical trailer parsed: only
            # the tag differs, and the rest was checked then.
            i, disclosed = self._frame_i, self._frame_key
            tag = trailer[self._frame_tag : self._frame_tag_end]
        else:
            i, tag, disclosed = self._parse_trailer_untrusted(trailer)
        # _latest_interval's cache, inlined
        x = self._x if self._x_from <= now <= self._x_until else self._latest_interval(now)
        if i > x:
            self.stats["future"] += 1
            raise AuthenticationFailed("packet from an interval that has not begun")
        lag = self._lag
        # Every packet of an interval discloses the same key: only a newer one is news.
        advanced = bool(disclosed) and i - lag > self._newest_key and self._learn_key(
            i - lag, disclosed, x
        )
        if i + lag <= x:
            # Its key may be public by now: anyone could have made this MAC.  What the
            # disclosure released waits in _ready for the next call.
            self.stats["late"] += 1
            if advanced:
                self._ready.extend(self._release(x))
            raise AuthenticationFailed("packet arrived after its key could be disclosed")
        buffers = self._buffers
        if i in buffers:
            bucket = buffers[i]
            bucket.append((packet, trailer, tag))
        else:
            buffers[i] = bucket = [(packet, trailer, tag)]
        self._buffered += 1
        evicted = self._buffered > self._max_buffer
        if evicted:
            self._evict_oldest()
        if advanced or x != self._expire_checked or i <= self._newest_key:
            return self._take(self._release(x))
        if self._ready:
            return self._take([])
        if (
            not evicted
            and self._x_from <= now <= self._x_until
            and self._frame_i == i
            and self._frame_key == disclosed
            and not (disclosed and i - lag > self._newest_key)
        ):
            self._hot = bucket
        return []

    def _parse_trailer_untrusted(self, trailer: bytes) -> tuple[int, bytes, bytes]:
        """``(i, tag, disclosed)``, checked; the canonical encoding's frame is remembered."""
        parsed = self._parse_canonical(trailer)
        canonical = parsed is not None
        if parsed is None:
            parsed = self._decode_trailer_untrusted(trailer)
        i, _, disclosed = parsed
        if i > wire.MAX_INTERVAL or (disclosed and i < self._lag):
            raise MalformedPacket("bad tesla trailer")
        if canonical:
            head = len(trailer) - len(disclosed) - self._tail_len(disclosed) - self._mac_len
            self._frame_len = len(trailer)
            self._frame_head = trailer[:head]
            self._frame_tail = trailer[head + self._mac_len :]
            self._frame_i, self._frame_key = i, disclosed
            self._frame_tag, self._frame_tag_end = head, head + self._mac_len
        return parsed

    def _tail_len(self, disclosed: bytes) -> int:
        return len(self._key_head) if disclosed else 1

    def _parse_canonical(self, trailer: bytes) -> tuple[int, bytes, bytes] | None:
        """The fast path for the encoding the signer emits; ``None`` sends anything else
        through the general decoder (same accepted set, just slower)."""
        try:
            if trailer[0] != 0x83:
                return None
            i, pos = read_uint(trailer, 1)
            head = self._tag_head
            if i < 0 or not trailer.startswith(head, pos):
                return None
            pos += len(head)
            end = pos + self._mac_len
            rest = trailer[end:]
            if rest == b"\x40":
                return i, trailer[pos:end], b""
            if len(rest) == self._key_part_len and rest.startswith(self._key_head):
                return i, trailer[pos:end], rest[len(self._key_head) :]
        except IndexError:
            pass
        return None

    def _decode_trailer_untrusted(self, trailer: bytes) -> tuple[int, bytes, bytes]:
        s = self.schedule
        fields = loads_untrusted(trailer)
        if len(fields) != 3:
            raise MalformedPacket("tesla trailer has 3 fields")
        i, tag, disclosed = fields
        if (
            type(i) is not int
            or type(tag) is not bytes
            or type(disclosed) is not bytes
            or not 0 <= i <= wire.MAX_INTERVAL
            or len(tag) != s.mac_len
            or len(disclosed) not in (0, s.key_len)
        ):
            raise MalformedPacket("bad tesla trailer")
        return i, tag, disclosed

    def poll(self, now: float) -> list[Verified]:
        """What became verified without a packet of its own (and expire what never will)."""
        self._hot = None
        self._seen = max(self._seen, now)
        self._polled = now
        try:
            x = self._latest_interval(now)
        except AuthenticationFailed:
            self._poll_blocked = True  # nothing can be judged until a new bound
            return self._take([])
        return self._take(self._release(x))

    def get_timer(self) -> float | None:
        """Due at once when a late packet's disclosure released packets (they wait in
        ``_ready``); otherwise when the oldest buffered interval expires (``hold``), so a
        burst whose disclosures were all lost does not hold memory until the next packet."""
        if self._ready:
            return self._seen
        sync = self._sync
        if not self._buffers or sync is None or self._poll_blocked:
            return None
        s = self.schedule
        # x >= target once the upper bound (>= now + offset) reaches the target interval
        # (and never more than once an interval: rounding must not make it spin)
        target = min(self._buffers) + self._lag + self._hold + 1
        due = s.t0 + target * s.interval - sync.offset + s.interval * 1e-3
        return max(self._seen, self._polled + s.interval, due)

    def _take(self, released: list[Verified]) -> list[Verified]:
        if self._ready:
            released = self._ready + released
            self._ready = []
        return released

    # -- auth packets ------------------------------------------------------------------------

    def receive_auth_packet(self, data: bytes, now: float) -> list[Verified]:
        self._hot = None
        fields = wire.decode_auth_packet_untrusted(data)
        if fields[0] == wire.BOOTSTRAP:
            self._accept_bootstrap(data)
            return self.poll(now)
        _, j, key = fields
        if len(key) != self.schedule.key_len:
            raise MalformedPacket("bad disclosed key length")
        x = self._latest_interval(now)
        self._learn_key(j, key, x)
        return self._take(self._release(x))

    def _accept_bootstrap(self, data: bytes) -> None:
        self._hot = None
        if data in self._seen_boots:
            return
        kind, body, signature = wire.decode_auth_packet_untrusted(data)
        if kind != wire.BOOTSTRAP:
            raise MalformedPacket("expected a bootstrap")
        schedule, chain, k, key = wire.decode_bootstrap_body_untrusted(body)
        message = authcrypto.signed_message(wire.BOOT_DOMAIN, self._sender_id, body)
        if schedule.sender_id != self._sender_id or not self._sig_key.verify(signature, message):
            raise AuthenticationFailed("bad tesla bootstrap")
        if self._schedule is None:
            self._schedule = schedule
        elif schedule != self._schedule:
            raise AuthenticationFailed("bootstrap for another schedule")
        anchor = self._anchors.get(chain)
        if anchor is None or k > anchor[0]:
            self._anchors[chain] = (k, key)
        if k > 0:
            self._newest_key = max(self._newest_key, schedule.interval_of(chain, k))
            # K_{chain,k} is only made public d intervals after its own interval.
            disclosed_at = schedule.interval_of(chain, k) + schedule.lag
            if disclosed_at > self._sender_at_least:
                self._sender_at_least = disclosed_at
                self._forget_bound()
        newest = max(self._anchors)
        for old in [c for c in self._anchors if c < newest - 2]:
            del self._anchors[old]
        self._seen_boots.add(data)
        if len(self._seen_boots) > 16:
            self._seen_boots = {data}

    # -- keys --------------------------------------------------------------------------------

    def _learn_key(self, j: int, key: bytes, x: int) -> bool:
        """Check a disclosed ``K_j`` against the chain; True when it is new and authentic."""
        self._hot = None
        s = self.schedule
        if j + s.lag > x:
            self.stats["forged"] += 1
            raise AuthenticationFailed("key disclosed before its time")
        c, k = s.chain_of(j)
        anchor = self._anchors.get(c)
        if anchor is None:
            self.stats["unknown_chain"] += 1
            return False
        ak, akey = anchor
        if k <= ak:
            return False
        # Walk down to the anchor, keeping the keys that buffered packets need.  The walk is
        # bounded by the chain length and, via the check above, by elapsed time.
        found: dict[int, bytes] = {}
        base = c * s.chain_length - 1
        cur = key
        for t in range(k, ak, -1):
            if base + t in self._buffers:
                found[base + t] = cur
            cur = authcrypto.chain_step(self._step_prefix, c, t, cur, s.key_len)
        if not authcrypto.mac_equal(cur, akey):
            self.stats["forged"] += 1
            raise AuthenticationFailed("disclosed key is not on the chain")
        self._anchors[c] = (k, key)
        self._keys.update(found)
        self._newest_key = max(self._newest_key, j)
        return True

    def _key_for(self, i: int) -> bytes | None:
        key = self._keys.get(i)
        if key is not None:
            return key
        s = self.schedule
        c, k = s.chain_of(i)
        anchor = self._anchors.get(c)
        if anchor is None or k > anchor[0]:
            return None
        cur = anchor[1]
        for t in range(anchor[0], k, -1):
            cur = authcrypto.chain_step(self._step_prefix, c, t, cur, s.key_len)
        self._keys[i] = cur
        return cur

    # -- buffer ------------------------------------------------------------------------------

    def _release(self, x: int) -> list[Verified]:
        """MAC-check every buffered packet whose key is known; expire hopeless ones."""
        self._hot = None
        s = self.schedule
        out: list[Verified] = []
        self._expire_checked = x
        for i in sorted(self._buffers):
            key = self._key_for(i)
            if key is None:
                if i + s.lag + self._hold < x:
                    self.stats["expired"] += len(self._buffers[i])
                    self._buffered -= len(self._buffers.pop(i))
                continue
            bucket = self._buffers.pop(i)
            self._buffered -= len(bucket)
            check = authcrypto.MacKey(authcrypto.derive_key(wire.MAC_KEY_LABEL, key)).matches
            append = out.append
            for packet, trailer, tag in bucket:
                if check(packet, tag):
                    append(Verified(packet, trailer))
                else:
                    self.stats["forged"] += 1
        if self._keys:
            self._keys = {i: k for i, k in self._keys.items() if i in self._buffers}
        return out

    def _evict_oldest(self) -> None:
        self._hot = None
        oldest = min(self._buffers)
        bucket = self._buffers[oldest]
        bucket.pop(0)
        if not bucket:
            del self._buffers[oldest]
        self._buffered -= 1
        self.stats["evicted"] += 1
