"""TESLA's byte encodings and the interval schedule (RFC 4082 leaves both open).

Every message is a CBOR array decoded strictly as untrusted input.  Integers are unsigned;
times are CBOR floats in the *sender's* clock; keys are ``key_len`` bytes, tags ``mac_len``.

- trailer (on every data packet):     ``[i, tag, disclosed]`` where ``i`` is the packet's
  interval, ``tag = HMAC-SHA256(F'(K_i), packet)[:mac_len]`` and ``disclosed`` is
  ``K_{i-d}`` (``b""`` while ``i < d``);
- auth packet BOOTSTRAP (type 1):     ``[1, body, signature]``, ``body`` the CBOR bytes of
  ``[sender_id, t0, interval, d, chain_length, key_len, mac_len, chain, k, K_{chain,k}]``,
  signed as ``"rmsec tesla boot v1\\0" || len(sender_id) || sender_id || body``;
- auth packet DISCLOSE (type 2):      ``[2, i, K_i]``;
- sync reply (type 3, point to point): ``[3, nonce, sender_time, signature]`` signed as
  ``"rmsec tesla sync v1\\0" || len(sender_id) || sender_id || nonce || sender_time as
  IEEE 754 binary64 big-endian``;
- params: ``[1, alg, sender_id, public_key, [BOOTSTRAP packet, ...]]``, one to three signed
  anchors: the newest key that may already be public (``K_{x-d}`` for the sender's current
  interval ``x``), the current chain's commitment when that key belongs to an earlier chain,
  and the next chain's commitment once it exists.

Intervals are numbered globally from 0 at ``t0``; interval ``i`` belongs to chain
``c = i // chain_length`` and uses key ``K_{c,k}`` with ``k = i % chain_length + 1``; within
a chain ``K_{c,k-1} = F(K_{c,k})`` and ``K_{c,0}`` is the chain's commitment.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

from rmsec.errors import MalformedPacket
from rmsec.wire.codec import byte_string, check_fields, dumps, int_range, loads_untrusted, uint

VERSION = 1
BOOTSTRAP = 1
DISCLOSE = 2
SYNC = 3
F_DOMAIN = b"rmsec tesla F v1\x00"
MAC_KEY_LABEL = b"rmsec tesla F' v1\x00"
BOOT_DOMAIN = b"rmsec tesla boot v1\x00"
SYNC_DOMAIN = b"rmsec tesla sync v1\x00"
MAX_CHAIN = 1 << 24
MAX_INTERVAL = (1 << 63) - 1

_u64 = uint(64)
_sender_id = byte_string(max_len=64)


def _time(value: Any) -> float:
    if type(value) is not float or not math.isfinite(value):
        raise MalformedPacket("expected a finite float time")
    return value


def _positive_time(value: Any) -> float:
    t = _time(value)
    if not 0 < t <= 3600:
        raise MalformedPacket("interval out of range")
    return t


def time_bytes(t: float) -> bytes:
    return struct.pack(">d", t)


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """The sender's interval schedule: what sender and receivers must agree on."""

    sender_id: bytes
    t0: float
    interval: float
    lag: int  # d: K_i is disclosed from interval i + d on
    chain_length: int
    key_len: int
    mac_len: int

    def interval_at(self, t: float) -> int:
        """The interval the sender's clock reading ``t`` falls in (negative before ``t0``).

        Rounded up by a billionth of an interval so that ``start_of(i)`` always lies in ``i``
        despite floating point: a timer set for an interval's start then finds that interval
        begun (no busy loop), and receivers err, by that billionth, on the safe side.
        """
        return math.floor((t - self.t0) / self.interval + 1e-9)

    def start_of(self, i: int) -> float:
        return self.t0 + i * self.interval

    def chain_of(self, i: int) -> tuple[int, int]:
        """``(chain, k)`` of interval ``i``."""
        c, r = divmod(i, self.chain_length)
        return c, r + 1

    def interval_of(self, chain: int, k: int) -> int:
        return chain * self.chain_length + k - 1

    def fields(self) -> list[Any]:
        return [
            self.sender_id, self.t0, self.interval, self.lag, self.chain_length, self.key_len,
            self.mac_len,
        ]


_BOOT_BODY = (
    _sender_id,
    _time,
    _positive_time,
    int_range(1, 1 << 20),
    int_range(8, MAX_CHAIN),
    int_range(16, 32),
    int_range(10, 32),
    _u64,
    int_range(0, MAX_CHAIN),
    byte_string(max_len=32),
)


def encode_bootstrap_body(schedule: Schedule, chain: int, k: int, key: bytes) -> bytes:
    return dumps([*schedule.fields(), chain, k, key])


def decode_bootstrap_body_untrusted(body: bytes) -> tuple[Schedule, int, int, bytes]:
    values = check_fields(loads_untrusted(body), _BOOT_BODY)
    sender_id, t0, interval, lag, length, key_len, mac_len, chain, k, key = values
    if not sender_id or len(key) != key_len or k > length:
        raise MalformedPacket("inconsistent TESLA bootstrap")
    return Schedule(sender_id, t0, interval, lag, length, key_len, mac_len), chain, k, key


def decode_auth_packet_untrusted(data: bytes) -> list[Any]:
    """Split an auth packet by type; fields are checked, signatures are not."""
    fields = loads_untrusted(data)
    if not fields or type(fields[0]) is not int:
        raise MalformedPacket("TESLA auth packet without a type")
    kind = fields[0]
    if kind == BOOTSTRAP:
        return check_fields(
            fields, (uint(8), byte_string(max_len=512), byte_string(max_len=64))
        )
    if kind == DISCLOSE:
        return check_fields(fields, (uint(8), int_range(0, MAX_INTERVAL), byte_string(max_len=32)))
    raise MalformedPacket("unknown TESLA auth packet type")


def decode_sync_reply_untrusted(data: bytes) -> tuple[bytes, float, bytes]:
    _, nonce, sender_time, signature = check_fields(
        loads_untrusted(data),
        (int_range(SYNC, SYNC), byte_string(max_len=64), _time, byte_string(max_len=64)),
    )
    return nonce, sender_time, signature


def decode_params_untrusted(params: bytes) -> tuple[int, bytes, bytes, list[bytes]]:
    version, alg, sender_id, public, boots = check_fields(
        loads_untrusted(params),
        (uint(8), uint(8), _sender_id, byte_string(max_len=64), _bootstraps),
    )
    if version != VERSION or not sender_id or not boots:
        raise MalformedPacket("params are not for tesla v1")
    return alg, sender_id, public, boots


def _bootstraps(value: Any) -> list[bytes]:
    if type(value) is not list or not 1 <= len(value) <= 3:
        raise MalformedPacket("expected one to three bootstrap packets")
    for item in value:
        if type(item) is not bytes or len(item) > 1024:
            raise MalformedPacket("bad bootstrap packet")
    return value
