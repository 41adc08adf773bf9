"""Whole groups on the memory network, in virtual time: the transport through the public API."""

from __future__ import annotations

import collections
import hashlib
from typing import Any

import pytest
import trio
import trio.testing

import rmsec
import rmsec.io
from rmsec.io.base import Addr
from rmsec.testing.group import (
    Delivery,
    background,
    collect,
    enter_all,
    message_payloads,
    run_group,
)
from rmsec.transport import events
from rmsec.transport.config import TransportConfig
from rmsec.wire.packets import decode_untrusted


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.2])
async def test_200_receivers_under_20_heads(
    loss: float, autojump_clock: trio.testing.MockClock
) -> None:
    net = rmsec.io.memory(loss=loss, duplicate=0.05, reorder=0.05, jitter=0.002, seed=11)
    # (source, packet type) of every datagram each node read, counted at the network layer.
    seen: dict[Addr, collections.Counter[tuple[Addr, str]]] = collections.defaultdict(
        collections.Counter
    )

    def tap(src: Addr, dst: Addr, data: bytes) -> None:
        seen[dst][src, type(decode_untrusted(data)).__name__] += 1

    net.taps.append(tap)
    config = TransportConfig(max_children=20)
    with trio.fail_after(600):
        result = await run_group(
            net, receivers=200, heads=20, messages=30, size=700, seed=5, config=config
        )
    assert len(result.deliveries) == 200
    for d in result.deliveries:
        assert (d.count, d.sha256, d.in_order) == (30, result.sent_sha256, True), d
    # No acknowledgement implosion: apart from join requests (a solicitation, or a bind it
    # refused), the sender heard only from its direct children, and never more than 20.
    root = result.root_address
    children = {e.addr for e in result.sender_events if isinstance(e, events.ChildJoined)}
    ack_sources = {src for (src, kind) in seen[root] if kind == "Ack"}
    assert 0 < len(ack_sources) <= 20
    assert ack_sources <= children
    from_others = {kind for (src, kind) in seen[root] if src not in children}
    assert from_others <= {"Solicit", "Bind"}
    assert sum(seen[root].values()) == sum(net.received_from[root].values())
    assert sum(d.parent != root for d in result.deliveries) >= 180  # a real tree


async def _open_in_scope(
    nursery: trio.Nursery, factory: Any, *args: Any, **kwargs: Any
) -> tuple[Any, trio.CancelScope]:
    """Open a node in its own task and cancel scope, so a test can kill it."""

    async def run(task_status: trio.TaskStatus[tuple[Any, trio.CancelScope]]) -> None:
        with trio.CancelScope() as scope:
            async with factory(*args, **kwargs) as node:
                task_status.started((node, scope))
                await trio.sleep_forever()

    result: tuple[Any, trio.CancelScope] = await nursery.start(run)
    return result


@pytest.mark.parametrize("how", ["isolate", "cancel"])
async def test_head_killed_mid_stream_children_reaffiliate(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    net = rmsec.io.memory(seed=3)
    config = TransportConfig(max_children=6)
    payloads = message_payloads(80, 500, seed=1)
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        tx = await enter(rmsec.open_sender, config=config, network=net)
        heads = [
            await _open_in_scope(nursery, rmsec.open_head, tx.announcement, network=net)
            for _ in range(3)
        ]
        receivers = await enter_all(enter, 12, rmsec.open_receiver, tx.announcement, network=net)
        victim, victim_scope = next((h, s) for h, s in heads if h.machine.children)
        orphans = set(victim.machine.children)
        assert orphans
        deliveries = [Delivery(rx.address) for rx in receivers]
        async with trio.open_nursery() as receiving:
            for rx, d in zip(receivers, deliveries, strict=True):
                receiving.start_soon(collect, rx, d)
            for i, payload in enumerate(payloads):
                if i == 30:
                    if how == "isolate":
                        net.isolate(victim.address)  # a crash: silent from now on
                    else:
                        victim_scope.cancel()  # an orderly exit: it releases its children
                await tx.send(payload)
                await trio.sleep(0.05)
            with trio.fail_after(120):
                await tx.aclose()
        for _, scope in heads:
            scope.cancel()
    digest = hashlib.sha256(b"".join(payloads)).hexdigest()
    for rx, d in zip(receivers, deliveries, strict=True):
        assert (d.count, d.sha256, d.in_order) == (80, digest, True)
        if rx.address in orphans:
            assert rx.events.of_type(events.Bound)[-1].previous_id == victim.node_id
            assert rx.bound_to != victim.address


def _slow_config(policy: str) -> TransportConfig:
    return TransportConfig(
        slow_receiver=policy,  # type: ignore[arg-type]
        slow_timeout=1.0,
        cache_packets=128,
        receive_buffer=32 * 1024,
    )


async def test_slow_receiver_is_pruned(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory(seed=4)
    payloads = message_payloads(1500, 500, seed=2)
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        tx = await enter(rmsec.open_sender, config=_slow_config("prune"), network=net)
        fast = await enter_all(enter, 3, rmsec.open_receiver, tx.announcement, network=net)
        slow = await enter(rmsec.open_receiver, tx.announcement, network=net)
        deliveries = [Delivery(rx.address) for rx in fast]
        async with trio.open_nursery() as receiving:
            for rx, d in zip(fast, deliveries, strict=True):
                receiving.start_soon(collect, rx, d)
            with trio.fail_after(300):
                for payload in payloads:
                    await tx.send(payload)
                pruned = await tx.events.wait_for(events.MemberPruned)
                await tx.aclose()
        assert pruned.node_id == slow.node_id
        # Now the slow application reads: what it got before the prune, then Pruned.
        got = Delivery(slow.address)
        with pytest.raises(rmsec.errors.Pruned):
            async for message in slow:
                got.add(message)
        assert 0 < got.count < len(payloads) and got.in_order
        assert slow.events.of_type(events.PrunedByParent)
    for d in deliveries:
        assert d.count == len(payloads) and d.in_order


async def test_slow_receiver_holds_the_group_under_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory(seed=5)
    payloads = message_payloads(1500, 500, seed=3)
    digest = hashlib.sha256(b"".join(payloads)).hexdigest()
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        tx = await enter(rmsec.open_sender, config=_slow_config("block"), network=net)
        fast = await enter(rmsec.open_receiver, tx.announcement, network=net)
        slow = await enter(rmsec.open_receiver, tx.announcement, network=net)
        fast_got, slow_got = Delivery(fast.address), Delivery(slow.address)
        async with trio.open_nursery() as receiving:
            receiving.start_soon(collect, fast, fast_got)
            sent = 0
            with trio.move_on_after(30):
                for payload in payloads:
                    await tx.send(payload)
                    sent += 1
            # Held back: the sender cannot run more than its window past the slow member.
            assert sent < len(payloads)
            assert fast_got.count < len(payloads)
            assert not tx.events.of_type(events.MemberPruned)
            receiving.start_soon(collect, slow, slow_got)
            with trio.fail_after(300):
                for payload in payloads[sent:]:
                    await tx.send(payload)
                await tx.aclose()
    for d in (fast_got, slow_got):
        assert (d.count, d.sha256, d.in_order) == (len(payloads), digest, True)


@pytest.mark.parametrize("policy", ["from_now", "from_cache", "from_start"])
async def test_late_join(policy: str, autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory(seed=6)
    config = TransportConfig(cache_packets=64, retain_stream=policy == "from_start")
    payloads = message_payloads(200, 300, seed=4)
    first, second = payloads[:100], payloads[100:]
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        tx = await enter(rmsec.open_sender, config=config, network=net)
        early = await enter(rmsec.open_receiver, tx.announcement, network=net)
        early_got = Delivery(early.address)
        got: list[bytes] = []
        async with trio.open_nursery() as receiving:
            receiving.start_soon(collect, early, early_got)
            for payload in first:
                await tx.send(payload)
            with trio.fail_after(60):
                await early_got.wait_for_count(len(first))
            late = await enter(
                rmsec.open_receiver, tx.announcement, network=net, join_policy=policy
            )
            late_got = Delivery(late.address)

            async def read_late() -> None:
                async for message in late:
                    late_got.add(message)
                    got.append(message.data)

            receiving.start_soon(read_late)
            for payload in second:
                await tx.send(payload)
            with trio.fail_after(60):
                await tx.aclose()
    assert early_got.count == len(payloads)
    assert late_got.in_order
    if policy == "from_now":
        assert got == second
    elif policy == "from_cache":
        assert len(second) < len(got) < len(payloads)
        assert got == payloads[-len(got) :]
    else:
        assert got == payloads


async def test_one_64_mib_message(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory(seed=7)
    data = message_payloads(1, 64 * 1024 * 1024, seed=5)[0]
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        tx = await enter(rmsec.open_sender, network=net)
        rx = await enter(rmsec.open_receiver, tx.announcement, network=net)
        await tx.send(data)
        with trio.fail_after(600):
            message = await rx.receive()
            await tx.aclose()
    assert message.data == data
    assert message.sender == tx.stream


async def test_two_senders_in_one_group(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory(seed=8, loss=0.02)
    config = TransportConfig(max_children=4)
    a_msgs = message_payloads(40, 400, seed=6)
    b_msgs = message_payloads(40, 400, seed=7)
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        a = await enter(rmsec.open_sender, config=config, network=net)
        await enter_all(enter, 2, rmsec.open_head, a.announcement, network=net)
        b = await enter(rmsec.open_sender, a.announcement, network=net)
        receivers = await enter_all(enter, 8, rmsec.open_receiver, a.announcement, network=net)
        assert a.stream != b.stream
        per_receiver: list[dict[int, list[bytes]]] = [
            collections.defaultdict(list) for _ in receivers
        ]

        async def read(rx: rmsec.ReceiverChannel, into: dict[int, list[bytes]]) -> None:
            async for message in rx:
                into[message.sender].append(message.data)

        async def send_all(tx: rmsec.SenderChannel, msgs: list[bytes]) -> None:
            for m in msgs:
                await tx.send(m)
                await trio.sleep(0.01)
            await tx.aclose()

        with trio.fail_after(300):
            async with trio.open_nursery() as running:
                for rx, into in zip(receivers, per_receiver, strict=True):
                    running.start_soon(read, rx, into)
                running.start_soon(send_all, a, a_msgs)
                running.start_soon(send_all, b, b_msgs)
    for into in per_receiver:
        assert into[a.stream] == a_msgs
        assert into[b.stream] == b_msgs
