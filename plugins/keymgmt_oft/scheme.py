"""``oft``: one-way function tree (McGrew and Sherman), strengthened against collusion.

A binary tree whose leaf keys are the members' secrets and whose inner keys are *computed*:
``k_p = mix(blind(k_left), blind(k_right))``.  A member holds its own secret and the blinded
keys of its copath and computes its path up to the root itself, so a change to one leaf
costs about two wraps per level: each new blinded key on the path goes, wrapped, to the
members on the other side (about ``2 log2 n``, against ``d log_d n`` for LKH).

Collusion.  In the original scheme a node keeps its blinded key until something below it
changes, so a member that leaves at ``t1`` (and knows the blinded key of the root's other
half, unchanged since) and a member that joins at ``t2`` (and is handed the blinded key of the
first half, unchanged since ``t1``) can together compute the group key of ``[t1, t2)``, when
neither was a member (Horng 2002; Ku and Chen 2003).  The strengthened variant (default)
refreshes every node *beside* a changed path as well, by moving its version forward: its key
becomes ``mix(b_left, b_right, node, new version)``, which its own members compute without any
message but which nobody outside it can, so every value a member ever saw is stale once it has
left, and every value a joiner is handed is new.  The cost is nothing extra on the wire: the
refreshed nodes' blinded keys are the ones the path wraps already carry.
:class:`OriginalOftScheme` (not registered; ``collusion_resistant = False``) keeps the original
rule so the tests can show the attack working against it and failing against ``oft``.

Representation: per level one ``bytearray`` of 16-byte keys (the leaves hold the members'
secrets; leaf keys are derived on demand), one of occupancy bytes and one ``array('I')`` of
versions, laid over the RFC 9420 tree (:mod:`rmsec.security.treemath`).  Wire formats and the
functions: :mod:`.wire`.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rmsec.errors import LocalError
from rmsec.interfaces import KeyManagement, Rng, Update
from rmsec.security import keycrypto, treemath

from ..keymgmt_flat import common
from . import wire
from .member import OftMember

NAME = wire.NAME
K = wire.K
BLANK = wire.BLANK


class OftScheme(KeyManagement):
    """Controller side of ``oft`` (strengthened)."""

    name: ClassVar[str] = NAME
    variant: ClassVar[int] = wire.STRENGTHENED

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        common.check_options(self.options, ())
        self.epoch = 0
        self.height = 1
        self._roster = common.Roster()
        # level 0 holds the members' secrets, the other levels the computed node keys
        self._keys: list[bytearray] = [bytearray(), bytearray()]
        self._occupied: list[bytearray] = [bytearray(), bytearray()]
        self._versions: list[array.array[int]] = [array.array("I"), array.array("I")]
        self._ensure(1)
        self.group_secret = b""
        self._confirm = b""
        self.stats: dict[str, int] = {}

    @property
    def members(self) -> int:
        return len(self._roster)

    def has_member(self, member_id: bytes) -> bool:
        return member_id in self._roster

    # ------------------------------------------------------------------------ tree storage

    def _ensure(self, end: int) -> None:
        while 1 << self.height < end:
            self.height += 1
            self._keys.append(bytearray())
            self._occupied.append(bytearray())
            self._versions.append(array.array("I"))
        for j in range(self.height + 1):
            need = max(1, -(-end >> j))
            have = len(self._occupied[j])
            if need > have:
                self._keys[j] += bytes(K * (need - have))
                self._occupied[j] += bytes(need - have)
                self._versions[j].extend([0] * (need - have))

    def _key(self, j: int, m: int) -> bytes:
        raw = bytes(self._keys[j][K * m : K * m + K])
        if j == 0:
            return wire.leaf_key(raw, 2 * m, self._versions[0][m])
        return raw

    def _blinded(self, j: int, m: int) -> bytes:
        if m >= len(self._occupied[j]) or not self._occupied[j][m]:
            return BLANK
        return wire.blind(self._key(j, m), treemath.node_at(j, m))

    # ----------------------------------------------------------------------------- updates

    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        joins, leaves = common.check_changes(joins, leaves, self._roster)
        if not joins and not leaves:
            return self.refresh()
        self._advance()
        epoch = self.epoch
        old_height = self.height
        had_members = len(self._roster) > 0
        staying = len(self._roster) - len(leaves)
        vacated = self._roster.remove(leaves)
        slots = self._roster.place(joins, vacated)
        self._ensure(self._roster.end)
        joined = set(slots)
        secrets0, occ0, ver0 = self._keys[0], self._occupied[0], self._versions[0]
        for m in vacated:
            if m not in joined:
                occ0[m] = 0
                secrets0[K * m : K * m + K] = BLANK
                ver0[m] = epoch
        secrets = keycrypto.random_keys(self.rng, len(slots))
        for i, m in enumerate(slots):
            occ0[m] = 1
            secrets0[K * m : K * m + K] = secrets[K * i : K * i + K]
            ver0[m] = epoch
        changed = joined.union(vacated)
        # Every ancestor of a changed leaf; after growth also the old root's new ancestors,
        # whose keys are new even if no change lies below them.
        paths = [changed]
        for j in range(1, self.height + 1):
            paths.append({m >> 1 for m in paths[-1]})
            if had_members and j > old_height:
                paths[j].add(0)
        entries, blinded = self._recompute(paths, joined, wraps=staying > 0)
        rekey = common.encode(NAME, common.REKEY, epoch, self.height, entries, self._confirm)
        return Update(epoch, rekey, self._welcomes(joins, slots, blinded))

    def _advance(self) -> None:
        if self.epoch >= common.MAX_EPOCH:
            raise LocalError("epoch counter exhausted; start a new group")
        self.epoch += 1

    def _beside(self, paths: list[set[int]], j: int) -> set[int]:
        """Nodes of level ``j`` refreshed because they sit beside a changed path."""
        if j == self.height or (self.variant != wire.STRENGTHENED and j > 0):
            return set()
        width = len(self._occupied[j])
        return {m ^ 1 for m in paths[j] if m ^ 1 < width} - paths[j]

    def _recompute(self, paths: list[set[int]], joined: set[int], *, wraps: bool) -> tuple[list[list[Any]], list[dict[int, bytes]]]:
        """New keys bottom-up for the changed paths and the nodes beside them; the entries,
        and the new blinded keys by level (each computed once, reused for the welcomes).

        ``old`` tells, for the changed nodes of the level below, whether they still hold a
        member from before this batch (only those need wraps; joiners get welcomes).  With
        ``wraps`` false (nobody from before stays) no entries are made at all.
        """
        epoch = self.epoch
        wrap = keycrypto.wrap_key
        ver0, occ0 = self._versions[0], self._occupied[0]
        for m in self._beside(paths, 0):
            if occ0[m]:
                ver0[m] = epoch
        blinded: list[dict[int, bytes]] = [
            {m: self._blinded(0, m) for m in paths[0] | self._beside(paths, 0)}
        ]
        old: dict[int, bool] = {m: m not in joined and occ0[m] == 1 for m in paths[0]}
        entries: list[list[Any]] = []
        wraps_total = 0
        for j in range(1, self.height + 1):
            keys, occ, ver = self._keys[j], self._occupied[j], self._versions[j]
            below, below_occ = blinded[j - 1], self._occupied[j - 1]
            here: dict[int, bytes] = {}
            old_here: dict[int, bool] = {}
            for p in sorted(paths[j] | self._beside(paths, j)):
                node = treemath.node_at(j, p)
                left = below[2 * p] if 2 * p in below else self._blinded(j - 1, 2 * p)
                right = below[2 * p + 1] if 2 * p + 1 in below else self._blinded(j - 1, 2 * p + 1)
                ver[p] = epoch
                if left == BLANK and right == BLANK:
                    occ[p] = 0
                    keys[K * p : K * p + K] = BLANK
                    here[p] = BLANK
                else:
                    occ[p] = 1
                    key = wire.node_key(left, right, node, epoch)
                    keys[K * p : K * p + K] = key
                    here[p] = wire.blind(key, node)
                if p not in paths[j] or not wraps:
                    continue
                # a changed node: its children's new blinded keys go across, wrapped
                mask = (wire.BLANK_LEFT if left == BLANK else 0) | (wire.BLANK_RIGHT if right == BLANK else 0)
                blob = []
                has_old = []
                for i, (c, other) in enumerate(((2 * p, right), (2 * p + 1, left))):
                    present = c < len(below_occ) and below_occ[c] == 1
                    has_old.append(present and old.get(c, True))
                    if has_old[i] and other != BLANK:
                        mask |= 1 << i
                        blob.append(wrap(self._key(j - 1, c), other))
                old_here[p] = any(has_old)
                entries.append([node, mask, b"".join(blob)])
                wraps_total += len(blob)
            old = old_here
            blinded.append(here)
        root = self._key(self.height, 0)
        if not self._occupied[self.height][0]:
            root = keycrypto.random_bytes(self.rng, K)  # nobody left: a secret no one holds
        self.group_secret = common.group_secret(root, NAME, epoch)
        self._confirm = wire.confirmation(root, epoch)
        self.stats = {"wraps": wraps_total, "entries": len(entries)}
        return entries, blinded

    def refresh(self) -> Update:
        """Move the root's version forward: a new group secret that every member computes
        itself from the root's children.  No wraps; the rekey has no entries."""
        self._advance()
        j, epoch = self.height, self.epoch
        left, right = self._blinded(j - 1, 0), self._blinded(j - 1, 1)
        self._versions[j][0] = epoch
        if left != BLANK or right != BLANK:
            self._keys[j][0:K] = wire.node_key(left, right, treemath.node_at(j, 0), epoch)
            root = self._key(j, 0)
        else:
            root = keycrypto.random_bytes(self.rng, K)  # nobody is a member
        self.group_secret = common.group_secret(root, NAME, epoch)
        self._confirm = wire.confirmation(root, epoch)
        self.stats = {"wraps": 0, "entries": 0}
        rekey = common.encode(NAME, common.REKEY, epoch, self.height, [], self._confirm)
        return Update(epoch, rekey, {})

    # ---------------------------------------------------------------------- member material

    def _path_material(self, slot: int) -> tuple[list[int], bytes]:
        """Versions of the path (levels 0..height) and blinded copath (levels 0..height-1)."""
        versions = [self._versions[j][slot >> j] for j in range(self.height + 1)]
        copath = b"".join(self._blinded(j, (slot >> j) ^ 1) for j in range(self.height))
        return versions, copath

    def _welcomes(
        self, joins: Sequence[bytes], slots: Sequence[int], blinded: list[dict[int, bytes]]
    ) -> dict[bytes, bytes]:
        """Each joiner's secret, path versions and blinded copath.  Copaths share their upper
        parts, so the material above each level is built once per node, top-down."""
        if not joins:
            return {}
        h = self.height
        levels = [set(slots)]
        for _ in range(h):
            levels.append({m >> 1 for m in levels[-1]})
        vers: dict[int, bytes] = {0: self._versions[h][0].to_bytes(4, "big")}
        cop: dict[int, bytes] = {0: b""}
        for j in range(h - 1, 0, -1):
            vj = self._versions[j]
            vers = {p: vj[p].to_bytes(4, "big") + vers[p >> 1] for p in levels[j]}
            known = blinded[j]
            cop = {p: (known.get(p ^ 1) or self._blinded(j, p ^ 1)) + cop[p >> 1] for p in levels[j]}
        secrets0, ver0 = self._keys[0], self._versions[0]
        prefix = common.encode_prefix(NAME, common.WELCOME, self.epoch, 7, self.variant, h)
        head_k = common.cbor_head(2, K)
        head_v = common.cbor_head(2, 4 * (h + 1))
        head_c = common.cbor_head(2, K * h)
        tail = common.cbor_head(2, K) + self._confirm
        uint = common.cbor_uint
        return {
            member_id: b"".join((
                prefix, uint(m), head_k, secrets0[K * m : K * m + K],
                head_v, ver0[m].to_bytes(4, "big"), vers[m >> 1],
                head_c, blinded[0].get(m ^ 1) or self._blinded(0, m ^ 1), cop[m >> 1], tail,
            ))
            for member_id, m in zip(joins, slots, strict=True)
        }

    def recover(self, member_id: bytes) -> bytes:
        """The member's path versions and blinded copath, sealed under its recovery key."""
        try:
            slot = self._roster.slot_of(member_id)
        except KeyError:
            raise LocalError(f"{member_id!r:.40} is not a member") from None
        versions, copath = self._path_material(slot)
        secret = bytes(self._keys[0][K * slot : K * slot + K])
        sealed = keycrypto.seal(
            common.recovery_key(secret, NAME), wire.pack_versions(versions) + copath,
            context=wire.recovery_context(self.epoch, slot, self.height), rng=self.rng,
        )
        return common.encode(NAME, common.RECOVERY, self.epoch, self.height, slot, sealed)

    def state_bytes(self) -> int:
        """Bytes of server state (excluding the member-id strings the controller also holds)."""
        arrays = sum(sys.getsizeof(a) for a in (*self._keys, *self._occupied, *self._versions))
        return arrays + self._roster.state_bytes()

    @classmethod
    def member_from_welcome(cls, welcome: bytes) -> OftMember:
        return OftMember.from_welcome(welcome)


class OriginalOftScheme(OftScheme):
    """The original OFT refresh rule: only the leaf beside a changed leaf gets a new key.

    Not registered.  It exists so the tests can show the published collusion attack
    (an evicted member and a later joiner together compute a key from between their
    memberships) succeeding here and failing against :class:`OftScheme`.
    """

    name: ClassVar[str] = "oft-original"
    variant: ClassVar[int] = wire.ORIGINAL
    collusion_resistant: ClassVar[bool] = False
