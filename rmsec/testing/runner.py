"""One group role per process, for multi-process and network-namespace tests.

    python -m rmsec.testing.runner sender   --announce FILE --go FILE [network options]
    python -m rmsec.testing.runner head     --announce FILE --ready FILE
    python -m rmsec.testing.runner receiver --announce FILE --ready FILE

Processes meet through files (all in a directory the test owns): the sender writes the
announcement (atomically), heads and receivers read it and touch ``--ready`` once bound; the
sender starts sending when ``--go`` exists.  The sender and each receiver print one JSON line
on stdout: what was sent (count, SHA-256) or what was delivered.  A head runs until it is
interrupted (SIGINT / SIGTERM).

Waiting for a file is a bounded poll (``--wait`` seconds); everything else is trio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

import rmsec.api as api
import rmsec.io
from rmsec.announcement import announcement_from
from rmsec.errors import Pruned
from rmsec.io.base import Network
from rmsec.testing.group import Delivery, digest, message_payloads
from rmsec.transport.config import TransportConfig

POLL = 0.05


async def wait_for_file(path: str, limit: float) -> None:
    # Another process creates the file: there is no event to wait on, so poll (bounded).
    with trio.fail_after(limit):
        while not await trio.Path(path).exists():  # noqa: ASYNC110
            await trio.sleep(POLL)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def network_from(args: argparse.Namespace) -> Network | None:
    """The sender's network; other roles open the one the announcement describes."""
    if args.network == "udp":
        return rmsec.io.udp(host=args.interface, loss=args.loss, seed=args.seed)
    return rmsec.io.ip_multicast(
        args.group, args.port, interface=args.interface, loss=args.loss, seed=args.seed
    )


async def run_sender(args: argparse.Namespace) -> dict[str, Any]:
    network = network_from(args)
    assert network is not None
    config = TransportConfig(
        multicast=network.requires_multicast,
        max_children=args.max_children,
    )
    payloads = message_payloads(args.messages, args.size, args.seed)
    async with api.open_sender(config=config, network=network) as tx:
        write_atomically(Path(args.announce), tx.announcement)
        await wait_for_file(args.go, args.wait)
        for payload in payloads:
            await tx.send(payload)
    return {"role": "sender", "count": len(payloads), "sha256": digest(payloads), "stats": tx.stats()}


async def run_head(args: argparse.Namespace) -> dict[str, Any]:
    announcement = await read_announcement(args)
    async with api.open_head(announcement, network=loss_network(args, announcement)) as head:
        await trio.Path(args.ready).touch()
        await trio.sleep_forever()
    return {"role": "head", "stats": head.stats()}  # pragma: no cover - ends by signal


async def run_receiver(args: argparse.Namespace) -> dict[str, Any]:
    announcement = await read_announcement(args)
    async with api.open_receiver(announcement, network=loss_network(args, announcement)) as rx:
        await trio.Path(args.ready).touch()
        delivery = Delivery(rx.address)
        try:
            async for message in rx:
                delivery.add(message)
        except Pruned:
            delivery.pruned = True
    return {
        "role": "receiver",
        "address": list(delivery.address),
        "count": delivery.count,
        "sha256": delivery.sha256,
        "in_order": delivery.in_order,
        "pruned": delivery.pruned,
        "parent": list(rx.bound_to) if rx.bound_to else None,
    }


async def read_announcement(args: argparse.Namespace) -> bytes:
    await wait_for_file(args.announce, args.wait)
    return await trio.Path(args.announce).read_bytes()


def loss_network(args: argparse.Namespace, announcement: bytes) -> Network:
    """The network the announcement names, with this process's ``--loss`` applied."""
    info = announcement_from(announcement).network
    if info.kind == "udp":
        return rmsec.io.udp(host=args.interface, loss=args.loss, seed=args.seed)
    assert info.group is not None and info.port is not None
    return rmsec.io.ip_multicast(
        info.group, info.port, interface=args.interface, loss=args.loss, seed=args.seed
    )


ROLES = {"sender": run_sender, "head": run_head, "receiver": run_receiver}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rmsec.testing.runner")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--announce", required=True, help="announcement file")
    parser.add_argument("--ready", help="touched once bound (head, receiver)")
    parser.add_argument("--go", help="sender starts sending once this file exists")
    parser.add_argument("--network", choices=("udp", "ip_multicast"), default="ip_multicast")
    parser.add_argument("--group", default="239.255.82.77")
    parser.add_argument("--port", type=int, default=47082)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--max-children", type=int, default=32)
    parser.add_argument("--wait", type=float, default=60.0, help="longest wait for a file")
    args = parser.parse_args(argv)
    if args.role == "sender" and not args.go:
        parser.error("sender needs --go")
    if args.role != "sender" and not args.ready:
        parser.error(f"{args.role} needs --ready")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends trio cleanly
    try:
        result = trio.run(ROLES[args.role], args)
    except KeyboardInterrupt:
        return 0 if args.role == "head" else 130
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
