"""Run a secured rmsec group whose access policy is this plugin's ``cn-pattern``.

Everything happens in one process: a controller, a sender and a receiver on rmsec's in-process
memory network (data plane in virtual time, registration over real TLS on 127.0.0.1).  The
members' certificates come from a throw-away group CA; ``sensor-*`` names are admitted, a
``laptop`` is refused with the policy's reason.  Prints a JSON report and exits 0 when the
group behaved as the policy says::

    pip install .          # next to rmsec
    python try_it.py
"""

from __future__ import annotations

import json
import sys
from typing import Any

import rmsec
import trio
import trio.testing
from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, MemberCredentials
from rmsec.io.control import RegistrationRefused

MESSAGES = [b"temperature 21.5", b"humidity 40%", b"door closed"]


async def run() -> dict[str, Any]:
    creds = ControllerCredentials.create("sensors")

    def member(name: str) -> MemberCredentials:
        return MemberCredentials(name.encode(), creds.ca.certificate, creds.ca.issue(name))

    config = GroupConfig(
        group="sensors", access_policy="cn-pattern",
        access_policy_options={"patterns": ["sensor-*"]},
    )
    network = rmsec.io.memory(seed=1)
    report: dict[str, Any] = {}
    with trio.fail_after(60):
        async with rmsec.open_controller(config, tls=creds, network=network) as ctl:
            policy = type(ctl.controller.policy)
            report["policy"] = f"{policy.__module__}.{policy.__qualname__}"
            ann = ctl.announcement
            try:
                async with rmsec.open_receiver(ann, network=network, credentials=member("laptop")):
                    report["refused"] = None
            except RegistrationRefused as exc:
                report["refused"] = exc.reason
            async with rmsec.open_receiver(
                ann, network=network, credentials=member("sensor-display")
            ) as rx, rmsec.open_sender(
                ann, network=network, credentials=member("sensor-1")
            ) as tx:
                await tx.wait_epoch(ctl.epoch)  # type: ignore[attr-defined]
                for data in MESSAGES:
                    await tx.send(data, encrypt=True)
                report["delivered"] = [(await rx.receive()).data.decode() for _ in MESSAGES]
                report["members"] = sorted(m.decode() for m in ctl.members())
            report["controller"] = {k: ctl.stats()[k] for k in ("admitted", "denied")}
    return report


def main() -> int:
    report = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0.002))
    print(json.dumps(report, indent=2))
    ok = (
        report["policy"] == "rmsec_example_plugin.policy.CommonNamePattern"
        and report["refused"] == "common name 'laptop' is not admitted to 'sensors'"
        and report["delivered"] == [m.decode() for m in MESSAGES]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
