"""``rmsec bench transport``: tree scaling in the simulator, goodput over real UDP.

Two parts, both in one JSON document on stdout (progress on stderr):

``simulator``
    N = 100, 1,000, 10,000 receivers at 5 % loss through :mod:`rmsec.sim`: control packets
    reaching the sender per 1000 data packets (flat in N: no acknowledgement implosion), the
    share of repairs that heads serve, retransmissions per lost copy, and the wall time of
    the largest run.
``udp``
    Goodput of rmsec over real UDP sockets on 127.0.0.1 between separate processes (one
    sender, 1 and 4 receivers, 0 / 1 / 5 % receive-side loss), next to a raw unreliable UDP
    blast over the same topology, the ceiling a Python process can reach on this machine.

The UDP part runs its roles as child processes of this one (``python -m
rmsec.bench.transport _worker ...``), talking JSON lines over their stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from rmsec.bench.common import (
    Panel,
    Progress,
    bench_parser,
    emit,
    environment,
    plot,
    stopwatch,
    target,
)
from rmsec.transport.config import SlowReceiverPolicy

PAYLOAD = 1200
#: The blast's end-of-run marker; several are sent since any one may be lost.
END_MARKER = b"END"
END_COPIES = 50
#: A receiver that hears nothing for this long gives up (it lost the end markers).
BLAST_IDLE = 3.0


# ====================================================================== simulator part


def run_simulator(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """One :mod:`rmsec.sim` run per group size; figures and the targets they are held to."""
    from rmsec.sim.scenario import SimConfig, run
    from rmsec.transport import TransportConfig

    sizes: list[int] = args.sizes
    seeds: list[int] = args.seeds or [args.seed]
    runs: list[dict[str, Any]] = []
    for n, seed in ((n, seed) for n in sizes for seed in seeds):
        config = SimConfig(
            receivers=n,
            messages=args.messages,
            message_size=args.message_size,
            loss=args.sim_loss,
            seed=seed,
            transport=TransportConfig(multicast=not args.unicast),
        )
        progress(f"simulator: N={n:,} receivers, {args.messages} messages, seed {seed}")
        result = run(config, report=progress)
        metrics, timing, delivery = result["metrics"], result["time"], result["delivery"]
        runs.append(
            {
                "receivers": n,
                "seed": seed,
                "heads": result["tree"]["heads"],
                "levels": result["tree"]["levels"],
                "delivered_all": delivery["all_ok"],
                "receivers_ok": delivery["receivers_ok"],
                "root_children": result["tree"]["root_children"],
                "control_at_sender_per_1000_data": metrics["control_at_sender_per_1000_data"],
                "control_at_sender_by_type": metrics["control_at_sender_by_type"],
                "receiver_duplicates": metrics["receiver_duplicates"],
                "control_at_head_max": metrics["control_at_head_max"],
                "head_repair_share": metrics["head_repair_share"],
                "retransmissions_per_loss": metrics["retransmissions_per_loss"],
                "repairs_by_heads": metrics["repairs_by_heads"],
                "repairs_by_sender": metrics["repairs_by_sender"],
                "data_copies_lost": metrics["data_copies_lost"],
                "bind_sim_s": timing["bind_sim_s"],
                "data_sim_s": timing["data_sim_s"],
                "wall_s": timing["wall_s"],
                "events": timing["events"],
                "detail": result,
            }
        )
    control = [y for _, y in per_size(runs, "control_at_sender_per_1000_data")]
    shares = [r["head_repair_share"] for r in runs]
    retrans = [r["retransmissions_per_loss"] for r in runs]
    largest = max(runs, key=lambda r: (r["receivers"], r["wall_s"]))
    spread = (max(control) / min(control) - 1) if control and min(control) > 0 else None
    return {
        "description": "simulator, multicast data plane" if not args.unicast else "simulator, unicast overlay",
        "runs": runs,
        "targets": {
            "control_at_sender_flat_within": target(spread, "<=", 0.2),
            "head_repair_share_min": target(_min(shares), ">=", 0.95),
            "retransmissions_per_loss_max": target(_max(retrans), "<=", 1.3),
            f"wall_s_at_{largest['receivers']}_receivers": target(largest["wall_s"], "<=", 120.0, " s"),
            "all_delivered": all(r["delivered_all"] for r in runs),
        },
    }


def per_size(runs: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(receivers, mean of key over the seeds)`` in order of group size (None counts as 0)."""
    sums: dict[int, list[float]] = {}
    for r in runs:
        sums.setdefault(r["receivers"], []).append(float(r[key] or 0.0))
    return [(n, sum(v) / len(v)) for n, v in sorted(sums.items())]


def _min(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# ====================================================================== UDP part: workers


def _say(record: dict[str, Any]) -> None:
    """A worker's one channel to the parent: a JSON line on stdout."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _blast_receiver() -> None:
    """Drain a UDP socket as fast as Python can until the end marker (or silence)."""
    import trio

    from rmsec.io.udp import make_udp_socket

    sock = make_udp_socket()
    sock.bind(("127.0.0.1", 0))
    _say({"port": sock.getsockname()[1]})
    received = packets = 0
    first = last = 0.0
    done = False
    with sock:
        while not done:
            with trio.move_on_after(BLAST_IDLE if packets else 60.0) as scope:
                await trio.lowlevel.wait_readable(sock)
            if scope.cancelled_caught:
                break
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                if data == END_MARKER:
                    done = True
                    break
                if not packets:
                    first = time.monotonic()
                packets += 1
                received += len(data)
                last = time.monotonic()
    _say({"bytes": received, "packets": packets, "first_at": first, "last_at": last})


async def _rmsec_receiver(announcement: bytes, loss: float, seed: int, expect: int) -> None:
    """Join the group over UDP with receive-side ``loss``; report what arrived and when."""
    import trio

    import rmsec
    import rmsec.io
    from rmsec.errors import ChannelClosed

    digest = hashlib.sha256()
    received = messages = 0
    first = last = 0.0
    failure: str | None = None
    network = rmsec.io.udp(host="127.0.0.1", loss=loss, seed=seed)
    async with rmsec.open_receiver(announcement, network=network) as rx:
        _say({"ready": True})
        # Iterate to the natural end (the stream's end), bounded in case it never comes.
        with trio.move_on_after(max(120.0, expect / 200_000)) as scope:
            try:
                async for message in rx:
                    if not messages:
                        first = time.monotonic()
                    messages += 1
                    received += len(message.data)
                    digest.update(message.data)
                    last = time.monotonic()
            except ChannelClosed as exc:  # e.g. pruned as a slow receiver: report, do not crash
                failure = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            failure = "timed out before the stream ended"
        stats = rx.stats()
    _say(
        {
            "bytes": received,
            "messages": messages,
            "first_at": first,
            "last_at": last,
            "digest": digest.hexdigest(),
            "failure": failure,
            "stats": {k: v for k, v in stats.items() if isinstance(v, int)},
        }
    )


def worker_main(argv: list[str]) -> int:
    """Entry point of a child process: ``_worker blast`` or ``_worker rmsec HEX LOSS SEED N``."""
    import trio

    if argv[:1] == ["blast"]:
        trio.run(_blast_receiver)
        return 0
    if argv[:1] == ["rmsec"] and len(argv) == 5:
        trio.run(_rmsec_receiver, bytes.fromhex(argv[1]), float(argv[2]), int(argv[3]), int(argv[4]))
        return 0
    print(f"unknown worker {argv!r}", file=sys.stderr)
    return 2


class Worker:
    """A child process speaking JSON lines; killed on exit if it is still running."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "rmsec.bench.transport", "_worker", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(timeout=30)
            raise RuntimeError(f"worker exited with status {code} before reporting")
        record: dict[str, Any] = json.loads(line)
        return record

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


# ====================================================================== UDP part: runs


def _rates(reports: list[dict[str, Any]], start: float) -> list[float]:
    """MB/s each receiver got, from the sender's first datagram to its own last arrival.

    ``time.monotonic`` is one system-wide clock on Linux, so the parent's start and the
    workers' arrival times compare directly; measuring from the sender's start (rather than
    the receiver's first arrival) keeps a full socket buffer from flattering short runs.
    """
    return [r["bytes"] / (r["last_at"] - start) / 1e6 for r in reports if r["last_at"] > start]


def blast(receivers: int, total_bytes: int, progress: Progress) -> dict[str, Any]:
    """Raw unreliable UDP: ``total_bytes`` to each receiver in 1200-byte datagrams, round-robin."""
    workers = [Worker("blast") for _ in range(receivers)]
    try:
        ports = [w.read()["port"] for w in workers]
        count = max(1, total_bytes // PAYLOAD)
        payload = bytes(PAYLOAD)
        targets = [("127.0.0.1", port) for port in ports]
        progress(f"blast: {count:,} x {PAYLOAD} B to each of {receivers} receiver(s)")
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, stopwatch() as elapsed:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            send = sock.sendto
            for _ in range(count):
                for addr in targets:
                    try:  # noqa: SIM105 - hot loop: a bare try costs less than suppress()
                        send(payload, addr)
                    except OSError:  # ENOBUFS on an overloaded loopback: a loss like any other
                        pass
            time.sleep(0.2)
            for _ in range(END_COPIES):
                for addr in targets:
                    send(END_MARKER, addr)
                time.sleep(0.002)
        reports = [w.read() for w in workers]
    finally:
        for w in workers:
            w.close()
    rates = _rates(reports, start)
    delivered = sum(r["packets"] for r in reports) / (count * receivers)
    return {
        "receivers": receivers,
        "datagrams_per_receiver": count,
        "send_seconds": elapsed[0],
        "delivered_fraction": delivered,
        "per_receiver_mb_s": sum(rates) / len(rates) if rates else 0.0,
        "aggregate_mb_s": sum(rates),
    }


def rmsec_goodput(
    receivers: int,
    total_bytes: int,
    loss: float,
    seed: int,
    progress: Progress,
    *,
    slow_receiver: SlowReceiverPolicy = "block",
) -> dict[str, Any]:
    """Send ``total_bytes`` in 1200-byte messages through rmsec over UDP; time it.

    ``slow_receiver`` is the transport's policy for a member that falls behind: a goodput
    figure means "everyone got everything", so the benchmark defaults to ``block``.
    """
    import trio

    from rmsec.transport import TransportConfig

    count = max(1, total_bytes // PAYLOAD)
    expect = count * PAYLOAD
    result: dict[str, Any] = {
        "receivers": receivers, "loss": loss, "messages": count, "slow_receiver": slow_receiver,
    }

    async def sender() -> None:
        import rmsec
        import rmsec.io

        network = rmsec.io.udp(host="127.0.0.1", seed=seed)
        payloads = [i.to_bytes(8, "big") + bytes(PAYLOAD - 8) for i in range(count)]
        digest = hashlib.sha256(b"".join(payloads)).hexdigest()
        workers: list[Worker] = []
        try:
            config = TransportConfig(slow_receiver=slow_receiver)
            async with rmsec.open_sender(network=network, config=config) as tx:
                announcement: bytes = tx.announcement
                for k in range(receivers):
                    workers.append(Worker("rmsec", announcement.hex(), repr(loss), str(seed + k), str(expect)))
                for w in workers:
                    await trio.to_thread.run_sync(w.read)  # {"ready": true}: bound into the tree
                progress(f"rmsec: {count:,} x {PAYLOAD} B to {receivers} receiver(s), loss {loss:.0%}")
                start = time.monotonic()
                for payload in payloads:
                    await tx.send(payload)
                queued = time.monotonic()
            confirmed = time.monotonic()
            reports = [await trio.to_thread.run_sync(w.read) for w in workers]
            result.update(
                {
                    "queue_seconds": queued - start,
                    "confirm_seconds": confirmed - start,
                    "sender_mb_s": expect / (confirmed - start) / 1e6,
                    "all_ok": all(r["bytes"] == expect and r["digest"] == digest for r in reports),
                    "failures": [r["failure"] for r in reports if r.get("failure")],
                    "per_receiver_mb_s": sum(_rates(reports, start)) / max(1, len(reports)),
                    "sender_stats": {k: v for k, v in tx.stats().items() if isinstance(v, int)},
                    "receiver_stats": [r["stats"] for r in reports],
                }
            )
        finally:
            for w in workers:
                w.close()

    trio.run(sender)
    return result


def run_udp(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for receivers in args.fanouts:
        ceiling = blast(receivers, args.bytes, progress)
        progress(f"blast: {ceiling['per_receiver_mb_s']:.1f} MB/s per receiver")
        rows.append({"kind": "blast", **ceiling})
        for loss in args.udp_loss:
            try:
                figures = rmsec_goodput(
                    receivers, args.bytes, loss, args.seed, progress, slow_receiver=args.slow_receiver
                )
            except Exception as exc:  # one failed configuration must not lose the others
                figures = {"receivers": receivers, "loss": loss, "error": repr(exc)}
            if "per_receiver_mb_s" in figures and ceiling["per_receiver_mb_s"]:
                figures["ratio_to_blast"] = figures["per_receiver_mb_s"] / ceiling["per_receiver_mb_s"]
            progress(f"rmsec: {json.dumps({k: v for k, v in figures.items() if not k.endswith('stats')})}")
            rows.append({"kind": "rmsec", **figures})
    return {"bytes_per_receiver": args.bytes, "payload": PAYLOAD, "runs": rows}


# ====================================================================== charts and main


def charts(result: dict[str, Any]) -> list[Panel]:
    panels: list[Panel] = []
    sim = result.get("simulator")
    if sim:
        runs = sim["runs"]
        panels.append(
            Panel(
                "Control packets at the sender", "receivers", "per 1000 data packets",
                {"sender": per_size(runs, "control_at_sender_per_1000_data")}, logx=True,
            )
        )
        panels.append(
            Panel(
                "Repairs", "receivers", "ratio",
                {
                    "share served by heads": per_size(runs, "head_repair_share"),
                    "retransmissions per loss": per_size(runs, "retransmissions_per_loss"),
                },
                logx=True,
            )
        )
        panels.append(
            Panel("Simulator wall time", "receivers", "seconds",
                  {"wall": per_size(runs, "wall_s")}, logx=True, logy=True, target=120.0)
        )
    udp = result.get("udp")
    if udp:
        series: dict[str, list[tuple[float, float]]] = {}
        for row in udp["runs"]:
            if row["kind"] == "blast":
                for loss in (0.0, 0.01, 0.05):
                    series.setdefault(f"raw blast, {row['receivers']} rx", []).append(
                        (100 * loss, row["per_receiver_mb_s"])
                    )
            elif "per_receiver_mb_s" in row:
                series.setdefault(f"rmsec, {row['receivers']} rx", []).append(
                    (100 * row["loss"], row["per_receiver_mb_s"])
                )
        panels.append(Panel("Goodput over UDP (127.0.0.1)", "loss %", "MB/s per receiver", series, kind="bar"))
    return panels


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser("rmsec bench transport", "transport scaling (simulator) and UDP goodput",
                          default_plot="bench-transport.png")
    parser.add_argument("--sim-only", action="store_true", help="skip the UDP part")
    parser.add_argument("--udp-only", action="store_true", help="skip the simulator part")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="receivers per simulator run")
    parser.add_argument("--messages", type=int, default=None, help="messages per simulator run")
    parser.add_argument("--message-size", type=int, default=1000)
    parser.add_argument("--sim-loss", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="simulate each size once per seed (default: --seed only)")
    parser.add_argument("--unicast", action="store_true", help="simulate the unicast overlay instead of multicast")
    parser.add_argument("--bytes", type=int, default=None, help="bytes to each UDP receiver (default 100 MB)")
    parser.add_argument("--fanouts", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--udp-loss", type=float, nargs="+", default=[0.0, 0.01, 0.05])
    parser.add_argument("--slow-receiver", choices=("block", "prune", "skip"), default="block",
                        help="transport policy for laggards in the UDP runs (default block: goodput "
                             "means everyone got everything)")
    parser.add_argument("--from-json", metavar="RESULT", default=None,
                        help="run nothing: re-draw the charts of an earlier result (with --plot)")
    return parser


def main(argv: list[str]) -> int:
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as source:
            saved: dict[str, Any] = json.load(source)
        written = plot(args.plot or "bench-transport.png", charts(saved), title="rmsec bench transport")
        return 0 if written else 1
    args.sizes = args.sizes or ([50, 200] if args.quick else [100, 1000, 10000])
    args.messages = args.messages or (200 if args.quick else 1000)
    args.bytes = args.bytes or (2_000_000 if args.quick else 100_000_000)
    progress = Progress(enabled=not args.quiet)
    result: dict[str, Any] = {"benchmark": "transport", "environment": environment(), "quick": args.quick}
    with stopwatch() as elapsed:
        if not args.udp_only:
            result["simulator"] = run_simulator(args, progress)
        if not args.sim_only:
            result["udp"] = run_udp(args, progress)
    result["wall_s"] = elapsed[0]
    if args.plot:
        written = plot(args.plot, charts(result), title="rmsec bench transport", progress=progress)
        result["plot"] = written
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
