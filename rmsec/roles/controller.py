"""``rmsec controller CONFIG.toml``: run a secured group's controller (DESIGN.md §7).

Reads the group's TOML configuration (the tables of :mod:`rmsec.config`, plus ``[controller]``
and ``[network]``, see docs/cli.md), starts :func:`rmsec.open_controller`, writes the signed
announcement to a file (atomically: another process may be polling for it) and serves until
interrupted (SIGINT / SIGTERM) or ``--duration`` seconds passed.  ``--json`` prints the
controller's counters at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import trio

import rmsec.io
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials
from rmsec.errors import ConfigError
from rmsec.io.base import Network
from rmsec.roles import (
    NETWORK_KINDS,
    OK,
    parse_duration,
    progress,
    read_toml,
    resolve,
    run,
    table,
    wait_stop,
    write_atomically,
)

CONTROLLER_KEYS: dict[str, type | tuple[type, ...]] = {
    "credentials": str, "host": str, "port": int, "announcement": str,
}
NETWORK_KEYS: dict[str, type | tuple[type, ...]] = {
    "kind": str, "host": str, "loss": (int, float), "seed": int,
}
CONTROLLER_FILES = ("ca.pem", "ca.key", "controller.pem", "controller.key", "controller-signing.key")


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerSetup:
    """Everything the controller process starts from, checked."""

    group: GroupConfig
    credentials: pathlib.Path
    host: str
    port: int
    announcement: pathlib.Path
    network_kind: str
    data_host: str | None
    loss: float
    seed: int | None

    def network(self) -> Network:
        host = self.data_host or self.host
        if self.network_kind == "ip_multicast":
            # The group address itself is allocated from [multicast] range / ports.
            return rmsec.io.ip_multicast(interface=host, loss=self.loss, seed=self.seed)
        return rmsec.io.udp(host=host, loss=self.loss, seed=self.seed)


def load(path: pathlib.Path, *, announce: str | None = None) -> ControllerSetup:
    """Read and check a controller configuration (every error says what to change)."""
    data = read_toml(path)
    source, base = str(path), path.parent
    controller = table(data, "controller", CONTROLLER_KEYS, source)
    network = table(data, "network", NETWORK_KEYS, source)
    group_tables = {k: v for k, v in data.items() if k not in ("controller", "network")}
    group = GroupConfig.from_mapping(group_tables, source=source, base_dir=base)
    from rmsec import plugins

    for name, lookup in (("key_management", plugins.get_key_management),
                         ("source_auth", plugins.get_source_auth),
                         ("access_policy", plugins.get_access_policy)):
        try:
            lookup(getattr(group, name))
        except ConfigError as exc:
            raise ConfigError(f"{source}: [{name}] {exc} (rmsec plugins lists them)") from None
    if "credentials" not in controller:
        raise ConfigError(
            f'{source}: [controller] needs credentials = "DIR", the directory '
            "`rmsec credentials init DIR --group NAME` made"
        )
    credentials = resolve(base, controller["credentials"])
    missing = [f for f in CONTROLLER_FILES if not (credentials / f).is_file()]
    if missing:
        raise ConfigError(
            f"{source}: [controller] credentials = {str(credentials)!r} lacks {', '.join(missing)}; "
            f"make them with `rmsec credentials init {credentials} --group {group.group}`"
        )
    port = controller.get("port", 0)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: [controller] port must be 0..65535 (0: any free port)")
    kind = network.get("kind", "udp")
    if kind not in NETWORK_KINDS:
        raise ConfigError(
            f"{source}: [network] kind = {kind!r}: choose one of {', '.join(NETWORK_KINDS)} "
            "(the memory network only exists inside one process: see rmsec demo)"
        )
    loss = float(network.get("loss", 0.0))
    if not 0.0 <= loss < 1.0:
        raise ConfigError(f"{source}: [network] loss must be within [0, 1)")
    if announce is not None:
        target = pathlib.Path(announce)
    elif "announcement" in controller:
        target = resolve(base, controller["announcement"])
    else:
        raise ConfigError(
            f'{source}: say where to write the announcement: [controller] announcement = "FILE" '
            "or --announce FILE"
        )
    return ControllerSetup(
        group=group, credentials=credentials, host=controller.get("host", "127.0.0.1"),
        port=port, announcement=target, network_kind=kind, data_host=network.get("host"),
        loss=loss, seed=network.get("seed"),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rmsec controller",
        description="Run a secured group's controller from a TOML configuration; write the "
        "signed announcement members start from.",
    )
    parser.add_argument("config", metavar="CONFIG.toml")
    parser.add_argument("--announce", metavar="FILE",
                        help="where to write the signed announcement (overrides [controller] "
                        "announcement)")
    parser.add_argument("--duration", type=parse_duration, metavar="SECONDS",
                        help="stop after this long (default: until interrupted)")
    parser.add_argument("--json", action="store_true", help="print the counters as JSON at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress on standard error")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(stop: trio.Event) -> int:
        from rmsec.secure_api import open_controller

        setup = load(pathlib.Path(args.config), announce=args.announce)
        creds = ControllerCredentials.load(setup.credentials)
        async with open_controller(
            setup.group, tls=creds, host=setup.host, port=setup.port, network=setup.network(),
            data_host=setup.data_host,
        ) as ctl:
            announcement = ctl.announcement
            setup.announcement.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(setup.announcement, announcement)
            host, port = ctl.control_address
            from rmsec.announcement import Announcement

            net = Announcement.decode_untrusted(ctl.transport_announcement).network
            where = f" on {net.group}:{net.port}" if net.kind == "ip_multicast" else ""
            progress("controller", f"group {setup.group.group!r}: registration at {host}:{port}, "
                     f"{net.kind} data plane{where}; announcement in {setup.announcement}",
                     quiet=args.quiet)
            await wait_stop(stop, args.duration)
            stats = ctl.stats()
            members = len(ctl.members())
        if args.json:
            print(json.dumps({"group": setup.group.group, "control": [host, port],
                              "network": {"kind": net.kind, "group": net.group, "port": net.port},
                              "members_at_end": members, "stats": stats}, indent=2))
        progress("controller", f"stopped at epoch {stats.get('epoch')} after "
                 f"{stats.get('rekeys', 0)} rekeys", quiet=args.quiet)
        return OK

    return run("controller", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
