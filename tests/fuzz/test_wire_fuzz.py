"""Wire codec properties: every packet round-trips; hostile bytes only raise MalformedPacket."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
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


# ---------------------------------------------------------------------- DATA fast path, cache


def _strict(data: bytes) -> tuple[str, object]:
    """The generic decoder alone (cbor2 + a check per field), as the reference."""
    from rmsec.wire import packets as wire_packets

    fast = wire_packets._data_fast
    wire_packets._data_fast = lambda _data: None  # type: ignore[assignment]
    try:
        return _fast(data)
    finally:
        wire_packets._data_fast = fast


def _fast(data: bytes) -> tuple[str, object]:
    from rmsec.wire import packets as wire_packets

    try:
        packet = wire_packets._decode(data)
    except MalformedPacket:
        return "bad", None
    return ("ok", packet) if isinstance(packet, Data) else ("other", packet)


@settings(max_examples=300, deadline=None)
@given(st.builds(Data, ids, u32, seq, u8, st.binary(max_size=2000)), st.data())
def test_data_fast_path_agrees_with_the_strict_decoder(packet: Data, data: st.DataObject) -> None:
    raw = packet.encode()
    assert _fast(raw) == _strict(raw) == ("ok", packet)
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(raw) - 1))] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(mutated), raw[:cut], raw + b"\x00"):
        assert _fast(candidate) == _strict(candidate)


def test_non_canonical_data_encodings_decode_alike() -> None:
    session = b"sessionX"
    # stream 5 as 0x18 0x05, seq 5 as 0x19 0x0005, flags 1 as 0x18 0x01, payload with 0x58 length
    raw = bytes([0x87, 1, 1, 0x48]) + session + bytes([0x18, 5, 0x19, 0, 5, 0x18, 1, 0x58, 2]) + b"ab"
    assert _fast(raw) == _strict(raw) == ("ok", Data(session, 5, 5, 1, b"ab"))


@settings(max_examples=100, deadline=None)
@given(st.builds(Data, ids, u32, seq, u8, st.binary(max_size=300)), st.sampled_from([0x04, 0x08, 0x10, 0x80]))
def test_data_with_flags_sets_only_the_flag(packet: Data, extra: int) -> None:
    from rmsec.wire.packets import data_with_flags

    out = decode_untrusted(data_with_flags(packet.encode(), extra))
    assert out == Data(packet.session, packet.stream, packet.seq, packet.flags | extra, packet.payload)


def test_decode_cache_shares_packets_of_one_bytes_object_only() -> None:
    raw = Ack(b"sessionX", b"node0001", 0, 3, (AckEntry(1, 2, b"\x01", 2, 9),)).encode()
    first = decode_untrusted(raw)
    assert decode_untrusted(raw) is first  # the same object: decoded once
    assert decode_untrusted(bytes(bytearray(raw))) == first  # equal bytes, another object
    mutable = bytearray(raw)
    assert decode_untrusted(mutable) == first
    mutable[-1] = 10  # next_known 9 -> 10; a mutable buffer is never served from the cache
    assert decode_untrusted(mutable) != first


@given(packets, st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_refused(packet: Packet, trailer: bytes) -> None:
    """One packet has one encoding up to its end: bytes after the CBOR array are refused
    (by the DATA fast path and by the strict decoder alike)."""
    with pytest.raises(MalformedPacket):
        decode_untrusted(packet.encode() + trailer)


def test_security_parsers_refuse_trailing_bytes() -> None:
    from rmsec.security.untrusted import loads_array
    from rmsec.wire.codec import parse_single

    assert loads_array(cbor2.dumps([1, b"x"]), max_len=100, what="message") == [1, b"x"]
    with pytest.raises(MalformedPacket, match="1 bytes after"):
        loads_array(cbor2.dumps([1, b"x"]) + b"\x00", max_len=100, what="message")
    with pytest.raises(MalformedPacket, match="not a CBOR map"):
        parse_single(cbor2.dumps([1]), "announcement", major=5)
    with pytest.raises(MalformedPacket, match="after"):
        parse_single(cbor2.dumps({1: 2}) + b"\xa0", "announcement", major=5)
