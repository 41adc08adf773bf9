"""Per-stream receive state: what a node holds, what it knows exists, what it has delivered.

``base`` is the lowest sequence number not yet held (everything below is held or was
delivered); packets above it wait in ``held``.  The selective-acknowledgement bitmap is built
from ``held``; ``next_known`` is one past the highest sequence this node knows exists (from data
or hellos), so ``[base, next_known)`` minus ``held`` is exactly what it would ask for.
"""

from __future__ import annotations

from itertools import compress

from rmsec.wire.packets import MAX_BITMAP

BITMAP_SPAN = MAX_BITMAP * 8
#: ASCII bit string -> one byte per bit, 1 where the bit is 0 (for itertools.compress)
_ZEROS = bytes.maketrans(b"01", b"\x01\x00")
#: one byte per bit (0 or 1) -> ASCII "0" / "1" (for int(..., 2))
_ASCII_BITS = bytes.maketrans(b"\x00\x01", b"01")


class ReceiveWindow:
    __slots__ = ("base", "end", "held", "next_known")

    def __init__(self, start: int) -> None:
        self.base = start
        self.next_known = start
        self.end = -1
        self.held: dict[int, tuple[int, bytes]] = {}

    def add(self, seq: int, flags: int, payload: bytes) -> bool:
        """Record a packet; False if it is a duplicate or below the window."""
        if seq < self.base or seq in self.held:
            return False
        self.held[seq] = (flags, payload)
        if seq >= self.next_known:
            self.next_known = seq + 1
        return True

    def pop_in_order(self) -> tuple[int, int, bytes] | None:
        """The packet at ``base`` if held (advancing ``base``), else None."""
        item = self.held.pop(self.base, None)
        if item is None:
            return None
        seq = self.base
        self.base += 1
        return seq, item[0], item[1]

    def learn(self, next_seq: int, end: int) -> None:
        if next_seq > self.next_known:
            self.next_known = next_seq
        if end >= 0:
            # The end says how long the stream will be, not what has been sent: packets
            # between here and the end may still be on their way, so they are not missing yet.
            self.end = end

    def bitmap(self) -> bytes:
        """Bits for ``base+1 .. base+BITMAP_SPAN`` that are held (little-endian bit order).

        Relies on the window's invariant that every held sequence is below ``next_known``."""
        held = self.held
        if not held:
            return b""
        base = self.base + 1
        span = min(BITMAP_SPAN, self.next_known - base)
        if span <= 0:
            return b""
        if 4 * len(held) > span:
            # Behind a hole most of the span is held (and ``held`` may be thousands long):
            # test each sequence of the span, in C, rather than walk every held packet.
            flags = bytes(map(held.__contains__, range(base, base + span)))
            top = len(flags.rstrip(b"\x00")) - 1
            if top < 0:
                return b""
            value = int(flags[top::-1].translate(_ASCII_BITS), 2)
            return value.to_bytes((top + 8) // 8, "little")
        # Few held packets: one byte per bit in a character buffer, then one int() parse
        # (much cheaper than building a big integer one shift at a time).
        chars = bytearray(b"0") * span
        top = -1
        for seq in held:
            offset = seq - base
            if 0 <= offset < span:
                chars[offset] = 49  # "1"
                if offset > top:
                    top = offset
        if top < 0:
            return b""
        value = int(chars[top::-1], 2)
        return value.to_bytes((top + 8) // 8, "little")

    @property
    def complete(self) -> bool:
        return self.end >= 0 and self.base >= self.end


def missing_from_ack(have_base: int, bitmap: bytes, upto: int) -> list[int]:
    """Sequence numbers in ``[have_base, upto)`` that an acknowledgement does not mark held."""
    if upto <= have_base:
        return []
    first = have_base + 1
    stop = min(upto, first + BITMAP_SPAN)
    missing = [have_base]
    width = stop - first
    if width > 0:
        bits = int.from_bytes(bitmap, "little") & ((1 << width) - 1)
        # bit i of the bitmap at index i, then the unset ones, all in C
        flags = format(bits, "b").zfill(width)[::-1].encode().translate(_ZEROS)
        missing.extend(compress(range(first, stop), flags))
    return missing


def highest_in_ack(have_base: int, bitmap: bytes) -> int:
    """One past the highest sequence an acknowledgement shows as held."""
    bits = int.from_bytes(bitmap, "little")
    return have_base + 1 + bits.bit_length() if bits else have_base
