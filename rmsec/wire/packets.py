"""Every transport packet as a small frozen dataclass with ``encode`` and strict decoding.

A datagram is a CBOR array ``[WIRE_VERSION, type, session, field...]``; the dataclass fields
after ``session`` are the wire positions in order.  :func:`decode_untrusted` is the single
door for bytes from the network: it checks the version, the type and every field, and raises
only :class:`~rmsec.errors.MalformedPacket`.

Sequence numbers are per stream and never wrap (u64).  Bitmaps in acknowledgements are byte
strings: bit ``i`` (little-endian, bit 0 of byte 0 first) stands for ``base + 1 + i``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from rmsec.errors import MalformedPacket
from rmsec.wire.codec import (
    MAX_DATAGRAM,
    WIRE_VERSION,
    Check,
    array,
    byte_string,
    check_fields,
    dumps,
    int_range,
    loads_untrusted,
    record,
    text,
    uint,
)

SESSION_ID_LEN = 8
NODE_ID_LEN = 8
#: Most streams one acknowledgement or hello may describe.
MAX_STREAMS = 64
#: Longest selective-acknowledgement bitmap, in bytes (1024 packets beyond the base).
MAX_BITMAP = 128
MAX_REFERRALS = 32
MAX_SEQ = (1 << 63) - 1

Addr = tuple[str, int]

_session = byte_string(max_len=SESSION_ID_LEN, exact=SESSION_ID_LEN)
_node_id = byte_string(max_len=NODE_ID_LEN, exact=NODE_ID_LEN)
_u8, _u16, _u32 = uint(8), uint(16), uint(32)
_seq = int_range(0, MAX_SEQ)
_addr = record(text(max_len=255), _u16)


class Role:
    """What a binding member will be in the tree."""

    RECEIVER = 0
    HEAD = 1
    SENDER = 2


class JoinPolicy:
    """Where a late joiner's delivery starts (DESIGN.md §3)."""

    FROM_NOW = 0
    FROM_CACHE = 1
    FROM_START = 2

    NAMES: ClassVar[dict[str, int]] = {"from_now": 0, "from_cache": 1, "from_start": 2}


class DataFlags:
    FIRST = 0x01  # first fragment of a message
    LAST = 0x02  # last fragment of a message
    REPAIR = 0x04  # a retransmission (from a head's cache or the source)
    END = 0x08  # last packet of the stream


class AckFlags:
    CONGESTED = 0x01  # somewhere in this subtree sees congestion
    COMPLETE = 0x02  # informational: every stream with an end is fully held


class Reason:
    """Why a bind was refused or a child removed."""

    FULL = 1
    WRONG_SESSION = 2
    SLOW = 3
    SILENT = 4
    LEAVING = 5
    NO_DATA = 6


@dataclasses.dataclass(frozen=True, slots=True)
class Packet:
    TYPE: ClassVar[int] = 0
    FIELDS: ClassVar[tuple[Check, ...]] = ()

    session: bytes

    def encode(self) -> bytes:
        values: list[Any] = [WIRE_VERSION, self.TYPE]
        values.extend(getattr(self, f.name) for f in dataclasses.fields(self))
        return dumps(values)


@dataclasses.dataclass(frozen=True, slots=True)
class Data(Packet):
    """One fragment of an application message on ``stream``."""

    TYPE = 1
    FIELDS = (_u32, _seq, _u8, byte_string(max_len=65000))
    stream: int
    seq: int
    flags: int
    payload: bytes

    def encode(self) -> bytes:  # hot path: skip dataclasses.fields
        return dumps([WIRE_VERSION, 1, self.session, self.stream, self.seq, self.flags, self.payload])


@dataclasses.dataclass(frozen=True, slots=True)
class AckEntry:
    """What one node holds (``have_base`` + bitmap), what its whole subtree holds
    (``subtree_base``), and how far it knows the stream extends (``next_known``): the node
    asks for every packet in ``[have_base, next_known)`` that the bitmap does not mark."""

    stream: int
    have_base: int
    bitmap: bytes
    subtree_base: int
    next_known: int


_ack_entry = record(_u32, _seq, byte_string(max_len=MAX_BITMAP), _seq, _seq)


@dataclasses.dataclass(frozen=True, slots=True)
class Ack(Packet):
    TYPE = 2
    FIELDS = (_node_id, _u8, _u32, array(_ack_entry, max_len=MAX_STREAMS))
    node_id: bytes
    flags: int
    members: int
    entries: tuple[AckEntry, ...]

    def encode(self) -> bytes:
        entries = [
            [e.stream, e.have_base, e.bitmap, e.subtree_base, e.next_known] for e in self.entries
        ]
        return dumps([WIRE_VERSION, 2, self.session, self.node_id, self.flags, self.members, entries])


@dataclasses.dataclass(frozen=True, slots=True)
class StreamState:
    """In a hello: ``next_seq`` packets are known to exist; ``end`` is the stream length or -1."""

    stream: int
    next_seq: int
    end: int


_stream_state = record(_u32, _seq, int_range(-1, MAX_SEQ))


@dataclasses.dataclass(frozen=True, slots=True)
class Hello(Packet):
    TYPE = 3
    FIELDS = (_node_id, _u8, array(_stream_state, max_len=MAX_STREAMS))
    node_id: bytes
    level: int
    streams: tuple[StreamState, ...]

    def encode(self) -> bytes:
        streams = [[s.stream, s.next_seq, s.end] for s in self.streams]
        return dumps([WIRE_VERSION, 3, self.session, self.node_id, self.level, streams])


@dataclasses.dataclass(frozen=True, slots=True)
class Solicit(Packet):
    TYPE = 4
    FIELDS = (_node_id, int_range(0, 2), _u32)
    node_id: bytes
    role: int
    nonce: int


@dataclasses.dataclass(frozen=True, slots=True)
class Offer(Packet):
    """Answer to a solicitation (``nonce`` echoed) or an unsolicited advertisement (nonce 0)."""

    TYPE = 5
    FIELDS = (_node_id, _u8, _u16, _u16, _u32, array(_addr, max_len=MAX_REFERRALS))
    node_id: bytes
    level: int
    free: int
    load: int
    nonce: int
    referrals: tuple[Addr, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Bind(Packet):
    TYPE = 6
    FIELDS = (
        _node_id,
        int_range(0, 2),
        int_range(0, 2),
        array(record(_u32, _seq), max_len=MAX_STREAMS),
    )
    node_id: bytes
    role: int
    policy: int
    resume: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Accept(Packet):
    """Bind accepted; per stream ``(stream, start, next_known)``: where the child's delivery
    starts and how far the stream is known to extend, so it can ask for repairs at once."""

    TYPE = 7
    FIELDS = (_node_id, _u8, array(record(_u32, _seq, _seq), max_len=MAX_STREAMS))
    node_id: bytes
    level: int
    starts: tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Reject(Packet):
    TYPE = 8
    FIELDS = (_node_id, _u8)
    node_id: bytes
    reason: int


@dataclasses.dataclass(frozen=True, slots=True)
class Leave(Packet):
    TYPE = 9
    FIELDS = (_node_id,)
    node_id: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Prune(Packet):
    """Parent to child: you are no longer in the tree, for ``reason``."""

    TYPE = 10
    FIELDS = (_node_id, _u8)
    node_id: bytes
    reason: int


@dataclasses.dataclass(frozen=True, slots=True)
class Skip(Packet):
    """Parent to child (``skip`` policy): packets below ``new_base`` are gone for good."""

    TYPE = 11
    FIELDS = (_node_id, _u32, _seq)
    node_id: bytes
    stream: int
    new_base: int


PACKET_TYPES: dict[int, type[Packet]] = {
    cls.TYPE: cls for cls in (Data, Ack, Hello, Solicit, Offer, Bind, Accept, Reject, Leave, Prune, Skip)
}


def decode_untrusted(data: bytes) -> Packet:
    """Decode one datagram from the network, checking every field.

    The same datagram is often decoded many times in one process (the simulator and the
    memory network hand one ``bytes`` object to every member of a group), so the last
    :data:`DECODE_CACHE_SIZE` results are remembered by object identity.  Packets are frozen
    and hold only immutable values, so sharing one between machines is safe; a cache entry
    keeps its ``bytes`` alive, so an identity can never be reused while it is cached.
    Mutable buffers (``bytearray``, ``memoryview``) are never cached.
    """
    if type(data) is not bytes:
        return _decode(data)
    key = id(data)
    hit = _recent.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    packet = _decode(data)
    if len(_recent) >= DECODE_CACHE_SIZE:
        del _recent[next(iter(_recent))]  # the oldest entry (dicts keep insertion order)
    _recent[key] = (data, packet)
    return packet


#: How many recently decoded datagrams :func:`decode_untrusted` remembers.
DECODE_CACHE_SIZE = 512
_recent: dict[int, tuple[bytes, Packet]] = {}
#: The cache itself, ``id(data) -> (data, packet)``, read-only for callers: a receive path
#: that runs once per delivered copy (rmsec.transport.node) checks for a hit inline, which
#: saves a call per datagram; a hit is valid only if ``entry[0] is data``.
DECODED = _recent


def _decode(data: bytes) -> Packet:
    if type(data) is bytes:
        fast = _data_fast(data)
        if fast is not None:
            return fast
    values = loads_untrusted(data)
    if len(values) < 3:
        raise MalformedPacket("packet shorter than its header")
    version, ptype = values[0], values[1]
    if version != WIRE_VERSION or type(version) is not int:
        raise MalformedPacket(f"unsupported wire version {version!r}")
    cls = PACKET_TYPES.get(ptype) if type(ptype) is int else None
    if cls is None:
        raise MalformedPacket(f"unknown packet type {ptype!r}")
    session = _session(values[2])
    fields = check_fields(values[3:], cls.FIELDS)
    if cls is Ack:
        fields[3] = tuple(AckEntry(*e) for e in fields[3])
    elif cls is Hello:
        fields[2] = tuple(StreamState(*s) for s in fields[2])
    return cls(session, *fields)


# ---------------------------------------------------------------------- DATA fast path
#
# DATA is most of the traffic, and the generic path (cbor2 + a check per field) costs several
# microseconds.  ``_data_layout`` reads the one layout ``Data.encode`` produces, byte by byte,
# and answers None for anything else, which then goes through the strict path: the fast path
# accepts a subset of what the strict decoder accepts and yields the same packet for it.

_UINT_WIDTH = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}
_DATA_PREFIX = bytes((0x87, WIRE_VERSION, 1, 0x40 | SESSION_ID_LEN))
_MAX_PAYLOAD = 65000


def _data_layout(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(stream, seq, flags, flags_offset, payload_offset)`` of a canonical DATA datagram."""
    size = len(data)
    if size < 16 or size > MAX_DATAGRAM or not data.startswith(_DATA_PREFIX):
        return None
    values = []
    pos = 12
    for limit in (1 << 32, MAX_SEQ + 1, 256):
        if pos >= size:
            return None
        head = data[pos]
        if head < 0x18:
            value = head
            pos += 1
        else:
            width = _UINT_WIDTH.get(head)
            if width is None or pos + 1 + width > size:
                return None
            value = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
        if value >= limit:
            return None
        values.append(value)
    flags_offset = pos - 1  # the low byte of the flags, whatever their encoding
    if pos >= size:
        return None
    head = data[pos]
    if 0x40 <= head < 0x58:
        length = head - 0x40
        pos += 1
    elif head == 0x58 or head == 0x59:
        width = head - 0x57
        if pos + 1 + width > size:
            return None
        length = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        pos += 1 + width
    else:
        return None
    if length > _MAX_PAYLOAD or pos + length != size:
        return None
    return values[0], values[1], values[2], flags_offset, pos


def _data_fast(data: bytes) -> Data | None:
    layout = _data_layout(data)
    if layout is None:
        return None
    stream, seq, flags, _, payload_at = layout
    return Data(data[4:12], stream, seq, flags, data[payload_at:])


def data_with_flags(raw: bytes, extra: int) -> bytes:
    """``raw`` (an encoded DATA packet) with ``extra`` flag bits set, e.g. REPAIR on a cached
    packet: a one-byte patch when the flags fit the same encoding, else decode and re-encode."""
    layout = _data_layout(raw)
    if layout is not None:
        flags, at = layout[2], layout[3]
        new = flags | extra
        if new == flags:
            return raw
        if new < 0x18:  # fits a one-byte encoding and the low byte of a longer one
            return raw[:at] + bytes((new,)) + raw[at + 1 :]
    packet = decode_untrusted(raw)
    if not isinstance(packet, Data):
        raise MalformedPacket("not a DATA packet")
    return Data(packet.session, packet.stream, packet.seq, packet.flags | extra, packet.payload).encode()
