"""Controller and members together, sans-IO: admission, rekeys, secrecy, forgery, recovery.

These are the security tests issue 3 asks for, at the level of the state machines: bytes are
moved by hand (tests/unit/security_helpers.py: Group), the clock is a number.
"""

from __future__ import annotations

import cbor2
import pytest

from rmsec import plugins
from rmsec.config import RekeyPolicy
from rmsec.errors import AuthenticationFailed
from rmsec.interfaces import AccessPolicy, Credentials, Decision, KeyManagement
from rmsec.security import events as ev
from rmsec.security import messages as msg
from rmsec.security import sigkeys
from rmsec.security.aead import derive_traffic_key
from rmsec.security.member import State
from rmsec.security.protection import HEADER_LEN, Header, Kind, StreamProtector
from rmsec.security.rekey import EnvelopeKind, RekeyEnvelope
from tests.unit.security_helpers import SESSION, Group, key_management_schemes

FORWARD = key_management_schemes("forward_secrecy")
BACKWARD = key_management_schemes("backward_secrecy")
ALL = key_management_schemes()


def _name(scheme: type[KeyManagement]) -> str:
    return scheme.name


def test_join_welcome_and_encrypted_delivery() -> None:
    group = Group()
    alice = group.join("alice")
    bob = group.join("bob")
    assert alice.state == bob.state == State.MEMBER
    assert alice.epoch == bob.epoch == group.controller.epoch == 2
    assert group.of_type("alice", ev.EpochChanged)[-1].epoch == 2  # rekeyed for bob's join
    sender = group.add_sender("alice")
    assert group.of_type("bob", ev.SenderKnown)[0].owner == b"alice"
    group.send("alice", sender, b"quote 1")
    group.send("alice", sender, b"notice", encrypt=False)
    delivered = group.of_type("bob", ev.Delivered)
    assert [(d.data, d.encrypted, d.owner, d.epoch) for d in delivered] == [
        (b"quote 1", True, b"alice", 2), (b"notice", False, b"alice", 2)]
    assert {type(e) for e in group.controller_events} >= {ev.MemberJoined, ev.RekeyDone, ev.SenderAdded}


def test_unauthorised_join_refused_with_the_policys_reason() -> None:
    allow = plugins.get_access_policy("allowlist")(options={"members": ["alice"]})
    group = Group(policy=allow)
    assert group.join("alice").state == State.MEMBER
    mallory = group.join("mallory")
    assert mallory.state == State.DENIED
    assert mallory.reason == "b'mallory' is not on the allow list of group 'g'"
    assert group.of_type("mallory", ev.Denied)[0].reason == mallory.reason
    assert group.controller.stats()["denied"] == 1
    assert b"mallory" not in group.controller.members


@pytest.mark.parametrize("scheme", FORWARD, ids=_name)
def test_forward_secrecy_evicted_member_keeps_everything_and_reads_nothing_new(
    scheme: type[KeyManagement],
) -> None:
    group = Group(scheme=scheme)
    alice, _bob, eve = group.join("alice"), group.join("bob"), group.join("eve")
    sender = group.add_sender("alice")
    group.send("alice", sender, b"before")
    assert group.delivered("eve") == [b"before"]
    eve_secrets = {eve.epoch: eve.group_secret}
    group.controller.expel(b"eve", "caught cheating", group.now)
    group.pump()
    assert eve.state == State.EXPELLED and eve.reason == "caught cheating"
    # Eve keeps her whole state and hears everything on the tree from now on.
    captured = []
    for i in range(3):
        captured += group.send("alice", sender, f"after {i}".encode(), to=["bob", "eve"])
    assert group.delivered("bob")[-3:] == [b"after 0", b"after 1", b"after 2"]
    assert group.delivered("eve") == [b"before"]
    # Even as a member again in her own machine, and with every secret she ever held, she
    # cannot open a single captured frame: the epoch moved and its secret never reached her.
    eve.state = State.MEMBER
    for frame in captured:
        eve.receive_frame(frame, group.now)
        header = Header.decode_untrusted(frame)
        assert header.epoch > max(eve_secrets)
        for secret in eve_secrets.values():
            key = derive_traffic_key(eve.keys.algorithm, secret, session=SESSION, epoch=header.epoch,
                                     sender_id=header.sender_id)
            with pytest.raises(AuthenticationFailed):
                key.open(header.seq, frame[HEADER_LEN : HEADER_LEN + header.body_len], frame[:HEADER_LEN])
    group.pump()
    assert group.delivered("eve") == [b"before"]
    assert alice.epoch == group.controller.epoch > max(eve_secrets)


@pytest.mark.parametrize("scheme", BACKWARD, ids=_name)
def test_backward_secrecy_new_member_cannot_read_earlier_traffic(scheme: type[KeyManagement]) -> None:
    group = Group(scheme=scheme)
    group.join("alice")
    group.join("bob")
    sender = group.add_sender("alice")
    captured = group.send("alice", sender, b"secret history") + group.send("alice", sender, b"more")
    dave = group.join("dave")
    assert dave.epoch is not None and dave.epoch > Header.decode_untrusted(captured[0]).epoch
    for frame in captured:
        dave.receive_frame(frame, group.now)
        header = Header.decode_untrusted(frame)
        assert dave.group_secret is not None
        key = derive_traffic_key(dave.keys.algorithm, dave.group_secret, session=SESSION,
                                 epoch=header.epoch, sender_id=header.sender_id)
        with pytest.raises(AuthenticationFailed):
            key.open(header.seq, frame[HEADER_LEN : HEADER_LEN + header.body_len], frame[:HEADER_LEN])
    group.pump()
    assert group.delivered("dave") == []
    assert dave.stats()["data_stale_epoch"] == len(captured)
    group.send("alice", sender, b"welcome dave")
    assert group.delivered("dave") == [b"welcome dave"]


def test_insider_forgery_rejected_under_ed25519() -> None:
    group = Group(auth="ed25519")
    group.join("alice")
    bob = group.join("bob")
    carol = group.join("carol")
    sender = group.add_sender("alice")
    # Bob holds the group secret: he can build AEAD-valid frames for alice's sender id, but
    # signs with his own key.
    signer = plugins.get_source_auth("ed25519")(rng=group.rng).signer(sender_id=sender, now=0.0)
    forger = StreamProtector(bob.keys, signer, sender, start_seq=1000)  # type: ignore[arg-type]
    carol.receive_frame(forger.protect(b"alice says: sell", group.now), group.now)
    group.pump()
    assert group.delivered("carol") == []
    assert carol.stats()["data_auth_failed"] == 1
    assert group.of_type("carol", ev.AuthFailure)[0].what == "data"
    group.send("alice", sender, b"alice says: hold")
    assert group.delivered("carol") == [b"alice says: hold"]


def test_frames_that_do_not_open_under_the_group_key_are_auth_failures() -> None:
    group = Group(auth="ed25519")
    group.join("alice")
    bob = group.join("bob")
    sender = group.add_sender("alice")
    assert bob.keys is not None and bob.epoch is not None
    # An outsider (no group key) sends an AUTH frame as alice: it has no source-auth trailer,
    # so only the AEAD under the group key can refuse it.
    header = Header(Kind.AUTH, 0, bob.keys.algorithm.code, bob.epoch, sender, 1000, 40)
    bob.receive_frame(header.encode() + bytes(range(40)), group.now)
    group.pump()
    assert bob.stats()["data_aead_failed"] == 1
    (failure,) = group.of_type("bob", ev.AuthFailure)
    assert failure.what == "aead" and "group key" in failure.detail
    group.send("alice", sender, b"still fine")
    assert group.delivered("bob") == [b"still fine"]
    assert len(group.of_type("bob", ev.AuthFailure)) == 1


def test_groupmac_material_is_relayed_from_the_sender_and_works() -> None:
    group = Group(auth="groupmac", auth_options={"mac_len": 12})
    group.join("alice")
    group.join("bob")
    sender = group.add_sender("alice")
    group.join("carol")  # joins after the sender: gets material through the relay too
    group.send("alice", sender, b"hello")
    assert group.delivered("bob") == group.delivered("carol") == [b"hello"]
    assert group.controller.stats()["sender_info"] == 2


def test_forged_and_replayed_rekeys_rejected_and_counted() -> None:
    group = Group()
    group.join("alice")
    bob = group.join("bob")
    old = group.rekeys[-1]
    group.join("carol")
    epoch = bob.epoch
    before = bob.stats().get("rekeys_replayed", 0)  # bob also heard the rekey of his own join
    bob.receive_rekey(old, group.now)  # genuine but old
    mallory = sigkeys.signing_key_from_seed(b"\x66" * 32)
    forged = RekeyEnvelope.seal(mallory, kind=EnvelopeKind.REKEY, session=SESSION,
                                epoch=epoch + 1, from_epoch=epoch, payload=b"evil")
    bob.receive_rekey(forged, group.now)
    values = cbor2.loads(group.rekeys[-1])
    values[3] += 5  # a genuine envelope with its epoch bumped
    bob.receive_rekey(cbor2.dumps(values), group.now)
    bob.receive_rekey(b"\x84garbage", group.now)
    recovery_for_alice = RekeyEnvelope.seal(group.signing_key, kind=EnvelopeKind.RECOVERY,
                                            session=SESSION, epoch=epoch + 1, from_epoch=0,
                                            payload=b"", member_id=b"alice")
    bob.receive_rekey(recovery_for_alice, group.now)
    group.pump()
    stats = bob.stats()
    assert stats["rekeys_replayed"] - before == 1
    assert stats["rekeys_forged"] == 3
    assert stats["rekeys_malformed"] == 1
    assert bob.epoch == epoch
    assert len(group.of_type("bob", ev.AuthFailure)) == 3


@pytest.mark.parametrize("scheme", ALL, ids=_name)
def test_member_that_missed_a_rekey_recovers_and_keeps_reading(scheme: type[KeyManagement]) -> None:
    group = Group(scheme=scheme)
    group.join("alice")
    carol = group.join("carol")
    sender = group.add_sender("alice")
    group.deaf.add(b"carol")
    group.join("dave")  # carol misses this rekey
    group.deaf.clear()
    assert carol.epoch == group.controller.epoch - 1
    group.join("erin")  # carol hears this one, starting from an epoch she lacks
    assert group.of_type("carol", ev.RecoveryRequested)[0].why == "missed a rekey"
    assert carol.epoch == group.controller.epoch
    assert group.of_type("carol", ev.EpochChanged)[-1].recovered
    group.send("alice", sender, b"still reading")
    assert group.delivered("carol") == [b"still reading"]
    assert group.controller.stats()["recoveries"] == 1


@pytest.mark.parametrize("scheme", ALL, ids=_name)
def test_data_of_a_missed_epoch_triggers_recovery_after_a_delay(scheme: type[KeyManagement]) -> None:
    group = Group(scheme=scheme)
    group.join("alice")
    carol = group.join("carol")
    sender = group.add_sender("alice")
    group.deaf.add(b"carol")
    group.join("dave")
    group.send("alice", sender, b"new epoch data", to=["carol"])
    assert group.delivered("carol") == [] and carol.unprotector is not None
    assert carol.unprotector.highest_future_epoch == group.controller.epoch
    group.advance(group.now + 0.6)  # recovery_delay passes with no rekey in sight
    assert group.delivered("carol") == [b"new epoch data"]
    assert carol.epoch == group.controller.epoch


def test_evicted_member_asking_for_recovery_gets_nothing() -> None:
    group = Group()
    group.join("alice")
    eve = group.join("eve")
    group.controller.expel(b"eve", "bye", group.now)
    group.pump()
    assert eve.state == State.EXPELLED
    # Eve re-opens a connection and asks: she is not a member, the controller refuses.
    group.controller.connection_made(99, None, group.now)
    group.controller.receive_control(99, msg.Recover(0).encode(), group.now)
    assert group.controller.stats()["recoveries_refused"] == 1


@pytest.mark.parametrize("scheme", ALL, ids=_name)
def test_expired_member_expelled_and_group_rekeyed(scheme: type[KeyManagement]) -> None:
    policy = plugins.get_access_policy("open")(options={"valid_for": 10})
    group = Group(policy=policy, scheme=scheme)
    group.join("alice")
    group.now = 5.0
    bob = group.join("bob")  # expires at 15
    epoch = bob.epoch
    group.advance(12.0)
    alice = group.members[b"alice"]
    assert alice.state == State.EXPELLED  # alice expired at 10
    assert alice.reason == "credentials expired"
    assert bob.epoch == epoch + 1  # the group rekeyed without her
    assert any(isinstance(e, ev.MemberExpelled) and e.member_id == b"alice" for e in group.controller_events)
    group.advance(16.0)
    assert bob.state == State.EXPELLED


def test_x509_member_expelled_when_its_certificate_expires(tmp_path: object) -> None:
    import pathlib

    from rmsec.credentials import GroupCA

    wall = 1_900_000_000.0
    ca = GroupCA.create("g", now=wall - 100)
    ca_file = pathlib.Path(str(tmp_path)) / "ca.pem"
    ca_file.write_bytes(ca.certificate)
    x509 = plugins.get_access_policy("x509")(options={"ca": str(ca_file)})
    group = Group(policy=x509, wall_offset=wall)  # now 0.0 is wall-clock 1.9e9
    alice = group.join("alice", certificate=ca.issue("alice", now=wall, days=365).der)
    bob = group.join("bob", certificate=ca.issue("bob", now=wall, days=1).der)
    mallory = group.join("mallory", certificate=ca.issue("bob", now=wall).der)
    assert mallory.state == State.DENIED and "common name 'bob'" in (mallory.reason or "")
    epoch = alice.epoch
    group.advance(86400.0 + 1)
    assert bob.state == State.EXPELLED and bob.reason == "credentials expired"
    assert alice.state == State.MEMBER and alice.epoch == epoch + 1


class _Revocable(AccessPolicy):
    name = "revocable-test"

    def __init__(self) -> None:
        super().__init__()
        self.revoked: set[bytes] = set()

    def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
        if credentials.member_id in self.revoked:
            return Decision(False, "certificate revoked")
        return Decision(True, "ok")


def test_revoked_member_expelled_at_the_next_policy_recheck() -> None:
    policy = _Revocable()
    group = Group(policy=policy)
    group.join("alice")
    bob = group.join("bob")
    epoch = bob.epoch
    policy.revoked.add(b"alice")
    group.advance(group.config.policy_recheck + 1)
    assert group.members[b"alice"].state == State.EXPELLED
    assert group.members[b"alice"].reason == "certificate revoked"
    assert bob.epoch == epoch + 1


def test_batch_policy_groups_changes_into_one_epoch() -> None:
    group = Group(rekey=RekeyPolicy("batch", interval=1.0))
    alice = group.join("alice")
    assert alice.state == State.REGISTERING  # waits for the batch
    group.join("bob")
    group.join("carol")
    group.advance(1.0)
    assert {m.epoch for m in group.members.values()} == {1}
    group.disconnect("carol")
    group.join("dave")
    group.advance(1.5)
    assert group.members[b"dave"].state == State.REGISTERING
    group.advance(2.0)
    assert {group.members[m].epoch for m in (b"alice", b"bob", b"dave")} == {2}
    assert group.controller.stats()["rekeys"] == 1


def test_periodic_policy_rekeys_every_period() -> None:
    group = Group(rekey=RekeyPolicy("periodic", interval=5.0))
    group.join("alice")
    group.advance(5.0)
    alice = group.members[b"alice"]
    assert alice.epoch == 1
    group.advance(15.0)
    assert alice.epoch == 3  # two refreshes with nobody joining or leaving


def test_refresh_on_top_of_immediate() -> None:
    group = Group(rekey=RekeyPolicy("immediate", refresh=2.0))
    group.join("alice")
    bob = group.join("bob")
    group.advance(4.5)
    assert bob.epoch == group.controller.epoch == 4


def test_keyless_head_is_admitted_but_holds_no_key() -> None:
    group = Group()
    group.join("alice")
    sender = group.add_sender("alice")
    head = group.join("head-1", roles=msg.Roles.HEAD)
    assert head.state == State.MEMBER and head.group_secret is None
    assert group.of_type("head-1", ev.Welcomed)[0].keyed is False
    group.send("alice", sender, b"not for heads", to=["head-1"])
    assert group.delivered("head-1") == []
    assert group.controller.scheme.members == 1  # the head is not in the key tree


def test_duplicate_member_and_misbehaving_peer() -> None:
    group = Group()
    group.join("alice")
    twin = group.join("alice")
    assert twin.state == State.DENIED and "already a member" in (twin.reason or "")
    group.controller.connection_made(50, None, group.now)
    group.controller.receive_control(50, b"\x82\x01\x10", group.now)  # malformed
    out = group.controller.control_to_send()
    assert out[-1] == (50, None)
    assert group.controller.stats()["protocol_errors"] == 1


def test_leave_rekeys_and_sender_gone_reaches_members() -> None:
    group = Group()
    group.join("alice")
    bob = group.join("bob")
    group.add_sender("alice")
    epoch = bob.epoch
    group.members[b"alice"].leave(group.now)
    group.pump()
    assert bob.epoch == epoch + 1
    assert len(group.of_type("bob", ev.SenderGone)) == 1
    assert any(isinstance(e, ev.MemberLeft) and e.reason == "left" for e in group.controller_events)


AUTH_METHODS = sorted(plugins.plugin_set().source_auth.names())


@pytest.mark.parametrize("auth", AUTH_METHODS)
def test_every_source_auth_method_delivers_through_the_security_core(auth: str) -> None:
    """Frames, extra authentication packets (``Signer.pending``) and delayed releases all
    come through: every receiver gets every message exactly once, in order."""
    # TESLA needs loosely synchronised clocks; here every machine reads the same ``now``.
    options = {"synchronized_clocks": True} if auth == "tesla" else {}
    group = Group(auth=auth, auth_options=options)
    group.join("alice")
    group.join("bob")
    sender = group.add_sender("alice")
    group.join("carol")
    sent = [f"message {i}".encode() for i in range(40)]
    for i, data in enumerate(sent):
        group.send("alice", sender, data, encrypt=i % 5 != 0)
        group.now += 0.01
        group.advance(group.now)
    alice = group.members[b"alice"]
    for _ in range(200):  # keep polling the signer for what it still owes (disclosures)
        group.now += 0.05
        for frame in alice.pending_auth(sender, group.now):
            for name in ("bob", "carol"):
                group.members[name.encode()].receive_frame(frame, group.now)
        group.advance(group.now)
        if group.delivered("bob") == sent and group.delivered("carol") == sent:
            break
    assert group.delivered("bob") == sent
    assert group.delivered("carol") == sent


def test_a_sender_hears_its_result_only_after_the_members_have_its_parameters() -> None:
    """SENDER_RESULT (after which a sender starts sending) follows the SENDER_INFO of every
    member present: frames of a sender a member does not know yet wait in a bounded buffer,
    and a sender starting at full rate used to overflow it (data the transport had already
    delivered was dropped as ``unknown_dropped``)."""
    from rmsec.security import messages as msg

    group = Group()
    for name in ("alice", "bob", "carol"):
        group.join(name)
    sender = group.members[b"alice"]
    conn = group.conn_of[b"alice"]
    sid = sender.add_sender(stream=10, now=group.now)
    for data in sender.control_to_send():
        group.controller.receive_control(conn, data, group.now)
    first = [(c, msg.decode_untrusted(d)) for c, d in group.controller.control_to_send() if d]
    assert [type(m) for _, m in first] == [msg.MaterialRequest]  # no result yet
    sender.receive_control(first[0][1].encode(), group.now)
    for data in sender.control_to_send():
        group.controller.receive_control(conn, data, group.now)
    second = [(c, type(msg.decode_untrusted(d))) for c, d in group.controller.control_to_send() if d]
    infos = [i for i, (_, t) in enumerate(second) if t is msg.SenderInfo]
    results = [i for i, (c, t) in enumerate(second) if t is msg.SenderResult and c == conn]
    assert len(infos) == 2 and len(results) == 1 and max(infos) < results[0]
    assert sid in sender.protectors
