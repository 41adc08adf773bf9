"""Strict CBOR parsing for security messages larger than a datagram.

:func:`rmsec.wire.codec.loads_untrusted` refuses anything above one UDP payload; rekey
envelopes, welcomes and recovery messages can be larger (a flat rekey for 10,000 members is
about half a megabyte), so this module gives the same single-exception discipline with a
caller-chosen size bound.  Field checks reuse :mod:`rmsec.wire.codec`.
"""

from __future__ import annotations

import math
from typing import Any

from rmsec.errors import MalformedPacket
from rmsec.wire.codec import Check, parse_array

#: Nesting accepted in option maps carried inside messages (plugin options are flat in practice).
MAX_OPTION_DEPTH = 4
MAX_OPTION_ITEMS = 256


def loads_array(data: bytes, *, max_len: int, what: str) -> list[Any]:
    """Parse ``data`` as one CBOR array of at most ``max_len`` bytes; only :class:`MalformedPacket`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedPacket(f"{what} is not bytes")
    if len(data) > max_len:
        raise MalformedPacket(f"{what} of {len(data)} bytes exceeds {max_len}")
    return parse_array(data, what)


def options_map(value: Any) -> dict[str, Any]:
    """A plugin options map from untrusted CBOR: text keys, plain values, bounded size."""
    count = [0]

    def plain(item: Any, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_OPTION_ITEMS or depth > MAX_OPTION_DEPTH:
            raise MalformedPacket("options too large or too deep")
        if item is None or type(item) in (bool, int, str, bytes):
            if type(item) in (str, bytes) and len(item) > 4096:
                raise MalformedPacket("option value too long")
            return item
        if type(item) is float:
            if not math.isfinite(item):
                raise MalformedPacket("option value not finite")
            return item
        if type(item) is list:
            return [plain(v, depth + 1) for v in item]
        if type(item) is dict:
            out = {}
            for k, v in item.items():
                if type(k) is not str or len(k) > 128:
                    raise MalformedPacket("option names must be short text")
                out[k] = plain(v, depth + 1)
            return out
        raise MalformedPacket("unsupported option value type")

    if type(value) is not dict:
        raise MalformedPacket("options must be a map")
    result = plain(value, 0)
    assert isinstance(result, dict)
    return result


def options_check() -> Check:
    return options_map


def nullable(check: Check) -> Check:
    """``None`` or whatever ``check`` accepts."""

    def inner(value: Any) -> Any:
        return None if value is None else check(value)

    return inner


def finite_float(*, low: float, high: float) -> Check:
    """A number (int or float) in ``[low, high]``, returned as a float."""

    def check(value: Any) -> float:
        if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
            raise MalformedPacket(f"expected a number in [{low}, {high}]")
        return float(value)

    return check
