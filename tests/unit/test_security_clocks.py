"""Loose time synchronisation through the controller (rmsec.security.clocks): TESLA works in a
secured group whose members' clocks disagree by arbitrary offsets, with no
``synchronized_clocks``; a bound wider than ``max_sync_error`` makes receivers refuse (counted).

The harness below is a controller and members shuttled by hand, like ``security_helpers.Group``,
but every party reads its own clock (true time plus a fixed skew) and every control hop takes
``latency`` seconds, so the round trips the bounds come from have a width.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsec.config import GroupConfig
from rmsec.interfaces import ClockBound, KeyManagement, SourceAuth
from rmsec.security import clocks, sigkeys
from rmsec.security import events as ev
from rmsec.security import messages as msg
from rmsec.security.controller import Controller
from rmsec.security.member import Member

from .security_helpers import CONTROLLER_SEED, SESSION, _Lookup, key_management_class, seeded_rng

#: TESLA with d = ceil(2 * 0.05 / 0.01) + 1 = 11 intervals; max_sync_error = rtt = 0.05 s
TESLA = {"interval": 0.01, "rtt": 0.05, "chain_length": 256}


class _AuthLookup(_Lookup):
    """Plugin lookup handing members a replacement source-auth class (same name)."""

    def __init__(self, scheme: type[KeyManagement], auth: type[SourceAuth] | None) -> None:
        super().__init__(scheme)
        self.auth = auth

    def get_source_auth(self, name: str) -> type[SourceAuth]:
        return self.auth if self.auth is not None else super().get_source_auth(name)


class ClockedGroup:
    """Controller (true time) and members (``rate`` x true time + skew), control hops of
    ``latency``; ``auth`` replaces the source-auth class on every party."""

    def __init__(self, *, latency: float, options: dict[str, Any] | None = None,
                 auth: type[SourceAuth] | None = None) -> None:
        self.rng = seeded_rng(3)
        self.t = 100.0
        self.latency = latency
        scheme = key_management_class()
        self.lookup = _AuthLookup(scheme, auth)
        config = GroupConfig(
            group="g", key_management=scheme.name, source_auth="tesla",
            source_auth_options=dict(TESLA if options is None else options),
            access_policy="open",
        )
        from rmsec import plugins

        self.signing_key = sigkeys.signing_key_from_seed(CONTROLLER_SEED)
        self.controller = Controller(
            config, signing_key=self.signing_key, rng=self.rng, now=self.t, session=SESSION,
            rekey_stream=1, key_management=scheme(rng=self.rng),
            access_policy=plugins.get_access_policy("open")(),
            source_auth=None if auth is None else auth(
                rng=self.rng, options=config.source_auth_options),
        )
        self.members: dict[str, Member] = {}
        self.skew: dict[str, float] = {}
        self.rate: dict[str, float] = {}
        self.conn: dict[str, int] = {}
        self.events: dict[str, list[ev.SecurityEvent]] = {}

    def local(self, name: str) -> float:
        return self.t * self.rate[name] + self.skew[name]

    def join(self, name: str, skew: float, rate: float = 1.0) -> Member:
        member = Member(
            member_id=name.encode(), node_id=self.rng(8), rng=self.rng,
            now=self.t * rate + skew, roles=msg.Roles.RECEIVE | msg.Roles.SEND,
            controller_key=sigkeys.public_key(self.signing_key), plugins=self.lookup,
        )
        self.members[name], self.skew[name], self.events[name] = member, skew, []
        self.rate[name] = rate
        self.conn[name] = len(self.conn) + 1
        self.controller.connection_made(self.conn[name], None, self.t)
        member.start(self.local(name))
        self.settle()
        return member

    def settle(self) -> None:
        by_conn = {c: n for n, c in self.conn.items()}
        for _ in range(50):
            moved = False
            outgoing = [(n, d) for n, m in self.members.items() for d in m.control_to_send()]
            if outgoing:
                moved = True
                self.t += self.latency
                for name, data in outgoing:
                    self.controller.receive_control(self.conn[name], data, self.t)
            replies = [(c, d) for c, d in self.controller.control_to_send() if d is not None]
            rekeys = self.controller.rekeys_to_send()
            if replies or rekeys:
                moved = True
                self.t += self.latency
                for conn, data in replies:
                    name = by_conn[conn]
                    self.members[name].receive_control(data, self.local(name))
                for envelope in rekeys:
                    for name, member in self.members.items():
                        member.receive_rekey(envelope, self.local(name))
            self.drain()
            if not moved:
                return
        raise AssertionError("group did not settle")

    def drain(self) -> None:
        for name, member in self.members.items():
            while (event := member.next_event()) is not None:
                self.events[name].append(event)

    def deliver(self, frames: list[bytes], to: list[str]) -> None:
        for name in to:
            for frame in frames:
                self.members[name].receive_frame(frame, self.local(name))
        self.fire_timers()

    def fire_timers(self) -> None:
        for name, member in self.members.items():
            due = member.get_timer()
            if due is not None and due <= self.local(name):
                member.handle_timer(self.local(name))
        self.drain()

    def delivered(self, name: str) -> list[bytes]:
        return [e.data for e in self.events[name] if isinstance(e, ev.Delivered)]


def _stream(group: ClockedGroup, sender: str, receivers: list[str], count: int) -> list[bytes]:
    """Send ``count`` messages over several intervals, then the disclosures still owed."""
    alice = group.members[sender]
    sender_id = next(iter(alice.protectors))
    sent = [f"message {i}".encode() for i in range(count)]
    for data in sent:
        group.t += 0.004
        group.deliver(alice.protect(sender_id, data, group.local(sender)), receivers)
    for _ in range(100):
        group.t += 0.02
        group.deliver(alice.pending_auth(sender_id, group.local(sender)), receivers)
        if all(group.delivered(r) == sent for r in receivers):
            break
    return sent


def test_tesla_verifies_across_skewed_clocks_without_synchronized_clocks() -> None:
    group = ClockedGroup(latency=0.004)  # each bound: 2 round trips = 16 ms < 50 ms
    group.join("alice", skew=37.5)
    group.join("bob", skew=1000.0)
    alice = group.members["alice"]
    alice.add_sender(stream=10, now=group.local("alice"))
    group.settle()
    group.join("carol", skew=-250.0)  # joins late: her bound comes from a fresh round trip
    for name in ("bob", "carol"):
        member = group.members[name]
        assert member.clock is not None and member.stats()["time_synchronised"] == 1
        # the controller's clock is true time: the offset undoes the member's skew
        assert member.clock.offset == pytest.approx(-group.skew[name], abs=0.02)
    sent = _stream(group, "alice", ["bob", "carol"], 60)
    for name in ("bob", "carol"):
        assert group.delivered(name) == sent
        stats = group.members[name].stats()
        assert stats.get("data_auth_failed", 0) == 0
    assert group.controller.stats()["time_requests"] == 3


def test_too_slow_round_trips_are_refused_and_counted() -> None:
    group = ClockedGroup(latency=0.02)  # 2 round trips = 80 ms > max_sync_error 50 ms
    group.join("alice", skew=-5.0)
    group.join("bob", skew=1000.0)
    alice = group.members["alice"]
    alice.add_sender(stream=10, now=group.local("alice"))
    group.settle()
    bob = group.members["bob"]
    assert bob.clock is not None and bob.clock.error == pytest.approx(0.04)
    _stream(group, "alice", ["bob"], 20)
    assert group.delivered("bob") == []
    assert bob.stats()["data_auth_failed"] >= 20
    verifier = bob.known_senders[next(iter(alice.protectors))].verifier
    from rmsec_plugins.auth_tesla import TeslaVerifier

    assert isinstance(verifier, TeslaVerifier) and verifier.stats["unsynchronised"] >= 20
    assert any(isinstance(e, ev.AuthFailure) for e in group.events["bob"])


def test_a_wider_max_sync_error_accepts_the_same_slow_group() -> None:
    group = ClockedGroup(latency=0.02, options={**TESLA, "rtt": 0.1})
    group.join("alice", skew=-5.0)
    group.join("bob", skew=1000.0)
    group.members["alice"].add_sender(stream=10, now=group.local("alice"))
    group.settle()
    sent = _stream(group, "alice", ["bob"], 20)
    assert group.delivered("bob") == sent


def test_synchronized_clocks_needs_no_exchange() -> None:
    group = ClockedGroup(latency=0.001, options={**TESLA, "synchronized_clocks": True})
    group.join("alice", skew=0.0)
    group.join("bob", skew=0.0)
    assert group.members["bob"].clock is None
    assert group.controller.stats().get("time_requests", 0) == 0


def test_a_time_answer_nobody_asked_for_is_ignored() -> None:
    group = ClockedGroup(latency=0.001)
    group.join("alice", skew=3.0)
    alice = group.members["alice"]
    clock = alice.clock
    alice.receive_control(msg.Time(12345, 0.0).encode(), group.local("alice"))
    assert alice.clock == clock and alice.stats()["time_unexpected"] == 1


@settings(max_examples=200, deadline=None)
@given(
    member_skew=st.floats(-1e5, 1e5), sender_skew=st.floats(-1e5, 1e5),
    lat=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    where=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2),
    later=st.floats(0.0, 10.0),
)
def test_composed_bound_contains_the_senders_clock(
    member_skew: float, sender_skew: float, lat: list[float], where: list[float], later: float
) -> None:
    """Whatever the skews and latencies, and wherever in its round trip each party read its
    clock, the composed bound holds the sender's true clock (clocks without drift here;
    what drift adds over ``age`` and since ``at`` is the method's to widen)."""
    t = 1000.0
    # controller -> sender: MATERIAL_REQUEST at t, sender reads during the trip, back at t2
    request_time = t
    sender_reading = sender_skew + t + lat[0] * where[0]
    t2 = t + lat[0] + lat[1]
    leg = clocks.sender_leg(request_time=request_time, sender_time=sender_reading, now=t2)
    assert leg is not None
    # member -> controller: TIME_REQUEST sent at true time t2, controller reads during the trip
    sent_at = t2 + member_skew
    controller_time = t2 + lat[2] * where[1]
    received_at = t2 + lat[2] + lat[3] + member_skew
    bound = clocks.compose(
        clocks.from_exchange(sent_at=sent_at, peer_time=controller_time, received_at=received_at),
        leg,
    )
    true = t2 + later
    local = true + member_skew
    sender_now = true + sender_skew
    slack = 1e-6 * (abs(member_skew) + abs(sender_skew) + 1)
    assert sender_now <= local + bound.offset + slack
    assert sender_now >= local + bound.offset - bound.error - slack
    assert bound.error == pytest.approx(sum(lat), abs=1e-9)


def test_sender_leg_refuses_impossible_echoes() -> None:
    assert clocks.sender_leg(request_time=10.0, sender_time=5.0, now=9.0) is None  # future
    assert clocks.sender_leg(request_time=0.0, sender_time=5.0, now=1e5) is None  # too old
    assert clocks.sender_leg(request_time=9.0, sender_time=5.0, now=9.5) == ClockBound(
        offset=-4.0, error=0.5, at=9.0)
