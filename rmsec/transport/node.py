"""The tree node: one sans-IO machine that every transport role is built from.

Rules the machine obeys (TRAM-like, DESIGN.md §3):

1. One repair tree per session.  Its root is the first sender; every other node binds to the
   root or to a repair head after soliciting offers, and remembers the runners-up as backups.
   Every stream (each sender's data, the controller's rekeys) flows down the same tree.
2. A node acknowledges only to its parent: what it holds itself (base + bitmap, which doubles
   as a negative acknowledgement) and what its whole subtree holds (``subtree_base``).  The
   root therefore hears only from its direct children, whatever the group size.
3. A node with children repairs their gaps from its own cache and asks upward only for what it
   lacks itself (its own acknowledgement does that).  A cache entry is freed only once every
   child's subtree holds it; the source frees data only when every first-level subtree has it.
4. New data leaves the source paced by a rate controller and never runs more than
   ``cache_packets`` beyond the slowest subtree, so no head ever has to drop what a child lacks.
5. A member that hears nothing from its head for ``head_timeout`` re-binds to a backup, resuming
   each stream where it stands; its new head refetches from upstream anything it already freed.
6. Nothing from the network can raise out of :meth:`receive_datagram`: malformed datagrams are
   counted and dropped.

Secondary senders send their stream to the root, which acknowledges it like a head would and
distributes it down the tree.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

from rmsec.errors import LocalError, MalformedPacket
from rmsec.transport.config import TransportConfig
from rmsec.transport.events import (
    Bound,
    ChildJoined,
    ChildLost,
    Event,
    GapSkipped,
    HeadLost,
    MemberPruned,
    MessageReceived,
    PrunedByParent,
    StreamEnded,
)
from rmsec.transport.window import ReceiveWindow, missing_from_ack
from rmsec.wire.packets import (
    DECODED,
    MAX_REFERRALS,
    MAX_STREAMS,
    Accept,
    Ack,
    AckEntry,
    AckFlags,
    Addr,
    Bind,
    Data,
    DataFlags,
    Hello,
    JoinPolicy,
    Leave,
    Offer,
    Packet,
    Prune,
    Reason,
    Reject,
    Role,
    Skip,
    Solicit,
    StreamState,
    data_with_flags,
    decode_untrusted,
)

Rng = Callable[[int], bytes]

#: Destination meaning "the data-plane multicast group" (only used when config.multicast).
MULTICAST: Addr = ("<multicast>", 0)

#: How many backups a member remembers, and how many referral rounds a solicitation may walk.
MAX_BACKUPS = 4
MAX_SOLICIT_ROUNDS = 6
#: Most repairs one acknowledgement may trigger towards one child.
MAX_REPAIRS_PER_ACK = 256
#: Unsolicited advertisements back off up to this many times ``advertise_interval``.
ADVERTISE_BACKOFF = 64
#: Only nodes this close to the root advertise unsolicited (see TreeNode._advertise).
ADVERTISE_MAX_LEVEL = 1


class _State:
    UNBOUND = "unbound"
    SOLICITING = "soliciting"
    BINDING = "binding"
    BOUND = "bound"
    ROOT = "root"
    CLOSED = "closed"


class Stream:
    """What one node knows of one stream."""

    __slots__ = (
        "assembling", "cache", "cache_low", "deliver_next", "ended_reported", "floor_gone", "id",
        "msg_bytes", "msg_seq", "own", "parts", "source_addr", "window",
    )

    def __init__(self, stream_id: int, start: int, *, own: bool = False) -> None:
        self.id = stream_id
        self.own = own
        self.window = ReceiveWindow(start)
        self.cache: dict[int, bytes] = {}
        self.cache_low = start
        self.floor_gone = 0
        self.deliver_next = start
        self.assembling = False
        self.parts: list[bytes] = []
        self.msg_seq = 0
        self.msg_bytes = 0
        self.ended_reported = False
        self.source_addr: Addr | None = None

    def reset_position(self, start: int) -> None:
        """Begin (or restart) reception at ``start``, discarding what lies below."""
        w = self.window
        w.held = {q: v for q, v in w.held.items() if q >= start}
        w.base = start
        w.next_known = max(w.next_known, start)
        self.deliver_next = max(self.deliver_next, start)
        self.cache_low = max(self.cache_low, start) if not self.cache else self.cache_low


@dataclasses.dataclass(slots=True)
class ChildAck:
    have_base: int
    bitmap: bytes
    subtree_base: int
    next_known: int


class Child:
    __slots__ = (
        "acks", "addr", "congested", "lag_seen", "lag_since", "last_heard", "members", "node_id", "repaired",
        "role", "rtt", "skipping",
    )

    def __init__(self, node_id: bytes, addr: Addr, role: int, now: float) -> None:
        self.node_id = node_id
        self.addr = addr
        self.role = role
        self.last_heard = now
        self.members = 1
        self.congested = False
        self.acks: dict[int, ChildAck] = {}
        self.repaired: dict[int, dict[int, float]] = {}
        self.lag_since: float | None = None
        self.lag_seen = 0
        self.skipping = False
        self.rtt = 0.0

    def observe_rtt(self, sample: float) -> None:
        """Smoothed repair round trip (EWMA, as TCP's SRTT), capped so one stall cannot
        silence repairs for long."""
        sample = min(sample, 2.0)
        self.rtt = sample if self.rtt == 0.0 else 0.875 * self.rtt + 0.125 * sample

    def subtree_base(self, stream: Stream) -> int:
        ack = self.acks.get(stream.id)
        return ack.subtree_base if ack is not None else 0


@dataclasses.dataclass(slots=True)
class _OfferSeen:
    addr: Addr
    offer: Offer
    rtt: float


class TreeNode:
    """Common machine; :class:`Sender`, :class:`RepairHead` and :class:`Receiver` configure it."""

    ROLE: ClassVar[int] = Role.RECEIVER
    #: Whether _produce / _source_timer do anything (a Sender): skipped on every flush if not.
    _SOURCE: ClassVar[bool] = False

    # Slots, not a per-instance dict: a node has more attributes than CPython shares keys
    # for, so each of the 10^4 simulated members carried its own 1.5 KB dict and every
    # attribute access on the per-packet path was a hash lookup.  Subclasses keep a
    # ``__dict__`` for their own attributes.
    __slots__ = (
        "_ack_dirty", "_ack_threshold", "_ack_window", "_advertise_every", "_advertise_mark",
        "_advertised", "_ahead_limit", "_backups", "_bind_attempts", "_bind_candidates",
        "_bind_target", "_bytes_delivered", "_cache_packets", "_data_in", "_datagrams_in",
        "_deadline_ack", "_deadline_advertise", "_deadline_hello", "_deadline_maintenance",
        "_deadline_poll", "_deadline_state", "_deadline_tail_hello", "_dispatch", "_events",
        "_gaps_since_ack", "_holes_asked_at", "_known_heads", "_last_ack", "_messages_delivered",
        "_multicast", "_nonce", "_offers", "_out", "_packets_since_ack", "_parent_heard",
        "_pending_bytes", "_poll_wait", "_receive_buffer", "_received_since_ack", "_referrals",
        "_repair_wait", "_reported_floor", "_retry_delay", "_rng", "_solicit_rounds",
        "_solicit_sent_at", "_solicited", "_state", "_static_parent", "_tail_wait",
        "accepts_children", "bootstrap", "children", "config", "counters", "delivers",
        "join_policy", "level", "node_id", "parent", "parent_id", "session", "streams",
    )

    def __init__(
        self,
        config: TransportConfig,
        *,
        session: bytes,
        node_id: bytes,
        rng: Rng,
        now: float,
        bootstrap: Sequence[Addr] = (),
        parent: Addr | None = None,
        accepts_children: bool = False,
        delivers: bool = True,
        join_policy: str | None = None,
    ) -> None:
        if len(session) != 8 or len(node_id) != 8:
            raise LocalError("session and node_id must be 8 bytes each")
        self.config = config
        self.session = session
        self.node_id = node_id
        self._rng = rng
        self.accepts_children = accepts_children
        self.delivers = delivers
        self.join_policy = JoinPolicy.NAMES[join_policy or config.join_policy]
        self.streams: dict[int, Stream] = {}
        self.children: dict[Addr, Child] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: collections.deque[Event] = collections.deque()
        self._pending_bytes = 0
        self.counters: collections.Counter[str] = collections.Counter()
        # the counters bumped for every datagram live in attributes (see stats())
        self._datagrams_in = 0
        self._data_in = 0
        self._messages_delivered = 0
        self._bytes_delivered = 0
        # tree position
        self.bootstrap: list[Addr] = list(bootstrap)
        self._static_parent = parent
        self.parent: Addr | None = None
        self.parent_id: bytes | None = None
        self.level = 0
        self._state = _State.UNBOUND
        self._parent_heard = now
        self._backups: list[_OfferSeen] = []
        self._known_heads: dict[Addr, float] = {}
        # solicitation / binding
        self._nonce = 0
        self._offers: dict[Addr, _OfferSeen] = {}
        self._solicited: set[Addr] = set()
        self._referrals: list[Addr] = []
        self._advertised: list[Addr] = []
        self._solicit_sent_at = now
        self._solicit_rounds = 0
        self._bind_candidates: list[_OfferSeen] = []
        self._bind_target: Addr | None = None
        self._bind_attempts = 0
        self._retry_delay = config.solicit_wait
        # acknowledgement pacing
        self._packets_since_ack = 0
        self._ack_threshold = self._random_below(config.ack_window) + 1
        self._gaps_since_ack = 0
        self._received_since_ack = 0
        self._ack_dirty = False
        self._last_ack = now
        # how long a repair takes to come back after an ack that asked for it (EWMA), and
        # when the last such ack left: paces re-asking while holes remain
        self._repair_wait = config.ack_interval
        self._holes_asked_at: float | None = None
        # timers (None = not armed)
        self._deadline_state: float | None = None  # solicitation / bind / retry
        self._deadline_ack: float | None = None
        self._deadline_maintenance: float | None = now + config.hello_interval / 2
        self._deadline_hello: float | None = now + config.hello_interval
        self._deadline_tail_hello: float | None = None
        self._deadline_poll: float | None = None  # after a burst: ask silent laggards
        self._deadline_advertise: float | None = (
            now + config.advertise_interval if config.multicast and config.advertise else None
        )
        self._advertise_every = config.advertise_interval
        self._advertise_mark = 0
        # per stream: the subtree floor this node last reported upward (see _on_ack)
        self._reported_floor: dict[int, int] = {}
        # config values read on every DATA packet
        self._multicast = config.multicast
        self._ahead_limit = 2 * config.cache_packets
        self._receive_buffer = config.receive_buffer
        self._cache_packets = config.cache_packets
        self._ack_window = config.ack_window
        self._tail_wait = 2 * config.ack_interval
        self._poll_wait = 4 * config.ack_interval
        self._dispatch: dict[type[Packet], Callable[[Packet, bytes, Addr, float], None]] = {
            cls: getattr(self, name) for cls, name in self._HANDLERS.items()
        }

    # ------------------------------------------------------------------ helpers

    def _random_below(self, n: int) -> int:
        return int.from_bytes(self._rng(4), "big") % max(1, n)

    def _jitter(self, span: float) -> float:
        return span * (int.from_bytes(self._rng(2), "big") / 65536.0)

    def _send(self, packet: Packet, addr: Addr) -> None:
        self._out.append((packet.encode(), addr))

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        if isinstance(event, MessageReceived):
            self._pending_bytes += len(event.data)

    @property
    def bound(self) -> bool:
        return self._state in (_State.BOUND, _State.ROOT)

    @property
    def closed(self) -> bool:
        return self._state == _State.CLOSED

    @property
    def is_root(self) -> bool:
        return self._state == _State.ROOT

    # ------------------------------------------------------------------ public verbs

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Feed one datagram from ``addr``; never raises for bad input."""
        self._datagrams_in += 1
        if self._state == _State.CLOSED:
            return
        hit = DECODED.get(id(data))  # decode_untrusted's cache hit, inline
        if hit is not None and hit[0] is data:
            packet = hit[1]
        else:
            try:
                packet = decode_untrusted(data)
            except MalformedPacket:
                self.counters["malformed"] += 1
                return
        if packet.session != self.session:
            self.counters["wrong_session"] += 1
            return
        if type(packet) is Data:  # most of the traffic: skip the table
            self._on_data(packet, data, addr, now)
        else:
            self._dispatch[type(packet)](packet, data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        if self._SOURCE:
            self._produce(now)
        out = self._out
        if not out:
            return []
        self._out = []
        self.counters["datagrams_out"] += len(out)
        return out

    def next_event(self) -> Event | None:
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if isinstance(event, MessageReceived):
            self._pending_bytes -= len(event.data)
        return event

    def get_timer(self) -> float | None:
        # Called after every datagram by every driver: no containers, no sorting.
        if self._state == _State.CLOSED:
            return None
        best = self._deadline_maintenance
        d = self._deadline_ack
        if d is not None and (best is None or d < best):
            best = d
        d = self._deadline_state
        if d is not None and (best is None or d < best):
            best = d
        d = self._deadline_hello
        if d is not None and (best is None or d < best) and self._has_hello_targets():
            best = d
        d = self._deadline_tail_hello
        if d is not None and (best is None or d < best):
            best = d
        d = self._deadline_poll
        if d is not None and (best is None or d < best):
            best = d
        d = self._deadline_advertise
        if d is not None and (best is None or d < best):
            best = d
        if self._SOURCE:
            d = self._source_timer()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def handle_timer(self, now: float) -> None:
        if self._state == _State.CLOSED:
            return
        if self._deadline_state is not None and now >= self._deadline_state:
            self._deadline_state = None
            self._on_state_deadline(now)
        if self._deadline_maintenance is not None and now >= self._deadline_maintenance:
            self._deadline_maintenance = now + self.config.hello_interval / 2
            self._maintenance(now)
        if self._deadline_hello is not None and now >= self._deadline_hello:
            self._deadline_hello = now + self.config.hello_interval
            self._send_hellos()
        if self._deadline_tail_hello is not None and now >= self._deadline_tail_hello:
            self._deadline_tail_hello = None
            self._send_hellos()
            if self._deadline_poll is None:
                self._deadline_poll = now + self._poll_wait
        if self._deadline_poll is not None and now >= self._deadline_poll:
            self._deadline_poll = None
            self._poll(now)
        if self._deadline_advertise is not None and now >= self._deadline_advertise:
            self._advertise(now)
        if self._deadline_ack is not None and now >= self._deadline_ack:
            self._deadline_ack = None
            self._send_acks(now)

    def stats(self) -> dict[str, int]:
        stats = dict(self.counters)
        for name, value in (
            ("datagrams_in", self._datagrams_in),
            ("data_in", self._data_in),
            ("messages_delivered", self._messages_delivered),
            ("bytes_delivered", self._bytes_delivered),
        ):
            if value:
                stats[name] = value
        stats["children"] = len(self.children)
        stats["members_below"] = sum(c.members for c in self.children.values())
        stats["cached_packets"] = sum(len(s.cache) for s in self.streams.values())
        return stats

    def start(self, now: float) -> None:
        """Begin joining the tree (called by the constructor of non-root roles)."""
        if self._static_parent is not None:
            self._bind_candidates = []
            self._bind_to(self._static_parent, now)
        else:
            self._solicit(list(self.bootstrap), now, fresh=True)

    def leave(self, now: float) -> None:
        """Leave the tree: tell the parent, release the children, stop."""
        if self.parent is not None:
            self._send(Leave(self.session, self.node_id), self.parent)
        for child in self.children.values():
            self._send(Prune(self.session, self.node_id, Reason.LEAVING), child.addr)
        self.children.clear()
        self._state = _State.CLOSED

    # ------------------------------------------------------------------ joining the tree

    def _solicit(self, candidates: list[Addr], now: float, *, fresh: bool) -> None:
        if fresh:
            self._offers.clear()
            self._solicited.clear()
            self._referrals = []
            self._solicit_rounds = 0
            self._nonce = self._random_below((1 << 32) - 1) + 1
            # Heads heard advertising are asked only when the configured ones (and their
            # referrals) have no room: the bootstrap list is the operator's choice of nearby
            # heads, while an advertisement may come from anywhere in the group.
            known = [a for a in self._known_heads if a not in candidates]
            if any(a != self.parent and a not in self.children for a in candidates):
                self._advertised = known
            else:
                candidates, self._advertised = candidates + known, []
        self._state = _State.SOLICITING
        self._solicit_sent_at = now
        self._solicit_rounds += 1
        sent = 0
        for addr in candidates:
            if addr in self._solicited or addr == self.parent or addr in self.children:
                continue
            self._solicited.add(addr)
            self._send(Solicit(self.session, self.node_id, self.ROLE, self._nonce), addr)
            sent += 1
        self.counters["solicits_sent"] += sent
        self._deadline_state = now + self.config.solicit_wait

    def _on_offer(self, p: Offer, raw: bytes, addr: Addr, now: float) -> None:
        if p.node_id == self.node_id:
            return
        if p.nonce == 0:  # unsolicited advertisement (multicast mode)
            if p.free > 0 and len(self._known_heads) < 64:
                self._known_heads[addr] = now
            return
        if self._state != _State.SOLICITING or p.nonce != self._nonce:
            self.counters["stale_offers"] += 1
            return
        self._offers[addr] = _OfferSeen(addr, p, now - self._solicit_sent_at)
        for ref in p.referrals:
            if ref not in self._solicited and ref not in self._referrals:
                self._referrals.append(ref)

    def _eligible(self, seen: _OfferSeen) -> bool:
        if seen.offer.free <= 0:
            return False
        # A head that still has children must not bind below itself: only strictly
        # shallower heads can be outside its own subtree.
        return not (self.children and seen.offer.level >= self.level)

    def _on_state_deadline(self, now: float) -> None:
        if self._state == _State.SOLICITING:
            usable = sorted(
                (s for s in self._offers.values() if self._eligible(s)),
                key=lambda s: (s.offer.level, round(s.rtt, 3), s.offer.load),
            )
            if usable:
                self._bind_candidates = usable[1:]
                self._bind_to(usable[0].addr, now)
                return
            if self._referrals and self._solicit_rounds < MAX_SOLICIT_ROUNDS:
                # Walk down the tree: ask the heads the full ones referred us to.
                batch, self._referrals = self._referrals[:MAX_REFERRALS], self._referrals[MAX_REFERRALS:]
                self._solicit(batch, now, fresh=False)
                return
            if self._advertised and self._solicit_rounds < MAX_SOLICIT_ROUNDS:
                batch, self._advertised = self._advertised[:MAX_REFERRALS], self._advertised[MAX_REFERRALS:]
                self._solicit(batch, now, fresh=False)
                return
            self.counters["solicit_failures"] += 1
            self._state = _State.UNBOUND
            self._deadline_state = now + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self.config.hello_interval * 2)
        elif self._state == _State.BINDING:
            self.counters["bind_timeouts"] += 1
            if self._bind_attempts < 2 and self._bind_target is not None:
                self._bind_to(self._bind_target, now, retry=True)  # the Bind or Accept was lost
            else:
                self._next_bind_candidate(now)
        elif self._state == _State.UNBOUND:
            self.start(now)

    def _bind_to(self, addr: Addr, now: float, *, retry: bool = False) -> None:
        self._state = _State.BINDING
        self._bind_target = addr
        self._bind_attempts = self._bind_attempts + 1 if retry else 1
        resume = tuple(
            (s.id, s.window.base) for s in list(self.streams.values())[:MAX_STREAMS] if not s.own
        )
        self._send(Bind(self.session, self.node_id, self.ROLE, self.join_policy, resume), addr)
        self._deadline_state = now + 2 * self.config.solicit_wait

    def _next_bind_candidate(self, now: float) -> None:
        while self._bind_candidates:
            seen = self._bind_candidates.pop(0)
            if self._eligible(seen):
                self._bind_to(seen.addr, now)
                return
        self._solicit(list(self.bootstrap), now, fresh=True)

    def _on_accept(self, p: Accept, raw: bytes, addr: Addr, now: float) -> None:
        if self._state != _State.BINDING or addr != self._bind_target:
            self.counters["stale_accepts"] += 1
            return
        previous = self.parent_id
        self.parent, self.parent_id = addr, p.node_id
        self.level = min(p.level + 1, 255)
        self._state = _State.BOUND
        self._deadline_state = None
        self._retry_delay = self.config.solicit_wait
        self._parent_heard = now
        self._backups = [s for s in self._bind_candidates if s.addr != addr][:MAX_BACKUPS]
        self._bind_candidates = []
        for stream_id, start, next_known in p.starts:
            stream = self.streams.get(stream_id)
            if stream is None:
                stream = self.streams[stream_id] = Stream(stream_id, start)
            elif not stream.own and start > stream.window.base:
                self._skip_to(stream, start)
            if not stream.own:
                stream.window.learn(next_known, -1)
        self.counters["binds"] += 1
        self._emit(Bound(p.node_id, addr, self.level, previous))
        self._ack_dirty = True
        self._deadline_ack = now  # tell the new head where we stand at once

    def _on_reject(self, p: Reject, raw: bytes, addr: Addr, now: float) -> None:
        if self._state == _State.BINDING and addr == self._bind_target:
            self.counters["rejected"] += 1
            self._next_bind_candidate(now)

    def _lose_head(self, now: float) -> None:
        """The parent is gone: try the backups in order, then solicit afresh."""
        lost = self.parent_id
        self.parent = None
        self.counters["head_losses"] += 1
        if lost is not None:
            self._emit(HeadLost(lost))
        self._bind_candidates = list(self._backups)
        self._backups = []
        self._next_bind_candidate(now)

    # ------------------------------------------------------------------ serving children

    def _on_solicit(self, p: Solicit, raw: bytes, addr: Addr, now: float) -> None:
        if not self.accepts_children or not self.bound or p.node_id == self.node_id:
            return
        self.counters["solicits_answered"] += 1
        self._send(self._offer(p.nonce), addr)

    def _offer(self, nonce: int) -> Offer:
        free = max(0, self.config.max_children - len(self.children))
        referrals = tuple(c.addr for c in self.children.values() if c.role == Role.HEAD)
        if not free and self.parent is not None:
            # A full head with no child heads would strand the solicitor: point it upward
            # too, whence it can reach this head's siblings.
            referrals = (*referrals[: MAX_REFERRALS - 1], self.parent)
        return Offer(
            self.session, self.node_id, self.level, min(free, 65535), min(len(self.children), 65535),
            nonce, referrals[:MAX_REFERRALS],
        )

    def _advertise(self, now: float) -> None:
        """Unsolicited advertisement on the multicast group, scoped (TRAM-like).

        Every member receives every advertisement, so H heads advertising at a fixed pace
        cost O(H x N) deliveries per interval.  TRAM scopes them by TTL, which a group on
        one multicast address cannot; three limits stand in for it.  Only the top of the
        tree advertises (level <= ``ADVERTISE_MAX_LEVEL``: the root and its children), so
        the volume depends on the root's fan-out, not on the number of heads; members
        reach deeper heads through the referrals of full ones.  After each advertisement
        the interval doubles (up to ``ADVERTISE_BACKOFF`` times the configured one).  And
        none goes out while data is flowing through this node (as in TRAM, members that
        need a head during the data phase solicit and follow referrals).
        """
        cfg = self.config
        counters = self.counters
        mark = self._data_in + counters["data_sent"]
        streaming, self._advertise_mark = mark != self._advertise_mark, mark
        if (
            not streaming
            and self.accepts_children
            and self.level <= ADVERTISE_MAX_LEVEL
            and self.bound
            and len(self.children) < cfg.max_children
        ):
            self._send(self._offer(0), MULTICAST)
            counters["advertisements_sent"] += 1
            self._advertise_every = min(
                2 * self._advertise_every, ADVERTISE_BACKOFF * cfg.advertise_interval
            )
        self._deadline_advertise = now + self._advertise_every

    def _on_bind(self, p: Bind, raw: bytes, addr: Addr, now: float) -> None:
        if not self.accepts_children or not self.bound or addr == self.parent:
            self._send(Reject(self.session, self.node_id, Reason.NO_DATA), addr)
            return
        child = self.children.get(addr)
        if child is None:
            if len(self.children) >= self.config.max_children:
                self.counters["binds_rejected_full"] += 1
                self._send(Reject(self.session, self.node_id, Reason.FULL), addr)
                return
            child = Child(p.node_id, addr, p.role, now)
            self.children[addr] = child
            self.counters["children_joined"] += 1
            self._emit(ChildJoined(p.node_id, addr, p.role))
        child.last_heard = now
        resume = dict(p.resume)
        starts = []
        for stream in list(self.streams.values())[:MAX_STREAMS]:
            start = self._start_for(stream, p.policy, resume.get(stream.id))
            child.acks[stream.id] = ChildAck(start, b"", start, start)
            w = stream.window
            starts.append((stream.id, start, max(start, w.base if stream.own else w.next_known)))
        self._send(Accept(self.session, self.node_id, self.level, tuple(starts)), addr)

    def _start_for(self, stream: Stream, policy: int, resume: int | None) -> int:
        """Where a (re)joining child starts on ``stream``; refetch from upstream if needed."""
        if resume is not None:
            want = resume
        elif policy == JoinPolicy.FROM_START:
            want = 0
        elif policy == JoinPolicy.FROM_CACHE:
            want = stream.cache_low
        else:
            want = stream.window.next_known if not stream.own else stream.window.base
        if want < stream.cache_low:
            if self._can_refetch(stream):
                self._reopen(stream, max(want, stream.floor_gone))
            else:
                want = max(want, stream.cache_low)
        return max(want, stream.floor_gone)

    def _can_refetch(self, stream: Stream) -> bool:
        return not self.is_root and not stream.own and self.parent is not None

    def _reopen(self, stream: Stream, seq: int) -> None:
        """Ask upstream again for ``[seq, cache_low)``, which this node had already freed."""
        w = stream.window
        if seq >= stream.cache_low or seq >= w.base:
            return
        self.counters["refetches"] += 1
        for q in range(stream.cache_low, w.base):
            if q in stream.cache:
                w.held[q] = (0, b"")
        w.base = seq
        stream.cache_low = seq
        self._ack_dirty = True

    def _on_leave(self, p: Leave, raw: bytes, addr: Addr, now: float) -> None:
        child = self.children.pop(addr, None)
        if child is not None:
            self.counters["children_left"] += 1
            self._emit(ChildLost(child.node_id, addr, Reason.LEAVING))
            self._ack_dirty = True

    def _on_ack(self, p: Ack, raw: bytes, addr: Addr, now: float) -> None:
        self.counters["acks_in"] += 1
        child = self.children.get(addr)
        if child is None:
            self._on_upstream_ack(p, addr, now)
            return
        child.last_heard = now
        child.members = max(1, p.members)
        congested = bool(p.flags & AckFlags.CONGESTED)
        news = congested and not child.congested
        child.congested = congested
        for entry in p.entries:
            stream = self.streams.get(entry.stream)
            if stream is None or stream.source_addr == addr:
                continue  # unknown, or the child's own stream (it is that stream's source)
            child.acks[entry.stream] = ChildAck(
                entry.have_base, entry.bitmap, entry.subtree_base, entry.next_known
            )
            self._repair(child, stream, entry, now)
            self._release(stream)
            news = news or self._floor_news(stream)
        if news:
            # Aggregation: pass the subtree's progress upward within one ack interval, but
            # only when it is news (a window's worth of progress, completion, congestion).
            # Forwarding every child's ack would make the parent's load grow with the
            # subtree and with time, not with the data.
            self._ack_dirty = True
            if self._deadline_ack is None and (self.parent is not None or self._has_sources()):
                self._deadline_ack = now + self.config.ack_interval

    def _floor_news(self, stream: Stream) -> bool:
        """Whether the subtree floor moved enough since the last report to tell upstream."""
        if stream.own:
            return False
        floor = self._floor(stream)
        last = self._reported_floor.get(stream.id, -1)
        return floor >= last + self._ack_window or (floor > last and floor >= stream.window.next_known)

    def _on_upstream_ack(self, p: Ack, addr: Addr, now: float) -> None:
        """An ack from a node that is not our child: the root acknowledging our own stream."""
        own = self._own_stream()
        if own is None or addr != own.source_addr:
            if self.accepts_children and self.bound:
                # It thinks we are its parent (we dropped it): tell it to re-affiliate.
                self._send(Prune(self.session, self.node_id, Reason.SILENT), addr)
            self.counters["acks_unknown"] += 1
            return
        for entry in p.entries:
            if entry.stream == own.id:
                self._on_root_ack(own, entry, bool(p.flags & AckFlags.CONGESTED), addr, now)

    def _on_root_ack(self, own: Stream, entry: AckEntry, congested: bool, addr: Addr, now: float) -> None:
        raise NotImplementedError  # only sources have an own stream (see Sender)

    def _repair(self, child: Child, stream: Stream, entry: AckEntry, now: float) -> None:
        upto = min(entry.next_known, stream.window.next_known)
        if stream.own:
            upto = min(entry.next_known, stream.window.base)
        missing = missing_from_ack(entry.have_base, entry.bitmap, upto)
        if not missing:
            child.repaired.pop(stream.id, None)
            return
        self.counters["nacks_in"] += len(missing)
        done = child.repaired.setdefault(stream.id, {})
        arrived = [q for q in done if q < entry.have_base]
        if arrived:
            # The newest repair that has landed bounds this child's repair round trip.
            child.observe_rtt(now - max(done[q] for q in arrived))
            for seq in arrived:
                del done[seq]
        # Never resend before a repair could have arrived and been acknowledged.
        suppress = max(self.config.repair_suppress, 1.5 * child.rtt)
        sent = 0
        skip_to = -1
        for seq in missing:
            if seq < stream.floor_gone or (seq < stream.cache_low and not self._can_refetch(stream)):
                skip_to = max(stream.floor_gone, stream.cache_low)
                continue
            raw = stream.cache.get(seq)
            if raw is None:
                if seq < stream.cache_low:
                    self._reopen(stream, seq)
                self.counters["repairs_upstream_needed"] += 1
                continue
            last = done.get(seq)
            if last is not None and now - last < suppress:
                self.counters["repairs_suppressed"] += 1
                continue
            done[seq] = now
            self._out.append((_as_repair(raw), child.addr))
            self.counters["repairs_sent"] += 1
            sent += 1
            if sent >= MAX_REPAIRS_PER_ACK:
                break
        if skip_to > entry.have_base:
            self.counters["skips_sent"] += 1
            self._send(Skip(self.session, self.node_id, stream.id, skip_to), child.addr)

    def _floor(self, stream: Stream) -> int:
        """Lowest sequence some part of this node's subtree still needs.  At the root, a
        secondary sender that is also a child holds all of its own stream (what it reports
        for it is only as fresh as its last ack): it never holds the floor back."""
        floor = stream.window.base
        sid, source = stream.id, stream.source_addr
        for child in self.children.values():
            if not child.skipping and child.addr != source:
                ack = child.acks.get(sid)
                base = ack.subtree_base if ack is not None else 0
                if base < floor:
                    floor = base
        return floor

    def _release(self, stream: Stream) -> None:
        """Free cache entries everyone below holds, keeping ``cache_packets`` for late joiners."""
        cache = stream.cache
        limit = self.config.cache_packets
        if len(cache) <= limit or (stream.own and self.config.retain_stream):
            return
        floor = self._floor(stream)
        low = stream.cache_low
        while len(cache) > limit and low < floor:
            cache.pop(low, None)
            low += 1
        stream.cache_low = low
        if not self._can_refetch(stream):
            stream.floor_gone = max(stream.floor_gone, low)

    def _maintenance(self, now: float) -> None:
        cfg = self.config
        if self._state == _State.BOUND and now - self._parent_heard > cfg.head_timeout:
            self._lose_head(now)
        for addr, child in list(self.children.items()):
            if now - child.last_heard > cfg.child_timeout:
                del self.children[addr]
                self.counters["children_silent"] += 1
                self._emit(ChildLost(child.node_id, addr, Reason.SILENT))
                self._ack_dirty = True
                for stream in self.streams.values():
                    self._release(stream)
                continue
            self._check_slow(child, now)
        if now - self._last_ack >= cfg.hello_interval and (
            self._state == _State.BOUND or self._has_sources()
        ):
            self._deadline_ack = now  # keep-alive for the parent (or a secondary sender)

    def _has_sources(self) -> bool:
        """At the root: secondary senders whose streams it acknowledges."""
        return self.is_root and any(s.source_addr is not None for s in self.streams.values())

    def _check_slow(self, child: Child, now: float) -> None:
        cfg = self.config
        lag = 0
        for stream in self.streams.values():
            if stream.source_addr == child.addr:
                continue  # its own stream (a secondary sender below the root): not a receiver
            head = stream.window.base if stream.own else stream.window.next_known
            lag = max(lag, head - child.subtree_base(stream))
        # The source runs up to cache_packets ahead of the slowest subtree, so ordinary lag
        # reaches nearly that much; only a member stuck near the window's edge is slow.
        threshold = max(cfg.ack_window, cfg.cache_packets * 7 // 8)
        if lag <= threshold:
            child.lag_since = None
            if child.skipping and lag <= threshold // 4:
                child.skipping = False
            return
        if child.lag_since is None or lag < child.lag_seen * 3 // 4:
            # Far behind but catching up (a late joiner, a re-affiliated member) is not slow:
            # measure again from here.
            child.lag_since, child.lag_seen = now, lag
            return
        if now - child.lag_since < cfg.slow_timeout or cfg.slow_receiver == "block":
            return
        if cfg.slow_receiver == "skip":
            if not child.skipping:
                child.skipping = True
                self.counters["children_skipping"] += 1
            return
        del self.children[child.addr]
        self.counters["pruned"] += 1
        self._send(Prune(self.session, self.node_id, Reason.SLOW), child.addr)
        self._emit(MemberPruned(child.node_id, child.addr, lag))
        self._emit(ChildLost(child.node_id, child.addr, Reason.SLOW))
        for stream in self.streams.values():
            self._release(stream)

    def _hello_targets(self) -> list[Addr]:
        """Who hears this node's hellos: its children."""
        return list(self.children)

    def _has_hello_targets(self) -> bool:
        return bool(self.children)

    def _send_hellos(self, targets: list[Addr] | None = None) -> None:
        if targets is None:
            targets = self._hello_targets()
        if not targets:
            return
        states = tuple(
            StreamState(s.id, s.window.base if s.own else s.window.next_known, s.window.end)
            for s in list(self.streams.values())[:MAX_STREAMS]
        )
        raw = Hello(self.session, self.node_id, self.level, states).encode()
        for addr in targets:
            self._out.append((raw, addr))
        self.counters["hellos_sent"] += len(targets)

    def _poll(self, now: float) -> None:
        """After a burst: a hello to each child that is behind this node and has been silent
        for a while (its last acknowledgement, typically the one saying it is complete, may
        have been lost); members answer a hello with an acknowledgement.  Without this,
        positive confirmation waits for the next keep-alive (``hello_interval``) wherever
        one acknowledgement among thousands was lost.  Data arriving again ends the polling."""
        quiet = now - 2 * self.config.ack_interval
        streams = [s for s in self.streams.values() if s.window.base > 0]
        targets = []
        for addr, child in self.children.items():
            if child.last_heard > quiet or child.skipping:
                continue
            for stream in streams:
                if child.subtree_base(stream) < stream.window.base:
                    targets.append(addr)
                    break
        if targets:
            self.counters["polls_sent"] += len(targets)
            self._send_hellos(targets)
            self._deadline_poll = now + self._poll_wait

    # ------------------------------------------------------------------ receiving data

    def _on_data(self, p: Data, raw: bytes, addr: Addr, now: float) -> None:
        # The per-packet path of every member: keep it free of allocations and lookups that
        # are not needed for an in-order packet (the common case).
        if addr == self.parent:
            self._parent_heard = now
        state = self._state
        if state != _State.BOUND and state != _State.ROOT:
            self.counters["data_unbound"] += 1
            return
        stream = self.streams.get(p.stream)
        if stream is None:
            stream = self._new_stream(p.stream, addr)
            if stream is None:
                return
        if stream.own:
            if addr != self.parent:
                self.counters["stream_id_clash"] += 1  # someone else claims our stream id
            return  # our own stream coming back down the tree
        multicast = self._multicast
        if not multicast and addr != self.parent and addr != stream.source_addr:
            # In the overlay, data only ever comes down from the parent (or, at the root,
            # from the stream's source).  Multicast data is checked by the security layer.
            self.counters["data_from_stranger"] += 1
            return
        w = stream.window
        seq = p.seq
        base = w.base
        if seq >= base + self._ahead_limit:
            self.counters["dropped_ahead"] += 1
            return
        if self.delivers and self._pending_bytes > self._receive_buffer and seq >= base:
            self.counters["dropped_backpressure"] += 1
            return
        held = w.held
        if seq < base or seq in held:
            self.counters["duplicates"] += 1
            return
        self._data_in += 1
        self._received_since_ack += 1
        before = w.next_known
        if seq >= before:
            w.next_known = seq + 1
            if seq > before:
                self._gaps_since_ack += seq - before
                self._ack_dirty = True
        elif self._holes_asked_at is not None:
            # The first hole filled after asking: how long a repair takes to land here
            # (smoothed), which paces the next ask while holes remain (_send_acks).
            sample = now - self._holes_asked_at
            self._repair_wait = 0.75 * self._repair_wait + 0.25 * sample
            self._holes_asked_at = None
        flags = p.flags
        if flags & _END:
            w.learn(seq + 1, seq + 1)
        cache = stream.cache
        if self.accepts_children:
            cache[seq] = raw
            if not multicast:
                self._forward(stream, raw, addr, flags)
            elif self.children:
                # Multicast data reached the children directly; once the burst ends, tell
                # them how far the stream goes, so a lost tail is asked for at once instead
                # of at the next periodic hello (the overlay does this in _on_hello).
                self._deadline_tail_hello = now + self._tail_wait
                self._deadline_poll = None
        if seq == base:
            w.base = base + 1
            if (
                flags == _WHOLE
                and self.delivers
                and not stream.assembling
                and seq >= stream.deliver_next
            ):
                # In order and a whole message: _deliver's common case, inline.
                stream.deliver_next = seq + 1
                payload = p.payload
                self._messages_delivered += 1
                self._bytes_delivered += len(payload)
                self._events.append(_message(stream.id, seq, payload))
                self._pending_bytes += len(payload)
                if w.end >= 0 and seq + 1 >= w.end:
                    self._deliver_end(stream)
            else:
                self._deliver(stream, seq, flags, p.payload)
            nxt = base + 1
            if nxt in held:
                # The packets that waited behind this one (w.pop_in_order, inline).  Under
                # loss most packets take this path, so _deliver's common case (a whole
                # message, delivered) is inline here too; anything else goes to _deliver.
                pop, events, delivers = held.pop, self._events, self.delivers
                count = size = 0
                while (item := pop(nxt, None)) is not None:
                    item_flags, payload = item
                    if (
                        item_flags & _WHOLE == _WHOLE
                        and delivers
                        and not stream.assembling
                        and nxt >= stream.deliver_next
                    ):
                        stream.deliver_next = nxt + 1
                        count += 1
                        size += len(payload)
                        events.append(_message(stream.id, nxt, payload))
                        if w.end >= 0 and nxt + 1 >= w.end:
                            self._deliver_end(stream)
                    else:
                        self._deliver(stream, nxt, item_flags, payload)
                    nxt += 1
                w.base = nxt
                if count:
                    self._messages_delivered += count
                    self._bytes_delivered += size
                    self._pending_bytes += size
        else:
            held[seq] = (flags, p.payload)
        if cache and len(cache) > self._cache_packets:
            self._release(stream)
        if w.base < w.next_known:
            self._ack_dirty = True  # holes remain: keep asking until they are filled
        since = self._packets_since_ack = self._packets_since_ack + 1
        if since >= self._ack_threshold:
            self._ack_threshold = self._ack_window
            self._send_acks(now)
        elif self._ack_dirty and self._deadline_ack is None:
            interval = self.config.ack_interval
            self._deadline_ack = now + interval / 2 + self._jitter(interval)

    def _new_stream(self, stream_id: int, addr: Addr) -> Stream | None:
        if len(self.streams) >= MAX_STREAMS:
            self.counters["too_many_streams"] += 1
            return None
        stream = Stream(stream_id, 0)
        if self.is_root:
            # Children never forward upward in the overlay: data first heard at the root
            # (even from a child) is a secondary sender injecting its own stream.
            stream.source_addr = addr
        elif addr != self.parent and not self.config.multicast:
            self.counters["data_from_stranger"] += 1
            return None
        self.streams[stream_id] = stream
        for child in self.children.values():
            child.acks.setdefault(stream_id, ChildAck(0, b"", 0, 0))
        return stream

    def _forward(self, stream: Stream, raw: bytes, came_from: Addr, flags: int) -> None:
        if not self.children:
            return
        if self.config.multicast:
            # Data reached everyone by multicast.  A repair we fetched for ourselves reaches
            # the children that lack it when their next acknowledgement asks for it.
            return
        self._deadline_tail_hello = None
        for child_addr in self.children:
            if child_addr != came_from:
                self._out.append((raw, child_addr))
        self.counters["forwarded"] += len(self.children)

    def _deliver(self, stream: Stream, seq: int, flags: int, payload: bytes) -> None:
        if seq < stream.deliver_next:
            return  # refetched for the children, already delivered here
        stream.deliver_next = seq + 1
        if flags & _WHOLE == _WHOLE and not stream.assembling and self.delivers:
            # A message in one packet (the common case for small messages).
            self._messages_delivered += 1
            self._bytes_delivered += len(payload)
            self._events.append(MessageReceived(stream.id, seq, payload))
            self._pending_bytes += len(payload)
        elif flags & DataFlags.END and not flags & DataFlags.FIRST and not stream.assembling:
            pass  # the end-of-stream marker carries no message
        elif self.delivers:
            if flags & DataFlags.FIRST:
                if stream.assembling:
                    self.counters["messages_truncated"] += 1
                stream.assembling = True
                stream.parts = [payload]
                stream.msg_seq = seq
                stream.msg_bytes = len(payload)
            elif stream.assembling:
                stream.parts.append(payload)
                stream.msg_bytes += len(payload)
                if stream.msg_bytes > self.config.max_message:
                    self.counters["messages_oversized"] += 1
                    stream.assembling = False
                    stream.parts = []
            else:
                self.counters["skipped_partial"] += 1
            if flags & DataFlags.LAST and stream.assembling:
                data = stream.parts[0] if len(stream.parts) == 1 else b"".join(stream.parts)
                stream.assembling = False
                stream.parts = []
                self._messages_delivered += 1
                self._bytes_delivered += len(data)
                self._emit(MessageReceived(stream.id, stream.msg_seq, data))
        w = stream.window
        if w.end >= 0 and stream.deliver_next >= w.end and not stream.ended_reported:
            stream.ended_reported = True
            self._emit(StreamEnded(stream.id))
            self._ack_dirty = True  # positive confirmation: tell the parent soon

    def _skip_to(self, stream: Stream, new_base: int) -> None:
        old = stream.window.base
        stream.reset_position(new_base)
        if stream.assembling:
            stream.assembling = False
            stream.parts = []
        self.counters["skipped_packets"] += new_base - old
        self._emit(GapSkipped(stream.id, old, new_base))
        while (item := stream.window.pop_in_order()) is not None:
            self._deliver(stream, *item)

    def _on_skip(self, p: Skip, raw: bytes, addr: Addr, now: float) -> None:
        if addr != self.parent:
            return
        stream = self.streams.get(p.stream)
        if stream is None or stream.own:
            return
        stream.floor_gone = max(stream.floor_gone, p.new_base)
        if stream.window.base < p.new_base:
            self._skip_to(stream, p.new_base)
            self._ack_dirty = True

    def _on_hello(self, p: Hello, raw: bytes, addr: Addr, now: float) -> None:
        if self.is_root:
            self._on_source_hello(p, addr, now)
            return
        if addr != self.parent:
            # It believes we are its child (an Accept we never saw, or a head we left):
            # release the slot it keeps for us.
            self.counters["hellos_stranger"] += 1
            if addr != self._bind_target or self._state != _State.BINDING:
                self._send(Leave(self.session, self.node_id), addr)
            return
        self._parent_heard = now
        for state in p.streams:
            stream = self.streams.get(state.stream)
            if stream is None:
                stream = self._new_stream(state.stream, addr)
                if stream is None:
                    continue
            if stream.own:
                continue
            stream.window.learn(state.next_seq, state.end)
            if stream.window.next_known > stream.window.base:
                self._ack_dirty = True
            if state.end >= 0 and stream.window.base >= state.end:
                # Nothing left to receive: report completion even if the END packet was lost.
                self._deliver_end(stream)
        if self._deadline_ack is None and (
            self._ack_dirty or now - self._last_ack >= self.config.ack_interval
        ):
            # Answer the hello: it may be the parent asking where we stand (see _poll).
            self._deadline_ack = now + self._jitter(self.config.ack_interval)
        # pass the news on so the subtree learns about tails quickly
        if self.children and not self.config.multicast:
            self._deadline_tail_hello = now

    def _on_source_hello(self, p: Hello, addr: Addr, now: float) -> None:
        """At the root: a secondary sender announcing how far its stream extends."""
        for state in p.streams:
            stream = self.streams.get(state.stream)
            if stream is not None and stream.source_addr == addr:
                stream.window.learn(state.next_seq, state.end)
                if stream.window.next_known > stream.window.base:
                    self._ack_dirty = True
                    if self._deadline_ack is None:
                        self._deadline_ack = now
                    if stream.window.end >= 0:
                        self._deadline_tail_hello = now

    def _deliver_end(self, stream: Stream) -> None:
        if not stream.ended_reported and stream.deliver_next >= stream.window.end:
            stream.ended_reported = True
            self._emit(StreamEnded(stream.id))
            self._ack_dirty = True

    def _on_prune(self, p: Prune, raw: bytes, addr: Addr, now: float) -> None:
        if addr != self.parent:
            return
        if p.reason == Reason.SLOW:
            self.counters["pruned_by_parent"] += 1
            self._state = _State.CLOSED
            self.parent = None
            for child in self.children.values():
                self._send(Prune(self.session, self.node_id, Reason.LEAVING), child.addr)
            self.children.clear()
            self._emit(PrunedByParent(p.reason))
        else:
            self._lose_head(now)

    # ------------------------------------------------------------------ acknowledging

    def _ack_entries(self, streams: list[Stream]) -> tuple[AckEntry, ...]:
        entries = []
        for stream in streams[:MAX_STREAMS]:
            w = stream.window
            if stream.own:
                entries.append(AckEntry(stream.id, w.base, b"", w.base, w.base))
            else:
                floor = self._floor(stream)
                self._reported_floor[stream.id] = floor
                entries.append(AckEntry(stream.id, w.base, w.bitmap(), floor, w.next_known))
        return tuple(entries)

    def _ack_flags(self) -> int:
        """Congestion if this node lost more than ``congestion_loss`` of a sample of at least
        one ack window (or some child says so).  Smaller samples are carried over to the
        next acknowledgement instead of judged: an ack sent after a gap covers only a few
        packets, one loss in three would read as congestion, and across thousands of members
        some member would always say so, pinning the source at ``min_rate``."""
        flags = 0
        gaps = self._gaps_since_ack
        total = self._received_since_ack + gaps
        if total >= self._ack_window:
            if gaps / total > self.config.congestion_loss:
                flags |= AckFlags.CONGESTED
            self._gaps_since_ack = self._received_since_ack = 0
        if any(c.congested for c in self.children.values()):
            flags |= AckFlags.CONGESTED
        return flags

    def _send_acks(self, now: float) -> None:
        members = 1 + sum(c.members for c in self.children.values())
        flags = self._ack_flags()
        if self._state == _State.BOUND and self.parent is not None:
            entries = self._ack_entries(list(self.streams.values()))
            self._send(Ack(self.session, self.node_id, flags, members, entries), self.parent)
            self.counters["acks_sent"] += 1
        for stream in self.streams.values():
            if stream.source_addr is not None and self.is_root:
                entries = self._ack_entries([stream])
                self._send(Ack(self.session, self.node_id, flags, members, entries), stream.source_addr)
                self.counters["acks_sent"] += 1
        self._packets_since_ack = 0
        self._ack_dirty = False
        self._last_ack = now
        self._deadline_ack = None
        if any(s.window.base < s.window.next_known for s in self.streams.values() if not s.own):
            # Holes remain: ask again even if no more data arrives (the parent suppresses
            # repeats until its repair could have landed).  Wait about two repair round trips
            # (a lost repair stalls the sender's window, so waiting a fixed long interval
            # costs goodput under loss), never less than the parent's suppression interval.
            cfg = self.config
            self._holes_asked_at = now
            wait = min(2 * cfg.ack_interval, max(cfg.repair_suppress, 2 * self._repair_wait))
            self._deadline_ack = now + wait

    # ------------------------------------------------------------------ hooks for sources

    def _produce(self, now: float) -> None:
        """Sources add new data here (see :class:`Sender`)."""

    def _source_timer(self) -> float | None:
        return None

    def _own_stream(self) -> Stream | None:
        return None

    #: packet type -> handler method name (looked up per instance so subclasses can extend)
    _HANDLERS: ClassVar[dict[type[Packet], str]] = {
        Data: "_on_data",
        Ack: "_on_ack",
        Hello: "_on_hello",
        Solicit: "_on_solicit",
        Offer: "_on_offer",
        Bind: "_on_bind",
        Accept: "_on_accept",
        Reject: "_on_reject",
        Leave: "_on_leave",
        Prune: "_on_prune",
        Skip: "_on_skip",
    }


#: FIRST | LAST: a whole message in one packet.
_WHOLE = DataFlags.FIRST | DataFlags.LAST
_END = DataFlags.END

# MessageReceived is a frozen dataclass, whose generated __init__ sets each field through
# object.__setattr__; the receive path builds one per delivered message (10^7 in the largest
# simulation), so it fills the slots directly: the same object, about 100 ns sooner.  The
# check below keeps this honest if the event ever gains a field or a __post_init__.
if [f.name for f in dataclasses.fields(MessageReceived)] != ["stream", "seq", "data"] or hasattr(
    MessageReceived, "__post_init__"
):
    raise ImportError("rmsec.transport.node: _message() no longer matches MessageReceived")
_new_object = object.__new__
_set_stream = vars(MessageReceived)["stream"].__set__
_set_seq = vars(MessageReceived)["seq"].__set__
_set_data = vars(MessageReceived)["data"].__set__


def _message(stream: int, seq: int, data: bytes) -> MessageReceived:
    """``MessageReceived(stream, seq, data)``, without the frozen dataclass's __init__."""
    event: MessageReceived = _new_object(MessageReceived)
    _set_stream(event, stream)
    _set_seq(event, seq)
    _set_data(event, data)
    return event


def _as_repair(raw: bytes) -> bytes:
    """A cached packet with the REPAIR flag set (the cache keeps what was received)."""
    return data_with_flags(raw, DataFlags.REPAIR)
