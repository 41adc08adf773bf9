"""``rmsec head ANNOUNCEMENT``: run a repair head (DESIGN.md §3, §7).

A head joins the tree, caches and repairs what flows below it and aggregates its children's
acknowledgements; in a secured group it registers with the HEAD role and holds no group key
(it forwards ciphertext).  It serves until interrupted or ``--duration`` seconds passed;
``--ready FILE`` is written once it is bound; ``--json`` prints its counters at the end.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

import rmsec.api as api
from rmsec.roles import (
    OK,
    add_member_arguments,
    load_member,
    parse_duration,
    progress,
    run,
    touch,
    wait_stop,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rmsec head", description="Run a repair head of a group until interrupted.",
    )
    add_member_arguments(parser)
    parser.add_argument("--duration", type=parse_duration, metavar="SECONDS",
                        help="stop after this long (default: until interrupted)")
    parser.add_argument("--ready", metavar="FILE", help="create FILE once bound into the tree")
    parser.add_argument("--json", action="store_true", help="print the counters as JSON at the end")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(stop: trio.Event) -> int:
        setup = await load_member(args)
        async with api.open_head(setup.announcement, credentials=setup.credentials,
                                 host=setup.host) as head:
            touch(args.ready)
            progress("head", f"bound below {head.bound_to}", quiet=args.quiet)
            await wait_stop(stop, args.duration)
            stats = head.stats()
        if args.json:
            print(json.dumps({"stats": stats}, indent=2))
        progress("head", f"stopped after forwarding {stats.get('forwarded', 0)} packets and "
                 f"{stats.get('repairs_sent', 0)} repairs", quiet=args.quiet)
        return OK

    return run("head", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
