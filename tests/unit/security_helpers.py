"""Shared fixtures for the security tests: seeded randomness, a protected sender/receiver
pair, and a whole group (controller + members) joined in memory, without an event loop."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rmsec import plugins
from rmsec.config import GroupConfig, RekeyPolicy
from rmsec.errors import ConfigError, MalformedPacket, NotForMe
from rmsec.interfaces import (
    AccessPolicy,
    KeyManagement,
    KeyManagementMember,
    SourceAuth,
    Update,
)
from rmsec.security import events as ev
from rmsec.security import messages as msg
from rmsec.security import sigkeys
from rmsec.security.aead import aead_algorithm
from rmsec.security.controller import Controller
from rmsec.security.epochs import EpochKeys
from rmsec.security.member import Member
from rmsec.security.protection import Limits, StreamProtector, Unprotector

SESSION = b"S" * 8


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


def source_auth(name: str, rng: Callable[[int], bytes], **options: object) -> SourceAuth:
    return plugins.get_source_auth(name)(rng=rng, options=options)


class Pair:
    """One sender stream and one receiver sharing epoch secrets (as two members would)."""

    def __init__(self, *, auth: str = "ed25519", aead: str = "aes-128-gcm", grace: float = 2.0,
                 limits: Limits | None = None, seed: int = 1) -> None:
        self.rng = seeded_rng(seed)
        self.algorithm = aead_algorithm(aead)
        self.tx_keys = EpochKeys(self.algorithm, SESSION, grace=grace)
        self.rx_keys = EpochKeys(self.algorithm, SESSION, grace=grace)
        self.auth = source_auth(auth, self.rng)
        self.sender_id = b"sender01"
        signer = self.auth.signer(sender_id=self.sender_id, now=0.0)
        self.signer = signer
        self.tx = StreamProtector(self.tx_keys, signer, self.sender_id)
        self.rx = Unprotector(self.rx_keys, limits=limits)
        self.verifier = self.auth.verifier(signer.params, signer.material_for(b"rx"), now=0.0)
        self.secrets: dict[int, bytes] = {}

    def secret(self, epoch: int) -> bytes:
        return self.secrets.setdefault(epoch, self.rng(32))

    def epoch(self, epoch: int, now: float, *, tx: bool = True, rx: bool = True) -> None:
        if tx:
            self.tx_keys.install(epoch, self.secret(epoch), now)
        if rx:
            self.rx_keys.install(epoch, self.secret(epoch), now)

    def know_sender(self, now: float = 0.0) -> list[bytes]:
        return [o.data for o in self.rx.add_sender(self.sender_id, self.verifier, now)]


# ------------------------------------------------------------------- key management for tests


class StubMember(KeyManagementMember):
    def __init__(self, member_id: bytes, key: bytes, epoch: int, secret: bytes) -> None:
        self.member_id, self._key, self.epoch, self.group_secret = member_id, key, epoch, secret

    def apply(self, rekey: bytes) -> None:
        try:
            epoch, entries = cbor2.loads(rekey)
            mine = dict(entries).get(self.member_id)
        except Exception:
            raise MalformedPacket("stub rekey") from None
        if mine is None:
            raise NotForMe("evicted")
        secret = AESGCM(self._key).decrypt(epoch.to_bytes(12, "big"), mine, self.member_id)
        self.epoch, self.group_secret = epoch, secret


class StubKeyManagement(KeyManagement):
    """TEST DOUBLE, not a plugin: used only while no real scheme (``flat``) is registered.

    Each epoch's secret is sealed for every member under that member's own key.  It lets the
    controller and member machines be tested against the KeyManagement interface alone.
    """

    name = "stub-test"

    def __init__(self, *, rng: Callable[[int], bytes], options: Any = None) -> None:
        super().__init__(rng=rng)
        self.epoch = 0
        self.group_secret = rng(32)
        self._keys: dict[bytes, bytes] = {}

    @property
    def members(self) -> int:
        return len(self._keys)

    def _seal(self, member_id: bytes) -> bytes:
        return AESGCM(self._keys[member_id]).encrypt(self.epoch.to_bytes(12, "big"),
                                                     self.group_secret, member_id)

    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        for member_id in leaves:
            self._keys.pop(member_id, None)
        staying = list(self._keys)
        for member_id in joins:
            self._keys[member_id] = self.rng(16)
        return self._next(staying, joins)

    def refresh(self) -> Update:
        return self._next(list(self._keys), ())

    def _next(self, staying: Sequence[bytes], joins: Sequence[bytes]) -> Update:
        self.epoch += 1
        self.group_secret = self.rng(32)
        rekey = cbor2.dumps([self.epoch, [[m, self._seal(m)] for m in staying]])
        welcomes = {m: cbor2.dumps([m, self._keys[m], self.epoch, self.group_secret]) for m in joins}
        return Update(self.epoch, rekey, welcomes)

    def recover(self, member_id: bytes) -> bytes:
        return cbor2.dumps([self.epoch, [[member_id, self._seal(member_id)]]])

    @classmethod
    def member_from_welcome(cls, welcome: bytes) -> KeyManagementMember:
        member_id, key, epoch, secret = cbor2.loads(welcome)
        return StubMember(member_id, key, epoch, secret)


def key_management_class() -> type[KeyManagement]:
    """``flat`` when the key-management plugins are installed, the test double otherwise."""
    try:
        return plugins.get_key_management("flat")
    except ConfigError:
        return StubKeyManagement


def key_management_schemes(claim: str | None = None) -> list[type[KeyManagement]]:
    """Every installed scheme (those claiming ``claim``, e.g. ``forward_secrecy``), or the
    test double when none is installed."""
    registry = plugins.plugin_set().key_management
    schemes = [registry.get(name) for name in registry.names()]
    if claim is not None:
        schemes = [s for s in schemes if getattr(s, claim, False)]
    return schemes or [StubKeyManagement]


class _Lookup:
    def __init__(self, scheme: type[KeyManagement]) -> None:
        self.scheme = scheme

    def get_key_management(self, name: str) -> type[KeyManagement]:
        return self.scheme if name == self.scheme.name else plugins.get_key_management(name)

    def get_source_auth(self, name: str) -> type[SourceAuth]:
        return plugins.get_source_auth(name)


# ------------------------------------------------------------------------------- the group


CONTROLLER_SEED = b"\x0c" * 32


class Group:
    """A controller and its members wired together by hand: control messages go straight
    across (as TLS would carry them), rekeys go to every member unless a test drops them."""

    def __init__(
        self,
        *,
        auth: str = "ed25519",
        auth_options: dict[str, Any] | None = None,
        policy: AccessPolicy | None = None,
        rekey: RekeyPolicy | None = None,
        scheme: type[KeyManagement] | None = None,
        grace: float = 2.0,
        wall_offset: float = 0.0,
        seed: int = 7,
    ) -> None:
        self.rng = seeded_rng(seed)
        self.now = 0.0
        self.scheme = scheme or key_management_class()
        self.lookup = _Lookup(self.scheme)
        self.config = GroupConfig(
            group="g", key_management=self.scheme.name, source_auth=auth,
            source_auth_options=auth_options or {}, access_policy="open",
            rekey=rekey or RekeyPolicy(), epoch_grace=grace,
        )
        self.signing_key = sigkeys.signing_key_from_seed(CONTROLLER_SEED)
        self.controller = Controller(
            self.config, signing_key=self.signing_key, rng=self.rng, now=self.now,
            session=SESSION, rekey_stream=1, bootstrap=[("127.0.0.1", 4000)],
            wall_offset=wall_offset, key_management=self.scheme(rng=self.rng),
            access_policy=policy or plugins.get_access_policy("open")(),
        )
        self.members: dict[bytes, Member] = {}
        self.conn_of: dict[bytes, int] = {}
        self.member_of: dict[int, Member] = {}
        self.closed: set[int] = set()
        self.rekeys: list[bytes] = []
        self.deaf: set[bytes] = set()  # members that miss rekeys on the tree
        self.events: dict[bytes, list[ev.SecurityEvent]] = {}
        self.controller_events: list[ev.SecurityEvent] = []
        self._next_conn = 0

    # -- membership ----------------------------------------------------------------------------

    def join(self, name: str | bytes, *, roles: int = msg.Roles.RECEIVE | msg.Roles.SEND,
             certificate: bytes | None = None, token: bytes | None = None) -> Member:
        member_id = name.encode() if isinstance(name, str) else name
        self._next_conn += 1
        conn = self._next_conn
        member = Member(member_id=member_id, node_id=self.rng(8), rng=self.rng, now=self.now,
                        roles=roles, token=token, controller_key=sigkeys.public_key(self.signing_key),
                        plugins=self.lookup)
        self.members[member_id] = member
        self.events[member_id] = []
        self.conn_of[member_id] = conn
        self.member_of[conn] = member
        self.controller.connection_made(conn, certificate, self.now)
        member.start(self.now)
        self.pump()
        return member

    def disconnect(self, name: str) -> None:
        conn = self.conn_of[name.encode()]
        self.closed.add(conn)
        self.controller.connection_lost(conn, self.now)
        self.pump()

    # -- traffic -------------------------------------------------------------------------------

    def pump(self, *, rounds: int = 50) -> None:
        """Move control messages and rekeys until nothing moves (bounded)."""
        for _ in range(rounds):
            moved = False
            for member_id, member in self.members.items():
                conn = self.conn_of[member_id]
                for data in member.control_to_send():
                    moved = True
                    if conn not in self.closed:
                        self.controller.receive_control(conn, data, self.now)
            for conn, data in self.controller.control_to_send():
                moved = True
                if conn in self.closed:
                    continue
                if data is None:
                    self.closed.add(conn)
                else:
                    self.member_of[conn].receive_control(data, self.now)
            for envelope in self.controller.rekeys_to_send():
                moved = True
                self.rekeys.append(envelope)
                for member_id, member in self.members.items():
                    if member_id not in self.deaf:
                        member.receive_rekey(envelope, self.now)
            while (event := self.controller.next_event()) is not None:
                self.controller_events.append(event)
            for member_id, member in self.members.items():
                while (event := member.next_event()) is not None:
                    moved = True
                    self.events[member_id].append(event)
            if not moved:
                return
        raise AssertionError("group did not settle")

    def advance(self, to: float, *, steps: int = 10_000) -> None:
        """Move the clock to ``to``, firing every timer due on the way."""
        for _ in range(steps):
            timers = [t for t in [self.controller.get_timer()] + [m.get_timer() for m in self.members.values()]
                      if t is not None and t <= to]
            if not timers:
                break
            self.now = max(self.now, min(timers))
            if (t := self.controller.get_timer()) is not None and t <= self.now:
                self.controller.handle_timer(self.now)
            for member in self.members.values():
                if (t := member.get_timer()) is not None and t <= self.now:
                    member.handle_timer(self.now)
            self.pump()
        else:
            raise AssertionError("timers kept firing: advance() did not reach its target")
        self.now = to
        self.pump()

    def add_sender(self, name: str) -> bytes:
        member = self.members[name.encode()]
        sender_id = member.add_sender(stream=len(member.protectors) + 10, now=self.now)
        self.pump()
        return sender_id

    def send(self, name: str, sender_id: bytes, data: bytes, *, encrypt: bool = True,
             to: Sequence[str] | None = None) -> list[bytes]:
        """Protect ``data`` and deliver the frames to every other member (or ``to``)."""
        frames = self.members[name.encode()].protect(sender_id, data, self.now, encrypt=encrypt)
        targets = [m for m in self.members if m != name.encode()] if to is None else [t.encode() for t in to]
        for target in targets:
            for frame in frames:
                self.members[target].receive_frame(frame, self.now)
        self.pump()
        return frames

    def delivered(self, name: str) -> list[bytes]:
        return [e.data for e in self.events[name.encode()] if isinstance(e, ev.Delivered)]

    def of_type(self, name: str, kind: type[ev.SecurityEvent]) -> list[Any]:
        return [e for e in self.events[name.encode()] if isinstance(e, kind)]
