"""``rmsec recv ANNOUNCEMENT``: join a group as a receiver and deliver what it reads.

Every delivered message's bytes go to standard output (or ``--output FILE``) in delivery
order, so ``rmsec send --file F`` on one side and ``rmsec recv --output G`` on the other give
``cmp F G``.  With ``--json`` the data goes only to ``--output`` and standard output gets a
summary: count, bytes, SHA-256 of the concatenated messages, whether each sender's sequence
numbers rose, the key epochs seen.

It stops when every stream it heard has ended, after ``--count`` messages, after
``--duration`` seconds, or when interrupted; ``--ready FILE`` is written once it has joined
the tree (for scripts that start a sender after their receivers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from typing import IO, Any

import trio

import rmsec.api as api
from rmsec.errors import ChannelClosed, ConfigError
from rmsec.roles import (
    FAILED,
    OK,
    add_member_arguments,
    load_member,
    parse_duration,
    progress,
    run,
    touch,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rmsec recv",
        description="Join a group as a receiver and write every delivered message.",
    )
    add_member_arguments(parser)
    parser.add_argument("--output", metavar="FILE", help="write delivered data here")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--duration", type=parse_duration, metavar="SECONDS",
                        help="stop after this long")
    parser.add_argument("--ready", metavar="FILE", help="create FILE once joined")
    parser.add_argument("--json", action="store_true",
                        help="print a summary (count, sha256, ...) instead of the data")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 0:
        parser.error("--count must not be negative")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(stop: trio.Event) -> int:
        setup = await load_member(args)
        out: IO[bytes] | None = None
        if args.output is not None:
            try:
                out = open(args.output, "wb")  # noqa: ASYNC230, SIM115 - closed in finally
            except OSError as exc:
                raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        elif not args.json:
            out = sys.stdout.buffer
        digest, count, size = hashlib.sha256(), 0, 0
        last_seq: dict[int, int] = {}
        in_order, epochs, error = True, set(), None
        stats: dict[str, Any] = {}
        try:
            async with api.open_receiver(setup.announcement, credentials=setup.credentials,
                                         host=setup.host) as rx:
                touch(args.ready)
                progress("recv", f"joined below {rx.bound_to}", quiet=args.quiet)
                with trio.move_on_after(math.inf if args.duration is None else args.duration):
                    async with trio.open_nursery() as nursery:
                        async def on_stop() -> None:
                            await stop.wait()
                            nursery.cancel_scope.cancel()

                        nursery.start_soon(on_stop)
                        try:
                            if args.count != 0:
                                async for message in rx:
                                    if message.seq <= last_seq.get(message.sender, -1):
                                        in_order = False
                                    last_seq[message.sender] = message.seq
                                    epochs.add(message.epoch)
                                    digest.update(message.data)
                                    count += 1
                                    size += len(message.data)
                                    if out is not None:
                                        out.write(message.data)
                                        out.flush()
                                    if args.count is not None and count >= args.count:
                                        break
                        except ChannelClosed as exc:  # expelled, pruned, controller gone
                            error = str(exc)
                        nursery.cancel_scope.cancel()
                stats = rx.stats()
        finally:
            if out is not None and out is not sys.stdout.buffer:
                out.close()
        summary = {"count": count, "bytes": size, "sha256": digest.hexdigest(),
                   "in_order": in_order, "epochs": sorted(epochs), "error": error,
                   "stats": stats}
        if args.json:
            print(json.dumps(summary, indent=2))
        progress("recv", f"{count} messages, {size} bytes, sha256 {summary['sha256']}"
                 + (f"; stopped: {error}" if error else ""), quiet=args.quiet)
        return FAILED if error else OK

    return run("recv", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
