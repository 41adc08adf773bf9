"""The sender: source of one stream, and root of the repair tree when it is the first sender."""

from __future__ import annotations

import collections
from collections.abc import Sequence

from rmsec.errors import LocalError
from rmsec.transport.config import TransportConfig
from rmsec.transport.events import StreamConfirmed
from rmsec.transport.inflight import InFlightLimit
from rmsec.transport.node import MULTICAST, Child, Rng, Stream, TreeNode, _State
from rmsec.transport.ratecontrol import RateController
from rmsec.wire.packets import Ack, AckEntry, Addr, Data, DataFlags, Role


class Sender(TreeNode):
    """Fragments messages into a stream, paces it, and frees data only once it is confirmed.

    With an empty ``bootstrap`` this node is the root of the tree: it serves first-level heads
    and receivers directly.  Otherwise it is a secondary sender: it joins the tree like a
    receiver (to hear the others) and sends its own stream to the root, ``bootstrap[0]``,
    which distributes it and acknowledges it on behalf of the whole tree.

    ``delivers=True`` makes the sender also a receiver of the other streams on the tree
    (other senders', the controller's rekeys): it emits ``MessageReceived`` for them, in
    order and exactly once, like a receiver, and is subject to ``receive_buffer``
    back-pressure.  Its own stream is never delivered back to it.
    """

    ROLE = Role.SENDER
    _SOURCE = True

    def __init__(
        self,
        config: TransportConfig,
        *,
        session: bytes,
        node_id: bytes,
        rng: Rng,
        now: float,
        stream: int | None = None,
        bootstrap: Sequence[Addr] = (),
        parent: Addr | None = None,
        delivers: bool = False,
    ) -> None:
        is_root = not bootstrap and parent is None
        super().__init__(
            config, session=session, node_id=node_id, rng=rng, now=now, bootstrap=bootstrap,
            parent=parent, accepts_children=is_root, delivers=delivers,
        )
        if stream is None:  # fold the node id: distinct for distinct ids in practice
            stream = int.from_bytes(node_id[:4], "big") ^ int.from_bytes(node_id[4:], "big")
        self.stream = stream
        self._own = Stream(self.stream, 0, own=True)
        self.streams[self.stream] = self._own
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._rate = RateController(config, now)
        self._rate_mark = config.ack_window
        self._inflight = (
            InFlightLimit(stride=config.ack_window, min_packets=8 * config.ack_window,
                          queue_target=config.queue_target)
            if config.queue_target > 0 else None
        )
        #: a secondary sender's view of what the root has seen of its stream (root acks)
        self._root_seen: int | None = None
        self._closing = False
        self.confirmed = False
        self._root_floor = 0
        self._root_congested = False
        self._root_child: Child | None = None
        if is_root:
            self._state = _State.ROOT
        else:
            root = bootstrap[0] if bootstrap else parent
            assert root is not None
            self._own.source_addr = root
            self._root_child = Child(b"\0" * 8, root, Role.HEAD, now)
            self.start(now)

    # ------------------------------------------------------------------ commands

    @property
    def writable(self) -> bool:
        """False while more than two caches' worth of packets wait to be sent."""
        return len(self._pending) < 2 * self.config.cache_packets

    @property
    def next_seq(self) -> int:
        return self._own.window.base + len(self._pending)

    def send(self, data: bytes, now: float) -> int:
        """Queue one message; returns the sequence number of its first packet."""
        if self._closing:
            raise LocalError("send() after close(): the stream has ended")
        if len(data) > self.config.max_message:
            raise LocalError(
                f"message of {len(data)} bytes exceeds max_message={self.config.max_message}"
            )
        first = self.next_seq
        size = self.config.payload_size
        if len(data) <= size:  # the common case: one packet, no slicing
            self._pending.append((DataFlags.FIRST | DataFlags.LAST, bytes(data)))
            self.counters["messages_sent"] += 1
            self.counters["bytes_sent"] += len(data)
            return first
        count = -(-len(data) // size)
        view = memoryview(data)
        for i in range(count):
            flags = (DataFlags.FIRST if i == 0 else 0) | (DataFlags.LAST if i == count - 1 else 0)
            self._pending.append((flags, bytes(view[i * size : (i + 1) * size])))
        self.counters["messages_sent"] += 1
        self.counters["bytes_sent"] += len(data)
        return first

    def close(self, now: float) -> None:
        """End the stream: an END marker follows the last packet; hellos announce the end."""
        if self._closing:
            return
        self._closing = True
        self._pending.append((DataFlags.END, b""))
        self._own.window.end = self.next_seq

    # ------------------------------------------------------------------ sending

    def _source_floor(self) -> int:
        """Lowest sequence some first-level subtree still lacks."""
        if self._root_child is not None:
            return self._root_floor
        live = [c.subtree_base(self._own) for c in self.children.values() if not c.skipping]
        return min(live) if live else self._own.window.base

    def _floor(self, stream: Stream) -> int:
        if stream is self._own:
            return self._source_floor()
        return super()._floor(stream)

    def _hello_targets(self) -> list[Addr]:
        if self._root_child is not None:  # tell the root how far our stream extends
            return [self._root_child.addr]
        return super()._hello_targets()

    def _has_hello_targets(self) -> bool:
        return self._root_child is not None or bool(self.children)

    def _own_stream(self) -> Stream:
        return self._own

    def _window_open(self) -> bool:
        return self._own.window.base < self._send_limit()

    def _send_limit(self) -> int:
        """One past the highest sequence that may go out now: the cache window beyond the
        slowest subtree's floor, and the in-flight bound beyond what the children have seen."""
        limit = self._source_floor() + self.config.cache_packets
        if self._inflight is not None:
            seen = self._seen_by_children()
            if seen is not None:
                bound = self._inflight.limit(seen)
                if bound is not None and bound < limit:
                    limit = bound
        return limit

    def _seen_by_children(self) -> int | None:
        """The lowest ``next_known`` among first-level children that keep up (for a
        secondary sender: the root's).  A child far behind (half a cache window) is left to
        the slow-receiver policy and the cache window: bounding the whole group by it would
        turn ``prune`` into ``block``."""
        if self._root_child is not None:
            return self._root_seen
        sid, base = self._own.id, self._own.window.base
        lagging = base - self.config.cache_packets // 2
        seen: int | None = None
        for child in self.children.values():
            ack = child.acks.get(sid)
            if ack is None or child.skipping or ack.next_known < lagging:
                continue
            if seen is None or ack.next_known < seen:
                seen = ack.next_known
        return seen

    def _produce(self, now: float) -> None:
        own = self._own
        w = own.window
        sent = 0
        if self._pending and self._state != _State.CLOSED:
            limit = self._send_limit()
            session, sid = self.session, own.id
            if self._root_child is not None:
                targets: list[Addr] = [self._root_child.addr]
            elif self.config.multicast:
                targets = [MULTICAST] if self.children else []
            else:
                targets = list(self.children)
            out = self._out
            inflight, stride = self._inflight, self.config.ack_window
            while self._pending and w.base < limit:
                flags, payload = self._pending[0]
                if not self._rate.allow(len(payload) + 40, now):
                    break
                self._pending.popleft()
                seq = w.base
                raw = Data(session, sid, seq, flags, payload).encode()
                own.cache[seq] = raw
                w.base = w.next_known = seq + 1
                for addr in targets:
                    out.append((raw, addr))
                sent += 1
                if inflight is not None and seq % stride == 0:
                    inflight.on_sent(seq, now)
            if sent:
                self.counters["data_sent"] += sent
                self._deadline_tail_hello = now + 2 * self.config.ack_interval
                self._deadline_poll = None
                self._release(own)
        self._check_confirmed(now)

    def _source_timer(self) -> float | None:
        if not self._pending or self._state == _State.CLOSED or not self._window_open():
            return None
        return self._rate.deadline(len(self._pending[0][1]) + 40)

    def _check_confirmed(self, now: float) -> None:
        done = self._closing and not self._pending and self._source_floor() >= self._own.window.end
        if done and not self.confirmed:
            self.confirmed = True
            self._emit(StreamConfirmed(self.stream))

    def _after_acks(self, congested: bool, now: float) -> None:
        floor = self._source_floor()
        if congested:
            self._rate.on_congestion(self._own.window.base)
        elif floor >= self._rate_mark:
            self._rate.on_window_acked(floor)
            self._rate_mark = floor + self.config.ack_window
        self._release(self._own)
        self._check_confirmed(now)

    # ------------------------------------------------------------------ acknowledgements

    def _on_ack(self, p: Ack, raw: bytes, addr: Addr, now: float) -> None:
        super()._on_ack(p, raw, addr, now)
        if self._root_child is None and addr in self.children:
            if self._inflight is not None:
                seen = self._seen_by_children()
                if seen is not None:
                    self._inflight.on_seen(seen, now)
            self._after_acks(any(c.congested for c in self.children.values()), now)

    def _on_root_ack(self, own: Stream, entry: AckEntry, congested: bool, addr: Addr, now: float) -> None:
        child = self._root_child
        assert child is not None
        child.last_heard = now
        self._root_floor = entry.subtree_base
        if self._inflight is not None:
            self._root_seen = entry.next_known
            self._inflight.on_seen(entry.next_known, now)
        self._repair(child, own, entry, now)
        self._after_acks(congested, now)

    def _maintenance(self, now: float) -> None:
        super()._maintenance(now)
        self._check_confirmed(now)
