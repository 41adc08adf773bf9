"""A sliding anti-replay window per sender (RFC 4303 §3.4.3 style, as in IPsec ESP).

Sequence numbers of one sender never repeat and, because the transport delivers each stream
in order, normally arrive increasing.  The window remembers the highest number accepted and a
bitmap of the ``size`` numbers below it; anything older than the window, or already marked,
is a replay.  Checking is split from marking so a packet is marked only once it has been
authenticated: a forgery carrying a future number must not shift the window.
"""

from __future__ import annotations

DEFAULT_WINDOW = 1024


class ReplayWindow:
    __slots__ = ("_bits", "highest", "size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("window size must be positive")
        self.size = size
        self.highest = -1
        self._bits = 0  # bit i set: highest - i was accepted

    def fresh(self, seq: int) -> bool:
        """True when ``seq`` has not been accepted and is not too old to tell."""
        if seq > self.highest:
            return True
        offset = self.highest - seq
        if offset >= self.size:
            return False
        return not (self._bits >> offset) & 1

    def mark(self, seq: int) -> None:
        """Record ``seq`` as accepted (call only after :meth:`fresh` and authentication)."""
        if seq > self.highest:
            shift = seq - self.highest
            self._bits = ((self._bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = seq
        else:
            self._bits |= 1 << (self.highest - seq)
