"""``rmsec demo``: a whole group in one process (sender, repair heads, receivers).

It sends ``--messages`` messages of ``--size`` bytes and prints, per receiver, how many it
delivered and the SHA-256 of what it delivered, next to the SHA-256 of what was sent.  On the
memory network the run is in virtual time (``trio.testing.MockClock``), so loss and timers cost
no waiting; on UDP it uses real sockets on 127.0.0.1 with receive-side loss.

Exit status 0 when every receiver delivered exactly what was sent, in order; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import trio
import trio.testing

import rmsec.io
from rmsec.io.base import Network
from rmsec.testing.group import GroupResult, run_group


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rmsec demo",
        description="Run a whole group in one process and report what every receiver delivered.",
    )
    parser.add_argument(
        "--network", choices=("memory", "udp", "ip_multicast"), default="memory",
        help="memory (virtual time), udp (127.0.0.1), or ip_multicast (run it inside a network "
        "namespace with a 224.0.0.0/4 route on lo)",
    )
    parser.add_argument("--receivers", type=int, default=20, metavar="N")
    parser.add_argument("--heads", type=int, default=2, metavar="H")
    parser.add_argument("--loss", type=float, default=0.0, metavar="P",
                        help="probability of dropping each received datagram")
    parser.add_argument("--messages", type=int, default=200, metavar="M")
    parser.add_argument("--size", type=int, default=1024, metavar="BYTES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", default="239.255.82.77",
                        help="IP multicast group (with --network ip_multicast)")
    parser.add_argument("--port", type=int, default=47082)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.receivers < 1 or args.heads < 0 or args.messages < 1 or args.size < 1:
        parser.error("--receivers, --messages and --size must be positive, --heads not negative")
    if not 0.0 <= args.loss < 1.0:
        parser.error("--loss must be within [0, 1)")
    return args


def make_network(args: argparse.Namespace) -> Network:
    if args.network == "memory":
        return rmsec.io.memory(loss=args.loss, seed=args.seed)
    if args.network == "udp":
        return rmsec.io.udp(loss=args.loss, seed=args.seed)
    return rmsec.io.ip_multicast(args.group, args.port, loss=args.loss, seed=args.seed)


def summary(result: GroupResult, args: argparse.Namespace, wall: float) -> str:
    lines = [
        f"rmsec demo: {args.network} network, {args.heads} heads, {args.receivers} receivers, "
        f"loss {args.loss:.0%}",
        f"sent      {result.sent_count} messages x {args.size} bytes  "
        f"sha256 {result.sent_sha256[:16]}...",
    ]
    for d in result.deliveries:
        ok = "ok" if d.count == result.sent_count and d.sha256 == result.sent_sha256 else "MISMATCH"
        extra = " (pruned)" if d.pruned else ""
        host, port = d.address
        lines.append(f"  {host}:{port:<6} {d.count:>6} messages  sha256 {d.sha256[:16]}...  {ok}{extra}")
    stats = result.sender_stats
    good = sum(
        1 for d in result.deliveries
        if d.count == result.sent_count and d.sha256 == result.sent_sha256 and d.in_order
    )
    lines.append(
        f"{good}/{len(result.deliveries)} receivers identical to the sender; "
        f"sender sent {stats.get('io_datagrams_out', 0)} datagrams, heard "
        f"{stats.get('io_datagrams_in', 0)}, repaired {stats.get('repairs_sent', 0)}"
    )
    clock = "virtual" if args.network == "memory" else "real"
    lines.append(f"finished in {result.elapsed:.2f} s {clock} time ({wall:.2f} s wall clock)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[demo] {text}", file=sys.stderr, flush=True)

    async def run() -> GroupResult:
        return await run_group(
            make_network(args), receivers=args.receivers, heads=args.heads,
            messages=args.messages, size=args.size, seed=args.seed, progress=progress,
        )

    clock: Any = trio.testing.MockClock(autojump_threshold=0) if args.network == "memory" else None
    started = time.monotonic()
    result = trio.run(run, clock=clock)
    wall = time.monotonic() - started
    if args.json:
        report = result.to_json()
        report["network"] = args.network
        report["wall_clock"] = round(wall, 3)
        print(json.dumps(report, indent=2))
    else:
        print(summary(result, args, wall))
    return 0 if result.all_identical else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
