"""``rmsec bench security``: the six figures the original requirements ask of a secure
multicast system (DESIGN.md §1), for every built-in combination of key management and source
authentication, measured on the real sans-IO machines (:class:`~rmsec.security.controller.
Controller`, :class:`~rmsec.security.member.Member`, and the packet protection under them),
with control messages moved by hand between them, as TLS would carry them, and no network.

For each combination, a group of ``--members`` receivers plus one sender (default 1,000):

``setup``
    set-up time: from an empty controller to every member welcomed with its keys and holding
    the sender's source-auth parameters (and its own material, for ``multimac``): the whole
    registration, one batched epoch for all joins, the sender's ADD_SENDER and the material
    relayed to every member.  ``total_s`` is every machine's CPU time, ``controller_s`` the
    controller's share, ``member_us`` the mean per member;
``leave`` / ``join``
    rekey cost of one member leaving / joining (median of ``--repeat``): the controller's CPU
    time from the LEAVE (REGISTER) to the signed rekey, the rekey's bytes on the rekey stream
    (the scheme's payload, the envelope and the controller's Ed25519 signature), the
    welcome's bytes for a joiner, and the time a current member takes to verify and apply
    the rekey (median over sampled members);
``packet``
    per data packet of ``PAYLOAD`` (1 KiB) bytes: the sender's time to encrypt and
    authenticate (``Member.protect``, including the extra packets EMSS / TESLA / batchsig
    emit), a receiver's time to verify and decrypt (``Member.receive_frame`` over every frame,
    per message delivered), and the bytes of overhead per message (headers, AEAD tag,
    trailers and the extra packets, amortised);
``keys``
    key lengths: the AEAD traffic key, the group secret, the member's key-management material
    in its welcome, the controller's rekey-signing key and signature, the sender's public
    source-auth parameters and per-member material, the data-packet trailer.

Timings are process CPU time (``time.process_time``), so other jobs on a shared machine do
not count.  Results go to stdout as one JSON document; ``--markdown FILE`` also writes the
summary table of docs/bench-security.md.  Randomness is ``os.urandom`` (a benchmark, not
sans-IO code).
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import rmsec.plugins
from rmsec.bench.auth import OPTIONS as AUTH_OPTIONS
from rmsec.bench.common import Progress, bench_parser, emit, environment
from rmsec.bench.keymgmt import DEFAULT_OPTIONS as KM_OPTIONS
from rmsec.config import GroupConfig, RekeyPolicy
from rmsec.errors import RmsecError
from rmsec.security import events as sev
from rmsec.security import messages as msg
from rmsec.security import sigkeys
from rmsec.security.aead import aead_algorithm
from rmsec.security.controller import Controller
from rmsec.security.member import Member, State

SCHEMES = ["flat", "lkh", "oft", "regions"]
METHODS = ["groupmac", "ed25519", "ecdsa-p256", "batchsig", "emss", "tesla", "multimac"]
PAYLOAD = 1024
#: Messages per second of stream time (TESLA and EMSS release by time and by count).
RATE = 1000.0
SESSION = b"benchsec"
AEAD = "aes-128-gcm"
#: Members whose rekey application is timed (the others' cost is the same).
SAMPLED = 5
#: Ed25519, the controller's rekey signatures.
CONTROLLER_KEY_BYTES, CONTROLLER_SIGNATURE_BYTES = 32, 64

cpu_clock = time.process_time
T = TypeVar("T")


class Group:
    """One controller, ``n`` receivers and a sender, wired by hand; CPU time per machine."""

    def __init__(self, scheme: str, method: str, n: int) -> None:
        self.config = GroupConfig(
            group="bench", key_management=scheme,
            key_management_options=KM_OPTIONS.get(scheme, {}), source_auth=method,
            source_auth_options=AUTH_OPTIONS.get(method, {}), access_policy="open",
            rekey=RekeyPolicy("batch", interval=3600.0), aead=AEAD,
        )
        self.now = 0.0
        self.controller_time = 0.0
        self.signing_key = sigkeys.signing_key_from_seed(os.urandom(sigkeys.SEED_LEN))
        self.controller = self._ctl(lambda: Controller(
            self.config, signing_key=self.signing_key, rng=os.urandom, now=self.now,
            session=SESSION, rekey_stream=1, bootstrap=(("127.0.0.1", 4000),),
        ))
        self.members: dict[bytes, Member] = {}
        self.conn: dict[bytes, int] = {}
        self.by_conn: dict[int, Member] = {}
        self.welcome_bytes: dict[bytes, int] = {}
        self.rekeys: list[bytes] = []
        self.delivered: dict[bytes, int] = {}
        self.n = n
        self._next_conn = 0

    def _ctl(self, call: Callable[[], T]) -> T:
        start = cpu_clock()
        try:
            return call()
        finally:
            self.controller_time += cpu_clock() - start

    def register(self, name: bytes, roles: int = msg.Roles.RECEIVE) -> Member:
        self._next_conn += 1
        conn = self._next_conn
        member = Member(member_id=name, node_id=os.urandom(8), rng=os.urandom, now=self.now,
                        roles=roles, controller_key=sigkeys.public_key(self.signing_key))
        self.members[name], self.conn[name], self.by_conn[conn] = member, conn, member
        self.delivered[name] = 0
        self._ctl(lambda: self.controller.connection_made(conn, None, self.now))
        member.start(self.now)
        return member

    def pump(self, rounds: int = 100) -> None:
        """Move control messages both ways until nothing moves; keep the rekeys aside."""
        controller = self.controller
        for _ in range(rounds):
            moved = False
            for name, member in self.members.items():
                for data in member.control_to_send():
                    moved = True
                    self._ctl(functools.partial(
                        controller.receive_control, self.conn[name], data, self.now))
            for conn, out in self._ctl(controller.control_to_send):
                moved = True
                target = self.by_conn.get(conn)
                if out is None or target is None:
                    continue
                if target.state == State.REGISTERING:  # its first message: the welcome
                    self.welcome_bytes[target.member_id] = len(out)
                target.receive_control(out, self.now)
            self.rekeys.extend(self._ctl(controller.rekeys_to_send))
            while self._ctl(controller.next_event) is not None:
                pass
            for name, member in self.members.items():
                while (event := member.next_event()) is not None:
                    if isinstance(event, sev.Delivered):
                        self.delivered[name] += 1
            if not moved:
                return
        raise RuntimeError("the group did not settle")

    def rekey_now(self) -> list[bytes]:
        """Apply pending changes as one epoch; the new rekey envelopes."""
        before = len(self.rekeys)
        self._ctl(lambda: self.controller.rekey_now(self.now))
        self.pump()
        return self.rekeys[before:]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _apply(members: Sequence[Member], envelopes: Sequence[bytes], now: float) -> list[float]:
    """Per-member CPU seconds to verify and apply ``envelopes``."""
    times = []
    for member in members:
        start = cpu_clock()
        for envelope in envelopes:
            member.receive_rekey(envelope, now)
        times.append(cpu_clock() - start)
        while member.next_event() is not None:
            pass
    return times


def run_combination(scheme: str, method: str, n: int, packets: int, repeat: int) -> dict[str, Any]:
    """The six figures for one combination (see the module docstring)."""
    start = cpu_clock()
    group = Group(scheme, method, n)
    receivers = [group.register(b"m%06d" % i) for i in range(n)]
    sender = group.register(b"sender", msg.Roles.SEND | msg.Roles.RECEIVE)
    group.pump()
    group.rekey_now()
    sender_id = sender.add_sender(10, group.now)
    group.pump()
    setup_total = cpu_clock() - start
    if any(m.state != State.MEMBER for m in group.members.values()):
        raise RuntimeError("not every member was welcomed")
    knows = sum(1 for m in receivers if sender_id in m.known_senders)
    if knows != n:
        raise RuntimeError(f"only {knows} of {n} members learned the sender")
    setup = {"total_s": setup_total, "controller_s": group.controller_time,
             "member_us": 1e6 * (setup_total - group.controller_time) / (n + 1)}
    sampled = [*receivers[-SAMPLED:], sender]

    leaves: list[dict[str, float]] = []
    for i in range(repeat):
        victim = receivers[i]
        group.controller_time = 0.0
        victim.leave(group.now)
        group.pump()
        envelopes = group.rekey_now()
        leaves.append({"controller_ms": 1e3 * group.controller_time,
                       "rekey_bytes": float(sum(map(len, envelopes))),
                       "member_apply_us": 1e6 * _median(_apply(sampled, envelopes, group.now))})
    joins: list[dict[str, float]] = []
    for i in range(repeat):
        group.controller_time = 0.0
        name = b"j%06d" % i
        start = cpu_clock()
        joiner = group.register(name)
        group.pump()
        envelopes = group.rekey_now()
        total = cpu_clock() - start
        joins.append({"controller_ms": 1e3 * group.controller_time, "total_ms": 1e3 * total,
                      "rekey_bytes": float(sum(map(len, envelopes))),
                      "welcome_bytes": float(group.welcome_bytes.get(name, 0)),
                      "member_apply_us": 1e6 * _median(_apply(sampled, envelopes, group.now))})
        if joiner.state != State.MEMBER:
            raise RuntimeError("the joiner was not welcomed")

    reader = sampled[0]
    if reader.epoch != sender.epoch or reader.epoch != group.controller.epoch:
        raise RuntimeError("sampled members fell behind the controller's epoch")
    payload = os.urandom(PAYLOAD)
    frames: list[tuple[float, bytes]] = []
    t0 = group.now
    start = cpu_clock()
    for i in range(packets):
        now = t0 + i / RATE
        frames.extend((now, f) for f in sender.protect(sender_id, payload, now))
    now = t0 + packets / RATE
    for step in range(1, 400):  # the tail: last disclosures, closing signatures, batches
        later = now + step * 0.005
        frames.extend((later, f) for f in sender.pending_auth(sender_id, later))
    protect_s = cpu_clock() - start
    name = reader.member_id
    group.delivered[name] = 0
    start = cpu_clock()
    for when, frame in frames:
        reader.receive_frame(frame, when)
        while (event := reader.next_event()) is not None:
            if isinstance(event, sev.Delivered):
                group.delivered[name] += 1
    verify_s = cpu_clock() - start
    delivered = group.delivered[name]
    auth = rmsec.plugins.get_source_auth(method)
    protector = sender.protectors[sender_id]
    material = protector.signer.material_for(reader.member_id)
    welcome_km = [len(k) for k in _welcome_material(group, receivers[-SAMPLED:])]
    return {
        "key_management": scheme, "source_auth": method, "members": n,
        "setup": setup,
        "leave": {k: _median([r[k] for r in leaves]) for k in leaves[0]},
        "join": {k: _median([r[k] for r in joins]) for k in joins[0]},
        "packet": {
            "messages": packets, "delivered": delivered, "frames": len(frames),
            "protect_us": 1e6 * protect_s / packets,
            "verify_decrypt_us": 1e6 * verify_s / max(1, delivered),
            "overhead_bytes": (sum(len(f) for _, f in frames) - packets * PAYLOAD) / packets,
            "first_frame_overhead_bytes": len(frames[0][1]) - PAYLOAD,
        },
        "keys": {
            "aead_key_bytes": aead_algorithm(AEAD).key_len,
            "group_secret_bytes": len(group.controller.scheme.group_secret),
            "member_key_material_bytes": _median(welcome_km),
            "controller_key_bytes": CONTROLLER_KEY_BYTES,
            "controller_signature_bytes": CONTROLLER_SIGNATURE_BYTES,
            "source_auth_params_bytes": len(protector.signer.params),
            "source_auth_material_bytes": len(material),
            "auth_class": auth.__name__,
        },
    }


def _welcome_material(group: Group, members: Sequence[Member]) -> list[bytes]:
    return [m.welcome.key_material for m in members if m.welcome is not None]


def markdown(results: Sequence[dict[str, Any]], n: int) -> str:
    """The summary table of docs/bench-security.md."""
    lines = [
        "| key mgmt | source auth | set-up (s) | leave: ctl ms / rekey B / apply µs | "
        "join: ctl ms / rekey B / welcome B | protect µs/pkt | verify+decrypt µs/pkt | "
        "overhead B/pkt | keys: secret / member KM / auth params / auth material B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['key_management']} | {r['source_auth']} | error: {r['error']} "
                         "| | | | | | |")
            continue
        s, lv, j, p, k = r["setup"], r["leave"], r["join"], r["packet"], r["keys"]
        lines.append(
            f"| {r['key_management']} | {r['source_auth']} | {s['total_s']:.2f} | "
            f"{lv['controller_ms']:.2f} / {lv['rekey_bytes']:.0f} / {lv['member_apply_us']:.0f} | "
            f"{j['controller_ms']:.2f} / {j['rekey_bytes']:.0f} / {j['welcome_bytes']:.0f} | "
            f"{p['protect_us']:.1f} | {p['verify_decrypt_us']:.1f} | {p['overhead_bytes']:.1f} | "
            f"{k['group_secret_bytes']} / {k['member_key_material_bytes']:.0f} / "
            f"{k['source_auth_params_bytes']} / {k['source_auth_material_bytes']} |"
        )
    return "\n".join(lines) + f"\n\n(group of {n:,} receivers + 1 sender)\n"


def main(argv: list[str]) -> int:
    parser = bench_parser(
        "rmsec bench security",
        "Set-up, rekey, per-packet and key-length figures for every key-management x "
        "source-auth combination (sans-IO machines, no network).",
        default_plot="bench-security.png",
    )
    parser.add_argument("--members", type=int, default=None, metavar="N",
                        help="receivers in the group (default 1000; 100 with --quick)")
    parser.add_argument("--packets", type=int, default=None, metavar="P",
                        help="data messages timed per combination (default 1000; 40 with --quick)")
    parser.add_argument("--repeat", type=int, default=5, help="leaves and joins timed")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--markdown", metavar="FILE", help="also write the summary table here")
    args = parser.parse_args(argv)
    n = args.members if args.members is not None else (100 if args.quick else 1000)
    packets = args.packets if args.packets is not None else (40 if args.quick else 1000)
    if n < SAMPLED + args.repeat or packets < 1 or args.repeat < 1:
        parser.error(f"--members must be at least {SAMPLED} + --repeat; --packets and --repeat >= 1")
    schemes = [s for s in args.schemes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    progress = Progress(enabled=not args.quiet)
    if args.plot:
        progress("--plot: this benchmark has no chart; the table is docs/bench-security.md")
    results: list[dict[str, Any]] = []
    # Warm up (plugin loading, first-use imports) so the first combination is not charged.
    with contextlib.suppress(RmsecError, RuntimeError):  # a broken pair reports below
        run_combination(schemes[0], methods[0], SAMPLED + 1, 4, 1)
    for scheme in schemes:
        for method in methods:
            try:
                result = run_combination(scheme, method, n, packets, args.repeat)
            except (RmsecError, RuntimeError) as exc:
                result = {"key_management": scheme, "source_auth": method, "members": n,
                          "error": f"{type(exc).__name__}: {exc}"}
            results.append(result)
            summary = result.get("error") or (
                f"setup {result['setup']['total_s']:.2f} s, leave rekey "
                f"{result['leave']['rekey_bytes']:.0f} B, protect "
                f"{result['packet']['protect_us']:.0f} us, verify "
                f"{result['packet']['verify_decrypt_us']:.0f} us")
            progress(f"{scheme} x {method}: {summary}")
    document = {
        "benchmark": "security",
        "environment": environment(),
        "parameters": {"members": n, "packets": packets, "payload_bytes": PAYLOAD,
                       "rate_per_s": RATE, "repeat": args.repeat, "aead": AEAD,
                       "rekey": "batch, applied at once per change",
                       "key_management_options": KM_OPTIONS, "source_auth_options": AUTH_OPTIONS,
                       "clock": "process CPU time"},
        "results": results,
    }
    emit(document)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(markdown(results, n))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
