"""The unsigned announcement: round trip and strict decoding of untrusted bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rmsec.io
from rmsec.announcement import Announcement
from rmsec.errors import MalformedPacket
from rmsec.io.base import NetworkInfo
from rmsec.transport.config import TransportConfig

SAMPLE = Announcement(
    session=b"S" * 8,
    root=("127.0.0.1", 4000),
    heads=(("127.0.0.1", 4001), ("10.0.0.2", 4002)),
    config=TransportConfig(max_children=7, slow_receiver="block", hello_interval=0.5),
    network=NetworkInfo("ip_multicast", "239.1.2.3", 5000),
)


def test_round_trip() -> None:
    data = SAMPLE.encode()
    assert Announcement.decode_untrusted(data) == SAMPLE
    assert SAMPLE.bootstrap == (("127.0.0.1", 4000), ("127.0.0.1", 4001), ("10.0.0.2", 4002))


def test_integer_keys_and_canonical_encoding() -> None:
    decoded = cbor2.loads(SAMPLE.encode())
    assert sorted(decoded) == [1, 2, 3, 4, 5, 6]
    assert SAMPLE.encode() == SAMPLE.encode()


def _mutate(**changes: object) -> bytes:
    value = SAMPLE.to_mapping()
    for key, item in changes.items():
        index = int(key[1:])
        if item is None:
            del value[index]
        else:
            value[index] = item
    return bytes(cbor2.dumps(value))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",  # an array, not a map
        b"\xa1\x01",  # truncated
        b"\xa0" + b"\x00" * 20000,  # too long
        _mutate(k1=2),  # unknown version
        _mutate(k1=True),
        _mutate(k2=b"short"),
        _mutate(k2="text-not-bytes"),
        _mutate(k3=["127.0.0.1"]),
        _mutate(k3=["127.0.0.1", 70000]),
        _mutate(k3=["", 1]),
        _mutate(k4=[["h", 1]] * 65),
        _mutate(k5={"mtu": 10}),  # out of range: TransportConfig refuses
        _mutate(k5={"mtu": 1400.0}),  # wrong type
        _mutate(k5={"no_such_option": 1}),
        _mutate(k5={"hello_interval": float("nan")}),
        _mutate(k5={"multicast": 1}),  # int is not bool
        _mutate(k5=[1, 2]),
        _mutate(k6=["carrier-pigeon", None, None]),
        _mutate(k6=["ip_multicast", None, 5000]),
        _mutate(k6=["udp", "239.1.1.1", None]),
        _mutate(k6=None),  # missing key
        bytes(cbor2.dumps({**SAMPLE.to_mapping(), 7: 1})),  # unknown key
        bytes(cbor2.dumps({1: cbor2.CBORTag(1, 0)})),
    ],
)
def test_bad_input_raises_malformed_packet(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        Announcement.decode_untrusted(data)


def test_int_accepted_for_float_option() -> None:
    ann = Announcement.decode_untrusted(_mutate(k5={"hello_interval": 2}))
    assert ann.config.hello_interval == 2.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_malformed_packet(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        Announcement.decode_untrusted(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bit_flips_of_a_valid_announcement(data: st.DataObject) -> None:
    raw = bytearray(SAMPLE.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(MalformedPacket):
        Announcement.decode_untrusted(bytes(raw))


def test_the_announcement_names_the_multicast_group_network_keeps_local_options() -> None:
    from rmsec.api import _network_for
    from rmsec.io.multicast import IpMulticastNetwork

    ann = dataclasses.replace(
        SAMPLE, network=NetworkInfo("ip_multicast", "239.1.2.3", 40001),
        config=TransportConfig(multicast=True),
    )
    mine = rmsec.io.ip_multicast("239.255.0.1", 45000, interface="127.0.0.1", loss=0.1, seed=4)
    chosen = _network_for(ann, mine, None)
    assert isinstance(chosen, IpMulticastNetwork)
    assert chosen.info == NetworkInfo("ip_multicast", "239.1.2.3", 40001)
    assert (chosen.interface, chosen.loss, chosen.seed) == ("127.0.0.1", 0.1, 4)
    same = dataclasses.replace(ann, network=mine.info)
    assert _network_for(same, mine, None) is mine
