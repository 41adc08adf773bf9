"""``regions`` in a real group: regional key managers on repair heads, over the transport.

A controller, two repair heads that each host a region's manager (``east``, ``west``), a
sender, and members under each head that join and leave while data flows.  Per epoch the
controller multicasts one signed rekey (the trunk wrap, the changed region's inner rekey);
each manager head re-encrypts the new group key under its region's key and sends it on its own
stream; members take their region's translation.  Checked:

- every member reads exactly what was sent while it was a member, and its epochs moved
  through translations, never through key recovery;
- a member that left keeps its whole security state and is fed every later rekey,
  translation and data frame (a wiretap on the tree records them): it reads nothing later;
- a change rekeys only its own region (the other region's inner epoch stands still; the
  rekey carries one region's inner rekey), and the rekey bytes per change are recorded.

The data plane is the memory network under a MockClock; registration is real TLS on
127.0.0.1 (as in test_secure_group.py), so the MockClock jumps only after 10 ms of real idle
time (``autojump_threshold``), which leaves TCP the time it needs.

``python tests/trio/test_regions_group.py`` prints the per-change rekey bytes of the same
scenario with regions on heads and with plain ``lkh`` as JSON (docs/bench-keymgmt.md).
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import rmsec.api as api
import rmsec.io
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials
from rmsec.io.base import Network
from rmsec.regional_api import ManagerHeadChannel, open_manager_head
from rmsec.secure_api import open_controller, open_secure_receiver
from rmsec.security import events as sev
from rmsec.security import regional
from rmsec.security.member import Member, State
from rmsec.testing.group import background

pytestmark = pytest.mark.udp  # TLS registration over TCP on 127.0.0.1

REGIONS = [
    {"name": "east", "manager": "head-east"},
    {"name": "west", "manager": "head-west"},
    {"name": "core"},  # no manager head: the controller translates (the sender is here)
]
#: (leaves, joins) per round after the first; members are "<region>-<n>".
PLAN: list[tuple[list[str], list[str]]] = [
    ([], []),
    (["east-0"], []),
    ([], ["west-3"]),
    (["west-1"], ["east-3"]),
    (["east-2"], []),
]
INITIAL = ["east-0", "east-1", "east-2", "west-0", "west-1", "west-2"]


def member_creds(creds: ControllerCredentials, name: str) -> MemberCredentials:
    return MemberCredentials(name.encode(), creds.ca.certificate, creds.ca.issue(name))


def group_config(ca_file: pathlib.Path, key_management: str, *, heads: bool = True) -> GroupConfig:
    """``regions`` with managers on heads (or, ``heads=False``, all in the controller), or
    another scheme over the whole group."""
    regions = REGIONS if heads else [{"name": r["name"]} for r in REGIONS]
    options: dict[str, Any] = {"regions": regions, "inner": "lkh"} if key_management == "regions" else {}
    return GroupConfig(
        group="regions-test", access_policy="x509", access_policy_options={"ca": str(ca_file)},
        key_management=key_management, key_management_options=options,
    )


class Wiretap:
    """Everything that crosses the tree, as an outsider on it sees it (raw transport)."""

    def __init__(self, rekey_stream: int) -> None:
        self.rekey_stream = rekey_stream
        self.rekeys: list[bytes] = []
        self.translations: list[bytes] = []
        self.data: list[bytes] = []

    def add(self, message: api.Message) -> None:
        if message.sender == self.rekey_stream:
            self.rekeys.append(message.data)
        elif regional.is_translation_frame(message.data):
            self.translations.append(message.data)
        else:
            self.data.append(message.data)

    def mark(self) -> tuple[int, int, int]:
        return len(self.rekeys), len(self.translations), len(self.data)


async def run_group(
    network: Network, creds: ControllerCredentials, config: GroupConfig, *, heads: bool,
) -> dict[str, Any]:
    """The scenario; returns what each member read and should have read, per-change costs,
    and what every departed member could open afterwards."""
    read: dict[str, list[int]] = {}
    expected: dict[str, set[int]] = {}
    member_stats: dict[str, dict[str, int]] = {}
    departed: dict[str, tuple[Member, tuple[int, int, int], int]] = {}
    changes: list[dict[str, Any]] = []
    async with open_controller(config, tls=creds, network=network) as ctl:
        ann = ctl.announcement
        tap = Wiretap(ctl.controller.rekey_stream)
        async with trio.open_nursery() as nursery, background(nursery) as enter:

            async def wiretap(*, task_status: Any) -> None:
                async with api.open_receiver(ctl.transport_announcement, network=network) as rx:
                    task_status.started()
                    async for message in rx:
                        tap.add(message)

            await nursery.start(wiretap)
            regions = config.key_management == "regions"
            managers: dict[str, ManagerHeadChannel] = {}
            if heads:
                for name in ("east", "west"):
                    managers[name] = await enter(open_manager_head, ann, network=network,
                                              credentials=member_creds(creds, f"head-{name}"))
            tx: Any = await enter(api.open_sender, ann, network=network,
                                  credentials=member_creds(creds, "sender"))
            live: dict[str, tuple[Any, trio.CancelScope]] = {}
            counter = 0
            changed = [trio.Event()]

            async def member(name: str, *, task_status: Any) -> None:
                region = name.split("-")[0]
                head = managers.get(region)
                with trio.CancelScope() as scope:
                    async with open_secure_receiver(
                        ann, network=network, credentials=member_creds(creds, name),
                        region=region if regions else None,
                        bootstrap=None if head is None else (head.address,),
                    ) as rx:
                        task_status.started((rx, scope))
                        async for message in rx:
                            read[name].append(int.from_bytes(message.data[:8], "big"))
                            changed[0].set()
                            changed[0] = trio.Event()

            async def join(name: str) -> None:
                read[name], expected[name] = [], set()
                live[name] = await nursery.start(member, name)

            def cost() -> dict[str, int]:
                stats = ctl.stats()
                return {
                    "rekey_bytes": stats.get("rekey_bytes", 0),
                    "translation_bytes": sum(h.counters["translation_bytes"] for h in managers.values()),
                    "epoch": ctl.epoch,
                }

            def inner_epochs() -> dict[str, int]:
                """Each region's inner epoch at the controller (moves only when rekeyed)."""
                in_scheme = getattr(ctl.controller.scheme, "managers", [])
                return {m.spec.name: int(m.inner.epoch) for m in in_scheme}

            async def settle() -> None:
                await ctl.wait_until(
                    lambda: ctl.stats()["members"] == len(live) + 1 + len(managers)
                )
                await tx.wait_epoch(ctl.epoch)
                with trio.fail_after(10):  # every manager head is at the epoch (and translated it)
                    for head in managers.values():
                        while head.security.member.epoch != ctl.epoch:
                            await head.security.changed.wait()

            async def measured(kind: str, name: str, change: Callable[[], Awaitable[None]]) -> None:
                """One membership change, and what it cost once every head has translated."""
                before, inner_before = cost(), inner_epochs()
                sent = {region: h.counters["translations_sent"] for region, h in managers.items()}
                await change()
                await ctl.wait_until(lambda: ctl.epoch > before["epoch"])
                await settle()
                with trio.fail_after(10):
                    for region, head in managers.items():
                        await head.wait_sent(sent[region] + 1)
                changes.append(_change(kind, name, before, cost(), inner_before, inner_epochs()))

            async def leave(name: str) -> None:
                rx, scope = live.pop(name)
                member_stats[name] = rx.stats()
                departed[name] = (rx.member, tap.mark(), counter)  # not driven after this
                scope.cancel()

            for name in INITIAL:
                await join(name)
            for leaves, joins in PLAN:
                for name in leaves:
                    await measured("leave", name, functools.partial(leave, name))
                for name in joins:
                    await measured("join", name, functools.partial(join, name))
                await settle()
                for _ in range(4):
                    await tx.send(counter.to_bytes(8, "big") + b"x" * 100, encrypt=True)
                    for name in live:
                        expected[name].add(counter)
                    counter += 1
                with trio.fail_after(30):
                    for name in live:
                        while len(read[name]) < len(expected[name]):
                            await changed[0].wait()
            await trio.sleep(1.0)  # the wiretap has everything too
            for name, (rx, _) in live.items():
                member_stats[name] = rx.stats()
            head_stats = {name: h.stats() for name, h in managers.items()}
            for _, scope in live.values():
                scope.cancel()
            nursery.cancel_scope.cancel()
    after_leave = {
        name: _replay_as_attacker(state, tap, mark, first) for name, (state, mark, first) in departed.items()
    }
    return {
        "read": read, "expected": expected, "members": member_stats, "heads": head_stats,
        "changes": changes, "after_leave": after_leave, "controller": ctl.stats(),
    }


def _change(
    kind: str, name: str, before: dict[str, int], after: dict[str, int],
    inner_before: dict[str, int], inner_after: dict[str, int],
) -> dict[str, Any]:
    return {
        "change": f"{kind} {name}",
        "epochs": after["epoch"] - before["epoch"],
        "rekey_bytes": after["rekey_bytes"] - before["rekey_bytes"],
        "translation_bytes": after["translation_bytes"] - before["translation_bytes"],
        "regions_rekeyed": sorted(r for r in inner_after if inner_after[r] != inner_before.get(r)),
    }


def _replay_as_attacker(member: Member, tap: Wiretap, mark: tuple[int, int, int], first: int) -> dict[str, int]:
    """A departed member that ignores its eviction: its whole state, every later rekey,
    translation and data frame.  Returns the epoch it reaches and the later messages it opens."""
    member.state = State.MEMBER
    start_epoch = member.epoch or 0
    rekeys, translations, data = mark
    for frame in tap.translations[translations:]:
        member.receive_frame(frame, 0.0)
    for envelope in tap.rekeys[rekeys:]:
        member.receive_rekey(envelope, 0.0)
    for frame in tap.data[data:]:
        member.receive_frame(frame, 0.0)
    later = 0
    while (event := member.next_event()) is not None:
        if isinstance(event, sev.Delivered) and int.from_bytes(event.data[:8], "big") >= first:
            later += 1
    return {"epoch_gain": (member.epoch or 0) - start_epoch, "later_read": later,
            "data_frames_offered": len(tap.data) - data}


@pytest.fixture(scope="module")
def creds() -> ControllerCredentials:
    return ControllerCredentials.create("regions-test")


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time for the memory network, jumping only after 10 ms of real idleness (TLS
    over TCP needs real time to move its bytes)."""
    return trio.testing.MockClock(autojump_threshold=0.01)


async def test_regional_managers_on_heads_over_the_transport(
    creds: ControllerCredentials, tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(creds.ca.certificate)
    with trio.fail_after(120):
        report = await run_group(
            rmsec.io.memory(seed=11), creds, group_config(ca_file, "regions"), heads=True
        )
    read, expected = report["read"], report["expected"]
    assert len(read) == len(INITIAL) + 2
    for name in read:
        assert sorted(read[name]) == sorted(expected[name]), name
        assert read[name] == sorted(read[name]), name
    for name, stats in report["members"].items():
        assert stats["auth_failures"] == 0, name
        assert stats.get("sec_translations_accepted", 0) >= 1, name  # keys came from its head
        assert stats.get("sec_recoveries_requested", 0) == 0, name  # never fell back
    for name, stats in report["heads"].items():
        assert stats["translations_sent"] >= 3, name
        assert stats["translations_dropped"] == 0, name
    # A change rekeys only its own region; the other manager head only re-wrapped.
    for change in report["changes"]:
        assert change["epochs"] == 1, change
        region = change["change"].split()[1].split("-")[0]
        assert change["regions_rekeyed"] == [region], change
        assert change["translation_bytes"] > 0, change
    # Departed members, with their whole state and everything sent later, read nothing.
    assert report["after_leave"], "nobody left"
    for name, outcome in report["after_leave"].items():
        assert outcome["data_frames_offered"] > 0, name
        assert outcome["later_read"] == 0, (name, outcome)
        assert outcome["epoch_gain"] == 0, (name, outcome)


async def test_iteration_ends_with_the_sender_while_a_manager_head_stays(
    creds: ControllerCredentials, tmp_path: pathlib.Path, clock: trio.testing.MockClock
) -> None:
    """A manager head's translation stream stays open as long as the head: a member's
    ``async for`` must end when the data ends, not wait for the key stream too."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(creds.ca.certificate)
    network = rmsec.io.memory(seed=5)
    read: list[bytes] = []
    with trio.fail_after(60):
        async with open_controller(group_config(ca_file, "regions"), tls=creds, network=network) as ctl:
            ann = ctl.announcement
            async with open_manager_head(ann, network=network,
                                         credentials=member_creds(creds, "head-east")) as head, \
                    trio.open_nursery() as nursery:
                ended = trio.Event()
                joined = trio.Event()

                async def member() -> None:
                    async with open_secure_receiver(
                        ann, network=network, credentials=member_creds(creds, "east-0"),
                        region="east", bootstrap=(head.address,),
                    ) as rx:
                        joined.set()
                        async for message in rx:
                            read.append(message.data)
                    ended.set()

                nursery.start_soon(member)
                await joined.wait()
                async with api.open_sender(ann, network=network,
                                           credentials=member_creds(creds, "sender")) as tx:
                    await ctl.wait_until(lambda: ctl.stats()["members"] == 3)
                    await tx.wait_epoch(ctl.epoch)
                    for i in range(3):
                        await tx.send(b"m%d" % i)
                await ended.wait()
                assert head.counters["translations_sent"] >= 1  # the key stream was heard
    assert read == [b"m0", b"m1", b"m2"]


def figure(seed: int = 11) -> dict[str, Any]:
    """The same scenario with regions on heads and with plain ``lkh``: bytes per change."""
    import tempfile

    creds = ControllerCredentials.create("regions-figure")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        ca_file = pathlib.Path(directory, "ca.pem")
        ca_file.write_bytes(creds.ca.certificate)
        for label, scheme, heads in (
            ("regions, managers on heads", "regions", True),
            ("regions, managers in the controller", "regions", False),
            ("lkh over the whole group", "lkh", False),
        ):
            out[label] = [
                {k: c[k] for k in ("change", "rekey_bytes", "translation_bytes", "regions_rekeyed")}
                for c in _run(creds, ca_file, scheme, heads, seed)["changes"]
            ]
    return out


def _run(creds: ControllerCredentials, ca_file: pathlib.Path, scheme: str, heads: bool, seed: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        return await run_group(
            rmsec.io.memory(seed=seed), creds, group_config(ca_file, scheme, heads=heads), heads=heads
        )

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.01))


if __name__ == "__main__":
    print(json.dumps(figure(), indent=1))
