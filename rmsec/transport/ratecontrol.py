"""Rate-based congestion control for a stream's source (DESIGN.md §3).

A token bucket paces new data between ``min_rate`` and ``max_rate`` bytes/s.  The rate doubles
per acknowledged window during slow start, grows additively afterwards, and halves on a
congestion flag carried up the tree, at most once per window so one congestion event does not
collapse the rate several times over.
"""

from __future__ import annotations

from rmsec.transport.config import TransportConfig


class RateController:
    __slots__ = (
        "_cfg", "_last_refill", "_recovery_until", "burst", "rate", "slow_start", "tokens",
    )

    def __init__(self, config: TransportConfig, now: float) -> None:
        self._cfg = config
        self.rate = config.start_rate
        self.burst = float(config.mtu * config.ack_window)
        self.tokens = self.burst
        self._last_refill = now
        self.slow_start = True
        self._recovery_until = -1

    def _refill(self, now: float) -> None:
        elapsed = now - self._last_refill
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self._last_refill = now

    def allow(self, size: int, now: float) -> bool:
        """Spend ``size`` bytes of budget if available."""
        self._refill(now)
        if self.tokens >= size - 1e-6:  # tolerate float rounding at the computed deadline
            self.tokens -= size
            return True
        return False

    def deadline(self, size: int) -> float:
        """When ``size`` bytes will be available (no clock needed: tokens accrue from the
        last refill)."""
        deficit = size - self.tokens
        return self._last_refill + max(0.0, deficit) / self.rate

    def on_window_acked(self, next_seq: int) -> None:
        """A whole ack window was acknowledged by every subtree without congestion."""
        cfg = self._cfg
        if self.slow_start:
            self.rate = min(cfg.max_rate, self.rate * 2)
        else:
            self.rate = min(cfg.max_rate, self.rate + cfg.mtu * cfg.ack_window * 4)
        self.burst = max(float(cfg.mtu * cfg.ack_window), self.rate * 0.005)

    def on_congestion(self, next_seq: int) -> None:
        """A subtree flagged congestion; ``next_seq`` is the next sequence to be sent."""
        if next_seq <= self._recovery_until:
            return  # already reacted to this window
        self.slow_start = False
        self.rate = max(self._cfg.min_rate, self.rate / 2)
        self._recovery_until = next_seq + self._cfg.ack_window
