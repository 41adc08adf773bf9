"""A group member's security state machine (sender, receiver or both), sans-IO.

Rules the machine obeys:

1. States: ``new → registering → member``, then ``left``, ``expelled`` or ``denied`` (final).
   Data can be protected or opened only as a member.
2. The welcome is trusted because it arrives inside TLS from the controller the member
   authenticated; if the signed announcement named a controller key, the welcome must carry
   the same one.  Every later key change arrives in an envelope signed by that key.
3. Rekeys only move forward: an envelope for an epoch at or below the current one is a
   replay and is counted; one that starts from an epoch other than ours means we missed
   something: it is held (bounded) and we ask the controller for recovery.
4. Data of an epoch we do not have yet is buffered (bounded, :class:`~rmsec.security.
   protection.Limits`); if the rekey does not follow within ``recovery_delay`` we ask for
   recovery too.  Recovery requests are rate-limited (``recovery_interval``).
5. A rekey that holds nothing for us (``NotForMe``) means we were evicted, or a scheme
   could not place us: we ask once; the controller answers with keys or with EXPELLED.

Outputs: :meth:`control_to_send` (messages for the controller, unframed),
:meth:`next_event` (:mod:`rmsec.security.events`), timers via :meth:`get_timer` /
:meth:`handle_timer`.  Data in: :meth:`receive_frame` (a message from a sender's stream),
:meth:`receive_rekey` (a message from the controller's rekey stream).  Data out:
:meth:`protect`, :meth:`pending_auth`, :meth:`flush_sender` (end of stream) and, for frames a
deferred signer (``batchsig``) finishes on a timer, :meth:`frames_to_send` after
:meth:`handle_timer`: the signer's batch deadline is part of :meth:`get_timer`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from rmsec.errors import AuthenticationFailed, LocalError, MalformedPacket, NotForMe, RmsecError
from rmsec.interfaces import (
    ClockBound,
    KeyManagement,
    KeyManagementMember,
    Rng,
    SourceAuth,
    Verifier,
)
from rmsec.security import clocks, regional, sigkeys
from rmsec.security import events as ev
from rmsec.security import messages as msg
from rmsec.security.aead import aead_algorithm
from rmsec.security.epochs import EpochKeys
from rmsec.security.protection import Limits, Opened, StreamProtector, Unprotector
from rmsec.security.rekey import EnvelopeKind, RekeyEnvelope, open_envelope

Addr = tuple[str, int]
#: Rekey envelopes held while waiting for recovery.
MAX_HELD_REKEYS = 64
#: Unprotector counters that are authentication failures: counter -> (``what``, detail) of
#: the :class:`~rmsec.security.events.AuthFailure` each one becomes.
_DATA_FAILURES: dict[str, tuple[str, str]] = {
    "auth_failed": ("data", "source authentication failed"),
    # The frame does not open under the group key of its epoch: altered on the way, or built
    # by someone without the key (an outsider).  Source auth does not always catch that first
    # (``groupmac`` keys are per member, and an AUTH frame has no trailer).
    "aead_failed": ("aead", "frame did not open under the group key (tampered, or not from a member)"),
}


class PluginLookup(Protocol):
    def get_key_management(self, name: str) -> type[KeyManagement]: ...

    def get_source_auth(self, name: str) -> type[SourceAuth]: ...


class _DefaultPlugins:
    def get_key_management(self, name: str) -> type[KeyManagement]:
        from rmsec import plugins

        return plugins.get_key_management(name)

    def get_source_auth(self, name: str) -> type[SourceAuth]:
        from rmsec import plugins

        return plugins.get_source_auth(name)


class State:
    NEW = "new"
    REGISTERING = "registering"
    MEMBER = "member"
    LEFT = "left"
    EXPELLED = "expelled"
    DENIED = "denied"
    FAILED = "failed"


@dataclasses.dataclass(slots=True)
class _KnownSender:
    owner: bytes
    stream: int
    verifier: Verifier | None = None
    #: the controller's bound on this sender's clock (controller time), from SENDER_INFO
    leg: ClockBound | None = None


class Member:
    """One member of a secured group (see the module docstring)."""

    def __init__(
        self,
        *,
        member_id: bytes,
        node_id: bytes,
        rng: Rng,
        now: float,
        roles: int = msg.Roles.RECEIVE,
        token: bytes | None = None,
        addr: Addr | None = None,
        controller_key: bytes | None = None,
        plugins: PluginLookup | None = None,
        limits: Limits | None = None,
        recovery_delay: float = 0.5,
        recovery_interval: float = 1.0,
        region: str | None = None,
    ) -> None:
        if not member_id or len(member_id) > msg.MAX_MEMBER_ID:
            raise LocalError("member id must be 1..255 bytes")
        if len(node_id) != 8:
            raise LocalError("node id must be 8 bytes")
        self.member_id = member_id
        self.node_id = node_id
        self.roles = roles
        self._token = token
        self._addr = addr
        #: The region to join (``regions``: the region of the head this member binds under).
        self.region = region
        self._rng = rng
        self._expected_controller = controller_key
        self._plugins: PluginLookup = plugins or _DefaultPlugins()
        self._limits = limits or Limits()
        self.recovery_delay = recovery_delay
        self.recovery_interval = recovery_interval
        self.state = State.NEW
        self.welcome: msg.Welcome | None = None
        self.keys: EpochKeys | None = None
        self._km: KeyManagementMember | None = None
        self._auth: SourceAuth | None = None
        self._controller: bytes | None = None
        self.unprotector: Unprotector | None = None
        self.protectors: dict[bytes, StreamProtector] = {}
        #: frames a deferred signer finished in handle_timer, per sender id, not yet taken
        self._outbox: dict[bytes, list[bytes]] = {}
        self.known_senders: dict[bytes, _KnownSender] = {}
        self._held: dict[int, RekeyEnvelope] = {}
        self._out: list[bytes] = []
        self._events: collections.deque[ev.SecurityEvent] = collections.deque()
        self.counters = collections.Counter[str]()
        self._recovery_due: float | None = None  # ask for recovery at this time
        self._last_recovery = float("-inf")
        self._behind = False  # a gap is known and not yet resolved
        self.reason: str | None = None
        #: loose time synchronisation (rmsec.security.clocks): our bound on the controller's
        #: clock, the TIME_REQUEST in flight (id, sent at), and SENDER_INFO held until the
        #: bound arrives (a verifier that needs a clock refuses everything without one)
        self.clock: ClockBound | None = None
        self._time_request: tuple[int, float] | None = None
        self._time_requests = 0
        self._awaiting_clock: dict[bytes, msg.SenderInfo] = {}
        #: when to re-measure the controller's clock (SourceAuth.clock_refresh, jittered)
        self._clock_due: float | None = None
        #: the last TIME_REQUEST answered: (id, its first TIME's time), for the further TIMEs
        #: of a controller with more than MAX_CLOCKS senders
        self._time_answered: tuple[int, float] | None = None
        #: Unprotector failure counts already turned into AuthFailure events.
        self._failures_reported = collections.Counter[str]()
        #: Epochs of rekeys already counted as awaiting a translation (counted once each).
        self._awaiting: set[int] = set()

    # ------------------------------------------------------------------ properties

    @property
    def epoch(self) -> int | None:
        return None if self.keys is None else self.keys.epoch

    @property
    def group_secret(self) -> bytes | None:
        return None if self._km is None else self._km.group_secret

    @property
    def rekey_stream(self) -> int | None:
        return None if self.welcome is None else self.welcome.rekey_stream

    @property
    def key_management(self) -> KeyManagementMember | None:
        """The scheme's member object (a manager head drains its translations from it)."""
        return self._km

    # ------------------------------------------------------------------ registration

    def start(self, now: float) -> None:
        """Queue the registration (call once the control connection is up)."""
        if self.state != State.NEW:
            raise LocalError(f"start() in state {self.state}")
        self.state = State.REGISTERING
        if self.region is not None:
            self._send(msg.Place(self.region))
        self._send(msg.Register(self.member_id, self.roles, self._token, self.node_id, self._addr))

    def leave(self, now: float) -> None:
        if self.state in (State.REGISTERING, State.MEMBER):
            self._send(msg.Leave())
        self.state = State.LEFT

    def _send(self, message: msg.ControlMessage) -> None:
        self._out.append(message.encode())

    def receive_control(self, data: bytes, now: float) -> None:
        """One message from the controller (already unframed; the connection is TLS)."""
        if self.state in (State.LEFT, State.EXPELLED, State.DENIED, State.FAILED):
            return
        try:
            message = msg.decode_untrusted(data)
        except MalformedPacket:
            self.counters["control_malformed"] += 1
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            self.counters["control_unexpected"] += 1
            return
        handler(self, message, now)

    def _on_welcome(self, m: msg.Welcome, now: float) -> None:
        if self.state != State.REGISTERING:
            self.counters["control_unexpected"] += 1
            return
        if m.member_id != self.member_id:
            self._fail("welcome for another member")
            return
        if self._expected_controller is not None and m.controller_key != self._expected_controller:
            self._fail("welcome names a controller key the announcement does not")
            return
        try:
            self._controller = sigkeys.check_public_key_untrusted(m.controller_key)
            algorithm = aead_algorithm(m.aead)
            keyed = bool(m.key_material)
            if keyed:
                scheme = self._plugins.get_key_management(m.key_management)
                self._km = scheme.member_from_welcome(m.key_material)
                if self._km.epoch != m.epoch:
                    raise MalformedPacket("welcome epoch disagrees with its key material")
            self._auth = self._plugins.get_source_auth(m.source_auth)(
                rng=self._rng, options=m.source_auth_options
            )
        except RmsecError as exc:
            self._fail(f"unusable welcome: {exc}")
            return
        self.welcome = m
        self.state = State.MEMBER
        self.keys = EpochKeys(algorithm, m.session, grace=m.grace)
        if self._km is not None:
            self.keys.install(self._km.epoch, self._km.group_secret, now)
        self.unprotector = Unprotector(self.keys, limits=self._limits)
        self._events.append(ev.Welcomed(m.epoch, keyed))
        if self._auth.needs_clock:
            self.synchronise_clock(now)
        for info in m.senders:
            self._on_sender_info(info, now)

    def _fail(self, reason: str) -> None:
        self.state = State.FAILED
        self.reason = reason
        self._events.append(ev.AuthFailure("welcome", reason))

    def _on_denied(self, m: msg.Denied, now: float) -> None:
        if self.state == State.REGISTERING:
            self.state = State.DENIED
            self.reason = m.reason
            self._events.append(ev.Denied(m.reason))
        else:  # a protocol complaint about something we sent as a member: we are cut off
            self.state = State.EXPELLED
            self.reason = m.reason
            self._events.append(ev.Expelled(m.reason))

    def _on_expelled(self, m: msg.Expelled, now: float) -> None:
        self.state = State.EXPELLED
        self.reason = m.reason
        self._events.append(ev.Expelled(m.reason))

    # ------------------------------------------------------------------ clock

    def synchronise_clock(self, now: float) -> None:
        """Ask the controller for its clock (TIME_REQUEST); a request still in flight is
        superseded.  Sent on welcome when the source-auth method needs a clock, then again
        every ``clock_refresh / 2`` to ``clock_refresh`` seconds (uniformly jittered, so a
        large group's requests do not arrive in step) while the method has a refresh period:
        the answer brings fresh bounds on every sender's clock too."""
        if self.state != State.MEMBER:
            raise LocalError(f"cannot synchronise in state {self.state}")
        self._time_requests = (self._time_requests + 1) & 0xFFFFFFFF
        self._time_request = (self._time_requests, now)
        self.counters["time_requests"] += 1
        self._send(msg.TimeRequest(self._time_requests))
        period = None if self._auth is None else self._auth.clock_refresh
        if period is not None and period > 0:
            fraction = int.from_bytes(self._rng(4), "big") / 2**32
            self._clock_due = now + period * (0.5 + 0.5 * fraction)
        else:
            self._clock_due = None

    def _on_time(self, m: msg.Time, now: float) -> None:
        pending = self._time_request
        if pending is None or m.request != pending[0] or now < pending[1]:
            if self._time_answered == (m.request, m.time):
                self._take_legs(m)  # a further TIME of the same answer: more senders
                return
            self.counters["time_unexpected"] += 1
            return
        self._time_request = None
        self._time_answered = (m.request, m.time)
        self.clock = clocks.from_exchange(sent_at=pending[1], peer_time=m.time, received_at=now)
        self.counters["time_synchronised"] += 1
        self._take_legs(m, compose=False)
        for known in self.known_senders.values():
            self._set_clock(known)
        held, self._awaiting_clock = self._awaiting_clock, {}
        for info in held.values():
            self._on_sender_info(info, now)

    def _take_legs(self, m: msg.Time, *, compose: bool = True) -> None:
        """Adopt the controller's newer bounds on the clocks of senders we know (the others
        are skipped: their SENDER_INFO brings its own) and, with ``compose``, recompose."""
        for sender_id, clock in m.clocks:
            known = self.known_senders.get(sender_id)
            if known is None:
                continue
            leg = ClockBound(*clock)
            if known.leg is None or leg.at >= known.leg.at:
                known.leg = leg
                self.counters["sender_clocks_refreshed"] += 1
                if compose:
                    self._set_clock(known)

    def _set_clock(self, known: _KnownSender) -> None:
        if self.clock is not None and known.leg is not None and known.verifier is not None:
            known.verifier.set_clock(clocks.compose(self.clock, known.leg))

    # ------------------------------------------------------------------ senders

    def _on_sender_info(self, m: msg.SenderInfo, now: float) -> None:
        if self.unprotector is None or self._auth is None:
            return
        if m.sender_id in self.protectors:
            return  # our own stream
        leg = None if m.clock is None else ClockBound(*m.clock)
        if self._auth.needs_clock and leg is not None and self.clock is None:
            # Its packets wait among the unknown senders' (bounded) until our clock is in.
            if m.sender_id in self._awaiting_clock or len(self._awaiting_clock) < 4096:
                self._awaiting_clock[m.sender_id] = m
            else:
                self.counters["sender_info_dropped"] += 1
            return
        try:
            verifier = self._auth.verifier(m.params, m.material, now=now)
        except (MalformedPacket, AuthenticationFailed):
            self.counters["sender_info_bad"] += 1
            return
        known = _KnownSender(m.owner, m.stream, verifier, leg)
        self._set_clock(known)
        try:
            opened = self.unprotector.add_sender(m.sender_id, verifier, now)
        except LocalError:
            self.counters["sender_info_dropped"] += 1
            return
        self.known_senders[m.sender_id] = known
        self._events.append(ev.SenderKnown(m.sender_id, m.owner, m.stream))
        self._deliver(opened)

    def _on_sender_gone(self, m: msg.SenderGone, now: float) -> None:
        self._awaiting_clock.pop(m.sender_id, None)
        if self.unprotector is not None:
            self.unprotector.remove_sender(m.sender_id)
        if self.known_senders.pop(m.sender_id, None) is not None:
            self._events.append(ev.SenderGone(m.sender_id))

    def _on_sender_result(self, m: msg.SenderResult, now: float) -> None:
        if not m.ok:
            self.protectors.pop(m.sender_id, None)
        self._events.append(ev.SenderRegistered(m.sender_id, bool(m.ok), m.reason))

    def _on_material_request(self, m: msg.MaterialRequest, now: float) -> None:
        protector = self.protectors.get(m.sender_id)
        if protector is None:
            return
        items: list[tuple[bytes, bytes]] = []
        size = 0
        for member_id in m.members:
            material = protector.signer.material_for(member_id)
            items.append((member_id, material))
            size += len(material) + len(member_id)
            if size >= 1024 * 1024 or len(items) >= msg.MAX_BATCH:
                self._send(msg.Material(m.sender_id, tuple(items), m.time, now))
                items, size = [], 0
        if items or not m.members:  # an empty request asks for our clock alone
            self._send(msg.Material(m.sender_id, tuple(items), m.time, now))

    def add_sender(self, stream: int, now: float, *, sender_id: bytes | None = None) -> bytes:
        """Start protecting a stream of ours: returns its sender id (8 random bytes unless
        given: reuse the transport node id so one id names the node everywhere)."""
        if self.state != State.MEMBER or self._auth is None or self.keys is None:
            raise LocalError("add_sender() before the welcome")
        if not self.roles & msg.Roles.SEND or self._km is None:
            raise LocalError("this member did not register with the send role")
        sender_id = sender_id if sender_id is not None else self._rng(8)
        if len(sender_id) != 8 or sender_id in self.protectors:
            raise LocalError("sender id must be 8 unused bytes")
        signer = self._auth.signer(sender_id=sender_id, now=now)
        self.protectors[sender_id] = StreamProtector(self.keys, signer, sender_id)
        self._send(msg.AddSender(sender_id, stream, signer.params, self._addr))
        return sender_id

    def remove_sender(self, sender_id: bytes) -> None:
        self._outbox.pop(sender_id, None)
        if self.protectors.pop(sender_id, None) is not None and self.state == State.MEMBER:
            self._send(msg.RemoveSender(sender_id))

    def protect(self, sender_id: bytes, data: bytes, now: float, *, encrypt: bool = True) -> list[bytes]:
        """Frames to send on ``sender_id``'s stream, in order: every finished message frame
        (this one; with a deferred signer such as ``batchsig``, none until its batch closes,
        then the whole batch), then any source-auth packets now due.  The message's sequence
        number is ``protectors[sender_id].next_seq`` before the call."""
        if self.state != State.MEMBER:
            raise LocalError(f"cannot send in state {self.state}")
        protector = self.protectors.get(sender_id)
        if protector is None:
            raise LocalError("unknown sender id: add_sender() first")
        protector.submit(data, now, encrypt=encrypt)
        return self._take(sender_id, protector, now)

    def pending_auth(self, sender_id: bytes, now: float) -> list[bytes]:
        """Frames due by ``now`` without a new message (poll on a timer): batches a deferred
        signer closed by deadline, source-auth packets."""
        protector = self.protectors.get(sender_id)
        if protector is None or self.state != State.MEMBER:
            return []
        return self._take(sender_id, protector, now)

    def outstanding_until(self, sender_id: bytes) -> float | None:
        """When the source-auth packets the stream's last frames need will have been given
        out by :meth:`pending_auth` (``None``: nothing outstanding); the stream must not end
        before, or receivers cannot verify its tail (TESLA keys, EMSS signatures)."""
        protector = self.protectors.get(sender_id)
        if protector is None or self.state != State.MEMBER:
            return None
        return protector.signer.outstanding_until()

    def flush_sender(self, sender_id: bytes, now: float) -> list[bytes]:
        """Every frame still held for ``sender_id`` (a deferred signer's open batch signed now),
        then source-auth packets due: call before ending the stream."""
        protector = self.protectors.get(sender_id)
        if protector is None or self.state != State.MEMBER:
            return []
        return self._take(sender_id, protector, now, flush=True)

    def _take(self, sender_id: bytes, protector: StreamProtector, now: float, *,
              flush: bool = False) -> list[bytes]:
        frames = self._outbox.pop(sender_id, [])
        frames.extend(protector.flush(now) if flush else protector.ready(now))
        frames.extend(protector.pending(now))
        return frames

    def frames_to_send(self) -> list[tuple[bytes, bytes]]:
        """``(sender_id, frame)`` for the frames :meth:`handle_timer` finished (a deferred
        signer's batch closed at its deadline), in each stream's order."""
        out = [(sid, frame) for sid, frames in self._outbox.items() for frame in frames]
        self._outbox.clear()
        return out

    # ------------------------------------------------------------------ data

    def receive_frame(self, frame: bytes, now: float) -> None:
        """A message from a sender's stream (events :class:`~ev.Delivered` for what opens)."""
        if self.state != State.MEMBER or self.unprotector is None:
            self.counters["data_dropped_not_member"] += 1
            return
        if regional.is_translation_frame(frame):
            self._on_translation(frame, now)
            return
        if self._km is None:  # a key-less repair head: it forwards ciphertext, never opens it
            self.counters["data_dropped_keyless"] += 1
            return
        self._deliver(self.unprotector.receive(frame, now))
        self._check_future(now)

    def _deliver(self, opened: list[Opened]) -> None:
        self._report_data_failures()  # whatever the unprotector just did (receive, release)
        for item in opened:
            known = self.known_senders.get(item.sender_id)
            owner, stream = (known.owner, known.stream) if known else (b"", -1)
            self._events.append(ev.Delivered(
                item.sender_id, owner, stream, item.seq, item.epoch, item.data, item.encrypted))

    def _report_data_failures(self) -> None:
        """One :class:`~ev.AuthFailure` per failure the unprotector counted since the last
        call, wherever it happened (a frame received, frames released by a new epoch or a new
        sender), so the ``rmsec_auth_failure`` hook hears of every one."""
        if self.unprotector is None:
            return
        counters = self.unprotector.counters
        for counter, (what, detail) in _DATA_FAILURES.items():
            new = counters[counter] - self._failures_reported[counter]
            self._failures_reported[counter] = counters[counter]
            for _ in range(new):
                self._events.append(ev.AuthFailure(what, detail))

    def _check_future(self, now: float) -> None:
        assert self.unprotector is not None
        ahead = self.unprotector.highest_future_epoch
        if ahead is not None and self._recovery_due is None and not self._behind:
            self._recovery_due = now + self.recovery_delay

    # ------------------------------------------------------------------ rekeys

    def receive_rekey(self, data: bytes, now: float) -> None:
        """A message from the controller's rekey stream."""
        if self.state != State.MEMBER or self._controller is None or self.welcome is None:
            self.counters["rekeys_ignored"] += 1
            return
        try:
            envelope = open_envelope(data, self._controller, session=self.welcome.session)
        except MalformedPacket:
            self.counters["rekeys_malformed"] += 1
            return
        except AuthenticationFailed:
            self.counters["rekeys_forged"] += 1
            self._events.append(ev.AuthFailure("rekey", "bad controller signature"))
            return
        if envelope.kind != EnvelopeKind.REKEY:
            self.counters["rekeys_forged"] += 1  # a recovery for someone else, replayed here
            self._events.append(ev.AuthFailure("rekey", "recovery envelope on the rekey stream"))
            return
        if self._km is None:
            return  # a key-less head follows nothing
        if envelope.epoch <= self._km.epoch:
            self.counters["rekeys_replayed"] += 1
            return
        if envelope.from_epoch != self._km.epoch:
            self._hold(envelope)
            self._request_recovery(now, "missed a rekey")
            return
        self._apply_rekey(envelope, now)
        self._apply_held(now)

    def _hold(self, envelope: RekeyEnvelope, *, count: bool = True) -> None:
        if count:  # not when a re-checked rekey goes back on hold
            self.counters["rekeys_held"] += 1
        self._held[envelope.epoch] = envelope
        while len(self._held) > MAX_HELD_REKEYS:
            del self._held[min(self._held)]

    def _apply_held(self, now: float) -> None:
        while self._km is not None:
            for epoch in [e for e in self._held if e <= self._km.epoch]:
                del self._held[epoch]
            ready = [e for e in self._held.values() if e.from_epoch == self._km.epoch]
            if not ready:
                return
            envelope = min(ready, key=lambda e: e.epoch)
            del self._held[envelope.epoch]
            if not self._apply_rekey(envelope, now, held=True):
                return

    def _on_translation(self, frame: bytes, now: float) -> None:
        """A regional manager head's translation (:mod:`rmsec.security.regional`): kept by
        the scheme, unopened, until the signed rekey of its epoch is applied."""
        if not isinstance(self._km, regional.TranslationReceiver):
            self.counters["translations_ignored"] += 1
            return
        try:
            self._km.accept_translation(regional.decode_translation_frame_untrusted(frame))
        except MalformedPacket:
            self.counters["translations_malformed"] += 1
            return
        except NotForMe:
            self.counters["translations_ignored"] += 1
            return
        self.counters["translations_accepted"] += 1
        self._apply_held(now)

    def _apply_rekey(
        self, envelope: RekeyEnvelope, now: float, *, recovered: bool = False, held: bool = False
    ) -> bool:
        assert self._km is not None and self.keys is not None and self.unprotector is not None
        previous = self._km.epoch
        try:
            self._km.apply(envelope.payload)
        except regional.AwaitingTranslation as exc:
            # Genuine, but its region's wrap comes from the manager head: hold it until the
            # translation arrives, and recover from the controller if it does not in time.
            # Every translation that arrives re-checks the held rekey: count it only once.
            first = envelope.epoch not in self._awaiting
            if first:
                self._awaiting.add(envelope.epoch)
                while len(self._awaiting) > MAX_HELD_REKEYS:
                    self._awaiting.discard(min(self._awaiting))
                self.counters["rekeys_awaiting_translation"] += 1
            if isinstance(exc, regional.TranslationRejected):
                self.counters["translations_rejected"] += 1
                self._events.append(ev.AuthFailure("translation", "translation did not open"))
            if not recovered:
                self._hold(envelope, count=not held)  # a re-check was counted already
                self._behind = True
                if self._recovery_due is None:
                    self._recovery_due = now + self.recovery_delay
            return False
        except NotForMe:
            self.counters["rekeys_not_for_me"] += 1
            if not recovered:
                self._request_recovery(now, "rekey held nothing for us")
            return False
        except (AuthenticationFailed, MalformedPacket):
            self.counters["rekeys_rejected"] += 1
            self._events.append(ev.AuthFailure("rekey", "key management refused the rekey"))
            if not recovered:
                self._request_recovery(now, "rekey refused by the scheme")
            return False
        epoch = self._km.epoch
        if epoch != envelope.epoch:
            self.counters["rekeys_epoch_mismatch"] += 1
        current = self.keys.epoch
        if current is None or epoch > current:
            self.keys.install(epoch, self._km.group_secret, now)
        self._awaiting = {e for e in self._awaiting if e > epoch}
        self.counters["recoveries_applied" if recovered else "rekeys_applied"] += 1
        self._events.append(ev.EpochChanged(epoch, previous, recovered))
        self._deliver(self.unprotector.release(now))
        if self.unprotector.highest_future_epoch is None and not self._held:
            self._behind = False
            self._recovery_due = None
        return True

    def _on_recovery(self, m: msg.Recovery, now: float) -> None:
        if self._controller is None or self.welcome is None or self._km is None:
            return
        try:
            envelope = open_envelope(m.envelope, self._controller, session=self.welcome.session)
        except MalformedPacket:
            self.counters["rekeys_malformed"] += 1
            return
        except AuthenticationFailed:
            self.counters["rekeys_forged"] += 1
            self._events.append(ev.AuthFailure("recovery", "bad controller signature"))
            return
        if envelope.kind != EnvelopeKind.RECOVERY or envelope.member_id != self.member_id:
            self.counters["rekeys_forged"] += 1
            return
        if envelope.epoch <= self._km.epoch:
            self.counters["recoveries_stale"] += 1
            self._behind = False
            self._recovery_due = None
            self._apply_held(now)
            return
        self._behind = False
        self._recovery_due = None
        self._apply_rekey(envelope, now, recovered=True)
        self._apply_held(now)

    def request_recovery(self, now: float, why: str = "asked by the application") -> bool:
        """Ask the controller for key recovery now (DESIGN.md §4: a way for a member to ask
        for a key it missed).

        Recovery is automatic when a gap shows (a rekey from an epoch we lack, data of an
        epoch we do not have); this is for an application that knows more than the machine,
        say after its data plane was cut off for a while.  Answered by a recovery envelope,
        or by a stale one when we were current (counters ``recoveries_applied`` /
        ``recoveries_stale``); retried every ``recovery_interval`` until answered.  Returns
        False when the rate limit postponed the request to the end of the interval.
        """
        if self.state != State.MEMBER or self._km is None:
            raise LocalError(f"no keys to recover in state {self.state} (or a key-less head)")
        before = self.counters["recoveries_requested"]
        self._request_recovery(now, why)
        return self.counters["recoveries_requested"] != before

    def _request_recovery(self, now: float, why: str) -> None:
        self._behind = True
        if now - self._last_recovery < self.recovery_interval:
            self._recovery_due = self._last_recovery + self.recovery_interval
            return
        self._last_recovery = now
        self._recovery_due = now + self.recovery_interval  # retry unless resolved
        have = self._km.epoch if self._km is not None else 0
        self.counters["recoveries_requested"] += 1
        self._send(msg.Recover(have))
        self._events.append(ev.RecoveryRequested(have, why))

    # ------------------------------------------------------------------ timers, outputs

    def get_timer(self) -> float | None:
        deadlines = [self._recovery_due]
        if self.state == State.MEMBER:
            deadlines.append(self._clock_due)
        if self.keys is not None:
            deadlines.append(self.keys.get_timer())
        if self.unprotector is not None:
            deadlines.append(self.unprotector.get_timer())
            deadlines.append(self.unprotector.poll_timer())
        if self.state == State.MEMBER:  # deferred signers' batch deadlines
            deadlines.extend(p.get_timer() for p in self.protectors.values())
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if self._clock_due is not None and now >= self._clock_due and self.state == State.MEMBER:
            self.synchronise_clock(now)  # re-arms itself
        if self.keys is not None:
            self.keys.handle_timer(now)
        if self.unprotector is not None:
            self.unprotector.handle_timer(now)
            if self.state == State.MEMBER and self._km is not None:
                self._deliver(self.unprotector.poll(now))  # source auth released by time
        if self.state == State.MEMBER:
            for sender_id, protector in self.protectors.items():
                due = protector.get_timer()
                if due is not None and due <= now:
                    self._outbox.setdefault(sender_id, []).extend(protector.ready(now))
        if self._recovery_due is not None and now >= self._recovery_due:
            self._recovery_due = None
            if self.state != State.MEMBER:
                return
            still_behind = self._behind or (
                self.unprotector is not None and self.unprotector.highest_future_epoch is not None
            )
            if still_behind:
                self._request_recovery(now, "data of an epoch we do not have")

    def control_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> ev.SecurityEvent | None:
        return self._events.popleft() if self._events else None

    def stats(self) -> dict[str, int]:
        result = dict(self.counters)
        if self.unprotector is not None:
            result.update({f"data_{k}": v for k, v in self.unprotector.counters.items()})
            # The methods' own counters (TESLA's late / evicted / unsynchronised, EMSS's
            # evicted...), summed over senders: packets a verifier held and had to give up
            # on are visible here, not only inside the plugin.
            for sender in self.unprotector.senders.values():
                own = getattr(sender.verifier, "stats", None)
                if isinstance(own, dict):
                    for k, v in own.items():
                        if isinstance(v, int) and v:
                            result[f"auth_{k}"] = result.get(f"auth_{k}", 0) + v
        for protector in self.protectors.values():
            for k, v in protector.counters.items():
                result[f"sent_{k}"] = result.get(f"sent_{k}", 0) + v
        result["epoch"] = -1 if self.epoch is None else self.epoch
        return result

    _handlers: dict[type[msg.ControlMessage], Callable[[Member, Any, float], None]] = {
        msg.Welcome: _on_welcome,
        msg.Denied: _on_denied,
        msg.Expelled: _on_expelled,
        msg.SenderInfo: _on_sender_info,
        msg.SenderGone: _on_sender_gone,
        msg.SenderResult: _on_sender_result,
        msg.MaterialRequest: _on_material_request,
        msg.Recovery: _on_recovery,
        msg.Time: _on_time,
    }
