"""``lkh`` member side: its slot and the keys on its path, nothing else.

A rekey is applied to a copy of the path and committed only if the new root key was reached,
so a message that fails anywhere (malformed, forged, or not for this member) leaves the
member exactly as it was.
"""

from __future__ import annotations

from rmsec.errors import MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagementMember
from rmsec.security import keycrypto, treemath

from ..keymgmt_flat import common
from . import wire

NAME = wire.NAME
K = wire.K
W = wire.W


class LkhMember(KeyManagementMember):
    """Holds ``height + 1`` keys: its own leaf key, then one per level up to the root."""

    def __init__(self, epoch: int, log_degree: int, height: int, slot: int, keys: list[bytes]) -> None:
        self.epoch = epoch
        self.log_degree = log_degree
        self.height = height
        self.slot = slot
        self._keys = keys
        self.group_secret = common.group_secret(keys[-1], NAME, epoch)

    @classmethod
    def from_welcome(cls, welcome: bytes) -> LkhMember:
        _, epoch, (k, height, slot, blob) = common.decode_untrusted(
            welcome, scheme=NAME, kinds={common.WELCOME: wire.WELCOME_FIELDS}
        )
        if k * height > wire.MAX_BINARY_HEIGHT or slot >> (k * height):
            raise MalformedPacket("lkh welcome: slot outside the tree")
        if len(blob) != K * (height + 1):
            raise MalformedPacket("lkh welcome: wrong number of keys")
        return cls(epoch, k, height, slot, [blob[K * j : K * j + K] for j in range(height + 1)])

    def held_keys(self) -> list[bytes]:
        """Every key this member holds (what an evicted member keeps, in the tests)."""
        return list(self._keys)

    def clone(self) -> LkhMember:
        return LkhMember(self.epoch, self.log_degree, self.height, self.slot, list(self._keys))

    def apply(self, rekey: bytes) -> None:
        kind, epoch, fields = common.decode_untrusted(
            rekey, scheme=NAME, kinds={common.REKEY: wire.REKEY_FIELDS, common.RECOVERY: wire.RECOVERY_FIELDS}
        )
        common.check_next_epoch(kind, epoch, self.epoch)
        height = fields[0]
        if height < self.height or self.log_degree * height > wire.MAX_BINARY_HEIGHT:
            raise MalformedPacket("lkh tree height out of range")
        if kind == common.RECOVERY:
            keys = self._recover(epoch, height, *fields[1:])
        else:
            keys = self._rekey(epoch, height, *fields[1:])
        self._keys = keys
        self.height = height
        self.epoch = epoch
        self.group_secret = common.group_secret(keys[-1], NAME, epoch)

    def _recover(self, epoch: int, height: int, slot: int, sealed: bytes) -> list[bytes]:
        if slot != self.slot:
            raise NotForMe("recovery for another member")
        leaf = self._keys[0]
        path = keycrypto.open_sealed(
            common.recovery_key(leaf, NAME), sealed, context=wire.recovery_context(epoch, slot, height)
        )
        if len(path) != K * height:
            raise MalformedPacket("lkh recovery: wrong number of keys")
        return [leaf] + [path[K * j : K * j + K] for j in range(height)]

    def _rekey(
        self, epoch: int, height: int, hashed: tuple[int, ...], entries: tuple[tuple[int, int, bytes], ...], confirm: bytes
    ) -> list[bytes]:
        k = self.log_degree
        keys: list[bytes | None] = [*self._keys, *([None] * (height - self.height))]
        mine = [treemath.node_at(j * k, self.slot >> (k * j)) for j in range(height + 1)]
        changed = [False] * (height + 1)
        for node in hashed:
            j = wire.node_level(node, k, height)
            if node == mine[j]:
                key = keys[j]
                if key is None:
                    raise MalformedPacket("lkh rekey hashes a node this member cannot have")
                keys[j] = wire.join_hash(key, epoch, node)
                changed[j] = True
        last = 1
        for node, mask, wraps in entries:
            j = wire.node_level(node, k, height)
            if j < last or mask >> (1 << k):
                raise MalformedPacket("lkh rekey entries out of order or mask too wide")
            last = j
            if len(wraps) != W * (mask.bit_count() or 1):
                raise MalformedPacket("lkh entry: wraps do not match the mask")
            if node != mine[j]:
                continue
            if mask == 0:
                kek = keys[j]
                if kek is None:
                    raise NotForMe("old-key wrap for a node this member never had")
                keys[j] = keycrypto.unwrap_key(kek, wraps)
            else:
                child = (self.slot >> (k * (j - 1))) & ((1 << k) - 1)
                if not mask >> child & 1:
                    raise NotForMe("no wrap for this member's subtree")
                index = (mask & ((1 << child) - 1)).bit_count()
                kek = keys[j - 1]
                if kek is None:
                    raise NotForMe("no key below this node")
                keys[j] = keycrypto.unwrap_key(kek, wraps[W * index : W * index + W])
            changed[j] = True
        root = keys[height]
        if not changed[height] or root is None or any(key is None for key in keys):
            raise NotForMe("rekey does not reach this member's root")
        common.check_confirmation(root, NAME, epoch, confirm)
        return [key for key in keys if key is not None]
