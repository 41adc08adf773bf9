"""Packet protection: seal, source-auth, replay, epochs with grace, bounded future buffer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsec.errors import AuthenticationFailed, LocalError
from rmsec.interfaces import Verified, Verifier
from rmsec.security.aead import AEADS, TAG_LEN, derive_traffic_key
from rmsec.security.protection import HEADER_LEN, Header, Kind, Limits
from rmsec.security.replay import ReplayWindow
from tests.unit.security_helpers import SESSION, Pair


@pytest.mark.parametrize("aead", sorted(AEADS))
@pytest.mark.parametrize("auth", ["ed25519", "groupmac"])
def test_round_trip_encrypted_and_plaintext(aead: str, auth: str) -> None:
    pair = Pair(auth=auth, aead=aead)
    pair.epoch(1, 0.0)
    pair.know_sender()
    secret = pair.tx.protect(b"secret quote", 0.0)
    public = pair.tx.protect(b"public notice", 0.0, encrypt=False)
    assert b"secret quote" not in secret
    assert b"public notice" in public  # authenticated plaintext travels in the clear
    opened = pair.rx.receive(secret, 0.1) + pair.rx.receive(public, 0.1)
    assert [(o.data, o.encrypted, o.epoch, o.seq) for o in opened] == [
        (b"secret quote", True, 1, 0), (b"public notice", False, 1, 1)]
    assert pair.rx.counters["delivered"] == 2
    assert pair.rx.counters["delivered_plaintext"] == 1


def test_frame_layout() -> None:
    pair = Pair(auth="groupmac")
    pair.epoch(7, 0.0)
    frame = pair.tx.protect(b"x" * 10, 0.0)
    header = Header.decode_untrusted(frame)
    assert (header.kind, header.epoch, header.sender_id, header.seq) == (Kind.DATA, 7, b"sender01", 0)
    assert header.body_len == 10 + TAG_LEN
    trailer = frame[HEADER_LEN + header.body_len :]
    assert len(trailer) == 18  # groupmac: CBOR [16-byte tag]


def test_traffic_keys_follow_hkdf_and_separate_senders_and_epochs() -> None:
    algorithm = AEADS["aes-128-gcm"]
    secret = b"\x01" * 32
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    okm = HKDF(hashes.SHA256(), 28, b"rmsec epoch v1\x00" + SESSION + (3).to_bytes(8, "big"),
               b"rmsec traffic v1\x00" + bytes([1, 8]) + b"sender01").derive(secret)
    key = derive_traffic_key(algorithm, secret, session=SESSION, epoch=3, sender_id=b"sender01")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = (int.from_bytes(okm[16:], "big") ^ 5).to_bytes(12, "big")
    assert key.seal(5, b"m", b"ad") == AESGCM(okm[:16]).encrypt(nonce, b"m", b"ad")
    other_sender = derive_traffic_key(algorithm, secret, session=SESSION, epoch=3, sender_id=b"sender02")
    other_epoch = derive_traffic_key(algorithm, secret, session=SESSION, epoch=4, sender_id=b"sender01")
    sealed = key.seal(0, b"m", b"")
    for wrong in (other_sender, other_epoch):
        with pytest.raises(AuthenticationFailed):
            wrong.open(0, sealed, b"")


@pytest.mark.parametrize("where", ["header", "body", "trailer", "plain-body"])
def test_tampering_is_dropped_and_counted(where: str) -> None:
    pair = Pair(auth="ed25519")
    pair.epoch(1, 0.0)
    pair.know_sender()
    frame = bytearray(pair.tx.protect(b"hello world", 0.0, encrypt=where != "plain-body"))
    index = {"header": 5, "body": HEADER_LEN + 2, "trailer": len(frame) - 3,
             "plain-body": HEADER_LEN + 1}[where]
    frame[index] ^= 0x01
    assert pair.rx.receive(bytes(frame), 0.1) == []
    assert pair.rx.counters["auth_failed"] + pair.rx.counters["malformed"] == 1
    assert pair.rx.counters["delivered"] == 0


def test_insider_forgery_with_group_key_fails_under_ed25519_but_not_groupmac() -> None:
    """A member holds the group secret (so it can make AEAD-valid frames) but not the
    sender's signing key: ed25519 rejects its forgery; groupmac, by design, cannot."""
    for auth, accepted in (("ed25519", False), ("groupmac", True)):
        pair = Pair(auth=auth)
        pair.epoch(1, 0.0)
        pair.know_sender()
        # The insider rebuilds the sender's stream key from the group secret it holds.
        from rmsec.security.epochs import EpochKeys
        from rmsec.security.protection import StreamProtector

        insider_keys = EpochKeys(pair.algorithm, SESSION, grace=2.0)
        insider_keys.install(1, pair.secret(1), 0.0)
        if auth == "groupmac":  # every member's material is the MAC key: it can sign too
            import cbor2
            from rmsec_plugins.auth_groupmac import GroupMacSigner

            _, mac_key = cbor2.loads(pair.signer.material_for(b"insider"))
            forger_signer = GroupMacSigner(mac_key, pair.sender_id, 16)
        else:  # its own key pair, claiming the sender's id
            forger_signer = pair.auth.signer(sender_id=pair.sender_id, now=0.0)
        forger = StreamProtector(insider_keys, forger_signer, pair.sender_id, start_seq=100)
        opened = pair.rx.receive(forger.protect(b"sell everything", 0.0), 0.1)
        assert bool(opened) is accepted, auth
        if not accepted:
            assert pair.rx.counters["auth_failed"] == 1


@pytest.mark.parametrize("auth", ["ed25519", "emss"])
def test_forged_auth_frame_does_not_burn_the_senders_sequence_numbers(auth: str) -> None:
    """An insider can make AEAD-valid AUTH frames (it holds the group key) under the
    sender's id and its next sequence numbers; the sender's real DATA with those numbers
    must still be delivered."""
    from rmsec.security.epochs import EpochKeys

    pair = Pair(auth=auth)
    pair.epoch(1, 0.0)
    pair.know_sender()
    insider_keys = EpochKeys(pair.algorithm, SESSION, grace=2.0)
    insider_keys.install(1, pair.secret(1), 0.0)
    assert insider_keys.current is not None
    key = insider_keys.current.key(pair.sender_id)
    start = pair.tx.next_seq
    for seq in range(start, start + 3):
        extra = b"\x83\x01\x02\x03forged authentication packet"
        header = Header(Kind.AUTH, 0, pair.algorithm.code, 1, pair.sender_id, seq,
                        len(extra) + TAG_LEN).encode()
        pair.rx.receive(header + extra + key.tag(seq, header + extra), 0.01)
    assert pair.rx.counters["delivered"] == 0
    delivered = []
    for i in range(3):
        delivered += pair.rx.receive(pair.tx.protect(f"m{i}".encode(), 0.02), 0.03)
        delivered += [o for f in pair.tx.pending(0.02) for o in pair.rx.receive(f, 0.03)]
    # late-verifying methods release on their next packets: flush them
    for t in (0.5, 1.0, 2.0):
        for f in pair.tx.pending(t):
            delivered += pair.rx.receive(f, t)
    assert [o.data for o in delivered] == [b"m0", b"m1", b"m2"]
    assert [o.seq for o in delivered] == [start, start + 1, start + 2]


def test_replayed_data_is_rejected_and_counted() -> None:
    pair = Pair(auth="groupmac")
    pair.epoch(1, 0.0)
    pair.know_sender()
    frames = [pair.tx.protect(f"m{i}".encode(), 0.0) for i in range(3)]
    for frame in frames:
        assert len(pair.rx.receive(frame, 0.1)) == 1
    for frame in frames:
        assert pair.rx.receive(frame, 0.2) == []
    assert pair.rx.counters["replayed"] == 3


def test_previous_epoch_accepted_only_within_grace() -> None:
    pair = Pair(auth="groupmac", grace=2.0)
    pair.epoch(1, 0.0)
    pair.know_sender()
    late = [pair.tx.protect(b"late-1", 0.0), pair.tx.protect(b"late-2", 0.0)]
    pair.epoch(2, 10.0, tx=False)  # the receiver moved on first
    assert [o.data for o in pair.rx.receive(late[0], 11.0)] == [b"late-1"]
    assert pair.rx.receive(late[1], 12.5) == []  # grace over
    assert pair.rx.counters["stale_epoch"] == 1
    pair.rx_keys.handle_timer(12.5)
    assert pair.rx_keys.previous is None  # the old secret is gone, not merely unused


def test_future_epoch_buffered_then_released_on_rekey() -> None:
    pair = Pair(auth="ed25519")
    pair.epoch(1, 0.0)
    pair.know_sender()
    pair.epoch(2, 1.0, rx=False)  # the sender heard the rekey first
    early = pair.tx.protect(b"epoch two data", 1.0)
    assert pair.rx.receive(early, 1.1) == []
    assert pair.rx.highest_future_epoch == 2
    pair.rx_keys.install(2, pair.secret(2), 1.2)
    assert [o.data for o in pair.rx.release(1.2)] == [b"epoch two data"]
    assert pair.rx.highest_future_epoch is None


def test_future_buffer_is_bounded_and_expires() -> None:
    limits = Limits(future_frames=4, future_bytes=10_000, future_timeout=5.0)
    pair = Pair(auth="groupmac", limits=limits)
    pair.epoch(1, 0.0)
    pair.know_sender()
    pair.epoch(2, 0.0, rx=False)
    for i in range(10):
        pair.rx.receive(pair.tx.protect(bytes(100) + bytes([i]), 0.0), 0.0)
    assert pair.rx.buffered == 4
    assert pair.rx.counters["future_dropped"] == 6
    big = pair.tx.protect(bytes(20_000), 0.0)
    pair.rx.receive(big, 0.0)
    assert pair.rx.buffered == 4
    assert pair.rx.get_timer() == 5.0
    pair.rx.handle_timer(5.0)
    assert pair.rx.buffered == 0
    # Epochs absurdly far ahead are not even buffered.
    pair2 = Pair(auth="groupmac", limits=Limits(max_epochs_ahead=2))
    pair2.epoch(1, 0.0)
    pair2.know_sender()
    pair2.epoch(9, 0.0, rx=False)
    pair2.rx.receive(pair2.tx.protect(b"x", 0.0), 0.0)
    assert pair2.rx.buffered == 0


def test_unknown_sender_buffered_until_its_parameters_arrive() -> None:
    pair = Pair(auth="ed25519", limits=Limits(unknown_frames=2))
    pair.epoch(1, 0.0)
    frames = [pair.tx.protect(f"m{i}".encode(), 0.0) for i in range(3)]
    for frame in frames:
        assert pair.rx.receive(frame, 0.0) == []
    assert pair.rx.counters["unknown_dropped"] == 1
    assert pair.know_sender(0.5) == [b"m1", b"m2"]


class _RecordingVerifier(Verifier):
    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.calls = 0

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        self.calls += 1
        if not self.accept:
            raise AuthenticationFailed("no")
        return [Verified(packet, trailer)]


def test_source_auth_is_checked_before_decryption() -> None:
    pair = Pair(auth="groupmac")
    pair.epoch(1, 0.0)
    refusing = _RecordingVerifier(accept=False)
    pair.rx.add_sender(pair.sender_id, refusing, 0.0)
    frame = bytearray(pair.tx.protect(b"data", 0.0))
    frame[HEADER_LEN] ^= 1  # also break the ciphertext: AEAD must never even be tried
    assert pair.rx.receive(bytes(frame), 0.0) == []
    assert refusing.calls == 1
    assert pair.rx.counters["auth_failed"] == 1 and pair.rx.counters["aead_failed"] == 0


def test_outsider_without_group_secret_fails_aead() -> None:
    pair = Pair(auth="groupmac")
    pair.epoch(1, 0.0)
    pair.rx.add_sender(pair.sender_id, _RecordingVerifier(accept=True), 0.0)
    pair.tx_keys = type(pair.tx_keys)(pair.algorithm, SESSION, grace=1.0)
    outsider_keys = type(pair.tx_keys)(pair.algorithm, SESSION, grace=1.0)
    outsider_keys.install(1, b"\x00" * 32, 0.0)
    pair.tx.keys = outsider_keys
    assert pair.rx.receive(pair.tx.protect(b"spoof", 0.0), 0.0) == []
    assert pair.rx.counters["aead_failed"] == 1


def test_garbage_never_raises() -> None:
    pair = Pair(auth="ed25519")
    pair.epoch(1, 0.0)
    pair.know_sender()
    for junk in (b"", b"\x01" * 27, b"\x02" + bytes(40), bytes(HEADER_LEN) + b"x" * 30, b"\xff" * 100):
        assert pair.rx.receive(junk, 0.0) == []
    assert pair.rx.counters["malformed"] >= 4


def test_protect_before_keys_is_a_local_error() -> None:
    pair = Pair()
    with pytest.raises(LocalError):
        pair.tx.protect(b"x", 0.0)


def test_replay_window() -> None:
    window = ReplayWindow(8)
    for seq in (0, 1, 5, 3):
        assert window.fresh(seq)
        window.mark(seq)
    assert not window.fresh(3) and not window.fresh(5)
    assert window.fresh(4) and window.fresh(2)
    window.mark(20)
    assert not window.fresh(12)  # fell out of the window
    assert window.fresh(13) and not window.fresh(20)
    window.mark(1000)
    assert window.fresh(999) and not window.fresh(992)


_FUZZ_PAIR = Pair(auth="ed25519")
_FUZZ_PAIR.epoch(1, 0.0)
_FUZZ_PAIR.know_sender()
_FUZZ_FRAMES = [_FUZZ_PAIR.tx.protect(b"fuzz me", 0.0), _FUZZ_PAIR.tx.protect(b"plain", 0.0, encrypt=False)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.sampled_from(_FUZZ_FRAMES).flatmap(
    lambda f: st.tuples(st.integers(0, len(f) - 1), st.integers(1, 255)).map(
        lambda t: f[: t[0]] + bytes([f[t[0]] ^ t[1]]) + f[t[0] + 1 :])))
def test_fuzzed_frames_never_raise_and_never_deliver(data: bytes) -> None:
    assert _FUZZ_PAIR.rx.receive(data, 0.0) == []
