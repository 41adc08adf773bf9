"""Every hook of rmsec/hookspecs.py, with a real pluggy plugin object in a real secured group.

Each test registers a plugin (``rmsec.plugins.using_plugins``, which runs the same start-up
checks as the entry-point path) and runs a controller, a sender and receivers on the memory
network under ``MockClock``: the data plane runs in virtual time, registration is real TLS on
127.0.0.1 (loopback answers before the clock would jump).  Registration hooks add a scheme the
group then runs on; observation hooks are checked call by call against what the controller and
the members report themselves.  A plugin whose hooks raise must not disturb the group.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest
import trio
import trio.testing

import rmsec.api as api
import rmsec.io
import rmsec.plugins
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials
from rmsec.errors import AuthenticationFailed, ChannelClosed
from rmsec.hookspecs import OBSERVATION_HOOKS, REGISTRATION_HOOKS, hookimpl
from rmsec.interfaces import (
    AccessPolicy,
    Credentials,
    Decision,
    KeyManagementMember,
    Signer,
    Update,
    Verifier,
)
from rmsec.io.control import RegistrationRefused
from rmsec.io.memory import MemoryNetwork, MemorySocket
from rmsec.registry import AccessPolicyRegistry, KeyManagementRegistry, SourceAuthRegistry
from rmsec.secure_api import ControllerChannel, SecureSenderChannel, open_controller
from rmsec.security import events as sev
from rmsec.security.protection import HEADER_LEN, Header, Kind
from rmsec.transport.config import TransportConfig
from rmsec.wire import packets

pytestmark = pytest.mark.udp  # registration: TLS over TCP on 127.0.0.1

GROUP = "hooks-test"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time for the whole group (pytest-trio runs the test under this clock).  It jumps
    only after 2 ms of real idleness, so a TLS round trip on loopback, which the kernel answers
    in microseconds even on a busy machine, never sees time leap towards its timeouts."""
    return trio.testing.MockClock(autojump_threshold=0.002)


@pytest.fixture(scope="module")
def creds() -> ControllerCredentials:
    return ControllerCredentials.create(GROUP)


def member(creds: ControllerCredentials, name: str) -> MemberCredentials:
    return MemberCredentials(name.encode(), creds.ca.certificate, creds.ca.issue(name))


def config(tmp_path: pathlib.Path, creds: ControllerCredentials, **changes: Any) -> GroupConfig:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(creds.ca.certificate)
    values: dict[str, Any] = {"group": GROUP, "access_policy": "x509",
                              "access_policy_options": {"ca": str(ca_file)}}
    values.update(changes)
    return GroupConfig(**values)


# ------------------------------------------------------------------------------ the plugins


class Recorder:
    """Implements every observation hook and remembers each call with its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.changed = trio.Event()

    def _add(self, hook: str, **kwargs: Any) -> None:
        self.calls.append((hook, kwargs))
        self.changed.set()
        self.changed = trio.Event()

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    async def wait_for(self, hook: str, count: int = 1) -> list[dict[str, Any]]:
        while len(self.of(hook)) < count:
            await self.changed.wait()
        return self.of(hook)

    @hookimpl
    def rmsec_member_joined(self, group: str, member_id: bytes, epoch: int) -> None:
        self._add("rmsec_member_joined", group=group, member_id=member_id, epoch=epoch)

    @hookimpl
    def rmsec_member_left(self, group: str, member_id: bytes, reason: str) -> None:
        self._add("rmsec_member_left", group=group, member_id=member_id, reason=reason)

    @hookimpl
    def rmsec_member_expelled(self, group: str, member_id: bytes, reason: str) -> None:
        self._add("rmsec_member_expelled", group=group, member_id=member_id, reason=reason)

    @hookimpl
    def rmsec_rekey_done(self, group: str, epoch: int, rekey_bytes: int, members: int) -> None:
        self._add("rmsec_rekey_done", group=group, epoch=epoch, rekey_bytes=rekey_bytes,
                  members=members)

    @hookimpl
    def rmsec_auth_failure(self, group: str, where: str, detail: str, what: str, count: int) -> None:
        self._add("rmsec_auth_failure", group=group, where=where, detail=detail, what=what,
                  count=count)

    @hookimpl
    def rmsec_head_changed(
        self, group: str, node_id: bytes, old_head: bytes | None, new_head: bytes
    ) -> None:
        self._add("rmsec_head_changed", group=group, node_id=node_id, old_head=old_head,
                  new_head=new_head)


class Broken:
    """Every observation hook raises (and the one taking fewer arguments still gets called)."""

    def __init__(self) -> None:
        self.raised = 0

    def _fail(self) -> None:
        self.raised += 1
        raise RuntimeError("this plugin is broken")

    @hookimpl
    def rmsec_member_joined(self, member_id: bytes) -> None:
        self._fail()

    @hookimpl
    def rmsec_member_left(self, member_id: bytes) -> None:
        self._fail()

    @hookimpl
    def rmsec_member_expelled(self, member_id: bytes) -> None:
        self._fail()

    @hookimpl
    def rmsec_rekey_done(self, epoch: int) -> None:
        self._fail()

    @hookimpl
    def rmsec_auth_failure(self, count: int) -> None:
        self._fail()

    @hookimpl
    def rmsec_head_changed(self, new_head: bytes) -> None:
        self._fail()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    plugin = Recorder()
    with rmsec.plugins.using_plugins(plugin):
        yield plugin


# --------------------------------------------------------------------------- group helpers


async def send_and_read(tx: SecureSenderChannel, readers: list[Any], messages: list[bytes]) -> None:
    for data in messages:
        await tx.send(data)
    for rx in readers:
        got = [(await rx.receive()).data for _ in messages]
        assert got == messages


def rekeys_of(ctl: ControllerChannel) -> list[dict[str, Any]]:
    return [
        {"group": GROUP, "epoch": e.epoch, "rekey_bytes": e.rekey_bytes, "members": e.members}
        for e in ctl.security_events if isinstance(e, sev.RekeyDone)
    ]


async def auth_failures_seen(rx: Any, count: int) -> None:
    """Until the receiver's hook relay has seen ``count`` authentication failures."""
    security = rx.security
    while security.hooks.counters["auth_failures_seen"] < count:
        await security.changed.wait()


class TamperingNetwork(MemoryNetwork):
    """The memory network with an attacker on the path to one node: while ``victim`` is set,
    every data packet of stream ``stream`` sent to it has one byte of its frame's body
    flipped (a forgery the source-authentication trailer must catch)."""

    victim: tuple[str, int] | None = None
    stream: int | None = None
    tampered = 0

    def _transmit(self, src: MemorySocket, data: bytes, dst: tuple[str, int]) -> None:
        if dst == self.victim:
            packet = packets.decode_untrusted(data)
            if (
                isinstance(packet, packets.Data) and packet.stream == self.stream
                and len(packet.payload) > HEADER_LEN
            ):
                body = bytearray(packet.payload)
                body[HEADER_LEN] ^= 0x01
                data = dataclasses.replace(packet, payload=bytes(body)).encode()
                self.tampered += 1
        super()._transmit(src, data, dst)


# -------------------------------------------------------------------- registration hooks


class CountingFlat:
    """Builds a key-management class under a new name that counts its epochs."""

    @staticmethod
    def make() -> type[Any]:
        from rmsec_plugins.keymgmt_flat.scheme import FlatScheme

        class Counting(FlatScheme):
            name = "test-counting-flat"
            updates: list[tuple[int, int]] = []  # (joins, leaves) per update
            members_built = 0

            def update(self, *, joins: Any = (), leaves: Any = ()) -> Update:
                Counting.updates.append((len(joins), len(leaves)))
                return super().update(joins=joins, leaves=leaves)

            @classmethod
            def member_from_welcome(cls, welcome: bytes) -> KeyManagementMember:
                cls.members_built += 1
                return super().member_from_welcome(welcome)

        return Counting


async def test_rmsec_register_key_management(
    creds: ControllerCredentials, tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    scheme = CountingFlat.make()

    class Plugin:
        @hookimpl
        def rmsec_register_key_management(self, registry: KeyManagementRegistry) -> None:
            registry.add(scheme)

    network = rmsec.io.memory(seed=11)
    with rmsec.plugins.using_plugins(Plugin()) as plugin_set, trio.fail_after(60):
        assert rmsec.plugins.get_key_management("test-counting-flat") is scheme
        assert plugin_set.key_management.origin("test-counting-flat") != "?"
        cfg = config(tmp_path, creds, key_management="test-counting-flat")
        async with open_controller(cfg, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"one", b"two"])
                assert ctl.controller.scheme.name == "test-counting-flat"
    assert scheme.updates[:2] == [(1, 0), (1, 0)]  # r1 joins, then s joins
    assert scheme.members_built == 2  # r1 and s each built their member state from a welcome


async def test_rmsec_register_source_auth(
    creds: ControllerCredentials, tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    from rmsec_plugins.auth_groupmac import GroupMacAuth

    made: dict[str, int] = {"signers": 0, "verifiers": 0}

    class Counting(GroupMacAuth):
        name = "test-counting-groupmac"

        def signer(self, *, sender_id: bytes, now: float) -> Signer:
            made["signers"] += 1
            return super().signer(sender_id=sender_id, now=now)

        def verifier(self, params: bytes, material: bytes, *, now: float) -> Verifier:
            made["verifiers"] += 1
            return super().verifier(params, material, now=now)

    class Plugin:
        @hookimpl
        def rmsec_register_source_auth(self, registry: SourceAuthRegistry) -> None:
            registry.add(Counting)

    network = rmsec.io.memory(seed=12)
    with rmsec.plugins.using_plugins(Plugin()), trio.fail_after(60):
        assert rmsec.plugins.get_source_auth("test-counting-groupmac") is Counting
        cfg = config(tmp_path, creds, source_auth="test-counting-groupmac")
        async with open_controller(cfg, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"signed by", b"the plugin"])
    assert made["signers"] >= 1
    assert made["verifiers"] >= 1


async def test_rmsec_register_access_policies(
    creds: ControllerCredentials, tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    decided: list[tuple[bytes, str]] = []

    class OnlyOk(AccessPolicy):
        """Admits member ids starting with ``ok-`` (TLS has already checked the certificate)."""

        name = "test-only-ok"

        def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
            super().__init__(options=options)

        def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
            decided.append((credentials.member_id, group))
            if credentials.member_id.startswith(b"ok-") and credentials.certificate:
                return Decision(True, "ok")
            return Decision(False, "only ok-* members here")

    class Plugin:
        @hookimpl
        def rmsec_register_access_policies(self, registry: AccessPolicyRegistry) -> None:
            registry.add(OnlyOk)

    network = rmsec.io.memory(seed=13)
    with rmsec.plugins.using_plugins(Plugin()), trio.fail_after(60):
        cfg = GroupConfig(group=GROUP, access_policy="test-only-ok")
        async with open_controller(cfg, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            with pytest.raises(RegistrationRefused) as refused:
                async with api.open_receiver(ann, network=network,
                                             credentials=member(creds, "mallory")):
                    pass
            assert refused.value.reason == "only ok-* members here"
            async with api.open_receiver(ann, network=network, credentials=member(creds, "ok-r")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "ok-s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"admitted"])
    assert decided[:3] == [(b"mallory", GROUP), (b"ok-r", GROUP), (b"ok-s", GROUP)]


# --------------------------------------------------------------------- observation hooks


async def test_rmsec_member_joined_and_rmsec_rekey_done(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = rmsec.io.memory(seed=21)
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"hello"])
                assert recorder.of("rmsec_member_joined") == [
                    {"group": GROUP, "member_id": b"r1", "epoch": 1},
                    {"group": GROUP, "member_id": b"s", "epoch": 2},
                ]
                rekeys = recorder.of("rmsec_rekey_done")
                assert rekeys == rekeys_of(ctl)
                assert [(r["epoch"], r["members"]) for r in rekeys] == [(1, 1), (2, 2)]
                assert rekeys[0]["rekey_bytes"] == 0  # nobody held a key before r1
                assert rekeys[1]["rekey_bytes"] > 0  # r1 needed the rekey for s's join
                assert sum(r["rekey_bytes"] for r in rekeys) == ctl.stats()["rekey_bytes"]
            # The controller's relay made every call but the members' head changes.
            stats = ctl.stats()
            assert stats["hook_calls"] == sum(
                1 for name, _ in recorder.calls if name != "rmsec_head_changed")
            assert stats["hook_errors"] == 0


async def test_rmsec_member_left(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = rmsec.io.memory(seed=22)
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")):
                async with api.open_receiver(ann, network=network, credentials=member(creds, "r2")):
                    pass
                await ctl.wait_until(lambda: b"r2" not in ctl.members())
                left = [e for e in ctl.security_events if isinstance(e, sev.MemberLeft)]
                assert recorder.of("rmsec_member_left") == [
                    {"group": GROUP, "member_id": b"r2", "reason": left[0].reason}
                ]
                assert left[0].reason == "left"  # it said LEAVE: a graceful leave
                # The leave moved r1 to a new epoch without r2.
                last = recorder.of("rmsec_rekey_done")[-1]
                assert last["members"] == 1 and last["epoch"] == ctl.epoch
            assert recorder.of("rmsec_member_expelled") == []


async def test_rmsec_member_left_when_the_connection_drops(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = rmsec.io.memory(seed=28)
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")):
                async with api.open_receiver(
                    ann, network=network, credentials=member(creds, "r2")
                ) as rx2:
                    link = rx2.security.link
                    assert link is not None
                    await link.stream.aclose()  # TLS goes away without a LEAVE
                    await ctl.wait_until(lambda: b"r2" not in ctl.members())
                assert recorder.of("rmsec_member_left") == [
                    {"group": GROUP, "member_id": b"r2", "reason": "connection lost"}
                ]


async def test_rmsec_member_expelled(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = rmsec.io.memory(seed=23)
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")), \
                    api.open_receiver(ann, network=network, credentials=member(creds, "r2")) as rx2:
                epoch = ctl.epoch
                ctl.expel(b"r2", "caught sharing its key")
                with pytest.raises(ChannelClosed):
                    await rx2.receive()
                expelled = recorder.of("rmsec_member_expelled")
                assert expelled == [
                    {"group": GROUP, "member_id": b"r2", "reason": "caught sharing its key"}
                ]
                assert recorder.of("rmsec_member_left") == []
                # ... and the rekey that shuts r2 out follows the expulsion.
                names = [name for name, _ in recorder.calls if name != "rmsec_head_changed"]
                assert names[-2:] == ["rmsec_member_expelled", "rmsec_rekey_done"]
                assert recorder.of("rmsec_rekey_done")[-1]["epoch"] == epoch + 1 == ctl.epoch


async def test_rmsec_auth_failure_is_reported_and_aggregated(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = TamperingNetwork(seed=24)
    burst = 5
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"clean"])
                network.victim, network.stream = rx.address, sender.stream
                for n in range(burst):  # one burst: reported once, then aggregated
                    await sender.send(b"forged %d" % n)
                await auth_failures_seen(rx, burst)
                reports = recorder.of("rmsec_auth_failure")
                assert reports[0] == {"group": GROUP, "where": "receiver r1", "what": "data",
                                      "detail": "source authentication failed", "count": 1}
                assert len(reports) == 1  # the rest of the burst waits for the interval
                await trio.sleep(2 * rmsec.plugins.AUTH_FAILURE_INTERVAL)
                await sender.send(b"forged again")
                await auth_failures_seen(rx, burst + 1)
                network.victim = None
                await send_and_read(sender, [rx], [b"clean again"])
            reports = recorder.of("rmsec_auth_failure")
            assert sum(r["count"] for r in reports) == burst + 1 == network.tampered
            assert 2 <= len(reports) <= 3
            assert {r["where"] for r in reports} == {"receiver r1"}


async def test_rmsec_auth_failure_for_a_frame_that_does_not_open_under_the_group_key(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = rmsec.io.memory(seed=29)
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"clean"])
                machine = rx.security.member
                assert machine.keys is not None and machine.epoch is not None
                # An outsider's AUTH frame in alice's name: no trailer, only the AEAD guards it.
                header = Header(Kind.AUTH, 0, machine.keys.algorithm.code, machine.epoch,
                                sender.sender_id, 1000, 40)
                frame = header.encode() + bytes(40)
                rx.security.command(lambda now: machine.receive_frame(frame, now))
                await auth_failures_seen(rx, 1)
                (report,) = recorder.of("rmsec_auth_failure")
                assert report["what"] == "aead" and report["count"] == 1
                assert report["where"] == "receiver r1" and "group key" in report["detail"]
                assert rx.stats()["sec_data_aead_failed"] == 1


async def test_rmsec_auth_failure_for_a_forged_announcement(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    network = rmsec.io.memory(seed=25)
    with trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            forged = ctl.announcement[:-1] + bytes([ctl.announcement[-1] ^ 1])  # the signature
            with pytest.raises(AuthenticationFailed):
                async with api.open_receiver(forged, network=network,
                                             credentials=member(creds, "r1")):
                    pass
    (report,) = recorder.of("rmsec_auth_failure")
    assert report["group"] == "" and report["where"] == "receiver r1"
    assert report["what"] == "announcement" and report["count"] == 1


async def test_rmsec_head_changed_on_bind_and_reaffiliation(
    recorder: Recorder, creds: ControllerCredentials, tmp_path: pathlib.Path,
    clock: trio.testing.MockClock,
) -> None:
    # The root takes two children: the head and the sender; the receiver must go below the
    # head, and moves up to the root when the head leaves.
    network = rmsec.io.memory(seed=26)
    cfg = config(tmp_path, creds, transport=TransportConfig(max_children=2))
    with trio.fail_after(120):
        async with open_controller(cfg, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            root = ctl.node_id
            async with api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                head_scope = trio.CancelScope()
                async with trio.open_nursery() as nursery:
                    head_ready = trio.Event()
                    heads: list[Any] = []

                    async def run_head() -> None:
                        with head_scope:
                            async with api.open_head(ann, network=network,
                                                     credentials=member(creds, "h1")) as head:
                                heads.append(head)
                                head_ready.set()
                                await trio.sleep_forever()

                    nursery.start_soon(run_head)
                    await head_ready.wait()
                    head = heads[0]
                    async with api.open_receiver(ann, network=network,
                                                 credentials=member(creds, "r1")) as rx:
                        mine = [c for c in recorder.of("rmsec_head_changed")
                                if c["node_id"] == rx.node_id]
                        assert mine == [{"group": GROUP, "node_id": rx.node_id, "old_head": None,
                                         "new_head": head.node_id}]
                        head_scope.cancel()  # the head leaves the tree
                        while len([c for c in recorder.of("rmsec_head_changed")
                                   if c["node_id"] == rx.node_id]) < 2:
                            await recorder.changed.wait()
                        moved = [c for c in recorder.of("rmsec_head_changed")
                                 if c["node_id"] == rx.node_id][1]
                        assert moved == {"group": GROUP, "node_id": rx.node_id,
                                         "old_head": head.node_id, "new_head": root}
                        sender = cast(SecureSenderChannel, tx)
                        await sender.wait_epoch(ctl.epoch)
                        await send_and_read(sender, [rx], [b"still here"])
    firsts = {c["node_id"]: c for c in recorder.of("rmsec_head_changed") if c["old_head"] is None}
    assert firsts[tx.node_id]["new_head"] == root
    assert firsts[head.node_id]["new_head"] == root


# ------------------------------------------------------------------- failures are contained


async def test_a_failing_hook_is_logged_counted_and_contained(
    creds: ControllerCredentials, tmp_path: pathlib.Path, clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, recorder = Broken(), Recorder()
    network = TamperingNetwork(seed=27)
    caplog.set_level(logging.WARNING, logger="rmsec.plugins")
    with rmsec.plugins.using_plugins(broken, recorder), trio.fail_after(60):
        async with open_controller(config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network, credentials=member(creds, "r1")) as rx, \
                    api.open_sender(ann, network=network, credentials=member(creds, "s")) as tx:
                sender = cast(SecureSenderChannel, tx)
                await sender.wait_epoch(ctl.epoch)
                await send_and_read(sender, [rx], [b"before"])
                network.victim, network.stream = rx.address, sender.stream
                await sender.send(b"forged")
                await auth_failures_seen(rx, 1)
                network.victim = None
                await send_and_read(sender, [rx], [b"after"])  # the group goes on
                ctl.expel(b"s", "end of test")
                await ctl.wait_until(lambda: b"s" not in ctl.members())
            assert ctl.stats()["hook_errors"] >= 4  # joined x2, rekey x2, expelled, left, ...
            assert rx.stats()["hook_errors"] >= 2  # its head change and the auth failure
    # Every hook raised at least once, and the well-behaved plugin saw every event anyway.
    seen = {name for name, _ in recorder.calls}
    assert seen == set(OBSERVATION_HOOKS)
    assert broken.raised == sum(1 for _ in recorder.calls)
    assert any("raised in rmsec_" in r.getMessage() and r.exc_info for r in caplog.records)


def test_every_hook_has_a_test_here() -> None:
    """datasette's rule: a hook without a test named after it is a hook nobody checks."""
    names = re.findall(r"^(?:async )?def (test_\w+)", pathlib.Path(__file__).read_text(), re.M)
    for hook in REGISTRATION_HOOKS + OBSERVATION_HOOKS:
        assert any(hook in name for name in names), f"no test for {hook}"
