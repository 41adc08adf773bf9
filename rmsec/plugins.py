"""Plugin manager: built-ins, third-party entry points, look-ups, and ``rmsec plugins``.

Built-ins are the subpackages of ``rmsec_plugins`` and are registered the same way a third
party's plugin is.  Third parties publish a distribution with an entry point in group
``rmsec``.  Environment:

``RMSEC_DISABLE_PLUGIN_AUTOLOAD=1``
    do not load entry-point plugins (built-ins still load);
``RMSEC_BLOCK_PLUGINS=name,name``
    never register these plugins (built-in module names such as ``rmsec_plugins.auth_tesla``
    or entry-point names).

A hook implementation whose name is not a known hook (a misspelling) is an error at start-up,
and so is a wrapper on an observation hook.

Observation hooks are called through :class:`HookRelay`, one per node: each implementation on
its own, so a plugin that raises is logged and counted (``hook_errors``) and the others still
see the event; the node never does.  docs/plugins.md is the guide.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib
import importlib.metadata
import json
import logging
import os
import pkgutil
from collections.abc import Iterator, Sequence
from typing import Any

import pluggy

from rmsec import hookspecs
from rmsec.errors import ConfigError
from rmsec.interfaces import AccessPolicy, KeyManagement, SourceAuth
from rmsec.registry import (
    AccessPolicyRegistry,
    KeyManagementRegistry,
    Registry,
    SourceAuthRegistry,
)
from rmsec.security import events as sev
from rmsec.transport import events as tev

ENTRY_POINT_GROUP = "rmsec"
BUILTIN_PACKAGE = "rmsec_plugins"
DISABLE_AUTOLOAD_ENV = "RMSEC_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "RMSEC_BLOCK_PLUGINS"
#: Seconds between two ``rmsec_auth_failure`` calls of one node for one kind of failure.
AUTH_FAILURE_INTERVAL = 1.0

log = logging.getLogger("rmsec.plugins")


def builtin_plugin_modules() -> list[str]:
    """Module names of the built-in plugins (every subpackage of ``rmsec_plugins``)."""
    package = importlib.import_module(BUILTIN_PACKAGE)  # installed from plugins/
    return sorted(
        f"{BUILTIN_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__) if info.ispkg
    )


@dataclasses.dataclass
class PluginSet:
    """A started plugin manager and the registries its plugins filled."""

    manager: pluggy.PluginManager
    key_management: KeyManagementRegistry
    source_auth: SourceAuthRegistry
    access_policies: AccessPolicyRegistry
    origins: dict[str, str]
    versions: dict[str, str]


def _blocked() -> set[str]:
    return {name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip()}


def create_plugin_set(extra_plugins: Sequence[Any] = ()) -> PluginSet:
    """Start a plugin manager: built-ins, entry points, then ``extra_plugins`` (for tests)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = _blocked()
    for name in blocked:
        pm.set_blocked(name)
    origins: dict[str, str] = {}
    versions: dict[str, str] = {}
    rmsec_version = _distribution_version("rmsec")
    for module_name in builtin_plugin_modules():
        if module_name in blocked:
            continue
        _register(pm, importlib.import_module(module_name), module_name)
        origins[module_name] = "builtin"
        versions[module_name] = rmsec_version
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes"):
        for dist, ep in _entry_points():
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"plugin {ep.name!r} from {dist} failed to load ({exc!r}); uninstall it or "
                    f"block it with {BLOCK_ENV}={ep.name}"
                ) from exc
            _register(pm, plugin, ep.name)
            origins[ep.name] = f"entry point ({dist})"
            versions[ep.name] = _distribution_version(dist)
    for plugin in extra_plugins:
        registered = _register(pm, plugin, None)
        if registered is not None:
            origins[registered] = "registered at run time"
            versions[registered] = getattr(plugin, "__version__", "unknown")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"a plugin implements a hook that does not exist: {exc}") from exc
    for hook_name in hookspecs.OBSERVATION_HOOKS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                raise ConfigError(
                    f"plugin {impl.plugin_name!r}: {hook_name} cannot be a wrapper (observation "
                    "hooks are called one implementation at a time)"
                )
    plugin_set = PluginSet(
        pm, KeyManagementRegistry(), SourceAuthRegistry(), AccessPolicyRegistry(), origins, versions
    )
    _fill(pm.hook.rmsec_register_key_management, plugin_set.key_management)
    _fill(pm.hook.rmsec_register_source_auth, plugin_set.source_auth)
    _fill(pm.hook.rmsec_register_access_policies, plugin_set.access_policies)
    return plugin_set


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> str | None:
    """``pm.register``, with pluggy's complaint (an argument the hook does not have, a
    wrapper that is not a generator) turned into a ConfigError naming the plugin."""
    try:
        return pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        label = name or repr(plugin)
        raise ConfigError(
            f"plugin {label!r} does not fit rmsec's hooks: {exc}; fix it or block it with "
            f"{BLOCK_ENV}={label}"
        ) from exc


def _fill(hook: pluggy.HookCaller, registry: Registry[Any]) -> None:
    """Call each implementation on its own so the registry knows which plugin added what."""
    for impl in hook.get_hookimpls():
        registry.current_plugin = impl.plugin_name
        try:
            impl.function(registry=registry)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"plugin {impl.plugin_name!r} failed in {hook.name} ({exc!r}); fix it or block "
                f"it with {BLOCK_ENV}={impl.plugin_name}"
            ) from exc
    registry.current_plugin = "?"


def _entry_points() -> list[tuple[str, importlib.metadata.EntryPoint]]:
    found = []
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.append((dist.metadata["Name"], ep))
    return found


def _distribution_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_current: PluginSet | None = None


def plugin_set() -> PluginSet:
    """The process-wide plugin set, started on first use."""
    global _current
    if _current is None:
        _current = create_plugin_set()
    return _current


def reset_plugins() -> None:
    """Forget the process-wide plugin set (tests; after installing a plugin)."""
    global _current
    _current = None


@contextlib.contextmanager
def using_plugins(*plugins: object) -> Iterator[PluginSet]:
    """Run the block with a fresh process-wide plugin set that also holds ``plugins`` (objects
    or modules with ``@hookimpl`` functions), checked exactly as at start-up; the previous set
    comes back afterwards.  Nodes opened inside keep calling the plugins for their lifetime.

    This is how a test or an application embedding rmsec adds a plugin without publishing a
    distribution::

        with rmsec.plugins.using_plugins(MyObserver()):
            async with rmsec.open_controller(config, tls=creds) as ctl: ...
    """
    global _current
    previous = _current
    fresh = create_plugin_set(extra_plugins=plugins)
    _current = fresh
    try:
        yield fresh
    finally:
        _current = previous


def get_key_management(name: str) -> type[KeyManagement]:
    return plugin_set().key_management.get(name)


def get_source_auth(name: str) -> type[SourceAuth]:
    return plugin_set().source_auth.get(name)


def get_access_policy(name: str) -> type[AccessPolicy]:
    return plugin_set().access_policies.get(name)


def list_plugins(plugins: PluginSet | None = None) -> list[dict[str, Any]]:
    """Every registered plugin: name, version, origin, hooks and the schemes it registers."""
    ps = plugins or plugin_set()
    rows = []
    for name, plugin in ps.manager.list_name_plugin():
        if name is None or plugin is None:
            continue
        registers = {
            kind: [n for n in registry.names() if registry.origin(n) == name]
            for kind, registry in (
                ("key_management", ps.key_management),
                ("source_auth", ps.source_auth),
                ("access_policies", ps.access_policies),
            )
        }
        hooks = sorted(h.name for h in ps.manager.get_hookcallers(plugin) or ())
        rows.append({
            "name": name,
            "version": ps.versions.get(name, "unknown"),
            "origin": ps.origins.get(name, "unknown"),
            "hooks": hooks,
            "registers": registers,
        })
    return sorted(rows, key=lambda r: (r["origin"] != "builtin", r["name"]))


# ------------------------------------------------------------------------ observation hooks

#: (plugin, hook) -> failures so far, process-wide: the first is logged with its traceback,
#: later ones on powers of two only, so a plugin failing on every event cannot flood the log.
_hook_failures: collections.Counter[tuple[str, str]] = collections.Counter()


def _log_hook_failure(plugin: str, hook: str) -> None:
    key = (plugin, hook)
    _hook_failures[key] += 1
    n = _hook_failures[key]
    if n == 1:
        log.exception("plugin %r raised in %s; the node goes on (later failures are logged "
                      "without traceback)", plugin, hook)
    elif n & (n - 1) == 0:
        log.warning("plugin %r has raised in %s %d times", plugin, hook, n)


@dataclasses.dataclass(slots=True)
class _AuthFailures:
    """One kind of authentication failure at one node: when it was last reported and how many
    happened since."""

    reported: float
    pending: int = 0
    detail: str = ""


class HookRelay:
    """The observation hooks of one node (the controller, or one member's channel).

    The trio layer hands it what the machines report (:meth:`controller_event`,
    :meth:`transport_event`, :meth:`auth_failure`) and it calls the hooks: each
    implementation on its own, so one that raises is logged and counted in
    ``counters["hook_errors"]`` and neither the node nor the other plugins notice.

    Nothing here runs per packet: the channels call :meth:`transport_event` for ``Bound`` and
    ``HeadLost`` only, and authentication failures are aggregated per kind (see
    :func:`rmsec.hookspecs.rmsec_auth_failure`): the first is reported at once, later ones at
    most every ``auth_interval`` seconds as one call with their ``count``; :meth:`tick` sends a
    report that is due and :meth:`flush` (when the node closes) whatever is left.
    """

    #: Kinds of authentication failure tracked separately (more are lumped as ``other``).
    MAX_KINDS = 16

    def __init__(
        self, group: str, where: str, *, plugins: PluginSet | None = None,
        auth_interval: float = AUTH_FAILURE_INTERVAL,
    ) -> None:
        self.group = group
        self.where = where
        self.auth_interval = auth_interval
        self._hook = (plugins if plugins is not None else plugin_set()).manager.hook
        self._auth: dict[str, _AuthFailures] = {}
        self._lost_head: bytes | None = None
        #: Failures counted but not yet reported (``tick`` has work while this is non-zero).
        self.pending_auth = 0
        self.counters: dict[str, int] = {
            "hook_calls": 0, "hook_errors": 0, "auth_failures_seen": 0, "auth_failure_reports": 0,
        }

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name`` (pluggy's order), containing failures."""
        caller: pluggy.HookCaller = getattr(self._hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            self.counters["hook_calls"] += 1
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception:
                self.counters["hook_errors"] += 1
                _log_hook_failure(impl.plugin_name, hook_name)

    # -- what the machines report ---------------------------------------------------------------

    def controller_event(self, event: sev.SecurityEvent) -> None:
        """A controller event: membership and rekey hooks (other events are not hooked)."""
        group = self.group
        if isinstance(event, sev.MemberJoined):
            self.call("rmsec_member_joined", group=group, member_id=event.member_id,
                      epoch=event.epoch)
        elif isinstance(event, sev.MemberLeft):
            self.call("rmsec_member_left", group=group, member_id=event.member_id,
                      reason=event.reason)
        elif isinstance(event, sev.MemberExpelled):
            self.call("rmsec_member_expelled", group=group, member_id=event.member_id,
                      reason=event.reason)
        elif isinstance(event, sev.RekeyDone):
            self.call("rmsec_rekey_done", group=group, epoch=event.epoch,
                      rekey_bytes=event.rekey_bytes, members=event.members)

    def transport_event(self, event: tev.Event, node_id: bytes) -> None:
        """A transport event of the member ``node_id``: ``Bound`` becomes ``head_changed``."""
        if isinstance(event, tev.Bound):
            old = event.previous_id if event.previous_id is not None else self._lost_head
            self._lost_head = None
            self.call("rmsec_head_changed", group=self.group, node_id=node_id, old_head=old,
                      new_head=event.parent_id)
        elif isinstance(event, tev.HeadLost):
            self._lost_head = event.parent_id

    def auth_failure(self, what: str, detail: str, now: float) -> None:
        """One authentication failure of kind ``what`` (aggregated, see the class docstring)."""
        self.counters["auth_failures_seen"] += 1
        state = self._auth.get(what)
        if state is None:
            if len(self._auth) >= self.MAX_KINDS:
                what = "other"
                state = self._auth.get(what)
            if state is None:
                self._auth[what] = _AuthFailures(now)
                self._report(what, detail, 1)
                return
        if now >= state.reported + self.auth_interval:
            count = state.pending + 1
            self.pending_auth -= state.pending
            state.reported, state.pending, state.detail = now, 0, ""
            self._report(what, detail, count)
        else:
            state.pending += 1
            state.detail = detail
            self.pending_auth += 1

    def tick(self, now: float) -> None:
        """Report aggregated failures whose interval is over (cheap when none are pending)."""
        if not self.pending_auth:
            return
        for what, state in self._auth.items():
            if state.pending and now >= state.reported + self.auth_interval:
                self._send_pending(what, state, now)

    def flush(self, now: float) -> None:
        """Report every aggregated failure now (the node is closing)."""
        if not self.pending_auth:
            return
        for what, state in self._auth.items():
            if state.pending:
                self._send_pending(what, state, now)

    def _send_pending(self, what: str, state: _AuthFailures, now: float) -> None:
        count = state.pending
        self.pending_auth -= count
        state.reported, state.pending = now, 0
        self._report(what, state.detail, count)

    def _report(self, what: str, detail: str, count: int) -> None:
        self.counters["auth_failure_reports"] += 1
        self.call("rmsec_auth_failure", group=self.group, where=self.where, detail=detail,
                  what=what, count=count)


def main(argv: list[str]) -> int:
    """``rmsec plugins [--json]``."""
    parser = argparse.ArgumentParser(prog="rmsec plugins", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    rows = list_plugins()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        schemes = "; ".join(
            f"{kind}: {', '.join(names)}" for kind, names in row["registers"].items() if names
        )
        print(f"{row['name']} {row['version']} [{row['origin']}] {schemes or '(observes only)'}")
    return 0
