"""The plugin manager without a network: start-up checks, the environment variables, entry
points, ``rmsec plugins``, the hook relay's containment and aggregation, and the rule that every
hook is documented in docs/plugins.md with its exact signature."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import pathlib
from typing import Any

import pytest

import rmsec.plugins
from rmsec import hookspecs
from rmsec.errors import ConfigError
from rmsec.hookspecs import hookimpl
from rmsec.plugins import HookRelay, create_plugin_set, using_plugins
from rmsec.registry import AccessPolicyRegistry
from rmsec.security import events as sev
from rmsec.transport import events as tev

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Misspelled:
    @hookimpl
    def rmsec_member_joind(self, group: str, member_id: bytes, epoch: int) -> None: ...


class UnknownArgument:
    @hookimpl
    def rmsec_member_joined(self, group: str, member: bytes) -> None: ...


class ObservationWrapper:
    @hookimpl(wrapper=True)
    def rmsec_rekey_done(self, epoch: int) -> Any:
        return (yield)


class FailingRegistration:
    @hookimpl
    def rmsec_register_access_policies(self, registry: AccessPolicyRegistry) -> None:
        raise RuntimeError("broken at start-up")


class Duplicate:
    """Registers a second ``open`` policy: the name belongs to a built-in."""

    @hookimpl
    def rmsec_register_access_policies(self, registry: AccessPolicyRegistry) -> None:
        registry.add(rmsec.plugins.plugin_set().access_policies.get("open"))


class EntryPointPlugin:
    """What a fake distribution's entry point loads (see ``fake_entry_point``)."""

    __version__ = "9.9"

    @staticmethod
    @hookimpl
    def rmsec_member_left(group: str, member_id: bytes, reason: str) -> None: ...


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rmsec.plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(rmsec.plugins.BLOCK_ENV, raising=False)


@pytest.fixture
def fake_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = importlib.metadata.EntryPoint(
        name="fake", value=f"{__name__}:EntryPointPlugin", group=rmsec.plugins.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(rmsec.plugins, "_entry_points", lambda: [("fake-dist", ep)])


# ----------------------------------------------------------------------------- start-up


def test_a_misspelled_hook_implementation_is_an_error_at_start_up() -> None:
    with pytest.raises(ConfigError, match="rmsec_member_joind"):
        create_plugin_set(extra_plugins=[Misspelled()])
    with pytest.raises(ConfigError, match="does not exist"), using_plugins(Misspelled()):
        pass


def test_an_argument_the_hook_does_not_have_is_an_error_at_start_up() -> None:
    with pytest.raises(ConfigError, match="does not fit rmsec's hooks"):
        create_plugin_set(extra_plugins=[UnknownArgument()])


def test_an_observation_hook_cannot_be_a_wrapper() -> None:
    with pytest.raises(ConfigError, match="rmsec_rekey_done cannot be a wrapper"):
        create_plugin_set(extra_plugins=[ObservationWrapper()])


def test_a_registration_hook_that_raises_names_the_plugin() -> None:
    with pytest.raises(ConfigError, match="failed in rmsec_register_access_policies") as info:
        create_plugin_set(extra_plugins=[FailingRegistration()])
    assert "RMSEC_BLOCK_PLUGINS" in str(info.value)


def test_a_scheme_name_registered_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="access policy 'open' registered twice"):
        create_plugin_set(extra_plugins=[Duplicate()])


def test_using_plugins_swaps_the_process_wide_set_and_restores_it() -> None:
    before = rmsec.plugins.plugin_set()
    plugin = EntryPointPlugin()
    with using_plugins(plugin) as inside:
        assert rmsec.plugins.plugin_set() is inside is not before
        rows = {row["name"]: row for row in rmsec.plugins.list_plugins()}
        (row,) = [r for r in rows.values() if r["origin"] == "registered at run time"]
        assert row["version"] == "9.9" and row["hooks"] == ["rmsec_member_left"]
    assert rmsec.plugins.plugin_set() is before


# ------------------------------------------------------------ entry points and environment


def test_entry_point_plugins_are_loaded_with_their_origin(fake_entry_point: None) -> None:
    rows = {row["name"]: row for row in rmsec.plugins.list_plugins(create_plugin_set())}
    assert rows["fake"]["origin"] == "entry point (fake-dist)"
    assert rows["fake"]["hooks"] == ["rmsec_member_left"]
    assert all(rows[name]["origin"] == "builtin" for name in rmsec.plugins.builtin_plugin_modules())


def test_disable_autoload_keeps_builtins_only(
    fake_entry_point: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rmsec.plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins = create_plugin_set()
    assert not plugins.manager.has_plugin("fake")
    assert "x509" in plugins.access_policies.names()


def test_block_plugins_by_name(fake_entry_point: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rmsec.plugins.BLOCK_ENV, "fake, rmsec_plugins.access_open")
    plugins = create_plugin_set()
    assert not plugins.manager.has_plugin("fake")
    assert "open" not in plugins.access_policies.names()
    assert "allowlist" in plugins.access_policies.names()


def test_an_entry_point_that_fails_to_load_says_how_to_block_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ep = importlib.metadata.EntryPoint(name="gone", value="no_such_module_here", group="rmsec")
    monkeypatch.setattr(rmsec.plugins, "_entry_points", lambda: [("gone-dist", ep)])
    with pytest.raises(ConfigError, match="RMSEC_BLOCK_PLUGINS=gone"):
        create_plugin_set()


def test_rmsec_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert rmsec.plugins.main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["name"] == "rmsec_plugins.auth_ed25519")
    assert row["origin"] == "builtin" and row["registers"]["source_auth"] == ["ed25519"]
    assert row["hooks"] == ["rmsec_register_source_auth"]


# ----------------------------------------------------------------------------- the relay


class Calls:
    def __init__(self) -> None:
        self.auth: list[tuple[str, str, int]] = []
        self.order: list[str] = []

    @hookimpl
    def rmsec_auth_failure(self, what: str, detail: str, count: int) -> None:
        self.auth.append((what, detail, count))

    @hookimpl(trylast=True)
    def rmsec_member_joined(self, member_id: bytes) -> None:
        self.order.append("last")


class First:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    @hookimpl(tryfirst=True)
    def rmsec_member_joined(self, member_id: bytes) -> None:
        self.calls.order.append("first")
        raise ValueError("first one fails")


def test_relay_calls_each_implementation_in_order_and_contains_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = Calls()
    plugins = create_plugin_set(extra_plugins=[calls, First(calls)])
    relay = HookRelay("g", "controller", plugins=plugins)
    caplog.set_level(logging.WARNING, logger="rmsec.plugins")
    for _ in range(4):
        relay.controller_event(sev.MemberJoined(b"m", 1))
    assert calls.order == ["first", "last"] * 4
    assert relay.counters["hook_errors"] == 4
    assert relay.counters["hook_calls"] == 8
    # One traceback, then a line on the 2nd and 4th failure only.
    messages = [r for r in caplog.records if "rmsec_member_joined" in r.getMessage()]
    assert [r.exc_info is not None for r in messages] == [True, False, False]


def test_relay_aggregates_auth_failures_per_kind() -> None:
    calls = Calls()
    relay = HookRelay("g", "receiver r", plugins=create_plugin_set(extra_plugins=[calls]),
                      auth_interval=1.0)
    for i in range(10):
        relay.auth_failure("data", f"bad {i}", now=100.0 + i * 0.01)
    relay.auth_failure("rekey", "bad signature", now=100.2)
    assert calls.auth == [("data", "bad 0", 1), ("rekey", "bad signature", 1)]
    assert relay.pending_auth == 9
    relay.tick(100.5)  # not yet due
    assert len(calls.auth) == 2
    relay.tick(101.0)
    assert calls.auth[2] == ("data", "bad 9", 9) and relay.pending_auth == 0
    relay.auth_failure("data", "again", now=101.5)  # within the interval of that report
    relay.flush(101.6)
    assert calls.auth[3] == ("data", "again", 1)
    relay.auth_failure("data", "later", now=200.0)  # long after: reported at once
    assert calls.auth[4] == ("data", "later", 1)
    assert relay.counters["auth_failures_seen"] == 13
    assert sum(c for _, _, c in calls.auth) == 13


def test_relay_bounds_the_kinds_it_tracks() -> None:
    calls = Calls()
    relay = HookRelay("g", "receiver r", plugins=create_plugin_set(extra_plugins=[calls]))
    for i in range(HookRelay.MAX_KINDS + 5):
        relay.auth_failure(f"kind{i}", "x", now=0.0)
    assert len(relay._auth) <= HookRelay.MAX_KINDS + 1
    assert calls.auth[-1][0] == "other"


def test_relay_reports_the_lost_head_on_rebind() -> None:
    seen: list[tuple[bytes | None, bytes]] = []

    class Heads:
        @hookimpl
        def rmsec_head_changed(self, old_head: bytes | None, new_head: bytes) -> None:
            seen.append((old_head, new_head))

    relay = HookRelay("g", "receiver r", plugins=create_plugin_set(extra_plugins=[Heads()]))
    relay.transport_event(tev.Bound(b"head-one", ("mem", 1), 1, None), b"me")
    relay.transport_event(tev.HeadLost(b"head-one"), b"me")
    relay.transport_event(tev.Bound(b"root", ("mem", 0), 1, None), b"me")
    relay.transport_event(tev.MessageReceived(1, 0, b"x"), b"me")  # not a hook
    assert seen == [(None, b"head-one"), (b"head-one", b"root")]


# ------------------------------------------------------------------------------ the docs


def _signature(name: str) -> str:
    fn = getattr(hookspecs, name)
    params = ", ".join(
        f"{p.name}: {p.annotation}" for p in inspect.signature(fn).parameters.values()
    )
    return f"def {name}({params}) -> None"


@pytest.mark.parametrize("hook", hookspecs.REGISTRATION_HOOKS + hookspecs.OBSERVATION_HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert _signature(hook) in docs, f"docs/plugins.md lacks `{_signature(hook)}`"


def test_the_hook_lists_are_complete() -> None:
    specs = {name for name in dir(hookspecs) if name.startswith("rmsec_")}
    assert specs == set(hookspecs.REGISTRATION_HOOKS) | set(hookspecs.OBSERVATION_HOOKS)
