"""``GroupConfig``: everything a secured group's controller is configured with (DESIGN.md §6).

A group names itself and chooses everything else: the key-management scheme, the
source-authentication method and the access policy (plugin names, each with its options),
the rekey policy, the AEAD, and the transport parameters.  Build one in Python or read it from
TOML::

    [group]
    name = "quotes"
    aead = "aes-128-gcm"          # or "chacha20-poly1305", "aes-256-gcm"
    epoch_grace = 2.0             # seconds a receiver still accepts the previous epoch

    [key_management]
    name = "flat"                 # every other key is an option for the scheme
    [source_auth]
    name = "ed25519"
    [access_policy]
    name = "x509"
    ca = "ca.pem"                 # relative paths are relative to this file

    [rekey]
    policy = "batch"              # "immediate" | "batch" | "periodic"
    interval = 1.0                # batch window / period, seconds
    refresh = 3600                # optional: periodic refresh on top of the policy

    [transport]                   # any rmsec.transport.TransportConfig field
    mtu = 1400

    [multicast]                   # for the IP multicast network
    range = "239.0.0.0/8"
    ports = [40000, 49999]

Every mistake is a :class:`~rmsec.errors.ConfigError` that names the file, the table and the
key, and says what would be accepted.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from rmsec.errors import ConfigError
from rmsec.transport.config import TransportConfig

RekeyMode = Literal["immediate", "batch", "periodic"]
REKEY_MODES: tuple[str, ...] = ("immediate", "batch", "periodic")
AEAD_NAMES: tuple[str, ...] = ("aes-128-gcm", "chacha20-poly1305", "aes-256-gcm")
#: Option key the loader adds to access-policy options: the directory relative paths start from.
BASE_DIR_OPTION = "base_dir"


@dataclasses.dataclass(frozen=True, slots=True)
class RekeyPolicy:
    """When membership changes become new epochs.

    ``immediate``: every join or leave is its own epoch at once (strongest secrecy, most
    rekeys).  ``batch``: changes wait at most ``interval`` seconds and go out as one epoch.
    ``periodic``: the group rekeys every ``interval`` seconds, whether or not anyone came or
    went (weak secrecy: a leaver reads until the next period; pay-per-view style).
    ``refresh`` adds a periodic rekey with unchanged membership to any mode.
    """

    mode: RekeyMode = "immediate"
    interval: float = 1.0
    refresh: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in REKEY_MODES:
            raise ConfigError(f"rekey policy {self.mode!r}: choose one of {', '.join(REKEY_MODES)}")
        if not _positive(self.interval):
            raise ConfigError(f"rekey interval must be a positive number of seconds, got {self.interval!r}")
        if self.refresh is not None and not _positive(self.refresh):
            raise ConfigError(f"rekey refresh must be a positive number of seconds, got {self.refresh!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class GroupConfig:
    """One secured group's configuration (**contract**: ``rmsec.open_controller(config)``)."""

    group: str
    key_management: str = "flat"
    key_management_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source_auth: str = "ed25519"
    source_auth_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    access_policy: str = "x509"
    access_policy_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    rekey: RekeyPolicy = dataclasses.field(default_factory=RekeyPolicy)
    aead: str = "aes-128-gcm"
    epoch_grace: float = 2.0
    transport: TransportConfig = dataclasses.field(default_factory=TransportConfig)
    multicast_range: str = "239.0.0.0/8"
    multicast_ports: tuple[int, int] = (40000, 49999)
    #: Seconds between re-checks of every member against the access policy (reload + still_valid).
    policy_recheck: float = 60.0
    #: Members the controller admits at most (bounds its memory).
    max_members: int = 100_000

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not 0 < len(self.group) <= 255:
            raise ConfigError("group name must be 1..255 characters")
        for field in ("key_management", "source_auth", "access_policy"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{field} must be a plugin name (text)")
        if self.aead not in AEAD_NAMES:
            raise ConfigError(f"aead {self.aead!r}: choose one of {', '.join(AEAD_NAMES)}")
        if not isinstance(self.epoch_grace, (int, float)) or not 0 <= self.epoch_grace <= 3600:
            raise ConfigError("epoch_grace must be 0..3600 seconds")
        if not _positive(self.policy_recheck):
            raise ConfigError("policy_recheck must be a positive number of seconds")
        if not isinstance(self.max_members, int) or self.max_members < 1:
            raise ConfigError("max_members must be a positive integer")
        if not isinstance(self.rekey, RekeyPolicy):
            raise ConfigError("rekey must be a RekeyPolicy")
        if not isinstance(self.transport, TransportConfig):
            raise ConfigError("transport must be a TransportConfig")
        ports = self.multicast_ports
        if (
            not isinstance(ports, tuple) or len(ports) != 2
            or not all(isinstance(p, int) for p in ports) or not 1024 <= ports[0] <= ports[1] <= 65535
        ):
            raise ConfigError("multicast ports must be [low, high] within 1024..65535")

    def replace(self, **changes: Any) -> GroupConfig:
        return dataclasses.replace(self, **changes)

    # -- TOML ------------------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | pathlib.Path) -> GroupConfig:
        """Read a TOML file (see the module docstring for the layout)."""
        path = pathlib.Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        return cls.from_toml_text(text, source=str(path), base_dir=path.parent)

    @classmethod
    def from_toml_text(
        cls, text: str, *, source: str = "<config>", base_dir: str | pathlib.Path | None = None
    ) -> GroupConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=source, base_dir=base_dir)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "<config>",
        base_dir: str | pathlib.Path | None = None,
    ) -> GroupConfig:
        """Build from parsed TOML (tables as nested mappings)."""
        known_tables = {"group", "key_management", "source_auth", "access_policy", "rekey",
                        "transport", "multicast"}
        unknown = sorted(set(data) - known_tables)
        if unknown:
            raise ConfigError(f"{source}: unknown table(s) {unknown}; known: {sorted(known_tables)}")
        group = _table(data, "group", source)
        _only(group, {"name", "aead", "epoch_grace", "policy_recheck", "max_members"}, "group", source)
        if "name" not in group:
            raise ConfigError(f"{source}: [group] needs name = \"...\"")
        kwargs: dict[str, Any] = {"group": _typed(group, "name", str, "group", source)}
        if "aead" in group:
            kwargs["aead"] = _typed(group, "aead", str, "group", source)
        for key in ("epoch_grace", "policy_recheck"):
            if key in group:
                kwargs[key] = float(_typed(group, key, (int, float), "group", source))
        if "max_members" in group:
            kwargs["max_members"] = _typed(group, "max_members", int, "group", source)
        for table in ("key_management", "source_auth", "access_policy"):
            if table in data:
                section = dict(_table(data, table, source))
                if "name" not in section:
                    raise ConfigError(f"{source}: [{table}] needs name = \"...\"")
                kwargs[table] = _typed(section, "name", str, table, source)
                section.pop("name")
                if table == "access_policy" and base_dir is not None:
                    section.setdefault(BASE_DIR_OPTION, str(base_dir))
                kwargs[f"{table}_options"] = section
        if "rekey" in data:
            rekey = _table(data, "rekey", source)
            _only(rekey, {"policy", "interval", "refresh"}, "rekey", source)
            policy = rekey.get("policy", "immediate")
            if policy not in REKEY_MODES:
                raise ConfigError(
                    f"{source}: [rekey] policy = {policy!r}: choose one of {', '.join(REKEY_MODES)}"
                )
            interval = rekey.get("interval", 1.0)
            refresh = rekey.get("refresh")
            for key, value in (("interval", interval), ("refresh", refresh)):
                if value is not None and not _positive(value):
                    raise ConfigError(f"{source}: [rekey] {key} must be a positive number of seconds")
            kwargs["rekey"] = RekeyPolicy(policy, float(interval),
                                          None if refresh is None else float(refresh))
        if "transport" in data:
            try:
                kwargs["transport"] = TransportConfig.from_mapping(dict(_table(data, "transport", source)))
            except (ConfigError, TypeError) as exc:
                raise ConfigError(f"{source}: [transport] {exc}") from None
        if "multicast" in data:
            multicast = _table(data, "multicast", source)
            _only(multicast, {"range", "ports"}, "multicast", source)
            if "range" in multicast:
                kwargs["multicast_range"] = _typed(multicast, "range", str, "multicast", source)
            if "ports" in multicast:
                ports = multicast["ports"]
                if not isinstance(ports, list) or len(ports) != 2:
                    raise ConfigError(f"{source}: [multicast] ports must be [low, high]")
                kwargs["multicast_ports"] = (ports[0], ports[1])
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The TOML-shaped mapping :meth:`from_mapping` reads back."""
        out: dict[str, Any] = {
            "group": {"name": self.group, "aead": self.aead, "epoch_grace": self.epoch_grace,
                      "policy_recheck": self.policy_recheck, "max_members": self.max_members},
            "key_management": {"name": self.key_management, **self.key_management_options},
            "source_auth": {"name": self.source_auth, **self.source_auth_options},
            "access_policy": {"name": self.access_policy, **self.access_policy_options},
            "rekey": {"policy": self.rekey.mode, "interval": self.rekey.interval},
            "transport": self.transport.to_mapping(),
            "multicast": {"range": self.multicast_range, "ports": list(self.multicast_ports)},
        }
        if self.rekey.refresh is not None:
            out["rekey"]["refresh"] = self.rekey.refresh
        return out


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _table(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {name} must be a table ([{name}])")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], name: str, source: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{source}: [{name}] unknown key(s) {unknown}; known: {sorted(allowed)}")


def _typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], name: str, source: str) -> Any:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{source}: [{name}] {key} must be {expected}, got {value!r}")
    return value
