"""``flat``: known answers, the documented format re-derived independently, O(n) cost, and a
control showing that the attacker of the property tests catches the classic mistake."""

from __future__ import annotations

import hmac

import cbor2
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from rmsec_plugins.keymgmt_flat import FlatScheme, common

from rmsec.interfaces import KeyManagement, Update
from rmsec.security import keycrypto

from .keymgmt_support import KAT_NAMES, Group, counter_rng, derivable_secrets, pinned
from .keymgmt_support import kat_messages as support_kat_messages

NAMES = KAT_NAMES


def kat_messages(options: dict[str, object]) -> tuple[KeyManagement, dict[str, bytes]]:
    return support_kat_messages(FlatScheme, b"rmsec kat flat", options)

KAT = {
    "flat": (
        {},
        {
            "welcome": "87010102010050302129697041d2c8f3b11c9982c358cb50269da438f9e7009a72058adff5c28c1c",
            "leave": "796c1c78a7aea9d698c89e74f1d45136e437d716889fef4ee4e473f1aa9c25f6",
            "join": "8801010003004058183fa004e1f37588047f00afdc0135b8ae4b066d16dea8fb2f50e462f0181ace166a25dafcb99714193e",
            "recovery": "860101010302582c2df45d968ee1f84e2b4c1f54e53aba6172f97efa248e3b8c654d1fef548aab76734ade1bc3903d17936e6cd6",
            "refresh": "83540dc9b7727ae5fe620453db20be33dcaa2443eeba3fe1e75c0765c46c7288",
            "secret": "bfb73f55d41321ab158b1ae967461ac53fb1fe0de19bf3e4ad185c80dc9cdbf7",
        },
    ),
}






@pytest.mark.parametrize("case", KAT)
def test_known_answers(case: str) -> None:
    options, expected = KAT[case]
    _, messages = kat_messages(options)
    for name, value in messages.items():
        assert pinned(value, expected[name]), f"{case} {name}: {value.hex()}"


def _expand(key: bytes, label: bytes, epoch: int, length: int) -> bytes:
    return hmac.digest(key, label + b"\x00" + epoch.to_bytes(8, "big") + b"\x01", "sha256")[:length]


def test_leave_rekey_matches_the_documented_format() -> None:
    server = FlatScheme(rng=counter_rng(b"rmsec kat flat"))
    welcomes = server.update(joins=NAMES).welcomes
    decoded = {m: cbor2.loads(w) for m, w in welcomes.items()}
    assert decoded[b"carol"][:5] == [1, 1, 2, 1, 2]  # v1, flat, welcome, epoch 1, slot 2
    rekey = cbor2.loads(server.update(leaves=[b"bob"]).rekey)
    assert rekey[:5] == [1, 1, 0, 2, 1]  # v1, flat, rekey, epoch 2, per-member mode
    bitmap, wraps, confirm = rekey[5], rekey[6], rekey[7]
    assert bitmap == bytes([0b11101])  # slots 0, 2, 3, 4 (Bob's slot 1 is gone)
    assert len(wraps) == 4 * 24
    for index, name in enumerate([b"alice", b"carol", b"dave", b"erin"]):
        group_key = aes_key_unwrap(decoded[name][5], wraps[24 * index : 24 * index + 24])
        assert _expand(group_key, b"rmsec flat group secret", 2, 32) == server.group_secret
        assert _expand(group_key, b"rmsec flat confirm", 2, 16) == confirm


def test_leave_is_o_n_and_join_is_one_wrap() -> None:
    group = Group(FlatScheme, {}, seed=1)
    group.update(joins=group.new_ids(100))
    leave = group.update(leaves=[b"member-50"])
    assert group.server.stats == {"wraps": 99}  # type: ignore[attr-defined]
    assert 99 * 24 < len(leave.rekey) < 99 * 24 + 60
    join = group.update(joins=group.new_ids(3))
    assert group.server.stats == {"wraps": 1}  # type: ignore[attr-defined]
    assert len(join.rekey) < 60
    group.refresh()
    assert group.server.stats == {"wraps": 102}  # type: ignore[attr-defined]


def test_members_find_their_wrap_anywhere_in_the_bitmap() -> None:
    group = Group(FlatScheme, {}, seed=2)
    group.update(joins=group.new_ids(40))
    group.update(leaves=[b"member-%d" % i for i in (0, 7, 8, 9, 31, 39)])
    group.update(joins=group.new_ids(2), leaves=[b"member-20"])  # joins refill slots 0 and 7
    group.check()


class OldKeyFlat(FlatScheme):
    """Broken on purpose: on a leave the new group key is wrapped under the old one
    ("encrypting the new key under the old one is insecure", DESIGN.md §1)."""

    def update(self, *, joins=(), leaves=()):  # type: ignore[no-untyped-def, override]
        old = self._group_key
        update = super().update(joins=joins, leaves=leaves)
        wrap = keycrypto.wrap_key(old, self._group_key)
        confirm = common.confirmation(self._group_key, "flat", self.epoch)
        return Update(update.epoch, common.encode("flat", common.REKEY, self.epoch, 0, b"", wrap, confirm), update.welcomes)


def test_the_attacker_catches_the_old_key_mistake() -> None:
    group = Group(OldKeyFlat, {}, seed=3)
    group.update(joins=group.new_ids(4))
    group.update(leaves=[b"member-1"])
    evicted = group.evicted()
    assert set(group.forbidden(evicted).values()) & derivable_secrets(group, evicted)
