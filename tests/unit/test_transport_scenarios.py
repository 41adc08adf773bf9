"""Sans-IO transport scenarios: head failure, slow receivers, late join, several senders."""

from __future__ import annotations

import os
import random

import pytest

from rmsec.transport import Receiver, Sender, TransportConfig
from rmsec.transport.events import (
    GapSkipped,
    HeadLost,
    MemberPruned,
    MessageReceived,
    PrunedByParent,
    StreamEnded,
)
from tests.unit.shuttle import Shuttle
from tests.unit.test_transport_basic import ROOT, SESSION, build, delivered, nid


def msgs(n: int, size: int = 2000, seed: int = 0) -> list[bytes]:
    r = random.Random(seed)
    return [r.randbytes(r.randint(1, size)) for _ in range(n)]


def finish(net: Shuttle, sender: Sender, limit: float = 120) -> None:
    sender.close(net.now)
    net.flush(ROOT)
    net.run(net.now + limit, stop=lambda: sender.confirmed)
    assert sender.confirmed


def test_head_killed_mid_stream_children_reaffiliate_and_lose_nothing() -> None:
    config = TransportConfig(max_children=4)
    net = Shuttle(loss=0.02, seed=11)
    sender, _rx = build(net, config, heads=3, receivers=8)
    messages = msgs(200)
    for m in messages[:100]:
        sender.send(m, net.now)
    net.flush(ROOT)
    net.run(net.now + 0.05)
    victim = max((("head", h) for h in range(3)), key=lambda a: len(net.nodes[a].children))
    orphans = [a for a in net.nodes if a[0] == "rx" and net.nodes[a].parent == victim]
    assert orphans
    net.down.add(victim)
    for m in messages[100:]:
        sender.send(m, net.now)
    net.flush(ROOT)
    finish(net, sender)
    for addr in orphans:
        assert any(isinstance(e, HeadLost) for e in net.events[addr])
        assert net.nodes[addr].parent != victim
    for r in range(8):
        assert delivered(net, ("rx", r)) == messages


class SlowReader:
    """Wraps a receiver whose application stops reading: events pile up inside it."""

    def __init__(self, node: Receiver) -> None:
        self.node = node

    def __getattr__(self, name: str) -> object:
        return getattr(self.node, name)

    def next_event(self) -> None:
        return None


def slow_group(policy: str) -> tuple[Shuttle, Sender, SlowReader]:
    config = TransportConfig(
        max_children=8, slow_receiver=policy, cache_packets=256, receive_buffer=64 * 1024,
        slow_timeout=1.0,
    )
    net = Shuttle(seed=5)
    sender, _rx = build(net, config, heads=1, receivers=3)
    slow_addr = ("rx", 0)
    slow = SlowReader(net.nodes[slow_addr])
    net.nodes[slow_addr] = slow
    for m in msgs(400, size=4000, seed=2):
        sender.send(m, net.now)
    net.flush(ROOT)
    return net, sender, slow


def test_slow_receiver_is_pruned_with_an_event() -> None:
    net, sender, slow = slow_group("prune")
    finish(net, sender, limit=60)
    head_events = [e for a in net.nodes if a[0] in ("head", "root") for e in net.events[a]]
    pruned = [e for e in head_events if isinstance(e, MemberPruned)]
    assert [e.node_id for e in pruned] == [slow.node.node_id]
    assert any(isinstance(e, PrunedByParent) for e in slow.node._events)
    for r in (1, 2):
        assert len(delivered(net, ("rx", r))) == 400


def test_slow_receiver_holds_the_group_under_block() -> None:
    net, sender, slow = slow_group("block")
    sender.close(net.now)
    net.flush(ROOT)
    net.run(net.now + 20, stop=lambda: sender.confirmed)
    assert not sender.confirmed
    assert sender.stats().get("pruned", 0) == 0
    fast = len(delivered(net, ("rx", 1)))
    assert fast < 400  # the group is held back by the reader that does not read
    # The reader resumes: the group completes and nobody lost anything.
    net.nodes[("rx", 0)] = slow.node
    net.flush(("rx", 0))
    net.run(net.now + 60, stop=lambda: sender.confirmed)
    assert sender.confirmed
    assert len(delivered(net, ("rx", 0))) == 400


def test_slow_receiver_skips_under_skip() -> None:
    net, sender, slow = slow_group("skip")
    finish(net, sender, limit=60)
    assert len(delivered(net, ("rx", 1))) == 400
    net.nodes[("rx", 0)] = slow.node
    net.flush(("rx", 0))
    net.run(net.now + 30)
    got = delivered(net, ("rx", 0))
    assert 0 < len(got) < 400
    assert any(isinstance(e, GapSkipped) for e in net.events[("rx", 0)])


@pytest.mark.parametrize("policy", ["from_now", "from_cache", "from_start"])
def test_late_join(policy: str) -> None:
    config = TransportConfig(max_children=8, cache_packets=128, retain_stream=policy == "from_start")
    net = Shuttle(loss=0.02, seed=9)
    sender, _rx = build(net, config, heads=1, receivers=2)
    messages = [i.to_bytes(4, "big") * 100 for i in range(300)]  # one packet each
    for m in messages[:200]:
        sender.send(m, net.now)
    net.flush(ROOT)
    net.run(net.now + 10)
    late = ("rx", "late")
    net.add(late, Receiver(config, session=SESSION, node_id=nid(5000), rng=net.rng, now=net.now,
                           bootstrap=[ROOT, ("head", 0)], join_policy=policy))
    net.run(net.now + 2)
    for m in messages[200:]:
        sender.send(m, net.now)
    net.flush(ROOT)
    finish(net, sender)
    got = delivered(net, late)
    assert got == messages[len(messages) - len(got):]  # a suffix, in order, no duplicates
    if policy == "from_now":
        assert len(got) == 100
    elif policy == "from_cache":
        assert 100 < len(got) < 300
    else:
        assert got == messages


def test_two_senders_in_one_group() -> None:
    config = TransportConfig(max_children=4)
    net = Shuttle(loss=0.05, seed=4)
    first, _rx = build(net, config, heads=2, receivers=6)
    second = net.add(("tx2", 0), Sender(config, session=SESSION, node_id=nid(2), rng=net.rng,
                                        now=net.now, bootstrap=[ROOT, ("head", 0), ("head", 1)]))
    net.run(net.now + 2)
    a, b = msgs(50, seed=1), msgs(50, seed=2)
    for x, y in zip(a, b, strict=True):
        first.send(x, net.now)
        second.send(y, net.now)
    net.flush(ROOT)
    net.flush(("tx2", 0))
    first.close(net.now)
    second.close(net.now)
    net.flush(ROOT)
    net.flush(("tx2", 0))
    net.run(net.now + 120, stop=lambda: first.confirmed and second.confirmed)
    assert first.confirmed and second.confirmed
    for r in range(6):
        events = [e for e in net.events[("rx", r)] if isinstance(e, MessageReceived)]
        assert [e.data for e in events if e.stream == first.stream] == a
        assert [e.data for e in events if e.stream == second.stream] == b
        ended = {e.stream for e in net.events[("rx", r)] if isinstance(e, StreamEnded)}
        assert ended == {first.stream, second.stream}


def test_large_message_fragmented_and_reassembled() -> None:
    config = TransportConfig(max_children=4)
    net = Shuttle(loss=0.05, seed=8)
    sender, _rx = build(net, config, heads=1, receivers=3)
    big = os.urandom(2 * 1024 * 1024 + 17)
    sender.send(big, net.now)
    sender.send(b"", net.now)
    finish(net, sender)
    for r in range(3):
        assert delivered(net, ("rx", r)) == [big, b""]


def test_multicast_data_plane() -> None:
    config = TransportConfig(max_children=4, multicast=True)
    net = Shuttle(loss=0.05, seed=12)
    sender, _rx = build(net, config, heads=2, receivers=6)
    messages = msgs(100)
    for m in messages:
        sender.send(m, net.now)
    finish(net, sender)
    for r in range(6):
        assert delivered(net, ("rx", r)) == messages
    # each data packet left the sender once (to the group), not once per child, and no
    # head forwarded the stream: repairs are the only unicast data
    assert net.multicast_sent[ROOT] >= sender.stats()["data_sent"]
    assert all(n.stats().get("forwarded", 0) == 0 for n in net.nodes.values())


@pytest.mark.parametrize("seed", range(3))
def test_hostile_datagrams_never_crash_any_role(seed: int) -> None:
    config = TransportConfig(max_children=4)
    net = Shuttle(seed=seed)
    sender, _rx = build(net, config, heads=1, receivers=2)
    r = random.Random(seed)
    genuine: list[bytes] = []
    net.drop = lambda data, src, dst: genuine.append(data) and False  # type: ignore[func-returns-value]
    for m in msgs(20, seed=seed):
        sender.send(m, net.now)
    net.flush(ROOT)
    net.run(net.now + 1)
    net.drop = None
    for addr, node in list(net.nodes.items()):
        for _ in range(300):
            if genuine and r.random() < 0.7:
                raw = bytearray(r.choice(genuine))
                for _ in range(r.randint(1, 4)):
                    raw[r.randrange(len(raw))] = r.randrange(256)
                data = bytes(raw)
            else:
                data = r.randbytes(r.randint(0, 200))
            node.receive_datagram(data, ("evil", 666), net.now)
        net.flush(addr)
    finish(net, sender)
    for node in net.nodes.values():
        assert node.stats()["datagrams_in"] >= 300
    assert sum(n.stats().get("malformed", 0) for n in net.nodes.values()) > 0
    for i in range(2):
        assert delivered(net, ("rx", i)) == msgs(20, seed=seed)


def test_second_sender_bound_directly_to_the_root() -> None:
    """A secondary sender that is also the root's child still gets its stream distributed."""
    config = TransportConfig(max_children=8)
    net = Shuttle(seed=6)
    first, _rx = build(net, config, heads=0, receivers=2)
    second = net.add(("tx2", 0), Sender(config, session=SESSION, node_id=nid(3), rng=net.rng,
                                        now=net.now, bootstrap=[ROOT]))
    net.run(net.now + 2)
    assert second.parent == ROOT
    messages = msgs(20, seed=3)
    for m in messages:
        second.send(m, net.now)
    second.close(net.now)
    net.flush(("tx2", 0))
    net.run(net.now + 60, stop=lambda: second.confirmed)
    assert second.confirmed
    assert first.stats().get("data_from_stranger", 0) == 0
    for r in range(2):
        assert delivered(net, ("rx", r)) == messages


@pytest.mark.parametrize("delivers", [True, False])
def test_sender_delivers_other_streams_only_when_asked(delivers: bool) -> None:
    """``Sender(delivers=True)`` also receives the other streams on the tree (the security
    layer needs the rekey stream at every sender); its own stream never comes back to it."""
    config = TransportConfig(max_children=4)
    net = Shuttle(loss=0.05, seed=12)
    first = net.add(ROOT, Sender(config, session=SESSION, node_id=nid(1), rng=net.rng, now=0.0,
                                 delivers=delivers))
    net.add(("rx", 0), Receiver(config, session=SESSION, node_id=nid(1000), rng=net.rng, now=0.0,
                                bootstrap=[ROOT]))
    second = net.add(("tx2", 0), Sender(config, session=SESSION, node_id=nid(2), rng=net.rng,
                                        now=0.0, bootstrap=[ROOT], delivers=delivers))
    net.run(2.0)
    assert second.bound
    a, b = msgs(30, seed=5), msgs(30, seed=6)
    for x, y in zip(a, b, strict=True):
        first.send(x, net.now)
        second.send(y, net.now)
    first.close(net.now)
    second.close(net.now)
    net.flush(ROOT)
    net.flush(("tx2", 0))
    net.run(net.now + 120, stop=lambda: first.confirmed and second.confirmed)
    assert first.confirmed and second.confirmed
    got_first = [e for e in net.events[ROOT] if isinstance(e, MessageReceived)]
    got_second = [e for e in net.events[("tx2", 0)] if isinstance(e, MessageReceived)]
    if delivers:
        assert [e.data for e in got_first] == b and {e.stream for e in got_first} == {second.stream}
        assert [e.data for e in got_second] == a and {e.stream for e in got_second} == {first.stream}
        assert any(isinstance(e, StreamEnded) and e.stream == first.stream for e in net.events[("tx2", 0)])
    else:
        assert got_first == [] and got_second == []
    rx = [e for e in net.events[("rx", 0)] if isinstance(e, MessageReceived)]
    assert [e.data for e in rx if e.stream == first.stream] == a
    assert [e.data for e in rx if e.stream == second.stream] == b
