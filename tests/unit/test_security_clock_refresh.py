"""Refreshing the loose time synchronisation (rmsec.security.clocks): with clocks that run at
different rates, a composed bound widens by ``2 * drift`` per second, so without refresh a
receiver refuses its senders after ``(max_sync_error - error) / (2 drift)`` seconds.  The
controller re-probes every sender's clock on its timer and members re-ask the controller's
(TIME carries the controller's latest sender bounds), so TESLA keeps verifying for hours.

Everything is sans-IO on simulated time (``ClockedGroup``): two hours take a second or two.
"""

from __future__ import annotations

from typing import Any

import pytest
from rmsec_plugins.auth_tesla import TeslaAuth, TeslaVerifier

from rmsec.interfaces import Rng
from rmsec.security import messages as msg

from .test_security_clocks import ClockedGroup

#: d = ceil(2 * 0.2 / 0.05) + 1 = 9; max_sync_error = rtt = 0.2 s; drift 1e-4 (default):
#: clock_refresh = 0.2 / (8e-4) = 250 s; an unrefreshed bound lasts under 1000 s
OPTIONS = {"interval": 0.05, "rtt": 0.2, "chain_length": 1024}
HOURS_2 = 7200.0
#: true-time rates: controller 1, sender +50 ppm, receiver -40 ppm (any two within 1e-4)
SENDER_RATE, RECEIVER_RATE = 1.00005, 0.99996


class NoRefreshTesla(TeslaAuth):
    """TESLA as before refreshes existed: one bound per sender, never renewed."""

    def __init__(self, *, rng: Rng, options: dict[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        self.clock_refresh = None


def _next_due(group: ClockedGroup) -> float | None:
    """The earliest timer of any party, in true time."""
    dues = []
    for name, member in group.members.items():
        due = member.get_timer()
        if due is not None:
            dues.append((due - group.skew[name]) / group.rate[name])
    due = group.controller.get_timer()
    if due is not None:
        dues.append(due)
    return min(dues, default=None)


def _fire(group: ClockedGroup) -> None:
    if (due := group.controller.get_timer()) is not None and due <= group.t:
        group.controller.handle_timer(group.t)
    group.fire_timers()
    group.settle()


def _burst(group: ClockedGroup, sender_id: bytes, index: int) -> bool:
    """Five messages from alice, then her disclosures: True when bob got all five."""
    alice = group.members["alice"]
    before = len(group.delivered("bob"))
    sent = [f"burst {index} message {k}".encode() for k in range(5)]
    for data in sent:
        group.t += 0.004
        group.deliver(alice.protect(sender_id, data, group.local("alice")), ["bob"])
    for _ in range(60):
        group.t += 0.02
        group.deliver(alice.pending_auth(sender_id, group.local("alice")), ["bob"])
        if group.delivered("bob")[before:] == sent:
            return True
    return group.delivered("bob")[before:] == sent


def _run(auth: type[TeslaAuth] | None, *, every: float = 60.0) -> tuple[ClockedGroup, list[tuple[float, bool]]]:
    """Alice (fast clock) sends a burst every ``every`` seconds for two hours to bob (slow
    clock); every party's timers fire on time.  Returns the group and ``(time, delivered)``
    per burst."""
    group = ClockedGroup(latency=0.004, options=OPTIONS, auth=auth)
    start = group.t
    group.join("alice", skew=37.5, rate=SENDER_RATE)
    group.join("bob", skew=1000.0, rate=RECEIVER_RATE)
    sender_id = group.members["alice"].add_sender(stream=10, now=group.local("alice"))
    group.settle()
    results: list[tuple[float, bool]] = []
    next_burst = group.t
    for _ in range(100_000):  # bounded: a few timers per burst period
        if group.t >= start + HOURS_2:
            break
        if group.t >= next_burst:
            results.append((group.t - start, _burst(group, sender_id, len(results))))
            next_burst += every
            continue
        due = _next_due(group)
        step = next_burst if due is None else min(next_burst, due + 1e-6)
        group.t = max(group.t, step)
        _fire(group)
    else:
        raise AssertionError("simulation did not reach two hours")
    return group, results


def _verifier(group: ClockedGroup) -> TeslaVerifier:
    alice_id = next(iter(group.members["alice"].protectors))
    verifier = group.members["bob"].known_senders[alice_id].verifier
    assert isinstance(verifier, TeslaVerifier)
    return verifier


def test_refresh_keeps_tesla_verifying_for_two_hours_across_drifting_clocks() -> None:
    group, results = _run(None)
    assert len(results) >= 119
    assert all(ok for _, ok in results), [t for t, ok in results if not ok][:5]
    assert _verifier(group).stats["unsynchronised"] == 0
    bob = group.members["bob"].stats()
    # re-asked every 125..250 s for two hours (plus the first ask on welcome)
    assert 7200 / 250 <= bob["time_requests"] <= 7200 / 125 + 2
    assert bob["sender_clocks_refreshed"] >= bob["time_requests"] - 2
    controller = group.controller.stats()
    assert controller["clock_probes"] >= 7200 / 62.5 - 1  # every clock_refresh / 4
    # the bound bob holds now is fresh: its width stays far below max_sync_error
    sync = _verifier(group).sync
    assert sync is not None and sync.uncertainty(group.local("bob")) < 0.2 * 0.75


def test_without_refresh_the_bound_widens_until_the_receiver_refuses() -> None:
    group, results = _run(NoRefreshTesla)
    # fine at first, refused once 2 drift t exceeds max_sync_error minus the round trips
    assert all(ok for t, ok in results if t < 600)
    assert not any(ok for t, ok in results if t > 1000)
    assert _verifier(group).stats["unsynchronised"] > 0
    assert group.members["bob"].stats()["time_requests"] == 1
    assert group.controller.stats().get("clock_probes", 0) == 0


def test_controller_reprobes_senders_on_its_timer_and_reports_the_latest_bounds() -> None:
    group = ClockedGroup(latency=0.004, options=OPTIONS)
    controller = group.controller
    assert controller.clock_probe == pytest.approx(250.0 / 4)
    group.join("alice", skew=5.0)
    group.join("bob", skew=-3.0)
    sender_id = group.members["alice"].add_sender(stream=10, now=group.local("alice"))
    group.settle()
    first = controller.senders[sender_id].clock
    assert first is not None
    probes: list[msg.ControlMessage] = []
    for _ in range(10):  # other timers (the policy recheck) may come first
        due = controller.get_timer()
        assert due is not None and due <= 100.0 + 62.5  # the controller started at 100
        group.t = due
        controller.handle_timer(group.t)
        probes = [m for c, data in controller.control_to_send() if data is not None
                  for m in [msg.decode_untrusted(data)] if isinstance(m, msg.MaterialRequest)]
        if probes:
            break
    assert probes == [msg.MaterialRequest(sender_id, (), group.t)]
    assert controller.stats()["clock_probes"] == 1
    assert (nxt := controller.get_timer()) is not None and nxt > group.t
    # the sender answers with its clock alone; the controller keeps the newer bound
    alice = group.members["alice"]
    alice.receive_control(probes[0].encode(), group.local("alice"))
    answers = [msg.decode_untrusted(d) for d in alice.control_to_send()]
    assert len(answers) == 1 and isinstance(answers[0], msg.Material)
    assert answers[0].items == () and answers[0].request_time == group.t
    group.t += 0.008
    controller.receive_control(group.conn["alice"], answers[0].encode(), group.t)
    assert controller.control_to_send() == []  # no SENDER_INFO for a bare probe
    latest = controller.senders[sender_id].clock
    assert latest is not None and latest.at == due and latest.at > first.at
    assert latest.offset == pytest.approx(5.0, abs=0.01)
    # a TIME_REQUEST from bob gets the controller's clock and that bound; alice's own
    # stream is not reported back to her
    controller.receive_control(group.conn["bob"], msg.TimeRequest(9).encode(), group.t)
    controller.receive_control(group.conn["alice"], msg.TimeRequest(4).encode(), group.t)
    replies = {c: msg.decode_untrusted(d) for c, d in controller.control_to_send() if d}
    assert replies[group.conn["bob"]] == msg.Time(
        9, group.t, ((sender_id, (latest.offset, latest.error, latest.at)),))
    assert replies[group.conn["alice"]] == msg.Time(4, group.t, ())


def test_member_refresh_is_jittered() -> None:
    """Each member re-asks 125..250 s after its previous TIME_REQUEST, each at its own time."""
    group = ClockedGroup(latency=0.004, options=OPTIONS)
    names = [f"m{k}" for k in range(8)]
    joined = {}
    for name in names:
        group.join(name, skew=0.0)
        joined[name] = group.t
    again: dict[str, float] = {}
    for _ in range(1000):
        if len(again) == len(names):
            break
        due = _next_due(group)
        assert due is not None
        group.t = due + 1e-6
        _fire(group)
        for name in names:
            if name not in again and group.members[name].stats()["time_requests"] == 2:
                again[name] = group.t - joined[name]
    assert len(again) == len(names)
    assert all(125.0 - 1 <= delay <= 250.0 + 1 for delay in again.values()), again
    assert len({round(delay, 3) for delay in again.values()}) == len(names)  # not in step


def test_a_further_time_of_the_same_answer_only_brings_sender_bounds() -> None:
    group = ClockedGroup(latency=0.004, options=OPTIONS)
    group.join("alice", skew=0.0)
    group.join("bob", skew=0.0)
    sender_id = group.members["alice"].add_sender(stream=10, now=group.local("alice"))
    group.settle()
    bob = group.members["bob"]
    bob.synchronise_clock(group.local("bob"))
    (request,) = [msg.decode_untrusted(d) for d in bob.control_to_send()]
    assert isinstance(request, msg.TimeRequest)
    bob.receive_control(msg.Time(request.request, 500.0, ()).encode(), group.local("bob"))
    clock = bob.clock
    leg = (1.0, 0.01, group.t + 1)
    bob.receive_control(msg.Time(request.request, 500.0, ((sender_id, leg),)).encode(),
                        group.local("bob"))
    assert bob.clock == clock
    known = bob.known_senders[sender_id].leg
    assert known is not None and (known.offset, known.error, known.at) == leg
    # an older bound does not replace a newer one; a TIME of another answer is unexpected
    bob.receive_control(msg.Time(request.request, 500.0, ((sender_id, (2.0, 0.0, 0.0)),))
                        .encode(), group.local("bob"))
    assert bob.known_senders[sender_id].leg == known
    unexpected = bob.stats().get("time_unexpected", 0)
    bob.receive_control(msg.Time(request.request, 501.0, ()).encode(), group.local("bob"))
    assert bob.stats()["time_unexpected"] == unexpected + 1


def test_tesla_refresh_period_follows_its_parameters() -> None:
    def period(**options: Any) -> float | None:
        return TeslaAuth(rng=lambda n: bytes(n), options=options).clock_refresh

    assert period() == pytest.approx(0.2 / 8e-4)
    assert period(drift=1e-5) == pytest.approx(2500.0)
    assert period(drift=1e-6) == 3600.0  # capped
    assert period(drift=0.0) is None  # no drift: a bound never widens
    assert period(synchronized_clocks=True) is None
