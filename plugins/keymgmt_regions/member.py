"""``regions`` member side: its region, its inner scheme's member state, the group key.

A rekey's part for this member's region is applied to a *copy* of the inner state; the new
group key is unwrapped under the region key of that copy; only then is anything committed,
so a failure anywhere leaves the member as it was.

When the region's manager runs on a repair head, the rekey's part for the region has no wrap:
the wrap comes from that head as a *translation* on its own stream
(:meth:`RegionsMember.accept_translation`, which only stores it, unopened).  A rekey whose
translation has not arrived yet raises :class:`~rmsec.security.regional.AwaitingTranslation`
(a ``NotForMe``): the security layer holds the rekey and tries again when the translation
comes, or asks the controller for key recovery if it does not.  A translation is believed
only if the group key it opens to matches the key confirmation the controller signed; a
forged or stale one is thrown away and the rekey keeps waiting for a good one
(:class:`~rmsec.security.regional.TranslationRejected`, an ``AwaitingTranslation`` the
security layer counts as an authentication failure).
"""

from __future__ import annotations

from typing import Protocol

from rmsec.errors import AuthenticationFailed, MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagementMember
from rmsec.security import keycrypto
from rmsec.security.regional import AwaitingTranslation, TranslationRejected

from ..keymgmt_flat import common
from ..keymgmt_flat.scheme import FlatScheme
from ..keymgmt_lkh.member import LkhMember
from ..keymgmt_oft.member import OftMember
from . import wire

NAME = wire.NAME
#: Translations a member keeps for epochs it has not reached yet (bounded: they are untrusted).
MAX_TRANSLATIONS_HELD = 8


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
        #: epoch -> the wrap a manager head sent for it (unopened until its rekey comes).
        self._translations: dict[int, bytes] = {}

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
        copy = RegionsMember(self.epoch, self.region, self.inner.clone(), self._group_key)
        copy._translations = dict(self._translations)
        return copy

    @staticmethod
    def _open(inner: InnerMember, wrap: bytes, epoch: int, confirm: bytes) -> bytes:
        group_key = keycrypto.unwrap_key(wire.region_kek(inner.group_secret), wrap)
        common.check_confirmation(group_key, NAME, epoch, confirm)
        return group_key

    def accept_translation(self, data: bytes) -> None:
        """Keep a manager head's translation for a coming epoch (untrusted: checked for form
        only; it is opened, and believed, when the signed rekey of its epoch is applied).
        ``NotForMe`` for another region's or a past epoch's; ``MalformedPacket``."""
        translation = wire.decode_translation_untrusted(data)
        if translation.region != self.region:
            raise NotForMe("translation for another region")
        if translation.epoch <= self.epoch:
            raise NotForMe("translation of a past epoch")
        self._translations[translation.epoch] = translation.wrap  # the latest one wins
        while len(self._translations) > MAX_TRANSLATIONS_HELD:
            del self._translations[max(self._translations)]

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
            if not wrap:  # the region's manager head translates
                held = self._translations.get(epoch)
                if held is None:
                    raise AwaitingTranslation("waiting for the regional manager's translation")
                try:
                    self._open(inner, held, epoch, confirm)
                except AuthenticationFailed:
                    del self._translations[epoch]  # forged or stale: make room for the real one
                    raise TranslationRejected("the translation does not open to the confirmed key") from None
                wrap = held
        group_key = self._open(inner, wrap, epoch, confirm)
        self._translations = {e: w for e, w in self._translations.items() if e > epoch}
        self.inner = inner
        self._group_key = group_key
        self.epoch = epoch
        self.group_secret = common.group_secret(group_key, NAME, epoch)
