"""Loose time synchronisation for TESLA receivers (RFC 4082 §2.2).

A TESLA receiver never needs the sender's exact time, only an *upper bound* on it: if the
bound says the key of a packet's interval might already be disclosed, the packet is refused.
The bound comes from one exchange: the receiver notes its local time ``sent_at``, asks the
sender (or a party on the sender's clock, such as a co-located controller) for its time, and
notes ``received_at`` when the answer ``sender_time`` arrives.  The answer was read somewhere
in between, so at any later local time ``t``::

    t + (sender_time - received_at)  <=  sender's time  <=  t + (sender_time - sent_at)

and the bound widens by ``drift`` (relative clock-rate error) per second since the exchange.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class ClockSync:
    """What one synchronisation exchange taught a receiver about the sender's clock."""

    #: sender's time <= local time + offset (at ``at``)
    offset: float
    #: the width of the uncertainty at ``at``: sender's time >= local + offset - error
    error: float
    #: local time of the exchange
    at: float
    #: bound on the relative rate error of the two clocks (100 ppm by default)
    drift: float = 1e-4

    @classmethod
    def from_exchange(
        cls, *, sent_at: float, sender_time: float, received_at: float, drift: float = 1e-4
    ) -> ClockSync:
        """The bound from one request sent at ``sent_at`` and answered at ``received_at``."""
        return cls(
            offset=sender_time - sent_at, error=max(0.0, received_at - sent_at), at=sent_at,
            drift=drift,
        )

    @classmethod
    def shared_clock(cls, now: float) -> ClockSync:
        """Receiver and sender read the same clock (one process, the simulator, tests)."""
        return cls(offset=0.0, error=0.0, at=now, drift=0.0)

    def sender_time_upper(self, now: float) -> float:
        """The latest the sender's clock can read at local time ``now``."""
        return now + self.offset + self.drift * abs(now - self.at)

    def uncertainty(self, now: float) -> float:
        """How wide the receiver's knowledge of the sender's time is at ``now``."""
        return self.error + 2 * self.drift * abs(now - self.at)
