"""Strict CBOR field checking for every packet type.

Each packet is a CBOR array ``[version, type, session, field...]`` (integer positions, no
field-name strings).  A packet class lists one :class:`Field` per position; decoding checks
each value's type, range and length against it and raises :class:`MalformedPacket` for
anything else.  Parsing attacker bytes is confined to :func:`loads_untrusted`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import cbor2

from rmsec.errors import MalformedPacket

WIRE_VERSION = 1
#: Largest datagram any rmsec node accepts (the UDP payload limit over IPv4).
MAX_DATAGRAM = 65507

Check = Callable[[Any], Any]


def loads_untrusted(data: bytes) -> list[Any]:
    """Parse ``data`` as one CBOR array; never raises anything but :class:`MalformedPacket`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedPacket("datagram is not bytes")
    if len(data) > MAX_DATAGRAM:
        raise MalformedPacket(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return parse_array(data, "datagram")


def parse_array(data: bytes | bytearray | memoryview, what: str) -> list[Any]:
    """``data`` as exactly one CBOR array; only :class:`MalformedPacket`."""
    value = parse_single(data, what, major=4)
    if type(value) is not list:
        raise MalformedPacket(f"{what} is not a CBOR array")
    return value


def parse_single(data: bytes | bytearray | memoryview, what: str, *, major: int) -> Any:
    """``data`` as exactly one CBOR item of major type ``major`` (4 array, 5 map), nothing
    after it; only :class:`MalformedPacket`.

    ``cbor2.loads`` ignores what follows the first item, which would let two encodings of
    one packet differ (a signature over the bytes, a cache keyed by them); the decoder's
    position after the item says whether anything trails.
    """
    if not data or data[0] >> 5 != major:
        # Refuse a wrong start before the parser runs.
        raise MalformedPacket(f"{what} is not a CBOR {'map' if major == 5 else 'array'}")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception as exc:  # cbor2 raises many types on hostile input: collapse them.
        raise MalformedPacket(f"{what} is not valid CBOR: {type(exc).__name__}") from None
    if fp.tell() != len(data):
        raise MalformedPacket(f"{what} has {len(data) - fp.tell()} bytes after its CBOR item")
    return value


def uint(bits: int) -> Check:
    """An unsigned integer below ``2**bits``."""
    limit = 1 << bits

    def check(value: Any) -> int:
        if type(value) is not int or not 0 <= value < limit:
            raise MalformedPacket(f"expected u{bits}, got {_describe(value)}")
        return value

    return check


def int_range(low: int, high: int) -> Check:
    """An integer in ``[low, high]``."""

    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise MalformedPacket(f"expected integer in [{low}, {high}], got {_describe(value)}")
        return value

    return check


def byte_string(*, max_len: int, exact: int | None = None) -> Check:
    """A byte string of at most ``max_len`` bytes (or exactly ``exact``)."""

    def check(value: Any) -> bytes:
        if type(value) is not bytes:
            raise MalformedPacket(f"expected bytes, got {_describe(value)}")
        if exact is not None and len(value) != exact:
            raise MalformedPacket(f"expected {exact} bytes, got {len(value)}")
        if len(value) > max_len:
            raise MalformedPacket(f"byte string of {len(value)} exceeds {max_len}")
        return value

    return check


def text(*, max_len: int) -> Check:
    """A text string of at most ``max_len`` characters."""

    def check(value: Any) -> str:
        if type(value) is not str or len(value) > max_len:
            raise MalformedPacket(f"expected text of at most {max_len}, got {_describe(value)}")
        return value

    return check


def array(item: Check, *, max_len: int) -> Check:
    """A list of at most ``max_len`` items, each checked by ``item``; returns a tuple."""

    def check(value: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) > max_len:
            raise MalformedPacket(f"expected list of at most {max_len}, got {_describe(value)}")
        return tuple(item(v) for v in value)

    return check


def record(*fields: Check) -> Check:
    """A fixed-length list whose positions are checked by ``fields``; returns a tuple."""

    def check(value: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) != len(fields):
            raise MalformedPacket(f"expected {len(fields)}-item record, got {_describe(value)}")
        return tuple(f(v) for f, v in zip(fields, value, strict=True))

    return check


def check_fields(values: Sequence[Any], fields: Sequence[Check]) -> list[Any]:
    """Check ``values`` position by position against ``fields``."""
    if len(values) != len(fields):
        raise MalformedPacket(f"expected {len(fields)} fields, got {len(values)}")
    return [f(v) for f, v in zip(fields, values, strict=True)]


def _describe(value: Any) -> str:
    if isinstance(value, (bytes, str, list)):
        return f"{type(value).__name__} of length {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool):
        return "out-of-range integer"
    return type(value).__name__


def dumps(value: Any) -> bytes:
    """Canonical encoding used by every packet's ``encode``."""
    return bytes(cbor2.dumps(value))
