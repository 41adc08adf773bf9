"""``rmsec interop``: every installed key-management scheme x source-auth method x access
policy, each combination run through the scenarios of :mod:`.scenarios` on a whole secured
group (memory network, real TLS registration on 127.0.0.1, real clock).

The plugins come from the registries (:func:`rmsec.plugins.plugin_set`), so a third party's
scheme joins the matrix as soon as it is installed.  Options: the harness gives the built-in
access policies what they need (a CA file, a members file; :class:`~.group.Trust`), and every
plugin its defaults (:data:`PLUGIN_OPTIONS` is where a plugin that needs more would get it).

Report, per combination and scenario: pass / fail / skip, the failure's message, wall time,
rekey bytes (the controller's ``rekey_bytes``) and packets (datagrams read on the data plane).
Text is a table in the manner of aioquic's interop runner (one column per scenario), then the
failures in full; ``--json`` prints the same as JSON.  Progress goes to stderr; the exit status
is 1 when any combination failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import trio

import rmsec.plugins
from rmsec.errors import ConfigError
from rmsec.plugins import PluginSet

from .group import Combination, ScenarioFailed, Trust, open_group
from .scenarios import SCENARIOS, Scenario, by_name

Status = Literal["pass", "fail", "skip"]
Progress = Callable[[str], None]

#: Options the harness gives a plugin, by (kind, name); every other plugin runs on defaults
#: (TESLA included: its receivers bound the sender's clock through the controller at
#: registration, as in a real deployment, although here they share one clock).
PLUGIN_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {}
DEFAULT_MEMBERS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: str
    status: Status
    message: str
    wall_time: float
    rekey_bytes: int = 0
    packets: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "status": self.status, "message": self.message,
                "wall_time": round(self.wall_time, 3), "rekey_bytes": self.rekey_bytes,
                "packets": self.packets}


@dataclasses.dataclass(frozen=True, slots=True)
class CombinationResult:
    combination: Combination
    results: tuple[ScenarioResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    @property
    def wall_time(self) -> float:
        return sum(r.wall_time for r in self.results)

    @property
    def rekey_bytes(self) -> int:
        return sum(r.rekey_bytes for r in self.results)

    @property
    def packets(self) -> int:
        return sum(r.packets for r in self.results)

    def failures(self) -> list[ScenarioResult]:
        return [r for r in self.results if r.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        c = self.combination
        return {
            "key_management": c.key_management, "source_auth": c.source_auth,
            "access_policy": c.access_policy, "passed": self.passed,
            "wall_time": round(self.wall_time, 3), "rekey_bytes": self.rekey_bytes,
            "packets": self.packets, "scenarios": [r.to_json() for r in self.results],
        }


# ------------------------------------------------------------------------- the combinations


def installed(plugins: PluginSet | None = None) -> dict[str, list[str]]:
    """Names registered for each kind, from the plugin registries."""
    ps = plugins or rmsec.plugins.plugin_set()
    return {
        "key_management": ps.key_management.names(),
        "source_auth": ps.source_auth.names(),
        "access_policy": ps.access_policies.names(),
    }


def _chosen(kind: str, available: list[str], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return available
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ConfigError(f"no {kind.replace('_', ' ')} named {unknown}; installed: {available}")
    return [n for n in available if n in wanted]


def combinations(
    *, key_management: Sequence[str] | None = None, source_auth: Sequence[str] | None = None,
    access_policy: Sequence[str] | None = None, diagonal: bool = False,
    plugins: PluginSet | None = None,
) -> list[Combination]:
    """The cross product of the installed (and, if given, chosen) plugins.

    ``diagonal`` takes a covering subset instead: as many combinations as the longest list,
    each list cycled, so every scheme, method and policy runs at least once (for CI).
    """
    names = installed(plugins)
    km = _chosen("key_management", names["key_management"], key_management)
    auth = _chosen("source_auth", names["source_auth"], source_auth)
    access = _chosen("access_policy", names["access_policy"], access_policy)
    if not (km and auth and access):
        return []
    if diagonal:
        longest = max(len(km), len(auth), len(access))
        return [Combination(km[i % len(km)], auth[i % len(auth)], access[i % len(access)])
                for i in range(longest)]
    return [Combination(*c) for c in itertools.product(km, auth, access)]


def plugin_options(kind: str, name: str) -> dict[str, Any]:
    return dict(PLUGIN_OPTIONS.get((kind, name), {}))


# ------------------------------------------------------------------------------ running them


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def describe_failure(exc: BaseException) -> str:
    """One line for the report: a scenario's own message first, else each distinct error."""
    leaves = _leaves(exc)
    own = [str(e) for e in leaves if isinstance(e, ScenarioFailed)]
    if own:
        return own[0]
    seen: list[str] = []
    for e in leaves:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)


async def run_scenario(
    scenario: Scenario, combination: Combination, trust: Trust, *, members: int,
    plugins: PluginSet | None = None, seed: int | None = None,
) -> ScenarioResult:
    """One scenario on one combination, on a fresh group; never raises for the scenario's or
    the plugins' failures (they become the result), only for cancellation."""
    ps = plugins or rmsec.plugins.plugin_set()
    started = time.perf_counter()
    try:
        auth = ps.source_auth.get(combination.source_auth)
    except ConfigError as exc:
        return ScenarioResult(scenario.name, "fail", str(exc), 0.0)
    reason = scenario.skip_reason(combination, auth)
    if reason is not None:
        return ScenarioResult(scenario.name, "skip", reason, 0.0)
    stats: dict[str, int] = {}
    try:
        with trio.fail_after(scenario.timeout):
            async with open_group(
                combination, trust, members=members, seed=seed, others=scenario.others,
                patience=scenario.wait, repair_patience=scenario.repair_wait,
                key_management_options=plugin_options("key_management", combination.key_management),
                source_auth_options=plugin_options("source_auth", combination.source_auth),
            ) as group:
                try:
                    note = await scenario.run(group, members)
                finally:
                    stats = group.stats()
    except trio.TooSlowError:
        message = f"no result within {scenario.timeout:g} s (set-up, scenario and tear-down)"
        status: Status = "fail"
    except Exception as exc:  # every failure is a result of the matrix
        message, status = describe_failure(exc), "fail"
    else:
        message, status = note, "pass"
    return ScenarioResult(
        scenario.name, status, message, time.perf_counter() - started,
        stats.get("rekey_bytes", 0), stats.get("packets", 0),
    )


async def run_matrix(
    chosen: Sequence[Combination], scenarios: Sequence[Scenario], *, members: int = DEFAULT_MEMBERS,
    directory: pathlib.Path, progress: Progress | None = None, plugins: PluginSet | None = None,
    seed: int | None = None,
) -> list[CombinationResult]:
    """Run every scenario on every combination, one at a time (each on its own group)."""
    say = progress or (lambda text: None)
    trust = Trust(directory, pool=4 * members + 16)
    results = []
    width = len(str(len(chosen)))
    for index, combination in enumerate(chosen, 1):
        outcome = []
        for scenario in scenarios:
            outcome.append(await run_scenario(scenario, combination, trust, members=members,
                                              plugins=plugins, seed=seed))
        result = CombinationResult(combination, tuple(outcome))
        results.append(result)
        summary = ", ".join(f"{r.scenario} {r.status} {r.wall_time:.1f}s" for r in outcome)
        say(f"[{index:>{width}}/{len(chosen)}] {combination.label}: {summary}")
        for failure in result.failures():
            say(f"    {failure.scenario}: {failure.message}")
    return results


# ----------------------------------------------------------------------------------- report


def render(results: Sequence[CombinationResult], scenarios: Sequence[Scenario]) -> str:
    """A table (one row per combination, one column per scenario), then the failures."""
    head = ["key management", "source auth", "access", *(s.name for s in scenarios),
            "time s", "rekey B", "packets"]
    rows = []
    for r in results:
        c = r.combination
        cells = {x.scenario: x.status for x in r.results}
        rows.append([c.key_management, c.source_auth, c.access_policy,
                     *(cells.get(s.name, "-") for s in scenarios),
                     f"{r.wall_time:.1f}", str(r.rekey_bytes), str(r.packets)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    failed = [r for r in results if not r.passed]
    lines.append("")
    lines.append(f"{len(results) - len(failed)}/{len(results)} combinations passed "
                 f"({sum(r.wall_time for r in results):.0f} s)")
    for r in failed:
        for f in r.failures():
            lines.append(f"FAIL {r.combination.label} {f.scenario}: {f.message}")
    skipped = sorted({f"{x.scenario}: {x.message}" for r in results for x in r.results
                      if x.status == "skip"})
    for text in skipped:
        lines.append(f"skip {text}")
    return "\n".join(lines)


def to_json(results: Sequence[CombinationResult], *, members: int, command: str) -> dict[str, Any]:
    return {
        "command": command,
        "members": members,
        "passed": all(r.passed for r in results),
        "combinations": [r.to_json() for r in results],
    }


# -------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmsec interop",
        description="Run every installed key-management x source-auth x access-policy "
                    "combination through the interop scenarios.",
    )
    parser.add_argument("--keymgmt", nargs="+", metavar="NAME", help="only these schemes")
    parser.add_argument("--auth", nargs="+", metavar="NAME", help="only these methods")
    parser.add_argument("--access", nargs="+", metavar="NAME", help="only these policies")
    parser.add_argument("--scenario", nargs="+", metavar="NAME",
                        help=f"only these scenarios ({', '.join(s.name for s in SCENARIOS)})")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS,
                        help=f"receiving members per group (default {DEFAULT_MEMBERS})")
    parser.add_argument("--diagonal", action="store_true",
                        help="a covering subset: every scheme, method and policy at least once")
    parser.add_argument("--seed", type=int, default=None, help="memory-network seed")
    parser.add_argument("--list", action="store_true", help="print the combinations and exit")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str]) -> int:
    """``rmsec interop [--keymgmt/--auth/--access NAME...] [--scenario NAME...] [--members N]
    [--diagonal] [--json]``."""
    args = _parser().parse_args(argv)
    if not 1 <= args.members <= 64:
        print("rmsec interop: --members must be within 1..64", file=sys.stderr)
        return 2
    try:
        scenarios = by_name(args.scenario)
        chosen = combinations(key_management=args.keymgmt, source_auth=args.auth,
                              access_policy=args.access, diagonal=args.diagonal)
    except (KeyError, ConfigError) as exc:
        print(f"rmsec interop: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if args.list:
        for c in chosen:
            print(c.label)
        return 0

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    progress(f"rmsec interop: {len(chosen)} combinations x {len(scenarios)} scenarios, "
             f"{args.members} members each")
    with tempfile.TemporaryDirectory(prefix="rmsec-interop-") as tmp:
        results = trio.run(lambda: run_matrix(
            chosen, scenarios, members=args.members, directory=pathlib.Path(tmp),
            progress=progress, seed=args.seed,
        ))
    if args.json:
        command = " ".join(["rmsec", "interop", *argv])
        print(json.dumps(to_json(results, members=args.members, command=command), indent=2))
    else:
        print(render(results, scenarios))
    return 0 if all(r.passed for r in results) else 1


def summary(results: Sequence[CombinationResult]) -> Mapping[str, int]:
    """Counts of scenario outcomes (for tests and the docs)."""
    counts = {"pass": 0, "fail": 0, "skip": 0}
    for r in results:
        for x in r.results:
            counts[x.status] += 1
    return counts
