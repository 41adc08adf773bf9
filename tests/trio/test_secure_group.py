"""A secured group through the public API: controller, head, sender and receivers that join and
leave while data flows; every member reads exactly what was sent while it was a member.

The data plane is the memory network; registration is real TLS on 127.0.0.1.  The churn test
runs under a ``MockClock`` whose autojump waits a millisecond of real idleness before jumping
(:data:`AUTOJUMP`): loopback TCP is delivered within the sending system call, so TLS
exchanges are never idle that long, while every transport timer (hellos, solicitation waits,
ack windows, pacing) costs no real time."""

from __future__ import annotations

import pathlib
from typing import Any, cast

import pytest
import trio
import trio.testing

import rmsec.api as api
import rmsec.io
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials
from rmsec.errors import ConfigError
from rmsec.io.base import Network
from rmsec.io.control import RegistrationRefused
from rmsec.secure_api import (
    ControllerChannel,
    SecureReceiverChannel,
    SecureSenderChannel,
    open_controller,
)
from rmsec.testing.group import background
from rmsec.wire import packets

pytestmark = pytest.mark.udp  # TLS registration over TCP on 127.0.0.1


@pytest.fixture(scope="module")
def creds() -> ControllerCredentials:
    return ControllerCredentials.create("secure-test")


def member_creds(creds: ControllerCredentials, name: str, *, as_name: str | None = None) -> MemberCredentials:
    return MemberCredentials(
        (as_name or name).encode(), creds.ca.certificate, creds.ca.issue(name)
    )


def group_config(tmp_path: pathlib.Path, creds: ControllerCredentials) -> GroupConfig:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(creds.ca.certificate)
    return GroupConfig(group="secure-test", access_policy="x509",
                       access_policy_options={"ca": str(ca_file)})


async def run_churn(
    network: Network, creds: ControllerCredentials, config: GroupConfig, *,
    initial: int, rounds: int, joins: int, leaves: int, per_round: int,
) -> tuple[ControllerChannel, dict[str, list[int]], dict[str, set[int]]]:
    """Rounds of: membership change, wait for the sender's epoch, send, wait for delivery.
    Returns the controller, what each member read (message numbers) and what it should read.

    The sender's stream stays open throughout, so every join and leave happens during the
    stream.  The members of one change join concurrently, as real ones would: each join costs
    the transport's ``solicit_wait`` (collecting head offers) in idle time, which one after
    the other on a real clock would be 0.2 s per member."""
    read: dict[str, list[int]] = {}
    expected: dict[str, set[int]] = {}
    async with open_controller(config, tls=creds, network=network) as ctl:
        ann = ctl.announcement
        async with trio.open_nursery() as nursery, background(nursery) as enter:
            await enter(api.open_head, ann, network=network, credentials=member_creds(creds, "head0"))
            tx: Any = await enter(api.open_sender, ann, network=network,
                                  credentials=member_creds(creds, "sender"))
            live: dict[str, tuple[Any, trio.CancelScope]] = {}
            counter = 0
            changed = [trio.Event()]

            async def member(name: str, *, task_status: Any) -> None:
                with trio.CancelScope() as scope:
                    async with api.open_receiver(ann, network=network,
                                                 credentials=member_creds(creds, name)) as rx:
                        task_status.started((rx, scope))
                        async for message in rx:
                            read[name].append(int.from_bytes(message.data[:8], "big"))
                            assert message.epoch >= 1
                            changed[0].set()
                            changed[0] = trio.Event()

            async def join(name: str) -> None:
                read[name] = []
                expected[name] = set()
                live[name] = await nursery.start(member, name)

            async def join_many(names: list[str]) -> None:
                async with trio.open_nursery() as joining:
                    for name in names:
                        joining.start_soon(join, name)

            next_id = initial
            await join_many([f"m{i}" for i in range(initial)])
            for r in range(rounds):
                if r:
                    for name in list(live)[:leaves]:
                        live.pop(name)[1].cancel()
                    await join_many([f"m{next_id + i}" for i in range(joins)])
                    next_id += joins
                await ctl.wait_until(lambda: ctl.stats()["members"] == len(live) + 2)  # + head, sender
                await tx.wait_epoch(ctl.epoch)
                for _ in range(per_round):
                    await tx.send(counter.to_bytes(8, "big") + b"x" * 100, encrypt=True)
                    for name in live:
                        expected[name].add(counter)
                    counter += 1
                for name in live:
                    while len(read[name]) < len(expected[name]):
                        await changed[0].wait()
            for _, scope in live.values():
                scope.cancel()
    return ctl, read, expected


def check_exact(read: dict[str, list[int]], expected: dict[str, set[int]]) -> None:
    """Every member read each message sent while it was a member, once, in order, and no other."""
    for name in read:
        assert read[name] == sorted(expected[name]), name


#: Real seconds of idleness before the mock clock jumps (see the module docstring).
AUTOJUMP = 0.001
#: The issue's group: 50 members at every moment, 5 leaving and 5 joining between rounds.
MEMBERS, ROUNDS, CHURN, PER_ROUND = 50, 6, 5, 5


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=AUTOJUMP)


async def test_secure_group_with_churn_on_the_memory_network(
    creds: ControllerCredentials, tmp_path: pathlib.Path, mock_clock: trio.testing.MockClock
) -> None:
    config = group_config(tmp_path, creds)
    with trio.fail_after(120):  # virtual seconds; the run takes about 20
        ctl, read, expected = await run_churn(
            rmsec.io.memory(seed=3), creds, config, initial=MEMBERS, rounds=ROUNDS,
            joins=CHURN, leaves=CHURN, per_round=PER_ROUND,
        )
    assert len(read) == MEMBERS + (ROUNDS - 1) * CHURN
    check_exact(read, expected)
    # Members who stayed read everything; those who came and went read a strict part of it.
    sent = ROUNDS * PER_ROUND
    assert sum(len(e) == sent for e in expected.values()) == MEMBERS - (ROUNDS - 1) * CHURN
    assert all(0 < len(e) < sent for n, e in expected.items() if len(e) != sent)
    stats = ctl.stats()
    assert stats["rekeys"] >= ROUNDS
    assert stats.get("denied", 0) == 0
    assert stats["members"] == 0  # everyone left at the end


async def test_unauthorised_join_is_refused_with_the_policys_reason(
    creds: ControllerCredentials, tmp_path: pathlib.Path
) -> None:
    network = rmsec.io.memory(seed=1)
    with trio.fail_after(20):
        async with open_controller(group_config(tmp_path, creds), tls=creds, network=network) as ctl:
            mallory = member_creds(creds, "alice", as_name="mallory")
            with pytest.raises(RegistrationRefused) as info:
                async with api.open_receiver(ctl.announcement, network=network, credentials=mallory):
                    pass
            assert ctl.stats()["denied"] == 1
    assert info.value.reason == (
        "member id 'mallory' does not match the certificate's common name 'alice'"
    )


async def test_signed_announcement_without_credentials_is_a_config_error(
    creds: ControllerCredentials, tmp_path: pathlib.Path
) -> None:
    from rmsec.errors import ConfigError

    network = rmsec.io.memory(seed=2)
    async with open_controller(group_config(tmp_path, creds), tls=creds, network=network) as ctl:
        with pytest.raises(ConfigError):
            async with api.open_receiver(ctl.announcement, network=network):
                pass



async def test_authenticated_plaintext_and_counters_through_the_api(
    creds: ControllerCredentials, tmp_path: pathlib.Path
) -> None:
    network = rmsec.io.memory(seed=4)
    with trio.fail_after(20):
        async with open_controller(group_config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network,
                                         credentials=member_creds(creds, "reader")) as rx:
                async with api.open_sender(ann, network=network,
                                           credentials=member_creds(creds, "writer")) as sender:
                    tx = cast(SecureSenderChannel, sender)
                    await tx.wait_epoch(ctl.epoch)
                    await tx.send(b"secret", encrypt=True)
                    await tx.send(b"public but signed", encrypt=False)
                    first = await rx.receive()
                    second = await rx.receive()
                    assert (first.data, second.data) == (b"secret", b"public but signed")
                    assert first.sender == second.sender == tx.stream
                    assert second.seq > first.seq
                    assert first.epoch == ctl.epoch
                stats = rx.stats()
                assert stats["auth_failures"] == 0
                assert stats["rekeys"] >= 1  # the writer's join moved the reader on
                assert ctl.stats()["rekeys"] >= 1


class BindRecorder(rmsec.io.MemoryNetwork):
    """The memory network, remembering the join policy of every BIND a node sends."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.policies: dict[tuple[str, int], set[int]] = {}

    def _transmit(self, src: Any, data: bytes, dst: tuple[str, int]) -> None:
        packet = packets.decode_untrusted(data)
        if isinstance(packet, packets.Bind):
            self.policies.setdefault(src.addr, set()).add(packet.policy)
        super()._transmit(src, data, dst)


async def test_a_secure_receiver_joins_with_the_join_policy_it_asks_for(
    creds: ControllerCredentials, tmp_path: pathlib.Path
) -> None:
    network = BindRecorder(seed=8)
    with trio.fail_after(20):
        async with open_controller(group_config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement  # its transport config says from_now
            async with api.open_receiver(ann, network=network, join_policy="from_start",
                                         credentials=member_creds(creds, "late")) as rx, \
                    api.open_receiver(ann, network=network,
                                      credentials=member_creds(creds, "plain")) as plain:
                machine = cast(SecureReceiverChannel, rx)._machine
                assert machine.config.join_policy == "from_start"
                assert network.policies[rx.address] == {packets.JoinPolicy.FROM_START}
                assert network.policies[plain.address] == {packets.JoinPolicy.FROM_NOW}
            with pytest.raises(ConfigError):
                async with api.open_receiver(ann, network=network, join_policy="never",  # type: ignore[arg-type]
                                             credentials=member_creds(creds, "odd")):
                    pass


async def test_encrypt_in_a_group_without_security_is_refused() -> None:
    from rmsec.errors import ConfigError

    network = rmsec.io.memory(seed=5)
    with trio.fail_after(20):
        async with api.open_sender(network=network) as tx:
            with pytest.raises(ConfigError):
                await tx.send(b"x", encrypt=True)
            await tx.send(b"y", encrypt=False)


async def test_a_member_asks_for_key_recovery_explicitly(
    creds: ControllerCredentials, tmp_path: pathlib.Path, mock_clock: trio.testing.MockClock
) -> None:
    """``rx.request_recovery()``: alice's data plane is cut off while the group rekeys, so
    nothing tells her she is behind; asking brings her to the current epoch over her control
    connection alone (she is still cut off), and asking again when current changes nothing."""
    network = rmsec.io.memory(seed=6)
    with trio.fail_after(60):
        async with open_controller(group_config(tmp_path, creds), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network,
                                         credentials=member_creds(creds, "alice")) as alice_rx:
                alice = cast(SecureReceiverChannel, alice_rx)
                assert alice.epoch == ctl.epoch == 1
                network.isolate(alice.address)
                async with api.open_receiver(ann, network=network,
                                             credentials=member_creds(creds, "bob")):
                    await trio.sleep(1.0)
                    assert ctl.epoch == 2 and alice.epoch == 1  # she missed bob's rekey
                    assert await alice.request_recovery() == 2
                    assert alice.stats()["sec_recoveries_applied"] == 1
                    assert await alice.request_recovery() == 2
                    assert alice.stats()["sec_recoveries_stale"] >= 1
                network.rejoin(alice.address)
            assert ctl.stats()["recoveries"] >= 3  # two catch-ups on joining, then alice's


async def test_batchsig_signs_per_batch_delivers_by_its_deadline_and_flushes_on_close(
    creds: ControllerCredentials, tmp_path: pathlib.Path, mock_clock: trio.testing.MockClock
) -> None:
    """``source_auth="batchsig"`` through the API: a burst costs one signature per batch, a
    lone message is not held for a batch past the deadline, and closing the stream sends the
    open batch (signed at once) before the end of the stream."""
    from rmsec_plugins.auth_batchsig import BatchSigner

    # The deadline is no multiple of the sender's 50 ms auth poll: the lone message must
    # leave at the member's timer, not at a poll that happens to coincide.
    batch, deadline, burst = 16, 0.53, 96
    network = rmsec.io.memory(seed=8)
    config = group_config(tmp_path, creds).replace(
        source_auth="batchsig", source_auth_options={"batch": batch, "deadline": deadline})
    received: list[tuple[bytes, float]] = []
    with trio.fail_after(60):  # virtual seconds
        async with open_controller(config, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network,
                                         credentials=member_creds(creds, "reader")) as rx:
                got = trio.Event()

                async def read() -> None:
                    nonlocal got
                    async for message in rx:
                        received.append((message.data, trio.current_time()))
                        got.set()
                        got = trio.Event()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    async with api.open_sender(ann, network=network,
                                               credentials=member_creds(creds, "writer")) as sender:
                        tx = cast(SecureSenderChannel, sender)
                        await tx.wait_epoch(ctl.epoch)
                        signer = tx.member.protectors[tx.sender_id].signer
                        assert isinstance(signer, BatchSigner)
                        for i in range(burst):
                            await tx.send(b"burst %d" % i)
                        while len(received) < burst:
                            await got.wait()
                        assert signer.batches_signed == burst // batch  # full batches only
                        start = trio.current_time()
                        await tx.send(b"lone")
                        while len(received) < burst + 1:
                            await got.wait()
                        assert received[-1][0] == b"lone"
                        # at the deadline (the member's timer), not at the next poll
                        assert start + deadline <= received[-1][1] < start + deadline + 0.005
                        for i in range(3):
                            await tx.send(b"tail %d" % i)
                        closing = trio.current_time()
                    # the stream ended after the tail: the reader's iteration has ended too
                assert [d for d, _ in received] == [
                    *(b"burst %d" % i for i in range(burst)), b"lone",
                    *(b"tail %d" % i for i in range(3))]
                assert all(t < closing + deadline for _, t in received[-3:])  # not the timer
                assert signer.batches_signed == burst // batch + 2
                assert rx.stats()["auth_failures"] == 0


async def test_tesla_without_synchronized_clocks_through_the_api(
    creds: ControllerCredentials, tmp_path: pathlib.Path
) -> None:
    """``source_auth="tesla"`` with no ``synchronized_clocks``: each receiver's bound on the
    sender's clock comes from its TIME exchange with the controller and the controller's
    MATERIAL round trip with the sender (rmsec.security.clocks), over TLS; every message is
    verified, none refused.  (Real clock: the bound's width is the real round trips.)"""
    network = rmsec.io.memory(seed=9)
    config = group_config(tmp_path, creds).replace(
        source_auth="tesla", source_auth_options={"interval": 0.02, "rtt": 0.1})
    sent = [b"tesla %d" % i for i in range(30)]
    with trio.fail_after(30):
        async with open_controller(config, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network,
                                         credentials=member_creds(creds, "reader")) as rx:
                async with api.open_sender(ann, network=network,
                                           credentials=member_creds(creds, "writer")) as sender:
                    tx = cast(SecureSenderChannel, sender)
                    await tx.wait_epoch(ctl.epoch)
                    for data in sent:
                        await tx.send(data)
                        await trio.sleep(0.005)
                    got = [(await rx.receive()).data for _ in sent]
                assert got == sent
                member = cast(SecureReceiverChannel, rx).member
                assert member.clock is not None and member.clock.error < 0.05
                stats = rx.stats()
                assert stats["auth_failures"] == 0
                assert stats["sec_time_synchronised"] == 1
            assert ctl.stats()["time_requests"] >= 2  # the reader and the writer


@pytest.mark.parametrize("auth", ["tesla", "emss"])
async def test_the_last_messages_verify_when_the_sender_closes_at_once(
    creds: ControllerCredentials, tmp_path: pathlib.Path, auth: str
) -> None:
    """TESLA discloses a key ``lag`` intervals after its interval and EMSS signs the tail at
    its deadline: a sender that ends its stream right after its last message must first
    send those packets, or receivers cannot verify the tail and iteration ends without it."""
    network = rmsec.io.memory(seed=12)
    options: dict[str, Any] = {"interval": 0.02, "rtt": 0.1} if auth == "tesla" else {}
    config = group_config(tmp_path, creds).replace(source_auth=auth, source_auth_options=options)
    sent = [b"%s %d" % (auth.encode(), i) for i in range(40)]
    read: list[bytes] = []
    with trio.fail_after(30):
        async with open_controller(config, tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with api.open_receiver(ann, network=network,
                                         credentials=member_creds(creds, "reader")) as rx, \
                    trio.open_nursery() as nursery:

                async def reader() -> None:
                    async for message in rx:
                        read.append(message.data)

                nursery.start_soon(reader)
                async with api.open_sender(ann, network=network,
                                           credentials=member_creds(creds, "writer")) as sender:
                    tx = cast(SecureSenderChannel, sender)
                    await tx.wait_epoch(ctl.epoch)
                    for data in sent:
                        await tx.send(data)
                # the sender's block ended at once after the burst: its stream is closed
    assert read == sent
