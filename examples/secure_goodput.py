"""Goodput of a secured group over UDP on 127.0.0.1: a controller and a sender in this
process, one receiver in a process of its own (TLS registration, keys from the controller,
every message encrypted and source-authenticated).

    python examples/secure_goodput.py [MESSAGES] [SOURCE_AUTH]      # default 30000 groupmac

Prints one JSON line: messages sent and delivered, MB/s from the first send to the last
delivery, and the receiver's security counters.  Not a timed test (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import multiprocessing
import pathlib
import sys
import tempfile
import time
from typing import Any, cast

import trio

PAYLOAD = 1200
#: Seconds the receiver waits for the whole stream before it reports what it has.
RECEIVE_LIMIT = 60.0


def receiver(announcement: bytes, ca: bytes, certificate: Any, count: int, out: Any) -> None:
    """The receiving process: join, read ``count`` messages (or give up), report."""
    import rmsec
    import rmsec.io
    from rmsec.credentials import MemberCredentials

    async def main() -> None:
        credentials = MemberCredentials(b"receiver", ca, certificate)
        async with rmsec.open_receiver(announcement, network=rmsec.io.udp(host="127.0.0.1"),
                                       credentials=credentials) as rx:
            out.put("ready")
            got, last = 0, 0.0
            with trio.move_on_after(RECEIVE_LIMIT):
                async for _ in rx:
                    got, last = got + 1, time.time()
                    if got == count:
                        break
            stats = {k: v for k, v in rx.stats().items() if k.startswith("sec_") and v}
            out.put((got, last, stats))

    trio.run(main)


async def main(directory: pathlib.Path, count: int, source_auth: str) -> dict[str, Any]:
    import rmsec
    import rmsec.io
    from rmsec.config import GroupConfig
    from rmsec.credentials import ControllerCredentials, MemberCredentials
    from rmsec.secure_api import SecureSenderChannel

    creds = ControllerCredentials.create("goodput")
    (directory / "ca.pem").write_bytes(creds.ca.certificate)
    config = GroupConfig(group="goodput", key_management="lkh", source_auth=source_auth,
                         access_policy="x509",
                         access_policy_options={"ca": str(directory / "ca.pem")})
    network = rmsec.io.udp(host="127.0.0.1")
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    async with rmsec.open_controller(config, tls=creds, network=network) as ctl:
        process = spawn.Process(target=receiver, args=(
            ctl.announcement, creds.ca.certificate, creds.ca.issue("receiver"), count, out))
        process.start()
        try:
            await trio.to_thread.run_sync(out.get)  # joined
            credentials = MemberCredentials(b"sender", creds.ca.certificate, creds.ca.issue("sender"))
            async with rmsec.open_sender(ctl.announcement, network=network,
                                         credentials=credentials) as sender:
                tx = cast(SecureSenderChannel, sender)  # a secured group's sender
                await ctl.wait_until(lambda: ctl.stats()["members"] == 2)
                await tx.wait_epoch(ctl.epoch)
                start = time.time()
                payload = bytes(PAYLOAD)
                for _ in range(count):
                    await tx.send(payload)
                got, last, stats = await trio.to_thread.run_sync(out.get)
        finally:
            process.join(timeout=RECEIVE_LIMIT + 10)
            if process.is_alive():
                process.kill()
    return {"source_auth": source_auth, "sent": count, "delivered": got,
            "mb_s": round(got * PAYLOAD / max(last - start, 1e-9) / 1e6, 1), "receiver": stats}


if __name__ == "__main__":
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
    method = sys.argv[2] if len(sys.argv) > 2 else "groupmac"
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(trio.run(main, pathlib.Path(d), messages, method)))
