"""``regions`` member side: its region, its inner scheme's member state, the group key.

A rekey's part for this member's region is applied to a *copy* of the inner state; the new
group key is unwrapped under the region key of that copy; only then is anything committed,
so a failure anywhere leaves the member as it was.
"""

from __future__ import annotations

from typing import Protocol

from rmsec.errors import MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagementMember
from rmsec.security import keycrypto

from ..keymgmt_flat import common
from ..keymgmt_flat.scheme import FlatScheme
from ..keymgmt_lkh.member import LkhMember
from ..keymgmt_oft.member import OftMember
from . import wire

NAME = wire.NAME


class InnerMember(Protocol):
    epoch: int
    group_secret: bytes

    def apply(self, rekey: bytes) -> None: ...
    def clone(self) -> InnerMember: ...
    def held_keys(self) -> list[bytes]: ...


def inner_from_welcome(code: int, welcome: bytes) -> InnerMember:
    if code == wire.INNER_CODES["flat"]:
        return FlatScheme.member_from_welcome(welcome)
    if code == wire.INNER_CODES["lkh"]:
        return LkhMember.from_welcome(welcome)
    return OftMember.from_welcome(welcome)


class RegionsMember(KeyManagementMember):
    def __init__(self, epoch: int, region: int, inner: InnerMember, group_key: bytes) -> None:
        self.epoch = epoch
        self.region = region
        self.inner = inner
        self._group_key = group_key
        self.group_secret = common.group_secret(group_key, NAME, epoch)

    @classmethod
    def from_welcome(cls, welcome: bytes) -> RegionsMember:
        _, epoch, (region, code, inner, group_key) = common.decode_untrusted(
            welcome, scheme=NAME, kinds={common.WELCOME: wire.WELCOME_FIELDS}
        )
        return cls(epoch, region, inner_from_welcome(code, inner), group_key)

    def held_keys(self) -> list[bytes]:
        """Every key this member holds (what an evicted member keeps, in the tests)."""
        return [*self.inner.held_keys(), self._group_key, wire.region_kek(self.inner.group_secret)]

    def clone(self) -> RegionsMember:
        return RegionsMember(self.epoch, self.region, self.inner.clone(), self._group_key)

    def apply(self, rekey: bytes) -> None:
        kind, epoch, fields = common.decode_untrusted(
            rekey, scheme=NAME, kinds={common.REKEY: wire.REKEY_FIELDS, common.RECOVERY: wire.RECOVERY_FIELDS}
        )
        common.check_next_epoch(kind, epoch, self.epoch)
        inner = self.inner.clone()
        if kind == common.RECOVERY:
            region, inner_epoch, inner_message, wrap, confirm = fields
            if region != self.region:
                raise NotForMe("recovery for another region")
            if inner_epoch < inner.epoch:
                raise MalformedPacket("regions recovery: inner epoch went back")
            if inner_epoch > inner.epoch:
                inner.apply(inner_message)
        else:
            _trunk, parts, confirm = fields
            mine = [p for p in parts if p[0] == self.region]
            if len(mine) != 1:
                raise NotForMe("no part for this member's region")
            _, inner_message, wrap = mine[0]
            if inner_message:
                inner.apply(inner_message)
        group_key = keycrypto.unwrap_key(wire.region_kek(inner.group_secret), wrap)
        common.check_confirmation(group_key, NAME, epoch, confirm)
        self.inner = inner
        self._group_key = group_key
        self.epoch = epoch
        self.group_secret = common.group_secret(group_key, NAME, epoch)
