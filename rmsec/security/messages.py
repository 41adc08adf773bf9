"""Control messages between members and the controller (inside TLS), and their framing.

Every message is a CBOR array ``[1, type, field...]`` (positions, no names, as on the data
plane) carried in a frame ``length (u32, big-endian) || message`` on the TLS stream.  Each
message class lists a check per field; :func:`decode_untrusted` is the one door for bytes from
the peer and raises only :class:`MalformedPacket`.

=====  ===================  =========================================================  =========
type   name                 fields after the type                                      from
=====  ===================  =========================================================  =========
16     REGISTER             member_id, roles, token/null, node_id (8), addr/null        member
17     ADD_SENDER           sender_id (8), stream u32, params, addr/null                member
18     MATERIAL             sender_id, [[member_id, material]...], request_time,        member
                           sender_time
19     RECOVER              have_epoch                                                  member
20     LEAVE                --                                                          member
21     REMOVE_SENDER        sender_id                                                   member
22     PLACE                region name (sent before REGISTER: the region to join)      member
23     TIME_REQUEST         request id u32                                              member
32     WELCOME              see :class:`Welcome`                                        ctl
33     DENIED               reason                                                      ctl
34     SENDER_INFO          sender_id, owner member id, stream, params, material,       ctl
                           clock [offset, error, at]/null
35     SENDER_GONE          sender_id                                                   ctl
36     MATERIAL_REQUEST     sender_id, [member_id...], time                             ctl
37     RECOVERY             signed rekey envelope (kind RECOVERY)                       ctl
38     EXPELLED             reason                                                      ctl
39     SENDER_RESULT        sender_id, ok, reason                                       ctl
40     TIME                 request id u32, time, [[sender_id, [offset, error, at]]...]  ctl
                           (at most MAX_CLOCKS; more in further TIMEs, same id and time)
=====  ===================  =========================================================  =========

Times (``time``, ``request_time``, ``sender_time``, ``at``) are readings of the sender's own
monotonic clock, finite numbers in ``[-1e12, 1e12]``; they serve loose time synchronisation
(:mod:`rmsec.security.clocks`).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, ClassVar

from rmsec.errors import MalformedPacket
from rmsec.security.untrusted import finite_float, loads_array, nullable, options_map
from rmsec.wire.codec import (
    Check,
    array,
    byte_string,
    check_fields,
    dumps,
    int_range,
    record,
    text,
    uint,
)

VERSION = 1
MAX_MEMBER_ID = 255
MAX_PARAMS = 64 * 1024
MAX_MATERIAL = 64 * 1024
MAX_SENDERS = 4096
MAX_BOOTSTRAP = 64
MAX_REASON = 512
#: Largest control message after admission; before it, :data:`MAX_UNREGISTERED`.
MAX_MESSAGE = 16 * 1024 * 1024
MAX_UNREGISTERED = 64 * 1024
MAX_BATCH = 1024
#: Sender clock bounds in one TIME; a controller with more senders sends several TIMEs.
MAX_CLOCKS = 1024

_u8, _u32 = uint(8), uint(32)
_member = byte_string(max_len=MAX_MEMBER_ID)
_sender = byte_string(max_len=8, exact=8)
_addr = record(text(max_len=255), uint(16))
_epoch = int_range(0, (1 << 32) - 1)
_reason = text(max_len=MAX_REASON)
_name = text(max_len=64)
#: a clock reading (any party's monotonic clock), and a clock offset
_time = finite_float(low=-1e12, high=1e12)
#: a bound on a sender's clock: [offset, error, at] (see rmsec.security.clocks)
_clock = record(_time, finite_float(low=0.0, high=1e12), _time)


class Roles:
    RECEIVE = 0x01
    SEND = 0x02
    HEAD = 0x04
    #: A head hosting its region's key manager (``regions``: the scheme names the head).
    MANAGER = 0x08
    ALL = RECEIVE | SEND | HEAD | MANAGER


Addr = tuple[str, int]


def _addr_out(addr: Addr | None) -> list[Any] | None:
    return None if addr is None else [addr[0], addr[1]]


@dataclasses.dataclass(frozen=True, slots=True)
class ControlMessage:
    TYPE: ClassVar[int] = 0
    FIELDS: ClassVar[tuple[Check, ...]] = ()

    def values(self) -> list[Any]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def encode(self) -> bytes:
        return dumps([VERSION, self.TYPE, *self.values()])

    @classmethod
    def from_values(cls, values: list[Any]) -> ControlMessage:
        return cls(*values)


@dataclasses.dataclass(frozen=True, slots=True)
class Register(ControlMessage):
    TYPE = 16
    FIELDS = (_member, int_range(1, Roles.ALL), nullable(byte_string(max_len=8192)), _sender,
              nullable(_addr))
    member_id: bytes
    roles: int
    token: bytes | None
    node_id: bytes
    addr: Addr | None

    def values(self) -> list[Any]:
        return [self.member_id, self.roles, self.token, self.node_id, _addr_out(self.addr)]


@dataclasses.dataclass(frozen=True, slots=True)
class AddSender(ControlMessage):
    TYPE = 17
    FIELDS = (_sender, _u32, byte_string(max_len=MAX_PARAMS), nullable(_addr))
    sender_id: bytes
    stream: int
    params: bytes
    addr: Addr | None

    def values(self) -> list[Any]:
        return [self.sender_id, self.stream, self.params, _addr_out(self.addr)]


@dataclasses.dataclass(frozen=True, slots=True)
class Material(ControlMessage):
    TYPE = 18
    FIELDS = (_sender, array(record(_member, byte_string(max_len=MAX_MATERIAL)), max_len=MAX_BATCH),
              _time, _time)
    sender_id: bytes
    items: tuple[tuple[bytes, bytes], ...]
    #: the ``time`` of the MATERIAL_REQUEST answered, echoed
    request_time: float = 0.0
    #: the sender's clock when it answered (the controller bounds it by the round trip)
    sender_time: float = 0.0

    def values(self) -> list[Any]:
        return [self.sender_id, [[m, v] for m, v in self.items], self.request_time,
                self.sender_time]


@dataclasses.dataclass(frozen=True, slots=True)
class Recover(ControlMessage):
    TYPE = 19
    FIELDS = (_epoch,)
    have_epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class Leave(ControlMessage):
    TYPE = 20


@dataclasses.dataclass(frozen=True, slots=True)
class RemoveSender(ControlMessage):
    TYPE = 21
    FIELDS = (_sender,)
    sender_id: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Place(ControlMessage):
    """The region a member joins (the region of the repair head it binds under), sent just
    before REGISTER; only key-management schemes with regions accept it."""

    TYPE = 22
    FIELDS = (_name,)
    region: str


@dataclasses.dataclass(frozen=True, slots=True)
class TimeRequest(ControlMessage):
    """Ask for the controller's clock (loose time synchronisation, answered by TIME)."""

    TYPE = 23
    FIELDS = (_u32,)
    request: int


@dataclasses.dataclass(frozen=True, slots=True)
class SenderInfo(ControlMessage):
    """Everything a member needs to verify one sender: who registered it, its stream, its
    public source-auth parameters and this member's secret material for it."""

    TYPE = 34
    FIELDS = (_sender, _member, _u32, byte_string(max_len=MAX_PARAMS),
              byte_string(max_len=MAX_MATERIAL), nullable(_clock))
    sender_id: bytes
    owner: bytes
    stream: int
    params: bytes
    material: bytes
    #: the controller's bound on the sender's clock, controller time: (offset, error, at)
    clock: tuple[float, float, float] | None = None


_sender_info = record(*SenderInfo.FIELDS)


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome(ControlMessage):
    """The reply to an admitted registration (DESIGN.md §4): key material, epoch, controller
    key, source-auth parameters and material, transport bootstrap."""

    TYPE = 32
    FIELDS = (
        _member, _epoch, byte_string(max_len=MAX_MESSAGE // 2), byte_string(max_len=32, exact=32),
        _name, _name, options_map, _name, byte_string(max_len=8, exact=8), _u32,
        array(_addr, max_len=MAX_BOOTSTRAP), finite_float(low=0.0, high=86400.0),
        nullable(finite_float(low=0.0, high=1e12)), array(_sender_info, max_len=MAX_SENDERS),
        nullable(_addr),
    )
    member_id: bytes
    epoch: int
    key_material: bytes  # the KeyManagement scheme's welcome for this member
    controller_key: bytes
    key_management: str
    source_auth: str
    source_auth_options: dict[str, Any]
    aead: str
    session: bytes
    rekey_stream: int
    bootstrap: tuple[Addr, ...]
    grace: float
    valid_until: float | None  # wall-clock expiry the access policy set, if any
    senders: tuple[SenderInfo, ...]
    multicast: Addr | None

    def values(self) -> list[Any]:
        return [
            self.member_id, self.epoch, self.key_material, self.controller_key,
            self.key_management, self.source_auth, dict(self.source_auth_options), self.aead,
            self.session, self.rekey_stream, [list(a) for a in self.bootstrap], self.grace,
            self.valid_until, [s.values() for s in self.senders], _addr_out(self.multicast),
        ]

    @classmethod
    def from_values(cls, values: list[Any]) -> ControlMessage:
        values = list(values)
        values[10] = tuple(tuple(a) for a in values[10])
        values[13] = tuple(SenderInfo(*s) for s in values[13])
        return cls(*values)


@dataclasses.dataclass(frozen=True, slots=True)
class Denied(ControlMessage):
    TYPE = 33
    FIELDS = (_reason,)
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class SenderGone(ControlMessage):
    TYPE = 35
    FIELDS = (_sender,)
    sender_id: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class MaterialRequest(ControlMessage):
    TYPE = 36
    FIELDS = (_sender, array(_member, max_len=MAX_BATCH), _time)
    sender_id: bytes
    members: tuple[bytes, ...]
    #: the controller's clock when it asked (echoed in MATERIAL)
    time: float = 0.0

    def values(self) -> list[Any]:
        return [self.sender_id, list(self.members), self.time]


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery(ControlMessage):
    TYPE = 37
    FIELDS = (byte_string(max_len=MAX_MESSAGE - 64),)
    envelope: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Expelled(ControlMessage):
    TYPE = 38
    FIELDS = (_reason,)
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class SenderResult(ControlMessage):
    TYPE = 39
    FIELDS = (_sender, int_range(0, 1), _reason)
    sender_id: bytes
    ok: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Time(ControlMessage):
    """The controller's clock, answering TIME_REQUEST ``request`` at once, with its latest
    bound on each sender's clock (controller time) so the member can recompose them all:
    ``clocks`` is ``((sender_id, (offset, error, at)), ...)``, distinct sender ids."""

    TYPE = 40
    FIELDS = (_u32, _time, array(record(_sender, _clock), max_len=MAX_CLOCKS))
    request: int
    time: float
    clocks: tuple[tuple[bytes, tuple[float, float, float]], ...] = ()

    def values(self) -> list[Any]:
        return [self.request, self.time, [[s, list(c)] for s, c in self.clocks]]

    @classmethod
    def from_values(cls, values: list[Any]) -> ControlMessage:
        clocks = values[2]
        if len({sender for sender, _ in clocks}) != len(clocks):
            raise MalformedPacket("TIME names a sender twice")
        return cls(values[0], values[1], clocks)


MESSAGES: dict[int, type[ControlMessage]] = {
    cls.TYPE: cls
    for cls in (Register, AddSender, Material, Recover, Leave, RemoveSender, Welcome, Denied,
                SenderInfo, SenderGone, MaterialRequest, Recovery, Expelled, SenderResult, Place,
                TimeRequest, Time)
}


def _fix_addr(cls: type[ControlMessage], values: list[Any]) -> list[Any]:
    if cls in (Register, AddSender):
        index = 4 if cls is Register else 3
        if values[index] is not None:
            values[index] = tuple(values[index])
    return values


def decode_untrusted(data: bytes, *, max_len: int = MAX_MESSAGE) -> ControlMessage:
    """One control message from the peer; only :class:`MalformedPacket`."""
    values = loads_array(data, max_len=max_len, what="control message")
    if len(values) < 2 or values[0] != VERSION or type(values[0]) is not int:
        raise MalformedPacket("unknown control message version")
    kind = values[1]
    cls = MESSAGES.get(kind) if type(kind) is int else None
    if cls is None:
        raise MalformedPacket("unknown control message type")
    checked = check_fields(values[2:], cls.FIELDS)
    return cls.from_values(_fix_addr(cls, checked))


# ----------------------------------------------------------------------------------- framing

_LENGTH = struct.Struct(">I")
LENGTH_LEN = _LENGTH.size


def frame(message: bytes) -> bytes:
    """``length || message`` for a stream transport."""
    return _LENGTH.pack(len(message)) + message


class FrameDecoder:
    """Splits a byte stream into messages, refusing any frame above ``max_len`` *before*
    buffering it, so a peer cannot make the controller hold more than one bounded frame."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= LENGTH_LEN:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self.max_len:
                raise MalformedPacket(f"frame of {length} bytes exceeds {self.max_len}")
            if len(self._buffer) < LENGTH_LEN + length:
                break
            out.append(bytes(self._buffer[LENGTH_LEN : LENGTH_LEN + length]))
            del self._buffer[: LENGTH_LEN + length]
        if len(self._buffer) > self.max_len + LENGTH_LEN:
            raise MalformedPacket("frame buffer overflow")
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)
