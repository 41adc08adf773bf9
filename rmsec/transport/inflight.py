"""How far a source may run ahead of what its first-level children have *seen*.

The cache window (``cache_packets`` beyond the slowest subtree's floor) bounds what a source
must keep for repairs; it does not bound the queue in front of a child.  A source that can
send faster than a child reads fills that child's socket buffer, and every repair then waits
behind the whole queue: on loopback the repair round trip grew from well under a millisecond
to 7-12 ms, the repair suppression interval grew with it, and a lost repair stalled the window
(docs/bench-transport.md).  TCP's answer is a congestion window near the bandwidth-delay
product (BBR: the delivery rate times the minimum round trip); this is the same for a
multicast source, measured on what the children acknowledge as seen (``next_known``):

    in flight  <=  max(min_packets, rate x (2 x min_rtt + queue_target))

``rate`` is the children's delivery rate (packets/s, smoothed), ``min_rtt`` the smallest
time from sending a packet to a child's acknowledgement that it was seen (its queue empty,
forgotten after ``MIN_RTT_WINDOW`` seconds, so a route change is learnt), and
``queue_target`` how much queueing the source accepts in front of its children.  While the
children keep up, the bound grows by ``(2 x min_rtt + queue_target) / rtt`` per round trip,
so it never holds a source back for long; when they do not, the queue in front of them stays
near ``queue_target``.  Until both are measured there is no bound beyond the cache window.
"""

from __future__ import annotations

import collections

#: Seconds after which the smallest round trip seen is forgotten and measured again.
MIN_RTT_WINDOW = 10.0
#: Seconds of acknowledgements a delivery-rate sample spans at least.
RATE_SPAN = 0.01


class InFlightLimit:
    """Sans-IO: told what was sent and what the children saw, answers how far to go."""

    __slots__ = (
        "_marks", "_min_rtt_at", "_rate_from", "_stride", "min_packets", "min_rtt",
        "queue_target", "rate",
    )

    def __init__(self, *, stride: int, min_packets: int, queue_target: float) -> None:
        self._stride = stride
        self.min_packets = min_packets
        self.queue_target = queue_target
        #: (seq, sent at) for every ``stride``-th packet not yet seen by every child
        self._marks: collections.deque[tuple[int, float]] = collections.deque()
        self.min_rtt = float("inf")
        self._min_rtt_at = 0.0
        self.rate = 0.0
        self._rate_from: tuple[float, int] | None = None

    def on_sent(self, seq: int, now: float) -> None:
        if seq % self._stride == 0:
            self._marks.append((seq, now))
            if len(self._marks) > 1 << 16:  # children silent for very long: keep it bounded
                self._marks.popleft()

    def on_seen(self, seen: int, now: float) -> None:
        """The children have all seen everything below ``seen``."""
        marks = self._marks
        sent_at = None
        while marks and marks[0][0] < seen:
            sent_at = marks.popleft()[1]
        if sent_at is not None:
            sample = now - sent_at
            if sample < self.min_rtt or now - self._min_rtt_at > MIN_RTT_WINDOW:
                self.min_rtt = sample
                self._min_rtt_at = now
        start = self._rate_from
        if start is None or seen < start[1]:
            self._rate_from = (now, seen)
        elif now - start[0] >= RATE_SPAN:
            sample_rate = (seen - start[1]) / (now - start[0])
            # Rises at once (a faster path is real), falls smoothly (one quiet span is not).
            self.rate = sample_rate if sample_rate > self.rate else 0.75 * self.rate + 0.25 * sample_rate
            self._rate_from = (now, seen)

    def limit(self, seen: int) -> int | None:
        """The highest sequence (exclusive) the source may send now; ``None``: no bound yet."""
        if self.rate <= 0.0 or self.min_rtt == float("inf"):
            return None
        ahead = int(self.rate * (2 * self.min_rtt + self.queue_target))
        return seen + max(self.min_packets, ahead)
