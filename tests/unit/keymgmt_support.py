"""Test support for the key-management schemes: a group driver and an adversary.

:class:`Group` drives one scheme through joins, leaves, batches, refreshes and recoveries
with real member objects, checks after every step that each current member holds the
server's group secret, and records everything an attacker could want: every rekey and
recovery ever sent, every welcome, and a copy of every member's state at every epoch.

:func:`derivable_secrets` is the attacker: given a coalition of members (current or evicted)
it starts from every key any of them ever held and computes the closure of what they can
learn: it tries **every value it holds against every wrapped key** of every message (AES-KW
integrity tells success), opens every sealed recovery with a key derived from every value,
and applies every one-way derivation the scheme defines wherever the public structure of the
messages says it applies (LKH hash-forward joins, OFT leaf / blind / node functions, regions
KEKs), until nothing new appears.  It then derives a group secret from every value for every
epoch.  A scheme is secure against the coalition if none of the secrets of epochs in which no
coalition member was a member is in that set.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from rmsec_plugins.keymgmt_flat import common
from rmsec_plugins.keymgmt_flat import scheme as flat
from rmsec_plugins.keymgmt_lkh import wire as lkh_wire
from rmsec_plugins.keymgmt_oft import wire as oft_wire
from rmsec_plugins.keymgmt_regions import wire as regions_wire

from rmsec.errors import AuthenticationFailed
from rmsec.interfaces import KeyManagement, KeyManagementMember, Update
from rmsec.security import keycrypto, treemath
from rmsec.security.untrusted import loads_array

Rng = Callable[[int], bytes]


def counter_rng(seed: int | bytes = 0) -> Rng:
    """Deterministic ``rng(n)``: SHA-256 in counter mode, so known-answer tests pin bytes."""
    prefix = seed if isinstance(seed, bytes) else b"rmsec test rng %d" % seed
    state = {"counter": 0}

    def rng(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            state["counter"] += 1
            out += hashlib.sha256(prefix + state["counter"].to_bytes(8, "big")).digest()
        return bytes(out[:n])

    return rng


# --------------------------------------------------------------------------- the group driver


@dataclasses.dataclass
class Step:
    epoch: int
    rekey: bytes
    welcomes: dict[bytes, bytes]
    secret: bytes
    public: Any = None  # scheme-specific public structure (OFT versions / occupancy)


@dataclasses.dataclass
class Recovery:
    epoch: int
    member_id: bytes
    message: bytes


class Group:
    """A scheme's server and every member, driven together, with a full transcript."""

    def __init__(self, scheme: type[KeyManagement], options: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.scheme = scheme
        self.server = scheme(rng=counter_rng(seed), options=options or {})
        self.members: dict[bytes, KeyManagementMember] = {}
        self.lagging: set[bytes] = set()
        self.steps: list[Step] = []
        self.recoveries: list[Recovery] = []
        self.secrets: dict[int, bytes] = {}
        #: member id -> list of [first epoch, epoch it left or None]
        self.spans: dict[bytes, list[list[int | None]]] = defaultdict(list)
        #: member id -> copies of its state, one per epoch it was up to date
        self.history: dict[bytes, list[KeyManagementMember]] = defaultdict(list)
        self._next_id = 0

    def new_ids(self, count: int) -> list[bytes]:
        ids = [b"member-%d" % (self._next_id + i) for i in range(count)]
        self._next_id += count
        return ids

    def current(self) -> list[bytes]:
        return sorted(self.members)

    # -- operations --------------------------------------------------------------------------

    def update(self, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        update = self.server.update(joins=joins, leaves=leaves)
        self._record(update, joins, leaves)
        return update

    def refresh(self) -> Update:
        update = self.server.refresh()
        self._record(update, (), ())
        return update

    def lag(self, member_id: bytes) -> None:
        """The member stops receiving rekeys (until :meth:`recover`)."""
        self.lagging.add(member_id)

    def recover(self, member_id: bytes) -> None:
        message = self.server.recover(member_id)
        self.recoveries.append(Recovery(self.server.epoch, member_id, message))
        member = self.members[member_id]
        if member.epoch < self.server.epoch:
            member.apply(message)
        self.lagging.discard(member_id)
        self._snapshot(member_id)

    def _record(self, update: Update, joins: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        epoch = update.epoch
        assert epoch == self.server.epoch
        assert set(update.welcomes) == set(joins)
        self.steps.append(Step(epoch, update.rekey, dict(update.welcomes), self.server.group_secret, public_state(self.server)))
        self.secrets[epoch] = self.server.group_secret
        for m in leaves:
            self.members.pop(m)
            self.lagging.discard(m)
            self.spans[m][-1][1] = epoch
        for m, member in self.members.items():
            if m not in self.lagging:
                member.apply(update.rekey)
        for m in joins:
            self.members[m] = self.scheme.member_from_welcome(update.welcomes[m])
            self.spans[m].append([epoch, None])
        for m in self.members:
            if m not in self.lagging:
                self._snapshot(m)
        self.check()

    def _snapshot(self, member_id: bytes) -> None:
        clone: KeyManagementMember = self.members[member_id].clone()  # type: ignore[attr-defined]
        self.history[member_id].append(clone)

    def check(self) -> None:
        """Every current member that is not lagging is at the server's epoch and secret."""
        for m, member in self.members.items():
            if m in self.lagging:
                continue
            assert member.epoch == self.server.epoch, m
            assert member.group_secret == self.server.group_secret, m

    # -- coalitions --------------------------------------------------------------------------

    def member_at(self, member_id: bytes, epoch: int) -> bool:
        return any(start <= epoch and (end is None or epoch < end) for start, end in self.spans[member_id])  # type: ignore[operator]

    def forbidden(self, coalition: Iterable[bytes]) -> dict[int, bytes]:
        """Group secrets of the epochs in which no coalition member was a member."""
        coalition = list(coalition)
        return {
            e: s for e, s in self.secrets.items() if not any(self.member_at(m, e) for m in coalition)
        }

    def evicted(self) -> list[bytes]:
        return sorted(m for m in self.spans if m not in self.members)


def public_state(server: KeyManagement) -> Any:
    """What the OFT adversary is told about the tree (versions and occupancy of every node):
    the true public structure, which makes it at least as strong as an attacker who has to
    infer it from the messages."""
    if server.name in ("oft", "oft-original"):
        return {
            (j, m): (server._versions[j][m], server._occupied[j][m])  # type: ignore[attr-defined]
            for j in range(server.height + 1)  # type: ignore[attr-defined]
            for m in range(len(server._occupied[j]))  # type: ignore[attr-defined]
        }
    return None


# -------------------------------------------------------------------------------- adversary


class Knowledge:
    """Every value known, plus values filed under the cell (node and version) they belong to."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self._seen: set[bytes] = set()
        self.cells: dict[Hashable, set[bytes]] = defaultdict(set)

    def add(self, value: bytes, cell: Hashable | None = None) -> bool:
        new = False
        if cell is not None and value not in self.cells[cell]:
            self.cells[cell].add(value)
            new = True
        if value not in self._seen:
            self._seen.add(value)
            self.values.append(value)
            new = True
        return new


class Wraps:
    """Every known value tried once against every wrapped key (AES-KW)."""

    def __init__(self) -> None:
        self._items: list[tuple[bytes, Hashable | None]] = []
        self._tried: list[int] = []
        self._open: list[bool] = []

    def add(self, blob: bytes, cell: Hashable | None = None) -> None:
        self._items.append((blob, cell))
        self._tried.append(0)
        self._open.append(False)

    def __len__(self) -> int:
        return len(self._items)

    def __call__(self, kn: Knowledge) -> bool:
        changed = False
        for i, (blob, cell) in enumerate(self._items):
            if self._open[i]:
                continue
            for value in kn.values[self._tried[i] :]:
                if len(value) not in (16, 32):
                    continue
                try:
                    plain = keycrypto.unwrap_key(value, blob)
                except AuthenticationFailed:
                    continue
                self._open[i] = True
                changed |= kn.add(plain, cell)
                break
            self._tried[i] = len(kn.values)
        return changed


class Seals:
    """Every sealed recovery tried with a key derived from every known value."""

    def __init__(self, derive: Callable[[bytes], bytes], found: Callable[[Knowledge, bytes, Any], bool]) -> None:
        self._derive = derive
        self._found = found
        self._items: list[tuple[bytes, bytes, Any]] = []
        self._tried: list[int] = []
        self._open: list[bool] = []

    def add(self, sealed: bytes, context: bytes, info: Any) -> None:
        self._items.append((sealed, context, info))
        self._tried.append(0)
        self._open.append(False)

    def __call__(self, kn: Knowledge) -> bool:
        changed = False
        for i, (sealed, context, info) in enumerate(self._items):
            if self._open[i]:
                continue
            for value in kn.values[self._tried[i] :]:
                if len(value) != 16:
                    continue
                try:
                    plain = keycrypto.open_sealed(self._derive(value), sealed, context=context)
                except AuthenticationFailed:
                    continue
                self._open[i] = True
                changed |= self._found(kn, plain, info)
                break
            self._tried[i] = len(kn.values)
        return changed


def close(kn: Knowledge, rules: Sequence[Callable[[Knowledge], bool]], limit: int = 100) -> None:
    for _ in range(limit):
        changed = False
        for rule in rules:
            changed |= rule(kn)
        if not changed:
            return
    raise AssertionError("knowledge closure did not converge")


def secrets_from(kn: Knowledge, scheme: str, epochs: Iterable[int]) -> set[bytes]:
    epochs = list(epochs)
    return {common.group_secret(v, scheme, e) for v in kn.values if len(v) in (16, 32) for e in epochs}


# ----------------------------------------------------------------------- per-scheme attackers


def _messages(group: Group) -> list[tuple[int, bytes]]:
    return [(s.epoch, s.rekey) for s in group.steps]


def flat_rules(kn: Knowledge, rekeys: Sequence[tuple[int, bytes]], recoveries: Sequence[tuple[int, bytes]]) -> list[Callable[[Knowledge], bool]]:
    wraps = Wraps()
    for _, data in rekeys:
        _, _, _, blob = flat.decode_rekey_untrusted(data)
        for i in range(0, len(blob), keycrypto.WRAP_LEN):
            wraps.add(blob[i : i + keycrypto.WRAP_LEN])
    seals = Seals(lambda v: common.recovery_key(v, "flat"), lambda kn, plain, _: kn.add(plain))
    for _, data in recoveries:
        _, epoch, (slot, sealed) = common.decode_untrusted(data, scheme="flat", kinds={common.RECOVERY: flat.RECOVERY_FIELDS})
        seals.add(sealed, common.recovery_context("flat", epoch, slot), None)
    return [wraps, seals]


def flat_knowledge(kn: Knowledge, states: Iterable[Any]) -> None:
    for state in states:
        for key in state.held_keys():
            kn.add(key)


def _versions_from_messages(rekeys: Sequence[tuple[int, bytes]]) -> Callable[[int, int], int]:
    """LKH: the epoch a node last got a new key (by wrap or hash), from the messages alone."""
    changes: dict[int, list[int]] = defaultdict(list)
    for epoch, data in rekeys:
        rekey = lkh_wire.decode_rekey_untrusted(data)
        for node in [*rekey.hashed, *(e.node for e in rekey.entries)]:
            changes[node].append(epoch)

    def version(node: int, epoch: int) -> int:
        return max((e for e in changes.get(node, ()) if e <= epoch), default=0)

    return version


def lkh_rules(kn: Knowledge, rekeys: Sequence[tuple[int, bytes]], recoveries: Sequence[tuple[int, bytes]], log_degree: int) -> list[Callable[[Knowledge], bool]]:
    version = _versions_from_messages(rekeys)
    wraps = Wraps()
    hashes: list[tuple[int, int]] = []
    for epoch, data in rekeys:
        rekey = lkh_wire.decode_rekey_untrusted(data)
        hashes += [(node, epoch) for node in rekey.hashed]
        for entry in rekey.entries:
            for i in range(0, len(entry.wraps), lkh_wire.W):
                wraps.add(entry.wraps[i : i + lkh_wire.W], (entry.node, epoch))

    def hash_forward(kn: Knowledge) -> bool:
        changed = False
        for node, epoch in hashes:
            for old in list(kn.cells.get((node, version(node, epoch - 1)), ())):
                changed |= kn.add(lkh_wire.join_hash(old, epoch, node), (node, epoch))
        return changed

    def recovered(kn: Knowledge, plain: bytes, info: Any) -> bool:
        epoch, slot = info
        changed = False
        for j in range(len(plain) // lkh_wire.K):
            node = treemath.node_at((j + 1) * log_degree, slot >> (log_degree * (j + 1)))
            changed |= kn.add(plain[lkh_wire.K * j : lkh_wire.K * (j + 1)], (node, version(node, epoch)))
        return changed

    seals = Seals(lambda v: common.recovery_key(v, "lkh"), recovered)
    for _, data in recoveries:
        _, epoch, (height, slot, sealed) = common.decode_untrusted(
            data, scheme="lkh", kinds={common.RECOVERY: lkh_wire.RECOVERY_FIELDS}
        )
        seals.add(sealed, lkh_wire.recovery_context(epoch, slot, height), (epoch, slot))
    kn.lkh_version = version  # type: ignore[attr-defined]
    return [wraps, hash_forward, seals]


def lkh_knowledge(kn: Knowledge, states: Iterable[Any], version: Callable[[int, int], int]) -> None:
    for state in states:
        k = state.log_degree
        for j, key in enumerate(state.held_keys()):
            node = treemath.node_at(j * k, state.slot >> (k * j))
            kn.add(key, (node, version(node, state.epoch)))


def oft_rules(
    kn: Knowledge, group_steps: Sequence[Step], recoveries: Sequence[tuple[int, bytes]]
) -> list[Callable[[Knowledge], bool]]:
    """OFT cells: ("s", slot) secrets, ("k", j, m, version) keys, ("b", j, m, version) blinded."""
    public = {s.epoch: s.public for s in group_steps}
    wraps = Wraps()
    for step in group_steps:
        rekey = oft_wire.decode_rekey_untrusted(step.rekey)
        pub = step.public
        for entry in rekey.entries:
            j, m = treemath.level(entry.node), treemath.position(entry.node)
            targets = []
            if entry.mask & oft_wire.WRAP_LEFT:
                targets.append((j - 1, 2 * m + 1))
            if entry.mask & oft_wire.WRAP_RIGHT:
                targets.append((j - 1, 2 * m))
            for i, (cj, cm) in enumerate(targets):
                wraps.add(entry.wraps[oft_wire.W * i : oft_wire.W * (i + 1)], ("b", cj, cm, pub[(cj, cm)][0]))

    def derive(kn: Knowledge) -> bool:
        changed = False
        for pub in public.values():
            height = max(j for j, _ in pub)
            for j in range(height + 1):
                for (jj, m), (ver, occ) in pub.items():
                    if jj != j or not occ:
                        continue
                    node = treemath.node_at(j, m)
                    if j == 0:
                        for secret in list(kn.cells.get(("s", m), ())):
                            changed |= kn.add(oft_wire.leaf_key(secret, node, ver), ("k", 0, m, ver))
                    else:
                        lefts = _blinded(kn, pub, j - 1, 2 * m)
                        rights = _blinded(kn, pub, j - 1, 2 * m + 1)
                        for left in lefts:
                            for right in rights:
                                changed |= kn.add(oft_wire.node_key(left, right, node, ver), ("k", j, m, ver))
                    for key in list(kn.cells.get(("k", j, m, ver), ())):
                        changed |= kn.add(oft_wire.blind(key, node), ("b", j, m, ver))
        return changed

    def recovered(kn: Knowledge, plain: bytes, info: Any) -> bool:
        epoch, slot, height = info
        pub = public[epoch]
        split = 4 * (height + 1)
        changed = False
        for j in range(height):
            sib = (slot >> j) ^ 1
            ver = pub.get((j, sib), (0, 0))[0]
            changed |= kn.add(plain[split + oft_wire.K * j : split + oft_wire.K * (j + 1)], ("b", j, sib, ver))
        return changed

    seals = Seals(lambda v: common.recovery_key(v, "oft"), recovered)
    for _, data in recoveries:
        _, epoch, (height, slot, sealed) = common.decode_untrusted(
            data, scheme="oft", kinds={common.RECOVERY: oft_wire.RECOVERY_FIELDS}
        )
        seals.add(sealed, oft_wire.recovery_context(epoch, slot, height), (epoch, slot, height))
    return [wraps, derive, seals]


def _blinded(kn: Knowledge, pub: dict[tuple[int, int], tuple[int, int]], j: int, m: int) -> list[bytes]:
    ver, occ = pub.get((j, m), (0, 0))
    if not occ:
        return [oft_wire.BLANK]
    return list(kn.cells.get(("b", j, m, ver), ()))


def oft_knowledge(kn: Knowledge, states: Iterable[Any]) -> None:
    for state in states:
        slot = state.slot
        kn.add(state._secret, ("s", slot))
        for j, key in enumerate(state.path_keys):
            kn.add(key, ("k", j, slot >> j, state._versions[j]))
        for j, blinded in enumerate(state._copath):
            # the copath node's version is not in the member's state: file it under every
            # version the public structure gives that node at this epoch (the attacker knows)
            kn.add(blinded, ("b?", j, (slot >> j) ^ 1, state.epoch))


def oft_file_copaths(kn: Knowledge, group_steps: Sequence[Step]) -> None:
    public = {s.epoch: s.public for s in group_steps}
    for cell in [c for c in kn.cells if isinstance(c, tuple) and c[0] == "b?"]:
        _, j, m, epoch = cell
        ver = public[epoch].get((j, m), (0, 0))[0]
        for value in kn.cells[cell]:
            kn.add(value, ("b", j, m, ver))


# -------------------------------------------------------------------------------- entry points


def derivable_secrets(group: Group, coalition: Iterable[bytes]) -> set[bytes]:
    """Every group secret the coalition can compute from all it ever held and all messages."""
    coalition = list(coalition)
    states = [state for m in coalition for state in group.history.get(m, [])]
    recoveries = [(r.epoch, r.message) for r in group.recoveries]
    rekeys = _messages(group)
    kn = Knowledge()
    name = group.server.name
    epochs = list(group.secrets)
    if name == "flat":
        flat_knowledge(kn, states)
        close(kn, flat_rules(kn, rekeys, recoveries))
    elif name == "lkh":
        rules = lkh_rules(kn, rekeys, recoveries, group.server._k)  # type: ignore[attr-defined]
        lkh_knowledge(kn, states, kn.lkh_version)  # type: ignore[attr-defined]
        close(kn, rules)
    elif name in ("oft", "oft-original"):
        oft_knowledge(kn, states)
        oft_file_copaths(kn, group.steps)
        close(kn, oft_rules(kn, group.steps, recoveries))
        name = "oft"
    elif name == "regions":
        _regions_closure(kn, group, states, recoveries)
    else:
        raise AssertionError(f"no adversary for {name}")
    return secrets_from(kn, name, epochs)


def _regions_closure(kn: Knowledge, group: Group, states: list[Any], recoveries: list[tuple[int, bytes]]) -> None:
    """Each region's inner messages attacked with that inner scheme's rules, the region KEKs
    derived from every value for every inner epoch, and every outer wrap brute-forced."""
    server = group.server
    rules: list[Callable[[Knowledge], bool]] = []
    outer = Wraps()
    inner_rekeys: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    inner_recoveries: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for step in group.steps:
        rekey = regions_wire.decode_rekey_untrusted(step.rekey)
        outer.add(rekey.trunk)
        for part in rekey.parts:
            outer.add(part.wrap)
            if part.inner:
                _, inner_epoch = _header(part.inner)
                inner_rekeys[part.region].append((inner_epoch, part.inner))
    for _, data in recoveries:
        _, _, (region, _inner_epoch, inner, wrap, _) = common.decode_untrusted(
            data, scheme="regions", kinds={common.RECOVERY: regions_wire.RECOVERY_FIELDS}
        )
        outer.add(wrap)
        _, inner_epoch = _header(inner)
        inner_recoveries[region].append((inner_epoch, inner))
    inner_epochs: dict[int, list[int]] = {}
    for manager in server.managers:  # type: ignore[attr-defined]
        r, scheme = manager.index, manager.spec.scheme
        region_states = [s.inner for s in states if s.region == r]
        # the inner welcomes' epochs too: a region's first epoch has no rekey
        epochs = sorted({e for e, _ in inner_rekeys[r]} | {s.epoch for s in region_states} | set(range(1, manager.inner.epoch + 1)))
        inner_epochs[r] = epochs
        if scheme == "flat":
            flat_knowledge(kn, region_states)
            rules += flat_rules(kn, inner_rekeys[r], inner_recoveries[r])
        elif scheme == "lkh":
            region_rules = lkh_rules(kn, inner_rekeys[r], inner_recoveries[r], manager.inner._k)
            lkh_knowledge(kn, region_states, kn.lkh_version)  # type: ignore[attr-defined]
            rules += region_rules
        else:
            raise AssertionError("the regions adversary covers flat and lkh regions")
    for state in states:
        kn.add(state._group_key)
    done = [0]
    derived: set[bytes] = set()

    def keks(kn: Knowledge) -> bool:
        """A region KEK from every value (as a candidate root / group key) for every inner
        epoch; KEKs themselves are not fed back in (they are never a root)."""
        changed = False
        new = kn.values[done[0] :]
        done[0] = len(kn.values)
        for value in new:
            if len(value) not in (16, 32) or value in derived:
                continue
            for manager in server.managers:  # type: ignore[attr-defined]
                for e in inner_epochs[manager.index]:
                    kek = regions_wire.region_kek(common.group_secret(value, manager.spec.scheme, e))
                    derived.add(kek)
                    changed |= kn.add(kek)
        return changed

    close(kn, [*rules, keks, outer])


def _header(data: bytes) -> tuple[int, int]:
    """``(kind, epoch)`` of a message, read without checking the rest."""
    values = loads_array(data, max_len=common.MAX_MESSAGE, what="message")
    return values[2], values[3]


# ------------------------------------------------------------------ known-answer messages

#: The members every known-answer run starts with.
KAT_NAMES = [b"alice", b"bob", b"carol", b"dave", b"erin"]


def kat_messages(
    scheme: type[KeyManagement], label: bytes, options: dict[str, object]
) -> tuple[KeyManagement, dict[str, bytes]]:
    """One fixed history (join five, bob leaves, frank joins, carol recovers, refresh) under a
    counter rng seeded with ``label``: the messages every scheme's known answers pin."""
    server = scheme(rng=counter_rng(label), options=options)
    out = {"welcome": server.update(joins=KAT_NAMES).welcomes[b"alice"]}
    out["leave"] = server.update(leaves=[b"bob"]).rekey
    out["join"] = server.update(joins=[b"frank"]).rekey
    out["recovery"] = server.recover(b"carol")
    out["refresh"] = server.refresh().rekey
    out["secret"] = server.group_secret
    return server, out


def pinned(value: bytes, expected: str) -> bool:
    """Short messages are pinned whole, long ones by SHA-256."""
    return value.hex() == expected or hashlib.sha256(value).hexdigest() == expected
