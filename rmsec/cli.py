"""The ``rmsec`` command: a thin dispatcher to one module per sub-command.

Each sub-command module exposes ``main(argv: list[str]) -> int`` and owns its own argument
parsing, so adding a command never touches the others.
"""

from __future__ import annotations

import importlib
import sys

#: command words -> module whose ``main(argv)`` runs it; the help text comes after.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("demo",): ("rmsec.demo", "run a whole group in one process and report what was delivered"),
    ("plugins",): ("rmsec.plugins", "list installed plugins and the schemes they register"),
    ("bench", "transport"): ("rmsec.bench.transport", "transport goodput (UDP) and simulator scaling"),
    ("bench", "keymgmt"): ("rmsec.bench.keymgmt", "key-management cost against group size"),
    ("bench", "auth"): ("rmsec.bench.auth", "source-authentication throughput and overhead"),
    ("sim",): ("rmsec.sim.cli", "run the discrete-event simulator once"),
    ("credentials",): (
        "rmsec.credentials",
        "make a group CA, controller and member certificates for trying things out",
    ),
    ("announce",): ("rmsec.announce", "write a signed session announcement"),
    ("interop",): ("rmsec_interop.matrix", "run every plugin combination through the interop scenarios"),
    ("controller",): ("rmsec.roles.controller", "run a secured group's controller from a TOML config"),
    ("send",): ("rmsec.roles.send", "join a group from its announcement and send"),
    ("recv",): ("rmsec.roles.recv", "join a group from its announcement and receive"),
    ("head",): ("rmsec.roles.head", "run a repair head from a group's announcement"),
    ("bench", "security"): (
        "rmsec.bench.security",
        "the six security figures (setup, rekey, per-packet costs, overhead, key lengths)",
    ),
}


def usage() -> str:
    lines = ["usage: rmsec COMMAND [ARGS...]", "", "commands:"]
    for words, (_, text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for length in (2, 1):
        words = tuple(args[:length])
        if words in COMMANDS:
            module_name = COMMANDS[words][0]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                print(f"rmsec: '{' '.join(words)}' is not available in this build", file=sys.stderr)
                return 2
            result: int = module.main(args[length:])
            return result
    print(usage(), file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
    return 0 if args[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
