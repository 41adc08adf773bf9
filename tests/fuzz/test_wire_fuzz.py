"""Wire codec properties: every packet round-trips; hostile bytes only raise MalformedPacket."""

from __future__ import annotations

import contextlib

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsec.errors import MalformedPacket
from rmsec.wire import (
    Accept,
    Ack,
    AckEntry,
    Bind,
    Data,
    Hello,
    Leave,
    Offer,
    Packet,
    Prune,
    Reject,
    Skip,
    Solicit,
    StreamState,
    decode_untrusted,
)
from rmsec.wire.packets import MAX_SEQ

ids = st.binary(min_size=8, max_size=8)
u8 = st.integers(0, 255)
u16 = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)
seq = st.integers(0, MAX_SEQ)
addr = st.tuples(st.text(max_size=40), u16)

packets: st.SearchStrategy[Packet] = st.one_of(
    st.builds(Data, ids, u32, seq, u8, st.binary(max_size=2000)),
    st.builds(
        Ack, ids, ids, u8, u32,
        st.lists(st.builds(AckEntry, u32, seq, st.binary(max_size=128), seq, seq), max_size=64).map(tuple),
    ),
    st.builds(Hello, ids, ids, u8, st.lists(st.builds(StreamState, u32, seq, st.integers(-1, MAX_SEQ)), max_size=64).map(tuple)),
    st.builds(Solicit, ids, ids, st.integers(0, 2), u32),
    st.builds(Offer, ids, ids, u8, u16, u16, u32, st.lists(addr, max_size=32).map(tuple)),
    st.builds(Bind, ids, ids, st.integers(0, 2), st.integers(0, 2), st.lists(st.tuples(u32, seq), max_size=64).map(tuple)),
    st.builds(Accept, ids, ids, u8, st.lists(st.tuples(u32, seq, seq), max_size=64).map(tuple)),
    st.builds(Reject, ids, ids, u8),
    st.builds(Leave, ids, ids),
    st.builds(Prune, ids, ids, u8),
    st.builds(Skip, ids, ids, u32, seq),
)


@given(packets)
def test_round_trip(packet: Packet) -> None:
    assert decode_untrusted(packet.encode()) == packet


@given(st.binary(max_size=3000))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        decode_untrusted(data)


@settings(max_examples=300)
@given(packets, st.data())
def test_mutated_packets_only_raise_malformed(packet: Packet, data: st.DataObject) -> None:
    raw = bytearray(packet.encode())
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    with contextlib.suppress(MalformedPacket):
        decode_untrusted(bytes(raw))


# Values that look right to CBOR but break one rule each.
@given(st.sampled_from([
    [1, 1, b"x" * 8, 1, -1, 0, b""],            # negative sequence
    [1, 1, b"x" * 7, 1, 1, 0, b""],             # short session
    [2, 1, b"x" * 8, 1, 1, 0, b""],             # wrong version
    [1, 99, b"x" * 8],                          # unknown type
    [1, 1, b"x" * 8, 1, 1, 0, "text"],          # payload not bytes
    [1, 1, b"x" * 8, 1, 1, 256, b""],           # flags out of range
    [1, 1, b"x" * 8, 1, True, 0, b""],          # bool is not an int
    [1, 2, b"x" * 8, b"n" * 8, 0, 1, [[1, 2, b"", 3]]],  # ack entry too short
    [1, 3, b"x" * 8, b"n" * 8, 0, [[1, 1, -2]]],         # end below -1
    [1, 6, b"x" * 8, b"n" * 8, 0, 0, [[1, 2]] * 65],     # too many streams
]))
def test_each_rule_is_enforced(values: list[object]) -> None:
    try:
        decode_untrusted(cbor2.dumps(values))
    except MalformedPacket:
        return
    raise AssertionError(f"accepted {values!r}")


def test_oversized_datagram_refused() -> None:
    try:
        decode_untrusted(b"\x80" + bytes(70000))
    except MalformedPacket as exc:
        assert "exceeds" in str(exc)
    else:
        raise AssertionError("oversized datagram accepted")
