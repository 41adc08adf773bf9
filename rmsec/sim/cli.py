"""``rmsec sim``: run one simulated group and print its figures as JSON.

Example: ``rmsec sim --receivers 1000 --messages 1000 --loss 0.05``.  Transport parameters
are passed as ``--set name=value`` (any :class:`~rmsec.transport.TransportConfig` field; the
value is read as a Python literal when it is one, e.g. ``--set ack_window=64``).
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from rmsec.bench.common import Progress, emit
from rmsec.errors import ConfigError


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``["ack_window=64", "slow_receiver=skip"]`` -> ``{"ack_window": 64, ...}``."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set expects name=value, got {pair!r}")
        try:
            settings[name.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            settings[name.strip()] = raw
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmsec sim", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--receivers", "-n", type=int, default=100)
    parser.add_argument("--heads", type=int, default=None, help="repair heads (default ceil(N/30))")
    parser.add_argument("--messages", "-m", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1000, help="bytes per message")
    parser.add_argument("--loss", type=float, default=0.05, help="drop probability per delivered copy")
    parser.add_argument("--data-loss-only", action="store_true", help="spare control packets from loss")
    parser.add_argument("--delay", type=float, nargs=2, default=(1.0, 5.0), metavar=("MIN_MS", "MAX_MS"),
                        help="one-way link delay range in ms (per node pair)")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra random delay per datagram, ms")
    parser.add_argument("--unicast", action="store_true", help="unicast overlay (config.multicast=False)")
    parser.add_argument("--bootstrap", choices=("head", "head+root", "all-heads", "static"), default="head",
                        help="what receivers are told: their planned head, plus the root, every head, "
                             "or a static parent (no solicitation)")
    parser.add_argument("--root-takes-receivers", action="store_true",
                        help="let the sender accept receivers as children (default: first-level heads only)")
    parser.add_argument("--root-children", type=int, default=4,
                        help="first-level heads under the sender, at every group size (0: up to max_children)")
    parser.add_argument("--max-time", type=float, default=600.0, help="simulated seconds at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="transport parameter (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> Any:
    from rmsec.sim.scenario import SimConfig
    from rmsec.transport import TransportConfig

    settings = parse_settings(args.settings)
    settings.setdefault("multicast", not args.unicast)
    return SimConfig(
        receivers=args.receivers,
        heads=args.heads,
        messages=args.messages,
        message_size=args.size,
        loss=args.loss,
        loss_control=not args.data_loss_only,
        delay_min=args.delay[0] / 1000,
        delay_max=args.delay[1] / 1000,
        jitter=args.jitter / 1000,
        seed=args.seed,
        transport=TransportConfig.from_mapping(settings),
        bootstrap=args.bootstrap,
        root_heads_only=not args.root_takes_receivers,
        root_children=args.root_children or None,
        max_time=args.max_time,
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    progress = Progress(enabled=not args.quiet)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        progress.enabled = True
        progress(f"rmsec sim: {exc}")
        return 2
    from rmsec.sim.scenario import run

    result = run(config, report=progress)
    emit(result)
    return 0 if result["delivery"]["all_ok"] else 1
