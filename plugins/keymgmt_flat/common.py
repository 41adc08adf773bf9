"""What every key-management scheme shares: message framing, checks, the roster of slots.

The built-in schemes (``flat``, ``lkh``, ``oft``, ``regions``) import this module; it lives with
``flat`` because ``flat`` is the baseline the others are built and measured against.

Framing
=======
Every rekey, recovery and welcome of every scheme is one CBOR array that starts the same way::

    [version = 1, scheme code, kind, epoch, scheme-specific fields...]

``scheme code`` is 1 ``flat``, 2 ``lkh``, 3 ``oft``, 4 ``regions`` (a message of one scheme
handed to another is refused before anything else is read); ``kind`` is 0 rekey (multicast to
the group), 1 recovery (to one member), 2 welcome (to one joining member, over its TLS control
connection, so it may hold keys in the clear).  ``epoch`` is the epoch the message moves the
member to.  Decoding is strict (:mod:`rmsec.wire.codec` checks, bounded size) and raises only
:class:`~rmsec.errors.MalformedPacket`.

Every rekey ends with a 16-byte key confirmation (:func:`confirmation` of the key the members
reach, bound to the epoch), and recoveries are AES-GCM sealed with the epoch in their
associated data, so a member either reaches the server's group secret or raises; it never
adopts a wrong one.

Epoch rules for members: a rekey applies only to the epoch just before it (``epoch ==
member.epoch + 1``); a recovery to any earlier epoch.  Anything else is
:class:`~rmsec.errors.NotForMe` (the security layer orders rekeys and asks for recovery on a
gap; a replayed old message simply changes nothing).
"""

from __future__ import annotations

import array
import heapq
import hmac
import sys
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

from rmsec.errors import AuthenticationFailed, ConfigError, LocalError, MalformedPacket, NotForMe
from rmsec.security import keycrypto
from rmsec.security.untrusted import loads_array
from rmsec.wire.codec import Check, byte_string, check_fields, dumps, int_range, uint

VERSION = 1
SCHEMES = {"flat": 1, "lkh": 2, "oft": 3, "regions": 4}
REKEY, RECOVERY, WELCOME = 0, 1, 2
KINDS = {REKEY: "rekey", RECOVERY: "recovery", WELCOME: "welcome"}
#: Largest message any scheme decodes (a flat rekey at a million members is ~24 MB).
MAX_MESSAGE = 64 * 1024 * 1024
MAX_EPOCH = (1 << 32) - 1
MAX_MEMBER_ID = 255
#: Slots (leaves) a scheme may allocate: 2**24, sixteen times the largest group benchmarked.
MAX_SLOTS = 1 << 24

_HEADER = (uint(8), int_range(1, 4), int_range(0, 2), int_range(0, MAX_EPOCH))


def encode(scheme: str, kind: int, epoch: int, *fields: Any) -> bytes:
    """One message of ``scheme``: the common header, then ``fields``."""
    return dumps([VERSION, SCHEMES[scheme], kind, epoch, *fields])


def decode_untrusted(
    data: bytes, *, scheme: str, kinds: Mapping[int, Sequence[Check]], max_len: int = MAX_MESSAGE
) -> tuple[int, int, list[Any]]:
    """``(kind, epoch, checked fields)`` of a message of ``scheme``; only :class:`MalformedPacket`.

    ``kinds`` maps each kind this caller accepts to the checks of its fields.
    """
    values = loads_array(data, max_len=max_len, what=f"{scheme} message")
    if len(values) < len(_HEADER):
        raise MalformedPacket(f"{scheme} message too short")
    version, code, kind, epoch = check_fields(values[: len(_HEADER)], _HEADER)
    if version != VERSION:
        raise MalformedPacket(f"unknown {scheme} message version")
    if code != SCHEMES[scheme]:
        raise MalformedPacket(f"not a {scheme} message")
    if kind not in kinds:
        raise MalformedPacket(f"a {KINDS[kind]} is not accepted here")
    return kind, epoch, check_fields(values[len(_HEADER) :], kinds[kind])


def cbor_head(major: int, value: int) -> bytes:
    """Canonical CBOR head (RFC 8949 §4.2.1: shortest form) of ``major`` type and ``value``.

    Used to build messages produced a million at a time (welcomes at set-up) without a
    ``cbor2.dumps`` call each; the known-answer tests hold the result to :func:`encode`.
    """
    if value < 24:
        return bytes((major << 5 | value,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + value.to_bytes(size, "big")
    raise ValueError("CBOR head value too large")


def cbor_uint(value: int) -> bytes:
    return cbor_head(0, value)


def encode_prefix(scheme: str, kind: int, epoch: int, items: int, *fields: int) -> bytes:
    """The encoding of a message of ``items`` fields after the header, up to and including
    the unsigned integer ``fields``: the caller appends the encodings of the rest."""
    head = cbor_head(4, 4 + items) + cbor_uint(VERSION) + cbor_uint(SCHEMES[scheme])
    return head + cbor_uint(kind) + cbor_uint(epoch) + b"".join(cbor_uint(f) for f in fields)


def check_next_epoch(kind: int, epoch: int, current: int) -> None:
    """:class:`NotForMe` unless a message of ``kind`` at ``epoch`` moves ``current`` forward."""
    if kind == REKEY and epoch != current + 1:
        raise NotForMe("rekey is not for the next epoch")
    if epoch <= current:
        raise NotForMe("message of a past epoch")


def group_secret(key: bytes, scheme: str, epoch: int) -> bytes:
    """The epoch's group secret (32 bytes) from the key every member holds (a tree's root)."""
    return keycrypto.expand(
        key, b"rmsec " + scheme.encode() + b" group secret", keycrypto.uint_context(epoch),
        keycrypto.SECRET_LEN,
    )


CONFIRM_LEN = 16
CONFIRM_FIELD = byte_string(max_len=CONFIRM_LEN, exact=CONFIRM_LEN)


def confirmation(key: bytes, scheme: str, epoch: int) -> bytes:
    """Key confirmation carried by every rekey: a member that computed the wrong key (a
    mutated or misdirected message that still parsed) finds out, instead of silently
    adopting a wrong group secret.  A PRF output: it reveals nothing about ``key``."""
    return keycrypto.expand(
        key, b"rmsec " + scheme.encode() + b" confirm", keycrypto.uint_context(epoch), CONFIRM_LEN
    )


def check_confirmation(key: bytes, scheme: str, epoch: int, confirm: bytes) -> None:
    if not hmac.compare_digest(confirmation(key, scheme, epoch), confirm):
        raise AuthenticationFailed(f"{scheme}: the key reached does not confirm")


def recovery_key(key: bytes, scheme: str) -> bytes:
    """The AES-GCM key of a member's recovery messages, from its individual key.

    A key is never used by two algorithms: the individual key wraps (AES-KW) in rekeys, this
    derived key seals (AES-GCM) in recoveries.
    """
    return keycrypto.expand(key, b"rmsec " + scheme.encode() + b" recovery key")


def recovery_context(scheme: str, epoch: int, slot: int) -> bytes:
    return b"rmsec " + scheme.encode() + b" recovery\x00" + keycrypto.uint_context(epoch, slot)


# ---------------------------------------------------------------------------- options


def check_options(options: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse misspelled options rather than silently ignoring them."""
    unknown = set(options) - set(known)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")


def option_choice(options: Mapping[str, Any], name: str, default: Any, choices: Sequence[Any]) -> Any:
    value = options.get(name, default)
    if type(value) is not type(default) or value not in choices:
        raise ConfigError(f"option {name!r} must be one of {list(choices)}, got {value!r}")
    return value


# ------------------------------------------------------------------------ membership checks


def check_member_id(member_id: object) -> bytes:
    if type(member_id) is not bytes or not 1 <= len(member_id) <= MAX_MEMBER_ID:
        raise LocalError(f"a member id is 1..{MAX_MEMBER_ID} bytes, got {member_id!r:.40}")
    return member_id


def check_changes(
    joins: Sequence[bytes], leaves: Sequence[bytes], current: Container[bytes] | None
) -> tuple[list[bytes], list[bytes]]:
    """Validate one batch: joins are new and distinct, leaves are members and distinct
    (membership is not checked when ``current`` is ``None``: the caller does it)."""
    joins, leaves = list(joins), list(leaves)
    for m in joins + leaves:  # a list comprehension would be no faster; this is one pass
        if type(m) is not bytes or not 0 < len(m) <= MAX_MEMBER_ID:
            check_member_id(m)
    if len(set(joins)) != len(joins) or len(set(leaves)) != len(leaves):
        raise LocalError("a member appears twice in one batch")
    if current is None:
        return joins, leaves
    for m in joins:
        if m in current:
            raise LocalError(f"{m!r:.40} is already a member")
    for m in leaves:
        if m not in current:
            raise LocalError(f"{m!r:.40} is not a member")
    return joins, leaves


class Roster:
    """Which member holds which slot (leaf), and which slots are free.

    Joins take the slots their own batch vacated first (a join replacing a leave shares its
    whole path, as in the marking algorithm of Li, Yang, Gouda and Lam), then the leftmost free
    slot (the tree stays compact), then a fresh slot at the right end.

    Why not a dict: at a million members a ``dict[bytes, int]`` costs about 70 bytes a member
    (its table plus one int object per slot), more than the whole key tree, and it jumps by
    half whenever it resizes.  This is an open-addressing table in an ``array('I')`` (slot + 1,
    0 for empty; linear probing on Python's keyed ``hash`` of the id; deletions shift back, so
    there are no tombstones) plus a list from slot to id, whose entries are the caller's own
    id objects: about 17 bytes a member, whatever the size.
    """

    __slots__ = ("_count", "_free", "_ids", "_mask", "_table", "end")

    def __init__(self) -> None:
        self._table = array.array("I", [0]) * 8
        self._mask = 7
        self._ids: list[bytes | None] = []
        self._count = 0
        self._free: list[int] = []
        #: One past the highest slot ever used.
        self.end = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, member_id: object) -> bool:
        return type(member_id) is bytes and self._find(member_id) >= 0

    def slot_of(self, member_id: bytes) -> int:
        """The member's slot; ``KeyError`` for a non-member."""
        pos = self._find(member_id)
        if pos < 0:
            raise KeyError(member_id)
        return self._table[pos] - 1

    def _find(self, member_id: bytes) -> int:
        table, ids, mask = self._table, self._ids, self._mask
        h = hash(member_id) & mask
        while True:
            value = table[h]
            if not value:
                return -1
            if ids[value - 1] == member_id:
                return h
            h = (h + 1) & mask

    def _reserve(self, count: int) -> None:
        """Keep the table at most half full (short probes) for ``count`` members."""
        if 2 * count <= len(self._table):
            return
        size = 8
        while size < 4 * count:
            size *= 2
        self._table = array.array("I", [0]) * size
        self._mask = size - 1
        self._insert((m, slot) for slot, m in enumerate(self._ids) if m is not None)

    def _insert(self, pairs: Iterable[tuple[bytes, int]]) -> None:
        table, ids, mask = self._table, self._ids, self._mask
        for member_id, slot in pairs:
            h = hash(member_id) & mask
            while table[h]:
                h = (h + 1) & mask
            table[h] = slot + 1
            ids[slot] = member_id

    def _delete_at(self, pos: int) -> None:
        """Empty ``pos`` and shift back the probe run behind it (Knuth's algorithm R)."""
        table, ids, mask = self._table, self._ids, self._mask
        table[pos] = 0
        j = pos
        while True:
            j = (j + 1) & mask
            value = table[j]
            if not value:
                return
            home = hash(ids[value - 1]) & mask
            # the entry at j may fill the hole unless its home lies cyclically in (pos, j]
            if (pos < home <= j) if pos <= j else (home > pos or home <= j):
                continue
            table[pos] = value
            table[j] = 0
            pos = j

    def remove(self, leaves: Sequence[bytes]) -> list[int]:
        """Free the leavers' slots (they are refilled by :meth:`place`); their slots."""
        slots = []
        for member_id in leaves:
            pos = self._find(member_id)
            if pos < 0:
                raise KeyError(member_id)
            slot = self._table[pos] - 1
            self._delete_at(pos)
            self._ids[slot] = None
            self._count -= 1
            slots.append(slot)
        return slots

    def place(self, joins: Sequence[bytes], vacated: Sequence[int]) -> list[int]:
        """Slots for ``joins``; ``vacated`` (this batch's) first, the rest of them become free."""
        reuse = sorted(vacated)
        out = reuse[: len(joins)]
        for slot in reuse[len(joins) :]:
            heapq.heappush(self._free, slot)
        while len(out) < len(joins) and self._free:
            out.append(heapq.heappop(self._free))
        fresh = len(joins) - len(out)
        if self.end + fresh > MAX_SLOTS:
            raise LocalError(f"a scheme holds at most {MAX_SLOTS} members")
        out.extend(range(self.end, self.end + fresh))
        self.end += fresh
        self._ids.extend([None] * fresh)
        self._reserve(self._count + len(joins))
        self._insert(zip(joins, out, strict=True))
        self._count += len(joins)
        return out

    def state_bytes(self) -> int:
        """Bytes held, excluding the id strings themselves (the controller holds them anyway)."""
        free = sys.getsizeof(self._free) + 28 * len(self._free)
        return sys.getsizeof(self._table) + sys.getsizeof(self._ids) + free
