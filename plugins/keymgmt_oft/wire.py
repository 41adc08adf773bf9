"""Functions and wire formats of ``oft`` (after the common header of ``keymgmt_flat.common``).

Functions (all :func:`rmsec.security.keycrypto.expand` / ``mix``, 16-byte outputs)::

    leaf key  k_leaf = expand(secret, "rmsec oft leaf",  node || version)
    blinded   b_x    = expand(k_x,    "rmsec oft blind", node)            (b = 0^16: empty subtree)
    node key  k_p    = mix(b_left, b_right, "rmsec oft node", node || version)
    confirm   expand(k_root, "rmsec oft confirm", epoch)

``version`` is the epoch in which the node was last refreshed: refreshing a node changes its
key without touching anything below it.

Messages::

    rekey     [1, 3, 0, epoch, height, entries, confirm]
    recovery  [1, 3, 1, epoch, height, slot, AES-GCM(recovery key, versions || copath)]
    welcome   [1, 3, 2, epoch, variant, height, slot, secret, versions, copath, confirm]

- ``height``: binary levels above the leaves (``2 ** height`` slots; the tree only grows).
- ``entries``: ``[node, mask, wraps]`` for every node whose key changed because a leaf below
  it changed (its version becomes ``epoch``).  Mask bit 0 (1): ``wraps`` holds the right
  (left) child's new blinded key wrapped (AES-KW) under the left (right) child's new key, for
  the members below the left (right) child; bit 2 (3): the left (right) child is now empty.
  Wraps are in child order, 24 bytes each.
- A rekey with no entries is a periodic refresh: only the root's version moves to ``epoch``.
- In the ``strengthened`` variant (default) every child of an entry's node is refreshed too
  (version ``epoch``); in ``original`` only the leaves among them are.
- ``versions``: the versions of the member's path nodes, levels 0..height, 4 bytes each
  big-endian; ``copath``: the blinded keys of its copath, levels 0..height-1, 16 bytes each.
- ``confirm`` lets a member check that it computed the right root (a wrong or forged message
  is :class:`~rmsec.errors.AuthenticationFailed`, not a silently wrong group secret).
- ``variant`` is 1 ``strengthened``, 0 ``original``.
"""

from __future__ import annotations

import dataclasses

from rmsec.errors import MalformedPacket
from rmsec.security import keycrypto, treemath
from rmsec.wire.codec import array, byte_string, int_range, record

from ..keymgmt_flat import common

NAME = "oft"
K = keycrypto.KEY_LEN
W = keycrypto.WRAP_LEN
BLANK = bytes(K)
MAX_HEIGHT = 24
MAX_NODE = (1 << (MAX_HEIGHT + 1)) - 1
MAX_ENTRIES = 1 << 22
STRENGTHENED, ORIGINAL = 1, 0
WRAP_LEFT, WRAP_RIGHT, BLANK_LEFT, BLANK_RIGHT = 1, 2, 4, 8

_node = int_range(0, MAX_NODE)
_slot = int_range(0, common.MAX_SLOTS - 1)
_height = int_range(1, MAX_HEIGHT)
_confirm = common.CONFIRM_FIELD
_entry = record(_node, int_range(0, 15), byte_string(max_len=2 * W))
REKEY_FIELDS = (_height, array(_entry, max_len=MAX_ENTRIES), _confirm)
RECOVERY_FIELDS = (_height, _slot, byte_string(max_len=(MAX_HEIGHT + 1) * 4 + MAX_HEIGHT * K + keycrypto.SEAL_OVERHEAD))
WELCOME_FIELDS = (
    int_range(0, 1), _height, _slot, byte_string(max_len=K, exact=K),
    byte_string(max_len=(MAX_HEIGHT + 1) * 4), byte_string(max_len=MAX_HEIGHT * K), _confirm,
)


def leaf_key(secret: bytes, node: int, version: int) -> bytes:
    return keycrypto.expand(secret, b"rmsec oft leaf", keycrypto.uint_context(node, version))


def blind(key: bytes, node: int) -> bytes:
    return keycrypto.expand(key, b"rmsec oft blind", keycrypto.uint_context(node))


def node_key(left: bytes, right: bytes, node: int, version: int) -> bytes:
    return keycrypto.mix(left, right, b"rmsec oft node", keycrypto.uint_context(node, version))


def confirmation(root: bytes, epoch: int) -> bytes:
    return common.confirmation(root, NAME, epoch)


def recovery_context(epoch: int, slot: int, height: int) -> bytes:
    return common.recovery_context(NAME, epoch, slot) + keycrypto.uint_context(height)


def pack_versions(versions: list[int]) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in versions)


def unpack_versions(blob: bytes, count: int) -> list[int]:
    if len(blob) != 4 * count:
        raise MalformedPacket("oft: wrong number of versions")
    return [int.from_bytes(blob[4 * i : 4 * i + 4], "big") for i in range(count)]


def check_node(node: int, height: int) -> int:
    """The level of a node named in a message; :class:`MalformedPacket` outside the tree."""
    level = treemath.level(node)
    if not 1 <= level <= height or treemath.position(node) >> (height - level):
        raise MalformedPacket("oft message names a node outside the tree")
    return level


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    node: int
    mask: int
    wraps: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Rekey:
    epoch: int
    height: int
    entries: tuple[Entry, ...]
    confirm: bytes


def check_entry(node: int, mask: int, wraps: bytes, height: int) -> int:
    level = check_node(node, height)
    if (mask & WRAP_LEFT and mask & BLANK_RIGHT) or (mask & WRAP_RIGHT and mask & BLANK_LEFT):
        raise MalformedPacket("oft entry wraps an empty child's key")
    if len(wraps) != W * (mask & 3).bit_count():
        raise MalformedPacket("oft entry: wraps do not match the mask")
    return level


def decode_rekey_untrusted(data: bytes) -> Rekey:
    """A checked rekey (only :class:`MalformedPacket`); the wraps are not yet opened."""
    _, epoch, (height, entries, confirm) = common.decode_untrusted(
        data, scheme=NAME, kinds={common.REKEY: REKEY_FIELDS}
    )
    for node, mask, wraps in entries:
        check_entry(node, mask, wraps, height)
    return Rekey(epoch, height, tuple(Entry(*e) for e in entries), confirm)
