"""Wire formats of ``lkh`` (after the common header of ``keymgmt_flat.common``)::

    rekey     [1, 2, 0, epoch, height, hashed, entries, confirm]
    recovery  [1, 2, 1, epoch, height, slot, AES-GCM(recovery key, keys of levels 1..height)]
    welcome   [1, 2, 2, epoch, log2(degree), height, slot, keys of levels 0..height]

- ``height`` is the number of levels of the degree-``d`` tree above the leaves; the tree holds
  ``d ** height`` slots and only ever grows.
- Nodes are named by their RFC 9420 binary-tree index (:mod:`rmsec.security.treemath`): the
  degree-``2**k`` tree uses every ``k``-th level of the binary tree, so level ``j`` position
  ``m`` is node ``node_at(j * k, m)``.
- ``hashed``: nodes whose key moved forward by the one-way function, not by a wrap (joins in
  ``join = "hash"`` mode): ``new = expand(old, "rmsec lkh join", epoch || node)``.
- ``entries``: ``[node, mask, wraps]`` in order of level, lowest first, so a member always
  knows a child's new key before it needs it.  Bit ``i`` of ``mask`` says that the node's new
  key is wrapped for the members below its ``i``-th child, under that child's key (its new key
  when the child is itself in the message); ``wraps`` holds those AES-KW wraps in child order,
  24 bytes each.  ``mask`` 0 means one wrap under the node's own previous key (a node that only
  gained members: nobody who knew the old key has left).
- ``confirm``: ``expand(new root key, "rmsec lkh confirm", epoch)[:16]``.
- keys are 16 bytes, concatenated, lowest level (the member's own leaf key) first.
"""

from __future__ import annotations

import dataclasses

from rmsec.errors import MalformedPacket
from rmsec.security import keycrypto, treemath
from rmsec.wire.codec import array, byte_string, int_range, record, uint

from ..keymgmt_flat import common

NAME = "lkh"
K = keycrypto.KEY_LEN
W = keycrypto.WRAP_LEN
DEGREES = (2, 4, 8, 16)
MAX_LOG_DEGREE = 4
#: Height bound: ``2 ** 24`` slots at most, so 24 binary levels.
MAX_BINARY_HEIGHT = 24
MAX_NODE = (1 << (MAX_BINARY_HEIGHT + 1)) - 1
MAX_ENTRIES = 1 << 22

_node = int_range(0, MAX_NODE)
_slot = int_range(0, common.MAX_SLOTS - 1)
_height = int_range(1, MAX_BINARY_HEIGHT)
_entry = record(_node, uint(16), byte_string(max_len=16 * W))
REKEY_FIELDS = (_height, array(_node, max_len=MAX_ENTRIES), array(_entry, max_len=MAX_ENTRIES), common.CONFIRM_FIELD)
RECOVERY_FIELDS = (_height, _slot, byte_string(max_len=MAX_BINARY_HEIGHT * K + keycrypto.SEAL_OVERHEAD))
WELCOME_FIELDS = (
    int_range(1, MAX_LOG_DEGREE), _height, _slot, byte_string(max_len=(MAX_BINARY_HEIGHT + 1) * K),
)


def join_hash(key: bytes, epoch: int, node: int) -> bytes:
    """The one-way step of a node key on a join in ``hash`` mode."""
    return keycrypto.expand(key, b"rmsec lkh join", keycrypto.uint_context(epoch, node))


def recovery_context(epoch: int, slot: int, height: int) -> bytes:
    return common.recovery_context(NAME, epoch, slot) + keycrypto.uint_context(height)


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    node: int
    mask: int
    wraps: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Rekey:
    epoch: int
    height: int
    hashed: tuple[int, ...]
    entries: tuple[Entry, ...]


def node_level(node: int, log_degree: int, height: int) -> int:
    """The tree level (0 = leaves) of a node named in a message; :class:`MalformedPacket` if
    the node is not a node of this degree and height."""
    binary = treemath.level(node)
    level, rest = divmod(binary, log_degree)
    if rest or not 1 <= level <= height or treemath.position(node) >> (log_degree * (height - level)):
        raise MalformedPacket("lkh message names a node outside the tree")
    return level


def decode_rekey_untrusted(data: bytes) -> Rekey:
    """A checked rekey (only :class:`MalformedPacket`); the wraps are not yet opened."""
    _, epoch, (height, hashed, entries, _) = common.decode_untrusted(
        data, scheme=NAME, kinds={common.REKEY: REKEY_FIELDS}
    )
    parsed = []
    for node, mask, wraps in entries:
        if len(wraps) != W * (mask.bit_count() or 1):
            raise MalformedPacket("lkh entry: wraps do not match the mask")
        parsed.append(Entry(node, mask, wraps))
    return Rekey(epoch, height, hashed, tuple(parsed))
