"""Loose time synchronisation through the controller, for source-authentication methods
whose security rests on time (TESLA, RFC 4082 §3.3.1), sans-IO.

The controller is the group's time reference and measures nothing itself; it only takes part
in two round trips over TLS (authenticated, ordered, so no signature or nonce is needed):

- member → controller: TIME_REQUEST sent at the member's ``sent_at``, TIME carrying the
  controller's clock, received at ``received_at``.  The controller read its clock in between,
  so the member knows the controller's clock to within that round trip
  (:func:`from_exchange`);
- controller → sender: MATERIAL_REQUEST carries the controller's clock ``request_time``, the
  sender's MATERIAL answer carries it back with the sender's own clock ``sender_time``, and
  the controller receives it at ``now``: the sender read its clock in between, so the
  controller knows the sender's clock to within that round trip (:func:`sender_leg`, sent to
  members in SENDER_INFO).  Every SENDER_INFO follows such a round trip, so a member
  joining late gets a fresh bound.

A member composes the two (:func:`compose`): a bound on the sender's clock whose width is the
sum of both round trips, plus what clock drift may have added between the two measurements
(left to the method, which knows its drift bound: :class:`~rmsec.interfaces.ClockBound`).

Bounds widen with drift, so both legs are re-measured on timers (``SourceAuth.
clock_refresh``): the controller probes every sender with a MATERIAL_REQUEST naming no member
and keeps the latest leg per sender; members re-send TIME_REQUEST (jittered) and the TIME
carries the controller's latest legs, which they compose again (docs/protocol.md, "Refresh").

The sender's own claim about its clock is trusted: a sender that lies about it only weakens
the authentication of its own stream, which it could as well publish its keys.
"""

from __future__ import annotations

from rmsec.interfaces import ClockBound

#: A round trip wider than this (seconds) is useless to any method and is dropped.
MAX_ROUND_TRIP = 3600.0


def from_exchange(*, sent_at: float, peer_time: float, received_at: float) -> ClockBound:
    """The bound on a peer's clock from one request sent at ``sent_at`` and answered (with
    the peer's reading ``peer_time``) at ``received_at``, all but ``peer_time`` local."""
    return ClockBound(
        offset=peer_time - sent_at, error=max(0.0, received_at - sent_at), at=sent_at
    )


def sender_leg(*, request_time: float, sender_time: float, now: float) -> ClockBound | None:
    """The controller's bound on a sender's clock from a MATERIAL_REQUEST sent at
    ``request_time`` and answered with ``sender_time`` at ``now`` (controller clock); None
    when the echoed request time cannot be right or the round trip is too wide."""
    if not request_time <= now <= request_time + MAX_ROUND_TRIP:
        return None
    return from_exchange(sent_at=request_time, peer_time=sender_time, received_at=now)


def compose(controller: ClockBound, leg: ClockBound) -> ClockBound:
    """A member's bound on a sender's clock from its bound on the controller's clock
    (``controller``, member time) and the controller's bound on the sender's (``leg``,
    controller time).

    At member time ``controller.at`` the controller read within ``[at + o1 - e1, at + o1]``;
    at that reading the sender's clock was within ``[c + o2 - e2, c + o2]`` up to the drift
    accumulated since ``leg.at``, which is at most ``age`` seconds away.
    """
    latest = controller.at + controller.offset
    age = max(abs(latest - leg.at), abs(latest - controller.error - leg.at))
    return ClockBound(
        offset=controller.offset + leg.offset,
        error=controller.error + leg.error,
        at=controller.at,
        age=controller.age + leg.age + age,
    )
