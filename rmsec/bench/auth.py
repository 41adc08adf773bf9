"""``rmsec bench auth``: source-authentication cost, overhead and loss tolerance.

For every method, in one run and on the same 1 KiB payloads (a 28-byte header plus the
AES-128-GCM ciphertext, the way the security layer frames a message):

``sender_pps`` / ``receiver_pps``
    packets per CPU-second (process time, so other jobs on the machine do not count) protected (AEAD encrypt + the method's signer) and verified (the
    method's verifier, including the auth packets it needs, + AEAD decrypt of what it
    releases), best of ``--repeat`` passes;
``floor``
    the same loops with the method's bare primitives on the same bytes instead of the plugin
    (AEAD + Ed25519 sign / verify; AEAD + HMAC; AEAD + Merkle tree + one signature per batch;
    ...): what the method could reach with no encoding, buffering or bookkeeping.  Target:
    each method at least 0.7 x its floor, both sides;
``bytes_per_packet``
    the steady-state (largest) trailer plus auth-packet bytes per data packet;
``verify_us`` and ``release_delay_ms``
    CPU time per verify call, and how long (in stream time, packets sent at ``--rate``)
    a packet waits between arrival and release (TESLA: the disclosure delay; EMSS: the next
    signature packet; batchsig: the sender holds a packet up to its batch deadline instead,
    ``sender_hold_ms``);
``verifiable``
    the fraction of *received* packets that verify at 0, 5 and 20 % random loss of data and
    auth packets alike (seeded), beside the fraction each method guarantees.

Targets also checked: ``batchsig``, ``emss`` and ``tesla`` receivers verify at least 10 x as
many packets per second as per-packet Ed25519 (the ``ed25519`` method's receiver rate).
``multimac`` also reports its cost (keys, MACs per packet) for its w and q.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import rmsec.plugins
from rmsec.bench.common import Progress, bench_parser, emit, environment, stopwatch, target
from rmsec.errors import AuthenticationFailed
from rmsec.interfaces import Signer, SourceAuth, Verifier
from rmsec.security import authcrypto
from rmsec.wire.codec import loads_untrusted

METHODS = ["groupmac", "ed25519", "ecdsa-p256", "batchsig", "emss", "tesla", "multimac"]
#: Options benchmarked: the defaults, except TESLA: a shared clock (one process) and 5 ms
#: intervals with a 20 ms RTT bound (d = 9), so a timed run of 0.2 s of stream at 20,000
#: packets/s reaches the steady state where trailers disclose keys.
OPTIONS: dict[str, dict[str, Any]] = {
    "tesla": {"synchronized_clocks": True, "interval": 0.005, "rtt": 0.02},
}
FAST_RECEIVERS = ("batchsig", "emss", "tesla")
SENDER = b"benchsnd"
HEADER_LEN = 28
PAYLOAD = 1024

Event = tuple[str, float, bytes, bytes]  # ("data" | "auth", time, packet or data, trailer)

#: Timed loops read this process's CPU time, not the wall clock: figures are what one core
#: does, and other jobs on a shared machine (this one has two cores for several helpers)
#: do not leak into them.
cpu_clock = time.process_time


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """Deterministic ``rng`` so figures are reproducible run to run (bench only)."""
    counter = [0]

    def rng(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(b"bench %d %d" % (seed, counter[0])).digest()
        return bytes(out[:n])

    return rng


class Workload:
    """The same AEAD-framed packets for every method (and every floor)."""

    def __init__(self, count: int, seed: int) -> None:
        rng = seeded_rng(seed)
        self.aead = AESGCM(rng(16))
        self.iv = rng(12)
        self.payloads = [rng(PAYLOAD) for _ in range(min(count, 64))]
        self.count = count
        self.headers = [b"\x01\x01\x01\x01" + bytes(4) + SENDER + i.to_bytes(8, "big") + bytes(4)
                        for i in range(count)]

    def nonce(self, i: int) -> bytes:
        return self.iv[:4] + (int.from_bytes(self.iv[4:], "big") ^ i).to_bytes(8, "big")

    def seal(self, i: int) -> bytes:
        header = self.headers[i]
        return header + self.aead.encrypt(self.nonce(i), self.payloads[i % 64], header)

    def open(self, i: int, packet: bytes) -> bytes:
        return self.aead.decrypt(self.nonce(i), packet[HEADER_LEN:], packet[:HEADER_LEN])


def make(method: str, seed: int) -> SourceAuth:
    cls = rmsec.plugins.get_source_auth(method)
    return cls(rng=seeded_rng(seed), options=OPTIONS.get(method, {}))


def index_of(packet: bytes) -> int:
    return int.from_bytes(packet[16:24], "big")


# --------------------------------------------------------------------------- method runs


def run_sender(signer: Signer, work: Workload, rate: float) -> tuple[float, list[Event]]:
    """Protect every packet; returns CPU seconds and the stream as the network sees it.

    The timed loop keeps only what the receiver run needs (trailers, and auth packets with
    the index they follow) and builds the event list afterwards: tuple building for the
    bench's own records is no part of the method's cost, and the floor loops have none.
    """
    submit = getattr(signer, "submit", None)
    ready = getattr(signer, "ready", None)
    seal, protect, pending = work.seal, signer.protect, signer.pending
    count = work.count
    packets: list[bytes] = []
    trailers: list[bytes] = []
    deferred: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    extra: list[tuple[int, list[bytes]]] = []
    start = cpu_clock()
    now = 0.0
    if submit is not None and ready is not None:
        for i in range(count):
            now = i / rate
            submit(seal(i), now)
            out = ready(now)
            if out:
                deferred.append((i, out))
            more = pending(now)
            if more:
                extra.append((i, more))
    else:
        keep_packet, keep_trailer = packets.append, trailers.append
        for i in range(count):
            now = i / rate
            packet = seal(i)
            keep_packet(packet)
            keep_trailer(protect(packet, now))
            more = pending(now)
            if more:
                extra.append((i, more))
    tail: list[Event] = []
    for step in range(1, 200):  # flush batches, closing signatures, last disclosures
        later = now + step * 0.01
        flush = getattr(signer, "flush", None)
        if flush is not None:
            tail.extend(("data", later, p, t) for p, t in flush(later))
        tail.extend(("auth", later, a, b"") for a in pending(later))
        timer = getattr(signer, "get_timer", lambda: None)()
        if timer is None:
            break
    seconds = cpu_clock() - start
    events: list[Event] = []
    batches = dict(deferred)
    auth = dict(extra)
    for i in range(count):
        now = i / rate
        if packets:
            events.append(("data", now, packets[i], trailers[i]))
        events.extend(("data", now, p, t) for p, t in batches.get(i, ()))
        events.extend(("auth", now, a, b"") for a in auth.get(i, ()))
    return seconds, events + tail


def run_receiver(verifier: Verifier, work: Workload, events: list[Event]) -> tuple[float, int]:
    """Verify the whole stream (and decrypt what is released); CPU seconds, packets out."""
    verify, receive_auth, open_ = verifier.verify, verifier.receive_auth_packet, work.open
    released = 0
    start = cpu_clock()
    for kind, now, a, b in events:
        out = verify(a, b, now) if kind == "data" else receive_auth(a, now)
        if out:  # most calls of the delayed methods release nothing
            released += len(out)
            for v in out:
                open_(index_of(v.packet), v.packet)
    return cpu_clock() - start, released


def lossy_run(
    auth: SourceAuth, params: bytes, material: bytes, events: list[Event], loss: float, seed: int
) -> dict[str, Any]:
    """Replay the stream with seeded loss: verifiable fraction and release delays."""
    verifier = auth.verifier(params, material, now=0.0)
    drop = random.Random(seed)
    arrived: dict[bytes, float] = {}
    delays: list[float] = []
    rejected = 0
    for kind, now, a, b in events:
        if drop.random() < loss:
            continue
        try:
            if kind == "data":
                arrived[a] = now
                out = verifier.verify(a, b, now)
            else:
                out = verifier.receive_auth_packet(a, now)
        except AuthenticationFailed:
            rejected += 1
            continue
        delays.extend(now - arrived[v.packet] for v in out)
    delays.sort()
    return {
        "loss": loss,
        "received": len(arrived),
        "verified": len(delays),
        "fraction": len(delays) / len(arrived) if arrived else None,
        "rejected": rejected,
        "release_delay_ms": {
            "mean": 1000 * sum(delays) / len(delays) if delays else None,
            "p99": 1000 * delays[int(0.99 * (len(delays) - 1))] if delays else None,
            "max": 1000 * delays[-1] if delays else None,
        },
    }


# ---------------------------------------------------------------------------------- floors


def floor_loops(
    method: str, auth: SourceAuth, signer: Signer, work: Workload, events: list[Event],
    seed: int,
) -> tuple[Callable[[], float], Callable[[], float]]:
    """The bare-primitive sender and receiver loops for ``method`` (each returns seconds)."""
    count, seal, open_ = work.count, work.seal, work.open
    data = [(a, b) for kind, _, a, b in events if kind == "data"]
    if method in ("ed25519", "ecdsa-p256"):
        alg = authcrypto.SIGNATURES[method]
        key = alg.generate(seeded_rng(seed))
        public = key.verifying_key()
        prefix = authcrypto.signed_message(b"rmsec persig v1\x00", SENDER)
        signatures = [key.sign(prefix + p) for p, _ in data]

        def sender() -> float:
            start = cpu_clock()
            for i in range(count):
                key.sign(prefix + seal(i))
            return cpu_clock() - start

        def receiver() -> float:
            start = cpu_clock()
            for (p, _), s in zip(data, signatures, strict=True):
                public.verify(s, prefix + p)
                open_(index_of(p), p)
            return cpu_clock() - start

        return sender, receiver
    if method in ("groupmac", "tesla"):
        # HMAC-SHA256 with the key schedule done once, as both methods do (one key per
        # stream for groupmac, per interval for TESLA).
        mac = authcrypto.MacKey(seeded_rng(seed)(32))
        mac_len = 16

        def sender() -> float:
            start = cpu_clock()
            for i in range(count):
                mac.tag(seal(i), mac_len)
            return cpu_clock() - start

        def receiver() -> float:
            start = cpu_clock()
            tag = bytes(mac_len)
            for p, _ in data:
                mac.matches(p, tag)
                open_(index_of(p), p)
            return cpu_clock() - start

        return sender, receiver
    if method == "multimac":
        keys = getattr(signer, "_keys")  # noqa: B009 - the bench measures the same keys
        bank = authcrypto.BitMacBank(keys, getattr(auth, "mac_bits"))  # noqa: B009
        bits = getattr(auth, "mac_bits")  # noqa: B009
        held = authcrypto.BitMacBank(keys[: max(1, len(keys) // (getattr(auth, "w") + 1))], bits)  # noqa: B009

        def sender() -> float:
            start = cpu_clock()
            for i in range(count):
                bank.macs(authcrypto.multimac_digest(SENDER, seal(i)))
            return cpu_clock() - start

        def receiver() -> float:
            start = cpu_clock()
            for p, _ in data:
                held.macs(authcrypto.multimac_digest(SENDER, p))
                open_(index_of(p), p)
            return cpu_clock() - start

        return sender, receiver
    alg = getattr(auth, "alg")  # noqa: B009 - the method's own signature algorithm
    key = alg.generate(seeded_rng(seed))
    public = key.verifying_key()
    if method == "batchsig":
        batch, hash_len = getattr(auth, "batch"), getattr(auth, "hash_len")  # noqa: B009
        decoded = [loads_untrusted(t) for _, t in data]
        sig = key.sign(b"root")

        def sender() -> float:
            start = cpu_clock()
            leaves: list[bytes] = []
            for i in range(count):
                leaves.append(authcrypto.merkle_leaf(seal(i), hash_len))
                if len(leaves) == batch:
                    key.sign(authcrypto.MerkleBatch(leaves, hash_len).root)
                    leaves = []
            return cpu_clock() - start

        def receiver() -> float:
            start = cpu_clock()
            for (p, _), (_, index, n, path, _) in zip(data, decoded, strict=True):
                leaf = authcrypto.merkle_leaf(p, hash_len)
                authcrypto.merkle_root_from_path(leaf, index, n, path, hash_len)
                if index == 0:
                    public.verify(sig, b"root")
                open_(index_of(p), p)
            return cpu_clock() - start

        return sender, receiver
    if method == "emss":  # one short hash per packet, one signature per `every` packets
        every, hash_len = getattr(auth, "every"), getattr(auth, "hash_len")  # noqa: B009
        # H_n covers the domain tag, the packet's trailer and the packet: the same bytes.
        links = [b"rmsec emss v2\x00" + t for _, t in data]
        m = len(getattr(auth, "offsets"))  # noqa: B009
        tail = b"t" * (8 + m * hash_len)  # as long as what a signature packet signs, t + hashes
        sig = key.sign(tail)

        def sender() -> float:
            start = cpu_clock()
            for i in range(count):
                authcrypto.prefixed_hash(links[i], seal(i), hash_len)
                if i % every == every - 1:
                    key.sign(tail)
            return cpu_clock() - start

        def receiver() -> float:
            start = cpu_clock()
            for i, (p, _) in enumerate(data):
                authcrypto.prefixed_hash(links[i], p, hash_len)
                if i % every == every - 1:
                    public.verify(sig, tail)
                open_(index_of(p), p)
            return cpu_clock() - start

        return sender, receiver
    raise ValueError(f"no floor for {method}")


def ed25519_reference(work: Workload, events: list[Event], seed: int) -> Callable[[], float]:
    """Per-packet Ed25519 verification + AEAD decrypt on (a sample of) the same packets,
    returning seconds per packet: timed beside each fast method, so their ratio does not
    depend on what else the machine did between two methods' runs."""
    alg = authcrypto.SIGNATURES["ed25519"]
    key = alg.generate(seeded_rng(seed))
    public = key.verifying_key()
    sample = [a for kind, _, a, _ in events if kind == "data"][:300]
    signed = [(p, key.sign(p)) for p in sample]
    open_ = work.open

    def run() -> float:
        start = cpu_clock()
        for p, signature in signed:
            public.verify(signature, p)
            open_(index_of(p), p)
        return (cpu_clock() - start) / len(signed)

    return run


# ------------------------------------------------------------------------------- one method


def bench_method(method: str, args: argparse.Namespace, work: Workload, progress: Progress) -> dict[str, Any]:
    auth = make(method, args.seed)
    best_send = best_recv = best_floor_send = best_floor_recv = best_ref = float("inf")
    floors: tuple[Callable[[], float], Callable[[], float]] | None = None
    reference: Callable[[], float] | None = None
    for _ in range(args.repeat):
        # Method and floor passes alternate, best of each kept: on a shared machine both
        # then see the same background load.
        signer = auth.signer(sender_id=SENDER, now=0.0)
        # A receiver joins before the stream starts: params as they are then.
        params, material = signer.params, signer.material_for(b"receiver")
        seconds, events = run_sender(signer, work, args.rate)
        best_send = min(best_send, seconds)
        if floors is None:
            floors = floor_loops(method, auth, signer, work, events, args.seed)
        best_floor_send = min(best_floor_send, floors[0]())
        verifier = auth.verifier(params, material, now=0.0)
        seconds, released = run_receiver(verifier, work, events)
        if released != work.count:
            raise AssertionError(f"{method}: {released} of {work.count} packets verified")
        best_recv = min(best_recv, seconds)
        best_floor_recv = min(best_floor_recv, floors[1]())
        if method in FAST_RECEIVERS:
            reference = reference or ed25519_reference(work, events, args.seed)
            best_ref = min(best_ref, reference())
    fs, fr = best_floor_send, best_floor_recv
    data_events = [e for e in events if e[0] == "data"]
    trailer_bytes = sum(len(e[3]) for e in data_events)
    auth_bytes = sum(len(e[2]) for e in events if e[0] == "auth")
    sender_pps, receiver_pps = work.count / best_send, work.count / best_recv
    floor_sender_pps, floor_receiver_pps = work.count / fs, work.count / fr
    result: dict[str, Any] = {
        "options": {**auth.options},
        "sender_pps": sender_pps,
        "receiver_pps": receiver_pps,
        "floor": {"sender_pps": floor_sender_pps, "receiver_pps": floor_receiver_pps},
        "sender_vs_floor": target(sender_pps / floor_sender_pps, ">=", 0.7, "x"),
        "receiver_vs_floor": target(receiver_pps / floor_receiver_pps, ">=", 0.7, "x"),
        # Steady state: the largest trailer (early EMSS / TESLA trailers are shorter, before
        # the chain fills or keys start being disclosed) plus auth packets per data packet.
        "bytes_per_packet": max(len(e[3]) for e in data_events) + auth_bytes / work.count,
        "trailer_bytes": {
            "mean": trailer_bytes / len(data_events),
            "max": max(len(e[3]) for e in data_events),
        },
        "auth_packets_per_1000": 1000 * sum(1 for e in events if e[0] == "auth") / work.count,
        "verify_us": 1e6 * best_recv / work.count,
        "non_repudiable": auth.non_repudiable,
        "guaranteed_fraction": getattr(auth, "guaranteed_fraction", 1.0),
        "verifiable": [],
    }
    if method in FAST_RECEIVERS:
        ref_pps = 1 / best_ref
        result["ed25519_reference_pps"] = ref_pps
        result["receiver_vs_ed25519"] = target(receiver_pps / ref_pps, ">=", 10, "x")
    if method == "batchsig":
        result["sender_hold_ms"] = {"max": 1000 * getattr(auth, "deadline")}  # noqa: B009
    if method == "emss":
        result["design_loss"] = getattr(auth, "loss")  # noqa: B009
        result["offsets"] = list(getattr(auth, "offsets"))  # noqa: B009
    if method == "tesla":
        result["disclosure_delay_intervals"] = getattr(auth, "lag")  # noqa: B009
    if method == "multimac":
        result["cost"] = getattr(auth, "cost")  # noqa: B009
    for loss in (0.0, 0.05, 0.2):
        result["verifiable"].append(lossy_run(auth, params, material, events, loss, args.seed))
    progress(
        f"{method:11s} send {sender_pps:8.0f}/s ({sender_pps / floor_sender_pps:.2f} floor)  "
        f"verify {receiver_pps:8.0f}/s ({receiver_pps / floor_receiver_pps:.2f} floor)  "
        f"{result['bytes_per_packet']:.0f} B/pkt"
        + (f"  {result['receiver_vs_ed25519']['value']:.1f}x ed25519" if method in FAST_RECEIVERS else "")
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = bench_parser(
        "rmsec bench auth", "source-authentication throughput, overhead and loss tolerance",
        default_plot="bench-auth.png",
    )
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--packets", type=int, default=None, help="packets per timed pass")
    parser.add_argument("--repeat", type=int, default=None, help="timed passes (best kept)")
    parser.add_argument(
        "--rate", type=float, default=20000.0,
        help="stream rate (packets/s) setting each packet's time: batches, signatures and "
        "disclosures fall as they would for a sender this fast",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.packets = args.packets or (400 if args.quick else 4000)
    args.repeat = args.repeat or (1 if args.quick else 5)
    progress = Progress(enabled=not args.quiet)
    work = Workload(max(args.packets, 1), args.seed)
    result: dict[str, Any] = {
        "benchmark": "auth",
        "environment": environment(),
        "quick": args.quick,
        "payload_bytes": PAYLOAD,
        "packets": args.packets,
        "rate_pps": args.rate,
        "methods": {},
    }
    progress(f"{len(args.methods)} methods, {args.packets} packets x {args.repeat} passes")
    with stopwatch() as elapsed:
        for method in args.methods:
            result["methods"][method] = bench_method(method, args, work, progress)
    methods = result["methods"]
    if "ed25519" in methods:
        # Against the ed25519 method measured in its own turn (load may differ meanwhile);
        # the target itself is judged on receiver_vs_ed25519, timed beside each method.
        base = methods["ed25519"]["receiver_pps"]
        result["fast_receivers_vs_ed25519_method"] = {
            m: methods[m]["receiver_pps"] / base for m in FAST_RECEIVERS if m in methods
        }
    checks = [t for m in methods.values() for t in (m["sender_vs_floor"], m["receiver_vs_floor"])]
    checks += [m["receiver_vs_ed25519"] for m in methods.values() if "receiver_vs_ed25519" in m]
    result["targets"] = {
        f"{name} {key}": m[key]["met"]
        for name, m in methods.items()
        for key in ("sender_vs_floor", "receiver_vs_floor", "receiver_vs_ed25519")
        if key in m
    }
    result["targets_met"] = all(t["met"] for t in checks)
    result["wall_s"] = elapsed[0]
    if args.plot:
        result["plot"] = draw(args.plot, result, progress)
    emit(result)
    return 0


def draw(path: str, result: dict[str, Any], progress: Progress) -> str | None:
    """Four panels with method names on the axis (common.plot wants numeric x)."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        progress("matplotlib is not installed (pip install 'rmsec[plot]'); no chart written")
        return None
    methods = result["methods"]
    names = list(methods)
    xs = list(range(len(names)))
    figure, axes = plt.subplots(2, 2, figsize=(13, 8))
    for ax, side in ((axes[0][0], "sender"), (axes[0][1], "receiver")):
        ax.bar([x - 0.2 for x in xs], [methods[n][f"{side}_pps"] for n in names], 0.4, label="method")
        ax.bar([x + 0.2 for x in xs], [methods[n]["floor"][f"{side}_pps"] for n in names], 0.4,
               label="bare primitive floor")
        ax.set_yscale("log")
        ax.set_title(f"{side}: packets/s (1 KiB, AES-GCM included)")
        if side == "receiver" and "ed25519" in methods:
            ax.axhline(10 * methods["ed25519"]["receiver_pps"], linestyle="--", color="grey",
                       label="10 x ed25519")
    ax = axes[1][0]
    ax.bar(xs, [methods[n]["bytes_per_packet"] for n in names])
    ax.set_title("bytes per packet (trailer + auth packets)")
    ax = axes[1][1]
    for k, loss in enumerate((0.0, 0.05, 0.2)):
        ax.bar([x + (k - 1) * 0.27 for x in xs],
               [methods[n]["verifiable"][k]["fraction"] or 0 for n in names], 0.27,
               label=f"{loss:.0%} loss")
    ax.set_ylim(0.9, 1.001)
    ax.set_title("fraction of received packets verified")
    for row in axes:
        for a in row:
            a.set_xticks(xs, names, rotation=20)
            a.grid(True, axis="y", alpha=0.3)
            if a.get_legend_handles_labels()[0]:
                a.legend(fontsize="small")
    figure.suptitle("rmsec bench auth")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
