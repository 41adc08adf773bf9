"""Plugin manager: built-ins, third-party entry points, look-ups, and ``rmsec plugins``.

Built-ins are the subpackages of ``rmsec_plugins`` and are registered the same way a third
party's plugin is.  Third parties publish a distribution with an entry point in group
``rmsec``.  Environment:

``RMSEC_DISABLE_PLUGIN_AUTOLOAD=1``
    do not load entry-point plugins (built-ins still load);
``RMSEC_BLOCK_PLUGINS=name,name``
    never register these plugins (built-in module names such as ``rmsec_plugins.auth_tesla``
    or entry-point names).

A hook implementation whose name is not a known hook (a misspelling) is an error at start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.metadata
import json
import os
import pkgutil
from collections.abc import Sequence
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

ENTRY_POINT_GROUP = "rmsec"
BUILTIN_PACKAGE = "rmsec_plugins"
DISABLE_AUTOLOAD_ENV = "RMSEC_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "RMSEC_BLOCK_PLUGINS"


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
        pm.register(importlib.import_module(module_name), name=module_name)
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
            pm.register(plugin, name=ep.name)
            origins[ep.name] = f"entry point ({dist})"
            versions[ep.name] = _distribution_version(dist)
    for plugin in extra_plugins:
        registered = pm.register(plugin)
        if registered is not None:
            origins[registered] = "registered at run time"
            versions[registered] = getattr(plugin, "__version__", "unknown")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"a plugin implements a hook that does not exist: {exc}") from exc
    plugin_set = PluginSet(
        pm, KeyManagementRegistry(), SourceAuthRegistry(), AccessPolicyRegistry(), origins, versions
    )
    _fill(pm.hook.rmsec_register_key_management, plugin_set.key_management)
    _fill(pm.hook.rmsec_register_source_auth, plugin_set.source_auth)
    _fill(pm.hook.rmsec_register_access_policies, plugin_set.access_policies)
    return plugin_set


def _fill(hook: pluggy.HookCaller, registry: Registry[Any]) -> None:
    """Call each implementation on its own so the registry knows which plugin added what."""
    for impl in hook.get_hookimpls():
        registry.current_plugin = impl.plugin_name
        impl.function(registry=registry)
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


@functools.cache
def plugin_set() -> PluginSet:
    """The process-wide plugin set, started on first use."""
    return create_plugin_set()


def reset_plugins() -> None:
    """Forget the process-wide plugin set (tests; after installing a plugin)."""
    plugin_set.cache_clear()


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
