"""A running secured group for the interop scenarios, through the public API only (plus one
attacker's helper, :meth:`SecureGroup.forge`).

One group is: a controller (``rmsec.open_controller`` with real TLS registration on
127.0.0.1; it is also the root of the repair tree and sends the rekeys), one repair head, one
sender, and members that join and leave while the sender's stream stays open.  The data plane
is the memory network, so partitions (:meth:`SecureGroup.isolate`) are exact; the clock is
trio's real clock, because the registrations are real TLS over TCP.

Every member records what it reads (the number in each message's first 8 bytes) next to what
it should read (every message sent while it was a member), so "each member read exactly the
messages sent while it was a member, once, in order" is one comparison per member
(:meth:`SecureGroup.check_exact`).  Waits are bounded (:meth:`SecureGroup.until`) and a
timeout says what was still missing, so a failing combination reports why.

:class:`Trust` makes what every access policy needs: one group CA (``rmsec.credentials``),
member certificates, the CA file for ``x509`` and the members file for ``allowlist``, in a
directory the caller owns.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

import rmsec.api as api
import rmsec.io
import rmsec.plugins
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials
from rmsec.io.memory import MemoryNetwork
from rmsec.secure_api import (
    ControllerChannel,
    SecureHeadChannel,
    SecureReceiverChannel,
    SecureSenderChannel,
    open_controller,
)
from rmsec.security.protection import StreamProtector
from rmsec.testing.group import background
from rmsec.transport.config import TransportConfig

#: Number carried by a forged message (never used by a real one).
FORGED_NUMBER = (1 << 64) - 1
#: Bytes of padding after the 8-byte message number (messages span one packet).
PAYLOAD_PAD = 200
#: Transport timers: the memory network has no delay, so offers are collected within 50 ms
#: (default 0.2 s per join) and hellos, which pace end-of-stream confirmation, come every
#: 0.25 s (default 1 s); a head is still declared lost after 2 s of silence (default 5 s),
#: longer than the recovery scenario keeps a member cut off.
TIMERS: dict[str, Any] = {"solicit_wait": 0.05, "hello_interval": 0.25, "head_loss_hellos": 8}


class ScenarioFailed(Exception):
    """A scenario's check failed; the message says which member saw what."""


@dataclasses.dataclass(frozen=True, slots=True)
class Combination:
    """One cell of the matrix: a key-management scheme, a source-auth method, an access policy."""

    key_management: str
    source_auth: str
    access_policy: str

    @property
    def label(self) -> str:
        return f"{self.key_management}/{self.source_auth}/{self.access_policy}"


class Trust:
    """A group CA and everything the access policies need, written under ``directory``.

    Member certificates are issued on first use and cached: every policy sees members that
    present a certificate (the controller's TLS asks for one), so the policies differ only in
    what they check: ``x509`` the certificate against the CA file, ``allowlist`` the member id
    against the members file, ``open`` nothing.
    """

    #: Member ids written to the allow list: the fixed roles and ``m0`` .. ``m{pool - 1}``.
    ROLES = ("head0", "sender", "mallory")

    def __init__(self, directory: pathlib.Path, *, group: str = "interop", pool: int = 256) -> None:
        self.directory = directory
        self.group = group
        self.controller = ControllerCredentials.create(group)
        self._members: dict[str, MemberCredentials] = {}
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.controller.ca.certificate)
        self.names = [*self.ROLES, *(member_name(i) for i in range(pool))]
        self.members_file = directory / "members.txt"
        self.members_file.write_text(
            "# interop harness: every member id a scenario may use\n" + "\n".join(self.names) + "\n"
        )

    def member(self, name: str) -> MemberCredentials:
        creds = self._members.get(name)
        if creds is None:
            ca = self.controller.ca
            creds = MemberCredentials(name.encode(), ca.certificate, ca.issue(name))
            self._members[name] = creds
        return creds

    def access_options(self, policy: str) -> dict[str, Any]:
        """Options for the built-in policies; any other policy gets none (and says if it
        needs some, which the matrix then reports as that combination's failure)."""
        if policy == "x509":
            return {"ca": str(self.ca_file)}
        if policy == "allowlist":
            return {"file": str(self.members_file)}
        return {}


def member_name(index: int) -> str:
    return f"m{index}"


def payload(number: int) -> bytes:
    return number.to_bytes(8, "big") + b"x" * PAYLOAD_PAD


def transport_config(members: int) -> TransportConfig:
    """The transport of every group: a tree small enough to be real (the controller, which is
    the root, takes the head and a few members, the head the rest, so some data and rekeys
    are repaired through a head), and timers for a network without delay (:data:`TIMERS`)."""
    return TransportConfig(max_children=max(2, math.ceil((members + 4) / 2)), **TIMERS)


@dataclasses.dataclass(slots=True)
class MemberView:
    """One receiving member: what it read and what it should have read (message numbers)."""

    name: str
    rx: SecureReceiverChannel
    scope: trio.CancelScope
    read: list[int] = dataclasses.field(default_factory=list)
    expected: list[int] = dataclasses.field(default_factory=list)
    error: str | None = None
    left: bool = False

    def describe(self) -> str:
        """What it read against what it should have, its epoch, and the security layer's
        counters that explain a loss (frames it dropped, and why)."""
        stats = self.rx.stats()
        drops = ", ".join(f"{k[len('sec_data_'):]} {stats[k]}" for k in DROP_COUNTERS if stats.get(k))
        return (f"{self.name} read {len(self.read)}/{len(self.expected)} (epoch {self.rx.epoch}"
                f"{'; dropped: ' + drops if drops else ''}"
                f"{'; ' + self.error if self.error else ''})")


#: A member's counters (``rx.stats()``) of frames the security layer dropped.
DROP_COUNTERS = (
    "sec_data_auth_failed", "sec_data_replayed", "sec_data_aead_failed", "sec_data_stale_epoch",
    "sec_data_malformed", "sec_data_future_dropped", "sec_data_future_expired",
    "sec_data_unknown_dropped", "sec_data_unknown_expired",
)


class SecureGroup:
    """The running group (open with :func:`open_group`)."""

    def __init__(
        self, combination: Combination, trust: Trust, network: MemoryNetwork,
        controller: ControllerChannel, enter: Callable[..., Awaitable[Any]], nursery: trio.Nursery,
        auth_options: Mapping[str, Any], *, patience: float = 10.0, repair_patience: float = 3.0,
    ) -> None:
        self.combination = combination
        #: Seconds each wait for the group may take (delivery, epoch, membership count).
        self.patience = patience
        #: Seconds a wait for repairs or late verification takes before the exact check.
        self.repair_patience = repair_patience
        self.trust = trust
        self.network = network
        self.controller = controller
        self.announcement = controller.announcement
        self._enter = enter
        self._nursery = nursery
        self.auth_options = dict(auth_options)
        self.head: SecureHeadChannel | None = None
        self.sender: SecureSenderChannel | None = None
        self.members: dict[str, MemberView] = {}  # every receiving member ever, by name
        #: Registered nodes besides the head, the sender and the receiving members (a forger).
        self.others: list[SecureSenderChannel] = []
        self.sent = 0
        self.packets = 0
        self.bytes = 0
        self._next_member = 0
        self._changed = trio.Event()
        network.taps.append(self._count)

    def _count(self, src: Any, dst: Any, data: bytes) -> None:
        self.packets += 1
        self.bytes += len(data)

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- nodes -----------------------------------------------------------------------------------

    async def open_head(self, name: str = "head0") -> SecureHeadChannel:
        head: SecureHeadChannel = await self._enter(
            api.open_head, self.announcement, network=self.network, credentials=self.trust.member(name)
        )
        self.head = head
        return head

    async def open_sender(self, name: str = "sender") -> SecureSenderChannel:
        tx: SecureSenderChannel = await self._enter(
            api.open_sender, self.announcement, network=self.network,
            credentials=self.trust.member(name),
        )
        if name == "sender":
            self.sender = tx
        else:
            self.others.append(tx)
        return tx

    async def _member(self, name: str, *, task_status: Any) -> None:
        with trio.CancelScope() as scope:
            async with api.open_receiver(
                self.announcement, network=self.network, credentials=self.trust.member(name)
            ) as rx:
                assert isinstance(rx, SecureReceiverChannel)
                view = MemberView(name, rx, scope)
                self.members[name] = view
                task_status.started(view)
                try:
                    async for message in rx:
                        view.read.append(int.from_bytes(message.data[:8], "big"))
                        self._signal()
                except Exception as exc:  # recorded: the scenario's checks report it
                    view.error = f"{type(exc).__name__}: {exc}"
                    self._signal()

    async def join(self, count: int) -> list[MemberView]:
        """``count`` new members join concurrently (as real ones would)."""
        names = [member_name(self._next_member + i) for i in range(count)]
        self._next_member += count
        views: list[MemberView] = []

        async def one(name: str) -> None:
            views.append(await self._nursery.start(self._member, name))

        async with trio.open_nursery() as joining:
            for name in names:
                joining.start_soon(one, name)
        return sorted(views, key=lambda v: int(v.name[1:]))

    def leave(self, views: Iterable[MemberView]) -> None:
        for view in views:
            view.left = True
            view.scope.cancel()

    @property
    def live(self) -> list[MemberView]:
        return [v for v in self.members.values() if not v.left]

    # -- traffic ---------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait until the controller counts every live node and the sender protects under the
        controller's epoch (after a membership change, so new members can read what comes)."""
        nodes = (len(self.live) + len(self.others) + (self.head is not None)
                 + (self.sender is not None))
        ctl = self.controller
        await self.until(lambda: ctl.stats().get("members", -1) == nodes,
                         lambda: f"controller counts {ctl.stats().get('members')} members, "
                                 f"expected {nodes}")
        assert self.sender is not None
        sender = self.sender
        await self.until(lambda: (sender.epoch or 0) >= ctl.epoch,
                         lambda: f"sender at epoch {sender.epoch}, controller at {ctl.epoch}")

    async def send(self, count: int) -> list[int]:
        """Send ``count`` messages; every live member is expected to read them."""
        assert self.sender is not None
        numbers = []
        for _ in range(count):
            number = self.sent
            self.sent += 1
            await self.sender.send(payload(number), encrypt=True)
            for view in self.live:
                view.expected.append(number)
            numbers.append(number)
        return numbers

    async def delivered(self, views: Iterable[MemberView] | None = None, *, repair: bool = False) -> None:
        """Wait until each of ``views`` (default: the live members) read what it should.

        With ``repair``, wait at most ``repair_patience`` seconds and return either way (for
        what the transport repairs or a late verification releases): :meth:`check_exact`
        then says precisely what is missing.  Otherwise wait up to ``patience`` seconds and
        fail with what was still undelivered.
        """
        chosen = list(self.live if views is None else views)

        def done() -> bool:
            return all(len(v.read) >= len(v.expected) or v.error for v in chosen)

        if repair:
            with trio.move_on_after(self.repair_patience):
                while not done():
                    await self._changed.wait()
            return

        def missing() -> str:
            late = [(v.name, v.describe()) for v in chosen if len(v.read) < len(v.expected)]
            return (f"undelivered after the wait: {' | '.join(_merge(late))} "
                    f"(controller epoch {self.controller.epoch})")

        await self.until(done, missing)
        errors = [(v.name, v.describe()) for v in chosen if v.error]
        if errors:
            raise ScenarioFailed(" | ".join(_merge(errors)))

    async def until(self, predicate: Callable[[], bool], what: Callable[[], str]) -> None:
        """Return once ``predicate()`` holds; :class:`ScenarioFailed` with ``what()`` after
        ``patience`` seconds.  Re-checked whenever a member reads and every 10 ms (counters
        of the controller and the nodes change without telling us)."""
        with trio.move_on_after(self.patience):
            while not predicate():
                with trio.move_on_after(0.01):
                    await self._changed.wait()
            return
        raise ScenarioFailed(f"timed out after {self.patience:g} s: {what()}")

    def check_exact(self) -> None:
        """Every member read each message sent while it was a member, once, in order, and no
        other; :class:`ScenarioFailed` names the first member that did not."""
        problems: list[tuple[str, str]] = []  # (member, what it saw)
        for view in self.members.values():
            if view.error:
                problems.append((view.name, view.describe()))
            elif view.read != view.expected:
                extra = sorted(set(view.read) - set(view.expected) - {FORGED_NUMBER})
                lacking = sorted(set(view.expected) - set(view.read))
                problems.append((view.name,
                    view.describe()
                    + (" DELIVERED THE FORGED MESSAGE" if FORGED_NUMBER in view.read else "")
                    + (f"; missing messages {lacking}" if lacking else "")
                    + (f"; unexpected messages {extra}" if extra else "")
                    + ("; out of order or duplicated" if sorted(view.read) != view.read
                       or len(set(view.read)) != len(view.read) else "")
                ))
        if problems:
            raise ScenarioFailed(" | ".join(_merge(problems)))

    # -- partitions and attacks ------------------------------------------------------------------

    def isolate(self, view: MemberView) -> None:
        """Cut the member off the data plane (its TLS control connection stays up)."""
        self.network.isolate(view.rx.address)

    def rejoin(self, view: MemberView) -> None:
        self.network.rejoin(view.rx.address)

    def other(self, name: str) -> SecureSenderChannel:
        """The other sender called ``name`` (see :func:`open_group`)."""
        return next(tx for tx in self.others if tx.member.member_id == name.encode())

    def forge(self, forger: SecureSenderChannel, victim: SecureSenderChannel) -> StreamProtector:
        """An insider's forgery: ``forger`` (a member allowed to send) puts on its own stream
        a message claiming ``victim``'s sender id and its next sequence number, with a valid
        AEAD tag (members hold the group key) and a trailer from the same method's signer
        under the forger's own keys.  Returns the forged protector: its ``pending`` frames
        (signature packets, key disclosures) are the forger's to send too."""
        now = trio.current_time()
        keys = forger.member.keys
        assert keys is not None
        auth = rmsec.plugins.get_source_auth(self.combination.source_auth)
        signer = auth(rng=os.urandom, options=self.auth_options).signer(
            sender_id=victim.sender_id, now=now
        )
        next_seq = victim.member.protectors[victim.sender_id].next_seq
        forged = StreamProtector(keys, signer, victim.sender_id, start_seq=next_seq)
        frames = [forged.protect(payload(FORGED_NUMBER), now, encrypt=True), *forged.pending(now)]
        forger._queue(frames)
        return forged

    def forge_pending(self, forger: SecureSenderChannel, forged: StreamProtector) -> None:
        """Send the forged signer's extra authentication packets now due."""
        frames = forged.pending(trio.current_time())
        if frames:
            forger._queue(frames)

    def stats(self) -> dict[str, int]:
        ctl = self.controller.stats()
        return {"rekey_bytes": ctl.get("rekey_bytes", 0), "rekeys": ctl.get("rekeys", 0),
                "packets": self.packets, "bytes": self.bytes}


def _merge(problems: list[tuple[str, str]]) -> list[str]:
    """One line per distinct finding: members who saw the same thing are named together."""
    seen: dict[str, list[str]] = {}
    for name, text in problems:
        seen.setdefault(text.replace(name, "{}", 1), []).append(name)
    return [text.replace("{}", ", ".join(sorted(names)), 1) for text, names in seen.items()]


@asynccontextmanager
async def open_group(
    combination: Combination, trust: Trust, *, members: int,
    key_management_options: Mapping[str, Any], source_auth_options: Mapping[str, Any],
    seed: int | None = None, others: Sequence[str] = (), patience: float = 10.0,
    repair_patience: float = 3.0,
) -> AsyncIterator[SecureGroup]:
    """Controller, head, the ``others`` (more senders, such as a forger) and the sender up, no
    receiving member yet; leaving the block closes every member first, then the sender (which
    waits for its stream's confirmation), the others, the head and the controller.

    The others open before the sender so that they close after it: a secondary sender leaves
    without telling its parent (``open_secure_sender`` has no last words), which would hold
    the sender's confirmation for the parent's child timeout (docs/interop.md, findings)."""
    config = GroupConfig(
        group=trust.group,
        key_management=combination.key_management,
        key_management_options=dict(key_management_options),
        source_auth=combination.source_auth,
        source_auth_options=dict(source_auth_options),
        access_policy=combination.access_policy,
        access_policy_options=trust.access_options(combination.access_policy),
        transport=transport_config(members),
    )
    network = rmsec.io.memory(seed=seed)
    async with (
        open_controller(config, tls=trust.controller, network=network) as ctl,
        trio.open_nursery() as nursery,
        background(nursery) as enter,
    ):
        group = SecureGroup(combination, trust, network, ctl, enter, nursery, source_auth_options,
                            patience=patience, repair_patience=repair_patience)
        await group.open_head()
        for name in others:
            await group.open_sender(name)
        await group.open_sender()
        yield group
        group.leave(group.live)
