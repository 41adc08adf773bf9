"""Discrete-event engine that drives sans-IO transport machines exactly as a driver would.

One heap holds every future action as ``(time, seq, kind, node, payload, source)``; ``seq``
breaks ties in FIFO order so runs are reproducible.  A multicast datagram is a single heap
entry, a *fan-out cursor*: delays are ``access[src] + access[dst]``, so every copy of one
datagram arrives in the order of the members' access delays, which the engine keeps sorted;
the cursor delivers the copies one by one in that order and goes back into the heap only when
another event comes first.  (Cursors are kept in a small heap of their own, merged with the
main one by ``(time, seq)``, which is the same order as one heap.)  Ten thousand copies thus cost no heap growth and few heap
operations.  The engine calls each machine's
``receive_datagram`` / ``handle_timer`` and then *flushes* that node only: it drains events,
sends what ``datagrams_to_send`` returns and re-arms the node's single timer entry when
``get_timer()`` changed.  Superseded timer entries stay in the heap and are skipped when they
surface (lazy deletion), so the cost per step does not depend on how many nodes exist: only
nodes that were touched are looked at, which is what makes 10^4 receivers affordable.

The engine is not under the sans-IO rule: it owns the clock and a seeded
:class:`random.Random` for delays and loss.  It knows nothing about trees or streams; the
scenario (:mod:`rmsec.sim.scenario`) builds those on top and observes through callbacks and
the :class:`Counters`.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any, Protocol

from rmsec.errors import RmsecError
from rmsec.sim.network import NetworkModel
from rmsec.sim.wireinfo import DATA_TYPE, classify
from rmsec.transport.events import Event
from rmsec.wire.packets import Addr

_DELIVER, _TIMER, _CALL, _FANOUT = 0, 1, 2, 3

EventHook = Callable[[int, Event, float], None]
FlushHook = Callable[[int, float], None]


class Machine(Protocol):
    """What the engine needs from a sender, repair head or receiver (docs/dev/TEAM.md)."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> Event | None: ...


class SimulationError(RmsecError):
    """A machine raised while the engine drove it, or the run went out of bounds."""


MachineFactory = Callable[[float], Machine]


class Dormant:
    """Stands in for a node whose machine is built when it starts (see :meth:`Simulator.start`).

    Machines take ``now`` in their constructor and arm their first timers from it, so a node
    that joins at t=3 s must be built at t=3 s, not when the scenario is laid out.
    """

    def _never(self, *args: object) -> Any:
        raise SimulationError("a dormant node was driven before it started")

    receive_datagram = datagrams_to_send = get_timer = handle_timer = next_event = _never


@dataclasses.dataclass(slots=True)
class Counters:
    """Everything the engine counts while moving datagrams (mutable, cheap to bump).

    ``sent`` is keyed by ``(role, packet type)`` and counts datagrams handed to the network
    (a multicast datagram counts once); ``lost_data`` and ``lost_control`` count dropped
    copies; ``control_received`` counts, per node, non-DATA copies that reached it.
    """

    sent: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    bytes_sent: int = 0
    repairs_sent: dict[str, int] = dataclasses.field(default_factory=dict)
    copies_delivered: int = 0
    lost_data: int = 0
    lost_data_original: int = 0
    lost_control: int = 0
    undeliverable: int = 0
    events: int = 0
    control_received: list[int] = dataclasses.field(default_factory=list)
    #: Copies delivered to the watched node (see :attr:`Simulator.watch`), by packet type.
    watched_by_type: dict[int, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready copy, with the ``(role, type)`` keys flattened to ``"role/type"``."""
        return {
            "sent": {f"{role}/{ptype}": n for (role, ptype), n in sorted(self.sent.items())},
            "bytes_sent": self.bytes_sent,
            "repairs_sent": dict(sorted(self.repairs_sent.items())),
            "copies_delivered": self.copies_delivered,
            "lost_data": self.lost_data,
            "lost_data_original": self.lost_data_original,
            "lost_control": self.lost_control,
            "undeliverable": self.undeliverable,
            "events": self.events,
        }


class _Fanout:
    """The copies of one multicast datagram still to deliver, in arrival order."""

    __slots__ = ("data", "depart", "is_data", "jitter", "loss", "position", "repair", "sender", "source", "targets")

    def __init__(
        self, data: bytes, sender: int, source: Addr, depart: float, targets: tuple[int, ...],
        *, is_data: bool, repair: bool, loss: float,
    ) -> None:
        self.data = data
        self.sender = sender
        self.source = source
        self.depart = depart
        self.targets = targets
        self.position = 0
        self.is_data = is_data
        self.repair = repair
        self.loss = loss


class Simulator:
    """Nodes, a clock and a heap of pending deliveries, timers and scheduled calls."""

    def __init__(self, network: NetworkModel, *, seed: int = 0, multicast_addr: Addr | None = None) -> None:
        self.network = network
        self.now = 0.0
        self.counters = Counters()
        self._random = random.Random(seed)
        self._multicast = multicast_addr
        self._heap: list[tuple[float, int, int, int, Any, Any]] = []
        # Fan-out cursors live in a heap of their own (a handful of entries, whatever the
        # group size): the per-copy "is anything else due first?" check and the hand-over
        # between cursors then never touch the big heap of timers.  Both heaps share one
        # sequence counter, and run() takes the smaller head of the two, so the order of
        # events is exactly that of a single heap.
        self._fans: list[tuple[float, int, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._stop = False
        #: Node whose incoming traffic is broken down by type in ``counters.watched_by_type``.
        self.watch = -1
        self.machines: list[Machine] = []
        self.addrs: list[Addr] = []
        self.roles: list[str] = []
        self._index: dict[Addr, int] = {}
        self._access: list[float] = []
        self._timer_at: list[float | None] = []
        self._running: list[bool] = []
        # The multicast group: started nodes sorted by access delay (= arrival order of the
        # copies of any multicast datagram), and a snapshot of it for fan-out cursors.
        self._group_delay: list[float] = []
        self._group: list[int] = []
        self._group_snapshot: tuple[int, ...] | None = ()
        self._until = 0.0
        self._switch = False
        self._on_event: list[EventHook | None] = []
        self._on_flush: list[FlushHook | None] = []
        self._any_flush_hook = False  # lets the fan-out loop skip the per-copy lookup

    # ---------------------------------------------------------------- building

    def add_node(
        self,
        addr: Addr,
        machine: Machine | None,
        role: str,
        *,
        on_event: EventHook | None = None,
        on_flush: FlushHook | None = None,
    ) -> int:
        """Register a node (not yet running) and draw its access delay; returns its index.

        ``machine`` may be None when :meth:`start` will be given a factory instead.
        """
        if addr in self._index:
            raise SimulationError(f"address {addr} used twice")
        index = len(self.machines)
        self.machines.append(machine if machine is not None else Dormant())
        self.addrs.append(addr)
        self.roles.append(role)
        self._index[addr] = index
        half_min, half_max = self.network.delay_min / 2, self.network.delay_max / 2
        self._access.append(self._random.uniform(half_min, half_max))
        self._timer_at.append(None)
        self._running.append(False)
        self._on_event.append(on_event)
        self._on_flush.append(on_flush)
        if on_flush is not None:
            self._any_flush_hook = True
        self.counters.control_received.append(0)
        return index

    def index_of(self, addr: Addr) -> int:
        return self._index[addr]

    def link_delay(self, a: int, b: int) -> float:
        """Fixed part of the one-way delay from node ``a`` to node ``b``."""
        return self._access[a] + self._access[b]

    # ---------------------------------------------------------------- scheduling

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``when`` (scenario phases, node starts)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), _CALL, -1, action, None))

    def start(
        self,
        index: int,
        when: float | None = None,
        factory: MachineFactory | None = None,
        *,
        join_group: bool = True,
    ) -> None:
        """Bring node ``index`` up at ``when``: it joins the multicast group (unless
        ``join_group`` is False, as for a root sender, which only sends to the group on
        every real network) and is flushed.

        With ``factory``, the node's machine is built then, from the simulated time.
        """

        def up() -> None:
            if factory is not None:
                self.machines[index] = factory(self.now)
            if not self._running[index]:
                self._running[index] = True
                if join_group:
                    delay = self._access[index]
                    at = bisect.bisect_right(self._group_delay, delay)
                    self._group_delay.insert(at, delay)
                    self._group.insert(at, index)
                    self._group_snapshot = None
                self.flush(index)

        if when is None or when <= self.now:
            up()
        else:
            self.call_at(when, up)

    def crash(self, index: int) -> None:
        """Stop node ``index`` now, silently: what it had in flight still arrives elsewhere."""
        if self._running[index]:
            self._running[index] = False
            if index in self._group:
                at = self._group.index(index)
                del self._group[at]
                del self._group_delay[at]
                self._group_snapshot = None
            self._timer_at[index] = None

    def running(self, index: int) -> bool:
        return self._running[index]

    def request_stop(self) -> None:
        """End :meth:`run` after the current step (a scenario's completion condition)."""
        self._stop = True

    # ---------------------------------------------------------------- the loop

    def run(self, until: float, *, max_events: int | None = None) -> bool:
        """Process events up to simulated time ``until``; True if stopped by request."""
        # Ten thousand machines are millions of long-lived objects that the cyclic collector
        # would traverse again and again, while a run creates almost no reference cycles:
        # collect rarely while the loop runs (the previous thresholds come back after).
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], 50_000), thresholds[1], max(thresholds[2], 1000))
        try:
            return self._run(until, max_events)
        finally:
            gc.set_threshold(*thresholds)

    def _run(self, until: float, max_events: int | None) -> bool:
        self._stop = False
        self._until = until
        self._switch = max_events is None  # see _fan_out
        heap = self._heap
        fans = self._fans
        pop = heapq.heappop
        machines = self.machines
        timer_at = self._timer_at
        running = self._running
        flush = self.flush
        budget = max_events if max_events is not None else -1
        while (heap or fans) and not self._stop:
            # the earlier of the two heads, by (time, seq): the order of one merged heap
            first = fans if fans and (not heap or fans[0] < heap[0]) else heap
            if first[0][0] > until:
                break
            when, _, kind, node, payload, source = pop(first)
            self.now = when
            try:
                if kind == _DELIVER:
                    if not running[node]:
                        continue
                    machines[node].receive_datagram(payload, source, when)
                    flush(node)
                elif kind == _TIMER:
                    if timer_at[node] != payload or not running[node]:
                        continue  # superseded by a later get_timer(), or the node is gone
                    timer_at[node] = None
                    machines[node].handle_timer(when)
                    flush(node)
                elif kind == _FANOUT:
                    self._fan_out(payload)
                else:
                    payload()
            except SimulationError:
                raise
            except Exception as exc:
                where = f"node {node} ({self.roles[node]})" if node >= 0 else "scheduled call"
                raise SimulationError(f"{where} at t={when:.6f}: {exc!r}") from exc
            self.counters.events += 1
            if budget >= 0:
                budget -= 1
                if budget == 0:
                    raise SimulationError(f"event budget exhausted at t={when:.6f}")
        if not self._stop and self.now < until:
            self.now = until
        return self._stop

    def flush(self, index: int) -> None:
        """Collect what node ``index`` has to say after being touched; re-arm its timer."""
        now = self.now
        machine = self.machines[index]
        hook = self._on_event[index]
        event = machine.next_event()
        while event is not None:
            if hook is not None:
                hook(index, event, now)
            event = machine.next_event()
        pump = self._on_flush[index]
        if pump is not None:
            pump(index, now)
        for data, dst in machine.datagrams_to_send(now):
            self._send(index, data, dst, now)
        deadline = machine.get_timer()
        if deadline != self._timer_at[index]:
            self._timer_at[index] = deadline
            if deadline is not None:
                when = deadline if deadline > now else now
                heapq.heappush(self._heap, (when, next(self._seq), _TIMER, index, deadline, None))

    def _send(self, index: int, data: bytes, dst: Addr, now: float) -> None:
        counters = self.counters
        ptype, repair = classify(data)
        role = self.roles[index]
        key = (role, ptype)
        counters.sent[key] = counters.sent.get(key, 0) + 1
        counters.bytes_sent += len(data)
        if repair:
            counters.repairs_sent[role] = counters.repairs_sent.get(role, 0) + 1
        is_data = ptype == DATA_TYPE
        network = self.network
        loss = network.loss if (is_data or network.loss_control) else 0.0
        depart = now + self._access[index]
        if dst == self._multicast:
            targets = self._group_snapshot
            if targets is None:
                targets = self._group_snapshot = tuple(self._group)
            if targets:
                cursor = _Fanout(
                    data, index, self.addrs[index], depart, targets,
                    is_data=is_data, repair=repair, loss=loss,
                )
                first = depart + self._access[targets[0]]
                heapq.heappush(self._fans, (first, next(self._seq), _FANOUT, index, cursor, None))
            return
        target = self._index.get(dst)
        if target is None:
            counters.undeliverable += 1
            return
        if loss and self._random.random() < loss:
            self._count_loss(is_data, repair)
            return
        arrive = depart + self._access[target]
        if network.jitter:
            arrive += network.jitter * self._random.random()
        heapq.heappush(self._heap, (arrive, next(self._seq), _DELIVER, target, data, self.addrs[index]))
        counters.copies_delivered += 1
        if not is_data:
            counters.control_received[target] += 1
        if target == self.watch:
            counters.watched_by_type[ptype] = counters.watched_by_type.get(ptype, 0) + 1

    def _count_loss(self, is_data: bool, repair: bool) -> None:
        counters = self.counters
        if is_data:
            counters.lost_data += 1
            if not repair:
                counters.lost_data_original += 1
        else:
            counters.lost_control += 1

    def _fan_out(self, cursor: _Fanout) -> None:
        """Deliver a multicast datagram's copies in arrival order until another event is due.

        Each copy is lost independently; per-datagram jitter is not applied to multicast
        (it would break the arrival order the cursor relies on).  This is the simulator's
        innermost loop (one pass per delivered copy), so :meth:`flush` is inlined here.
        """
        heap = self._heap
        fans = self._fans
        access = self._access
        running = self._running
        machines = self.machines
        counters = self.counters
        control_received = counters.control_received
        timer_at = self._timer_at
        on_event = self._on_event
        on_flush = self._on_flush
        send = self._send
        push = heapq.heappush
        heapreplace, heappop = heapq.heapreplace, heapq.heappop
        seqs = self._seq
        rnd = self._random.random
        targets = cursor.targets
        watch = self.watch
        pumps = self._any_flush_hook
        data, source, sender = cursor.data, cursor.source, cursor.sender
        loss, is_data = cursor.loss, cursor.is_data
        depart = cursor.depart
        count = len(targets)
        position = cursor.position
        now = self.now
        delivered = 0
        steps = 0  # events processed here, added to counters.events at the end
        try:
            while True:
                target = targets[position]
                position += 1
                if target != sender and running[target]:
                    if loss and rnd() < loss:
                        self._count_loss(is_data, cursor.repair)
                    else:
                        delivered += 1
                        if not is_data:
                            control_received[target] += 1
                        if target == watch:
                            ptype = classify(data)[0]
                            counters.watched_by_type[ptype] = counters.watched_by_type.get(ptype, 0) + 1
                        machine = machines[target]
                        machine.receive_datagram(data, source, now)
                        # flush(target), inline
                        event = machine.next_event()
                        if event is not None:
                            hook = on_event[target]
                            while event is not None:
                                if hook is not None:
                                    hook(target, event, now)
                                event = machine.next_event()
                        if pumps:
                            pump = on_flush[target]
                            if pump is not None:
                                pump(target, now)
                        out = machine.datagrams_to_send(now)
                        if out:
                            for datagram, dst in out:
                                send(target, datagram, dst, now)
                        deadline = machine.get_timer()
                        if deadline != timer_at[target]:
                            timer_at[target] = deadline
                            if deadline is not None:
                                when = deadline if deadline > now else now
                                push(heap, (when, next(seqs), _TIMER, target, deadline, None))
                mine = None
                if position < count:
                    arrive = depart + access[targets[position]]
                    if (not heap or heap[0][0] > arrive) and (not fans or fans[0][0] > arrive):
                        self.now = now = arrive
                        steps += 1
                        continue
                    cursor.position = position
                    mine = (arrive, next(seqs), _FANOUT, sender, cursor, None)
                # Something else is due first.  When it is another multicast datagram's next
                # copy (the usual case while many are in flight), take that cursor over here
                # instead of returning to run(): exactly the entry run() would pop next.
                if (
                    not self._switch
                    or self._stop
                    or not fans
                    or (heap and heap[0] < fans[0])
                    or fans[0][0] > self._until
                ):
                    if mine is not None:
                        push(fans, mine)
                    return
                entry = heapreplace(fans, mine) if mine is not None else heappop(fans)
                cursor = entry[4]
                targets, position, count = cursor.targets, cursor.position, len(cursor.targets)
                data, source, sender = cursor.data, cursor.source, cursor.sender
                loss, is_data, depart = cursor.loss, cursor.is_data, cursor.depart
                self.now = now = entry[0]
                steps += 1
        except SimulationError:
            raise
        except Exception as exc:
            raise SimulationError(
                f"node {targets[position - 1]} ({self.roles[targets[position - 1]]}) at t={now:.6f}: {exc!r}"
            ) from exc
        finally:
            counters.copies_delivered += delivered
            counters.events += steps
