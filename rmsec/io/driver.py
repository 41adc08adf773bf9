"""The node driver: runs one sans-IO transport machine on trio (DESIGN.md §2 rule 4).

Four small tasks share the machine; trio runs one at a time and every machine call is
synchronous, so no lock is needed:

* one **receive task per socket**: wait until readable, drain up to :data:`RECV_BATCH`
  datagrams with non-blocking ``recv_nowait`` into ``machine.receive_datagram``, then
  :meth:`NodeDriver._after` once for the whole batch;
* one **timer task**: a single cancel scope whose deadline is ``machine.get_timer()``; every
  call into the machine moves that deadline, so the timer is "restarted" by assignment rather
  than by spawning tasks; when it fires, ``handle_timer(now)``;
* one **writer task** that only runs when the socket pushed back: output is sent with
  non-blocking ``send_nowait`` straight from ``_after``; on :class:`BlockingIOError` the rest is
  queued (in order) and the writer waits until writable;
* one **flush task** for :meth:`NodeDriver.command_soon`: a burst of commands between two
  scheduling points (an application sending many messages) is written out once, at the next
  scheduling point, so the kernel sees a burst: on loopback every ``sendto`` that finds the
  peer asleep pays for waking it, so one wakeup per burst instead of per datagram roughly
  doubles single-receiver goodput (docs/bench-io.md);
* one **event task**: pulls ``machine.next_event()`` into a bounded memory channel; when the
  channel is full it blocks there, so the machine's own queue grows until it applies its
  back-pressure (a receiver that is not read from becomes a slow receiver, by design).

``_after`` is the one place that runs after every machine call: flush, move the timer, wake the
event task, and wake whoever waits in :meth:`NodeDriver.wait_until`.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from rmsec.errors import MalformedPacket
from rmsec.io.base import Addr, DatagramSocket, NodeSockets
from rmsec.transport.events import Event

#: Datagrams read per wakeup before the node flushes its output and yields to other tasks.
RECV_BATCH = 256
#: Events the driver buffers between the machine and the application.
EVENT_CAPACITY = 256

T = TypeVar("T")


class Machine(Protocol):
    """The transport machine interface (docs/dev/TEAM.md)."""

    @property
    def node_id(self) -> bytes: ...

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Event | None: ...

    def stats(self) -> dict[str, int]: ...


class NodeDriver:
    """Drive ``machine`` over ``sockets`` until cancelled.

    ``observe(event)`` sees every event as it leaves the machine (state tracking: bound, pruned,
    confirmed); only events for which ``keep(event)`` is true go on to :attr:`events`, the
    bounded channel the application reads.  A node whose application reads nothing keeps
    nothing, so its events never block.
    """

    def __init__(
        self,
        machine: Machine,
        sockets: NodeSockets,
        *,
        observe: Callable[[Event], None] | None = None,
        keep: Callable[[Event], bool] | None = None,
        event_capacity: int = EVENT_CAPACITY,
    ) -> None:
        self.machine = machine
        self.sockets = sockets
        self._observe = observe
        self._keep = keep
        self._event_send, self.events = trio.open_memory_channel[Event](event_capacity)
        self._pending: deque[tuple[bytes, Addr]] = deque()
        self._writer_wakeup = trio.Event()
        self._flush_wakeup = trio.Event()
        self._event_wakeup = trio.Event()
        self._changed = trio.Event()
        self._timer_scope: trio.CancelScope | None = None
        self._running = False
        self.malformed = 0
        self.timer_fires = 0

    # -- public --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``task_status.started()`` once every task is in place."""
        try:
            async with trio.open_nursery() as nursery:
                for sock in self.sockets.receivers:
                    nursery.start_soon(self._receive_loop, sock)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._writer_loop)
                nursery.start_soon(self._flush_loop)
                nursery.start_soon(self._event_loop)
                self._running = True
                self._after()  # the machine may have output already (a solicitation, say)
                task_status.started()
        finally:
            self._running = False
            self._event_send.close()

    def command(self, call: Callable[[float], T]) -> T:
        """Run ``call(now)`` on the machine (a command such as ``send``), then flush."""
        result = call(trio.current_time())
        self._after()
        return result

    def command_soon(self, call: Callable[[float], T]) -> T:
        """Like :meth:`command`, but flush at the next scheduling point instead of now.

        For hot paths that issue many commands between checkpoints (``send`` in a loop): the
        output of the whole burst leaves together.  The flush task is woken at once, so the
        output leaves as soon as the caller yields (within a scheduling round or two).
        """
        result = call(trio.current_time())
        self._flush_wakeup.set()
        return result

    def final(self, call: Callable[[float], object] | None = None) -> None:
        """Last words during cleanup: run ``call(now)`` and send what fits without waiting."""
        if call is not None:
            call(trio.current_time())
        with contextlib.suppress(trio.ClosedResourceError, OSError):
            self._flush()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is re-checked after every machine call."""
        while not predicate():
            await self._changed.wait()

    def stats(self) -> dict[str, int]:
        result = dict(self.machine.stats())
        result.update(self.sockets.stats())
        result["io_malformed"] = self.malformed
        result["io_send_backlog"] = len(self._pending)
        return result

    # -- the one place that runs after every machine call ---------------------------------------

    def _after(self) -> None:
        self._flush()
        scope = self._timer_scope
        if scope is not None:
            deadline = self.machine.get_timer()
            scope.deadline = math.inf if deadline is None else deadline
        self._event_wakeup.set()
        self._changed.set()
        self._changed = trio.Event()

    def _flush(self) -> None:
        out = self.machine.datagrams_to_send(trio.current_time())
        if not out:
            return
        if self._pending:  # keep order behind what is already waiting for the socket
            self._pending.extend(out)
            return
        send = self.sockets.primary.send_nowait
        for index, (data, addr) in enumerate(out):
            try:
                send(data, addr)
            except BlockingIOError:
                self._pending.extend(out[index:])
                self._writer_wakeup.set()
                return

    # -- tasks ---------------------------------------------------------------------------------

    async def _receive_loop(self, sock: DatagramSocket) -> None:
        machine = self.machine
        while True:
            await sock.wait_readable()
            now = trio.current_time()
            for _ in range(RECV_BATCH):
                try:
                    data, addr = sock.recv_nowait()
                except BlockingIOError:
                    break
                try:
                    machine.receive_datagram(data, addr, now)
                except MalformedPacket:
                    # The machine should count and drop these itself; never let one kill a node.
                    self.malformed += 1
            self._after()

    async def _timer_loop(self) -> None:
        machine = self.machine
        while True:
            deadline = machine.get_timer()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            deadline = machine.get_timer()
            now = trio.current_time()
            if deadline is not None and deadline <= now:
                self.timer_fires += 1
                machine.handle_timer(now)
                self._after()

    async def _writer_loop(self) -> None:
        sock = self.sockets.primary
        pending = self._pending
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            while pending:
                data, addr = pending[0]
                try:
                    sock.send_nowait(data, addr)
                except BlockingIOError:
                    await sock.wait_writable()
                    continue
                pending.popleft()

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = trio.Event()
            self._after()

    async def _event_loop(self) -> None:
        machine = self.machine
        observe, keep, channel = self._observe, self._keep, self._event_send
        taken = 0
        while True:
            event = machine.next_event()
            if event is None:
                if taken:
                    # Taking events out can change what the machine does (a receiver resumes
                    # accepting), and observers may have changed what ``wait_until`` sees.
                    taken = 0
                    self._after()
                    continue
                self._event_wakeup = trio.Event()
                await self._event_wakeup.wait()
                continue
            taken += 1
            if observe is not None:
                observe(event)
            if keep is not None and keep(event):
                try:
                    channel.send_nowait(event)
                except trio.WouldBlock:
                    # Full: stop pulling until the application reads; meanwhile the machine
                    # queues, then applies its own back-pressure.
                    self._after()
                    await channel.send(event)
            if taken % RECV_BATCH == 0:
                self._after()
                await trio.lowlevel.checkpoint()
