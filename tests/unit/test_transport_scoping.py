"""Control-traffic scoping: advertisements near the root only, backed off and quiet while data
flows; aggregated acknowledgements; polls that recover a lost completion acknowledgement;
the window's bitmap helpers against a plain reference."""

from __future__ import annotations

import random

import pytest

from rmsec.transport import Receiver, RepairHead, Sender, TransportConfig, node
from rmsec.transport.events import StreamEnded
from rmsec.transport.window import BITMAP_SPAN, ReceiveWindow, missing_from_ack
from rmsec.wire.packets import Ack, decode_untrusted
from tests.unit.shuttle import Shuttle
from tests.unit.test_transport_basic import ROOT, SESSION, build, nid


def _tree(net: Shuttle, config: TransportConfig) -> tuple[Sender, RepairHead, RepairHead]:
    sender = net.add(ROOT, Sender(config.replace(max_children=1), session=SESSION, node_id=nid(1),
                                  rng=net.rng, now=0.0))
    top = net.add(("head", 0), RepairHead(config, session=SESSION, node_id=nid(100), rng=net.rng,
                                          now=0.0, bootstrap=[ROOT]))
    net.run(0.5)
    deep = net.add(("head", 1), RepairHead(config, session=SESSION, node_id=nid(101), rng=net.rng,
                                           now=net.now, bootstrap=[("head", 0)]))
    net.run(net.now + 0.5)
    assert top.level == 1 and deep.level == 2
    return sender, top, deep


def test_only_the_top_of_the_tree_advertises_with_backoff() -> None:
    config = TransportConfig(max_children=4, multicast=True)
    net = Shuttle(seed=2)
    sender, top, deep = _tree(net, config)
    net.run(40.0)
    assert deep.stats().get("advertisements_sent", 0) == 0  # level 2: found through referrals
    assert sender.stats().get("advertisements_sent", 0) == 0  # full
    # every 2 s without backoff would be ~20; doubling gives t = 2, 6, 14, 30
    assert 2 <= top.stats().get("advertisements_sent", 0) <= 5


def test_no_advertisement_while_data_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "ADVERTISE_BACKOFF", 1)  # a constant interval, to see the rule
    config = TransportConfig(max_children=4, multicast=True, advertise_interval=0.2)
    net = Shuttle(seed=3)
    sender, top, _deep = _tree(net, config)
    before = top.stats().get("advertisements_sent", 0)
    assert before >= 2
    for _ in range(100):  # 2 s of data, a message every 20 ms
        sender.send(b"x" * 100, net.now)
        net.flush(ROOT)
        net.run(net.now + 0.02)
    during = top.stats().get("advertisements_sent", 0) - before
    net.run(net.now + 2.0)
    after = top.stats().get("advertisements_sent", 0) - before - during
    assert during <= 1  # at most the round that was already due
    assert after >= 5


def test_a_lost_completion_ack_is_recovered_by_a_poll() -> None:
    config = TransportConfig(max_children=4, multicast=True)
    net = Shuttle(seed=5)
    sender, _rx = build(net, config, heads=1, receivers=4)
    victim = ("rx", 0)
    dropped: list[float] = []

    def drop(data: bytes, src: object, dst: object) -> bool:
        if src != victim or dropped:
            return False
        packet = decode_untrusted(data)
        if isinstance(packet, Ack) and any(e.have_base >= 21 for e in packet.entries):
            dropped.append(net.now)
            return True
        return False

    net.drop = drop
    for _ in range(20):
        sender.send(b"m" * 500, net.now)
    sender.close(net.now)
    net.flush(ROOT)
    net.run(net.now + 10, stop=lambda: any(isinstance(e, StreamEnded) for e in net.events[victim]))
    ended = net.now
    net.run(net.now + 10, stop=lambda: sender.confirmed)
    assert dropped and sender.confirmed
    # without the poll the head would learn of the completion at the next keep-alive (1 s)
    assert net.now - ended < 0.5 * config.hello_interval


def test_acks_to_the_root_do_not_grow_with_the_subtree() -> None:
    """A head passes its children's acknowledgements upward only when they are news, so the
    root hears about as much from a head with 12 members as from one with 2."""
    counts = []
    for receivers in (2, 12):
        config = TransportConfig(max_children=16, multicast=True)
        net = Shuttle(seed=9)
        sender, _top, _deep = _tree(net, config)
        for r in range(receivers):
            net.add(("rx", r), Receiver(config, session=SESSION, node_id=nid(1000 + r), rng=net.rng,
                                        now=net.now, bootstrap=[("head", 0)]))
        net.run(net.now + 2.0)
        assert set(sender.children) == {("head", 0)}
        acks_before = sender.stats().get("acks_in", 0)
        for _ in range(200):
            sender.send(b"z" * 800, net.now)
        sender.close(net.now)
        net.flush(ROOT)
        net.run(net.now + 30, stop=lambda s=sender: s.confirmed)  # type: ignore[misc]
        assert sender.confirmed
        counts.append(sender.stats().get("acks_in", 0) - acks_before)
    assert counts[1] <= 1.3 * counts[0] + 3, counts


def _reference_bitmap(w: ReceiveWindow) -> bytes:
    value = 0
    for seq in w.held:
        offset = seq - w.base - 1
        if 0 <= offset < BITMAP_SPAN:
            value |= 1 << offset
    return value.to_bytes((value.bit_length() + 7) // 8, "little")


def _reference_missing(have_base: int, bitmap: bytes, upto: int) -> list[int]:
    bits = int.from_bytes(bitmap, "little")
    return [
        seq for seq in range(have_base, min(upto, have_base + 1 + BITMAP_SPAN))
        if seq == have_base or not (bits >> (seq - have_base - 1)) & 1
    ]


@pytest.mark.parametrize("seed", range(5))
def test_bitmap_helpers_match_a_plain_reference(seed: int) -> None:
    r = random.Random(seed)
    for _ in range(300):
        w = ReceiveWindow(r.randrange(100))
        for _ in range(r.randrange(400)):
            seq = w.base + 1 + r.randrange(r.choice([4, 60, 1500, 3000]))
            w.held[seq] = (0, b"")
            w.next_known = max(w.next_known, seq + 1)  # the window's invariant: held < next_known
        bitmap = w.bitmap()
        assert bitmap == _reference_bitmap(w)
        for upto in (w.base - 1, w.base, w.base + 1, w.base + r.randrange(2000), w.base + 5000):
            assert missing_from_ack(w.base, bitmap, upto) == _reference_missing(w.base, bitmap, upto)
        noise = r.randbytes(r.randrange(129))
        upto = 7 + r.randrange(-5, 1500)
        assert missing_from_ack(7, noise, upto) == _reference_missing(7, noise, upto)
