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
- a manager holds every key of its region and the group key.

Trust.  The regional managers sit on repair heads, so **each head that hosts a manager is
trusted with the group's traffic** (it holds the group key of every epoch, and could decrypt
everything) **and with its region's membership** (it holds every key of its region, so it
could let anyone in or keep an expelled member reading).  Members need not trust heads that
host no manager (those cache and repair ciphertext only, DESIGN.md §2), and they trust their
own region's manager, not the others.  A compromised manager is recovered from by removing it
from the trunk and re-registering its region's members with a new manager; not automated here.

This module is the sans-IO composition: one object plays the controller (trunk) and every
regional manager, which is what a test or benchmark drives.  :class:`RegionalManager` is the
part that would run on a head: it holds its trunk membership and its region's inner scheme,
and :meth:`RegionalManager.translate` is the re-encryption it does for each epoch.  Running
managers on real heads over the transport needs the security layer's controller to forward
the trunk message and each region's slice, which it does not do yet.

Placement: a member goes to the region :meth:`RegionsScheme.place` named for it (the security
layer would name the region of the head the member bound to); otherwise to a region chosen by
a hash of its id, so the contract's ``update(joins=...)`` works unchanged.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rmsec.errors import ConfigError, LocalError
from rmsec.interfaces import KeyManagement, Rng, Update
from rmsec.security import keycrypto

from ..keymgmt_flat import common
from ..keymgmt_flat.scheme import FlatMember, FlatScheme
from ..keymgmt_lkh.scheme import LkhScheme
from ..keymgmt_oft.scheme import OftScheme
from . import wire
from .member import RegionsMember

NAME = wire.NAME
K = wire.K
INNER: dict[str, type[KeyManagement]] = {"flat": FlatScheme, "lkh": LkhScheme, "oft": OftScheme}
DEFAULT_REGIONS = 16
TRUNK_KEY_LABEL = b"rmsec regions trunk key"


def trunk_key(trunk_secret: bytes) -> bytes:
    return keycrypto.expand(trunk_secret, TRUNK_KEY_LABEL)


@dataclasses.dataclass(frozen=True, slots=True)
class RegionSpec:
    """One region: its name, inner scheme and options, and its own refresh period (seconds)."""

    name: str
    scheme: str = "lkh"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    refresh: float | None = None


def parse_regions(options: Mapping[str, Any]) -> list[RegionSpec]:
    """``regions``: a count (every region ``inner`` with ``inner_options``) or a list of
    tables ``{name, scheme, options, refresh}``."""
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
            common.check_options(item, ("name", "scheme", "options", "refresh"))
            refresh = item.get("refresh")
            if refresh is not None and (type(refresh) not in (int, float) or not refresh > 0):
                raise ConfigError("a region's refresh is a positive number of seconds")
            specs.append(RegionSpec(
                str(item.get("name", f"region-{i}")), item.get("scheme", inner), item.get("options", inner_options),
                None if refresh is None else float(refresh),
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

    @property
    def members(self) -> int:
        return sum(m.inner.members for m in self.managers)

    def has_member(self, member_id: bytes) -> bool:
        region = self.region_of(member_id)
        return _has_member(self.managers[region].inner, member_id)

    @property
    def refresh_periods(self) -> dict[int, float]:
        """Region index -> its own refresh period (for the controller's timers)."""
        return {m.index: m.spec.refresh for m in self.managers if m.spec.refresh is not None}

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
        placed = self._placement.get(member_id)
        if placed is not None:
            return placed
        digest = keycrypto.digest(b"rmsec regions placement", member_id)
        return int.from_bytes(digest[:8], "big") % len(self.managers)

    # ----------------------------------------------------------------------------- updates

    def update(self, *, joins: Sequence[bytes] = (), leaves: Sequence[bytes] = ()) -> Update:
        joins, leaves = common.check_changes(joins, leaves, None)  # ids, repeats; members below
        if not joins and not leaves:
            return self.refresh()
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
        inner_updates = {}
        for r in sorted(by_region):
            region_joins, region_leaves = by_region[r]
            inner_updates[r] = self.managers[r].inner.update(joins=region_joins, leaves=region_leaves)
        for m in leaves:
            self._where.pop(m, None)
        for m in joins:
            placed = self._placement.pop(m, None)
            if placed is not None:
                self._where[m] = placed
        joined = {r: len(j) for r, (j, _) in by_region.items()}
        rekey = self._next_epoch({r: u.rekey for r, u in inner_updates.items()}, joined)
        welcomes = {}
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
        parts = [
            [m.index, inner_rekeys.get(m.index, b""), m.translate(trunk_wrap)]
            for m in self.managers
            if m.inner.members > joined.get(m.index, 0)  # someone from before is there
        ]
        inner_wraps = sum(getattr(self.managers[r].inner, "stats", {}).get("wraps", 0) for r in inner_rekeys)
        self.stats = {"wraps": inner_wraps + len(parts) + 1, "regions_changed": len(inner_rekeys)}
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
    def member_from_welcome(cls, welcome: bytes) -> RegionsMember:
        return RegionsMember.from_welcome(welcome)


def _has_member(scheme: KeyManagement, member_id: bytes) -> bool:
    has = getattr(scheme, "has_member", None)
    if not callable(has):
        raise LocalError(f"inner scheme {scheme.name!r} cannot tell who its members are")
    return bool(has(member_id))
