"""``flat``: one group key, wrapped for each member on every leave (the O(n) baseline).

Each member holds an individual 16-byte key and the group key.  A leave (or a periodic
refresh) draws a new group key and wraps it under the individual key of every remaining
member: n wraps, and the rekey grows with the group (24 bytes a member).  A batch of joins
only wraps the new group key once, under the old one (the joiners get it in their welcome and
never learned the old one, so backward secrecy holds; forward secrecy needs the per-member
wraps and gets them).  The tree schemes are measured against this.

Wire formats (common header of :mod:`.common`, then)::

    rekey     [1, 1, 0, epoch, mode, bitmap, wraps, confirm]
              mode 0: bitmap empty, wraps = AES-KW(old group key, new group key)   (joins only)
              mode 1: bitmap bit s (byte s >> 3, bit s & 7) set for each slot s that has a
                      wrap; wraps = the AES-KW(individual key, new group key) of those slots,
                      in slot order, 24 bytes each
              confirm = expand(new group key, "rmsec flat confirm", epoch)[:16]
    recovery  [1, 1, 1, epoch, slot, AES-GCM(recovery key, group key)]
    welcome   [1, 1, 2, epoch, slot, individual key, group key]

The group secret of epoch ``e`` is ``expand(group key, "rmsec flat group secret", e)``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rmsec.errors import LocalError, MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagement, KeyManagementMember, Rng, Update
from rmsec.security import keycrypto
from rmsec.wire.codec import byte_string, int_range

from . import common

NAME = "flat"
K = keycrypto.KEY_LEN
W = keycrypto.WRAP_LEN
MODE_OLD_KEY, MODE_PER_MEMBER = 0, 1

_slot = int_range(0, common.MAX_SLOTS - 1)
_key = byte_string(max_len=K, exact=K)
REKEY_FIELDS = (
    int_range(0, 1), byte_string(max_len=common.MAX_SLOTS // 8), byte_string(max_len=common.MAX_MESSAGE),
    common.CONFIRM_FIELD,
)
RECOVERY_FIELDS = (_slot, byte_string(max_len=K + keycrypto.SEAL_OVERHEAD, exact=K + keycrypto.SEAL_OVERHEAD))
WELCOME_FIELDS = (_slot, _key, _key)


class FlatScheme(KeyManagement):
    """Controller side of ``flat``."""

    name: ClassVar[str] = NAME

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        common.check_options(self.options, ())
        self.epoch = 0
        self._roster = common.Roster()
        self._keys = bytearray()  # individual keys, slot s at [16 s, 16 s + 16)
        self._occupied = bytearray()  # one byte a slot: 1 while a member holds it
        self._group_key = keycrypto.random_bytes(rng, K)
        self.group_secret = b""
        #: What the last update cost (wrapped keys), for benchmarks and tests.
        self.stats: dict[str, int] = {}

    @property
    def members(self) -> int:
        return len(self._roster)

    def has_member(self, member_id: bytes) -> bool:
        return member_id in self._roster

    # ---------------------------------------------------------------------------- updates

    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        joins, leaves = common.check_changes(joins, leaves, self._roster)
        if not joins and not leaves:
            return self.refresh()
        vacated = self._roster.remove(leaves)
        for slot in vacated:
            self._occupied[slot] = 0
            self._keys[K * slot : K * slot + K] = bytes(K)
        old_end = self._roster.end
        slots = self._roster.place(joins, vacated)
        if self._roster.end > old_end:
            grow = self._roster.end - old_end
            self._keys += bytes(K * grow)
            self._occupied += bytes(grow)
        new_keys = keycrypto.random_keys(self.rng, len(joins))
        for i, slot in enumerate(slots):
            self._keys[K * slot : K * slot + K] = new_keys[K * i : K * i + K]
        old_group_key = self._group_key
        self._next_epoch()
        if leaves:
            rekey = self._per_member_rekey(exclude=set(slots))
        else:
            self.stats = {"wraps": 1}
            rekey = common.encode(
                NAME, common.REKEY, self.epoch, MODE_OLD_KEY, b"", keycrypto.wrap_key(old_group_key, self._group_key),
                common.confirmation(self._group_key, NAME, self.epoch),
            )
        for slot in slots:
            self._occupied[slot] = 1
        welcomes = {
            member_id: common.encode(
                NAME, common.WELCOME, self.epoch, slot, new_keys[K * i : K * i + K], self._group_key
            )
            for i, (member_id, slot) in enumerate(zip(joins, slots, strict=True))
        }
        return Update(self.epoch, rekey, welcomes)

    def refresh(self) -> Update:
        """New group key for the same members: n wraps, as for a leave."""
        self._next_epoch()
        return Update(self.epoch, self._per_member_rekey(exclude=set()), {})

    def _next_epoch(self) -> None:
        if self.epoch >= common.MAX_EPOCH:
            raise LocalError("epoch counter exhausted; start a new group")
        self.epoch += 1
        self._group_key = keycrypto.random_bytes(self.rng, K)
        self.group_secret = common.group_secret(self._group_key, NAME, self.epoch)

    def _per_member_rekey(self, *, exclude: set[int]) -> bytes:
        end = self._roster.end
        bitmap = bytearray((end + 7) >> 3)
        wraps = []
        keys, occupied, group_key, wrap = self._keys, self._occupied, self._group_key, keycrypto.wrap_key
        slot = occupied.find(1)
        while slot >= 0:
            if slot not in exclude:
                bitmap[slot >> 3] |= 1 << (slot & 7)
                wraps.append(wrap(bytes(keys[K * slot : K * slot + K]), group_key))
            slot = occupied.find(1, slot + 1)
        self.stats = {"wraps": len(wraps)}
        return common.encode(
            NAME, common.REKEY, self.epoch, MODE_PER_MEMBER, bytes(bitmap), b"".join(wraps),
            common.confirmation(group_key, NAME, self.epoch),
        )

    def recover(self, member_id: bytes) -> bytes:
        slot = self._slot_of(member_id)
        key = common.recovery_key(bytes(self._keys[K * slot : K * slot + K]), NAME)
        sealed = keycrypto.seal(
            key, self._group_key, context=common.recovery_context(NAME, self.epoch, slot), rng=self.rng
        )
        return common.encode(NAME, common.RECOVERY, self.epoch, slot, sealed)

    def _slot_of(self, member_id: bytes) -> int:
        try:
            return self._roster.slot_of(member_id)
        except KeyError:
            raise LocalError(f"{member_id!r:.40} is not a member") from None

    def state_bytes(self) -> int:
        """Bytes of server state (excluding the member-id strings the controller also holds)."""
        return sys.getsizeof(self._keys) + sys.getsizeof(self._occupied) + self._roster.state_bytes()

    @classmethod
    def member_from_welcome(cls, welcome: bytes) -> FlatMember:
        _, epoch, (slot, key, group_key) = common.decode_untrusted(
            welcome, scheme=NAME, kinds={common.WELCOME: WELCOME_FIELDS}
        )
        return FlatMember(epoch, slot, key, group_key)


class FlatMember(KeyManagementMember):
    """Member side of ``flat``: its slot, its individual key and the group key."""

    def __init__(self, epoch: int, slot: int, key: bytes, group_key: bytes) -> None:
        self.epoch = epoch
        self.slot = slot
        self._key = key
        self._group_key = group_key
        self.group_secret = common.group_secret(group_key, NAME, epoch)

    def held_keys(self) -> list[bytes]:
        """Every key this member holds (what an evicted member keeps, in the tests)."""
        return [self._key, self._group_key]

    def clone(self) -> FlatMember:
        return copy.copy(self)

    def apply(self, rekey: bytes) -> None:
        kind, epoch, fields = common.decode_untrusted(
            rekey, scheme=NAME, kinds={common.REKEY: REKEY_FIELDS, common.RECOVERY: RECOVERY_FIELDS}
        )
        common.check_next_epoch(kind, epoch, self.epoch)
        if kind == common.RECOVERY:
            slot, sealed = fields
            if slot != self.slot:
                raise NotForMe("recovery for another member")
            group_key = keycrypto.open_sealed(
                common.recovery_key(self._key, NAME), sealed, context=common.recovery_context(NAME, epoch, slot)
            )
        else:
            group_key = self._unwrap_rekey(*fields[:3])
            common.check_confirmation(group_key, NAME, epoch, fields[3])
        self._group_key = group_key
        self.epoch = epoch
        self.group_secret = common.group_secret(group_key, NAME, epoch)

    def _unwrap_rekey(self, mode: int, bitmap: bytes, wraps: bytes) -> bytes:
        if mode == MODE_OLD_KEY:
            if bitmap or len(wraps) != W:
                raise MalformedPacket("flat join rekey carries one wrap")
            return keycrypto.unwrap_key(self._group_key, wraps)
        if len(wraps) != W * int.from_bytes(bitmap, "little").bit_count():
            raise MalformedPacket("flat rekey: wraps do not match the bitmap")
        byte, bit = self.slot >> 3, self.slot & 7
        if byte >= len(bitmap) or not bitmap[byte] >> bit & 1:
            raise NotForMe("no wrap for this member")
        index = int.from_bytes(bitmap[:byte], "little").bit_count() + (bitmap[byte] & ((1 << bit) - 1)).bit_count()
        return keycrypto.unwrap_key(self._key, wraps[W * index : W * index + W])


def decode_rekey_untrusted(data: bytes) -> tuple[int, int, bytes, bytes]:
    """``(epoch, mode, bitmap, wraps)`` of a flat rekey (for tests and tools)."""
    _, epoch, (mode, bitmap, wraps, _) = common.decode_untrusted(data, scheme=NAME, kinds={common.REKEY: REKEY_FIELDS})
    return epoch, mode, bitmap, wraps
