"""``regions`` on a repair head: the regional manager's machine (sans-IO).

A head registered as the manager of region ``r`` gets a *manager state* from the controller
over TLS (:data:`~.wire.MANAGER`): its seat in the region's inner scheme, its trunk
membership and the group key.  It is then a member of the group like any other, as far as
the security layer is concerned (it follows the controller's signed rekeys in order, holds
the ones it cannot place yet, asks for key recovery when it misses one), and this object is
its ``KeyManagementMember``.  What it adds is the *translation*: for every epoch whose rekey
leaves its region's wrap out, it unwraps the new group key under the trunk key, checks it
against the controller's key confirmation, and wraps it under the region key of its seat;
:meth:`translations_to_send` gives those for the head to send on its own stream.

Everything it takes in is untrusted and checked before anything changes: rekeys arrive in
envelopes the security layer has verified, but their payload is still decoded strictly; a
trunk wrap that does not open means the trunk was rekeyed past this head (another manager
left), which is ``NotForMe``: the security layer asks for recovery and the controller sends
a new manager state.
"""

from __future__ import annotations

from typing import Any

from rmsec.errors import AuthenticationFailed, MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagementMember
from rmsec.security import keycrypto

from ..keymgmt_flat import common
from ..keymgmt_flat.scheme import FlatMember, FlatScheme
from . import wire
from .member import InnerMember, inner_from_welcome

NAME = wire.NAME
TRUNK_KEY_LABEL = b"rmsec regions trunk key"
#: Translations waiting to be sent (the head's driver drains them after every call).
MAX_PENDING = 64


def trunk_key(trunk_secret: bytes) -> bytes:
    return keycrypto.expand(trunk_secret, TRUNK_KEY_LABEL)


class RegionalManagerMember(KeyManagementMember):
    """The key material and the per-epoch re-encryption of one region's manager head."""

    def __init__(self, epoch: int, region: int, seat: InnerMember, trunk: FlatMember, group_key: bytes) -> None:
        self.epoch = epoch
        self.region = region
        self.seat = seat
        self.trunk = trunk
        self._group_key = group_key
        self.group_secret = common.group_secret(group_key, NAME, epoch)
        self._pending: list[bytes] = []
        self.counters: dict[str, int] = {"translated": 0, "states": 0, "dropped": 0}

    # ------------------------------------------------------------------ state

    @classmethod
    def from_state(cls, data: bytes) -> RegionalManagerMember:
        """From a manager state (the head's welcome): untrusted, checked, then rebuilt."""
        _, epoch, fields = wire.decode_untrusted(data, {wire.MANAGER: wire.MANAGER_FIELDS})
        return cls._build(epoch, fields)

    @classmethod
    def _build(cls, epoch: int, fields: list[Any]) -> RegionalManagerMember:
        region, code, seat_welcome, seat_recovery, trunk_welcome, trunk_recovery, group_key = fields
        seat = inner_from_welcome(code, seat_welcome)
        if seat_recovery:
            seat.apply(seat_recovery)
        trunk = FlatScheme.member_from_welcome(trunk_welcome)
        if trunk_recovery:
            trunk.apply(trunk_recovery)
        manager = cls(epoch, region, seat, trunk, group_key)
        manager._queue(epoch)  # members may be waiting for this epoch's wrap
        return manager

    def region_kek(self) -> bytes:
        return wire.region_kek(self.seat.group_secret)

    def clone(self) -> RegionalManagerMember:
        copy = RegionalManagerMember(self.epoch, self.region, self.seat.clone(), self.trunk.clone(), self._group_key)
        copy._pending = list(self._pending)
        return copy

    def held_keys(self) -> list[bytes]:
        """Every key the head holds (what a departed manager keeps, in the tests)."""
        return [*self.seat.held_keys(), *self.trunk.held_keys(), self._group_key, self.region_kek()]

    # ------------------------------------------------------------------ rekeys

    def apply(self, rekey: bytes) -> None:
        """A controller rekey (or a manager state sent as key recovery): move to its epoch
        and translate for the region if the rekey leaves that to us."""
        kind, epoch, fields = wire.decode_untrusted(
            rekey, {common.REKEY: wire.REKEY_FIELDS, wire.MANAGER: wire.MANAGER_FIELDS}
        )
        if epoch <= self.epoch or (kind == common.REKEY and epoch != self.epoch + 1):
            raise NotForMe("not the next epoch")
        if kind == wire.MANAGER:
            fresh = self._build(epoch, fields)
            if fresh.region != self.region:
                raise NotForMe("manager state for another region")
            self.seat, self.trunk, self._group_key = fresh.seat, fresh.trunk, fresh._group_key
            self.epoch, self.group_secret = epoch, fresh.group_secret
            self._pending.extend(fresh._pending)
            self.counters["states"] += 1
            return
        trunk_wrap, parts, confirm = fields
        try:
            group_key = keycrypto.unwrap_key(trunk_key(self.trunk.group_secret), trunk_wrap)
        except AuthenticationFailed:
            raise NotForMe("the trunk was rekeyed without this head: recover") from None
        common.check_confirmation(group_key, NAME, epoch, confirm)
        mine = [p for p in parts if p[0] == self.region]
        if len(mine) > 1:
            raise MalformedPacket("two parts for one region")
        seat = self.seat.clone()
        if mine and mine[0][1]:
            seat.apply(mine[0][1])  # NotForMe if the seat was evicted (this head was replaced)
        self.seat, self._group_key, self.epoch = seat, group_key, epoch
        self.group_secret = common.group_secret(group_key, NAME, epoch)
        if mine and not mine[0][2]:
            self._queue(epoch)

    def translate(self, epoch: int) -> bytes:
        """This epoch's translation: the group key under the region key (scheme bytes)."""
        if epoch != self.epoch:
            raise NotForMe("can only translate the current epoch")
        return wire.encode_translation(epoch, self.region, keycrypto.wrap_key(self.region_kek(), self._group_key))

    def _queue(self, epoch: int) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(0)
            self.counters["dropped"] += 1
        self._pending.append(self.translate(epoch))
        self.counters["translated"] += 1

    def translations_to_send(self) -> list[bytes]:
        """Translations made since the last call, oldest first (scheme bytes: the security
        layer frames them with :func:`rmsec.security.regional.encode_translation_frame`)."""
        out, self._pending = self._pending, []
        return out
