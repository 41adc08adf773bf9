"""Cheap classification of datagrams for the simulator's metrics.

The simulator must tell DATA from control traffic and first transmissions from repairs for
every datagram it moves, at ten thousand receivers.  A full :func:`decode_untrusted` costs
microseconds per packet, so this module reads only the few header bytes it needs from the
CBOR layout ``[version, type, session, stream, seq, flags, payload]`` (see
:mod:`rmsec.wire.packets`) and falls back to the strict decoder whenever the bytes do not
look exactly like that layout, so a wire change can make it slower but never wrong.
"""

from __future__ import annotations

from rmsec.errors import MalformedPacket
from rmsec.wire.codec import WIRE_VERSION
from rmsec.wire.packets import Data, DataFlags, decode_untrusted

#: Packet type of DATA (first transmissions and repairs alike).
DATA_TYPE = Data.TYPE
#: Pseudo type for bytes that do not decode: the simulator still moves them.
UNKNOWN_TYPE = -1

_WIDTH = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}


def _uint_end(datagram: bytes, pos: int) -> int:
    """Offset just after the CBOR unsigned integer starting at ``pos``."""
    head = datagram[pos]
    if head < 0x18:
        return pos + 1
    width = _WIDTH.get(head)
    if width is None:
        raise IndexError(pos)
    return pos + 1 + width


def _slow_classify(datagram: bytes) -> tuple[int, bool]:
    try:
        packet = decode_untrusted(datagram)
    except MalformedPacket:
        return UNKNOWN_TYPE, False
    if isinstance(packet, Data):
        return DATA_TYPE, bool(packet.flags & DataFlags.REPAIR)
    return packet.TYPE, False


def classify(datagram: bytes) -> tuple[int, bool]:
    """Return ``(packet type, is_repair)`` of one datagram, trusting only its shape."""
    try:
        head = datagram[0]
        if not 0x83 <= head <= 0x97 or datagram[1] != WIRE_VERSION:
            # Not a short CBOR array starting with our version: let the strict decoder say.
            return _slow_classify(datagram)
        ptype = datagram[2]
        if ptype != DATA_TYPE:
            # Small arrays of small type numbers: byte 2 is the type for every control packet.
            return (ptype, False) if ptype < 0x18 else _slow_classify(datagram)
        if head != 0x87 or datagram[3] != 0x48:  # 7 fields; an 8-byte session
            return _slow_classify(datagram)
        pos = _uint_end(datagram, 12)  # stream
        pos = _uint_end(datagram, pos)  # seq
        head = datagram[pos]
        flags = head if head < 0x18 else datagram[pos + 1] if head == 0x18 else -1
        if flags < 0:
            return _slow_classify(datagram)
        return DATA_TYPE, bool(flags & DataFlags.REPAIR)
    except IndexError:
        return _slow_classify(datagram)
