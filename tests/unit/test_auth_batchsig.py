"""batchsig: deferred batching (size / deadline), one signature per batch, cached roots."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from rmsec_plugins.auth_batchsig import BatchSigAuth, BatchSigner, BatchVerifier

import rmsec.plugins
from rmsec.errors import AuthenticationFailed, MalformedPacket
from rmsec.wire.codec import dumps, loads_untrusted

SENDER = b"sender-2"


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(b"bs %d %d" % (seed, counter[0])).digest()
        return out[:n]

    return rng


def setup(**options: object) -> tuple[BatchSigAuth, BatchSigner, BatchVerifier]:
    cls = rmsec.plugins.get_source_auth("batchsig")
    auth = cls(rng=seeded_rng(1), options={"batch": 8, "deadline": 0.05, **options})
    assert isinstance(auth, BatchSigAuth)
    signer = auth.signer(sender_id=SENDER, now=0.0)
    return auth, signer, auth.verifier(signer.params, b"", now=0.0)


def test_batch_closes_by_size() -> None:
    _, signer, verifier = setup()
    for n in range(7):
        signer.submit(b"p%d" % n, 0.0)
        assert signer.ready(0.0) == []
    assert signer.get_timer() == pytest.approx(0.05)
    signer.submit(b"p7", 0.0)
    out = signer.ready(0.0)
    assert [p for p, _ in out] == [b"p%d" % n for n in range(8)]
    assert signer.get_timer() is None
    for p, t in out:
        assert verifier.verify(p, t, 0.0)[0].packet == p
    assert verifier.signatures_verified == 1  # one signature for the whole batch


def test_batch_closes_by_deadline() -> None:
    _, signer, verifier = setup()
    signer.submit(b"a", 1.0)
    signer.submit(b"b", 1.01)
    assert signer.ready(1.04) == []
    assert signer.get_timer() == pytest.approx(1.05)
    out = signer.ready(1.05)
    assert [p for p, _ in out] == [b"a", b"b"]
    assert all(verifier.verify(p, t, 1.05) for p, t in out)


def test_each_packet_verifies_alone_in_any_order() -> None:
    _, signer, _ = setup(batch=13)
    packets = [b"packet %d" % n for n in range(13)]
    trailers = signer.protect_many(packets, 0.0)
    for n in range(13):  # a receiver that got exactly one packet of the batch
        alone = BatchVerifier(signer.params, b"", cache=4)
        assert alone.verify(packets[n], trailers[n], 0.0)
    shuffled = BatchVerifier(signer.params, b"", cache=4)
    for n in (12, 0, 7, 3, 11, 1, 2, 4, 5, 6, 8, 9, 10):
        assert shuffled.verify(packets[n], trailers[n], 0.0)
    assert shuffled.signatures_verified == 1


def test_forgery_in_a_known_batch_costs_no_signature() -> None:
    _, signer, verifier = setup()
    packets = [b"x%d" % n for n in range(8)]
    trailers = signer.protect_many(packets, 0.0)
    verifier.verify(packets[0], trailers[0], 0.0)
    for n in range(8):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(b"evil", trailers[n], 0.0)
    fields = loads_untrusted(trailers[3])
    fields[1] = 4  # claim another position with the same path
    with pytest.raises(AuthenticationFailed):
        verifier.verify(packets[3], dumps(fields), 0.0)
    assert verifier.signatures_verified == 1


def test_protect_is_a_batch_of_one() -> None:
    _, signer, verifier = setup()
    trailer = signer.protect(b"now", 0.0)
    assert loads_untrusted(trailer)[2] == 1
    assert verifier.verify(b"now", trailer, 0.0)


def test_root_cache_is_bounded() -> None:
    _, signer, verifier = setup(cache=3)
    for n in range(10):
        verifier.verify(b"b%d" % n, signer.protect(b"b%d" % n, 0.0), 0.0)
    assert len(verifier._batches) == 3


def test_malformed_trailers() -> None:
    _, signer, verifier = setup()
    trailer = loads_untrusted(signer.protect_many([b"a", b"b", b"c"], 0.0)[0])
    for bad in (
        [*trailer[:3], trailer[3][:-1], trailer[4]],  # path one node short
        [*trailer[:3], [*trailer[3], bytes(16)], trailer[4]],  # one too many
        [trailer[0], 3, 3, trailer[3], trailer[4]],  # index outside the batch
        [trailer[0], 0, 2000, trailer[3], trailer[4]],  # batch larger than allowed
        [*trailer[:4], trailer[4][:-1]],
        trailer[:4],
    ):
        with pytest.raises(MalformedPacket):
            verifier.verify(b"a", dumps(bad), 0.0)
