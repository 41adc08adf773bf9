"""``regions``: regional key managers (trunk + leaf regions, in the manner of Iolus / Hardjono).

The group is split into regions, each served by a *regional manager* that runs its own inner
scheme (``flat``, ``lkh`` or ``oft``, each region its own choice and options) over the region's
members only.  The managers form the *trunk*: a ``flat`` group of their own, whose key the
controller uses to send each epoch's new group key to every manager at once.  Each manager
re-encrypts the group key under its region's key (a key derived from the inner scheme's group
secret) for its members.  So:

- a join or leave rekeys only its own region's key tree (the inner scheme's update, e.g.
  ``log4`` of the *region's* size for ``lkh``); every other region sees one wrap, which its
  manager produces;
- a region can refresh its own keys on its own period (:meth:`RegionsScheme.refresh_region`;
  the periods are in :attr:`RegionsScheme.refresh_periods` for the controller's timers);
- the controller keeps every region's key server (its inner scheme); a manager translates.

Trust.  The regional managers sit on repair heads, so **each head that hosts a manager is
trusted with the group's traffic** (it holds the group key of every epoch from its join on,
and could decrypt everything) **and with its region's key** (its seat: it could hand it to an
expelled member of its region).  It cannot admit anyone (the key server stays here) and
cannot make members believe a wrong key (a translation must open to the key confirmation of
the controller's signed rekey).  Members need not trust heads that host no manager (those
cache and repair ciphertext only, DESIGN.md §2), and they trust their own region's manager,
not the others.  A manager that leaves or is expelled is replaced as described below.

This module is the sans-IO composition: the controller's side.  Regions without a ``manager``
option keep their manager *in process* (:class:`RegionalManager`; the controller translates
for them and the rekey carries their wraps).  A region whose table names a ``manager`` (the
member id of a repair head) is *remote* while that head is registered: the controller
leaves its wrap out of the rekey and the head's :class:`~.manager.RegionalManagerMember`
translates (``RegionalManager.translate``'s job, on the head).  What such a head holds:

- the region's *seat*: a member of the region's inner scheme created for the manager (so it
  follows the region's inner rekeys like any member and always has the region key);
- its trunk membership (a ``flat`` member; the trunk key unwraps each epoch's group key);
- the group key of every epoch from its join on.

It gets them in a *manager state* (its welcome, or a key recovery), over TLS.  When the head
leaves, its region goes back in process and both its seat and its trunk membership are
replaced (the region's inner rekey evicts the old seat; the trunk is rekeyed, and the other
manager heads, whose trunk wrap no longer opens, recover their state over TLS), so a departed
head reads nothing of later epochs.  The inner key servers stay at the controller: a manager
head translates, it does not admit or evict.

Placement: a member goes to the region :meth:`RegionsScheme.place` named for it (the security
layer does it when a member names its region at registration: :meth:`place_named`); otherwise
to a region chosen by a hash of its id (among the regions without a manager head, if any), so
the contract's ``update(joins=...)`` works unchanged.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rmsec.errors import ConfigError, LocalError
from rmsec.interfaces import KeyManagement, KeyManagementMember, Rng, Update
from rmsec.security import keycrypto

from ..keymgmt_flat import common
from ..keymgmt_flat.scheme import FlatMember, FlatScheme
from ..keymgmt_lkh.scheme import LkhScheme
from ..keymgmt_oft.scheme import OftScheme
from . import wire
from .manager import TRUNK_KEY_LABEL, RegionalManagerMember, trunk_key
from .member import RegionsMember

NAME = wire.NAME
K = wire.K
INNER: dict[str, type[KeyManagement]] = {"flat": FlatScheme, "lkh": LkhScheme, "oft": OftScheme}
DEFAULT_REGIONS = 16
__all__ = ["TRUNK_KEY_LABEL", "RegionSpec", "RegionalManager", "RegionsScheme", "trunk_key"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Seat:
    """A member slot kept for a manager head: its id, its welcome and the epoch of that."""

    member_id: bytes
    welcome: bytes
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class RegionSpec:
    """One region: its name, inner scheme and options, and its own refresh period (seconds)."""

    name: str
    scheme: str = "lkh"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    refresh: float | None = None
    #: Member id of the repair head that hosts this region's manager (None: in process).
    manager: bytes | None = None


def parse_regions(options: Mapping[str, Any]) -> list[RegionSpec]:
    """``regions``: a count (every region ``inner`` with ``inner_options``) or a list of
    tables ``{name, scheme, options, refresh, manager}``."""
    value = options.get("regions", DEFAULT_REGIONS)
    inner = options.get("inner", "lkh")
    inner_options = options.get("inner_options", {})
    if type(value) is int:
        if not 1 <= value <= wire.MAX_REGIONS:
            raise ConfigError(f"regions must be 1..{wire.MAX_REGIONS}")
        specs = [RegionSpec(f"region-{i}", inner, inner_options) for i in range(value)]
    elif isinstance(value, list) and 1 <= len(value) <= wire.MAX_REGIONS:
        specs = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConfigError("each region is a table {name, scheme, options, refresh}")
            common.check_options(item, ("name", "scheme", "options", "refresh", "manager"))
            refresh = item.get("refresh")
            if refresh is not None and (type(refresh) not in (int, float) or not refresh > 0):
                raise ConfigError("a region's refresh is a positive number of seconds")
            manager = item.get("manager")
            if manager is not None and (type(manager) is not str or not 1 <= len(manager.encode()) <= 255):
                raise ConfigError("a region's manager is the member id (1..255 bytes) of its head")
            specs.append(RegionSpec(
                str(item.get("name", f"region-{i}")), item.get("scheme", inner), item.get("options", inner_options),
                None if refresh is None else float(refresh), None if manager is None else manager.encode(),
            ))
    else:
        raise ConfigError(f"regions must be a count or a list of 1..{wire.MAX_REGIONS} tables")
    for spec in specs:
        if spec.scheme not in INNER:
            raise ConfigError(f"a region's scheme must be one of {sorted(INNER)}, got {spec.scheme!r}")
        if not isinstance(spec.options, Mapping):
            raise ConfigError("a region's options must be a table")
    if len({s.name for s in specs}) != len(specs):
        raise ConfigError("region names must differ")
    managers = [s.manager for s in specs if s.manager is not None]
    if len(set(managers)) != len(managers):
        raise ConfigError("a head manages one region")
    return specs


class RegionalManager:
    """What runs on the head that hosts one region: its trunk membership and its region's
    inner scheme.  It never sees another region's keys."""

    def __init__(self, index: int, spec: RegionSpec, inner: KeyManagement, trunk: FlatMember) -> None:
        self.index = index
        self.spec = spec
        self.inner = inner
        self.trunk = trunk

    def region_kek(self) -> bytes:
        return wire.region_kek(self.inner.group_secret)

    def translate(self, trunk_wrap: bytes) -> bytes:
        """Re-encrypt the epoch's group key from the trunk key to this region's key."""
        group_key = keycrypto.unwrap_key(trunk_key(self.trunk.group_secret), trunk_wrap)
        return keycrypto.wrap_key(self.region_kek(), group_key)


class RegionsScheme(KeyManagement):
    """Controller side of ``regions`` (trunk manager and, in process, every regional manager)."""

    name: ClassVar[str] = NAME

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        common.check_options(self.options, ("regions", "inner", "inner_options"))
        specs = parse_regions(self.options)
        self.epoch = 0
        self.group_secret = b""
        self._group_key = keycrypto.random_bytes(rng, K)
        self._trunk = FlatScheme(rng=rng)
        manager_ids = [b"manager %d" % i for i in range(len(specs))]
        trunk_update = self._trunk.update(joins=manager_ids)
        self.managers = [
            RegionalManager(
                i, spec, INNER[spec.scheme](rng=rng, options=spec.options),
                FlatScheme.member_from_welcome(trunk_update.welcomes[manager_ids[i]]),
            )
            for i, spec in enumerate(specs)
        ]
        #: Regions of the members placed explicitly; the others are where their hash says.
        self._where: dict[bytes, int] = {}
        self._placement: dict[bytes, int] = {}
        self.stats: dict[str, int] = {}
        #: Manager heads: head member id -> region; region -> the head hosting it right now.
        self._heads = {spec.manager: i for i, spec in enumerate(specs) if spec.manager is not None}
        self._active: dict[int, bytes] = {}
        self._generation = 0
        self._seats: dict[int, _Seat] = {}
        self._trunk_seats = {
            r: _Seat(manager_ids[r], trunk_update.welcomes[manager_ids[r]], self._trunk.epoch)
            for r in self._heads.values()
        }
        for r in sorted(self._heads.values()):
            seat_id = self._seat_id(r)
            inner = self.managers[r].inner
            self._seats[r] = _Seat(seat_id, inner.update(joins=[seat_id]).welcomes[seat_id], inner.epoch)
        #: Hash placement avoids the regions managed by heads (their members name them).
        self._hashed = [m.index for m in self.managers if m.spec.manager is None] or list(range(len(specs)))

    def _seat_id(self, region: int) -> bytes:
        self._generation += 1
        return b"\x00seat %d.%d" % (region, self._generation)

    def _real_members(self, region: int) -> int:
        return self.managers[region].inner.members - (1 if region in self._seats else 0)

    # ----------------------------------------------------------------- manager heads

    def hosts_manager(self, member_id: bytes) -> bool:
        """Whether ``member_id`` is the head a region's ``manager`` option names."""
        return member_id in self._heads

    @property
    def remote_regions(self) -> dict[int, bytes]:
        """Region -> the manager head translating for it now."""
        return dict(self._active)

    def place_named(self, member_id: bytes, name: str) -> int:
        """:meth:`place` by the region's name (what a member names at registration)."""
        for manager in self.managers:
            if manager.spec.name == name:
                self.place(member_id, manager.index)
                return manager.index
        raise LocalError(f"no region named {name!r:.80}")

    def manager_state(self, region: int) -> bytes:
        """Everything region ``region``'s manager head needs, at the current epoch (sent over
        TLS only: it holds keys in the clear)."""
        manager, seat, trunk_seat = self.managers[region], self._seats[region], self._trunk_seats[region]
        seat_recovery = manager.inner.recover(seat.member_id) if manager.inner.epoch > seat.epoch else b""
        trunk_recovery = self._trunk.recover(trunk_seat.member_id) if self._trunk.epoch > trunk_seat.epoch else b""
        return common.encode(
            NAME, wire.MANAGER, self.epoch, region, wire.INNER_CODES[manager.spec.scheme], seat.welcome,
            seat_recovery, trunk_seat.welcome, trunk_recovery, self._group_key,
        )

    def _rotate_trunk(self, region: int) -> None:
        """Replace a departed head's trunk membership (the in-process managers follow)."""
        old = self._trunk_seats[region]
        new_id = self._seat_id(region)
        update = self._trunk.update(leaves=[old.member_id], joins=[new_id])
        for manager in self.managers:
            if manager.index == region:
                manager.trunk = FlatScheme.member_from_welcome(update.welcomes[new_id])
            else:
                manager.trunk.apply(update.rekey)
        self._trunk_seats[region] = _Seat(new_id, update.welcomes[new_id], self._trunk.epoch)

    @property
    def members(self) -> int:
        return sum(self._real_members(m.index) for m in self.managers)

    def has_member(self, member_id: bytes) -> bool:
        if member_id in self._heads:
            return self._active.get(self._heads[member_id]) == member_id
        region = self.region_of(member_id)
        return _has_member(self.managers[region].inner, member_id)

    @property
    def refresh_periods(self) -> dict[int, float]:
        """Region index -> its own refresh period (for the controller's timers)."""
        return {m.index: m.spec.refresh for m in self.managers if m.spec.refresh is not None}

    @property
    def part_refresh_periods(self) -> dict[int, float]:
        """The regions' own periods: the controller refreshes each region on its timer."""
        return self.refresh_periods

    def refresh_part(self, part: int) -> Update:
        return self.refresh_region(part)

    def place(self, member_id: bytes, region: int) -> None:
        """Put ``member_id`` in ``region`` when it next joins (the region of its head)."""
        common.check_member_id(member_id)
        if not 0 <= region < len(self.managers):
            raise LocalError(f"no region {region}")
        if self.has_member(member_id):
            raise LocalError("a member changes region by leaving and joining again")
        self._placement[member_id] = region

    def region_of(self, member_id: bytes) -> int:
        """The region a member is in, or would be put in on joining."""
        where = self._where.get(member_id)
        if where is not None:
            return where
        head_region = self._heads.get(member_id)
        if head_region is not None:
            return head_region
        placed = self._placement.get(member_id)
        if placed is not None:
            return placed
        digest = keycrypto.digest(b"rmsec regions placement", member_id)
        return self._hashed[int.from_bytes(digest[:8], "big") % len(self._hashed)]

    # ----------------------------------------------------------------------------- updates

    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        joins, leaves = common.check_changes(joins, leaves, None)  # ids, repeats; members below
        if not joins and not leaves:
            return self.refresh()
        head_joins = [h for h in joins if h in self._heads]
        head_leaves = [h for h in leaves if h in self._heads]
        for h in head_joins:
            if self._heads[h] in self._active:
                raise LocalError(f"{h!r:.40} already manages its region")
        for h in head_leaves:
            if self._active.get(self._heads[h]) != h:
                raise LocalError(f"{h!r:.40} is not a member")
        joins = [m for m in joins if m not in self._heads]
        leaves = [m for m in leaves if m not in self._heads]
        by_region: dict[int, tuple[list[bytes], list[bytes]]] = {}
        for m in joins:
            region = self.region_of(m)
            if _has_member(self.managers[region].inner, m):
                raise LocalError(f"{m!r:.40} is already a member")
            by_region.setdefault(region, ([], []))[0].append(m)
        for m in leaves:
            region = self.region_of(m)
            if not _has_member(self.managers[region].inner, m):
                raise LocalError(f"{m!r:.40} is not a member")
            by_region.setdefault(region, ([], []))[1].append(m)
        joined = {r: len(j) for r, (j, _) in by_region.items()}
        new_seats: dict[int, bytes] = {}
        for h in head_leaves:  # back in process; the departed head's seat is evicted
            r = self._heads[h]
            del self._active[r]
            new_seats[r] = self._seat_id(r)
            seat_changes = by_region.setdefault(r, ([], []))
            seat_changes[0].append(new_seats[r])
            seat_changes[1].append(self._seats[r].member_id)
        inner_updates = {}
        for r in sorted(by_region):
            region_joins, region_leaves = by_region[r]
            inner_updates[r] = self.managers[r].inner.update(joins=region_joins, leaves=region_leaves)
        for r, seat_id in new_seats.items():
            welcome = inner_updates[r].welcomes.pop(seat_id)
            self._seats[r] = _Seat(seat_id, welcome, self.managers[r].inner.epoch)
            self._rotate_trunk(r)
        for m in leaves:
            self._where.pop(m, None)
        for m in joins:
            placed = self._placement.pop(m, None)
            if placed is not None:
                self._where[m] = placed
        rekey = self._next_epoch({r: u.rekey for r, u in inner_updates.items()}, joined)
        for h in head_joins:  # from the next epoch on, the head translates for its region
            self._active[self._heads[h]] = h
        welcomes = {h: self.manager_state(self._heads[h]) for h in head_joins}
        for r, u in inner_updates.items():
            code = wire.INNER_CODES[self.managers[r].spec.scheme]
            for m, inner_welcome in u.welcomes.items():
                welcomes[m] = common.encode(NAME, common.WELCOME, self.epoch, r, code, inner_welcome, self._group_key)
        return Update(self.epoch, rekey, welcomes)

    def _next_epoch(self, inner_rekeys: Mapping[int, bytes], joined: Mapping[int, int]) -> bytes:
        """New group key: to the managers over the trunk, then each manager's translation
        for the regions that have members from before this epoch."""
        if self.epoch >= common.MAX_EPOCH:
            raise LocalError("epoch counter exhausted; start a new group")
        self.epoch += 1
        self._group_key = keycrypto.random_bytes(self.rng, K)
        self.group_secret = common.group_secret(self._group_key, NAME, self.epoch)
        trunk_wrap = keycrypto.wrap_key(trunk_key(self._trunk.group_secret), self._group_key)
        parts = []
        for m in self.managers:
            r = m.index
            remote = r in self._active
            # Someone from before is there (or the manager head's seat, for its inner rekey).
            if self._real_members(r) > joined.get(r, 0) or (remote and r in inner_rekeys):
                parts.append([r, inner_rekeys.get(r, b""), b"" if remote else m.translate(trunk_wrap)])
        inner_wraps = sum(getattr(self.managers[r].inner, "stats", {}).get("wraps", 0) for r in inner_rekeys)
        by_heads = sum(1 for p in parts if not p[2])
        self.stats = {
            "wraps": inner_wraps + len(parts) - by_heads + 1, "regions_changed": len(inner_rekeys),
            "translated_by_heads": by_heads,
        }
        confirm = common.confirmation(self._group_key, NAME, self.epoch)
        return common.encode(NAME, common.REKEY, self.epoch, trunk_wrap, parts, confirm)

    def refresh(self) -> Update:
        """A new group key for every region; no region's own keys change."""
        rekey = self._next_epoch({}, {})
        return Update(self.epoch, rekey, {})

    def refresh_region(self, region: int) -> Update:
        """Region ``region``'s own periodic rekey (its inner refresh) and a new group key."""
        if not 0 <= region < len(self.managers):
            raise LocalError(f"no region {region}")
        inner = self.managers[region].inner.refresh()
        rekey = self._next_epoch({region: inner.rekey}, {})
        return Update(self.epoch, rekey, {})

    def recover(self, member_id: bytes) -> bytes:
        """The member's inner recovery from its region, and the group key under its region's key."""
        if not self.has_member(member_id):
            raise LocalError(f"{member_id!r:.40} is not a member")
        if member_id in self._heads:
            return self.manager_state(self._heads[member_id])
        manager = self.managers[self.region_of(member_id)]
        inner = manager.inner.recover(member_id)
        wrap = keycrypto.wrap_key(manager.region_kek(), self._group_key)
        confirm = common.confirmation(self._group_key, NAME, self.epoch)
        return common.encode(NAME, common.RECOVERY, self.epoch, manager.index, manager.inner.epoch, inner, wrap, confirm)

    def state_bytes(self) -> int:
        """Bytes of server state: every region's inner state, plus the member -> region map."""
        inner = 0
        for manager in self.managers:
            size = getattr(manager.inner, "state_bytes", None)
            inner += size() if callable(size) else 0
        return inner + sys.getsizeof(self._where) + sys.getsizeof(self._placement)

    @classmethod
    def member_from_welcome(cls, welcome: bytes) -> KeyManagementMember:
        """A member's welcome, or a manager head's state (its welcome too)."""
        kind, _, _ = wire.decode_untrusted(welcome, {common.WELCOME: wire.WELCOME_FIELDS, wire.MANAGER: wire.MANAGER_FIELDS})
        if kind == wire.MANAGER:
            return RegionalManagerMember.from_state(welcome)
        return RegionsMember.from_welcome(welcome)


def _has_member(scheme: KeyManagement, member_id: bytes) -> bool:
    has = getattr(scheme, "has_member", None)
    if not callable(has):
        raise LocalError(f"inner scheme {scheme.name!r} cannot tell who its members are")
    return bool(has(member_id))
