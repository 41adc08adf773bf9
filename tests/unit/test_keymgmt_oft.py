"""``oft``: known answers, the functions re-derived independently, costs, and the collusion
attack of Horng / Ku and Chen: it works against the original refresh rule and fails against
the strengthened one that ``oft`` registers."""

from __future__ import annotations

import hmac

import cbor2
import pytest
from rmsec_plugins.keymgmt_oft import OftScheme, OriginalOftScheme, wire

from rmsec.errors import AuthenticationFailed
from rmsec.interfaces import KeyManagement

from .keymgmt_support import KAT_NAMES, Group, counter_rng, derivable_secrets, pinned
from .keymgmt_support import kat_messages as support_kat_messages

NAMES = KAT_NAMES


def kat_messages(options: dict[str, object]) -> tuple[KeyManagement, dict[str, bytes]]:
    return support_kat_messages(OftScheme, b"rmsec kat oft", options)

KAT = {
    "oft": (
        {},
        {
            "welcome": "0fe95313c895d1b4a071b4c4844f5018ba34191f6be115d5be336966d5e686bb",
            "leave": "5c63a521feae6027fb720227fdae6a7db5f24b7f4defc850bc9b56a85c7c4988",
            "join": "f3a3d88ea1310bd3ae724208143a2f8d8a05fc858cff6ab386cc510026400c0f",
            "recovery": "381e7d40c8b8f3b6c4d6491185096e017c12b53ad82a8fd19bcd4e0fd5b9faf5",
            "refresh": "87010300040380503385e40db769e323d27e26a23d9e6b03",
            "secret": "c10cecb0fa731ce83490be02d8e0fa1931cb09da3c75b54d03af4cacdf04b3c0",
        },
    ),
}






@pytest.mark.parametrize("case", KAT)
def test_known_answers(case: str) -> None:
    options, expected = KAT[case]
    _, messages = kat_messages(options)
    for name, value in messages.items():
        assert pinned(value, expected[name]), f"{case} {name}: {value.hex()}"


def _prf(key: bytes, label: bytes, *context: int) -> bytes:
    info = label + b"\x00" + b"".join(c.to_bytes(8, "big") for c in context) + b"\x01"
    return hmac.digest(key, info, "sha256")


def test_welcome_matches_the_documented_functions() -> None:
    """Alice computes the root from her welcome with HMAC alone, as the docstring says."""
    server = OftScheme(rng=counter_rng(b"rmsec kat oft"))
    welcome = cbor2.loads(server.update(joins=NAMES).welcomes[b"alice"])
    assert welcome[:7] == [1, 3, 2, 1, 1, 3, 0]  # v1, oft, welcome, epoch 1, strengthened, height 3, slot 0
    secret, versions, copath, confirm = welcome[7:]
    assert [int.from_bytes(versions[i : i + 4], "big") for i in range(0, 16, 4)] == [1, 1, 1, 1]
    key = _prf(secret, b"rmsec oft leaf", 0, 1)[:16]  # leaf node 0, version 1
    for level in range(3):
        node = (1 << level) - 1  # alice's ancestors are the leftmost nodes: 0, 1, 3, 7
        parent = (1 << (level + 1)) - 1
        blinded = _prf(key, b"rmsec oft blind", node)[:16]
        key = _prf(blinded + copath[16 * level : 16 * level + 16], b"rmsec oft node", parent, 1)[:16]
    assert _prf(key, b"rmsec oft group secret", 1) == server.group_secret
    assert _prf(key, b"rmsec oft confirm", 1)[:16] == confirm


def test_leave_costs_about_two_wraps_per_level() -> None:
    group = Group(OftScheme, {}, seed=1)
    group.update(joins=group.new_ids(256))
    assert group.server.height == 8  # type: ignore[attr-defined]
    rekey = group.update(leaves=[b"member-77"]).rekey
    stats = group.server.stats  # type: ignore[attr-defined]
    assert stats["entries"] == 8
    # two per level, none at the bottom: the leaver's sibling only learns "now empty"
    assert stats["wraps"] == 2 * (8 - 1)
    assert len(rekey) < 24 * stats["wraps"] + 8 * 8 + 40
    group.update(joins=group.new_ids(1))  # refills slot 77: the joiner's key goes to its sibling
    assert group.server.stats["wraps"] == 2 * 8 - 1  # type: ignore[attr-defined]


def horng_scenario(scheme: type[OftScheme]) -> tuple[Group, bytes, bytes]:
    """A leaves the right half at epoch 3; B joins the left half at epoch 4.  A knows the
    left half's blinded key from before it left, B is handed the right half's blinded key:
    if neither changed in between, together they have the root of epoch 3."""
    group = Group(scheme, {}, seed=1)
    ids = group.new_ids(4)
    group.update(joins=ids)  # epoch 1: slots 0 1 | 2 3
    group.update(leaves=[ids[1]])  # epoch 2: slot 1 free
    a = ids[3]
    group.update(leaves=[a])  # epoch 3
    b = group.new_ids(1)[0]
    group.update(joins=[b])  # epoch 4: B takes slot 1
    assert group.server._roster.slot_of(b) == 1  # type: ignore[attr-defined]
    return group, a, b


def test_collusion_attack_breaks_the_original_refresh_rule() -> None:
    group, a, b = horng_scenario(OriginalOftScheme)
    assert not OriginalOftScheme.collusion_resistant
    forbidden = group.forbidden([a, b])
    assert sorted(forbidden) == [3]
    assert forbidden[3] in derivable_secrets(group, [a, b])
    # neither alone can do it
    assert not set(group.forbidden([a]).values()) & derivable_secrets(group, [a])
    assert not set(group.forbidden([b]).values()) & derivable_secrets(group, [b])


def test_collusion_attack_fails_against_oft() -> None:
    group, a, b = horng_scenario(OftScheme)
    assert OftScheme.collusion_resistant
    assert not set(group.forbidden([a, b]).values()) & derivable_secrets(group, [a, b])


def test_a_well_formed_lie_is_caught_by_the_confirmation() -> None:
    """Claim the root's right half is empty (dropping the wrap member 0 needed): the
    message still parses, the member computes a root, and the confirmation rejects it."""
    group = Group(OftScheme, {}, seed=2)
    group.update(joins=group.new_ids(6))
    rekey = group.server.update(leaves=[b"member-5"]).rekey
    decoded = cbor2.loads(rekey)
    root = decoded[5][-1]
    assert root[1] & wire.WRAP_LEFT
    root[1] = (root[1] & ~wire.WRAP_LEFT) | wire.BLANK_RIGHT
    root[2] = root[2][24:]
    member = group.members[b"member-0"]
    before = (member.epoch, member.group_secret)
    with pytest.raises(AuthenticationFailed):
        member.apply(cbor2.dumps(decoded))
    assert (member.epoch, member.group_secret) == before
    member.apply(rekey)
    assert member.group_secret == group.server.group_secret


def test_recovery_after_many_missed_epochs_and_growth() -> None:
    group = Group(OftScheme, {}, seed=3)
    group.update(joins=group.new_ids(3))
    group.lag(b"member-0")
    for _ in range(4):
        group.update(joins=group.new_ids(3))
        group.update(leaves=[group.current()[-1]])
    assert group.members[b"member-0"].height < group.server.height  # type: ignore[attr-defined]
    group.recover(b"member-0")
    group.check()
    group.update(leaves=[b"member-1"])
