"""Every built-in key-management scheme against the KeyManagement contract (DESIGN.md §5).

- properties (hypothesis): after any sequence of joins, leaves, batches, refreshes, missed
  rekeys and recoveries, every current member holds the server's group secret; a coalition
  of evicted members that keeps every key it ever held and every message ever sent derives
  no later secret (forward secrecy); the latest joiner derives no earlier secret (backward
  secrecy); the two together derive no secret of an epoch in which neither was a member
  (collusion).  The attacker is ``keymgmt_support.derivable_secrets``: every value it holds
  against every wrapped key, to a fixed point;
- untrusted input: rekeys, recoveries and welcomes, mutated or arbitrary, raise only
  MalformedPacket, NotForMe or AuthenticationFailed and leave the member unchanged, or (a
  mutation in a part the member does not read) reach the true secret;
- epochs: old or out-of-order rekeys are NotForMe; recovery works from any earlier epoch.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rmsec_plugins.keymgmt_flat import common

import rmsec.plugins
from rmsec.errors import AuthenticationFailed, LocalError, MalformedPacket, NotForMe
from rmsec.interfaces import KeyManagement, KeyManagementMember

from .keymgmt_support import Group, derivable_secrets

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "flat": ("flat", {}),
    "lkh": ("lkh", {}),
    "lkh-binary-hashjoin": ("lkh", {"degree": 2, "join": "hash"}),
    "lkh-16": ("lkh", {"degree": 16}),
    "oft": ("oft", {}),
    "regions": ("regions", {"regions": 3}),
    "regions-mixed": (
        "regions",
        {"regions": [{"scheme": "flat"}, {"scheme": "lkh", "options": {"join": "hash", "degree": 2}}]},
    ),
}
ALLOWED = (MalformedPacket, NotForMe, AuthenticationFailed)
MAX_MEMBERS = 14


def scheme_of(config: str) -> tuple[type[KeyManagement], dict[str, Any]]:
    name, options = CONFIGS[config]
    return rmsec.plugins.get_key_management(name), options


def test_every_builtin_scheme_is_registered() -> None:
    for name in ("flat", "lkh", "oft", "regions"):
        cls = rmsec.plugins.get_key_management(name)
        assert cls.name == name
        assert cls.forward_secrecy and cls.backward_secrecy and cls.collusion_resistant
    rows = {row["name"]: row for row in rmsec.plugins.list_plugins()}
    for name in ("flat", "lkh", "oft", "regions"):
        row = rows[f"rmsec_plugins.keymgmt_{name}"]
        assert row["registers"]["key_management"] == [name]
        assert row["hooks"] == ["rmsec_register_key_management"]


@pytest.mark.parametrize("config", CONFIGS)
def test_design_example(config: str) -> None:
    """The usage example of DESIGN.md §5, verbatim apart from the scheme."""
    scheme, options = scheme_of(config)
    server = scheme(rng=os.urandom, options=options)
    u1 = server.update(joins=[b"alice", b"bob"])
    alice = scheme.member_from_welcome(u1.welcomes[b"alice"])
    u2 = server.update(leaves=[b"bob"])
    alice.apply(u2.rekey)
    assert alice.epoch == server.epoch and alice.group_secret == server.group_secret
    assert server.members == 1 and len(server.group_secret) == 32


# ------------------------------------------------------------------------------ properties

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(1, 3)),
        st.tuples(st.just("leave"), st.integers(0, 99)),
        st.tuples(st.just("batch"), st.integers(0, 3), st.lists(st.integers(0, 99), max_size=3)),
        st.tuples(st.just("refresh")),
        st.tuples(st.just("lag"), st.integers(0, 99)),
        st.tuples(st.just("recover"), st.integers(0, 99)),
    ),
    min_size=1,
    max_size=10,
)


def run_ops(group: Group, first: int, ops: list[tuple[Any, ...]]) -> None:
    group.update(joins=group.new_ids(first))
    for op in ops:
        current = group.current()
        kind = op[0]
        if kind == "join" and len(current) + op[1] <= MAX_MEMBERS:
            group.update(joins=group.new_ids(op[1]))
        elif kind == "leave" and current:
            group.update(leaves=[current[op[1] % len(current)]])
        elif kind == "batch":
            leaves = sorted({current[i % len(current)] for i in op[2]}) if current else []
            joins = group.new_ids(min(op[1], MAX_MEMBERS - len(current) + len(leaves)))
            if joins or leaves:
                group.update(joins=joins, leaves=leaves)
        elif kind == "refresh":
            group.refresh()
        elif kind == "lag" and current:
            group.lag(current[op[1] % len(current)])
        elif kind == "recover" and group.lagging:
            lagging = sorted(group.lagging)
            group.recover(lagging[op[1] % len(lagging)])
    for member_id in sorted(group.lagging):
        group.recover(member_id)
    group.check()


def assert_no_leak(group: Group, coalition: list[bytes]) -> None:
    forbidden = group.forbidden(coalition)
    if not forbidden:
        return
    leaked = sorted(e for e, secret in forbidden.items() if secret in derivable_secrets(group, coalition))
    assert not leaked, f"coalition {coalition} derives the secrets of epochs {leaked}"


@pytest.mark.parametrize("config", CONFIGS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.integers(1, 5), ops=OPS, seed=st.integers(0, 2**16))
def test_members_agree_and_outsiders_learn_nothing(config: str, first: int, ops: list[tuple[Any, ...]], seed: int) -> None:
    scheme, options = scheme_of(config)
    group = Group(scheme, options, seed)
    run_ops(group, first, ops)
    evicted = group.evicted()
    current = group.current()
    latest = max(current, key=lambda m: (group.spans[m][-1][0], m)) if current else None
    assert_no_leak(group, evicted)  # forward secrecy, all evicted members together
    if latest is not None:
        assert_no_leak(group, [latest])  # backward secrecy
        assert_no_leak(group, [*evicted, latest])  # collusion of leavers and a joiner
        # the attacker is not vacuous: a current member derives the current secret
        assert group.server.group_secret in derivable_secrets(group, [latest])


# --------------------------------------------------------------------------- untrusted input


def small_group(config: str) -> tuple[Group, dict[str, bytes]]:
    """Five members, one leave, a lagging member's recovery: one message of each kind."""
    scheme, options = scheme_of(config)
    group = Group(scheme, options, seed=5)
    update = group.update(joins=group.new_ids(5))
    welcome = update.welcomes[b"member-4"]
    group.lag(b"member-0")
    rekey = group.update(leaves=[b"member-3"]).rekey
    recovery = group.server.recover(b"member-0")
    return group, {"rekey": rekey, "recovery": recovery, "welcome": welcome}


def snapshot(member: KeyManagementMember) -> tuple[Any, ...]:
    return (member.epoch, member.group_secret, tuple(member.held_keys()))  # type: ignore[attr-defined]


def check_apply(group: Group, member_id: bytes, data: bytes, true_secret: bytes) -> None:
    member = group.members[member_id]
    before = snapshot(member)
    try:
        member.apply(data)
    except ALLOWED:
        assert snapshot(member) == before, "state changed although apply failed"
    else:
        assert member.group_secret == true_secret


MUTATION = st.tuples(st.integers(0, 2**31), st.integers(1, 255), st.sampled_from(["flip", "cut", "grow"]))


def mutate(data: bytes, where: int, value: int, how: str) -> bytes:
    i = where % len(data)
    if how == "flip":
        return data[:i] + bytes([data[i] ^ value]) + data[i + 1 :]
    if how == "cut":
        return data[:i]
    return data + bytes([value]) * (where % 7 + 1)


@pytest.mark.parametrize("config", CONFIGS)
@settings(max_examples=60, deadline=None)
@given(mutation=MUTATION)
def test_mutated_messages_fail_cleanly(config: str, mutation: tuple[int, int, str]) -> None:
    group, messages = small_group(config)
    secret = group.server.group_secret
    # member-0 lags one epoch behind: both the rekey and the recovery are for it
    lagging = group.members[b"member-0"]
    for kind in ("rekey", "recovery"):
        group.members[b"member-0"] = lagging.clone()  # type: ignore[attr-defined]
        check_apply(group, b"member-0", mutate(messages[kind], *mutation), secret)
    scheme, _ = scheme_of(config)
    with contextlib.suppress(*ALLOWED):
        scheme.member_from_welcome(mutate(messages["welcome"], *mutation))


CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=40) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5),
    max_leaves=12,
)


@pytest.mark.parametrize("config", CONFIGS)
@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=200), fields=st.lists(CBOR_VALUES, max_size=8), kind=st.integers(0, 3))
def test_arbitrary_input_fails_cleanly(config: str, raw: bytes, fields: list[Any], kind: int) -> None:
    group, _ = small_group(config)
    scheme, _ = scheme_of(config)
    member_id = group.current()[-1]
    code = common.SCHEMES[CONFIGS[config][0]]
    crafted = cbor2.dumps([1, code, kind, group.server.epoch + 1, *fields])
    for data in (raw, crafted):
        check_apply(group, member_id, data, b"never")
        with contextlib.suppress(*ALLOWED):
            scheme.member_from_welcome(data)


def test_non_bytes_input_is_malformed() -> None:
    group, _ = small_group("lkh")
    member = group.members[group.current()[0]]
    with pytest.raises(MalformedPacket):
        member.apply("text")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("config", CONFIGS)
def test_epoch_rules(config: str) -> None:
    scheme, options = scheme_of(config)
    group = Group(scheme, options, seed=9)
    group.update(joins=group.new_ids(6))
    member = group.members[b"member-1"]
    old = group.update(leaves=[b"member-5"]).rekey
    with pytest.raises(NotForMe):  # replayed: already applied
        member.apply(old)
    group.lag(b"member-1")
    group.refresh()
    skipped = group.refresh().rekey
    with pytest.raises(NotForMe):  # one epoch ahead of the member: needs recovery first
        member.apply(skipped)
    group.recover(b"member-1")
    assert member.group_secret == group.server.group_secret
    with pytest.raises(NotForMe):  # recovery to the epoch it is already at
        member.apply(group.server.recover(b"member-1"))
    with pytest.raises(NotForMe):  # another member's recovery
        group.lag(b"member-2")
        group.refresh()
        group.members[b"member-2"].apply(group.server.recover(b"member-3"))


@pytest.mark.parametrize("config", CONFIGS)
def test_evicted_member_gets_nothing(config: str) -> None:
    scheme, options = scheme_of(config)
    group = Group(scheme, options, seed=3)
    group.update(joins=group.new_ids(6))
    evicted = group.members[b"member-2"]
    before = snapshot(evicted)
    rekey = group.update(leaves=[b"member-2"]).rekey
    with pytest.raises(ALLOWED):
        evicted.apply(rekey)
    assert snapshot(evicted) == before
    assert evicted.group_secret != group.server.group_secret


@pytest.mark.parametrize("config", CONFIGS)
def test_misuse_is_local_error(config: str) -> None:
    scheme, options = scheme_of(config)
    server = scheme(rng=os.urandom, options=options)
    server.update(joins=[b"a", b"b"])
    for call in (
        lambda: server.update(joins=[b"a"]),
        lambda: server.update(leaves=[b"zed"]),
        lambda: server.update(joins=[b"c", b"c"]),
        lambda: server.update(joins=[b""]),
        lambda: server.update(joins=["text"]),  # type: ignore[list-item]
        lambda: server.update(joins=[b"x" * 256]),
        lambda: server.recover(b"zed"),
    ):
        with pytest.raises(LocalError):
            call()
    assert server.members == 2


@pytest.mark.parametrize("config", CONFIGS)
def test_everyone_leaves_then_group_restarts(config: str) -> None:
    scheme, options = scheme_of(config)
    group = Group(scheme, options, seed=4)
    group.update(joins=group.new_ids(3))
    group.update(leaves=group.current())
    assert group.server.members == 0
    group.refresh()
    group.update(joins=group.new_ids(2))
    group.update(leaves=[group.current()[0]], joins=group.new_ids(1))
    assert_no_leak(group, group.evicted())


def test_bad_options_are_config_errors() -> None:
    from rmsec.errors import ConfigError

    for name, options in (
        ("flat", {"degree": 4}),
        ("lkh", {"degree": 3}),
        ("lkh", {"degree": "4"}),
        ("lkh", {"join": "maybe"}),
        ("lkh", {"depth": 2}),
        ("oft", {"variant": "original"}),
        ("regions", {"regions": 0}),
        ("regions", {"regions": [{"scheme": "tesla"}]}),
        ("regions", {"regions": [{"name": "a"}, {"name": "a"}]}),
        ("regions", {"regions": [{"refresh": -1}]}),
        ("regions", {"regions": [{"colour": "red"}]}),
        ("regions", {"regions": "many"}),
    ):
        with pytest.raises(ConfigError):
            rmsec.plugins.get_key_management(name)(rng=os.urandom, options=options)
