"""emss: redundancy from the design loss, signature packets, bounded buffering."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from rmsec_plugins.auth_emss import EmssAuth, EmssSigner, EmssVerifier, redundancy_for

import rmsec.plugins
from rmsec.errors import AuthenticationFailed, ConfigError, MalformedPacket
from rmsec.wire.codec import dumps, loads_untrusted

SENDER = b"sender-4"


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(b"em %d %d" % (seed, counter[0])).digest()
        return out[:n]

    return rng


def setup(**options: object) -> tuple[EmssAuth, EmssSigner, EmssVerifier]:
    cls = rmsec.plugins.get_source_auth("emss")
    auth = cls(rng=seeded_rng(1), options={"every": 8, **options})
    assert isinstance(auth, EmssAuth)
    signer = auth.signer(sender_id=SENDER, now=0.0)
    return auth, signer, auth.verifier(signer.params, b"", now=0.0)


def test_redundancy_follows_the_design_loss() -> None:
    assert redundancy_for(64, 0.2, 0.99) == 6
    assert redundancy_for(64, 0.05, 0.99) == 3
    assert redundancy_for(64, 0.0, 0.99) == 1
    auth, _, _ = setup(loss=0.2, fraction=0.999)
    assert auth.offsets == tuple(range(1, len(auth.offsets) + 1))
    assert auth.guaranteed_fraction >= 0.999
    with pytest.raises(ConfigError):
        setup(every=60000, loss=0.9, fraction=0.999999)


def test_signature_every_n_packets_releases_the_chain() -> None:
    _, signer, verifier = setup()
    for n in range(7):
        assert verifier.verify(b"p%d" % n, signer.protect(b"p%d" % n, 0.0), 0.0) == []
        assert signer.pending(0.0) == []
    assert verifier.verify(b"p7", signer.protect(b"p7", 0.0), 0.0) == []
    (sig,) = signer.pending(0.0)
    released = [v.packet for v in verifier.receive_auth_packet(sig, 0.0)]
    assert sorted(released) == sorted(b"p%d" % n for n in range(8))
    assert verifier.receive_auth_packet(sig, 0.0) == []  # a copy: no second verification
    assert verifier.stats["signatures_verified"] == 1


def test_deadline_signs_the_tail_with_copies() -> None:
    _, signer, verifier = setup(deadline=0.1, copies=3)
    verifier.verify(b"only", signer.protect(b"only", 5.0), 5.0)
    assert signer.get_timer() == pytest.approx(5.1)
    assert signer.pending(5.05) == []
    sigs = signer.pending(5.1)
    assert len(sigs) == 3 and len(set(sigs)) == 1
    assert [v.packet for v in verifier.receive_auth_packet(sigs[1], 5.1)] == [b"only"]
    assert signer.get_timer() is None


def test_packet_after_its_signature_verifies_at_once() -> None:
    _, signer, verifier = setup()
    trailers = [(b"q%d" % n, signer.protect(b"q%d" % n, 0.0)) for n in range(8)]
    (sig,) = signer.pending(0.0)
    verifier.receive_auth_packet(sig, 0.0)
    for p, t in reversed(trailers):  # newest first: each links to the signed ones
        assert [v.packet for v in verifier.verify(p, t, 0.0)] == [p]


def test_forged_candidate_does_not_block_the_real_packet() -> None:
    _, signer, verifier = setup()
    real = [(b"r%d" % n, signer.protect(b"r%d" % n, 0.0)) for n in range(8)]
    n0, vouch = loads_untrusted(real[3][1])
    assert verifier.verify(b"impostor", dumps([n0, vouch]), 0.0) == []
    got: list[bytes] = []
    for p, t in real:
        got += [v.packet for v in verifier.verify(p, t, 0.0)]
    for sig in signer.pending(0.0):
        got += [v.packet for v in verifier.receive_auth_packet(sig, 0.0)]
    assert sorted(got) == sorted(p for p, _ in real)
    # No authentic hash names the impostor: it is never released, only buffered till evicted.
    assert verifier.verify(b"impostor", dumps([n0, vouch]), 0.0) == []


def test_pending_buffer_is_bounded() -> None:
    _, signer, verifier = setup(max_pending=20)
    for n in range(200):
        verifier.verify(b"junk", signer.protect(b"junk%d" % n, 0.0), 0.0)
    assert len(verifier._pending) == 20
    assert verifier.stats["evicted"] == 180


def test_malformed() -> None:
    _, signer, verifier = setup()
    for _ in range(10):
        signer.protect(b"x", 0.0)
    n, vouch = loads_untrusted(signer.protect(b"x", 0.0))
    for bad in ([n, [*vouch, bytes(16)]], [n, [bytes(15)] * len(vouch)], [-1, []], [n], [b"", []]):
        with pytest.raises(MalformedPacket):
            verifier.verify(b"x", dumps(bad), 0.0)
    # Valid CBOR the sender would never emit (hashes with two-byte heads): H_n covers the
    # sender's exact bytes, so it can never verify, and its length gives it away at once.
    loose = bytes([0x82, n, 0x80 + len(vouch)]) + b"".join(b"\x58\x10" + h for h in vouch)
    assert loads_untrusted(loose) == [n, vouch]
    with pytest.raises(AuthenticationFailed):
        verifier.verify(b"x", loose, 0.0)
    # A trailer with a canonical trailer's shape is only parsed once authentic: one hash
    # short, or n wider than needed, it is buffered like any unlinked packet and is never
    # released.
    wide = b"\x82\x1b" + n.to_bytes(8, "big") + dumps([vouch])[1:]
    assert verifier.verify(b"x", dumps([n, vouch[:-1]]), 0.0) == []
    assert verifier.verify(b"x", wide, 0.0) == []
    for t in range(11, 16):
        verifier.verify(b"x%d" % t, signer.protect(b"x%d" % t, 0.0), 0.0)
    released = [v for sig in signer.pending(0.0) for v in verifier.receive_auth_packet(sig, 0.0)]
    assert {v.packet for v in released} == {b"x%d" % t for t in range(11, 16)}
    signer.protect(b"y", 0.0)  # an unsigned packet, so the deadline signs again below
    (sig,) = signer.pending(10.0)[:1]
    fields = loads_untrusted(sig)
    for bad in ([2, *fields[1:]], [*fields[:3], fields[3][:-1]], fields[:3]):
        with pytest.raises(MalformedPacket):
            verifier.receive_auth_packet(dumps(bad), 0.0)
    fields[3] = bytes(64)
    with pytest.raises(AuthenticationFailed):
        verifier.receive_auth_packet(dumps(fields), 0.0)


def test_explicit_sparse_offsets() -> None:
    """Offsets other than 1..m (better against bursts) work; no bound is claimed for them."""
    auth, signer, verifier = setup(offsets=[7, 1, 3])
    assert auth.offsets == (1, 3, 7)
    assert auth.guaranteed_fraction == 0.0
    got: set[bytes] = set()
    for n in range(40):
        if n % 5 == 2:  # lose every fifth packet
            signer.protect(b"s%d" % n, 0.0)
        else:
            got.update(v.packet for v in verifier.verify(b"s%d" % n, signer.protect(b"s%d" % n, 0.0), 0.0))
        for sig in signer.pending(0.0):
            got.update(v.packet for v in verifier.receive_auth_packet(sig, 0.0))
    for sig in signer.pending(1.0):
        got.update(v.packet for v in verifier.receive_auth_packet(sig, 1.0))
    assert got == {b"s%d" % n for n in range(40) if n % 5 != 2}


@pytest.mark.parametrize("offsets", [None, [1, 3, 7]])
@pytest.mark.parametrize("seed", range(6))
def test_release_is_exactly_what_the_received_chains_reach(offsets: list[int] | None, seed: int) -> None:
    """Whatever is lost and in whatever order data and signature packets arrive, a receiver
    releases exactly the received packets linked to a received signature: computed here
    from the definition (positions vouched for by signatures and by released packets)."""
    import random

    options: dict[str, object] = {"every": 16, "copies": 1}
    if offsets is not None:
        options["offsets"] = offsets
    auth, signer, verifier = setup(**options)
    rng = random.Random(seed)
    data: list[tuple[int, bytes, bytes]] = []
    sigs: list[bytes] = []
    for n in range(300):
        data.append((n, b"d%d" % n, signer.protect(b"d%d" % n, 0.0)))
        sigs += signer.pending(0.0)
    sigs += signer.pending(1.0)
    got_data = [d for d in data if rng.random() >= 0.3]
    got_sigs = [s for s in sigs if rng.random() >= 0.3]
    # The reference: hashes only vouch downwards, so one descending pass decides.
    vouched = {
        t + 1 - o for s in got_sigs for t in [loads_untrusted(s)[1]] for o in auth.offsets
    }
    received = {n for n, _, _ in got_data}
    expected = set()
    for n in range(299, -1, -1):
        if n in vouched and n in received:
            expected.add(b"d%d" % n)
            vouched.update(n - o for o in auth.offsets)
    arrivals: list[tuple[str, bytes, bytes]] = [("data", p, t) for _, p, t in got_data]
    arrivals += [("sig", s, b"") for s in got_sigs]
    rng.shuffle(arrivals)
    arrivals += arrivals[: len(arrivals) // 10]  # and some duplicates
    released: list[bytes] = []
    for kind, a, b in arrivals:
        out = verifier.verify(a, b, 0.0) if kind == "data" else verifier.receive_auth_packet(a, 0.0)
        released += [v.packet for v in out]
    assert set(released) == expected
    assert verifier.stats["evicted"] == 0
