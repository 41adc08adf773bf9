"""Sans-IO transport: machines joined by a hand-driven shuttle, in virtual time."""

from __future__ import annotations

import hashlib

from rmsec.transport import Receiver, RepairHead, Sender, TransportConfig
from rmsec.transport.events import MessageReceived, StreamConfirmed
from tests.unit.shuttle import Shuttle

SESSION = b"S" * 8
ROOT = ("root", 1)


def nid(i: int) -> bytes:
    return i.to_bytes(8, "big")


def build(net: Shuttle, config: TransportConfig, *, heads: int, receivers: int) -> tuple[Sender, list]:
    sender = net.add(ROOT, Sender(config, session=SESSION, node_id=nid(1), rng=net.rng, now=0.0))
    head_addrs = []
    for h in range(heads):
        addr = ("head", h)
        net.add(addr, RepairHead(config, session=SESSION, node_id=nid(100 + h), rng=net.rng, now=0.0, bootstrap=[ROOT]))
        head_addrs.append(addr)
    net.run(1.0)
    rx = []
    for r in range(receivers):
        addr = ("rx", r)
        rx.append(net.add(addr, Receiver(config, session=SESSION, node_id=nid(1000 + r), rng=net.rng, now=net.now, bootstrap=[ROOT, *head_addrs])))
    net.run(net.now + 2.0)
    return sender, rx


def delivered(net: Shuttle, addr) -> list[bytes]:
    return [e.data for e in net.events[addr] if isinstance(e, MessageReceived)]


def test_receivers_bind_and_get_everything_under_loss() -> None:
    config = TransportConfig(max_children=4)
    net = Shuttle(loss=0.1, seed=7)
    sender, rx = build(net, config, heads=3, receivers=10)
    assert all(r.bound for r in rx)
    messages = [hashlib.sha256(bytes([i])).digest() * (i * 7 + 1) for i in range(60)]
    for m in messages:
        sender.send(m, net.now)
    sender.close(net.now)
    net.flush(ROOT)
    net.run(net.now + 60, stop=lambda: sender.confirmed)
    assert sender.confirmed
    for r in range(10):
        assert delivered(net, ("rx", r)) == messages
    assert any(isinstance(e, StreamConfirmed) for e in net.events[ROOT])


def test_sender_hears_only_its_children_during_the_stream() -> None:
    config = TransportConfig(max_children=3)
    net = Shuttle(loss=0.05, seed=3)
    sender, _rx = build(net, config, heads=3, receivers=9)
    net.received_from.clear()  # joining members may solicit the root; the stream must not reach it
    for _i in range(30):
        sender.send(bytes(3000), net.now)
    sender.close(net.now)
    net.flush(ROOT)
    net.run(net.now + 60, stop=lambda: sender.confirmed)
    assert sender.confirmed
    children = set(sender.children)
    assert net.received_from[ROOT] <= children
    assert len(children) <= 3
