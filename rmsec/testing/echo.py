"""A tiny sans-IO machine that tests the I/O layer without the transport.

It answers ``ping…`` with ``pong…`` to the source, reports every datagram as a
``MessageReceived`` event, sends what it is told to, and fires timers at the deadlines it is
given, recording when each fired.
"""

from __future__ import annotations

import bisect
from collections import deque

from rmsec.transport.events import Event, MessageReceived
from rmsec.wire.packets import Addr


class EchoMachine:
    def __init__(self, node_id: bytes = b"echo0000", *, event_limit: int | None = None) -> None:
        self.node_id = node_id
        self.received: list[tuple[bytes, Addr, float]] = []
        self.fired: list[float] = []
        self.deadlines: list[float] = []
        self.outbox: list[tuple[bytes, Addr]] = []
        self.events: deque[Event] = deque()
        self.event_limit = event_limit
        self.refused = 0

    # -- commands ------------------------------------------------------------------------------

    def send(self, data: bytes, addr: Addr, now: float) -> None:
        self.outbox.append((data, addr))

    def add_deadline(self, when: float) -> None:
        bisect.insort(self.deadlines, when)

    def clear_deadlines(self) -> None:
        self.deadlines.clear()

    # -- the machine interface -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if self.event_limit is not None and len(self.events) >= self.event_limit:
            self.refused += 1  # back-pressure, as a receiver with a full receive buffer does
            return
        self.received.append((data, addr, now))
        self.events.append(MessageReceived(0, len(self.received), data))
        if data.startswith(b"ping"):
            self.outbox.append((b"pong" + data[4:], addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None

    def handle_timer(self, now: float) -> None:
        while self.deadlines and self.deadlines[0] <= now:
            self.deadlines.pop(0)
            self.fired.append(now)

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def stats(self) -> dict[str, int]:
        return {"received": len(self.received), "fired": len(self.fired), "refused": self.refused}
