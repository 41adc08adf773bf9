"""``regions`` with regional managers on repair heads, sans-IO: the head's machine
(:class:`RegionalManagerMember`), members taking translations, the controller admitting
manager heads and placing members, and everything a head or a member decodes from the wire.

The same scenario over the real transport is tests/trio/test_regions_group.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rmsec_plugins.keymgmt_regions import RegionsScheme, wire
from rmsec_plugins.keymgmt_regions.manager import RegionalManagerMember
from rmsec_plugins.keymgmt_regions.member import RegionsMember

from rmsec.errors import AuthenticationFailed, ConfigError, LocalError, MalformedPacket, NotForMe
from rmsec.interfaces import Update
from rmsec.security import events as ev
from rmsec.security import keycrypto, regional
from rmsec.security import messages as msg
from rmsec.security.member import Member, State
from rmsec.security.regional import AwaitingTranslation, TranslationRejected

from .keymgmt_support import counter_rng
from .security_helpers import Group

EAST, WEST, CORE = 0, 1, 2
OPTIONS: dict[str, Any] = {
    "regions": [
        {"name": "east", "manager": "head-east"},
        {"name": "west", "manager": "head-west"},
        {"name": "core"},
    ],
    "inner": "lkh",
}
HEADS = {b"head-east": EAST, b"head-west": WEST}


class World:
    """A ``regions`` server with manager heads and members, bytes moved by hand."""

    def __init__(self, seed: int = 1) -> None:
        self.server = RegionsScheme(rng=counter_rng(seed), options=OPTIONS)
        self.heads: dict[bytes, RegionalManagerMember] = {}
        self.members: dict[bytes, RegionsMember] = {}
        self.translations: list[bytes] = []

    def join_heads(self, *heads: bytes) -> Update:
        update = self.server.update(joins=list(heads))
        self.deliver(update, new=heads)
        for head in heads:
            manager = RegionsScheme.member_from_welcome(update.welcomes[head])
            assert isinstance(manager, RegionalManagerMember)
            self.heads[head] = manager
            self.translations += manager.translations_to_send()
        return update

    def join(self, placed: dict[bytes, int]) -> Update:
        for member_id, region in placed.items():
            self.server.place(member_id, region)
        update = self.server.update(joins=list(placed))
        self.deliver(update, new=list(placed))
        for member_id in placed:
            member = RegionsScheme.member_from_welcome(update.welcomes[member_id])
            assert isinstance(member, RegionsMember)
            self.members[member_id] = member
        return update

    def leave(self, *member_ids: bytes) -> Update:
        update = self.server.update(leaves=list(member_ids))
        for m in member_ids:
            self.members.pop(m, None)
            self.heads.pop(m, None)
        self.deliver(update)
        return update

    def deliver(self, update: Update, new: Sequence[bytes] = ()) -> None:
        """The rekey to every head (each translates), the translations to every member."""
        for head in self.heads.values():
            head.apply(update.rekey)
            self.translations += head.translations_to_send()
        for member_id, member in self.members.items():
            if member_id in new:
                continue
            for t in self.translations:
                with contextlib.suppress(NotForMe):
                    member.accept_translation(t)
            member.apply(update.rekey)
        self.translations = []
        self.check()

    def check(self) -> None:
        for member_id, member in [*self.members.items(), *self.heads.items()]:
            assert member.epoch == self.server.epoch, member_id
            assert member.group_secret == self.server.group_secret, member_id


def started(seed: int = 1) -> World:
    world = World(seed)
    world.join_heads(b"head-east", b"head-west")
    world.join({b"e1": EAST, b"e2": EAST, b"e3": EAST, b"w1": WEST, b"w2": WEST, b"c1": CORE})
    return world


def rekey_parts(rekey: bytes) -> dict[int, wire.Part]:
    return {p.region: p for p in wire.decode_rekey_untrusted(rekey).parts}


# ----------------------------------------------------------------------------- the scheme


def test_heads_translate_and_every_member_follows() -> None:
    world = started()
    assert world.server.remote_regions == {EAST: b"head-east", WEST: b"head-west"}
    world.leave(b"e2")
    world.join({b"w3": WEST, b"c2": CORE})
    world.deliver(world.server.refresh())
    world.deliver(world.server.refresh_region(WEST))
    world.leave(b"w1", b"c1")
    assert world.server.members == 5  # seats are not members
    assert world.server.stats["translated_by_heads"] == 2


def test_a_change_rekeys_only_its_own_region() -> None:
    world = started()
    inner_before = {m.index: m.inner.epoch for m in world.server.managers}
    update = world.leave(b"e1")
    parts = rekey_parts(update.rekey)
    assert parts[EAST].inner and parts[EAST].wrap == b""  # east's tree, wrapped by its head
    assert parts[WEST].inner == b"" and parts[WEST].wrap == b""  # west: only its head's wrap
    assert parts[CORE].inner == b"" and len(parts[CORE].wrap) == wire.W  # core: in process
    assert world.server.stats["regions_changed"] == 1
    after = {m.index: m.inner.epoch for m in world.server.managers}
    assert after == {**inner_before, EAST: inner_before[EAST] + 1}
    assert world.heads[b"head-west"].seat.epoch == after[WEST]


def test_the_head_does_what_the_in_process_manager_would() -> None:
    world = started()
    update = world.server.refresh()
    rekey = wire.decode_rekey_untrusted(update.rekey)
    head = world.heads[b"head-east"]
    head.apply(update.rekey)
    (translation,) = head.translations_to_send()
    made = wire.decode_translation_untrusted(translation)
    assert (made.epoch, made.region) == (world.server.epoch, EAST)
    assert made.wrap == world.server.managers[EAST].translate(rekey.trunk)


def test_a_member_waits_for_its_translation_and_rejects_forged_ones() -> None:
    world = started()
    member = world.members[b"e1"]
    update = world.server.update(leaves=[b"w1"])
    before = (member.epoch, member.group_secret)
    with pytest.raises(AwaitingTranslation):
        member.apply(update.rekey)
    assert issubclass(AwaitingTranslation, NotForMe)
    epoch = world.server.epoch
    forged = wire.encode_translation(epoch, EAST, bytes(wire.W))
    member.accept_translation(forged)
    with pytest.raises(TranslationRejected):
        member.apply(update.rekey)
    assert (member.epoch, member.group_secret) == before
    with pytest.raises(NotForMe):
        member.accept_translation(wire.encode_translation(epoch, WEST, bytes(wire.W)))  # not ours
    with pytest.raises(NotForMe):
        member.accept_translation(wire.encode_translation(member.epoch, EAST, bytes(wire.W)))  # past
    # West's head cannot speak for east: right epoch, east's region, west's key.
    west = world.heads[b"head-west"]
    west.apply(update.rekey)
    west.translations_to_send()
    bad = wire.encode_translation(epoch, EAST, keycrypto.wrap_key(west.region_kek(), b"\x00" * 16))
    member.accept_translation(bad)
    with pytest.raises(TranslationRejected):
        member.apply(update.rekey)
    east = world.heads[b"head-east"]
    east.apply(update.rekey)
    (good,) = east.translations_to_send()
    member.accept_translation(forged)
    member.accept_translation(good)  # the latest one wins
    member.apply(update.rekey)
    assert member.group_secret == world.server.group_secret


def test_manager_apply_is_all_or_nothing() -> None:
    world = started()
    head = world.heads[b"head-east"]
    update = world.server.update(leaves=[b"e3"])
    values = cbor2.loads(update.rekey)
    state = (head.epoch, head.group_secret, head.seat.epoch)
    values[6] = bytes(16)  # a confirmation that does not match
    with pytest.raises(AuthenticationFailed):
        head.apply(cbor2.dumps(values))
    values = cbor2.loads(update.rekey)
    values[5][0][1] = values[5][0][1][:-1] + bytes([values[5][0][1][-1] ^ 1])  # east's inner rekey
    with pytest.raises((AuthenticationFailed, MalformedPacket)):
        head.apply(cbor2.dumps(values))
    assert (head.epoch, head.group_secret, head.seat.epoch) == state
    assert head.translations_to_send() == []
    with pytest.raises(NotForMe):
        head.apply(world.server.refresh().rekey)  # skips an epoch
    head.apply(world.server.recover(b"head-east"))  # a manager state brings it current
    assert head.group_secret == world.server.group_secret
    assert len(head.translations_to_send()) == 1


def test_a_departed_head_reads_nothing_later_and_the_others_recover() -> None:
    world = started()
    west = world.heads[b"head-west"]
    kept = west.held_keys()
    update = world.server.update(leaves=[b"head-west"])
    world.heads.pop(b"head-west")
    assert world.server.remote_regions == {EAST: b"head-east"}
    east = world.heads[b"head-east"]
    with pytest.raises(NotForMe):  # the trunk was rekeyed: recover over TLS
        east.apply(update.rekey)
    east.apply(world.server.recover(b"head-east"))
    world.translations += east.translations_to_send()
    for member in world.members.values():
        for t in world.translations:
            with contextlib.suppress(NotForMe):
                member.accept_translation(t)
        member.apply(update.rekey)
    world.translations = []
    world.check()
    later = [update, world.leave(b"w2"), world.join({b"w4": WEST})]
    later.append(world.server.refresh())
    world.deliver(later[-1])
    wraps = []
    for u in later:
        rekey = wire.decode_rekey_untrusted(u.rekey)
        wraps += [rekey.trunk, *(p.wrap for p in rekey.parts if p.wrap)]
    wraps += [keycrypto.wrap_key(world.heads[b"head-east"].region_kek(), b"\x01" * 16)]
    for key in kept:
        for wrap in wraps:
            with pytest.raises(AuthenticationFailed):
                keycrypto.unwrap_key(keycrypto.expand(key, b"rmsec regions trunk key"), wrap)
            with pytest.raises(AuthenticationFailed):
                keycrypto.unwrap_key(wire.region_kek(key), wrap)
            if len(key) == keycrypto.KEY_LEN:
                with pytest.raises(AuthenticationFailed):
                    keycrypto.unwrap_key(key, wrap)
    with pytest.raises(NotForMe):
        west.apply(later[1].rekey)
    # A head back on: a fresh seat and trunk membership, no key from before its join.
    world.join_heads(b"head-west")
    assert set(world.heads[b"head-west"].held_keys()).isdisjoint(kept)
    world.leave(b"w4")


def test_manager_options_are_checked() -> None:
    with pytest.raises(ConfigError):
        RegionsScheme(rng=counter_rng(1), options={"regions": [{"name": "a", "manager": 7}]})
    with pytest.raises(ConfigError):
        RegionsScheme(rng=counter_rng(1), options={"regions": [
            {"name": "a", "manager": "h"}, {"name": "b", "manager": "h"}]})
    server = RegionsScheme(rng=counter_rng(1), options=OPTIONS)
    assert server.hosts_manager(b"head-east") and not server.hosts_manager(b"e1")
    with pytest.raises(LocalError):
        server.place_named(b"x", "nowhere")
    server.update(joins=[b"head-east"])
    with pytest.raises(LocalError):
        server.update(joins=[b"head-east"])
    for i in range(20):  # members that name no region avoid the managed ones
        assert server.region_of(b"m%d" % i) == CORE


# ------------------------------------------------------------------------ untrusted input


def _state_values() -> list[Any]:
    world = started()
    return list(cbor2.loads(world.server.recover(b"head-east")))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-1],  # a field missing
        lambda v: [*v, b""],  # one too many
        lambda v: [*v[:2], 5, *v[3:]],  # unknown kind
        lambda v: [*v[:4], 4096, *v[5:]],  # region out of range
        lambda v: [*v[:5], 9, *v[6:]],  # unknown inner scheme
        lambda v: [*v[:6], "text", *v[7:]],  # wrong type
        lambda v: [*v[:10], v[10][:-1]],  # group key of the wrong length
        lambda v: [*v[:6], b"\x00" * 8, *v[7:]],  # seat welcome that is not one
    ],
)
def test_manager_state_is_decoded_as_untrusted(mangle: Any) -> None:
    data = cbor2.dumps(mangle(_state_values()))
    with pytest.raises(MalformedPacket):
        RegionalManagerMember.from_state(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor2.dumps([1, 4, 3, 5, 0]),
        cbor2.dumps([1, 4, 3, 5, 0, b"\x00" * 23]),
        cbor2.dumps([1, 4, 3, 5, -1, b"\x00" * 24]),
        cbor2.dumps([1, 3, 3, 5, 0, b"\x00" * 24]),
        cbor2.dumps([1, 4, 0, 5, 0, b"\x00" * 24]),  # a rekey kind where a translation goes
        cbor2.dumps([1, 4, 3, 5, 0, b"\x00" * 24]) + b"\x00",
        b"\x00" * 300,
    ],
)
def test_translations_are_decoded_as_untrusted(data: bytes) -> None:
    member = started().members[b"e1"]
    with pytest.raises(MalformedPacket):
        member.accept_translation(data)


def test_a_part_wrap_is_24_bytes_or_empty() -> None:
    world = started()
    values = cbor2.loads(world.server.refresh().rekey)
    values[5][0][2] = b"\x00" * 5
    with pytest.raises(MalformedPacket):
        world.heads[b"head-east"].apply(cbor2.dumps(values))
    with pytest.raises(MalformedPacket):
        world.members[b"e1"].apply(cbor2.dumps(values))


def test_translation_frames() -> None:
    frame = regional.encode_translation_frame(b"payload")
    assert regional.is_translation_frame(frame)
    assert not regional.is_translation_frame(b"\x01" + frame[1:])  # a protected frame's version
    assert regional.decode_translation_frame_untrusted(frame) == b"payload"
    for bad in (frame[:-1], cbor2.dumps(["rmsec translatioN", 1, b""]), cbor2.dumps(["rmsec translation", 2, b""]),
                cbor2.dumps(["rmsec translation", 1, b"x" * 2000]), frame + b"\x00", b""):
        with pytest.raises(MalformedPacket):
            regional.decode_translation_frame_untrusted(bad)


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.integers(-2, 5000), st.binary(max_size=40), st.text(max_size=4)), max_size=12).map(
        lambda v: cbor2.dumps([1, 4, *v])),
))
def test_random_input_raises_only_the_documented_errors(data: bytes) -> None:
    world = _FUZZ_WORLD
    head = world.heads[b"head-east"].clone()
    member = world.members[b"e1"].clone()
    for call in (head.apply, member.apply, member.accept_translation, RegionalManagerMember.from_state,
                 RegionsScheme.member_from_welcome):
        with contextlib.suppress(MalformedPacket, NotForMe, AuthenticationFailed):
            call(data)


_FUZZ_WORLD = started(seed=5)


# ------------------------------------------------------------------ with the security layer


class ManagedRegions(RegionsScheme):
    """``regions`` with :data:`OPTIONS` (the security helpers' Group builds schemes bare)."""

    def __init__(self, *, rng: Any, options: Any = None) -> None:
        super().__init__(rng=rng, options=OPTIONS)


def _join(group: Group, name: str, *, roles: int = msg.Roles.RECEIVE, region: str | None = None) -> Member:
    """``Group.join`` with a region named at registration (PLACE before REGISTER)."""
    member_id = name.encode()
    group._next_conn += 1
    conn = group._next_conn
    member = Member(member_id=member_id, node_id=group.rng(8), rng=group.rng, now=group.now, roles=roles,
                    controller_key=group.controller.public_key, plugins=group.lookup, region=region)
    group.members[member_id] = member
    group.events[member_id] = []
    group.conn_of[member_id] = conn
    group.member_of[conn] = member
    group.controller.connection_made(conn, None, group.now)
    member.start(group.now)
    group.pump()
    return member


def _translate(group: Group, *heads: str) -> int:
    """What the manager heads made, as translation frames to every member (their streams)."""
    sent = 0
    for head in heads:
        km = group.members[head.encode()].key_management
        assert isinstance(km, RegionalManagerMember)
        for payload in km.translations_to_send():
            frame = regional.encode_translation_frame(payload)
            for member_id, member in group.members.items():
                if member_id.startswith(b"head"):
                    continue
                member.receive_frame(frame, group.now)
                sent += 1
    group.pump()
    return sent


def managed_group() -> Group:
    group = Group(scheme=ManagedRegions)
    manager_roles = msg.Roles.HEAD | msg.Roles.MANAGER
    for head in ("head-east", "head-west"):
        assert _join(group, head, roles=manager_roles).state == State.MEMBER
    _translate(group, "head-east", "head-west")
    for name, region in (("e1", "east"), ("e2", "east"), ("w1", "west"), ("sender", None)):
        roles = msg.Roles.RECEIVE | msg.Roles.SEND if name == "sender" else msg.Roles.RECEIVE
        assert _join(group, name, roles=roles, region=region).state == State.MEMBER
        _translate(group, "head-east", "head-west")
    return group


def test_the_controller_admits_named_manager_heads_and_places_members() -> None:
    group = managed_group()
    scheme = group.controller.scheme
    assert isinstance(scheme, RegionsScheme)
    assert isinstance(group.members[b"head-east"].key_management, RegionalManagerMember)
    assert [scheme.region_of(m) for m in (b"e1", b"e2", b"w1", b"sender")] == [EAST, EAST, WEST, CORE]
    for name in ("e1", "e2", "w1", "sender", "head-east", "head-west"):
        assert group.members[name.encode()].epoch == group.controller.epoch, name
        assert group.members[name.encode()].group_secret == scheme.group_secret, name
    assert group.members[b"e1"].stats()["translations_accepted"] >= 1
    assert group.members[b"e1"].stats().get("recoveries_requested", 0) == 0
    # Sender material is for readers: a manager head gets none.
    group.add_sender("sender")
    assert group.of_type("e1", ev.SenderKnown) and not group.of_type("head-east", ev.SenderKnown)
    impostor = _join(group, "head-north", roles=msg.Roles.HEAD | msg.Roles.MANAGER)
    assert impostor.state == State.DENIED
    assert impostor.reason == "no region of this group names this head as its manager"
    lost = _join(group, "x1", region="nowhere")
    assert lost.state == State.DENIED and lost.reason == "no region named 'nowhere'"


def test_place_needs_regions_and_comes_before_register() -> None:
    group = Group()  # the default scheme has no regions
    member = _join(group, "alice", region="east")
    assert member.state == State.DENIED and member.reason == "this group's key management has no regions"
    group = managed_group()
    bob = group.members[b"e1"]
    group.controller.receive_control(group.conn_of[b"e1"], msg.Place("west").encode(), group.now)
    group.pump()
    assert bob.state == State.EXPELLED and bob.reason == "PLACE after REGISTER"


def test_the_member_machine_holds_a_rekey_until_its_translation() -> None:
    group = managed_group()
    e1 = group.members[b"e1"]
    before = e1.epoch
    group.disconnect("w1")  # a leave in west: a rekey for everyone
    assert e1.epoch == before and e1.stats()["rekeys_awaiting_translation"] >= 1
    forged = wire.encode_translation(group.controller.epoch, EAST, bytes(wire.W))
    e1.receive_frame(regional.encode_translation_frame(forged), group.now)
    group.pump()
    assert e1.stats()["translations_rejected"] == 1 and group.of_type("e1", ev.AuthFailure)
    assert e1.epoch == before
    _translate(group, "head-east", "head-west")
    assert e1.epoch == group.controller.epoch
    assert e1.stats().get("recoveries_requested", 0) == 0
    e1.receive_frame(regional.encode_translation_frame(b"\x00garbage"), group.now)
    assert e1.stats()["translations_malformed"] == 1


def test_a_rekey_awaiting_its_translation_is_counted_once() -> None:
    group = managed_group()
    e1 = group.members[b"e1"]
    awaited = e1.stats()["rekeys_awaiting_translation"]  # the joins' rekeys so far
    group.disconnect("w1")  # a rekey e1 must hold until head-east translates
    assert e1.stats()["rekeys_awaiting_translation"] == awaited + 1
    held = e1.stats()["rekeys_held"]
    # Each translation kept re-checks the held rekey: one for a later epoch (kept, but not
    # the one it waits for), then a forged one for its epoch (rejected).
    later = wire.encode_translation(group.controller.epoch + 1, EAST, bytes(wire.W))
    forged = wire.encode_translation(group.controller.epoch, EAST, bytes(wire.W))
    for payload in (later, forged, later):
        e1.receive_frame(regional.encode_translation_frame(payload), group.now)
    group.pump()
    assert e1.stats()["translations_accepted"] >= 2 and e1.stats()["translations_rejected"] == 1
    assert e1.stats()["rekeys_awaiting_translation"] == awaited + 1
    assert e1.stats()["rekeys_held"] == held
    _translate(group, "head-east", "head-west")
    assert e1.epoch == group.controller.epoch
    group.disconnect("e2")  # the next rekey that waits is counted again, once
    assert e1.stats()["rekeys_awaiting_translation"] == awaited + 2


def test_without_its_translation_a_member_recovers_from_the_controller() -> None:
    group = managed_group()
    group.disconnect("e2")
    e1 = group.members[b"e1"]
    assert e1.epoch != group.controller.epoch
    group.advance(group.now + 2.0)  # no head translated: recovery_delay passes
    assert e1.epoch == group.controller.epoch
    assert e1.stats()["recoveries_requested"] == 1 and e1.stats()["recoveries_applied"] == 1


def test_a_manager_head_leaving_moves_its_region_back_to_the_controller() -> None:
    group = managed_group()
    group.disconnect("head-west")  # its connection is its membership
    scheme = group.controller.scheme
    assert isinstance(scheme, RegionsScheme) and scheme.remote_regions == {EAST: b"head-east"}
    east_head = group.members[b"head-east"]
    # The trunk was rekeyed past head-east: it asked for recovery and got a manager state.
    assert east_head.stats()["recoveries_applied"] == 1
    assert east_head.epoch == group.controller.epoch
    _translate(group, "head-east")
    for name in ("e1", "e2", "w1", "sender"):
        member = group.members[name.encode()]
        assert member.epoch == group.controller.epoch, name
        assert member.group_secret == scheme.group_secret, name
        assert member.stats().get("recoveries_requested", 0) == 0, name


class PeriodicRegions(RegionsScheme):
    """Two in-process regions: ``fast`` rekeys on its own 5 s period, ``slow`` never."""

    def __init__(self, *, rng: Any, options: Any = None) -> None:
        super().__init__(rng=rng, options={
            "regions": [{"name": "fast", "refresh": 5}, {"name": "slow"}], "inner": "lkh",
        })


def test_the_controller_refreshes_each_region_on_its_own_period() -> None:
    group = Group(scheme=PeriodicRegions)
    for name in ("m1", "m2", "m3", "m4"):
        assert group.join(name).state == State.MEMBER
    scheme = group.controller.scheme
    assert isinstance(scheme, RegionsScheme)
    inner = [int(m.inner.epoch) for m in scheme.managers]
    epoch = group.controller.epoch
    group.advance(4.9)
    assert group.controller.epoch == epoch
    group.advance(5.1)
    assert group.controller.counters["part_refreshes"] == 1
    assert group.controller.epoch == epoch + 1
    assert [int(m.inner.epoch) for m in scheme.managers] == [inner[0] + 1, inner[1]]
    group.advance(10.2)
    assert group.controller.counters["part_refreshes"] == 2
    assert [int(m.inner.epoch) for m in scheme.managers] == [inner[0] + 2, inner[1]]
    for member in group.members.values():
        assert member.epoch == group.controller.epoch
        assert member.group_secret == scheme.group_secret
