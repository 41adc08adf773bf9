"""``lkh``: known answers, the documented formats re-derived independently, costs, batches.

The known-answer scenario (seeded rng) is five joins, a leave, a join, a recovery and a
refresh; the messages are pinned by SHA-256 and one of them is re-derived from the format
description with ``cbor2``, ``cryptography``'s AES key unwrap and ``hmac`` alone.
"""

from __future__ import annotations

import hashlib
import hmac

import cbor2
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rmsec_plugins.keymgmt_flat import common
from rmsec_plugins.keymgmt_lkh import LkhScheme, wire

from rmsec.interfaces import KeyManagement
from rmsec.security import treemath

from .keymgmt_support import KAT_NAMES, Group, counter_rng, derivable_secrets, pinned
from .keymgmt_support import kat_messages as support_kat_messages

NAMES = KAT_NAMES


def kat_messages(options: dict[str, object]) -> tuple[KeyManagement, dict[str, bytes]]:
    return support_kat_messages(LkhScheme, b"rmsec kat lkh", options)

KAT = {
    "degree 4, join rekey": (
        {"degree": 4},
        {
            "welcome": "88010202010202005830e30df1d2d61dd16049439dd8b0bff94ff395c3fb8a92790df73335f7b43db10add817a38b6c1c6784e28d5b6f4458c45",
            "leave": "5f230bef0df34d96fc5bf9ca4a3382ea44bfca3f45f8302ef801ca54b0b38ece",
            "join": "6128a1d15eba27d49eaa319d8c9ef0c2ffb13872c3263cc0d0a8a345356a4c9c",
            "recovery": "87010201030202583c5d714a5dc316a29e22596e15e515dd9b2accf4de7f90bbeeb05984f1bbc05f5bcb6c8c1ad62d22547e7f209e8bb45ceadfb1b60102165684fce667f6",
            "refresh": "8801020004028081830f0358306c373edd30235fb56e9aaf86d9412c78643eb6f388076f99fe9a0f3923160486b799c0228f1e27c341d3b6b476c1332250365503db63ef8579fae5b205e5b22e3c",
            "secret": "e2af81560f3811e8cfe1d9d26a454eee9e9066bafb07be474de2c810cb44b83c",
        },
    ),
    "degree 2, join hash": (
        {"degree": 2, "join": "hash"},
        {
            "welcome": "88010202010103005840e30df1d2d61dd16049439dd8b0bff94ff395c3fb8a92790df73335f7b43db10aefa6a2bf7439a318a8beb7b4a8aee23e5e971696d56b602701269ad1a247efaa",
            "leave": "282942290b6d32cc835d20cb56ebf59558b283a03efb1b16c3721a88b1bece7e",
            "join": "88010200030383010307805097be7207d18675657c130464033629d6",
            "recovery": "d97ef72bbb457e71f0012b4607c7ae11c426c0f146cd0b59dc2167f0dfae9181",
            "refresh": "880102000403808183070358309a975d5f5ef3f656abaa30638bae07e5f4ae27d1542d5d178b6ffdc8d58169c87170f23b2cf9aafe503ba2720d35755950d78b92c9885dac072d916b23bd89efa5",
            "secret": "3a05573e80ff424ba8b9141576501858f6ad00926a493f45dcbcd08a2470698b",
        },
    ),
}






@pytest.mark.parametrize("case", KAT)
def test_known_answers(case: str) -> None:
    options, expected = KAT[case]
    _, messages = kat_messages(options)
    for name, value in messages.items():
        assert pinned(value, expected[name]), f"{case} {name}: {value.hex()} / {hashlib.sha256(value).hexdigest()}"


def _hmac_expand(key: bytes, label: bytes, epoch: int, length: int) -> bytes:
    return hmac.digest(key, label + b"\x00" + epoch.to_bytes(8, "big") + b"\x01", "sha256")[:length]


def test_leave_rekey_matches_the_documented_format() -> None:
    """Alice re-derives the group secret after Bob's leave from the format description."""
    server = LkhScheme(rng=counter_rng(b"rmsec kat lkh"), options={"degree": 4})
    welcome = cbor2.loads(server.update(joins=NAMES).welcomes[b"alice"])
    assert welcome[:7] == [1, 2, 2, 1, 2, 2, 0]  # v1, lkh, welcome, epoch 1, log2 d, height, slot
    leaf, level1, root = (welcome[7][i : i + 16] for i in (0, 16, 32))
    assert _hmac_expand(root, b"rmsec lkh group secret", 1, 32) == server.group_secret
    rekey = cbor2.loads(server.update(leaves=[b"bob"]).rekey)
    assert rekey[:6] == [1, 2, 0, 2, 2, []]  # v1, lkh, rekey, epoch 2, height 2, nothing hashed
    entries = rekey[6]
    # level 1 node over slots 0..3 (binary node 3): Bob (slot 1) is gone, three wraps;
    # the root (binary node 15) over the level-1 nodes holding slots 0..3 and 4: two wraps
    assert [(e[0], e[1], len(e[2])) for e in entries] == [(3, 0b1101, 72), (15, 0b11, 48)]
    new_level1 = aes_key_unwrap(leaf, entries[0][2][:24])
    new_root = aes_key_unwrap(new_level1, entries[1][2][:24])
    assert _hmac_expand(new_root, b"rmsec lkh group secret", 2, 32) == server.group_secret
    assert _hmac_expand(new_root, b"rmsec lkh confirm", 2, 16) == rekey[7]
    assert new_level1 != level1 and new_root != root


def test_fast_welcome_encoding_is_canonical_cbor() -> None:
    server = LkhScheme(rng=counter_rng(2), options={"degree": 4})
    update = server.update(joins=[b"m%d" % i for i in range(300)])
    for welcome in list(update.welcomes.values())[::37]:
        value = cbor2.loads(welcome)
        assert cbor2.dumps(value) == welcome
        assert common.encode("lkh", common.WELCOME, *value[3:]) == welcome


@pytest.mark.parametrize(("degree", "height"), [(2, 8), (4, 4), (8, 3), (16, 2)])
def test_single_leave_costs_d_times_height_minus_one(degree: int, height: int) -> None:
    group = Group(LkhScheme, {"degree": degree}, seed=degree)
    n = degree**height
    group.update(joins=group.new_ids(n))
    assert group.server.height == height  # type: ignore[attr-defined]
    update = group.update(leaves=[b"member-%d" % (n // 3)])
    wraps = degree * height - 1
    assert group.server.stats == {"wraps": wraps, "hashed": 0, "entries": height}  # type: ignore[attr-defined]
    assert len(update.rekey) <= 24 * wraps + 8 * height + 40
    for member in list(group.members.values())[:: max(1, n // 16)]:
        assert len(member.held_keys()) == height + 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("join", ["rekey", "hash"])
def test_single_join_cost(join: str) -> None:
    group = Group(LkhScheme, {"degree": 4, "join": join}, seed=1)
    group.update(joins=group.new_ids(64))
    group.update(leaves=[b"member-9"])
    update = group.update(joins=group.new_ids(1))  # takes the vacated slot
    stats = group.server.stats  # type: ignore[attr-defined]
    if join == "rekey":
        assert stats == {"wraps": 3, "hashed": 0, "entries": 3}  # one old-key wrap per level
    else:
        assert stats == {"wraps": 0, "hashed": 3, "entries": 0}
        assert len(update.rekey) < 40
    assert_no_leak(group)


def assert_no_leak(group: Group) -> None:
    for coalition in (group.evicted(), group.current()[-1:]):
        forbidden = group.forbidden(coalition)
        assert not set(forbidden.values()) & derivable_secrets(group, coalition)


def test_tree_grows_without_moving_nodes() -> None:
    group = Group(LkhScheme, {"degree": 4}, seed=3)
    heights = []
    for _ in range(5):
        group.update(joins=group.new_ids(13))
        heights.append(group.server.height)  # type: ignore[attr-defined]
    assert heights == [2, 3, 3, 3, 4]
    alice = group.members[b"member-0"]
    # alice's nodes keep their indices as the tree grows: her path only gains ancestors
    assert [treemath.node_at(2 * j, 0) for j in range(5)] == [0, 3, 15, 63, 255]
    assert alice.height == 4 and alice.group_secret == group.server.group_secret  # type: ignore[attr-defined]
    assert_no_leak(group)


def test_state_is_compact() -> None:
    server = LkhScheme(rng=counter_rng(4), options={})
    server.update(joins=[b"member-%06d" % i for i in range(20000)])
    per_member = server.state_bytes() / server.members
    assert per_member < 60, per_member  # keys 21 + flags 1.3 + roster about 17
    arrays = sum(len(a) for a in (*server._keys, *server._occupied))
    assert arrays < 24 * server.members


def _clone_pair(n: int, seed: int, options: dict[str, object]) -> tuple[LkhScheme, LkhScheme]:
    servers = []
    for _ in range(2):
        server = LkhScheme(rng=counter_rng(seed), options=options)
        server.update(joins=[b"m%d" % i for i in range(n)])
        servers.append(server)
    return servers[0], servers[1]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 80),
    leave_picks=st.lists(st.integers(0, 10**6), max_size=12),
    joins=st.integers(0, 12),
    degree=st.sampled_from([2, 4, 8]),
    join=st.sampled_from(["rekey", "hash"]),
)
def test_batch_costs_no_more_than_the_rekeys_it_replaces(
    n: int, leave_picks: list[int], joins: int, degree: int, join: str
) -> None:
    options = {"degree": degree, "join": join}
    batch, single = _clone_pair(n, n, options)
    leaves = sorted({b"m%d" % (p % n) for p in leave_picks})
    new = [b"j%d" % i for i in range(joins)]
    if not leaves and not new:
        return
    update = batch.update(joins=new, leaves=leaves)
    batch_wraps, batch_bytes = batch.stats["wraps"], len(update.rekey)
    single_wraps = single_bytes = 0
    for m in leaves:
        single_bytes += len(single.update(leaves=[m]).rekey)
        single_wraps += single.stats["wraps"]
    for m in new:
        single_bytes += len(single.update(joins=[m]).rekey)
        single_wraps += single.stats["wraps"]
    assert batch_wraps <= single_wraps
    assert batch_bytes <= single_bytes


def test_large_batch_costs_far_less() -> None:
    batch, single = _clone_pair(4096, 7, {"degree": 4})
    leaves = [b"m%d" % i for i in range(0, 4096, 10)]  # 10 % churn
    joins = [b"j%d" % i for i in range(len(leaves))]
    batch.update(joins=joins, leaves=leaves)
    singles = 0
    for m in leaves:
        single.update(leaves=[m])
        singles += single.stats["wraps"]
    for m in joins:
        single.update(joins=[m])
        singles += single.stats["wraps"]
    assert batch.stats["wraps"] < 0.4 * singles, (batch.stats, singles)


def test_member_keeps_only_its_path_and_rejects_nodes_outside_the_tree() -> None:
    group = Group(LkhScheme, {"degree": 4}, seed=8)
    group.update(joins=group.new_ids(20))
    member = group.members[b"member-3"]
    assert len(member.held_keys()) == member.height + 1  # type: ignore[attr-defined]
    outside = treemath.node_at(2, 1 << 10)  # a level-1 node far right of a height-3 tree
    for bad in (outside, treemath.node_at(1, 0), 2):
        with pytest.raises(Exception) as info:
            wire.node_level(bad, 2, 3)
        assert type(info.value).__name__ == "MalformedPacket"


class LeaveAsJoinLkh(LkhScheme):
    """Broken on purpose: treats departures like joins (new keys wrapped under the old ones)."""

    name = "lkh"

    def _rekey_paths(self, *, changed: set[int], departed: set[int], joined: set[int]):  # type: ignore[no-untyped-def, override]
        return super()._rekey_paths(changed=changed, departed=set(), joined=joined)


def test_the_attacker_catches_a_broken_leave() -> None:
    """Control for the property tests: the classic mistake (new key under the old key on a
    leave) is found by the same attacker that finds nothing in the real scheme."""
    group = Group(LeaveAsJoinLkh, {"degree": 4}, seed=2)
    group.update(joins=group.new_ids(10))
    group.update(leaves=[b"member-4"])
    evicted = group.evicted()
    leaked = set(group.forbidden(evicted).values()) & derivable_secrets(group, evicted)
    assert leaked
