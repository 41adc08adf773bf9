"""The public trio API (DESIGN.md §6): ``open_sender``, ``open_head``, ``open_receiver``.

Each is an async context manager that returns once its node is ready, in the
``nursery.start`` sense: a sender is listening (its announcement is known), a head or receiver
has bound into the repair tree (the machine reported ``Bound``).  None takes a timeout: wrap
the call in ``trio.fail_after`` / ``move_on_after`` when you want one.

Inside, each node is one sans-IO machine from :mod:`rmsec.transport` run by a
:class:`~rmsec.io.driver.NodeDriver` over the sockets of the chosen network.  This module only
translates: announcement in, machine built, events out as :class:`Message` objects and an
:class:`EventLog`.

End of iteration (a decision recorded here and in docs/architecture.md): ``async for`` over a
receiver ends normally when every stream it has seen has ended; it raises
:class:`rmsec.errors.Pruned` (after every message delivered before the prune) when the parent
removed this node from the tree, because silently ending would hide the data loss.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from rmsec import transport
from rmsec.announcement import Announcement, announcement_from
from rmsec.errors import ChannelClosed, ConfigError, Pruned
from rmsec.io.base import Addr, Network, NodeSockets
from rmsec.io.driver import RECV_BATCH, Machine, NodeDriver
from rmsec.io.multicast import IpMulticastNetwork, ip_multicast
from rmsec.io.udp import udp
from rmsec.transport import events as ev
from rmsec.transport.config import JoinPolicyName, TransportConfig
from rmsec.wire.packets import SESSION_ID_LEN

__all__ = [
    "EventLog",
    "HeadChannel",
    "Message",
    "ReceiverChannel",
    "SenderChannel",
    "open_head",
    "open_receiver",
    "open_sender",
]

E = TypeVar("E", bound=ev.Event)
AnnouncementLike = bytes | Announcement
#: Transport events remembered per node for ``node.events`` (oldest forgotten first).
EVENT_LOG_SIZE = 4096


#: Sends between full scheduling rounds while the send queue has room.
SEND_YIELD_EVERY = 16
#: Messages a receiver takes from its channel between full scheduling rounds: as many as the
#: receive task drains from the socket in one round (``RECV_BATCH``), so the application keeps
#: pace.  One round per message would let the receive task outrun it 256 to 1 until the
#: transport's back-pressure drops data.
RECEIVE_YIELD_EVERY = RECV_BATCH


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One application message as delivered: in order and exactly once per sender.

    ``sender`` is the stream id of the sending node; ``epoch`` is the key epoch it was
    protected under (always 0 in a group without security).
    """

    sender: int
    seq: int
    data: bytes
    epoch: int = 0


class EventLog:
    """The transport events a node has seen (everything but messages), newest last.

    ``await log.wait_for(events.MemberPruned)`` returns the first matching event, past or
    future, so a test or an application cannot miss one that happened before it asked.
    """

    def __init__(self, maxlen: int = EVENT_LOG_SIZE) -> None:
        self._items: deque[ev.Event] = deque(maxlen=maxlen)
        self._changed = trio.Event()

    def __iter__(self) -> Iterator[ev.Event]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def of_type(self, kind: type[E]) -> list[E]:
        return [item for item in self._items if isinstance(item, kind)]

    async def wait_for(self, kind: type[E], predicate: Callable[[E], bool] | None = None) -> E:
        while True:
            for item in self._items:
                if isinstance(item, kind) and (predicate is None or predicate(item)):
                    return item
            await self._changed.wait()

    def append(self, event: ev.Event) -> None:
        self._items.append(event)
        self._changed.set()
        self._changed = trio.Event()


class _Node:
    """What every channel has: the machine, its driver, its address, events and stats."""

    def __init__(self, machine: Any, driver: NodeDriver, sockets: NodeSockets) -> None:
        self._machine = machine
        self._driver = driver
        self._sockets = sockets
        self.events = EventLog()
        self.bound_to: Addr | None = None
        self.pruned: ev.PrunedByParent | None = None

    @property
    def address(self) -> Addr:
        """The node's own (unicast) address."""
        return self._sockets.local_addr

    @property
    def node_id(self) -> bytes:
        return bytes(self._machine.node_id)

    @property
    def machine(self) -> Any:
        """The sans-IO machine (for tests and diagnostics; do not call it from outside)."""
        return self._machine

    def stats(self) -> dict[str, int]:
        """Machine counters plus ``io_*`` socket counters."""
        return self._driver.stats()

    def _observe(self, event: ev.Event) -> None:
        if isinstance(event, ev.MessageReceived):
            return
        self.events.append(event)
        if isinstance(event, ev.Bound):
            self.bound_to = event.parent_addr
        elif isinstance(event, ev.PrunedByParent):
            self.pruned = event


class SenderChannel(_Node):
    """The sending side of one stream (``async with rmsec.open_sender(...) as tx``)."""

    def __init__(
        self, machine: Any, driver: NodeDriver, sockets: NodeSockets, announcement: bytes
    ) -> None:
        super().__init__(machine, driver, sockets)
        self.announcement = announcement
        self.confirmed_stream: int | None = None
        self._closed = False
        self._sends_since_yield = 0

    @property
    def stream(self) -> int:
        return int(self._machine.stream)

    @property
    def writable(self) -> bool:
        return bool(self._machine.writable)

    async def send(self, data: bytes, *, encrypt: bool | None = None) -> int:
        """Queue one message, waiting first while the send queue is above its high-water mark.

        Returns the sequence number of its first packet.  ``encrypt`` belongs to secured
        groups (DESIGN.md §6); asking for encryption in a group without security is an error
        rather than a silent plaintext send.
        """
        if encrypt:
            raise ConfigError("this group has no security: open a controller to encrypt")
        if self._closed:
            raise ChannelClosed("the stream was closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        machine = self._machine
        if not machine.writable:
            await self._wait_writable()
        else:
            # A full scheduling round per message costs more than the message itself: yield
            # to the other tasks (acks, timers) every SEND_YIELD_EVERY sends, and stay a cancel
            # point on every one.
            self._sends_since_yield += 1
            if self._sends_since_yield >= SEND_YIELD_EVERY:
                self._sends_since_yield = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
        seq: int = self._driver.command_soon(lambda now: machine.send(bytes(data), now))
        return seq

    async def aclose(self) -> None:
        """End the stream and wait until every live member holds all of it."""
        machine = self._machine
        if not self._closed:
            self._closed = True
            self._driver.command(machine.close)
        await self._driver.wait_until(lambda: bool(machine.confirmed or machine.closed))
        self._raise_if_removed()

    async def _wait_writable(self) -> None:
        """Wait for room in the send queue; a secondary sender removed from the tree (pruned
        by the root) never gets any: it raises instead of waiting for ever."""
        machine = self._machine
        await self._driver.wait_until(lambda: bool(machine.writable or machine.closed))
        self._raise_if_removed()

    def _raise_if_removed(self) -> None:
        machine = self._machine
        if machine.closed and not machine.confirmed:
            raise ChannelClosed("this sender was removed from the repair tree (pruned by its parent)")

    def _observe(self, event: ev.Event) -> None:
        super()._observe(event)
        if isinstance(event, ev.StreamConfirmed):
            self.confirmed_stream = event.stream


class ReceiverChannel(_Node):
    """A member that delivers messages: ``async for message in rx``.

    Also used for a head opened with ``deliver=True``.
    """

    def __init__(self, machine: Any, driver: NodeDriver, sockets: NodeSockets) -> None:
        super().__init__(machine, driver, sockets)
        self._known: set[int] = set()
        self._ended: set[int] = set()
        self._finished = False
        self.delivered = 0
        self._taken_since_yield = 0

    @property
    def parent(self) -> Addr | None:
        parent: Addr | None = self._machine.parent
        return parent

    def _known_streams(self) -> set[int]:
        """Streams seen here plus those the machine has heard of (a hello, an accept) but
        not yet delivered from: iteration must not end while one of those is still open."""
        streams: dict[int, Any] = getattr(self._machine, "streams", {})
        return self._known | {sid for sid, s in streams.items() if not getattr(s, "own", False)}

    def __aiter__(self) -> ReceiverChannel:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._finished:
                raise StopAsyncIteration
            try:
                event = await self._next_event()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._finished = True
                raise StopAsyncIteration from None
            if isinstance(event, ev.MessageReceived):
                self._known.add(event.stream)
                self.delivered += 1
                return Message(event.stream, event.seq, event.data, 0)
            if isinstance(event, ev.StreamEnded):
                self._known.add(event.stream)
                self._ended.add(event.stream)
                if self._known_streams() <= self._ended:
                    self._finished = True
            elif isinstance(event, ev.PrunedByParent):
                self._finished = True
                raise Pruned(f"removed from the repair tree by its parent (reason {event.reason})")

    async def _next_event(self) -> ev.Event:
        """The next event from the driver, taking what is already queued without a full
        scheduling round (but staying a cancel point) for up to RECEIVE_YIELD_EVERY events."""
        channel = self._driver.events
        if self._taken_since_yield < RECEIVE_YIELD_EVERY:
            try:
                event = channel.receive_nowait()
            except trio.WouldBlock:
                pass
            else:
                self._taken_since_yield += 1
                await trio.lowlevel.checkpoint_if_cancelled()
                return event
        self._taken_since_yield = 0
        return await channel.receive()

    async def receive(self) -> Message:
        """The next message; raises :class:`ChannelClosed` once the stream(s) ended."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ChannelClosed("every stream has ended") from None


class HeadChannel(ReceiverChannel):
    """A repair head; iterate it only if opened with ``deliver=True``."""


def _keep_for_delivery(event: ev.Event) -> bool:
    return isinstance(event, (ev.MessageReceived, ev.StreamEnded, ev.PrunedByParent))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_host(root: Addr) -> str:
    """Bind next to the root on loopback; anywhere otherwise."""
    return "127.0.0.1" if _is_loopback(root[0]) else "0.0.0.0"


def _network_for(ann: Announcement, network: Network | None, host: str | None) -> Network:
    if network is not None:
        if network.info.kind != ann.network.kind:
            raise ConfigError(
                f"network= is {network.info.kind} but the announcement says {ann.network.kind}"
            )
        if isinstance(network, IpMulticastNetwork):
            # The controller may have allocated the group: the announcement is authoritative
            # for the address, network= for the local options.
            assert ann.network.group is not None and ann.network.port is not None
            return network.for_group(ann.network.group, ann.network.port)
        return network
    kind = ann.network.kind
    if kind == "udp":
        return udp(host=host or _default_host(ann.root))
    if kind == "ip_multicast":
        assert ann.network.group is not None and ann.network.port is not None
        return ip_multicast(
            ann.network.group, ann.network.port, interface=host or _default_host(ann.root)
        )
    raise ConfigError("a memory-network announcement needs network= (the same rmsec.io.memory())")


def _check_config(config: TransportConfig, network: Network) -> None:
    if config.multicast and not network.supports_multicast:
        raise ConfigError(f"multicast=True needs a multicast network, not {network.info.kind}")
    if network.requires_multicast and not config.multicast:
        raise ConfigError(f"network {network.info.kind} needs TransportConfig(multicast=True)")


@asynccontextmanager
async def _run_node(
    node_factory: Callable[[NodeDriver], _Node],
    machine: Machine,
    sockets: NodeSockets,
    *,
    keep: Callable[[ev.Event], bool] | None,
    ready: Callable[[_Node], bool],
    last_words: Callable[[float], object] | None,
    finish: Callable[[_Node], Any] | None = None,
    tasks: Sequence[Callable[..., Awaitable[object]]] = (),
) -> AsyncIterator[_Node]:
    """Run ``machine`` for the body of the ``async with``; the common part of every open_*.

    The driver's tasks live in a nursery around the body.  trio wraps whatever leaves a
    nursery in an ``ExceptionGroup``; an exception of the caller's own body (``Pruned`` from
    the iteration, say) is unwrapped again, so ``except rmsec.errors.Pruned`` works.  A
    failure of the driver itself stays grouped.

    ``tasks`` run beside the driver (``await nursery.start(task)``, so each calls
    ``task_status.started()``): the secured layer's control link and event pumps.
    """
    observers: list[Callable[[ev.Event], None]] = []
    driver = NodeDriver(machine, sockets, observe=lambda e: observers[0](e), keep=keep)
    node = node_factory(driver)
    observers.append(node._observe)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            for task in tasks:
                await nursery.start(task)
            try:
                await driver.wait_until(lambda: ready(node))
                try:
                    yield node
                except BaseException as exc:
                    body_error = exc
                    raise
                if finish is not None:
                    await finish(node)
            finally:
                # Synchronous last words (a Leave, say) need no shield: they cannot be
                # cancelled, and the datagrams go out without waiting.
                driver.final(last_words)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if body_error is None or len(group.exceptions) != 1 or group.exceptions[0] is not body_error:
            raise
    finally:
        with trio.CancelScope(shield=True):
            sockets.close()
            await trio.lowlevel.checkpoint()
    if body_error is not None:
        raise body_error  # outside the except block: no group attached as its context


def _check_credentials(credentials: object) -> None:
    if credentials is not None:
        raise ConfigError("credentials need a secured group (an announcement from a controller)")


def _is_secured(announcement: AnnouncementLike | None, credentials: object) -> bool:
    """A signed announcement means a secured group (which needs ``credentials=``)."""
    from rmsec.security.announcement import is_signed

    signed = isinstance(announcement, bytes) and is_signed(announcement)
    if signed and credentials is None:
        raise ConfigError("this group is secured: pass credentials= (rmsec.credentials."
                          "MemberCredentials)")
    return signed


@asynccontextmanager
async def open_sender(
    announcement: AnnouncementLike | None = None,
    *,
    config: TransportConfig | None = None,
    network: Network | None = None,
    host: str | None = None,
    credentials: object = None,
    stream: int | None = None,
) -> AsyncIterator[SenderChannel]:
    """Open a sender.

    Without ``announcement`` it starts a new group and becomes the root of its tree;
    ``tx.announcement`` then describes the group for everyone else.  With one, it joins that
    group's tree as an additional sender with a stream of its own.  Leaving the block normally
    closes the stream and waits for positive confirmation (bound it with a cancel scope).

    With a signed announcement (a secured group) and ``credentials=``, it registers with the
    controller over TLS first and protects every message (see :mod:`rmsec.secure_api`).
    """
    if _is_secured(announcement, credentials):
        from rmsec import secure_api

        assert isinstance(announcement, bytes)
        async with secure_api.open_secure_sender(
            announcement, credentials=credentials, network=network, host=host, stream=stream,
        ) as secure_tx:
            yield secure_tx
        return
    _check_credentials(credentials)
    if announcement is None:
        net = network if network is not None else udp(host=host or "127.0.0.1")
        cfg = config if config is not None else TransportConfig(multicast=net.requires_multicast)
        ann: Announcement | None = None
    else:
        ann = announcement_from(announcement)
        net = _network_for(ann, network, host)
        if config is not None and config != ann.config:
            raise ConfigError("config= differs from the announcement's transport config")
        cfg = ann.config
    _check_config(cfg, net)
    rng = net.node_rng()
    # A secondary sender is also a member of the tree and hears the group like a receiver.
    sockets = await net.open_node(host, join_group=ann is not None and cfg.multicast)
    try:
        now = trio.current_time()
        if ann is None:
            if sockets.local_addr[0] in ("0.0.0.0", ""):
                raise ConfigError("a root sender needs a concrete address: pass host=")
            ann = Announcement(rng(SESSION_ID_LEN), sockets.local_addr, (), cfg, net.info)
            bootstrap: tuple[Addr, ...] = ()
        else:
            bootstrap = ann.bootstrap
        encoded = announcement if isinstance(announcement, bytes) else ann.encode()
        machine = transport.Sender(
            cfg, session=ann.session, node_id=rng(8), rng=rng, now=now, stream=stream,
            bootstrap=bootstrap,
        )
    except BaseException:
        sockets.close()
        raise

    def factory(driver: NodeDriver) -> _Node:
        return SenderChannel(machine, driver, sockets, encoded)

    async def finish(node: _Node) -> None:
        assert isinstance(node, SenderChannel)
        await node.aclose()

    async with _run_node(
        factory, machine, sockets, keep=None, ready=lambda n: True,
        # A secondary sender is a member of the tree: its parent must hear it go, or the
        # root's own close waits for its acks until the silence timeout.
        last_words=None if machine.is_root else machine.leave,
        finish=finish,
    ) as node:
        assert isinstance(node, SenderChannel)
        yield node


@asynccontextmanager
async def open_head(
    announcement: AnnouncementLike,
    *,
    network: Network | None = None,
    deliver: bool = False,
    host: str | None = None,
    credentials: object = None,
) -> AsyncIterator[HeadChannel]:
    """Open a repair head and return once it is bound into the tree.

    With ``deliver=True`` the head is also a receiver: iterate it for the messages.  In a
    secured group (signed announcement, ``credentials=``) a head registers with the role HEAD
    and holds no key: it caches and repairs ciphertext, so ``deliver=True`` is refused there.
    """
    if _is_secured(announcement, credentials):
        from rmsec import secure_api

        assert isinstance(announcement, bytes)
        if deliver:
            raise ConfigError("a head of a secured group holds no key: it cannot deliver")
        async with secure_api.open_secure_head(
            announcement, credentials=credentials, network=network, host=host,
        ) as secure_head:
            yield secure_head
        return
    _check_credentials(credentials)
    ann = announcement_from(announcement)
    net = _network_for(ann, network, host)
    cfg = ann.config
    _check_config(cfg, net)
    rng = net.node_rng()
    sockets = await net.open_node(host, join_group=cfg.multicast)
    try:
        machine = transport.RepairHead(
            cfg, session=ann.session, node_id=rng(8), rng=rng, now=trio.current_time(),
            bootstrap=ann.bootstrap, deliver=deliver,
        )
    except BaseException:
        sockets.close()
        raise
    async with _run_node(
        lambda driver: HeadChannel(machine, driver, sockets),
        machine, sockets,
        keep=_keep_for_delivery if deliver else None,
        ready=lambda n: n.bound_to is not None,
        last_words=getattr(machine, "leave", None),
    ) as node:
        assert isinstance(node, HeadChannel)
        yield node


@asynccontextmanager
async def open_receiver(
    announcement: AnnouncementLike,
    *,
    network: Network | None = None,
    join_policy: JoinPolicyName | None = None,
    host: str | None = None,
    credentials: object = None,
) -> AsyncIterator[ReceiverChannel]:
    """Open a receiver and return once it is bound into the tree; ``async for`` the messages.

    ``join_policy`` overrides the announcement's for this member (``from_now``,
    ``from_cache``, ``from_start``).  In a secured group (signed announcement,
    ``credentials=``) it registers over TLS first, then verifies and decrypts every message.
    """
    if _is_secured(announcement, credentials):
        from rmsec import secure_api

        assert isinstance(announcement, bytes)
        async with secure_api.open_secure_receiver(
            announcement, credentials=credentials, network=network, host=host,
            join_policy=join_policy,
        ) as secure_rx:
            yield secure_rx
        return
    _check_credentials(credentials)
    ann = announcement_from(announcement)
    net = _network_for(ann, network, host)
    cfg = ann.config
    if join_policy is not None:
        cfg.replace(join_policy=join_policy)  # validates the name (raises ConfigError)
    _check_config(cfg, net)
    rng = net.node_rng()
    sockets = await net.open_node(host, join_group=cfg.multicast)
    try:
        machine = transport.Receiver(
            cfg, session=ann.session, node_id=rng(8), rng=rng, now=trio.current_time(),
            bootstrap=ann.bootstrap, join_policy=join_policy,
        )
    except BaseException:
        sockets.close()
        raise
    async with _run_node(
        lambda driver: ReceiverChannel(machine, driver, sockets),
        machine, sockets,
        keep=_keep_for_delivery,
        ready=lambda n: n.bound_to is not None,
        last_words=machine.leave,
    ) as node:
        assert isinstance(node, ReceiverChannel)
        yield node


def __getattr__(name: str) -> Any:
    """``open_controller`` and ``ControllerChannel`` live in :mod:`rmsec.secure_api` (which
    imports this module): re-exported lazily."""
    if name in ("open_controller", "ControllerChannel"):
        from rmsec import secure_api

        return getattr(secure_api, name)
    raise AttributeError(f"module 'rmsec.api' has no attribute {name!r}")
