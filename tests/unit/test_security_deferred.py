"""Deferred signing in the core: a ``batchsig`` stream pays one signature per batch, frames
keep their sequence order, and no frame waits past the signer's deadline."""

from __future__ import annotations

import math

import pytest
from rmsec_plugins.auth_batchsig import BatchSigner, BatchVerifier

from rmsec.interfaces import DeferredSigner
from rmsec.security import events as ev
from rmsec.security.aead import aead_algorithm
from rmsec.security.epochs import EpochKeys
from rmsec.security.protection import Header, StreamProtector, Unprotector
from tests.unit.security_helpers import SESSION, Group, seeded_rng, source_auth

BATCH, DEADLINE = 8, 0.05


def stream(auth: str = "batchsig") -> tuple[StreamProtector, Unprotector]:
    """A protector and an unprotector that knows its sender, both at epoch 1."""
    rng = seeded_rng(5)
    options = {"batch": BATCH, "deadline": DEADLINE} if auth == "batchsig" else {}
    method = source_auth(auth, rng, **options)
    algorithm = aead_algorithm("aes-128-gcm")
    tx_keys, rx_keys = EpochKeys(algorithm, SESSION, grace=2.0), EpochKeys(algorithm, SESSION, grace=2.0)
    secret = rng(32)
    tx_keys.install(1, secret, 0.0)
    rx_keys.install(1, secret, 0.0)
    signer = method.signer(sender_id=b"sender01", now=0.0)
    tx = StreamProtector(tx_keys, signer, b"sender01")
    rx = Unprotector(rx_keys)
    rx.add_sender(b"sender01", method.verifier(signer.params, b"", now=0.0), 0.0)
    return tx, rx


def signer_of(tx: StreamProtector) -> BatchSigner:
    assert isinstance(tx.signer, BatchSigner)
    return tx.signer


@pytest.mark.parametrize("n", [1, 7, 8, 21, 64])
def test_n_packets_cost_ceil_n_over_k_signatures_and_all_verify(n: int) -> None:
    tx, rx = stream()
    assert isinstance(tx.signer, DeferredSigner)
    frames: list[bytes] = []
    for i in range(n):
        assert tx.submit(b"m%d" % i, 1.0) == i  # the sequence number, taken at submit
        frames.extend(tx.ready(1.0))
    assert len(frames) == n - n % BATCH  # full batches leave at once
    frames.extend(tx.ready(1.0 + DEADLINE))  # the rest at the deadline
    assert signer_of(tx).batches_signed == math.ceil(n / BATCH)
    assert [Header.decode_untrusted(f).seq for f in frames] == list(range(n))
    opened = [o for f in frames for o in rx.receive(f, 1.1)]
    assert [o.data for o in opened] == [b"m%d" % i for i in range(n)]
    assert rx.counters["auth_failed"] == 0
    verifier = rx.senders[b"sender01"].verifier
    assert isinstance(verifier, BatchVerifier)
    assert verifier.signatures_verified == math.ceil(n / BATCH)


def test_fewer_than_a_batch_leave_once_the_deadline_passes() -> None:
    tx, rx = stream()
    for i, t in enumerate((2.0, 2.01, 2.02)):
        tx.submit(b"m%d" % i, t)
        assert tx.ready(t) == []
    assert tx.get_timer() == pytest.approx(2.0 + DEADLINE)  # from the first packet held
    assert tx.ready(2.0 + DEADLINE - 0.001) == []
    frames = tx.ready(2.0 + DEADLINE)
    assert len(frames) == 3 and tx.get_timer() is None
    assert signer_of(tx).batches_signed == 1
    assert [o.data for f in frames for o in rx.receive(f, 2.1)] == [b"m0", b"m1", b"m2"]


def test_flush_signs_the_open_batch_at_once() -> None:
    tx, rx = stream()
    for i in range(3):
        tx.submit(b"m%d" % i, 0.0)
    frames = tx.flush(0.0)
    assert len(frames) == 3 and tx.get_timer() is None and tx.flush(0.0) == []
    assert signer_of(tx).batches_signed == 1
    assert len([o for f in frames for o in rx.receive(f, 0.0)]) == 3


def test_immediate_signers_keep_one_frame_per_submit() -> None:
    tx, rx = stream("ed25519")
    tx.submit(b"now", 0.0)
    assert tx.get_timer() == -math.inf  # finished and waiting to be taken
    frames = tx.ready(0.0)
    assert len(frames) == 1 and tx.get_timer() is None
    assert [o.data for o in rx.receive(frames[0], 0.0)] == [b"now"]
    # protect() stays immediate for every signer (a batch of one for batchsig)
    batched, rx2 = stream()
    assert [o.data for o in rx2.receive(batched.protect(b"alone", 0.0), 0.0)] == [b"alone"]
    assert signer_of(batched).batches_signed == 1


def test_member_drives_the_batch_deadline_by_its_timer_and_flushes_at_the_end() -> None:
    """The sans-IO member: protect() hands out full batches, handle_timer() closes a late one
    (frames_to_send), flush_sender() the last one; every message reaches bob in order."""
    group = Group(auth="batchsig", auth_options={"batch": BATCH, "deadline": DEADLINE})
    group.join("alice")
    group.join("bob")
    sender = group.add_sender("alice")
    alice, bob = group.members[b"alice"], group.members[b"bob"]
    signer = alice.protectors[sender].signer
    assert isinstance(signer, BatchSigner)
    sent = [b"message %d" % i for i in range(2 * BATCH + 5)]
    out: list[bytes] = []
    start = group.now
    for data in sent[: BATCH + 3]:
        out.extend(alice.protect(sender, data, group.now))
    assert len(out) == BATCH
    assert alice.get_timer() == pytest.approx(start + DEADLINE)
    group.advance(start + DEADLINE)  # fires alice.handle_timer at the deadline
    late = alice.frames_to_send()
    assert [sid for sid, _ in late] == [sender] * 3
    out.extend(frame for _, frame in late)
    for data in sent[BATCH + 3 :]:
        out.extend(alice.protect(sender, data, group.now))
    out.extend(alice.flush_sender(sender, group.now))  # end of stream: the open batch
    assert alice.flush_sender(sender, group.now) == []
    assert signer.batches_signed == 4  # 8 by size, 3 by deadline, 8 by size, 2 flushed
    for frame in out:
        bob.receive_frame(frame, group.now)
    group.pump()
    assert group.delivered("bob") == sent
    assert not group.of_type("bob", ev.AuthFailure)
