"""``oft`` member side: its secret, the versions of its path and the blinded keys of its
copath; it computes its path keys up to the root on every epoch.

Every message ends with a check of the computed root (``confirm``), so a message that does
not fit this member's state is :class:`~rmsec.errors.AuthenticationFailed` rather than a
silently wrong group secret; state is committed only after that check.
"""

from __future__ import annotations

import hmac

from rmsec.errors import AuthenticationFailed, MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagementMember
from rmsec.security import keycrypto, treemath

from ..keymgmt_flat import common
from . import wire

NAME = wire.NAME
K = wire.K
W = wire.W


class OftMember(KeyManagementMember):
    def __init__(
        self, epoch: int, variant: int, height: int, slot: int, secret: bytes, versions: list[int], copath: list[bytes]
    ) -> None:
        self.epoch = epoch
        self.variant = variant
        self.height = height
        self.slot = slot
        self._secret = secret
        self._versions = versions
        self._copath = copath
        self.path_keys = self._compute(versions, copath)
        self.group_secret = common.group_secret(self.path_keys[-1], NAME, epoch)

    @classmethod
    def from_welcome(cls, welcome: bytes) -> OftMember:
        _, epoch, (variant, height, slot, secret, versions, copath, confirm) = common.decode_untrusted(
            welcome, scheme=NAME, kinds={common.WELCOME: wire.WELCOME_FIELDS}
        )
        if slot >> height:
            raise MalformedPacket("oft welcome: slot outside the tree")
        if len(copath) != K * height:
            raise MalformedPacket("oft welcome: wrong copath length")
        member = cls(
            epoch, variant, height, slot, secret, wire.unpack_versions(versions, height + 1),
            [copath[K * j : K * j + K] for j in range(height)],
        )
        member._check(confirm, epoch)
        return member

    def _compute(self, versions: list[int], copath: list[bytes]) -> list[bytes]:
        """Path keys, leaf first, from the secret, the versions and the blinded copath."""
        slot = self.slot
        key = wire.leaf_key(self._secret, 2 * slot, versions[0])
        keys = [key]
        for j in range(1, len(versions)):
            mine = wire.blind(key, treemath.node_at(j - 1, slot >> (j - 1)))
            other = copath[j - 1]
            left, right = (other, mine) if slot >> (j - 1) & 1 else (mine, other)
            key = wire.node_key(left, right, treemath.node_at(j, slot >> j), versions[j])
            keys.append(key)
        return keys

    def _check(self, confirm: bytes, epoch: int) -> None:
        if not hmac.compare_digest(wire.confirmation(self.path_keys[-1], epoch), confirm):
            raise AuthenticationFailed("oft: computed root does not match")

    def held_keys(self) -> list[bytes]:
        """Every secret value this member holds (what an evicted member keeps, in the tests)."""
        return [self._secret, *self.path_keys, *self._copath]

    def clone(self) -> OftMember:
        twin = object.__new__(OftMember)
        twin.__dict__.update(self.__dict__)
        twin._versions = list(self._versions)
        twin._copath = list(self._copath)
        twin.path_keys = list(self.path_keys)
        return twin

    def apply(self, rekey: bytes) -> None:
        kind, epoch, fields = common.decode_untrusted(
            rekey, scheme=NAME, kinds={common.REKEY: wire.REKEY_FIELDS, common.RECOVERY: wire.RECOVERY_FIELDS}
        )
        common.check_next_epoch(kind, epoch, self.epoch)
        height = fields[0]
        if height < self.height:
            raise MalformedPacket("oft tree height out of range")
        if kind == common.RECOVERY:
            versions, copath = self._recover(epoch, height, *fields[1:])
            keys = self._compute(versions, copath)
        else:
            versions, copath, keys = self._rekey(epoch, height, *fields[1:])
        self._versions, self._copath, self.path_keys = versions, copath, keys
        self.height = height
        self.epoch = epoch
        self.group_secret = common.group_secret(keys[-1], NAME, epoch)

    def _recover(self, epoch: int, height: int, slot: int, sealed: bytes) -> tuple[list[int], list[bytes]]:
        if slot != self.slot:
            raise NotForMe("recovery for another member")
        plain = keycrypto.open_sealed(
            common.recovery_key(self._secret, NAME), sealed, context=wire.recovery_context(epoch, slot, height)
        )
        split = 4 * (height + 1)
        if len(plain) != split + K * height:
            raise MalformedPacket("oft recovery: wrong length")
        versions = wire.unpack_versions(plain[:split], height + 1)
        return versions, [plain[split + K * j : split + K * j + K] for j in range(height)]

    def _rekey(
        self, epoch: int, height: int, entries: tuple[tuple[int, int, bytes], ...], confirm: bytes
    ) -> tuple[list[int], list[bytes], list[bytes]]:
        slot = self.slot
        found: dict[int, tuple[int, bytes]] = {}
        for node, mask, wraps in entries:
            j = wire.check_entry(node, mask, wraps, height)
            if node == treemath.node_at(j, slot >> j):
                if j in found:
                    raise MalformedPacket("oft rekey names a node twice")
                found[j] = (mask, wraps)
        grown = height - self.height
        versions: list[int | None] = [*self._versions, *([None] * grown)]
        copath: list[bytes | None] = [*self._copath, *([None] * grown)]
        if not entries:
            versions[height] = epoch  # a periodic refresh: only the root's version moves
        if 1 in found:
            versions[0] = epoch  # the leaf beside this one changed: ours is refreshed
        key = wire.leaf_key(self._secret, 2 * slot, epoch if 1 in found else self._versions[0])
        keys = [key]
        for j in range(1, height + 1):
            right_side = slot >> (j - 1) & 1
            if j in found:
                mask, wraps = found[j]
                if mask & (wire.BLANK_LEFT if right_side else wire.BLANK_RIGHT):
                    copath[j - 1] = wire.BLANK
                elif mask & (1 << right_side):
                    index = (mask & wire.WRAP_LEFT).bit_count() if right_side else 0
                    copath[j - 1] = keycrypto.unwrap_key(key, wraps[W * index : W * index + W])
                else:
                    raise NotForMe("no wrap for this member's side")
                versions[j] = epoch
            elif self.variant == wire.STRENGTHENED and j + 1 in found:
                versions[j] = epoch  # beside a changed path: refreshed
            version, other = versions[j], copath[j - 1]
            if version is None or other is None:
                raise MalformedPacket("oft rekey grows the tree without naming the new nodes")
            mine = wire.blind(key, treemath.node_at(j - 1, slot >> (j - 1)))
            left, right = (other, mine) if right_side else (mine, other)
            key = wire.node_key(left, right, treemath.node_at(j, slot >> j), version)
            keys.append(key)
        if not hmac.compare_digest(wire.confirmation(key, epoch), confirm):
            raise AuthenticationFailed("oft: computed root does not match")
        return [v for v in versions if v is not None], [c for c in copath if c is not None], keys
