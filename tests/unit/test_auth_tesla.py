"""TESLA (RFC 4082): safety condition, clock bounds, key chains, renewal, bounded buffers."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rmsec_plugins.auth_tesla import ClockSync, TeslaAuth, TeslaSigner, TeslaVerifier, wire

import rmsec.plugins
from rmsec.errors import AuthenticationFailed, ConfigError, MalformedPacket
from rmsec.interfaces import Verified
from rmsec.security import authcrypto
from rmsec.wire.codec import dumps, loads_untrusted

SENDER = b"sender-7"
BASE = {"interval": 0.01, "rtt": 0.02, "chain_length": 64}


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(b"tesla %d %d" % (seed, counter[0])).digest()
        return out[:n]

    return rng


def auth(**options: Any) -> TeslaAuth:
    cls = rmsec.plugins.get_source_auth("tesla")
    made = cls(rng=seeded_rng(1), options={**BASE, **options})
    assert isinstance(made, TeslaAuth)
    return made


def setup(
    sync: ClockSync | None = None, *, t0: float = 100.0, **options: Any
) -> tuple[TeslaAuth, TeslaSigner, TeslaVerifier]:
    a = auth(**options)
    signer = a.signer(sender_id=SENDER, now=t0)
    verifier = a.verifier(signer.params, b"", now=t0, sync=sync or ClockSync.shared_clock(t0))
    return a, signer, verifier


def packets(released: list[Verified]) -> list[bytes]:
    return [v.packet for v in released]


def test_disclosure_delay_comes_from_the_rtt_bound() -> None:
    a = auth()
    assert a.lag == math.ceil(2 * 0.02 / 0.01) + 1 == 5
    # A packet delayed by rtt, at a receiver whose clock error is rtt, still passes:
    assert (a.lag - 1) * a.interval >= 0.02 + 0.02
    with pytest.raises(ConfigError):
        auth(chain_length=8)  # shorter than 2 d + 2


def test_packet_released_when_its_key_is_disclosed() -> None:
    a, signer, verifier = setup()
    trailer = signer.protect(b"p0", 100.0)
    assert verifier.verify(b"p0", trailer, 100.001) == []  # buffered: key still secret
    later = 100.0 + a.lag * a.interval  # first interval allowed to disclose K_0
    t2 = signer.protect(b"p1", later)
    assert packets(verifier.verify(b"p1", t2, later + 0.001)) == [b"p0"]
    assert loads_untrusted(t2)[2] == signer.key(0)


def test_late_packet_is_rejected() -> None:
    """A packet arriving after its key could have been disclosed is refused, even genuine."""
    a, signer, verifier = setup()
    trailer = signer.protect(b"slow", 100.0)
    # Interval 0's key may be disclosed from interval d on: arriving then is too late.
    too_late = 100.0 + a.lag * a.interval
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"slow", trailer, too_late)
    assert verifier.stats["late"] == 1
    # Just inside the bound it is accepted (buffered).
    _, signer2, verifier2 = setup()
    t2 = signer2.protect(b"ok", 100.0)
    assert verifier2.verify(b"ok", t2, too_late - a.interval - 1e-6) == []
    assert verifier2.stats["late"] == 0


def test_late_packet_with_a_known_key_cannot_be_forged() -> None:
    """Once K_i is public, an attacker can MAC anything for interval i: refused as late."""
    a, signer, verifier = setup()
    for n in range(12):
        t = 100.0 + n * a.interval
        verifier.verify(b"n%d" % n, signer.protect(b"n%d" % n, t), t)
    now = 100.0 + 11 * a.interval
    old = 2  # disclosed by interval 7's packets
    tag = authcrypto.packet_mac(
        authcrypto.derive_key(wire.MAC_KEY_LABEL, signer.key(old)), b"forged", 16
    )
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"forged", dumps([old, tag, b""]), now)


def test_packet_from_the_future_is_rejected() -> None:
    a, signer, verifier = setup()
    trailer = signer.protect(b"x", 100.0 + 10 * a.interval)
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"x", trailer, 100.0)  # receiver's bound: sender is still in interval 0
    assert verifier.stats["future"] == 1


def test_receiver_without_a_clock_bound_refuses() -> None:
    a = auth()
    signer = a.signer(sender_id=SENDER, now=100.0)
    verifier = a.verifier(signer.params, b"", now=100.0)  # no sync, not a shared clock
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"p", signer.protect(b"p", 100.0), 100.0)
    assert verifier.stats["unsynchronised"] == 1


def test_receiver_whose_clock_bound_is_exceeded_refuses() -> None:
    """Sync error beyond max_sync_error, or drift accumulated since sync: refuse, not accept."""
    sloppy = ClockSync(offset=0.0, error=0.05, at=100.0)  # max_sync_error defaults to rtt 0.02
    _, signer, verifier = setup(sloppy)
    assert not verifier.clock_ok(100.0)
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"p", signer.protect(b"p", 100.0), 100.0)

    drifting = ClockSync(offset=0.0, error=0.01, at=100.0, drift=1e-4)
    _a, signer, verifier = setup(drifting)
    assert verifier.verify(b"early", signer.protect(b"early", 100.0), 100.0) == []
    # After 60 s the uncertainty is 0.01 + 2 * 1e-4 * 60 = 0.022 > 0.02: resynchronise.
    later = 160.0
    assert not verifier.clock_ok(later)
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"late", signer.protect(b"late", later), later)
    assert verifier.stats["unsynchronised"] == 1


def test_synchronisation_with_a_signed_reply() -> None:
    a = auth()
    signer = a.signer(sender_id=SENDER, now=100.0)
    # The receiver's clock reads 40 s less than the sender's.
    verifier = a.verifier(signer.params, b"", now=60.0)
    nonce = b"n" * 16
    reply = signer.sync_reply(nonce, 100.004)  # request sent at 60.0, answered at 60.008
    with pytest.raises(AuthenticationFailed):
        verifier.synchronise(b"x" * 16, 60.0, reply, 60.008)  # wrong nonce
    forged = dumps([wire.SYNC, nonce, 90.0, bytes(64)])
    with pytest.raises(AuthenticationFailed):
        verifier.synchronise(nonce, 60.0, forged, 60.008)
    sync = verifier.synchronise(nonce, 60.0, reply, 60.008)
    assert sync.offset == pytest.approx(40.004) and sync.error == pytest.approx(0.008)
    t = signer.protect(b"p", 100.01)
    assert verifier.verify(b"p", t, 60.012) == []
    later = 100.0 + (a.lag + 1) * a.interval
    released = verifier.verify(b"q", signer.protect(b"q", later), later - 40.0 + 0.002)
    assert packets(released) == [b"p"]


def test_forged_disclosure_is_rejected() -> None:
    a, signer, verifier = setup()
    verifier.verify(b"p", signer.protect(b"p", 100.0), 100.0)
    now = 100.0 + (a.lag + 2) * a.interval
    bogus = dumps([wire.DISCLOSE, 1, bytes(16)])
    with pytest.raises(AuthenticationFailed):
        verifier.receive_auth_packet(bogus, now)
    # A key disclosed before its time is refused too (it cannot be the sender's).
    early = dumps([wire.DISCLOSE, a.lag + 2, signer.key(a.lag + 2)])
    with pytest.raises(AuthenticationFailed):
        verifier.receive_auth_packet(early, now)
    good = dumps([wire.DISCLOSE, 0, signer.key(0)])
    assert packets(verifier.receive_auth_packet(good, now)) == [b"p"]


def test_forged_packet_is_buffered_then_dropped() -> None:
    a, signer, verifier = setup()
    assert verifier.verify(b"fake", dumps([0, bytes(16), b""]), 100.0) == []
    assert verifier.verify(b"real", signer.protect(b"real", 100.0), 100.0) == []
    now = 100.0 + a.lag * a.interval
    released = verifier.verify(b"next", signer.protect(b"next", now), now)
    assert packets(released) == [b"real"]
    assert verifier.stats["forged"] == 1


def test_disclosures_after_the_last_packet() -> None:
    """When data stops, pending() discloses the last keys, ``copies`` times."""
    a, signer, verifier = setup(copies=2)
    verifier.verify(b"last", signer.protect(b"last", 100.0), 100.0)
    assert signer.pending(100.0) == []
    due = signer.get_timer()
    assert due == pytest.approx(100.0 + a.lag * a.interval)
    out = signer.pending(due)
    assert len(out) == 2 and out[0] == out[1]
    assert packets(verifier.receive_auth_packet(out[0], due)) == [b"last"]
    assert verifier.receive_auth_packet(out[1], due) == []
    assert signer.pending(due + 0.05) == []


def run_stream(
    signer: TeslaSigner, verifier: TeslaVerifier, start: float, stop: float, step: float
) -> tuple[int, set[bytes]]:
    sent = 0
    released: set[bytes] = set()
    t = start
    while t < stop:
        p = b"at %.4f" % t
        sent += 1
        released.update(packets(verifier.verify(p, signer.protect(p, t), t + 0.001)))
        for data in signer.pending(t):
            released.update(packets(verifier.receive_auth_packet(data, t + 0.001)))
        t += step
    for k in range(1, 30):
        for data in signer.pending(t + k * 0.01):
            released.update(packets(verifier.receive_auth_packet(data, t + k * 0.01)))
    return sent, released


def test_key_chains_are_renewed_with_signed_commitments() -> None:
    _a, signer, verifier = setup()
    # 64 intervals of 10 ms per chain: 3 s crosses four chains.
    sent, released = run_stream(signer, verifier, 100.0, 103.0, 0.004)
    assert len(released) == sent
    assert verifier.stats["unknown_chain"] == 0


def test_late_joiner_starts_from_current_params() -> None:
    a, signer, first = setup()
    run_stream(signer, first, 100.0, 101.5, 0.004)  # the sender's clock ends near 101.79
    params = signer.params  # carries a signed anchor near the current interval
    joiner = a.verifier(params, b"", now=102.0, sync=ClockSync.shared_clock(102.0))
    sent, released = run_stream(signer, joiner, 102.0, 103.0, 0.004)
    assert len(released) == sent


def test_sender_idle_across_a_chain_boundary() -> None:
    """Skipping whole chains while idle: the new chain is announced at once."""
    _a, signer, verifier = setup()
    sent1, got1 = run_stream(signer, verifier, 100.0, 100.1, 0.005)
    sent2, got2 = run_stream(signer, verifier, 103.0, 103.2, 0.005)  # chains 1..3 skipped
    assert len(got1) == sent1 and len(got2) == sent2


def test_bootstrap_signature_is_checked() -> None:
    a, signer, verifier = setup()
    boot = loads_untrusted(loads_untrusted(signer.params)[4][0])
    tampered = dumps([wire.BOOTSTRAP, boot[1], bytes(64)])
    with pytest.raises(AuthenticationFailed):
        verifier.receive_auth_packet(tampered, 100.0)
    params = loads_untrusted(signer.params)
    params[4] = [tampered]
    with pytest.raises(AuthenticationFailed):
        a.verifier(dumps(params), b"", now=100.0)


def test_buffer_is_bounded() -> None:
    _a, _signer, verifier = setup(max_buffer=50)
    for n in range(500):
        verifier.verify(b"junk %d" % n, dumps([0, bytes(16), b""]), 100.0)
    assert verifier._buffered == 50
    assert verifier.stats["evicted"] == 450


def test_buffered_packets_expire_when_no_key_comes() -> None:
    a, signer, verifier = setup(hold=2)
    verifier.verify(b"orphan", signer.protect(b"orphan", 100.0), 100.0)
    assert verifier.poll(100.0 + (a.lag + 5) * a.interval) == []
    assert verifier.stats["expired"] == 1 and verifier._buffered == 0


def test_key_chain_is_kept_as_checkpoints() -> None:
    chain = authcrypto.OneWayChain(b"k" * 16, 10_000, lambda k, j: authcrypto.sha256(k)[:16])
    keys = [chain.key(j) for j in range(0, 10_001, 37)]
    assert len(set(keys)) == len(keys)
    assert chain.stored_keys <= 2 * math.isqrt(10_000) + 3
    assert authcrypto.sha256(chain.key(1))[:16] == chain.key(0) == chain.commitment
    # The sender keeps its chains that way too: a 16384-interval chain, used for a while.
    a = auth(chain_length=16384)
    signer = a.signer(sender_id=SENDER, now=100.0)
    for n in range(0, 3000, 7):
        signer.protect(b"x", 100.0 + n * a.interval)
        signer.pending(100.0 + n * a.interval)
    assert all(c.stored_keys <= 2 * math.isqrt(16384) + 3 for c in signer._chains.values())


def test_malformed_trailers() -> None:
    _, _signer, verifier = setup()
    for bad in (
        dumps([0, bytes(16)]),
        dumps([0, bytes(15), b""]),
        dumps([0, bytes(16), bytes(16)]),  # a disclosure before interval d
        dumps([-1, bytes(16), b""]),
        dumps([0.0, bytes(16), b""]),
        dumps([0, bytes(16), bytes(3)]),
        b"\xff",
    ):
        with pytest.raises(MalformedPacket):
            verifier.verify(b"p", bad, 100.0)
    for bad in (dumps([9, 1, 2]), dumps([wire.DISCLOSE, 1, bytes(3)]), dumps([])):
        with pytest.raises(MalformedPacket):
            verifier.receive_auth_packet(bad, 100.0)


def test_clock_bound_contradicting_a_signed_anchor_refuses() -> None:
    """Params carry a signed key the sender disclosed at interval j + d: a receiver whose
    bound says the sender is not there yet has a wrong clock, and refuses."""
    a, signer, first = setup()
    run_stream(signer, first, 100.0, 101.0, 0.004)
    params = signer.params
    behind = a.verifier(params, b"", now=100.2, sync=ClockSync.shared_clock(100.2))
    with pytest.raises(AuthenticationFailed):
        behind.verify(b"p", signer.protect(b"p", 101.0), 100.2)
    assert behind.stats["unsynchronised"] == 1


# ----------------------------------------------------------- the receiver's fast paths


class Uncached(TeslaVerifier):
    """The same receiver with every per-packet cache defeated: no hot bucket, no trailer
    frame, no cached span of ``x``.  The fast paths must never decide differently."""

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        self._forget_bound()
        self._frame_len = -1
        return super().verify(packet, trailer, now)

    def _latest_interval(self, now: float) -> int:
        return self._bound(now)


def deliver(verifier: TeslaVerifier, kind: str, data: bytes, trailer: bytes, now: float) -> object:
    """What the receiver made of one arrival: the packets released, or the error's name."""
    try:
        if kind == "data":
            released = verifier.verify(data, trailer, now)
        elif kind == "auth":
            released = verifier.receive_auth_packet(data, now)
        else:
            released = verifier.poll(now)
    except (AuthenticationFailed, MalformedPacket) as exc:
        return type(exc).__name__
    return sorted(v.packet for v in released)


@pytest.mark.parametrize("max_buffer", [8192, 20])
def test_fast_paths_decide_like_the_full_checks(max_buffer: int) -> None:
    import random

    a = auth(max_buffer=max_buffer, drift=1e-4)
    signer = a.signer(sender_id=SENDER, now=100.0)
    sync = ClockSync(offset=0.003, error=0.004, at=99.0, drift=1e-4)
    kwargs: dict[str, Any] = dict(
        sync=sync, max_sync_error=a.max_sync_error, drift=a.drift, max_buffer=max_buffer,
        hold=a.hold,
    )
    fast = TeslaVerifier(signer.params, b"", **kwargs)
    full = Uncached(signer.params, b"", **kwargs)
    rng = random.Random(5)
    events: list[tuple[float, str, bytes, bytes]] = []
    t = 100.0
    for n in range(1500):
        t += rng.choice([0.0004, 0.001, 0.0023]) if n % 400 else 0.3  # bursts and pauses
        packet = b"p%d" % n
        trailer = signer.protect(packet, t)
        delay = rng.choice([0.001, 0.002, 0.004, 0.03, 0.08])  # some arrive too late
        events.append((t + delay, "data", packet, trailer))
        if rng.random() < 0.05:
            events.append((t + delay, "data", b"forged %d" % n, trailer))  # copied trailer
        if rng.random() < 0.02:
            events.append((t + 0.002, "data", packet, trailer))  # duplicate
        for data in signer.pending(t):
            events.append((t + 0.003, "auth", data, b""))
    for k in range(1, 30):
        for data in signer.pending(t + k * 0.01):
            events.append((t + k * 0.01 + 0.003, "auth", data, b""))
    events.sort(key=lambda e: e[0])
    for k in range(0, len(events), 97):  # a few arrivals with a clock that steps back
        at, kind, x, y = events[k]
        events[k] = (at - 0.004, kind, x, y)
    released = 0
    for step, (at, kind, x, y) in enumerate(events):
        if kind == "auth" and step % 5 == 0:
            kind = "poll"
        got = deliver(fast, kind, x, y, at)
        assert got == deliver(full, kind, x, y, at), (step, kind)
        if isinstance(got, list):
            released += len(got)
    assert fast.stats == full.stats
    assert fast.stats["late"] > 0 and fast.stats["forged"] > 0
    if max_buffer == 20:
        assert fast.stats["evicted"] > 0 and released > 100
    else:
        assert fast.stats["evicted"] == 0 and released > 1000


@settings(max_examples=60, deadline=None)
@given(
    offset=st.floats(-50.0, 50.0),
    error=st.floats(0.0, 0.03),
    drift=st.sampled_from([0.0, 1e-6, 1e-4, 0.01]),
    steps=st.lists(st.floats(0.0, 0.02), min_size=1, max_size=40),
    start=st.floats(0.0, 400.0),
)
def test_cached_bound_equals_the_fresh_one(
    offset: float, error: float, drift: float, steps: list[float], start: float
) -> None:
    """x from the cached span is what the full computation gives at that very time, the
    refusals included (uncertainty beyond max_sync_error, clock behind the anchors)."""
    a = auth()
    signer = a.signer(sender_id=SENDER, now=100.0)
    sync = ClockSync(offset=offset, error=error, at=100.0 - offset, drift=drift)
    verifier = a.verifier(signer.params, b"", now=100.0, sync=sync)
    now = 100.0 - offset + start * a.interval / 7
    for step in steps:
        now += step if step > 0.01 else step / 1000  # also creep up on boundaries
        fresh = verifier._evaluate(now)
        try:
            cached: tuple[int, str | None] = (verifier._latest_interval(now), None)
        except AuthenticationFailed:
            cached = (-1, fresh[1])
        assert cached == fresh


def test_sender_interval_cache_follows_the_schedule() -> None:
    a = auth()
    signer = a.signer(sender_id=SENDER, now=100.0)
    s = signer.schedule
    times = sorted(
        s.start_of(i) + d for i in range(1, 40) for d in (-1e-9, -1e-12, 0.0, 1e-12, 1e-9)
    )
    for t in times:
        i = loads_untrusted(signer.protect(b"x", t))[0]
        assert i == s.interval_at(t)


@settings(max_examples=80, deadline=None)
@given(
    reply=st.binary(max_size=120)
    | st.lists(
        st.one_of(
            st.integers(-5, 2**65), st.binary(max_size=70), st.floats(allow_nan=True),
            st.text(max_size=4), st.none(),
        ),
        max_size=5,
    ).map(dumps)
)
def test_sync_reply_is_untrusted_input(reply: bytes) -> None:
    """The point-to-point sync reply is an auth message too: anything but the sender's
    signed answer to this nonce is MalformedPacket or AuthenticationFailed, and the
    receiver's clock bound is left as it was."""
    _, _signer, verifier = setup()
    before = verifier.sync
    try:
        verifier.synchronise(b"n" * 16, 100.0, reply, 100.01)
    except (MalformedPacket, AuthenticationFailed):
        pass
    else:
        raise AssertionError("an unsigned reply was adopted")
    assert verifier.sync == before
