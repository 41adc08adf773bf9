"""``regions``: known answers, locality (a change rekeys only its own region), the managers'
re-encryption, per-region schemes and refresh, placement."""

from __future__ import annotations

import cbor2
import pytest
from rmsec_plugins.keymgmt_flat import common
from rmsec_plugins.keymgmt_regions import RegionsScheme, wire
from rmsec_plugins.keymgmt_regions.scheme import trunk_key

from rmsec.errors import LocalError
from rmsec.interfaces import KeyManagement
from rmsec.security import keycrypto

from .keymgmt_support import KAT_NAMES, Group, counter_rng, derivable_secrets, pinned
from .keymgmt_support import kat_messages as support_kat_messages

NAMES = KAT_NAMES


def kat_messages(options: dict[str, object]) -> tuple[KeyManagement, dict[str, bytes]]:
    return support_kat_messages(RegionsScheme, b"rmsec kat regions", options)

KAT = {
    "regions": (
        {"regions": 2},
        {
            "welcome": "88010402010002582a880102020102010058200f78d273790f553c4979b9b63a5f95cb5241d40dbb2f312ea03772b5f0615fe250b617ee8ae2c521622b5bad979e9fcfc7",
            "leave": "0553484fa03e3bd1c00118195dec19d82f9dfdfbbe9c4a1b3f18b010e7389254",
            "join": "57843ff26aef7f632bb31e44af21167f0955c1fd46a66407d439d818e246b837",
            "recovery": "d56e79ad17aeaa39dec1902a0c4bde7ed7cac7a0e980d094d46a1a113de6df3d",
            "refresh": "4d161285afb417058810b15590cec5ef8816035216b0e9c454ede0693caa59e5",
            "secret": "334ff869d0c5a4ebd1deaf46a6b46553cd1c1e6e8af959f34a94e72716209a14",
        },
    ),
}






@pytest.mark.parametrize("case", KAT)
def test_known_answers(case: str) -> None:
    options, expected = KAT[case]
    _, messages = kat_messages(options)
    for name, value in messages.items():
        assert pinned(value, expected[name]), f"{case} {name}: {value.hex()}"


def test_placement_by_hash_and_by_head() -> None:
    server = RegionsScheme(rng=counter_rng(1), options={"regions": 4})
    digest = keycrypto.digest(b"rmsec regions placement", b"alice")
    assert server.region_of(b"alice") == int.from_bytes(digest[:8], "big") % 4
    server.place(b"bob", 3)
    update = server.update(joins=[b"alice", b"bob"])
    assert cbor2.loads(update.welcomes[b"bob"])[4] == 3
    assert server.region_of(b"bob") == 3
    with pytest.raises(LocalError):
        server.place(b"bob", 1)  # a member moves by leaving and joining again
    with pytest.raises(LocalError):
        server.place(b"carol", 4)


def test_a_leave_rekeys_only_its_region() -> None:
    group = Group(RegionsScheme, {"regions": 4}, seed=1)
    server: RegionsScheme = group.server  # type: ignore[assignment]
    for i in range(40):
        server.place(b"member-%d" % i, i % 4)
    group.update(joins=group.new_ids(40))
    inner_before = [(m.inner.epoch, m.inner.group_secret) for m in server.managers]
    rekey = wire.decode_rekey_untrusted(group.update(leaves=[b"member-6"]).rekey)  # region 2
    assert [p.region for p in rekey.parts] == [0, 1, 2, 3]
    assert [bool(p.inner) for p in rekey.parts] == [False, False, True, False]
    inner_after = [(m.inner.epoch, m.inner.group_secret) for m in server.managers]
    assert [a == b for a, b in zip(inner_before, inner_after, strict=True)] == [True, True, False, True]
    # an unchanged region's slice is one wrap; the changed region's carries its inner rekey,
    # a degree-4 LKH of 10 members: far below a rekey of the whole group
    assert len(cbor2.dumps(next(p for p in cbor2.loads(group.steps[-1].rekey)[5] if p[0] == 0))) < 40
    assert group.server.stats["regions_changed"] == 1  # type: ignore[attr-defined]


def test_managers_translate_from_the_trunk_key() -> None:
    server = RegionsScheme(rng=counter_rng(2), options={"regions": 3})
    server.update(joins=[b"m%d" % i for i in range(9)])
    rekey = wire.decode_rekey_untrusted(server.update(leaves=[b"m4"]).rekey)
    for manager in server.managers:
        # every manager holds the trunk key through its own trunk (flat) membership
        group_key = keycrypto.unwrap_key(trunk_key(manager.trunk.group_secret), rekey.trunk)
        part = next(p for p in rekey.parts if p.region == manager.index)
        assert keycrypto.unwrap_key(manager.region_kek(), part.wrap) == group_key
        assert common.group_secret(group_key, "regions", server.epoch) == server.group_secret


def test_each_region_its_own_scheme_and_refresh() -> None:
    options = {
        "regions": [
            {"name": "flat-edge", "scheme": "flat", "refresh": 60},
            {"name": "big", "scheme": "lkh", "options": {"degree": 8}},
            {"name": "oft-edge", "scheme": "oft", "refresh": 5.5},
        ]
    }
    group = Group(RegionsScheme, options, seed=3)
    server: RegionsScheme = group.server  # type: ignore[assignment]
    assert server.refresh_periods == {0: 60.0, 2: 5.5}
    assert [m.inner.name for m in server.managers] == ["flat", "lkh", "oft"]
    for i in range(12):
        server.place(b"member-%d" % i, i % 3)
    group.update(joins=group.new_ids(12))
    group.update(leaves=[b"member-2", b"member-4"], joins=group.new_ids(2))
    before = [m.inner.epoch for m in server.managers]
    update = server.refresh_region(2)
    group._record(update, (), ())
    assert [m.inner.epoch for m in server.managers] == [before[0], before[1], before[2] + 1]
    group.refresh()
    group.lag(b"member-5")
    group.update(leaves=[b"member-8"])
    group.recover(b"member-5")
    group.check()


def test_regions_keep_secrets_from_other_regions_members() -> None:
    group = Group(RegionsScheme, {"regions": 2, "inner": "flat"}, seed=4)
    group.update(joins=group.new_ids(8))
    group.update(leaves=group.current()[:2])
    group.update(joins=group.new_ids(2))
    evicted = group.evicted()
    assert not set(group.forbidden(evicted).values()) & derivable_secrets(group, evicted)
