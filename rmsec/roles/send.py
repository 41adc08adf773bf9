"""``rmsec send ANNOUNCEMENT``: join a group as a sender, send, wait for confirmation.

What is sent: standard input (the default) or ``--file``, cut into messages of at most
``--message-size`` bytes, or one message per line with ``--lines``; or ``--count`` synthetic
messages of ``--size`` bytes (each starts with its number).  Messages are encrypted unless
``--plaintext`` (authenticated plaintext).  Leaving waits until every live member holds the
whole stream (positive confirmation), at most ``--confirm-timeout`` seconds.

The summary (count, bytes, SHA-256 of the concatenated messages, stream id, confirmed) goes to
standard output as JSON with ``--json``, else one line on standard error; a receiver's
``rmsec recv --json`` reports the same count and SHA-256 when it read exactly what was sent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import trio

import rmsec.api as api
from rmsec.errors import ConfigError
from rmsec.roles import (
    FAILED,
    OK,
    Fail,
    add_member_arguments,
    load_member,
    parse_duration,
    progress,
    run,
)

MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rmsec send",
        description="Join a group as a sender, send standard input (or a file, or synthetic "
        "messages) and wait until every member confirmed it.",
    )
    add_member_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="PATH", help="send this file (default: standard input)")
    source.add_argument("--count", type=int, metavar="N", help="send N synthetic messages")
    parser.add_argument("--size", type=int, default=1024, metavar="BYTES",
                        help="size of each synthetic message (with --count)")
    parser.add_argument("--message-size", type=int, default=1024, metavar="BYTES",
                        help="cut the input into messages of at most this many bytes")
    parser.add_argument("--lines", action="store_true", help="one message per input line")
    parser.add_argument("--plaintext", action="store_true",
                        help="authenticated plaintext instead of encrypted messages")
    parser.add_argument("--confirm-timeout", type=parse_duration, default=60.0, metavar="SECONDS",
                        help="give up waiting for confirmation after this long")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 0:
        parser.error("--count must not be negative")
    for name in ("size", "message_size"):
        if not 1 <= getattr(args, name) <= MAX_MESSAGE_SIZE:
            parser.error(f"--{name.replace('_', '-')} must be 1..{MAX_MESSAGE_SIZE} bytes")
    return args


def synthetic(count: int, size: int) -> Iterator[bytes]:
    for i in range(count):
        head = i.to_bytes(8, "big")
        yield (head + bytes((i + j) & 0xFF for j in range(max(0, size - 8))))[:size]


def chunks(stream: IO[bytes], size: int, lines: bool) -> Iterator[bytes]:
    if lines:
        yield from (line for line in stream if line)
        return
    while block := stream.read(size):
        yield block


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    async def body(stop: trio.Event) -> int:
        setup = await load_member(args)
        handle: IO[bytes] | None = None
        if args.count is not None:
            messages: Iterator[bytes] = synthetic(args.count, args.size)
        elif args.file is not None:
            try:
                handle = open(args.file, "rb")  # noqa: ASYNC230, SIM115 - closed in finally
            except OSError as exc:
                raise ConfigError(f"cannot read {args.file}: {exc.strerror or exc}") from None
            messages = chunks(handle, args.message_size, args.lines)
        else:
            messages = chunks(sys.stdin.buffer, args.message_size, args.lines)
        digest, count, size = hashlib.sha256(), 0, 0
        encrypt = None if setup.credentials is None else not args.plaintext
        tx: Any = None
        try:
            with trio.move_on_after(args.confirm_timeout) as confirming:
                async with api.open_sender(setup.announcement, credentials=setup.credentials,
                                           host=setup.host) as tx:
                    progress("send", f"sending on stream {tx.stream}", quiet=args.quiet)
                    if getattr(tx, "epoch", None) is not None:
                        progress("send", f"epoch {tx.epoch}", quiet=args.quiet)
                    confirming.deadline = float("inf")  # bound only the joining, then the end
                    for data in messages:
                        if stop.is_set():
                            break
                        await tx.send(data, encrypt=encrypt)
                        digest.update(data)
                        count += 1
                        size += len(data)
                    progress("send", f"{count} messages sent; waiting for confirmation",
                             quiet=args.quiet)
                    confirming.deadline = trio.current_time() + args.confirm_timeout
        finally:
            if handle is not None:
                handle.close()
        if tx is None:
            raise Fail(f"could not join the group within {args.confirm_timeout} s")
        confirmed = bool(tx.machine.confirmed)
        summary = {"count": count, "bytes": size, "sha256": digest.hexdigest(),
                   "stream": tx.stream, "confirmed": confirmed, "stats": tx.stats()}
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            progress("send", f"{count} messages, {size} bytes, sha256 {summary['sha256']}, "
                     f"{'confirmed' if confirmed else 'NOT confirmed'}", quiet=False)
        return OK if confirmed else FAILED

    return run("send", body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
