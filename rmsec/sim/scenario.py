"""One simulated group, end to end: build the tree, bind everyone, send a stream, measure.

Phases, in simulated time:

1. the sender (root) starts at 0; repair heads start level by level (``head_stagger`` apart)
   so that each finds its planned parent already bound; receivers start spread over
   ``join_spread`` seconds, as a real audience does;
2. once every receiver reported :class:`~rmsec.transport.events.Bound` (or ``bind_timeout``
   passed), the sender's application writes ``messages`` messages, as fast as
   ``Sender.writable`` allows, then closes the stream;
3. the run ends when the sender reports the stream confirmed and every receiver reported it
   ended, or at ``max_time``.

Every receiver compares what it is given with the message the sender wrote at that position
and counts them; "delivered everything exactly once in order" means every delivered message
equals the sent one at its position and the count equals ``messages``.  Transport-level figures come from the engine's
:class:`~rmsec.sim.engine.Counters`, taken over the data phase only (binding is a one-off
cost, reported separately as ``bind``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from rmsec.errors import ConfigError
from rmsec.sim.engine import Machine, Simulator
from rmsec.sim.network import NetworkModel
from rmsec.sim.topology import ROOT, TreePlan, plan_tree
from rmsec.sim.wireinfo import DATA_TYPE
from rmsec.transport import MULTICAST, Receiver, RepairHead, Sender, TransportConfig, events
from rmsec.wire.packets import PACKET_TYPES, Addr

ROLE_SENDER, ROLE_HEAD, ROLE_RECEIVER = "sender", "head", "receiver"
_MESSAGE = events.MessageReceived
_TYPE_NAMES = {cls.TYPE: cls.__name__.lower() for cls in PACKET_TYPES.values()}
SESSION = b"rmsecsim"
Bootstrap = Literal["head", "head+root", "all-heads", "static"]


@dataclasses.dataclass(frozen=True, slots=True)
class SimConfig:
    """Parameters of one run (see the module docstring for the phases).

    ``bootstrap`` is what a receiver is told: ``head`` (its planned head), ``head+root``,
    ``all-heads`` (every head and the root), or ``static`` (the machines' ``parent=``: bind
    without soliciting).  ``root_heads_only`` gives the sender ``max_children`` equal to its
    planned first-level heads, so receivers bind below heads as the plan intends; without it,
    the sender's advertisements draw receivers to itself while it has free slots.
    ``root_children`` is the number of first-level heads, the same at every group size (the
    sender's fan-out bounds its control load; larger groups get deeper trees); None lets the
    first level grow to ``max_children``.
    """

    receivers: int = 100
    heads: int | None = None
    messages: int = 1000
    message_size: int = 1000
    loss: float = 0.05
    loss_control: bool = True
    delay_min: float = 0.001
    delay_max: float = 0.005
    jitter: float = 0.0
    seed: int = 1
    transport: TransportConfig = dataclasses.field(default_factory=lambda: TransportConfig(multicast=True))
    bootstrap: Bootstrap = "head"
    root_heads_only: bool = True
    root_children: int | None = 4
    head_stagger: float = 0.5
    join_spread: float = 1.0
    bind_timeout: float = 60.0
    max_time: float = 600.0

    def __post_init__(self) -> None:
        if self.receivers < 1 or self.messages < 1 or self.message_size < 9:
            raise ConfigError("need receivers >= 1, messages >= 1, message_size >= 9")
        if self.bootstrap not in ("head", "head+root", "all-heads", "static"):
            raise ConfigError(f"bootstrap={self.bootstrap!r}: choose head, head+root, all-heads or static")

    def summary(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "transport"}
        defaults = TransportConfig().to_mapping()
        values["transport"] = {k: v for k, v in self.transport.to_mapping().items() if defaults.get(k) != v}
        return values


@dataclasses.dataclass(slots=True)
class _Member:
    """What the scenario tracks per receiver (kept tiny: there are 10^4 of them)."""

    delivered: int = 0
    mismatched: int = 0
    wrong_stream: int = 0
    ended: bool = False
    bound: bool = False


Reporter = Callable[[str], None]


def node_addr(index: int) -> Addr:
    """Node ``index`` lives at ``10.a.b.c:4000``: distinct, and valid on the wire."""
    return (f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", 4000)


def _rng_bytes(source: random.Random) -> Callable[[int], bytes]:
    return source.randbytes


def _built_at_start(make: Callable[..., Machine]) -> Callable[[float], Machine]:
    """A machine factory that passes the node's start time as the constructor's ``now``."""

    def build(now: float) -> Machine:
        return make(now=now)

    return build


class Scenario:
    """Builds the group for a :class:`SimConfig` and runs it; :meth:`run` returns the figures."""

    def __init__(self, config: SimConfig, *, report: Reporter | None = None) -> None:
        self.config = config
        self.report = report or (lambda _message: None)
        transport = config.transport
        self.plan: TreePlan = plan_tree(
            config.receivers, heads=config.heads, max_children=transport.max_children,
            root_children=config.root_children,
        )
        self.sim = Simulator(
            NetworkModel(
                delay_min=config.delay_min,
                delay_max=config.delay_max,
                jitter=config.jitter,
                loss=config.loss,
                loss_control=config.loss_control,
            ),
            seed=config.seed,
            multicast_addr=MULTICAST if transport.multicast else None,
        )
        content = random.Random(config.seed ^ 0x5EED)
        self.messages = [
            i.to_bytes(8, "big") + content.randbytes(config.message_size - 8) for i in range(config.messages)
        ]
        self.event_counts: Counter[str] = Counter()
        self.machine_rng = random.Random(config.seed * 7919 + 1)
        self._next_message = 0
        self._sending = False
        self._closed = False
        self._confirmed = False
        self._ended = 0
        self._bound_receivers = 0
        self._bound_heads = 0
        self._marks: dict[str, float] = {}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._build()

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        config, plan, sim = self.config, self.plan, self.sim
        transport = config.transport
        now = 0.0
        rng = _rng_bytes(self.machine_rng)
        self.root_addr = node_addr(0)
        root_config = transport
        if config.root_heads_only:
            first_level = sum(1 for p in plan.head_parent if p == ROOT)
            root_config = transport.replace(max_children=max(1, first_level))
        self.sender = Sender(root_config, session=SESSION, node_id=self._node_id(0), rng=rng, now=now)
        self._stream = self.sender.stream
        self._message_count = len(self.messages)
        self.root = sim.add_node(
            self.root_addr, self.sender, ROLE_SENDER, on_event=self._on_sender_event, on_flush=self._pump
        )
        sim.watch = self.root
        head_addrs = [node_addr(1 + h) for h in range(plan.heads)]
        self.head_nodes = []
        self._factories: dict[int, Callable[..., Machine]] = {}
        static = config.bootstrap == "static"
        for h in range(plan.heads):
            parent = self.root_addr if plan.head_parent[h] == ROOT else head_addrs[plan.head_parent[h]]
            bootstrap = [parent] if parent == self.root_addr else [parent, self.root_addr]
            index = sim.add_node(head_addrs[h], None, ROLE_HEAD, on_event=self._on_head_event)
            self._factories[index] = functools.partial(
                RepairHead, transport, session=SESSION, node_id=self._node_id(index), rng=rng,
                bootstrap=() if static else bootstrap, parent=parent if static else None,
            )
            self.head_nodes.append(index)
        self.members = []
        self.receiver_nodes = []
        first = 1 + plan.heads
        for r in range(config.receivers):
            planned = head_addrs[plan.receiver_head[r]]
            index = sim.add_node(node_addr(first + r), None, ROLE_RECEIVER, on_event=self._on_receiver_event)
            self._factories[index] = functools.partial(
                Receiver, transport, session=SESSION, node_id=self._node_id(index), rng=rng,
                bootstrap=() if static else self._receiver_bootstrap(planned, head_addrs),
                parent=planned if static else None,
            )
            self.members.append(_Member())
            self.receiver_nodes.append(index)
        self._first_receiver = first

    def _receiver_bootstrap(self, planned: Addr, head_addrs: list[Addr]) -> list[Addr]:
        mode = self.config.bootstrap
        if mode == "all-heads":
            return [*head_addrs, self.root_addr]
        bootstrap = [planned]
        if mode == "head+root":
            bootstrap.append(self.root_addr)
        return bootstrap

    @staticmethod
    def _node_id(index: int) -> bytes:
        return (0x51 << 56 | index).to_bytes(8, "big")

    # ------------------------------------------------------------------ callbacks

    def _on_sender_event(self, index: int, event: events.Event, now: float) -> None:
        self.event_counts["sender." + type(event).__name__] += 1
        if isinstance(event, events.StreamConfirmed) and event.stream == self.sender.stream:
            self._confirmed = True
            self._marks.setdefault("confirmed", now)
            self._check_done()

    def _on_head_event(self, index: int, event: events.Event, now: float) -> None:
        self.event_counts["head." + type(event).__name__] += 1
        if isinstance(event, events.Bound) and event.previous_id is None:
            self._bound_heads += 1

    def _on_receiver_event(self, index: int, event: events.Event, now: float) -> None:
        # Called for every message every receiver delivers (10^7 times at N = 10,000).
        member = self.members[index - self._first_receiver]
        if type(event) is _MESSAGE:
            if event.stream != self._stream:
                member.wrong_stream += 1
                return
            # Equality with the sent message at this position: in order, intact, no extras.
            k = member.delivered
            if k >= self._message_count or event.data != self.messages[k]:
                member.mismatched += 1
            member.delivered = k + 1
            return
        self.event_counts["receiver." + type(event).__name__] += 1
        if isinstance(event, events.Bound):
            if not member.bound:
                member.bound = True
                self._bound_receivers += 1
                if self._bound_receivers == self.config.receivers:
                    self._marks.setdefault("all_bound", now)
                    self.sim.call_at(now, self._start_data)
        elif isinstance(event, events.StreamEnded) and event.stream == self.sender.stream and not member.ended:
            member.ended = True
            self._ended += 1
            if self._ended == self.config.receivers:
                self._marks.setdefault("all_ended", now)
            self._check_done()

    def _check_done(self) -> None:
        if self._confirmed and self._ended == self.config.receivers:
            self._marks.setdefault("done", self.sim.now)
            self.sim.request_stop()

    def _start_data(self) -> None:
        if self._sending:
            return
        self._sending = True
        self._marks["data_start"] = self.sim.now
        self._snapshot("data_start")
        self.sim.flush(self.root)

    def _pump(self, index: int, now: float) -> None:
        """The sender's application: write while the transport accepts, then close."""
        if not self._sending or self._closed:
            return
        sender, messages = self.sender, self.messages
        while self._next_message < len(messages) and sender.writable:
            sender.send(messages[self._next_message], now)
            self._next_message += 1
        if self._next_message == len(messages):
            sender.close(now)
            self._closed = True
            self._marks["closed"] = now

    def _snapshot(self, name: str) -> None:
        counters = self.sim.counters
        self._snapshots[name] = {
            "sent": dict(counters.sent),
            "repairs_sent": dict(counters.repairs_sent),
            "lost_data": counters.lost_data,
            "lost_data_original": counters.lost_data_original,
            "lost_control": counters.lost_control,
            "control_at_sender": counters.control_received[self.root],
            "at_sender_by_type": dict(counters.watched_by_type),
            "control_at_heads_max": 0,
            "copies_delivered": counters.copies_delivered,
            "events": counters.events,
            "stats": self._stats_by_role(),
            "wall": time.perf_counter(),
        }

    # ------------------------------------------------------------------ running

    def run(self) -> dict[str, Any]:
        """Run every phase and return the JSON-ready result."""
        config, sim = self.config, self.sim
        wall_start = time.perf_counter()
        # The root only sends to the group; it does not join it (rmsec.api opens the root's
        # node with join_group=False), so multicast advertisements never reach it.
        sim.start(self.root, 0.0, join_group=False)
        factories = self._factories
        for h, node in enumerate(self.head_nodes):
            at = config.head_stagger * (self.plan.head_level[h] - 1) + 0.01 * (h % 10)
            sim.start(node, at, factory=_built_at_start(factories[node]))
        receivers_at = config.head_stagger * self.plan.depth + 0.1
        spread = random.Random(config.seed + 17)
        for node in self.receiver_nodes:
            at = receivers_at + spread.uniform(0.0, config.join_spread)
            sim.start(node, at, factory=_built_at_start(factories[node]))
        bind_deadline = receivers_at + config.join_spread + config.bind_timeout
        sim.call_at(bind_deadline, self._bind_timed_out)
        self.report(
            f"sim: {config.receivers} receivers, {self.plan.heads} heads ({self.plan.depth} levels), "
            f"{config.messages} x {config.message_size} B, loss {config.loss:.0%}"
        )
        last = time.perf_counter()
        step = 0.25
        while sim.now < config.max_time:
            if sim.run(until=min(config.max_time, sim.now + step)):
                break
            if time.perf_counter() - last > 5.0:
                last = time.perf_counter()
                self.report(self._progress_line())
        self._snapshot("end")
        wall = time.perf_counter() - wall_start
        result = self._result(wall)
        self.report(
            f"sim: done at t={sim.now:.2f}s in {wall:.1f}s wall; ok={result['delivery']['all_ok']}"
        )
        return result

    def _bind_timed_out(self) -> None:
        if not self._sending:
            self._marks["bind_timeout"] = self.sim.now
            self._start_data()

    def _progress_line(self) -> str:
        delivered = sum(m.delivered for m in self.members)
        total = self.config.receivers * self.config.messages
        return (
            f"sim: t={self.sim.now:.2f}s bound {self._bound_receivers}/{self.config.receivers} "
            f"sent {self._next_message}/{self.config.messages} delivered {delivered / total:.1%} "
            f"events {self.sim.counters.events:,}"
        )

    # ------------------------------------------------------------------ figures

    def _result(self, wall: float) -> dict[str, Any]:
        config, sim = self.config, self.sim
        start = self._snapshots.get("data_start", self._snapshots["end"])
        end = self._snapshots["end"]

        def delta(key: str) -> Any:
            return end[key] - start[key]

        def delta_map(key: str) -> dict[Any, int]:
            keys = set(end[key]) | set(start[key])
            return {k: end[key].get(k, 0) - start[key].get(k, 0) for k in keys}

        packets_per_message = max(1, math.ceil(config.message_size / config.transport.payload_size))
        data_packets = config.messages * packets_per_message
        wire_repairs = delta_map("repairs_sent")

        def stat_delta(role: str, key: str) -> int | None:
            after = end["stats"].get(role, {}).get(key)
            return None if after is None else after - start["stats"].get(role, {}).get(key, 0)

        # The machines' own count of repairs answers "who repaired": on the unicast overlay a
        # head also *forwards* repaired packets (flag set) to children that never had them,
        # which the wire count would take for repairs.
        repairs = {role: stat_delta(role, "repairs_sent") for role in (ROLE_SENDER, ROLE_HEAD, ROLE_RECEIVER)}
        repairs = {
            role: wire_repairs.get(role, 0) if n is None else n for role, n in repairs.items()
        }
        by_heads, by_sender = repairs.get(ROLE_HEAD, 0) or 0, repairs.get(ROLE_SENDER, 0) or 0
        repairs_total = sum(n or 0 for n in repairs.values())
        lost_data = delta("lost_data")
        sent = delta_map("sent")
        control_at_sender = delta("control_at_sender")
        at_sender = {
            _TYPE_NAMES.get(t, str(t)): n
            for t, n in sorted(delta_map("at_sender_by_type").items())
            if t != DATA_TYPE and n
        }
        control_by_type: Counter[str] = Counter()
        for (role, ptype), n in sent.items():
            if ptype != DATA_TYPE and n:
                control_by_type[f"{role}/{ptype}"] += n
        head_control = [sim.counters.control_received[i] for i in self.head_nodes]

        ok = [
            m.delivered == config.messages and not m.mismatched and not m.wrong_stream
            for m in self.members
        ]
        marks = self._marks
        data_time = marks.get("done", sim.now) - marks.get("data_start", 0.0)
        data_wall = end["wall"] - start["wall"]
        stats = end["stats"]
        return {
            "config": config.summary(),
            "tree": {
                "heads": self.plan.heads,
                "levels": self.plan.depth,
                "root_children": sum(1 for p in self.plan.head_parent if p == ROOT),
            },
            "delivery": {
                "all_ok": all(ok) and len(ok) == config.receivers,
                "receivers_ok": sum(ok),
                "receivers": config.receivers,
                "stream_confirmed": self._confirmed,
                "receivers_ended": self._ended,
                "messages_sent": self._next_message,
                "min_delivered": min(m.delivered for m in self.members),
            },
            "metrics": {
                "data_packets": data_packets,
                "control_at_sender": control_at_sender,
                "control_at_sender_per_1000_data": 1000 * control_at_sender / data_packets,
                "control_at_sender_by_type": at_sender,
                "control_at_head_max": max(head_control, default=0),
                "repairs_by_heads": by_heads,
                "repairs_by_sender": by_sender,
                "repairs_by_receivers": repairs.get(ROLE_RECEIVER, 0),
                "repair_datagrams_on_wire": dict(sorted(wire_repairs.items())),
                "sender_data_sent": stat_delta(ROLE_SENDER, "data_sent"),
                "receiver_duplicates": stat_delta(ROLE_RECEIVER, "duplicates") or 0,
                "head_repair_share": by_heads / (by_heads + by_sender) if by_heads + by_sender else None,
                "data_copies_lost": lost_data,
                "data_copies_lost_original": delta("lost_data_original"),
                "retransmissions_per_loss": repairs_total / lost_data if lost_data else None,
                "control_sent_by_role_type": dict(sorted(control_by_type.items())),
            },
            "time": {
                "bind_sim_s": marks.get("all_bound", marks.get("bind_timeout", math.nan)),
                "data_sim_s": data_time,
                "marks": marks,
                "wall_s": wall,
                "data_wall_s": data_wall,
                "events": sim.counters.events,
                "events_per_wall_s": sim.counters.events / wall if wall else None,
            },
            "events": dict(sorted(self.event_counts.items())),
            "network": sim.counters.summary(),
            "machine_stats": stats,
        }

    def _stats_by_role(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for index, machine in enumerate(self.sim.machines):
            stats_of = getattr(machine, "stats", None)
            if stats_of is None:
                continue
            role_totals = totals.setdefault(self.sim.roles[index], {})
            for key, value in stats_of().items():
                if isinstance(value, int):
                    role_totals[key] = role_totals.get(key, 0) + value
        return totals


def run(config: SimConfig, *, report: Reporter | None = None) -> dict[str, Any]:
    """Build and run one simulated group; see :meth:`Scenario._result` for the figures."""
    return Scenario(config, report=report).run()
