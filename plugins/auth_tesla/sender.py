"""TESLA sender: key chains kept as checkpoints, MACs per interval, timed disclosure.

The sender's clock starts the schedule (``t0`` is the ``now`` the signer was created at).  Keys
of interval ``i`` are used for MACs during ``i`` and disclosed from interval ``i + d`` on: in
every later data trailer, and, when data stops, in DISCLOSE auth packets sent ``copies`` times
so the last packets of a burst still verify.  Chains are finite (``chain_length`` intervals):
the next chain is generated half-way through the current one and its signed commitment is
announced four times in the second half, so receivers switch without a gap.
"""

from __future__ import annotations

import math

from rmsec.errors import LocalError
from rmsec.interfaces import Rng, Signer
from rmsec.security import authcrypto
from rmsec.wire.codec import dumps

from ..auth_ed25519.persig import cbor_array_head, cbor_bstr, cbor_bytes_head, cbor_uint
from . import wire
from .wire import Schedule


class TeslaSigner(Signer):
    """Sender side.  Call :meth:`pending` after sending and whenever :meth:`get_timer` fires."""

    def __init__(
        self,
        alg: authcrypto.SignatureAlgorithm,
        key: authcrypto.SigningKey,
        schedule: Schedule,
        *,
        rng: Rng,
        copies: int,
    ) -> None:
        self.schedule = schedule
        self._alg = alg
        self._key = key
        self._rng = rng
        self._copies = copies
        self._step_prefix = authcrypto.signed_message(wire.F_DOMAIN, schedule.sender_id)
        self._chains: dict[int, authcrypto.OneWayChain] = {}
        #: chain -> highest interval used for a MAC / highest interval disclosed
        self._used: dict[int, int] = {}
        self._disclosed: dict[int, int] = {}
        #: intervals at which the next chain's commitment is announced
        self._announce: list[int] = []
        self._announced_chain = 0
        self._urgent: list[bytes] = []
        self._pending_interval = -1
        self._chain(0)
        self._now = schedule.t0
        self._mac_len = schedule.mac_len
        self._mac_interval = -1
        self._mac = authcrypto.MacKey(b"")
        #: sender times known to fall in interval _mac_interval (see protect)
        self._span_from, self._span_until = math.inf, -math.inf
        self._trailer_head = b""
        self._trailer_tail = b""
        self._params_cache: tuple[list[tuple[int, int]], bytes] | None = None

    # -- key chains --------------------------------------------------------------------

    def _chain(self, c: int) -> authcrypto.OneWayChain:
        chain = self._chains.get(c)
        if chain is not None:
            return chain
        if self._chains and c < max(self._chains):
            # A chain is drawn once: regenerating a dropped one would disclose a different,
            # wrong key.  Chains are only dropped long after their last key was disclosed.
            raise LocalError(f"TESLA key chain {c} has been discarded")
        length, key_len, prefix = (
            self.schedule.chain_length, self.schedule.key_len, self._step_prefix,
        )
        chain = authcrypto.OneWayChain(
            self._rng(key_len),
            length,
            lambda key, k: authcrypto.chain_step(prefix, c, k, key, key_len),
        )
        self._chains[c] = chain
        if c > self._announced_chain:
            # The sender skipped ahead (idle across a chain's end): announce the new chain's
            # commitment at once; receivers buffer its packets until it arrives.
            self._urgent.extend([self._signed_bootstrap(c, 0)] * self._copies)
            self._announced_chain = c
        return chain

    def _discard_old_chains(self, current: int) -> None:
        for c in [x for x in self._chains if x < current - 1]:
            if self._used.get(c, -1) <= self._disclosed.get(c, -1):
                del self._chains[c]
                self._used.pop(c, None)
                self._disclosed.pop(c, None)

    def key(self, i: int) -> bytes:
        """``K_i`` of global interval ``i`` (tests and the bench use it to play attacker)."""
        c, k = self.schedule.chain_of(i)
        return self._chain(c).key(k)

    def _signed_bootstrap(self, c: int, k: int) -> bytes:
        body = wire.encode_bootstrap_body(self.schedule, c, k, self._chain(c).key(k))
        signature = self._key.sign(
            authcrypto.signed_message(wire.BOOT_DOMAIN, self.schedule.sender_id, body)
        )
        return dumps([wire.BOOTSTRAP, body, signature])

    # -- the Signer interface ------------------------------------------------------------

    @property
    def params(self) -> bytes:
        """Public key and signed anchors: the newest key that may already be public (so a
        late joiner hashes little and learns how far the sender's clock has come), the current
        chain's commitment if that key is of an earlier chain, and the next chain's commitment
        once it exists."""
        s = self.schedule
        current = max(s.interval_at(self._now), 0)
        c, _ = s.chain_of(current)
        safe = current - s.lag  # K_safe may already be public
        anchors: list[tuple[int, int]] = []
        if safe >= 0 and s.chain_of(safe)[0] in self._chains:
            anchors.append(s.chain_of(safe))
        if not anchors or anchors[0][0] != c:
            anchors.append((c, 0))
        if c + 1 in self._chains:
            anchors.append((c + 1, 0))
        if self._params_cache is None or self._params_cache[0] != anchors:
            public = self._key.verifying_key().public_bytes()
            boots = [self._signed_bootstrap(chain, k) for chain, k in anchors]
            self._params_cache = (
                anchors,
                dumps([wire.VERSION, self._alg.code, s.sender_id, public, boots]),
            )
        return self._params_cache[1]

    def protect(self, packet: bytes, now: float) -> bytes:
        if now > self._now:
            self._now = now
        if not self._span_from <= now <= self._span_until:
            self._enter_interval(now)
        # Canonical CBOR [i, tag, disclosed], head and tail built once per interval.
        return self._trailer_head + self._mac.tag(packet, self._mac_len) + self._trailer_tail

    def _enter_interval(self, now: float) -> None:
        """Set up the MAC key and trailer frame of the interval ``now`` falls in, and the
        span of sender time over which it stays that interval: ``interval_at`` is
        non-decreasing, so equal answers at both ends of ``[now, until]`` hold within."""
        s = self.schedule
        if now < s.t0:
            raise LocalError("TESLA cannot protect before the schedule starts")
        i = s.interval_at(now)
        until = s.start_of(i + 1) - s.interval * 1e-6
        if s.interval_at(until) != i:
            until = now
        self._span_from, self._span_until = now, until
        if i == self._mac_interval:
            return
        self._mac = authcrypto.MacKey(authcrypto.derive_key(wire.MAC_KEY_LABEL, self.key(i)))
        self._mac_interval = i
        c = i // s.chain_length
        if i > self._used.get(c, -1):
            self._used[c] = i
        disclosed = b""
        j = i - s.lag
        if j >= 0:
            cj, kj = s.chain_of(j)
            chain = self._chains.get(cj)
            # A chain skipped while idle was never used: nothing of it to disclose.
            if chain is not None:
                disclosed = chain.key(kj)
                if j > self._disclosed.get(cj, -1):
                    self._disclosed[cj] = j
        self._trailer_head = cbor_array_head(3) + cbor_uint(i) + cbor_bytes_head(s.mac_len)
        self._trailer_tail = cbor_bstr(disclosed)

    def pending(self, now: float) -> list[bytes]:
        """DISCLOSE packets for keys no later trailer carried, and next-chain announcements."""
        s = self.schedule
        if now > self._now:
            self._now = now
        # protect's cached interval when now is in its span (see _enter_interval)
        i = self._mac_interval if self._span_from <= now <= self._span_until else s.interval_at(now)
        if i == self._pending_interval and not self._urgent:
            # Nothing falls due inside an interval: a key used in it is due d intervals
            # later, announcements are per interval.  (Called after every packet: be cheap.)
            return []
        self._pending_interval = i
        out, self._urgent = self._urgent, []
        for c, used in sorted(self._used.items()):
            if used > self._disclosed.get(c, -1) and used + s.lag <= i:
                out.extend([dumps([wire.DISCLOSE, used, self.key(used)])] * self._copies)
                self._disclosed[c] = used
        self._discard_old_chains(i // s.chain_length)
        c, k = s.chain_of(max(i, 0))
        if k > s.chain_length // 2 and self._announced_chain <= c:
            # Half-way through chain c: make chain c + 1 and schedule its announcements.
            self._announced_chain = c + 1
            self._chain(c + 1)
            base = c * s.chain_length + s.chain_length // 2
            step = max(1, s.chain_length // 8)
            self._announce = [base + x * step for x in range(4)]
        if self._announce and i >= self._announce[0]:
            while self._announce and i >= self._announce[0]:
                self._announce.pop(0)
            out.append(self._signed_bootstrap(self._announced_chain, 0))
        return out

    def outstanding_until(self) -> float | None:
        """When the last key used so far may be disclosed (``pending`` then discloses it)."""
        s = self.schedule
        due = [
            s.start_of(used + s.lag)
            for c, used in self._used.items()
            if used > self._disclosed.get(c, -1)
        ]
        return max(due) if due else (float("-inf") if self._urgent else None)

    def get_timer(self) -> float | None:
        """The sender time at which :meth:`pending` next has something to send."""
        s = self.schedule
        if self._urgent:
            return float("-inf")
        due = [
            s.start_of(used + s.lag)
            for c, used in self._used.items()
            if used > self._disclosed.get(c, -1)
        ]
        if self._announce:
            due.append(s.start_of(self._announce[0]))
        c, _ = s.chain_of(max(s.interval_at(self._now), 0))
        if self._announced_chain <= c:
            due.append(s.start_of(c * s.chain_length + s.chain_length // 2))
        return min(due) if due else None

    # -- loose time synchronisation ------------------------------------------------------

    def sync_reply(self, nonce: bytes, now: float) -> bytes:
        """Answer a receiver's synchronisation request: this clock's reading, signed."""
        if not 8 <= len(nonce) <= 64:
            raise LocalError("sync nonce must be 8..64 bytes")
        t = float(now)
        signature = self._key.sign(
            authcrypto.signed_message(
                wire.SYNC_DOMAIN, self.schedule.sender_id, nonce, wire.time_bytes(t)
            )
        )
        return dumps([wire.SYNC, nonce, t, signature])
