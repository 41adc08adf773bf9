"""Control messages: every type round-trips, framing is bounded, garbage is only malformed."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmsec.errors import MalformedPacket
from rmsec.security import messages as msg

INFO = msg.SenderInfo(b"sender01", b"alice", 7, b"params", b"material")
EXAMPLES: list[msg.ControlMessage] = [
    msg.Register(b"alice", msg.Roles.RECEIVE | msg.Roles.SEND, None, b"node0001", ("127.0.0.1", 9)),
    msg.Register(b"bob", msg.Roles.HEAD, b"token", b"node0002", None),
    msg.AddSender(b"sender01", 7, b"params", ("::1", 5)),
    msg.Material(b"sender01", ((b"bob", b"m1"), (b"carol", b""))),
    msg.Recover(3),
    msg.Leave(),
    msg.RemoveSender(b"sender01"),
    msg.Welcome(b"alice", 4, b"keys", b"k" * 32, "flat", "ed25519", {"mac_len": 16, "x": [1.5, "y"]},
                "aes-128-gcm", b"s" * 8, 99, (("127.0.0.1", 4000),), 2.0, None, (INFO,),
                ("239.1.2.3", 40000)),
    msg.Denied("not on the allow list"),
    INFO,
    msg.SenderGone(b"sender01"),
    msg.MaterialRequest(b"sender01", (b"bob", b"carol")),
    msg.Recovery(b"envelope"),
    msg.Expelled("certificate revoked"),
    msg.SenderResult(b"sender01", 1, ""),
    # loose time synchronisation (rmsec.security.clocks)
    msg.TimeRequest(7),
    msg.Time(7, 12345.25),
    msg.Material(b"sender01", (), -3.5, 99.0),
    msg.MaterialRequest(b"sender01", (), 17.5),
    msg.SenderInfo(b"sender01", b"alice", 7, b"params", b"", (-1000.0, 0.25, 17.5)),
]


@pytest.mark.parametrize("fields", [
    [b"sender01", b"alice", 7, b"p", b"", [1.0, -0.5, 2.0]],  # negative error
    [b"sender01", b"alice", 7, b"p", b"", [1.0, 0.5]],  # short clock
    [b"sender01", b"alice", 7, b"p", b"", [float("nan"), 0.5, 2.0]],
    [b"sender01", b"alice", 7, b"p", b""],  # clock field missing
])
def test_sender_info_clock_is_checked(fields: list[object]) -> None:
    import cbor2

    with pytest.raises(MalformedPacket):
        msg.decode_untrusted(cbor2.dumps([msg.VERSION, msg.SenderInfo.TYPE, *fields]))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: msg.ControlMessage) -> None:
    assert msg.decode_untrusted(message.encode()) == message


def test_size_limit_before_registration() -> None:
    big = msg.AddSender(b"sender01", 1, b"p" * 60_000, None).encode()
    msg.decode_untrusted(big)
    with pytest.raises(MalformedPacket):
        msg.decode_untrusted(big + b"", max_len=1000)


def test_frame_decoder_refuses_oversized_frames_before_buffering() -> None:
    decoder = msg.FrameDecoder(100)
    assert decoder.feed(msg.frame(b"a" * 10) + msg.frame(b"b" * 5)[:3]) == [b"a" * 10]
    assert decoder.feed(msg.frame(b"b" * 5)[3:]) == [b"b" * 5]
    with pytest.raises(MalformedPacket):
        decoder.feed((10_000_000).to_bytes(4, "big"))


@pytest.mark.parametrize("junk", [b"", b"\x82\x01\x63", b"\x83\x02\x10\x00", b"\x82\x01\x10",
                                  msg.Recover(3).encode()[:-1] + b"\x1b"])
def test_garbage(junk: bytes) -> None:
    with pytest.raises(MalformedPacket):
        msg.decode_untrusted(junk)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.sampled_from([m.encode() for m in EXAMPLES]).flatmap(
    lambda b: st.integers(0, len(b) - 1).map(lambda i: b[:i] + bytes([b[i] ^ 0x41]) + b[i + 1 :])))
def test_fuzz_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        msg.decode_untrusted(data)


# --------------------------------------------------- TIME with sender clock bounds (refresh)

def test_time_with_clocks_round_trips() -> None:
    clocks = tuple((bytes([k]) * 8, (float(k), 0.5, 17.0 + k)) for k in range(3))
    message = msg.Time(7, 12.5, clocks)
    assert msg.decode_untrusted(message.encode()) == message
    full = msg.Time(1, 0.0, tuple((k.to_bytes(8, "big"), (0.0, 0.0, 0.0))
                                  for k in range(msg.MAX_CLOCKS)))
    assert msg.decode_untrusted(full.encode()) == full


@pytest.mark.parametrize("fields", [
    [7, 1.0],  # clocks missing
    [7, 1.0, [], []],  # a field too many
    [7, 1.0, None],
    [7, 1.0, [[b"sender0", [0.0, 0.0, 0.0]]]],  # 7-byte sender id
    [7, 1.0, [[b"sender01", [0.0, -1.0, 0.0]]]],  # negative error
    [7, 1.0, [[b"sender01", [0.0, 0.0]]]],  # short clock
    [7, 1.0, [[b"sender01", [0.0, 0.0, float("inf")]]]],
    [7, 1.0, [[b"sender01", [2e12, 0.0, 0.0]]]],  # offset out of range
    [7, 1.0, [[b"sender01", None]]],
    [7, 1.0, [[b"sender01", [0.0, 0.0, 0.0], 1]]],  # 3-item entry
    [7, 1.0, [[b"sender01", [0.0, 0.0, 0.0]], [b"sender01", [1.0, 0.0, 0.0]]]],  # twice
    [7, 1.0, [[k.to_bytes(8, "big"), [0.0, 0.0, 0.0]] for k in range(msg.MAX_CLOCKS + 1)]],
    [-1, 1.0, []],
    [7, "1.0", []],
])
def test_time_clocks_are_checked(fields: list[object]) -> None:
    import cbor2

    with pytest.raises(MalformedPacket):
        msg.decode_untrusted(cbor2.dumps([msg.VERSION, msg.Time.TYPE, *fields]))


@pytest.mark.parametrize("fields", [
    [b"sender01", [], 1e13],  # MATERIAL_REQUEST time out of range
    [b"sender01", [], float("nan")],
    [b"sender01", []],  # time missing
    [b"sender01", [b"bob"], 1.0, 2.0],
])
def test_material_request_time_is_checked(fields: list[object]) -> None:
    import cbor2

    with pytest.raises(MalformedPacket):
        msg.decode_untrusted(cbor2.dumps([msg.VERSION, msg.MaterialRequest.TYPE, *fields]))
