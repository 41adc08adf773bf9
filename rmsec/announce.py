"""``rmsec announce``: write or check a signed session description (DESIGN.md §4, §7).

A signed announcement is the transport announcement (session, tree root, transport
parameters, network) plus a security description (group, controller TLS address and rekey key,
plugins, AEAD, serial, expiry), signed by the group owner (the CA key of ``rmsec credentials``)::

    rmsec announce sign --credentials DIR --config group.toml --controller HOST:PORT \\
                        --transport transport.cbor [--expires SECONDS] [-o group.ann]
    rmsec announce show group.ann --ca DIR/ca.pem [--json]

``sign`` is for a controller whose transport announcement was written out (``open_controller``
exposes it as ``ctl.transport_announcement``) or for re-issuing with a new expiry;
``rmsec.open_controller`` signs its own at start.  ``show`` verifies the signature against the
CA (the one trust anchor members hold) and prints what the announcement says.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

from rmsec.announcement import Announcement
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, owner_public_from_ca
from rmsec.errors import ConfigError, RmsecError
from rmsec.security import sigkeys
from rmsec.security.announcement import SecurityDescription, SignedAnnouncement, is_signed


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _read(path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def describe(signed: SignedAnnouncement) -> dict[str, Any]:
    """What a verified announcement says, as JSON-ready values."""
    sec = signed.security
    transport = Announcement.decode_untrusted(signed.transport)
    return {
        "group": sec.group,
        "controller": f"{sec.controller[0]}:{sec.controller[1]}",
        "tls_name": sec.tls_name,
        "controller_key": sec.controller_key.hex(),
        "owner_key": sec.owner_key.hex(),
        "key_management": sec.key_management,
        "source_auth": sec.source_auth,
        "access_policy": sec.access_policy,
        "aead": sec.aead,
        "serial": sec.serial,
        "issued_at": sec.issued_at,
        "expires": sec.expires,
        "session": transport.session.hex(),
        "root": f"{transport.root[0]}:{transport.root[1]}",
        "network": transport.network.kind,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rmsec announce", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_sign = sub.add_parser("sign", help="sign a transport announcement as the group owner")
    p_sign.add_argument("--credentials", required=True, help="directory of rmsec credentials init")
    p_sign.add_argument("--config", required=True, help="group TOML (rmsec.config.GroupConfig)")
    p_sign.add_argument("--controller", required=True, help="controller TLS address HOST:PORT")
    p_sign.add_argument("--transport", required=True, help="file holding the transport announcement")
    p_sign.add_argument("--expires", type=float, default=None, metavar="SECONDS",
                        help="valid for this many seconds from now")
    p_sign.add_argument("-o", "--output", default="-", help="output file (default: stdout, hex)")
    p_show = sub.add_parser("show", help="verify an announcement against the CA and print it")
    p_show.add_argument("file")
    p_show.add_argument("--ca", required=True, help="the group CA certificate (trust anchor)")
    p_show.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, RmsecError) as exc:
        print(f"rmsec announce: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "show":
        data = _read(args.file)
        if not is_signed(data):
            data = bytes.fromhex(data.decode("ascii").strip())
        owner = owner_public_from_ca(_read(args.ca))
        signed = SignedAnnouncement.decode_untrusted(data, owner_keys=(owner,), now_wall=time.time())
        info = describe(signed)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                print(f"{key:<15} {value}")
        return 0
    creds = ControllerCredentials.load(args.credentials)
    config = GroupConfig.from_toml(args.config)
    transport = _read(args.transport)
    if not transport or (transport[0] & 0xE0) != 0xA0:  # not a CBOR map: hex text
        transport = bytes.fromhex(transport.decode("ascii").strip())
    Announcement.decode_untrusted(transport)  # refuse to sign garbage
    now = time.time()
    security = SecurityDescription.for_group(
        config, controller=_addr(args.controller),
        controller_key=sigkeys.public_key(creds.signing_key()),
        owner_key=creds.ca.owner_public(), issued_at=now,
        expires=None if args.expires is None else now + args.expires,
    )
    encoded = SignedAnnouncement.sign(creds.ca.owner_key(), transport, security)
    if args.output == "-":
        print(encoded.hex())
    else:
        pathlib.Path(args.output).write_bytes(encoded)
        print(f"signed announcement for group {config.group!r} in {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
