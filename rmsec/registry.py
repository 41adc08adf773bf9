"""Typed registries handed to plugins' registration hooks (as in llm and tox 4).

A plugin says what it adds by calling ``registry.add(SchemeClass)``; the registry refuses a
second scheme under a name already taken, naming both plugins, so a clash is found at start-up
and not as a silent override.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from rmsec.errors import ConfigError
from rmsec.interfaces import AccessPolicy, KeyManagement, SourceAuth

T = TypeVar("T")


class Registry(Generic[T]):
    kind: str = "scheme"

    def __init__(self) -> None:
        self._items: dict[str, type[T]] = {}
        self._origins: dict[str, str] = {}
        #: set by the plugin manager while one plugin's hook runs
        self.current_plugin = "?"

    def add(self, cls: type[T]) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{cls!r} has no 'name' class attribute; every {self.kind} needs one")
        if name in self._items:
            raise ConfigError(
                f"{self.kind} {name!r} registered twice: by {self._origins[name]} and by "
                f"{self.current_plugin}; block one with RMSEC_BLOCK_PLUGINS"
            )
        self._items[name] = cls
        self._origins[name] = self.current_plugin

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"no {self.kind} named {name!r}; installed: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def origin(self, name: str) -> str:
        return self._origins[name]


class KeyManagementRegistry(Registry[KeyManagement]):
    kind = "key-management scheme"


class SourceAuthRegistry(Registry[SourceAuth]):
    kind = "source-authentication method"


class AccessPolicyRegistry(Registry[AccessPolicy]):
    kind = "access policy"
