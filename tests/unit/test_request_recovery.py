"""``Member.request_recovery``: a member asks for key recovery explicitly (DESIGN.md §4, "a way
for a member to ask for a key it missed"), sans-IO, with the hand-wired Group of
tests/unit/security_helpers.py."""

from __future__ import annotations

import pytest

from rmsec.errors import LocalError
from rmsec.security import events as ev
from rmsec.security import messages as msg
from tests.unit.security_helpers import Group


def test_a_member_that_missed_rekeys_catches_up_on_request_without_any_traffic() -> None:
    group = Group()
    alice = group.join("alice")
    group.deaf.add(b"alice")  # alice hears nothing on the tree from now on
    group.join("bob")
    group.join("carol")
    assert alice.epoch == 1 and group.controller.epoch == 3
    # Nothing tells alice she is behind: no rekey reached her and no data flows.
    group.advance(group.now + 5.0)
    assert alice.epoch == 1
    assert alice.request_recovery(group.now) is True
    group.pump()
    assert alice.epoch == group.controller.epoch == 3
    assert alice.group_secret == group.controller.scheme.group_secret
    changed = group.of_type("alice", ev.EpochChanged)[-1]
    assert (changed.epoch, changed.recovered) == (3, True)
    assert group.of_type("alice", ev.RecoveryRequested)[-1].why == "asked by the application"
    assert group.controller.stats()["recoveries"] == 1


def test_a_current_member_gets_a_stale_answer_and_stops_asking() -> None:
    group = Group()
    alice = group.join("alice")
    group.join("bob")
    assert alice.request_recovery(group.now, "checking") is True
    group.pump()
    stats = alice.stats()
    assert stats["recoveries_stale"] == 1 and stats.get("recoveries_applied", 0) == 0
    group.advance(group.now + 10.0)  # answered: no retries
    assert alice.stats()["recoveries_requested"] == 1


def test_requests_are_rate_limited_and_retried_once_the_interval_passed() -> None:
    group = Group()
    alice = group.join("alice")
    group.deaf.add(b"alice")
    group.join("bob")
    assert alice.request_recovery(group.now) is True
    sent = alice.control_to_send()  # lost on the way: the controller never sees it
    assert [type(msg.decode_untrusted(m)) for m in sent] == [msg.Recover]
    assert alice.request_recovery(group.now + 0.1) is False  # within recovery_interval
    assert alice.control_to_send() == []
    group.advance(group.now + alice.recovery_interval + 0.01)  # the postponed request goes out
    assert alice.epoch == group.controller.epoch == 2
    assert alice.stats()["recoveries_requested"] == 2


def test_the_join_catch_up_does_not_hold_back_a_recovery_right_after_it() -> None:
    group = Group()
    alice = group.join("alice")
    controller, conn = group.controller, group.conn_of[b"alice"]
    # Bound into the tree, alice asks once for what was rekeyed while she joined (the
    # secure_api catch-up, sent straight on her control link).
    controller.receive_control(conn, msg.Recover(alice.epoch or 0).encode(), group.now)
    group.pump()
    assert alice.stats()["recoveries_stale"] == 1
    group.deaf.add(b"alice")
    group.join("bob")  # alice misses this rekey at once
    assert alice.request_recovery(group.now) is True
    group.pump()
    # Served now, not dropped by the controller's rate limit (and retried a second later).
    assert alice.epoch == controller.epoch == 2
    assert controller.stats()["recoveries"] == 2
    assert controller.stats().get("recoveries_limited", 0) == 0
    # The rate limit still holds against a member that keeps asking.
    controller.receive_control(conn, msg.Recover(controller.epoch).encode(), group.now)
    assert controller.stats()["recoveries_limited"] == 1


def test_only_a_keyed_member_can_ask() -> None:
    group = Group()
    head = group.join("head", roles=msg.Roles.HEAD)
    with pytest.raises(LocalError):
        head.request_recovery(group.now)
    group.disconnect("head")
    alice = group.join("alice")
    alice.leave(group.now)
    with pytest.raises(LocalError):
        alice.request_recovery(group.now)
