"""``lkh``: logical key hierarchy (RFC 2627; Wong, Gouda and Lam's key graphs), controller side.

Members sit at the leaves of a tree of degree ``d`` (option ``degree``: 2, 4, 8 or 16; default
4).  Every node has a key; a member holds the keys on the path from its leaf (its individual
key) to the root, from whose key the group secret derives.  A leave replaces every key on the
leaver's path and wraps each new key under each child's key: ``d * height - 1`` wraps, the
group-oriented rekey of Wong, Gouda and Lam, in one message.

Batches (:meth:`LkhScheme.update` with many joins and leaves) follow the marking algorithm of
Li, Yang, Gouda and Lam: joins first take the slots their own batch vacated, every node above a
changed leaf gets one new key, and each new key is wrapped once per child that still holds
members from before the batch, under that child's (new, if changed) key.  A node whose subtree
only *gained* members needs no child wraps: one wrap of its new key under its own old key
(``join = "rekey"``, default) or none at all, the old key moved forward by a one-way function
that every member applies itself (``join = "hash"``).  Each node costs at most what the
individual rekeys touching it would have cost, and shared path prefixes are paid once.

Representation (the server state at a million members): the tree is laid over the RFC 9420
binary tree (every ``log2 d``-th level; :mod:`rmsec.security.treemath`), but stored compactly:
one ``bytearray`` of 16-byte keys and one of occupancy bytes per level, position ``m`` of level
``j`` at offset ``m``, sized by the slots in use, so nothing moves when the tree grows a level.
That is about 21 bytes of keys and 1.3 of flags per member at degree 4, plus the roster (member
id to slot, about 25 bytes: :class:`~rmsec_plugins.keymgmt_flat.common.Roster`); 47 bytes per
member measured at a million.  Wire formats: :mod:`.wire`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rmsec.errors import LocalError
from rmsec.interfaces import KeyManagement, Rng, Update
from rmsec.security import keycrypto, treemath

from ..keymgmt_flat import common
from . import wire
from .member import LkhMember

NAME = wire.NAME
K = wire.K


class LkhScheme(KeyManagement):
    """Controller side of ``lkh``."""

    name: ClassVar[str] = NAME

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        common.check_options(self.options, ("degree", "join"))
        self.degree: int = common.option_choice(self.options, "degree", 4, wire.DEGREES)
        self.join_mode: str = common.option_choice(self.options, "join", "rekey", ("rekey", "hash"))
        self._k = self.degree.bit_length() - 1
        self.epoch = 0
        self.height = 1
        self._roster = common.Roster()
        self._keys: list[bytearray] = [bytearray(), bytearray()]
        self._occupied: list[bytearray] = [bytearray(), bytearray()]
        self._ensure(1)
        self.group_secret = b""
        self._confirm = b""
        #: What the last update cost, for benchmarks and tests.
        self.stats: dict[str, int] = {}

    @property
    def members(self) -> int:
        return len(self._roster)

    def has_member(self, member_id: bytes) -> bool:
        return member_id in self._roster

    # ------------------------------------------------------------------------- tree storage

    def _ensure(self, end: int) -> None:
        """Grow the levels (and the height) so that slots ``[0, end)`` exist."""
        d = self.degree
        while d**self.height < end:
            self.height += 1
            self._keys.append(bytearray())
            self._occupied.append(bytearray())
        for j in range(self.height + 1):
            need = max(1, -(-end // d**j))
            have = len(self._occupied[j])
            if need > have:
                self._keys[j] += bytes(K * (need - have))
                self._occupied[j] += bytes(need - have)

    def _key(self, j: int, m: int) -> bytes:
        return bytes(self._keys[j][K * m : K * m + K])

    def _set_key(self, j: int, m: int, key: bytes) -> None:
        self._keys[j][K * m : K * m + K] = key

    def _node(self, j: int, m: int) -> int:
        return treemath.node_at(j * self._k, m)

    def path_keys(self, slot: int) -> bytes:
        """Keys of levels 0..height on ``slot``'s path, concatenated."""
        return b"".join(self._key(j, slot >> (self._k * j)) for j in range(self.height + 1))

    # ----------------------------------------------------------------------------- updates

    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        joins, leaves = common.check_changes(joins, leaves, self._roster)
        if not joins and not leaves:
            return self.refresh()
        self._advance()
        staying = len(self._roster) - len(leaves)
        vacated = self._roster.remove(leaves)
        slots = self._roster.place(joins, vacated)
        self._ensure(self._roster.end)
        joined = set(slots)
        for m in vacated:
            if m not in joined:
                self._occupied[0][m] = 0
                self._set_key(0, m, bytes(K))
        self._fill_leaves(slots)
        changed = joined.union(vacated)
        if staying:
            hashed, entries = self._rekey_paths(changed=changed, departed=set(vacated), joined=joined)
        else:
            hashed, entries = [], []
            self._fresh_paths(changed)
        rekey = common.encode(NAME, common.REKEY, self.epoch, self.height, hashed, entries, self._confirm)
        return Update(self.epoch, rekey, self._welcomes(joins, slots))

    def _fill_leaves(self, slots: Sequence[int]) -> None:
        """Fresh individual keys for the joiners' slots (in one slice when they are a run)."""
        keys, occ = self._keys[0], self._occupied[0]
        leaf_keys = keycrypto.random_keys(self.rng, len(slots))
        if slots and slots[-1] - slots[0] == len(slots) - 1 and slots == list(range(slots[0], slots[-1] + 1)):
            first, last = slots[0], slots[-1] + 1
            keys[K * first : K * last] = leaf_keys
            occ[first:last] = b"\x01" * (last - first)
            return
        for i, m in enumerate(slots):
            occ[m] = 1
            keys[K * m : K * m + K] = leaf_keys[K * i : K * i + K]

    def _fresh_paths(self, changed: set[int]) -> None:
        """Keys above ``changed`` leaves when no member from before the batch stays: nobody
        needs a wrap (every member gets its path in its welcome), only new random keys."""
        k, d = self._k, self.degree
        for j in range(1, self.height + 1):
            below, keys, occ = self._occupied[j - 1], self._keys[j], self._occupied[j]
            parents = sorted({m >> k for m in changed})
            fresh = keycrypto.random_keys(self.rng, len(parents))
            for i, p in enumerate(parents):
                if any(below[p * d : p * d + d]):
                    occ[p] = 1
                    keys[K * p : K * p + K] = fresh[K * i : K * i + K]
                else:
                    occ[p] = 0
                    keys[K * p : K * p + K] = bytes(K)
            changed = set(parents)
        self._set_group_secret()
        self.stats = {"wraps": 0, "hashed": 0, "entries": 0}

    def _advance(self) -> None:
        if self.epoch >= common.MAX_EPOCH:
            raise LocalError("epoch counter exhausted; start a new group")
        self.epoch += 1

    def _rekey_paths(
        self, *, changed: set[int], departed: set[int], joined: set[int]
    ) -> tuple[list[int], list[list[Any]]]:
        """New keys for every node above a changed leaf, bottom-up (the marking algorithm).

        ``old`` records, for the changed nodes of the level below, whether the node still
        has a member from before this batch (only those need wraps; joiners get welcomes).
        """
        d, k, epoch, rng = self.degree, self._k, self.epoch, self.rng
        wrap = keycrypto.wrap_key
        hash_joins = self.join_mode == "hash"
        hashed: list[int] = []
        entries: list[list[Any]] = []
        wraps_total = 0
        old: dict[int, bool] = {m: m not in joined for m in changed}
        for j in range(1, self.height + 1):
            below_keys, below_occ = self._keys[j - 1], self._occupied[j - 1]
            keys, occ = self._keys[j], self._occupied[j]
            width = len(below_occ)
            parents = sorted({m >> k for m in changed})
            departed = {m >> k for m in departed}
            old_here: dict[int, bool] = {}
            for p in parents:
                node = treemath.node_at(j * k, p)
                first, last = p * d, min(p * d + d, width)
                was_occupied = occ[p]
                if not any(below_occ[first:last]):
                    occ[p] = 0
                    keys[K * p : K * p + K] = bytes(K)
                    old_here[p] = False
                    continue
                occ[p] = 1
                has_old = [old.get(c, True) and below_occ[c] == 1 for c in range(first, last)]
                old_here[p] = any(has_old)
                if was_occupied and p not in departed:
                    # Only joins below: nobody who knew the old key has left.
                    if hash_joins:
                        keys[K * p : K * p + K] = wire.join_hash(bytes(keys[K * p : K * p + K]), epoch, node)
                        hashed.append(node)
                        continue
                    new = keycrypto.random_bytes(rng, K)
                    entries.append([node, 0, wrap(keys[K * p : K * p + K], new)])
                    wraps_total += 1
                else:
                    new = keycrypto.random_bytes(rng, K)
                    mask, blob = 0, []
                    for i, c in enumerate(range(first, last)):
                        if has_old[i]:
                            mask |= 1 << i
                            blob.append(wrap(below_keys[K * c : K * c + K], new))
                    if mask:
                        entries.append([node, mask, b"".join(blob)])
                        wraps_total += len(blob)
                keys[K * p : K * p + K] = new
            old, changed = old_here, set(parents)
        self._set_group_secret()
        self.stats = {"wraps": wraps_total, "hashed": len(hashed), "entries": len(entries)}
        return hashed, entries

    def _set_group_secret(self) -> None:
        root = self._key(self.height, 0)
        if not self._occupied[self.height][0]:
            root = keycrypto.random_bytes(self.rng, K)  # nobody left: a secret no one holds
        self.group_secret = common.group_secret(root, NAME, self.epoch)
        self._confirm = common.confirmation(root, NAME, self.epoch)

    def _welcomes(self, joins: Sequence[bytes], slots: Sequence[int]) -> dict[bytes, bytes]:
        """Each joiner's path keys.  Paths share their upper parts, so the concatenated keys
        above each level are built once per node, top-down, not once per member; the CBOR is
        built by hand (a million welcomes at set-up) and held to ``encode`` by the tests."""
        if not joins:
            return {}
        k = self._k
        levels = [set(slots)]
        for _ in range(self.height):
            levels.append({m >> k for m in levels[-1]})
        above: dict[int, bytes] = {0: self._key(self.height, 0)}
        for j in range(self.height - 1, 0, -1):
            above = {p: self._key(j, p) + above[p >> k] for p in levels[j]}
        keys0 = self._keys[0]
        prefix = common.encode_prefix(NAME, common.WELCOME, self.epoch, 4, k, self.height)
        blob_head = common.cbor_head(2, K * (self.height + 1))
        uint = common.cbor_uint
        return {
            member_id: b"".join((prefix, uint(m), blob_head, keys0[K * m : K * m + K], above[m >> k]))
            for member_id, m in zip(joins, slots, strict=True)
        }

    def refresh(self) -> Update:
        """A new root key for the same members, wrapped under each child of the root."""
        self._advance()
        j, d = self.height, self.degree
        entries: list[list[Any]] = []
        wraps = 0
        if self._occupied[j][0]:
            new = keycrypto.random_bytes(self.rng, K)
            mask, blob = 0, []
            below = self._occupied[j - 1]
            for c in range(min(d, len(below))):
                if below[c]:
                    mask |= 1 << c
                    blob.append(keycrypto.wrap_key(self._key(j - 1, c), new))
            self._set_key(j, 0, new)
            entries.append([self._node(j, 0), mask, b"".join(blob)])
            wraps = len(blob)
        self._set_group_secret()
        self.stats = {"wraps": wraps, "hashed": 0, "entries": len(entries)}
        rekey = common.encode(NAME, common.REKEY, self.epoch, self.height, [], entries, self._confirm)
        return Update(self.epoch, rekey, {})

    def recover(self, member_id: bytes) -> bytes:
        """The member's current path keys, sealed under a key derived from its leaf key."""
        try:
            slot = self._roster.slot_of(member_id)
        except KeyError:
            raise LocalError(f"{member_id!r:.40} is not a member") from None
        path = self.path_keys(slot)
        sealed = keycrypto.seal(
            common.recovery_key(path[:K], NAME), path[K:],
            context=wire.recovery_context(self.epoch, slot, self.height), rng=self.rng,
        )
        return common.encode(NAME, common.RECOVERY, self.epoch, self.height, slot, sealed)

    def state_bytes(self) -> int:
        """Bytes of server state (excluding the member-id strings the controller also holds)."""
        arrays = sum(sys.getsizeof(a) for a in (*self._keys, *self._occupied))
        return arrays + self._roster.state_bytes()

    @classmethod
    def member_from_welcome(cls, welcome: bytes) -> LkhMember:
        return LkhMember.from_welcome(welcome)
