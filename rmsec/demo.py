"""``rmsec demo``: a whole group in one process (sender, repair heads, receivers).

It sends ``--messages`` messages of ``--size`` bytes and prints, per receiver, how many it
delivered and the SHA-256 of what it delivered, next to the SHA-256 of what was sent.  On the
memory network the run is in virtual time (``trio.testing.MockClock``), so loss and timers cost
no waiting; on UDP it uses real sockets on 127.0.0.1 with receive-side loss.

Exit status 0 when every receiver delivered exactly what was sent, in order; 1 otherwise.

``--secure`` runs a secured group instead: a controller (TLS registration on 127.0.0.1, rekeys
on the root stream), a key-less repair head per ``--heads``, one sender and ``--receivers``
members, ``--churn`` of whom leave and as many new ones join between rounds of messages while
the stream flows.  It reports, per member, what it read, what was sent while it was a member
(what it could read) and what was sent outside its membership (what it could not read); exit
status 0 when every member read exactly the messages sent while it was a member.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
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
    parser.add_argument("--secure", action="store_true",
                        help="a secured group: controller, members joining and leaving")
    parser.add_argument("--churn", type=int, default=2, metavar="C",
                        help="with --secure: members leaving and joining between rounds")
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
    if args.secure:
        return secure_main(args)

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


# ------------------------------------------------------------------------------ --secure


@dataclasses.dataclass(slots=True)
class MemberReport:
    """One member of the secured demo: when it was there and what it read."""

    name: str
    joined_round: int
    left_round: int | None = None
    read: list[int] = dataclasses.field(default_factory=list)
    could_read: set[int] = dataclasses.field(default_factory=set)
    epochs: set[int] = dataclasses.field(default_factory=set)
    changed: trio.Event = dataclasses.field(default_factory=trio.Event, repr=False)

    def add(self, number: int, epoch: int) -> None:
        self.read.append(number)
        self.epochs.add(epoch)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_all(self) -> None:
        """Until it read as many messages as were sent while it was a member."""
        while len(self.read) < len(self.could_read):
            await self.changed.wait()

    def to_json(self, sent: int) -> dict[str, Any]:
        return {
            "member": self.name, "joined_round": self.joined_round, "left_round": self.left_round,
            "read": len(self.read), "could_read": len(self.could_read),
            "could_not_read": sent - len(self.could_read),
            "exact": sorted(self.read) == sorted(self.could_read),
            "epochs": sorted(self.epochs),
        }


async def run_secure(
    network: Network, args: argparse.Namespace, progress: Any, ca_file: pathlib.Path,
    creds: Any,
) -> tuple[list[MemberReport], int, dict[str, int]]:
    """Rounds of: membership change, wait for the sender to reach the new epoch, send a round
    of messages, wait until every current member read them."""
    from rmsec import api
    from rmsec.config import GroupConfig, RekeyPolicy
    from rmsec.credentials import MemberCredentials
    from rmsec.secure_api import open_controller
    from rmsec.testing.group import background

    config = GroupConfig(group="demo", access_policy="x509",
                         access_policy_options={"ca": str(ca_file)}, rekey=RekeyPolicy())

    def member(name: str) -> MemberCredentials:
        return MemberCredentials(name.encode(), creds.ca.certificate, creds.ca.issue(name))

    rounds = max(2, args.messages // 10)
    per_round = max(1, args.messages // rounds)
    reports: dict[str, MemberReport] = {}
    live: dict[str, trio.CancelScope] = {}
    sent = 0
    async with open_controller(config, tls=creds, network=network) as ctl:
        ann = ctl.announcement
        progress(f"controller at {ctl.control_address[0]}:{ctl.control_address[1]}")
        async with trio.open_nursery() as nursery, background(nursery) as enter:
            for h in range(args.heads):
                await enter(api.open_head, ann, network=network, credentials=member(f"head{h}"))
            tx: Any = await enter(api.open_sender, ann, network=network,
                                  credentials=member("sender"))

            async def run_member(report: MemberReport, *, task_status: Any) -> None:
                with trio.CancelScope() as scope:
                    async with api.open_receiver(ann, network=network,
                                                 credentials=member(report.name)) as rx:
                        task_status.started(scope)
                        async for message in rx:
                            report.add(int.from_bytes(message.data[:8], "big"), message.epoch)

            async def join(index: int, r: int) -> None:
                report = reports[f"m{index}"] = MemberReport(f"m{index}", r)
                live[report.name] = await nursery.start(run_member, report)

            next_id = 0
            for _ in range(args.receivers):
                await join(next_id, 0)
                next_id += 1
            payload = b"\0" * max(0, args.size - 8)
            for r in range(rounds):
                if r:
                    for name in list(live)[: args.churn]:
                        live.pop(name).cancel()
                        reports[name].left_round = r
                    for _ in range(args.churn):
                        await join(next_id, r)
                        next_id += 1
                await ctl.wait_until(
                    lambda: ctl.stats()["members"] == len(live) + 1 + args.heads)
                await tx.wait_epoch(ctl.epoch)
                for _ in range(per_round):
                    await tx.send(sent.to_bytes(8, "big") + payload, encrypt=True)
                    for name in live:
                        reports[name].could_read.add(sent)
                    sent += 1
                for name in live:
                    await reports[name].wait_all()
                progress(f"round {r + 1}/{rounds}: epoch {ctl.epoch}, "
                         f"{len(live)} members, {sent} messages sent")
            for scope in live.values():
                scope.cancel()
        stats = ctl.stats()
    return list(reports.values()), sent, stats


def secure_main(args: argparse.Namespace) -> int:
    if args.network == "ip_multicast":
        print("rmsec demo: --secure runs on memory or udp", file=sys.stderr)
        return 2

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[demo] {text}", file=sys.stderr, flush=True)

    from rmsec.credentials import ControllerCredentials

    network = make_network(args)
    creds = ControllerCredentials.create("demo")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rmsec-demo-") as directory:
        ca_file = pathlib.Path(directory, "ca.pem")
        ca_file.write_bytes(creds.ca.certificate)
        # Real time even on the memory network: registration is TLS over real TCP.
        reports, sent, stats = trio.run(run_secure, network, args, progress, ca_file, creds)
    wall = time.monotonic() - started
    exact = all(sorted(r.read) == sorted(r.could_read) for r in reports)
    if args.json:
        print(json.dumps({
            "network": args.network, "secure": True, "sent": sent,
            "members": [r.to_json(sent) for r in reports], "all_exact": exact,
            "rekeys": stats.get("rekeys", 0), "epoch": stats.get("epoch", 0),
            "wall_clock": round(wall, 3),
        }, indent=2))
    else:
        print(f"rmsec demo --secure: {args.network} network, {args.heads} key-less heads, "
              f"{len(reports)} members over time, {sent} messages")
        for r in reports:
            left = "-" if r.left_round is None else str(r.left_round)
            ok = "exact" if sorted(r.read) == sorted(r.could_read) else "MISMATCH"
            print(f"  {r.name:<5} rounds {r.joined_round}..{left:<3} read {len(r.read):>4} "
                  f"of {len(r.could_read):>4} sent while a member; could not read "
                  f"{sent - len(r.could_read):>4}  epochs {sorted(r.epochs)}  {ok}")
        print(f"{stats.get('rekeys', 0)} rekeys, final epoch {stats.get('epoch', 0)}; "
              f"{wall:.2f} s wall clock")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
