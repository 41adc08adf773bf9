"""The secured half of the public API (DESIGN.md §4, §6): ``open_controller`` and the
``credentials=`` paths of ``open_sender`` / ``open_head`` / ``open_receiver``.

This module only wires existing machines together; it decides nothing about security:

- the controller is a sans-IO :class:`~rmsec.security.controller.Controller` behind a
  :class:`~rmsec.io.control.ControlServer` (TLS registration), plus a transport
  :class:`~rmsec.transport.Sender` that is the **root of the repair tree** and carries the
  signed rekeys as its stream, so rekeys ride the same tree (and repairs) as the data;
- a member is a sans-IO :class:`~rmsec.security.member.Member` on a
  :class:`~rmsec.io.control.MemberLink` (its control connection: membership *is* that
  connection) plus one transport machine; messages of the rekey stream go to
  ``member.receive_rekey``, every other message to ``member.receive_frame``, and
  ``Delivered`` events come out as :class:`rmsec.api.Message`.

Order of joining: a member registers over TLS first (a refused member never touches the tree),
then binds into the tree.  Rekeys sent between its welcome and its binding are not on its
path, so once bound it asks the controller once for key recovery (RECOVER with its epoch; a
member already current gets a stale answer and ignores it).  Data of an epoch it lacks would
also trigger recovery, but a sender hears no data, so this closes the gap for it.

A secondary transport ``Sender`` does not deliver other streams by default; the secured
sender must hear the rekey stream, so it is built with ``Sender(delivers=True)`` and every
stream but the rekey stream is discarded here.
"""

from __future__ import annotations

import collections
import functools
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from rmsec import transport
from rmsec.announcement import Announcement
from rmsec.api import (
    SEND_YIELD_EVERY,
    HeadChannel,
    Message,
    ReceiverChannel,
    SenderChannel,
    _check_config,
    _network_for,
    _Node,
    _run_node,
)
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials
from rmsec.errors import AuthenticationFailed, ChannelClosed, ConfigError, LocalError, Pruned
from rmsec.io.allocation import allocate_network
from rmsec.io.base import Addr, Network, NodeSockets
from rmsec.io.control import (
    ControlServer,
    MemberLink,
    RegistrationRefused,
    client_context,
    connect_control,
    server_context,
)
from rmsec.io.driver import RECV_BATCH, NodeDriver
from rmsec.io.multicast import IpMulticastNetwork
from rmsec.io.udp import udp
from rmsec.plugins import HookRelay
from rmsec.security import events as sev
from rmsec.security import messages as msg
from rmsec.security import regional
from rmsec.security.announcement import SecurityDescription, SignedAnnouncement
from rmsec.security.controller import Controller
from rmsec.security.member import Member, State
from rmsec.transport import events as ev
from rmsec.transport.config import JoinPolicyName
from rmsec.wire.packets import SESSION_ID_LEN

__all__ = [
    "ControllerChannel",
    "RegistrationRefused",
    "SecureHeadChannel",
    "SecureReceiverChannel",
    "SecureSenderChannel",
    "open_controller",
    "open_secure_head",
    "open_secure_receiver",
    "open_secure_sender",
]

#: Delivered messages a receiver holds for its application before it stops pulling from the
#: transport (which then applies its own back-pressure).
READY_LIMIT = 1024
#: Seconds a closing sender waits at most for its last source-auth packets to fall due.
OUTSTANDING_LIMIT = 30.0
#: Seconds between polls of the source-auth signer for packets due without a new message
#: (TESLA key disclosures, EMSS signature packets).
AUTH_POLL = 0.05
#: Seconds a closing member waits for its LEAVE to be handed to TLS before it just hangs up.
LEAVE_FLUSH = 1.0
_END = object()
_PRUNED = object()
_EXPELLED = object()


# ------------------------------------------------------------------------------- controller


class ControllerChannel(_Node):
    """A running controller (``async with rmsec.open_controller(config, tls=...) as ctl``)."""

    def __init__(
        self, machine: Any, driver: NodeDriver, sockets: NodeSockets, *,
        controller: Controller, credentials: ControllerCredentials, transport_announcement: bytes,
    ) -> None:
        super().__init__(machine, driver, sockets)
        self.controller = controller
        self._credentials = credentials
        self._transport_announcement = transport_announcement
        self.security_events: collections.deque[sev.SecurityEvent] = collections.deque(maxlen=4096)
        #: Observation hooks (member joined / left / expelled, rekey done) of this controller.
        self.hooks = HookRelay(controller.config.group, "controller")
        self.server = ControlServer(
            controller,
            server_context(
                certificate=credentials.identity.certificate,
                private_key=credentials.identity.private_key,
                ca_certificate=credentials.ca.certificate,
            ),
            on_rekey=self._send_rekey,
            on_event=self._on_security_event,
        )
        self._announcement: bytes | None = None

    def _send_rekey(self, envelope: bytes) -> None:
        machine = self._machine
        self._driver.command(lambda now: machine.send(envelope, now))

    def _on_security_event(self, event: sev.SecurityEvent) -> None:
        self.security_events.append(event)
        self.hooks.controller_event(event)

    @property
    def control_address(self) -> Addr:
        """Where members register (TLS on TCP)."""
        if self.server.address is None:
            raise LocalError("the registration service is not listening yet")
        return self.server.address

    @property
    def announcement(self) -> bytes:
        """The signed session description members start from (signed by the group owner)."""
        if self._announcement is None:
            creds = self._credentials
            security = SecurityDescription.for_group(
                self.controller.config, controller=self.control_address,
                controller_key=self.controller.public_key, owner_key=creds.ca.owner_public(),
                issued_at=time.time(),
            )
            self._announcement = SignedAnnouncement.sign(
                creds.ca.owner_key(), self._transport_announcement, security
            )
        return self._announcement

    @property
    def transport_announcement(self) -> bytes:
        """The unsigned transport half (what ``rmsec announce sign`` takes)."""
        return self._transport_announcement

    @property
    def epoch(self) -> int:
        return self.controller.epoch

    def members(self) -> list[bytes]:
        """Member ids currently welcomed."""
        return self.controller.member_ids()

    def stats(self) -> dict[str, int]:
        """Controller and registration counters, plus the rekey stream's transport ones."""
        result = super().stats()
        result.update(self.server.stats())
        result.update(self.hooks.counters)
        return result

    def expel(self, member_id: bytes, reason: str = "expelled by the operator") -> None:
        self.server.command(lambda now: self.controller.expel(member_id, reason, now))

    def rekey_now(self) -> None:
        """Apply pending membership changes at once, whatever the rekey policy."""
        self.server.command(self.controller.rekey_now)

    def refresh(self) -> None:
        """A new epoch with unchanged membership."""
        self.server.command(self.controller.refresh)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await self.server.wait_until(predicate)


@asynccontextmanager
async def open_controller(
    config: GroupConfig,
    *,
    tls: ControllerCredentials,
    host: str = "127.0.0.1",
    port: int = 0,
    network: Network | None = None,
    data_host: str | None = None,
) -> AsyncIterator[ControllerChannel]:
    """Start a secured group's controller (DESIGN.md §6).

    Runs the controller machine, its TLS registration service on ``host:port`` and its rekey
    stream, whose transport sender is the root of the group's repair tree (on ``network``,
    UDP on ``data_host`` or ``host`` by default).  Returns once the service listens; then
    ``ctl.announcement`` is the signed description every member starts from.
    """
    if not isinstance(config, GroupConfig):
        raise ConfigError("open_controller needs a rmsec.config.GroupConfig")
    net = network if network is not None else udp(host=data_host or host)
    # On IP multicast the group's address comes from the configured range (DESIGN.md §4);
    # the transport announcement names the allocated one, so members join that group.
    allocation = allocate_network(config, net) if isinstance(net, IpMulticastNetwork) else None
    if allocation is not None:
        net = allocation.network
    cfg = config.transport
    if net.requires_multicast and not cfg.multicast:
        cfg = cfg.replace(multicast=True)
    _check_config(cfg, net)
    rng = net.node_rng()
    sockets = await net.open_node(data_host if data_host is not None else (
        host if net.info.kind != "memory" else None))
    try:
        now = trio.current_time()
        root = sockets.local_addr
        if root[0] in ("0.0.0.0", ""):
            raise ConfigError("the controller's rekey sender needs a concrete address")
        session = rng(SESSION_ID_LEN)
        machine = transport.Sender(cfg, session=session, node_id=rng(8), rng=rng, now=now)
        transport_ann = Announcement(session, root, (), cfg, net.info).encode()
        controller = Controller(
            config, signing_key=tls.signing_key(), rng=os.urandom, now=now, session=session,
            rekey_stream=machine.stream, bootstrap=(root,),
            multicast=None if allocation is None else allocation.address,
            wall_offset=time.time() - trio.current_time(),
        )
    except BaseException:
        sockets.close()
        if allocation is not None:
            allocation.release()
        raise
    holder: list[ControllerChannel] = []

    def factory(driver: NodeDriver) -> _Node:
        node = ControllerChannel(
            machine, driver, sockets, controller=controller, credentials=tls,
            transport_announcement=transport_ann,
        )
        holder.append(node)
        return node

    async def serve(*, task_status: trio.TaskStatus[Addr] = trio.TASK_STATUS_IGNORED) -> None:
        await holder[0].server.serve(host, port, task_status=task_status)

    try:
        async with _run_node(
            factory, machine, sockets, keep=None, ready=lambda n: True, last_words=None,
            tasks=(serve,),
        ) as node:
            assert isinstance(node, ControllerChannel)
            yield node
    finally:
        if allocation is not None:
            allocation.release()


# ---------------------------------------------------------------------------------- members


def _verify(
    announcement: bytes, credentials: object, roles: int = msg.Roles.RECEIVE
) -> tuple[SignedAnnouncement, Announcement]:
    if not isinstance(credentials, MemberCredentials):
        raise ConfigError("credentials= must be a rmsec.credentials.MemberCredentials")
    try:
        signed = SignedAnnouncement.decode_untrusted(
            announcement, owner_keys=credentials.owner_keys, now_wall=time.time()
        )
    except AuthenticationFailed as exc:
        # No group name can be trusted from a forged announcement: report it under "".
        HookRelay("", _where(roles, credentials.member_id)).auth_failure(
            "announcement", str(exc), trio.current_time()
        )
        raise
    return signed, Announcement.decode_untrusted(signed.transport)


def _where(roles: int, member_id: bytes) -> str:
    """How a member's node names itself to the observation hooks: its role and member id."""
    role = "head" if roles & msg.Roles.HEAD else "sender" if roles & msg.Roles.SEND else "receiver"
    return f"{role} {member_id.decode('utf-8', 'backslashreplace')}"


def _client_context(credentials: MemberCredentials) -> ssl.SSLContext:
    identity = credentials.identity
    return client_context(
        ca_certificate=credentials.ca_certificate,
        certificate=None if identity is None else identity.certificate,
        private_key=None if identity is None else identity.private_key,
    )


class _Security:
    """One member's security side: the machine, its control link, what it reported."""

    def __init__(self, member: Member, signed: SignedAnnouncement) -> None:
        self.member = member
        self.signed = signed
        self.link: MemberLink | None = None
        self.listeners: list[Callable[[sev.SecurityEvent], None]] = []
        self.auth_failures = 0
        self.epoch_changes = 0
        self.sender_results: dict[bytes, sev.SenderRegistered] = {}
        #: Where frames the member finished on its timer go (a sender channel's transport):
        #: a deferred signer's batch closed at its deadline.
        self.frame_sink: Callable[[list[tuple[bytes, bytes]]], None] | None = None
        self.changed = trio.Event()
        #: Observation hooks of this node: auth failures from ``drain``, head changes from the
        #: channel's transport events (see ``_HookedNode``).
        self.hooks = HookRelay(signed.security.group, _where(member.roles, member.member_id))

    async def register(self, credentials: MemberCredentials) -> MemberLink:
        host, port = self.signed.security.controller
        stream = await connect_control(
            host, port, _client_context(credentials), server_hostname=self.signed.security.tls_name
        )
        self.link = MemberLink(self.member, stream, on_change=self.drain)
        await self.link.register()  # RegistrationRefused with the policy's reason
        return self.link

    def drain(self) -> None:
        member = self.member
        if self.frame_sink is not None and (frames := member.frames_to_send()):
            self.frame_sink(frames)
        while (event := member.next_event()) is not None:
            if isinstance(event, sev.AuthFailure):
                self.auth_failures += 1
                self.hooks.auth_failure(event.what, event.detail, trio.current_time())
            elif isinstance(event, sev.EpochChanged):
                self.epoch_changes += 1
            elif isinstance(event, sev.SenderRegistered):
                self.sender_results[event.sender_id] = event
            for listener in self.listeners:
                listener(event)
        if self.hooks.pending_auth:  # aggregated auth-failure reports now due
            self.hooks.tick(trio.current_time())
        self.changed.set()
        self.changed = trio.Event()

    def command(self, call: Callable[[float], Any]) -> Any:
        assert self.link is not None
        return self.link.command(call)

    async def run_link(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the control link until it ends, or until the node closes: then say LEAVE
        first, so the controller reports a member that left (``rmsec_member_left`` reason
        ``left``) apart from one whose connection was lost."""
        link = self.link
        assert link is not None
        # The link runs shielded: cancelling it would close the connection before the LEAVE
        # is written.  This task waits for the node to close, then leaves and stops it.  The
        # LEAVE goes straight on the stream (as the catch-up does), ahead of whatever the
        # link still queues, and before the machine leaves: a link whose member is no longer
        # a member stops at the next message it receives, writer and all.
        shield = trio.CancelScope(shield=True)

        async def pump() -> None:
            with shield:
                await link.run()
            self.drain()
            nursery.cancel_scope.cancel()  # the link ended by itself: nothing to leave

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    if not link.closed and self.member.state == State.MEMBER:
                        with trio.move_on_after(LEAVE_FLUSH), suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError
                        ):
                            await link.stream.send(msg.Leave().encode())
                        self.member.leave(trio.current_time())
                        self.member.control_to_send()  # its LEAVE: sent above
                    shield.cancel()

    async def catch_up(self) -> None:
        """Ask once for the rekeys sent while we were joining the tree (see module docstring)."""
        assert self.link is not None
        epoch = self.member.epoch
        if self.member.state == State.MEMBER and epoch is not None and not self.link.closed:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                await self.link.stream.send(msg.Recover(epoch).encode())

    def link_closed(self) -> bool:
        return self.link is None or self.link.closed

    async def request_recovery(self) -> int | None:
        """Ask for key recovery (:meth:`Member.request_recovery`) and return the epoch once
        the controller answered (or the control connection closed)."""
        counters = self.member.counters

        def answers() -> int:
            return counters["recoveries_applied"] + counters["recoveries_stale"]

        before = answers()
        self.command(self.member.request_recovery)
        while answers() == before and not self.link_closed():
            await self.changed.wait()
        return self.member.epoch

    def stats(self) -> dict[str, int]:
        """The member's counters (``sec_*``) and the summary DESIGN §6 asks for: rejected
        packets of every kind (``auth_failures``) and rekeys applied (``rekeys``)."""
        counters = self.member.stats()
        result = {f"sec_{k}": v for k, v in counters.items()}
        result["auth_failures"] = sum(
            counters.get(k, 0)
            for k in ("data_auth_failed", "data_aead_failed", "rekeys_forged", "rekeys_rejected")
        )
        result["rekeys"] = counters.get("rekeys_applied", 0) + counters.get("recoveries_applied", 0)
        result["epoch"] = counters.get("epoch", -1)
        result.update(self.hooks.counters)
        return result


def _new_member(
    credentials: MemberCredentials, signed: SignedAnnouncement, roles: int, node_id: bytes,
    addr: Addr | None, region: str | None = None,
) -> _Security:
    member = Member(
        member_id=credentials.member_id, node_id=node_id, rng=os.urandom,
        now=trio.current_time(), roles=roles, token=credentials.token, addr=addr,
        controller_key=signed.security.controller_key, region=region,
    )
    return _Security(member, signed)


def _check_session(security: _Security, ann: Announcement) -> None:
    welcome = security.member.welcome
    if welcome is None or welcome.session != ann.session:
        raise ConfigError("the controller's welcome names another session than the announcement")


class _HookedNode(_Node):
    """A member's channel: its tree binds (``Bound``, ``HeadLost``) go to the observation
    hooks (``rmsec_head_changed``); nothing else is looked at, so messages cost one check."""

    security: _Security

    def _observe(self, event: ev.Event) -> None:
        super()._observe(event)
        if isinstance(event, (ev.Bound, ev.HeadLost)):
            self.security.hooks.transport_event(event, self.node_id)


class SecureReceiverChannel(_HookedNode, ReceiverChannel):
    """A member of a secured group: ``async for message in rx`` gives verified, decrypted
    :class:`~rmsec.api.Message` objects (``epoch`` is the key epoch they were protected under).

    Iteration ends when every data stream seen has ended; it raises
    :class:`~rmsec.errors.Pruned` when the tree dropped this node and
    :class:`~rmsec.errors.ChannelClosed` when the controller expelled it (or closed).
    """

    def __init__(
        self, machine: Any, driver: NodeDriver, sockets: NodeSockets, security: _Security,
    ) -> None:
        super().__init__(machine, driver, sockets)
        self.security = security
        self._ready: collections.deque[object] = collections.deque()
        self._wakeup = trio.Event()
        self._data_streams: set[int] = set()
        self._data_ended: set[int] = set()
        #: streams that carried translation frames (a manager head's keys, not data)
        self._key_streams: set[int] = set()
        self._ended_pushed = False
        security.listeners.append(self._on_security)

    @property
    def member(self) -> Member:
        return self.security.member

    @property
    def epoch(self) -> int | None:
        return self.security.member.epoch

    @property
    def rekey_stream(self) -> int:
        stream = self.security.member.rekey_stream
        assert stream is not None
        return stream

    async def request_recovery(self) -> int | None:
        """Ask the controller for the keys of the current epoch now, rather than waiting for
        a gap to show; returns the epoch held once it answered."""
        return await self.security.request_recovery()

    def stats(self) -> dict[str, int]:
        result = super().stats()
        result.update(self.security.stats())
        return result

    def _push(self, item: object) -> None:
        self._ready.append(item)
        self._changed()

    def _changed(self) -> None:
        """Wake whoever waits on ``_ready`` (the reader for items, the pump for room)."""
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def _wait_changed(self) -> None:
        """Wait for the next :meth:`_changed`; callers re-check their condition in a loop
        (a change already signalled returns at once, after re-arming the event)."""
        wakeup = self._wakeup
        if wakeup.is_set():
            self._wakeup = trio.Event()
            await trio.lowlevel.checkpoint()
            return
        await wakeup.wait()

    def _on_security(self, event: sev.SecurityEvent) -> None:
        if isinstance(event, sev.Delivered):
            self._push(Message(event.stream, event.seq, event.data, event.epoch))
        elif isinstance(event, sev.Expelled):
            self._push(_EXPELLED)

    async def pump(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Transport events in, security machine fed, messages out (bounded).

        Events already queued are taken in one round, up to ``RECV_BATCH`` and the room left
        under ``READY_LIMIT``, and the frames among them go to the member in one command: a
        scheduling round and a control-link flush per message would cost more than opening
        the message."""
        task_status.started()
        events = self._driver.events
        while True:
            while len(self._ready) >= READY_LIMIT:
                await self._wait_changed()
            try:
                batch = [await events.receive()]
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            room = min(RECV_BATCH, READY_LIMIT - len(self._ready))
            while len(batch) < room:
                try:
                    batch.append(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            self._take(batch)

    def _take(self, batch: list[ev.Event]) -> None:
        """Feed a batch of transport events to the member in order: consecutive messages
        in one command, stream ends and prunes between them where they came."""
        security, rekeys = self.security, self.rekey_stream
        member = security.member
        calls: list[Callable[[float], object]] = []

        def feed(now: float) -> None:
            for call in calls:
                call(now)

        for event in batch:
            if isinstance(event, ev.MessageReceived):
                if event.stream == rekeys:
                    calls.append(functools.partial(member.receive_rekey, event.data))
                    continue
                if regional.is_translation_frame(event.data):
                    # A manager head's translation stream carries keys, not data: it stays
                    # open as long as the head does, so iteration must not wait for it.
                    self._key_streams.add(event.stream)
                    self._data_streams.discard(event.stream)
                elif event.stream not in self._key_streams:
                    self._data_streams.add(event.stream)
                calls.append(functools.partial(member.receive_frame, event.data))
                continue
            if calls:
                security.command(feed)
                calls = []
            if isinstance(event, ev.StreamEnded) and event.stream != rekeys:
                if event.stream not in self._key_streams:
                    self._data_streams.add(event.stream)
                    self._data_ended.add(event.stream)
                    self._check_end()
            elif isinstance(event, ev.PrunedByParent):
                self._push(_PRUNED)
        if calls:
            security.command(feed)
        self._check_end()  # a translation stream may have been the last one open

    def _check_end(self) -> None:
        """Iteration ends once every data stream seen has ended (and one has)."""
        if self._data_ended and not self._ended_pushed and self._open_streams() <= self._data_ended:
            self._ended_pushed = True
            self._push(_END)

    def _open_streams(self) -> set[int]:
        streams: dict[int, Any] = getattr(self._machine, "streams", {})
        heard = {sid for sid, s in streams.items() if not getattr(s, "own", False)}
        return (self._data_streams | heard) - {self.rekey_stream} - self._key_streams


    async def __anext__(self) -> Message:
        while True:
            if self._ready:
                item = self._ready.popleft()
                self._changed()  # room again for the pump
                if isinstance(item, Message):
                    self.delivered += 1
                    return item
                self._finished = True
                if item is _PRUNED:
                    raise Pruned("removed from the repair tree by its parent")
                if item is _EXPELLED:
                    raise ChannelClosed(f"expelled by the controller: {self.member.reason}")
            if self._finished:
                raise StopAsyncIteration
            if self.security.link is not None and self.security.link.closed and not self._ready:
                self._finished = True
                raise ChannelClosed(
                    f"the control connection closed ({self.member.reason or self.member.state})"
                )
            await self._wait_changed()


class SecureHeadChannel(_HookedNode, HeadChannel):
    """A repair head of a secured group: registered (role HEAD), holds no key."""

    def __init__(
        self, machine: Any, driver: NodeDriver, sockets: NodeSockets, security: _Security,
    ) -> None:
        super().__init__(machine, driver, sockets)
        self.security = security

    def stats(self) -> dict[str, int]:
        result = super().stats()
        result.update(self.security.stats())
        return result


class SecureSenderChannel(_HookedNode, SenderChannel):
    """A sender of a secured group: ``await tx.send(data, encrypt=True)`` protects each
    message (AEAD, then the source-auth trailer) before the transport sees it."""

    def __init__(
        self, machine: Any, driver: NodeDriver, sockets: NodeSockets, announcement: bytes,
        security: _Security,
    ) -> None:
        super().__init__(machine, driver, sockets, announcement)
        self.security = security
        self.sender_id: bytes = bytes(machine.node_id)
        security.frame_sink = self._queue_finished

    @property
    def member(self) -> Member:
        return self.security.member

    @property
    def epoch(self) -> int | None:
        return self.security.member.epoch

    def stats(self) -> dict[str, int]:
        result = super().stats()
        result.update(self.security.stats())
        return result

    async def request_recovery(self) -> int | None:
        """Ask the controller for key recovery now (see :meth:`SecureReceiverChannel.
        request_recovery`)."""
        return await self.security.request_recovery()

    async def wait_epoch(self, epoch: int) -> None:
        """Return once this sender protects under ``epoch`` or later (after a membership
        change, so the new members can read what comes next)."""
        security = self.security
        while (security.member.epoch or 0) < epoch:
            await security.changed.wait()

    async def send(self, data: bytes, *, encrypt: bool | None = None) -> int:
        """Protect and queue one message; returns its sequence number (as receivers see it in
        ``Message.seq``).  Encrypted unless ``encrypt=False`` (authenticated plaintext)."""
        encrypt = encrypt is None or encrypt
        if self._closed:
            raise ChannelClosed("the stream was closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        if self.member.state != State.MEMBER:
            raise ChannelClosed(f"no longer a member ({self.member.reason or self.member.state})")
        machine = self._machine
        if not machine.writable:
            await self._wait_writable()
        else:
            # As the plain sender: a scheduling round every SEND_YIELD_EVERY sends, a cancel
            # point on every one (a round per message costs more than the message).
            self._sends_since_yield += 1
            if self._sends_since_yield >= SEND_YIELD_EVERY:
                self._sends_since_yield = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
        sender_id, member = self.sender_id, self.member

        def protect(now: float) -> tuple[int, list[bytes]]:
            # With a deferred signer (batchsig) the frame may leave later, with its batch:
            # at the latest at the signer's deadline (the member's timer, see _queue_finished).
            protector = member.protectors.get(sender_id)
            seq = -1 if protector is None else protector.next_seq  # None: protect() raises
            return seq, member.protect(sender_id, bytes(data), now, encrypt=encrypt)

        seq: int
        frames: list[bytes]
        seq, frames = self.security.command(protect)
        self._queue(frames)
        return seq

    async def aclose(self) -> None:
        """Send what a deferred signer still holds (its open batch, signed now) and the
        source-auth packets the last frames need (TESLA's key disclosures come ``lag``
        intervals after their interval, EMSS's last signature at its deadline: ending the
        stream first would leave its tail unverifiable), then end the stream and wait for
        confirmation."""
        if not self._closed and self.member.state == State.MEMBER:
            security, sender_id, member = self.security, self.sender_id, self.member
            self._queue(security.command(functools.partial(member.flush_sender, sender_id)))
            with trio.move_on_after(OUTSTANDING_LIMIT):
                for _ in range(10_000):  # bounded: each round waits for a due time
                    until = member.outstanding_until(sender_id)
                    if until is None or member.state != State.MEMBER:
                        break
                    await trio.sleep_until(max(until, trio.current_time()))
                    self._queue(security.command(
                        functools.partial(member.pending_auth, sender_id)))
        await super().aclose()

    def _queue(self, frames: list[bytes]) -> None:
        # command_soon: the frames of a burst of sends leave together at the next
        # scheduling point (rmsec.io.driver.NodeDriver.command_soon).
        machine = self._machine
        for frame in frames:
            self._driver.command_soon(functools.partial(machine.send, frame))

    def _queue_finished(self, frames: list[tuple[bytes, bytes]]) -> None:
        """Frames the member finished on its timer (a batch closed at its deadline)."""
        if not self._closed:
            self._queue([frame for sid, frame in frames if sid == self.sender_id])

    async def pump(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rekeys from the tree to the member; source-auth packets due on a timer out."""
        task_status.started()
        security = self.security
        member = security.member
        rekeys = member.rekey_stream

        async def auth_poll() -> None:
            while True:
                await trio.sleep(AUTH_POLL)
                if self._closed or member.state != State.MEMBER:
                    continue
                frames = security.command(functools.partial(member.pending_auth, self.sender_id))
                if frames:
                    self._queue(frames)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(auth_poll)
            while True:
                try:
                    event = await self._driver.events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    break
                if isinstance(event, ev.MessageReceived) and event.stream == rekeys:
                    security.command(functools.partial(member.receive_rekey, event.data))
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _member_node(
    announcement: bytes, credentials: object, roles: int, network: Network | None,
    host: str | None, join_group: bool, region: str | None = None,
) -> AsyncIterator[tuple[_Security, Announcement, Network, NodeSockets, Callable[[int], bytes]]]:
    """Verify the announcement, open the node's sockets, register over TLS (in that order, so
    a refused member costs the group nothing); close everything on failure."""
    signed, ann = _verify(announcement, credentials, roles)
    assert isinstance(credentials, MemberCredentials)
    net = _network_for(ann, network, host)
    _check_config(ann.config, net)
    rng = net.node_rng()
    sockets = await net.open_node(host, join_group=join_group and ann.config.multicast)
    security = _new_member(credentials, signed, roles, rng(8), sockets.local_addr, region)
    try:
        link = await security.register(credentials)
        try:
            _check_session(security, ann)
            yield security, ann, net, sockets, rng
        finally:
            if not link.closed:
                # Membership is the connection: closing it is leaving.
                with trio.CancelScope(shield=True):
                    await link.stream.aclose()
    finally:
        security.hooks.flush(trio.current_time())  # auth failures still aggregated
        sockets.close()


@asynccontextmanager
async def open_secure_receiver(
    announcement: bytes, *, credentials: object, network: Network | None = None,
    host: str | None = None, join_policy: JoinPolicyName | None = None,
    region: str | None = None, bootstrap: tuple[Addr, ...] | None = None,
) -> AsyncIterator[SecureReceiverChannel]:
    """``open_receiver(signed_announcement, credentials=...)`` (see :mod:`rmsec.api`).

    ``region`` names the key-management region to join (``regions``: the region of the
    manager head it binds under); ``bootstrap`` replaces the announcement's (the address of
    that head, say, so the receiver binds under it)."""
    async with _member_node(
        announcement, credentials, msg.Roles.RECEIVE, network, host, True, region
    ) as (security, ann, _net, sockets, rng):
        cfg = ann.config
        if join_policy is not None:  # overrides the announcement's (ConfigError if unknown)
            cfg = cfg.replace(join_policy=join_policy)
        machine = transport.Receiver(
            cfg, session=ann.session, node_id=security.member.node_id, rng=rng,
            now=trio.current_time(), bootstrap=ann.bootstrap if bootstrap is None else bootstrap,
            join_policy=join_policy,
        )
        holder: list[SecureReceiverChannel] = []

        def factory(driver: NodeDriver) -> _Node:
            holder.append(SecureReceiverChannel(machine, driver, sockets, security))
            return holder[0]

        async def pump(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await holder[0].pump(task_status=task_status)

        async with _run_node(
            factory, machine, sockets, keep=_keep_secure, ready=lambda n: n.bound_to is not None,
            last_words=machine.leave, tasks=(security.run_link, pump),
        ) as node:
            assert isinstance(node, SecureReceiverChannel)
            await security.catch_up()
            yield node


def _keep_secure(event: ev.Event) -> bool:
    return isinstance(event, (ev.MessageReceived, ev.StreamEnded, ev.PrunedByParent))


def _keep_rekeys(event: ev.Event) -> bool:
    return isinstance(event, ev.MessageReceived)


@asynccontextmanager
async def open_secure_head(
    announcement: bytes, *, credentials: object, network: Network | None = None,
    host: str | None = None,
) -> AsyncIterator[SecureHeadChannel]:
    """``open_head(signed_announcement, credentials=...)``: registered as HEAD, no key."""
    async with _member_node(
        announcement, credentials, msg.Roles.HEAD, network, host, True
    ) as (security, ann, _net, sockets, rng):
        machine = transport.RepairHead(
            ann.config, session=ann.session, node_id=security.member.node_id, rng=rng,
            now=trio.current_time(), bootstrap=ann.bootstrap, deliver=False,
        )
        async with _run_node(
            lambda driver: SecureHeadChannel(machine, driver, sockets, security),
            machine, sockets, keep=None, ready=lambda n: n.bound_to is not None,
            last_words=getattr(machine, "leave", None), tasks=(security.run_link,),
        ) as node:
            assert isinstance(node, SecureHeadChannel)
            yield node


@asynccontextmanager
async def open_secure_sender(
    announcement: bytes, *, credentials: object, network: Network | None = None,
    host: str | None = None, stream: int | None = None,
) -> AsyncIterator[SecureSenderChannel]:
    """``open_sender(signed_announcement, credentials=...)``: registered with the SEND role,
    its stream announced to the controller (which hands receivers its source-auth parameters);
    returns once the controller accepted the stream.  Leaving the block ends the stream and
    waits for confirmation, then leaves the group."""
    async with _member_node(
        announcement, credentials, msg.Roles.SEND, network, host, True
    ) as (security, ann, _net, sockets, rng):
        machine = transport.Sender(
            ann.config, session=ann.session, node_id=security.member.node_id, rng=rng,
            now=trio.current_time(), stream=stream, bootstrap=ann.bootstrap,
            delivers=True,  # it must hear the rekey stream (see the module docstring)
        )
        member = security.member
        sender_id = security.command(
            lambda now: member.add_sender(machine.stream, now, sender_id=member.node_id)
        )
        holder: list[SecureSenderChannel] = []

        def factory(driver: NodeDriver) -> _Node:
            holder.append(SecureSenderChannel(machine, driver, sockets, announcement, security))
            return holder[0]

        async def pump(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await holder[0].pump(task_status=task_status)

        async def finish(node: _Node) -> None:
            assert isinstance(node, SecureSenderChannel)
            await node.aclose()

        async with _run_node(
            # Ready once bound into the tree (not just registered): rekeys sent before the
            # root knows this child never reach it, so the catch-up below must come after.
            factory, machine, sockets, keep=_keep_rekeys, ready=lambda n: n.bound_to is not None,
            last_words=None if machine.is_root else machine.leave, finish=finish,
            tasks=(security.run_link, pump),
        ) as node:
            assert isinstance(node, SecureSenderChannel)
            with trio.fail_after(30):
                while sender_id not in security.sender_results and not security.link_closed():
                    await security.changed.wait()
            result = security.sender_results.get(sender_id)
            if result is None or not result.ok:
                raise RegistrationRefused(
                    result.reason if result is not None else "control connection closed"
                )
            await security.catch_up()
            yield node

