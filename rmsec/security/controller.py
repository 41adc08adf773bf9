"""The controller: channel manager and key server of one secured group, as a sans-IO machine.

Rules the machine obeys:

1. Nothing expensive happens for a connection that has not completed the stateless cookie
   round trip: the I/O layer asks :meth:`Controller.challenge` / :meth:`Controller.
   check_cookie` (:mod:`rmsec.security.cookie`; no state is kept per client, and the cookie
   becomes a puzzle while :attr:`Controller.busy` is high), then does the TLS handshake, then
   calls :meth:`Controller.connection_made` with the peer's verified certificate.
   Until a connection registers, its messages are bounded to
   :data:`~rmsec.security.messages.MAX_UNREGISTERED` bytes.
2. The ``AccessPolicy`` decides every registration with a reason the member is told; it may
   set an expiry (wall clock), after which the member is expelled, and is re-asked about every
   member each ``policy_recheck`` seconds (after :meth:`AccessPolicy.reload`).
3. Membership changes reach the ``KeyManagement`` scheme according to the rekey policy:
   at once, batched per interval, or only on the period; ``refresh`` rekeys on a timer too.
   Each update is one new epoch: joiners get a *welcome* over their control connection,
   everyone else a *rekey* the controller signs and hands to the I/O layer for its rekey
   stream (:meth:`rekeys_to_send`).
4. A member that missed rekeys asks (RECOVER) and gets a signed recovery envelope with what
   the scheme says it needs; requests are rate-limited per member.
5. A control connection is a membership: losing it is leaving.  A peer that sends anything
   malformed is disconnected (it is inside TLS: it is misbehaving, not unlucky).
6. Senders register their streams (ADD_SENDER, public source-auth parameters); the controller
   relays per-member source-auth material from each sender to each member (MATERIAL_REQUEST →
   MATERIAL → SENDER_INFO), binding every sender id to the member that registered it.
7. Loose time synchronisation (:mod:`rmsec.security.clocks`), when the source-auth method
   needs a clock: every MATERIAL round trip bounds its sender's clock; the controller keeps
   the latest bound per sender, re-probes every sender (a MATERIAL_REQUEST naming no member)
   every ``clock_refresh / 4`` seconds, and answers each TIME_REQUEST with its clock and those
   bounds, so members refresh theirs before drift widens them too far.

Outputs are drained like datagrams: :meth:`control_to_send` gives ``(connection, message)``
pairs, where ``message is None`` means "close that connection after what came before";
:meth:`rekeys_to_send` gives signed envelopes for the rekey stream; :meth:`next_event` gives
:mod:`rmsec.security.events` for the observation hooks.

Time: ``now`` is the caller's monotonic clock; access policies and certificates speak wall
time, which is ``now + wall_offset``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from rmsec.config import GroupConfig
from rmsec.errors import ConfigError, LocalError, MalformedPacket, RmsecError
from rmsec.interfaces import (
    AccessPolicy,
    ClockBound,
    Credentials,
    Decision,
    KeyManagement,
    Rng,
    SourceAuth,
    Update,
)
from rmsec.security import clocks, sigkeys
from rmsec.security import events as ev
from rmsec.security import messages as msg
from rmsec.security.cookie import CookieGuard
from rmsec.security.rekey import EnvelopeKind, RekeyEnvelope

Addr = tuple[str, int]

#: Senders one member may register.
MAX_SENDERS_PER_MEMBER = 16
#: Seconds between two key recoveries served to one member.
RECOVERY_INTERVAL = 0.2
#: Control connections the controller tracks at most (the I/O layer bounds handshakes).
MAX_CONNECTIONS = 200_000
#: Bytes of SENDER_INFO material relayed per MATERIAL message at most.
MATERIAL_CHUNK_BYTES = 1024 * 1024


@dataclasses.dataclass(slots=True)
class _Conn:
    id: int
    certificate: bytes | None
    member_id: bytes | None = None
    region: str | None = None  # named by PLACE before REGISTER


@dataclasses.dataclass(slots=True)
class _Member:
    member_id: bytes
    conn: int
    credentials: Credentials
    roles: int
    node_id: bytes
    addr: Addr | None
    valid_until: float | None  # on the now scale
    valid_until_wall: float | None
    keyed: bool  # holds key material (not a key-less head)
    welcomed: bool = False
    in_scheme: bool = False
    last_recovery: float = float("-inf")
    #: The first RECOVER after the welcome was served (the join catch-up, see _on_recover).
    caught_up: bool = False
    senders: set[bytes] = dataclasses.field(default_factory=set)


@dataclasses.dataclass(slots=True)
class _SenderRecord:
    sender_id: bytes
    owner: bytes
    stream: int
    params: bytes
    addr: Addr | None
    #: the latest bound on the sender's clock (controller time), from a MATERIAL round trip
    clock: ClockBound | None = None
    #: members present at ADD_SENDER whose material the sender has not yet given;
    #: SENDER_RESULT goes to the sender once it is empty (see _on_add_sender)
    awaiting: set[bytes] = dataclasses.field(default_factory=set)


class Controller:
    """One group's controller (see the module docstring for its rules)."""

    def __init__(
        self,
        config: GroupConfig,
        *,
        signing_key: sigkeys.SigningKey,
        rng: Rng,
        now: float,
        session: bytes,
        rekey_stream: int,
        bootstrap: Sequence[Addr] = (),
        multicast: Addr | None = None,
        wall_offset: float = 0.0,
        key_management: KeyManagement | None = None,
        access_policy: AccessPolicy | None = None,
        source_auth: SourceAuth | None = None,
    ) -> None:
        if len(session) != 8:
            raise ConfigError("session id must be 8 bytes")
        self.config = config
        self.group = config.group
        self.session = session
        self.rekey_stream = rekey_stream
        self.bootstrap: tuple[Addr, ...] = tuple(bootstrap)
        self.multicast = multicast
        self.wall_offset = wall_offset
        self._key = signing_key
        self.public_key = sigkeys.public_key(signing_key)
        self._rng = rng
        self.cookies = CookieGuard(rng=rng, now=now)
        #: Connections in expensive stages (TLS handshakes, unregistered): set by the I/O layer.
        self.busy = 0
        if key_management is None:
            from rmsec import plugins

            key_management = plugins.get_key_management(config.key_management)(
                rng=rng, options=config.key_management_options
            )
        if access_policy is None:
            from rmsec import plugins

            access_policy = plugins.get_access_policy(config.access_policy)(
                options=config.access_policy_options
            )
        if source_auth is None:
            from rmsec import plugins

            source_auth = plugins.get_source_auth(config.source_auth)(
                rng=rng, options=config.source_auth_options
            )
        self.scheme = key_management
        self.policy = access_policy
        #: seconds between two probes of every sender's clock (None: the method needs none)
        refresh = source_auth.clock_refresh if source_auth.needs_clock else None
        self.clock_probe: float | None = None if refresh is None else refresh / 4
        self._probe_deadline: float | None = (
            None if self.clock_probe is None else now + self.clock_probe
        )
        self._conns: dict[int, _Conn] = {}
        self.members: dict[bytes, _Member] = {}
        self.senders: dict[bytes, _SenderRecord] = {}
        self._pending_joins: list[bytes] = []
        self._pending_leaves: list[bytes] = []
        #: members holding keys of the scheme (kept as a count: at 1M members a scan per
        #: epoch would cost more than the rekey itself)
        self._keyed = 0
        self._control_out: list[tuple[int, bytes | None]] = []
        self._rekey_out: list[bytes] = []
        self._events: collections.deque[ev.SecurityEvent] = collections.deque()
        self.counters = collections.Counter[str]()
        rekey = config.rekey
        self._batch_deadline: float | None = None
        self._period_deadline: float | None = now + rekey.interval if rekey.mode == "periodic" else None
        self._refresh_deadline: float | None = None if rekey.refresh is None else now + rekey.refresh
        #: part (region) -> when it next rekeys on its own period (KeyManagement.refresh_part)
        self._part_deadlines: dict[int, float] = {
            part: now + period for part, period in self.scheme.part_refresh_periods.items()
        }
        self._recheck_deadline = now + config.policy_recheck
        self._published_epoch: int | None = None
        self._handlers: dict[type[msg.ControlMessage], Callable[[_Conn, Any, float], None]] = {
            msg.Register: self._on_register,
            msg.AddSender: self._on_add_sender,
            msg.Material: self._on_material,
            msg.Recover: self._on_recover,
            msg.Leave: self._on_leave,
            msg.RemoveSender: self._on_remove_sender,
            msg.Place: self._on_place,
            msg.TimeRequest: self._on_time_request,
        }

    # ------------------------------------------------------------------ properties

    @property
    def epoch(self) -> int:
        return int(self.scheme.epoch)

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    def member_ids(self) -> list[bytes]:
        return sorted(m.member_id for m in self.members.values() if m.welcomed)

    # ------------------------------------------------------------------ cookie

    def challenge(self, peer: Addr, hello: bytes, now: float) -> bytes:
        """The CHALLENGE answering a client's HELLO (raises only MalformedPacket)."""
        self.cookies.load = self.busy
        return self.cookies.challenge(peer, hello, now)

    def check_cookie(self, peer: Addr, response: bytes, now: float) -> bool:
        """True when ``response`` answers a fresh cookie issued to ``peer``: only then may the
        I/O layer start the TLS handshake."""
        return self.cookies.check(peer, response, now)

    # ------------------------------------------------------------------ connections

    def connection_made(self, conn: int, certificate: bytes | None, now: float) -> None:
        """A vetted connection (cookie done, TLS done) with the peer's verified certificate."""
        if conn in self._conns:
            raise LocalError(f"connection {conn} already known")
        if len(self._conns) >= MAX_CONNECTIONS:
            self.counters["connections_refused"] += 1
            self._control_out.append((conn, msg.Denied("controller is at its connection limit").encode()))
            self._control_out.append((conn, None))
            return
        self._conns[conn] = _Conn(conn, certificate)
        self.counters["connections"] += 1

    def max_message(self, conn: int) -> int:
        """Largest control message the I/O layer should accept from ``conn`` right now."""
        c = self._conns.get(conn)
        if c is None or c.member_id is None:
            return msg.MAX_UNREGISTERED
        return msg.MAX_MESSAGE

    def connection_lost(self, conn: int, now: float) -> None:
        c = self._conns.pop(conn, None)
        if c is None or c.member_id is None:
            return
        member = self.members.get(c.member_id)
        if member is not None and member.conn == conn:
            self._remove_member(member, now, reason="connection lost", expelled=False)

    def receive_control(self, conn: int, data: bytes, now: float) -> None:
        """One control message from ``conn`` (already unframed)."""
        c = self._conns.get(conn)
        if c is None:
            return
        try:
            message = msg.decode_untrusted(data, max_len=self.max_message(conn))
        except MalformedPacket as exc:
            self._protocol_error(c, f"malformed control message: {exc}", now)
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            self._protocol_error(c, f"unexpected {type(message).__name__} from a member", now)
            return
        handler(c, message, now)

    def _protocol_error(self, c: _Conn, detail: str, now: float) -> None:
        self.counters["protocol_errors"] += 1
        self._events.append(ev.ProtocolError(c.id, c.member_id, detail))
        self._send(c.id, msg.Denied(detail[: msg.MAX_REASON]))
        self._close(c.id, now)

    def _send(self, conn: int, message: msg.ControlMessage) -> None:
        self._control_out.append((conn, message.encode()))

    def _close(self, conn: int, now: float) -> None:
        self._control_out.append((conn, None))
        c = self._conns.pop(conn, None)
        if c is not None and c.member_id is not None:
            member = self.members.get(c.member_id)
            if member is not None and member.conn == conn:
                self._remove_member(member, now, reason="disconnected", expelled=False)

    # ------------------------------------------------------------------ registration

    def _on_register(self, c: _Conn, m: msg.Register, now: float) -> None:
        if c.member_id is not None:
            self._protocol_error(c, "registered twice on one connection", now)
            return
        credentials = Credentials(m.member_id, c.certificate, m.token)
        self.counters["registrations"] += 1
        if not m.member_id:
            self._deny(c, m.member_id, "empty member id")
            return
        if m.member_id in self.members:
            self._deny(c, m.member_id, "already a member: leave (or close that connection) first")
            return
        if len(self.members) >= self.config.max_members:
            self._deny(c, m.member_id, "the group is full")
            return
        decision = self._decide(credentials, now)
        if not decision.admit:
            self._deny(c, m.member_id, decision.reason)
            return
        valid_until = None
        if decision.valid_until is not None:
            valid_until = decision.valid_until - self.wall_offset
            if valid_until <= now:
                self._deny(c, m.member_id, "credentials already expired")
                return
        reason = self._check_region(c, m)
        if reason:
            self._deny(c, m.member_id, reason)
            return
        keyed = bool(m.roles & (msg.Roles.RECEIVE | msg.Roles.SEND))
        manager = bool(m.roles & msg.Roles.MANAGER)  # joins the scheme; gets no sender material
        member = _Member(
            m.member_id, c.id, credentials, m.roles, m.node_id, m.addr, valid_until,
            decision.valid_until, keyed,
        )
        c.member_id = m.member_id
        self.members[m.member_id] = member
        self.counters["admitted"] += 1
        if not keyed and not manager:  # a repair head: admitted to the tree, holds no group key
            self._welcome(member, self.epoch, b"", now=now)
            return
        self._pending_joins.append(m.member_id)
        self._membership_changed(now)

    def _on_place(self, c: _Conn, m: msg.Place, now: float) -> None:
        if c.member_id is not None:
            self._protocol_error(c, "PLACE after REGISTER", now)
            return
        c.region = m.region

    def _check_region(self, c: _Conn, m: msg.Register) -> str:
        """Regional key managers (``regions``, see :mod:`rmsec.security.regional`): a head
        may take the MANAGER role only if the scheme names it; a member that named a region
        (PLACE) is put there.  Returns why not, or ``""``."""
        if m.roles & msg.Roles.MANAGER:
            hosts = getattr(self.scheme, "hosts_manager", None)
            if not callable(hosts) or not hosts(m.member_id):
                return "no region of this group names this head as its manager"
        if c.region is not None:
            place = getattr(self.scheme, "place_named", None)
            if not callable(place):
                return "this group's key management has no regions"
            try:
                place(m.member_id, c.region)
            except LocalError as exc:
                return str(exc)
        return ""

    def _decide(self, credentials: Credentials, now: float) -> Decision:
        try:
            decision = self.policy.decide(credentials, self.group, self.wall(now))
        except RmsecError as exc:
            return Decision(False, f"access policy error: {exc}")
        if not isinstance(decision, Decision):
            return Decision(False, "access policy returned no decision")
        return decision

    def _deny(self, c: _Conn, member_id: bytes, reason: str) -> None:
        self.counters["denied"] += 1
        self._events.append(ev.MemberDenied(member_id, reason))
        self._send(c.id, msg.Denied(reason[: msg.MAX_REASON]))
        self._control_out.append((c.id, None))
        self._conns.pop(c.id, None)

    def _welcome(self, member: _Member, epoch: int, key_material: bytes, *, now: float) -> None:
        member.welcomed = True
        senders = ()  # material arrives per sender through MATERIAL_REQUEST / SENDER_INFO
        welcome = msg.Welcome(
            member.member_id, epoch, key_material, self.public_key, self.config.key_management,
            self.config.source_auth, dict(self.config.source_auth_options), self.config.aead,
            self.session, self.rekey_stream, self.bootstrap, float(self.config.epoch_grace),
            member.valid_until_wall, senders, self.multicast,
        )
        self._send(member.conn, welcome)
        self._events.append(ev.MemberJoined(member.member_id, epoch))
        if member.keyed:
            for record in self.senders.values():
                if record.owner != member.member_id:
                    self._request_material(record, [member.member_id], now)

    # ------------------------------------------------------------------ membership changes

    def _membership_changed(self, now: float) -> None:
        mode = self.config.rekey.mode
        if mode == "immediate":
            self._apply_changes(now)
        elif mode == "batch" and self._batch_deadline is None:
            self._batch_deadline = now + self.config.rekey.interval
        # periodic: the next period takes them

    def _remove_member(self, member: _Member, now: float, *, reason: str, expelled: bool) -> None:
        self.members.pop(member.member_id, None)
        for sender_id in list(member.senders):
            self._drop_sender(sender_id)
        if member.member_id in self._pending_joins:
            self._pending_joins.remove(member.member_id)
        if member.in_scheme:
            self._keyed -= 1
            self._pending_leaves.append(member.member_id)
        if expelled:
            self.counters["expelled"] += 1
            self._events.append(ev.MemberExpelled(member.member_id, reason))
        else:
            self.counters["left"] += 1
            self._events.append(ev.MemberLeft(member.member_id, reason))
        if member.in_scheme:
            self._membership_changed(now)

    def _apply_changes(self, now: float) -> None:
        """Hand pending joins and leaves to the scheme as one new epoch."""
        self._batch_deadline = None
        joins = [j for j in self._pending_joins if j in self.members]
        leaves = list(self._pending_leaves)
        self._pending_joins.clear()
        self._pending_leaves.clear()
        if not joins and not leaves:
            return
        update = self.scheme.update(joins=joins, leaves=leaves)
        existing = self._keyed  # keyed before this epoch: the rekey is for them
        for member_id in joins:
            joined = self.members[member_id]
            if not joined.in_scheme:
                joined.in_scheme = True
                self._keyed += 1
        self._publish(update, now, existing=existing)
        for member_id in joins:
            member = self.members[member_id]
            welcome = update.welcomes.get(member_id)
            if welcome is None:
                raise LocalError(f"key management gave no welcome for {member_id!r}")
            self._welcome(member, update.epoch, welcome, now=now)

    def _publish(self, update: Update, now: float, *, existing: int) -> None:
        """Sign the rekey for members who were there before (none need it on a first join)."""
        previous = self._published_epoch
        self._published_epoch = update.epoch
        if self._refresh_deadline is not None and self.config.rekey.refresh is not None:
            self._refresh_deadline = now + self.config.rekey.refresh
        size = 0
        if existing and previous is not None:
            envelope = RekeyEnvelope.seal(
                self._key, kind=EnvelopeKind.REKEY, session=self.session, epoch=update.epoch,
                from_epoch=previous, payload=update.rekey,
            )
            self._rekey_out.append(envelope)
            size = len(envelope)
            self.counters["rekeys"] += 1
            self.counters["rekey_bytes"] += size
        self._events.append(ev.RekeyDone(update.epoch, size, self.scheme.members))

    def refresh(self, now: float) -> None:
        """Rekey now with unchanged membership (and apply pending changes, if any)."""
        if self._pending_joins or self._pending_leaves:
            self._apply_changes(now)
            return
        if not self._keyed:
            return
        self._publish(self.scheme.refresh(), now, existing=1)

    def rekey_now(self, now: float) -> None:
        """Apply pending changes at once, whatever the policy (an operator's command)."""
        self._apply_changes(now)

    def expel(self, member_id: bytes, reason: str, now: float) -> None:
        """Remove a member: tell it why, close its connection, rekey per the policy."""
        member = self.members.get(member_id)
        if member is None:
            return
        self._send(member.conn, msg.Expelled(reason[: msg.MAX_REASON]))
        self._control_out.append((member.conn, None))
        self._conns.pop(member.conn, None)
        self._remove_member(member, now, reason=reason, expelled=True)

    def recheck_policy(self, now: float) -> None:
        """Reload the policy's external state and expel every member it no longer admits."""
        try:
            self.policy.reload()
        except RmsecError as exc:
            self._events.append(ev.ProtocolError(None, None, f"access policy reload failed: {exc}"))
            return
        for member in list(self.members.values()):
            try:
                decision = self.policy.still_valid(member.credentials, self.group, self.wall(now))
            except RmsecError as exc:
                decision = Decision(False, f"access policy error: {exc}")
            if not decision.admit:
                self.expel(member.member_id, decision.reason, now)
            elif decision.valid_until is not None:
                member.valid_until_wall = decision.valid_until
                member.valid_until = decision.valid_until - self.wall_offset

    # ------------------------------------------------------------------ senders

    def _on_add_sender(self, c: _Conn, m: msg.AddSender, now: float) -> None:
        member = self._member_of(c)
        if member is None:
            self._protocol_error(c, "ADD_SENDER before being welcomed", now)
            return
        reason = ""
        if not member.roles & msg.Roles.SEND:
            reason = "registered without the send role"
        elif m.sender_id in self.senders and self.senders[m.sender_id].owner != member.member_id:
            reason = "sender id taken"
        elif m.sender_id not in member.senders and len(member.senders) >= MAX_SENDERS_PER_MEMBER:
            reason = f"at most {MAX_SENDERS_PER_MEMBER} senders per member"
        if reason:
            self._send(c.id, msg.SenderResult(m.sender_id, 0, reason))
            return
        record = _SenderRecord(m.sender_id, member.member_id, m.stream, m.params, m.addr)
        self.senders[m.sender_id] = record
        member.senders.add(m.sender_id)
        self.counters["senders"] += 1
        self._events.append(ev.SenderAdded(m.sender_id, member.member_id, m.stream))
        others = [
            x.member_id for x in self.members.values()
            if x.welcomed and x.keyed and x.member_id != member.member_id
        ]
        # The sender hears SENDER_RESULT (and starts sending) only once every current member
        # has its SENDER_INFO queued: frames of a sender a member does not know yet wait in
        # a bounded buffer, and a sender that starts at full rate would overflow it.
        record.awaiting = set(others)
        self._request_material(record, others, now)
        if not record.awaiting:
            self._send(c.id, msg.SenderResult(m.sender_id, 1, ""))

    def _request_material(self, record: _SenderRecord, members: Sequence[bytes], now: float) -> None:
        """Ask the sender for each member's material; the request carries our clock and the
        answer the sender's, so every SENDER_INFO carries a fresh bound on the sender's clock
        (:mod:`rmsec.security.clocks`)."""
        owner = self.members.get(record.owner)
        if owner is None:
            return
        for start in range(0, len(members), msg.MAX_BATCH):
            chunk = tuple(members[start : start + msg.MAX_BATCH])
            if chunk:
                self._send(owner.conn, msg.MaterialRequest(record.sender_id, chunk, now))

    def _on_material(self, c: _Conn, m: msg.Material, now: float) -> None:
        member = self._member_of(c)
        record = self.senders.get(m.sender_id)
        if member is None or record is None or record.owner != member.member_id:
            self.counters["material_ignored"] += 1
            return
        leg = clocks.sender_leg(request_time=m.request_time, sender_time=m.sender_time, now=now)
        clock = None if leg is None else (leg.offset, leg.error, leg.at)
        if leg is not None and (record.clock is None or leg.at >= record.clock.at):
            record.clock = leg
            self.counters["sender_clocks"] += 1
        for member_id, material in m.items:
            target = self.members.get(member_id)
            if target is None or not target.welcomed or not target.keyed:
                continue
            self._send(target.conn, msg.SenderInfo(
                record.sender_id, record.owner, record.stream, record.params, material, clock))
            self.counters["sender_info"] += 1
        if record.awaiting:
            record.awaiting.difference_update(member_id for member_id, _ in m.items)
            if not record.awaiting:
                self._send(c.id, msg.SenderResult(record.sender_id, 1, ""))

    def _on_remove_sender(self, c: _Conn, m: msg.RemoveSender, now: float) -> None:
        member = self._member_of(c)
        if member is None or m.sender_id not in member.senders:
            return
        member.senders.discard(m.sender_id)
        self._drop_sender(m.sender_id)

    def _drop_sender(self, sender_id: bytes) -> None:
        record = self.senders.pop(sender_id, None)
        if record is None:
            return
        self._events.append(ev.SenderRemoved(sender_id, record.owner))
        for member in self.members.values():
            if member.welcomed and member.keyed and member.member_id != record.owner:
                self._send(member.conn, msg.SenderGone(sender_id))

    # ------------------------------------------------------------------ recovery, leave

    def _member_of(self, c: _Conn) -> _Member | None:
        if c.member_id is None:
            return None
        member = self.members.get(c.member_id)
        if member is None or member.conn != c.id or not member.welcomed:
            return None
        return member

    def _on_recover(self, c: _Conn, m: msg.Recover, now: float) -> None:
        member = self._member_of(c)
        if member is None or not member.in_scheme:
            self.counters["recoveries_refused"] += 1
            return
        if now - member.last_recovery < RECOVERY_INTERVAL:
            self.counters["recoveries_limited"] += 1
            return
        # A member asks once as soon as it is bound into the tree, for the rekeys sent while
        # it was joining (rmsec.secure_api: the join catch-up).  That first request does not
        # start the interval, so a gap the member finds right after joining is served at once
        # instead of being dropped; every later request does (one free request per
        # registration, and registering costs a TLS handshake and the access policy).
        if member.caught_up:
            member.last_recovery = now
        member.caught_up = True
        payload = self.scheme.recover(member.member_id)
        envelope = RekeyEnvelope.seal(
            self._key, kind=EnvelopeKind.RECOVERY, session=self.session, epoch=self.epoch,
            from_epoch=min(m.have_epoch, self.epoch), payload=payload, member_id=member.member_id,
        )
        self._send(c.id, msg.Recovery(envelope))
        self.counters["recoveries"] += 1
        self._events.append(ev.RecoveryServed(member.member_id, m.have_epoch, self.epoch))

    def _on_time_request(self, c: _Conn, m: msg.TimeRequest, now: float) -> None:
        """Loose time synchronisation: our clock, at once (the round trip bounds it), with our
        latest bound on every sender's clock the member may know (registered by someone
        else; none for a key-less head), at most MAX_CLOCKS per TIME."""
        self.counters["time_requests"] += 1
        member = self._member_of(c)
        legs: list[tuple[bytes, tuple[float, float, float]]] = []
        if member is not None and member.keyed:
            legs = [
                (r.sender_id, (r.clock.offset, r.clock.error, r.clock.at))
                for r in self.senders.values()
                if r.clock is not None and r.owner != member.member_id
            ]
        for start in range(0, max(1, len(legs)), msg.MAX_CLOCKS):
            self._send(c.id, msg.Time(m.request, now, tuple(legs[start : start + msg.MAX_CLOCKS])))

    def probe_senders(self, now: float) -> None:
        """Ask every registered sender for its clock alone (a MATERIAL_REQUEST naming no
        member, answered by an empty MATERIAL that refreshes :attr:`_SenderRecord.clock`)."""
        for record in self.senders.values():
            owner = self.members.get(record.owner)
            if owner is not None:
                self.counters["clock_probes"] += 1
                self._send(owner.conn, msg.MaterialRequest(record.sender_id, (), now))

    def _on_leave(self, c: _Conn, m: msg.Leave, now: float) -> None:
        if c.member_id is None:
            self._close(c.id, now)
            return
        member = self.members.get(c.member_id)
        self._control_out.append((c.id, None))
        self._conns.pop(c.id, None)
        if member is not None and member.conn == c.id:
            self._remove_member(member, now, reason="left", expelled=False)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        deadlines = [
            d for d in (self._batch_deadline, self._period_deadline, self._refresh_deadline,
                        self._recheck_deadline, self._probe_deadline)
            if d is not None
        ]
        expiries = [m.valid_until for m in self.members.values() if m.valid_until is not None]
        if expiries:
            deadlines.append(min(expiries))
        if self._part_deadlines:
            deadlines.append(min(self._part_deadlines.values()))
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for member in list(self.members.values()):
            if member.valid_until is not None and member.valid_until <= now:
                self.expel(member.member_id, "credentials expired", now)
        if self._recheck_deadline <= now:
            self._recheck_deadline = now + self.config.policy_recheck
            self.recheck_policy(now)
        if self._batch_deadline is not None and self._batch_deadline <= now:
            self._apply_changes(now)
        if self._period_deadline is not None and self._period_deadline <= now:
            self._period_deadline = now + self.config.rekey.interval
            self.refresh(now)
        if self._refresh_deadline is not None and self._refresh_deadline <= now:
            assert self.config.rekey.refresh is not None
            self._refresh_deadline = now + self.config.rekey.refresh
            self.refresh(now)
        for part, due in list(self._part_deadlines.items()):
            if due <= now:
                self._part_deadlines[part] = now + self.scheme.part_refresh_periods[part]
                self.refresh_part(part, now)
        if self._probe_deadline is not None and self._probe_deadline <= now:
            assert self.clock_probe is not None
            self._probe_deadline = now + self.clock_probe
            self.probe_senders(now)

    def refresh_part(self, part: int, now: float) -> None:
        """One part of the group (a region) rekeys on its own period: its own keys and a new
        group secret, membership unchanged; pending changes go first as one epoch."""
        if self._pending_joins or self._pending_leaves:
            self._apply_changes(now)
            return
        if not self._keyed:
            return
        self.counters["part_refreshes"] += 1
        self._publish(self.scheme.refresh_part(part), now, existing=1)

    # ------------------------------------------------------------------ outputs

    def control_to_send(self) -> list[tuple[int, bytes | None]]:
        """``(connection, message)`` pairs in order; ``None`` closes the connection."""
        out, self._control_out = self._control_out, []
        return out

    def rekeys_to_send(self) -> list[bytes]:
        """Signed rekey envelopes for the controller's rekey stream, in epoch order."""
        out, self._rekey_out = self._rekey_out, []
        return out

    def next_event(self) -> ev.SecurityEvent | None:
        return self._events.popleft() if self._events else None

    def stats(self) -> dict[str, int]:
        result = dict(self.counters)
        result["members"] = sum(1 for m in self.members.values() if m.welcomed)
        result["pending"] = len(self._pending_joins)
        result["epoch"] = self.epoch
        result["connections_open"] = len(self._conns)
        result.update({f"cookie_{k}": v for k, v in self.cookies.counters.items()})
        return result
