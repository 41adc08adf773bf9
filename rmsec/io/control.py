"""The registration service: TLS on TCP between members and the controller (DESIGN.md §4).

Server side, :class:`ControlServer` runs a sans-IO :class:`~rmsec.security.controller.
Controller` behind a TCP listener.  Every connection goes through three stages, each bounded
in time (``handshake_timeout``) and in count:

1. **cookie** (plaintext, tiny frames): HELLO → CHALLENGE → RESPONSE, answered by the
   controller machine (:meth:`Controller.challenge`, :mod:`rmsec.security.cookie`); nothing
   else is done for a peer that does not answer, and the cookie becomes a client puzzle while
   many connections are in stage 2;
2. **TLS** (``ssl`` + :class:`trio.SSLStream`, TLS 1.3, client certificates verified against
   the group CA): at most ``max_handshakes`` at once;
3. **registration**: length-prefixed CBOR control messages (:mod:`rmsec.security.messages`)
   fed to the controller machine, whose output is written back.

At most ``max_pending`` connections may be in stages 1-2 (and before REGISTER); when a new
one arrives at the limit, the oldest connection still in the cookie stage is dropped (or, if
every pending one has answered its cookie, the oldest of those), so a flood of idle or
garbage connections cannot keep a prompt, legitimate member out.  Each connection's outgoing queue
is bounded; a member that does not read its control messages is disconnected.

Client side, :func:`connect_control` does the cookie round trip and the TLS handshake and
returns a :class:`ControlStream` of whole messages; :class:`MemberLink` runs a sans-IO
:class:`~rmsec.security.member.Member` on one.

Both drivers follow :class:`rmsec.io.driver.NodeDriver`: every machine call goes through
``command`` / the receive loop, after which ``_after`` flushes output and moves the single
timer's deadline.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pathlib
import ssl
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import trio

from rmsec.errors import MalformedPacket, RemoteError
from rmsec.security import cookie, messages
from rmsec.security.controller import Controller
from rmsec.security.events import SecurityEvent
from rmsec.security.member import Member, State

T = TypeVar("T")
Addr = tuple[str, int]

#: Name the controller's certificate carries (see :mod:`rmsec.credentials`).
CONTROLLER_NAME = "rmsec-controller"
RECEIVE_CHUNK = 65536


class RegistrationRefused(RemoteError):
    """The controller denied the registration (``reason`` is the access policy's) or the
    connection failed before a welcome."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------ TLS contexts


def _load_chain(context: ssl.SSLContext, certificate: bytes, private_key: bytes) -> None:
    """``ssl`` loads keys only from files: write them to a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="rmsec-tls-") as directory:
        cert_path = pathlib.Path(directory, "cert.pem")
        key_path = pathlib.Path(directory, "key.pem")
        cert_path.write_bytes(certificate)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_key)
        context.load_cert_chain(cert_path, key_path)


def server_context(
    *, certificate: bytes, private_key: bytes, ca_certificate: bytes, require_client_cert: bool = True
) -> ssl.SSLContext:
    """TLS 1.3 server context: the controller's identity; members verified against the CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    _load_chain(context, certificate, private_key)
    context.load_verify_locations(cadata=ca_certificate.decode("ascii"))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(
    *, ca_certificate: bytes, certificate: bytes | None = None, private_key: bytes | None = None
) -> ssl.SSLContext:
    """TLS 1.3 client context: the controller verified against the group CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=ca_certificate.decode("ascii"))
    if certificate is not None and private_key is not None:
        _load_chain(context, certificate, private_key)
    return context


# --------------------------------------------------------------------------------- framing


async def _receive_exactly(stream: trio.abc.ReceiveStream, count: int) -> bytes:
    """Exactly ``count`` bytes, never more: on the plaintext stage the next bytes belong to TLS."""
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise trio.EndOfChannel
        data += chunk
    return bytes(data)


async def _receive_frame(stream: trio.abc.ReceiveStream, max_len: int) -> bytes:
    header = await _receive_exactly(stream, messages.LENGTH_LEN)
    length = int.from_bytes(header, "big")
    if length > max_len:
        raise MalformedPacket(f"frame of {length} bytes exceeds {max_len}")
    return await _receive_exactly(stream, length)


def _peer(stream: trio.SocketStream) -> Addr:
    name = stream.socket.getpeername()
    return (str(name[0]), int(name[1]))


# ---------------------------------------------------------------------------------- server


class _Connection:
    """One registered-or-registering connection: its cancel scope and bounded outgoing queue
    (``None`` in the queue means: close after what came before)."""

    def __init__(self, conn_id: int, scope: trio.CancelScope, queue: int) -> None:
        self.id = conn_id
        self.scope = scope
        self.send, self.outgoing = trio.open_memory_channel[bytes | None](queue)
        self.registered = False


class ControlServer:
    """Serve one controller machine over TLS (see the module docstring)."""

    def __init__(
        self,
        controller: Controller,
        ssl_context: ssl.SSLContext,
        *,
        on_rekey: Callable[[bytes], None],
        on_event: Callable[[SecurityEvent], None] | None = None,
        max_pending: int = 256,
        max_handshakes: int = 32,
        handshake_timeout: float = 5.0,
        send_queue: int = 256,
    ) -> None:
        self.controller = controller
        self.ssl_context = ssl_context
        self._on_rekey = on_rekey
        self._on_event = on_event
        self.max_pending = max_pending
        self.handshake_timeout = handshake_timeout
        self.send_queue = send_queue
        self._handshakes = trio.CapacityLimiter(max_handshakes)
        self._pending: dict[int, trio.CancelScope] = {}  # insertion order = age
        self._vetted: set[int] = set()  # pending connections past the cookie
        self._in_tls = 0
        self._connections: dict[int, _Connection] = {}
        self._next_id = 0
        self._timer_scope: trio.CancelScope | None = None
        self._changed = trio.Event()
        self.address: Addr | None = None
        self.counters: dict[str, int] = {
            "accepted": 0, "evicted": 0, "cookie_failed": 0, "tls_failed": 0, "timed_out": 0,
            "registered": 0, "slow_disconnected": 0, "malformed": 0,
        }

    # -- public --------------------------------------------------------------------------------

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *,
        task_status: trio.TaskStatus[Addr] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; ``task_status.started((host, port))`` once bound."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            sockname = listeners[0].socket.getsockname()
            self.address = (str(sockname[0]), int(sockname[1]))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timer_loop)
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started(self.address)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    def command(self, call: Callable[[float], T]) -> T:
        """Run ``call(now)`` on the controller (expel, rekey_now, ...), then flush."""
        result = call(trio.current_time())
        self._after()
        return result

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def stats(self) -> dict[str, int]:
        result = dict(self.controller.stats())
        result.update({f"control_{k}": v for k, v in self.counters.items()})
        result["control_pending"] = len(self._pending)
        return result

    @property
    def pending(self) -> int:
        """Connections not yet registered (what a flood inflates; bounded by ``max_pending``)."""
        return len(self._pending)

    # -- the one place that runs after every machine call ---------------------------------------

    def _after(self) -> None:
        controller = self.controller
        for conn_id, data in controller.control_to_send():
            connection = self._connections.get(conn_id)
            if connection is None:
                continue
            try:
                connection.send.send_nowait(data)
            except trio.WouldBlock:
                self.counters["slow_disconnected"] += 1
                connection.scope.cancel()
            except trio.BrokenResourceError:
                pass
            if data is None:
                self._connections.pop(conn_id, None)
        for envelope in controller.rekeys_to_send():
            self._on_rekey(envelope)
        while (event := controller.next_event()) is not None:
            if self._on_event is not None:
                self._on_event(event)
        scope = self._timer_scope
        if scope is not None:
            deadline = controller.get_timer()
            scope.deadline = math.inf if deadline is None else deadline
        self._changed.set()
        self._changed = trio.Event()

    async def _timer_loop(self) -> None:
        controller = self.controller
        while True:
            deadline = controller.get_timer()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            deadline = controller.get_timer()
            now = trio.current_time()
            if deadline is not None and deadline <= now:
                controller.handle_timer(now)
                self._after()

    # -- connections ---------------------------------------------------------------------------

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            self.counters["accepted"] += 1
            self._next_id += 1
            conn_id = self._next_id
            scope = trio.CancelScope(deadline=trio.current_time() + self.handshake_timeout)
            if len(self._pending) >= self.max_pending:
                victim = next((c for c in self._pending if c not in self._vetted), None)
                if victim is None:
                    victim = next(iter(self._pending))
                self._pending.pop(victim).cancel()
                self._vetted.discard(victim)
                self.counters["evicted"] += 1
            self._pending[conn_id] = scope
            nursery.start_soon(self._handle, stream, conn_id, scope)

    async def _handle(self, stream: trio.SocketStream, conn_id: int, scope: trio.CancelScope) -> None:
        made = False
        try:
            with scope:
                tls = await self._vet(stream, conn_id)
                if tls is None:
                    return
                certificate = tls.getpeercert(binary_form=True)
                connection = _Connection(conn_id, scope, self.send_queue)
                self._connections[conn_id] = connection
                self.controller.connection_made(conn_id, certificate or None, trio.current_time())
                made = True
                self._after()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, tls, connection, nursery.cancel_scope)
                    if await self._reader(tls, connection):
                        # We are closing it: let the writer send what is queued (a DENIED,
                        # an EXPELLED) and close, but not forever.
                        nursery.cancel_scope.deadline = trio.current_time() + self.handshake_timeout
                    else:
                        nursery.cancel_scope.cancel()
            if scope.cancelled_caught and conn_id in self._pending:
                self.counters["timed_out"] += 1
        finally:
            self._pending.pop(conn_id, None)
            self._vetted.discard(conn_id)
            self._connections.pop(conn_id, None)
            if made:
                self.controller.connection_lost(conn_id, trio.current_time())
                self._after()
            with trio.CancelScope(shield=True), contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, OSError
            ):
                await trio.aclose_forcefully(stream)

    async def _vet(self, stream: trio.SocketStream, conn_id: int) -> trio.SSLStream[trio.SocketStream] | None:
        """Cookie round trip, then TLS; ``None`` (and counted) if the peer fails either."""
        try:
            peer = _peer(stream)
            hello = await _receive_frame(stream, cookie.MAX_MESSAGE)
            self.controller.busy = self._in_tls
            challenge = self.controller.challenge(peer, hello, trio.current_time())
            await stream.send_all(messages.frame(challenge))
            response = await _receive_frame(stream, cookie.MAX_MESSAGE)
        except (MalformedPacket, trio.EndOfChannel, trio.BrokenResourceError, OSError):
            self.counters["cookie_failed"] += 1
            return None
        if not self.controller.check_cookie(peer, response, trio.current_time()):
            self.counters["cookie_failed"] += 1
            return None
        self._vetted.add(conn_id)
        tls = trio.SSLStream(stream, self.ssl_context, server_side=True)
        self._in_tls += 1
        try:
            async with self._handshakes:
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            self.counters["tls_failed"] += 1
            return None
        finally:
            self._in_tls -= 1
        return tls

    async def _reader(self, tls: trio.SSLStream[trio.SocketStream], connection: _Connection) -> bool:
        """Feed the controller until the peer goes away (False) or the controller closed the
        connection (True)."""
        decoder = messages.FrameDecoder(self.controller.max_message(connection.id))
        while True:
            if connection.id not in self._connections:
                return True
            try:
                chunk = await tls.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                return False
            if not chunk:
                return False
            decoder.max_len = self.controller.max_message(connection.id)
            try:
                frames = decoder.feed(bytes(chunk))
            except MalformedPacket:
                self.counters["malformed"] += 1
                return False
            for data in frames:
                self.controller.receive_control(connection.id, data, trio.current_time())
                if not connection.registered and self.controller.max_message(connection.id) > messages.MAX_UNREGISTERED:
                    connection.registered = True
                    self.counters["registered"] += 1
                    # Admitted: no longer pending, no longer bound by the handshake deadline.
                    self._pending.pop(connection.id, None)
                    self._vetted.discard(connection.id)
                    connection.scope.deadline = math.inf
                self._after()
                if connection.id not in self._connections:
                    return True

    async def _writer(
        self, tls: trio.SSLStream[trio.SocketStream], connection: _Connection, done: trio.CancelScope
    ) -> None:
        try:
            async for data in connection.outgoing:
                if data is None:
                    break
                await tls.send_all(messages.frame(data))
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
                await tls.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        done.cancel()


# ---------------------------------------------------------------------------------- client


class ControlStream:
    """A member's control connection after the cookie and the TLS handshake: whole messages."""

    def __init__(self, tls: trio.SSLStream[trio.SocketStream]) -> None:
        self._tls = tls
        self._decoder = messages.FrameDecoder(messages.MAX_MESSAGE)
        self._ready: deque[bytes] = deque()
        self._send_lock = trio.StrictFIFOLock()

    @property
    def peer_certificate(self) -> bytes | None:
        cert: bytes | None = self._tls.getpeercert(binary_form=True)
        return cert

    async def send(self, message: bytes) -> None:
        async with self._send_lock:
            await self._tls.send_all(messages.frame(message))

    async def receive(self) -> bytes:
        """The next message; :class:`trio.EndOfChannel` once the controller closed."""
        while not self._ready:
            chunk = await self._tls.receive_some(RECEIVE_CHUNK)
            if not chunk:
                raise trio.EndOfChannel
            self._ready.extend(self._decoder.feed(bytes(chunk)))
        return self._ready.popleft()

    async def aclose(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            await self._tls.aclose()


async def connect_control(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    server_hostname: str = CONTROLLER_NAME,
    max_difficulty: int = 20,
    rng: Callable[[int], bytes] = os.urandom,
) -> ControlStream:
    """Open a control connection: TCP, the cookie round trip, then TLS (verifying the
    controller's certificate for ``server_hostname``)."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        nonce = rng(cookie.NONCE_LEN)
        await stream.send_all(messages.frame(cookie.encode_hello(nonce)))
        challenge = cookie.Challenge.decode_untrusted(await _receive_frame(stream, cookie.MAX_MESSAGE))
        # Solving is bounded (2**(difficulty + 4) hashes) and the difficulty capped by the caller.
        response = cookie.solve(challenge, nonce, max_difficulty=max_difficulty)
        await stream.send_all(messages.frame(response.encode()))
        tls = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname)
        await tls.do_handshake()
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)
        raise
    return ControlStream(tls)


class MemberLink:
    """Run a :class:`Member`'s control side on a :class:`ControlStream`.

    The integration layer also calls into the same member (data frames, rekeys) through
    :meth:`command`, so control output produced there (a recovery request, say) is flushed
    too.  ``on_change`` runs after every machine call: drain ``member.next_event()`` there.
    """

    def __init__(
        self, member: Member, stream: ControlStream, *, on_change: Callable[[], None] | None = None
    ) -> None:
        self.member = member
        self.stream = stream
        self._on_change = on_change
        self._outgoing_send, self._outgoing = trio.open_memory_channel[bytes](1024)
        self._timer_scope: trio.CancelScope | None = None
        self._changed = trio.Event()
        self.closed = False
        self._queued = 0
        self._written = 0

    async def register(self) -> None:
        """Send REGISTER and read until welcomed; :class:`RegistrationRefused` otherwise
        (the policy's reason when the controller said DENIED)."""
        member = self.member
        member.start(trio.current_time())
        try:
            for data in member.control_to_send():
                await self.stream.send(data)
            while member.state == State.REGISTERING:
                data = await self.stream.receive()
                self.command(functools.partial(_deliver_control, member, data))
                for data in member.control_to_send():
                    await self.stream.send(data)
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError,
                ssl.SSLError, MalformedPacket, OSError):
            pass
        if member.state != State.MEMBER:
            self.closed = True
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            raise RegistrationRefused(member.reason or "controller closed the connection")

    async def run(self) -> None:
        """Pump control messages and timers until cancelled or the connection ends (call
        after :meth:`register`)."""
        member = self.member
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timer_loop)
                self._after()
                while True:
                    try:
                        data = await self.stream.receive()
                    except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError,
                            ssl.SSLError, MalformedPacket, OSError):
                        break
                    self.command(functools.partial(_deliver_control, member, data))
                    if member.state != State.MEMBER:
                        break
                nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self._notify()

    def command(self, call: Callable[[float], T]) -> T:
        result = call(trio.current_time())
        self._after()
        return result

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _after(self) -> None:
        for data in self.member.control_to_send():
            try:
                self._outgoing_send.send_nowait(data)
                self._queued += 1
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass  # a member that floods its own controller loses messages, not memory
        scope = self._timer_scope
        if scope is not None:
            deadline = self.member.get_timer()
            scope.deadline = math.inf if deadline is None else deadline
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()
        self._changed.set()
        self._changed = trio.Event()

    async def _writer(self) -> None:
        async for data in self._outgoing:
            try:
                await self.stream.send(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                return
            self._written += 1
            self._notify()

    async def flush(self) -> None:
        """Return once every queued control message has been handed to TLS."""
        await self.wait_until(lambda: self._written >= self._queued or self.closed)

    async def _timer_loop(self) -> None:
        member = self.member
        while True:
            deadline = member.get_timer()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            deadline = member.get_timer()
            now = trio.current_time()
            if deadline is not None and deadline <= now:
                member.handle_timer(now)
                self._after()


def _deliver_control(member: Member, data: bytes, now: float) -> None:
    member.receive_control(data, now)


@contextlib.asynccontextmanager
async def open_member_link(
    member: Member,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    server_hostname: str = CONTROLLER_NAME,
    on_change: Callable[[], None] | None = None,
) -> AsyncIterator[MemberLink]:
    """Connect, register and return once welcomed (:class:`RegistrationRefused` otherwise);
    leaving the block sends LEAVE and closes the connection."""
    stream = await connect_control(host, port, ssl_context, server_hostname=server_hostname)
    link = MemberLink(member, stream, on_change=on_change)
    await link.register()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        try:
            yield link
        finally:
            if not link.closed and member.state == State.MEMBER:
                link.command(member.leave)
                with trio.move_on_after(1.0, shield=True):
                    await link.flush()
            nursery.cancel_scope.cancel()
