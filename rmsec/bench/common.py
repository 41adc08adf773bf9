"""Helpers every ``rmsec bench`` module shares: argument set, progress, JSON, targets, charts.

The rules they encode (DESIGN.md §7, docs/dev/TEAM.md): results go to stdout as one JSON
document so they can be piped and diffed; progress goes to stderr so it never pollutes the
results; charts are optional (matplotlib is an extra) and their absence is reported, not
fatal; a benchmark states its targets next to its figures, so a reader sees at once whether a
number is good.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TextIO

Comparison = Literal["<=", ">=", "<", ">"]


def bench_parser(prog: str, description: str, *, default_plot: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark understands."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument(
        "--plot",
        nargs="?",
        const=default_plot,
        default=None,
        metavar="PNG",
        help=f"write charts to PNG (needs matplotlib; default file {default_plot})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


class Progress:
    """Progress lines on stderr, prefixed by the elapsed wall time; rate-limited ``tick``."""

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None, interval: float = 2.0) -> None:
        self.enabled = enabled
        self._stream = stream
        self._start = time.monotonic()
        self._interval = interval
        self._last_tick = 0.0

    def __call__(self, message: str) -> None:
        if self.enabled:
            stream = self._stream if self._stream is not None else sys.stderr
            print(f"[{time.monotonic() - self._start:7.1f}s] {message}", file=stream, flush=True)

    def tick(self, message: str) -> None:
        """Like calling, but at most once per ``interval`` seconds (for inner loops)."""
        now = time.monotonic()
        if now - self._last_tick >= self._interval:
            self._last_tick = now
            self(message)


def environment() -> dict[str, Any]:
    """What a reader needs to compare figures between machines."""
    return {
        "rmsec": _version(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rmsec")
    except Exception:  # not installed: running from a source tree
        return "unknown"


def target(value: float | None, op: Comparison, limit: float, unit: str = "") -> dict[str, Any]:
    """A figure next to its target, and whether it meets it (``None`` values never do)."""
    met: bool | None
    if value is None:
        met = None
    elif op == "<=":
        met = value <= limit
    elif op == ">=":
        met = value >= limit
    elif op == "<":
        met = value < limit
    else:
        met = value > limit
    result: dict[str, Any] = {"value": value, "target": f"{op} {limit:g}{unit}", "met": met}
    return result


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as elapsed: ...`` then ``elapsed[0]`` holds wall seconds."""
    elapsed = [0.0]
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - start


def emit(result: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Write ``result`` as one indented JSON document (stdout by default)."""
    out = stream if stream is not None else sys.stdout
    json.dump(result, out, indent=2, default=_json_default)
    out.write("\n")
    out.flush()


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot put {type(value).__name__} into JSON")


@dataclasses.dataclass(frozen=True, slots=True)
class Panel:
    """One chart: named series of ``(x, y)`` points, with an optional target line."""

    title: str
    xlabel: str
    ylabel: str
    series: Mapping[str, Sequence[tuple[float, float]]]
    logx: bool = False
    logy: bool = False
    target: float | None = None
    kind: Literal["line", "bar"] = "line"


def plot(path: str, panels: Sequence[Panel], *, title: str = "", progress: Progress | None = None) -> str | None:
    """Draw ``panels`` side by side into one PNG; returns the path, or None without matplotlib."""
    try:
        # Imported by name so that type checking does not require the optional extra.
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        message = "matplotlib is not installed (pip install 'rmsec[plot]'); no chart written"
        (progress or Progress())(message)
        return None
    columns = min(len(panels), 2) or 1
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for ax, panel in zip([a for row in axes for a in row], panels, strict=False):
        _draw(ax, panel)
    for ax in [a for row in axes for a in row][len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _draw(ax: Any, panel: Panel) -> None:
    if panel.kind == "bar":
        labels = list(panel.series)
        groups = sorted({x for points in panel.series.values() for x, _ in points})
        width = 0.8 / max(1, len(labels))
        for k, label in enumerate(labels):
            values = dict(panel.series[label])
            xs = [g + (k - (len(labels) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, [values.get(g, 0.0) for g in groups], width=width, label=label)
        ax.set_xticks(range(len(groups)), [f"{g:g}" for g in groups])
    else:
        for label, points in panel.series.items():
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    if panel.target is not None:
        ax.axhline(panel.target, linestyle="--", color="grey", label="target")
    if panel.logx:
        ax.set_xscale("log")
        xs = sorted({x for points in panel.series.values() for x, _ in points})
        ax.set_xticks(xs, [f"{x:,g}" for x in xs])
        ax.minorticks_off()
    if panel.logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
