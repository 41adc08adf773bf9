"""``rmsec controller|send|recv|head``: one group role per process (DESIGN.md §7).

The controller starts from a TOML group configuration (:mod:`rmsec.config` plus two tables of
its own, ``[controller]`` and ``[network]``) and writes the signed announcement to a file; every
other role starts from that announcement file and a member's credentials (the directory
``rmsec credentials`` made), or from a small TOML file that names both.  Usage and the file
layouts are in docs/cli.md.

What the roles share lives here: reading configurations with errors that say what is wrong
and how to fix it, the member credentials, the stop signal (SIGINT / SIGTERM, or
``--duration``), files written atomically for other processes to find, and progress lines on
standard error.  Each role module (:mod:`.controller`, :mod:`.send`, :mod:`.recv`,
:mod:`.head`) has ``main(argv) -> int``: 0 on success, 1 when the run failed (refused,
expelled, not confirmed), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import signal
import sys
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import trio

from rmsec.credentials import MemberCredentials
from rmsec.errors import ConfigError, RmsecError

#: Exit statuses of every role.
OK, FAILED, USAGE = 0, 1, 2
#: Network kinds a multi-process group can use (the memory network lives in one process).
NETWORK_KINDS = ("udp", "ip_multicast")


class Fail(Exception):
    """The run failed for a reason the user should read (exit status 1, message printed)."""


def progress(role: str, text: str, *, quiet: bool = False) -> None:
    if not quiet:
        print(f"[rmsec {role}] {text}", file=sys.stderr, flush=True)


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write ``path`` so that another process polling for it never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def touch(path: str | None) -> None:
    if path:
        write_atomically(pathlib.Path(path), b"")


# ---------------------------------------------------------------------------- configuration


def read_toml(path: pathlib.Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def table(data: Mapping[str, Any], name: str, allowed: Mapping[str, type | tuple[type, ...]],
          source: str) -> dict[str, Any]:
    """``[name]`` of ``data`` with only ``allowed`` keys, each of its type (bools are not ints)."""
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {name} must be a table: write it as [{name}]")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{source}: [{name}] has unknown key(s) {unknown}; known: {sorted(allowed)}")
    for key, item in value.items():
        kind = allowed[key]
        if (isinstance(item, bool) and kind is not bool) or not isinstance(item, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{source}: [{name}] {key} must be {names}, got {item!r}")
    return dict(value)


def resolve(base: pathlib.Path, value: str) -> pathlib.Path:
    """A path from a config file: relative to the file's directory."""
    path = pathlib.Path(value).expanduser()
    return path if path.is_absolute() else base / path


def parse_duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError("a duration must be a positive number of seconds")
    return value


# ------------------------------------------------------------------------------- members


@dataclasses.dataclass(frozen=True, slots=True)
class MemberSetup:
    """What a send / recv / head process starts from."""

    announcement: bytes
    announcement_path: pathlib.Path
    credentials: MemberCredentials | None
    host: str | None


MEMBER_KEYS: dict[str, type | tuple[type, ...]] = {
    "announcement": str, "credentials": str, "name": str, "host": str,
}


def add_member_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="ANNOUNCEMENT|CONFIG.toml",
        help="the signed announcement file the controller wrote, or a TOML file with a "
        "[member] table (announcement, credentials, name, host)",
    )
    parser.add_argument("--credentials", metavar="DIR",
                        help="directory with ca.pem and NAME.pem / NAME.key (rmsec credentials)")
    parser.add_argument("--name", help="member id: the common name of the member certificate")
    parser.add_argument("--host", help="local address to bind (default: the one that reaches "
                        "the tree root; the interface for ip_multicast)")
    parser.add_argument("--wait", type=parse_duration, default=None, metavar="SECONDS",
                        help="wait up to this long for the announcement file to appear")
    parser.add_argument("--quiet", action="store_true", help="no progress on standard error")


def member_setup(args: argparse.Namespace) -> tuple[pathlib.Path, str | None, str | None, str | None]:
    """Announcement path, credentials directory, name and host from the command line and, if
    the source is a TOML file, its ``[member]`` table (the command line wins)."""
    source = pathlib.Path(args.source)
    announcement, credentials, name, host = source, args.credentials, args.name, args.host
    if source.suffix == ".toml":
        data = read_toml(source)
        extra = sorted(set(data) - {"member"})
        if extra:
            raise ConfigError(f"{source}: unknown table(s) {extra}; a member config has only [member]")
        member = table(data, "member", MEMBER_KEYS, str(source))
        if "announcement" not in member:
            raise ConfigError(f'{source}: [member] needs announcement = "FILE" (what the '
                              "controller wrote)")
        announcement = resolve(source.parent, member["announcement"])
        if credentials is None and "credentials" in member:
            credentials = str(resolve(source.parent, member["credentials"]))
        name = name or member.get("name")
        host = host or member.get("host")
    return announcement, credentials, name, host


async def load_member(args: argparse.Namespace) -> MemberSetup:
    path, directory, name, host = member_setup(args)
    if args.wait is not None:
        # Another process writes it: there is nothing to wait on but the file itself (bounded).
        with trio.move_on_after(args.wait):
            while not await trio.Path(path).exists():  # noqa: ASYNC110
                await trio.sleep(0.05)
    try:
        announcement = await trio.Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the announcement {path}: {exc.strerror or exc} (the "
                          "controller writes it: rmsec controller CONFIG --announce FILE)") from None
    credentials: MemberCredentials | None = None
    if directory is not None or name is not None:
        if directory is None or name is None:
            raise ConfigError("a secured group needs both --credentials DIR and --name MEMBER")
        d = pathlib.Path(directory)
        missing = [f for f in ("ca.pem", f"{name}.pem", f"{name}.key") if not (d / f).is_file()]
        if missing:
            raise ConfigError(
                f"{d} lacks {', '.join(missing)}: make a member certificate with "
                f"`rmsec credentials issue {d} {name}` (and the CA with `rmsec credentials init`)"
            )
        credentials = MemberCredentials.load(d, name)
    return MemberSetup(announcement, path, credentials, host)


# ----------------------------------------------------------------------------- running


async def _watch_signals(stop: trio.Event, everything: trio.CancelScope) -> None:
    """First SIGINT / SIGTERM: stop gracefully (leave, confirm, report); second: at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if stop.is_set():
                everything.cancel()
            stop.set()


def run(role: str, body: Callable[[trio.Event], Awaitable[int]]) -> int:
    """Run ``body(stop)`` under trio; ``stop`` is set on the first interrupt.  A configuration
    error prints one line and returns :data:`USAGE`; a failure the user should read
    (:class:`Fail`, a refused registration, an expulsion, a socket error) prints one line and
    returns :data:`FAILED`."""
    result: list[int] = [FAILED]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            nursery.start_soon(_watch_signals, stop, nursery.cancel_scope)
            result[0] = await body(stop)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except (ConfigError, Fail, RmsecError, OSError, BaseExceptionGroup) as exc:
        leaves = list(_leaves(exc))
        for kind, status in ((ConfigError, USAGE), ((Fail, RmsecError, OSError), FAILED)):
            found = next((e for e in leaves if isinstance(e, kind)), None)
            if found is not None:
                print(f"rmsec {role}: {found}", file=sys.stderr)
                return status
        raise
    return result[0]


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


async def wait_stop(stop: trio.Event, duration: float | None) -> None:
    """Until interrupted or ``duration`` seconds passed."""
    with trio.move_on_after(math.inf if duration is None else duration):
        await stop.wait()
