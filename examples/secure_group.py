"""A secured group on this machine: a controller, a repair head, a sender and three receivers
over real UDP on 127.0.0.1, registration over TLS.  Run: ``python examples/secure_group.py``.

What it shows: the application code of a secured group is the plain channel API plus
``credentials=``.  The controller admits each member (access policy ``x509``: a certificate
from the group's CA), hands it the group key (``lkh`` key tree), and rekeys when one leaves;
the sender signs with ``ed25519`` so receivers know who sent what.  The receiver that leaves
half-way reads nothing sent after it left.
"""

from __future__ import annotations

import pathlib
import tempfile

import trio

import rmsec
import rmsec.io
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials


def member(creds: ControllerCredentials, name: str) -> MemberCredentials:
    """A member's credentials: its id, the CA to trust, a certificate from that CA."""
    return MemberCredentials(name.encode(), creds.ca.certificate, creds.ca.issue(name))


async def main(directory: pathlib.Path) -> None:
    creds = ControllerCredentials.create("example-group")  # a fresh CA, for trying things out
    (directory / "ca.pem").write_bytes(creds.ca.certificate)
    config = GroupConfig(
        group="example-group", key_management="lkh", source_auth="ed25519",
        access_policy="x509", access_policy_options={"ca": str(directory / "ca.pem")},
    )
    network = rmsec.io.udp(host="127.0.0.1")
    with trio.fail_after(60):
        async with rmsec.open_controller(config, tls=creds, network=network) as ctl:
            ann = ctl.announcement  # signed; what members are given to join
            async with rmsec.open_head(ann, network=network, credentials=member(creds, "head")), \
                    trio.open_nursery() as nursery:
                leaving = trio.Event()

                async def receive(name: str, *, task_status: trio.TaskStatus[None]) -> None:
                    async with rmsec.open_receiver(ann, network=network,
                                                   credentials=member(creds, name)) as rx:
                        task_status.started()
                        async for message in rx:
                            print(f"{name} read {message.data.decode()!r} (epoch {message.epoch})")
                            if name == "rx-2" and message.data == b"message 1":
                                leaving.set()
                                return  # leave the group: the controller rekeys
                    print(f"{name}: stream ended")

                for i in range(3):
                    await nursery.start(receive, f"rx-{i}")
                # Closing the sender's block ends its stream, which ends the receivers' loops.
                async with rmsec.open_sender(ann, network=network, credentials=member(creds, "tx")) as tx:
                    await ctl.wait_until(lambda: ctl.stats()["members"] == 5)  # head, tx, 3 rx
                    await tx.wait_epoch(ctl.epoch)
                    for i in range(2):
                        await tx.send(f"message {i}".encode())
                    await leaving.wait()
                    await ctl.wait_until(lambda: ctl.stats()["members"] == 4)
                    await tx.wait_epoch(ctl.epoch)  # the new key, which rx-2 does not hold
                    for i in range(2, 4):
                        await tx.send(f"message {i}".encode())
            print(f"controller: {ctl.stats()['rekeys']} rekeys, epoch {ctl.epoch}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        trio.run(main, pathlib.Path(d))
