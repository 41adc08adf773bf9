"""``rmsec controller|head|recv|send`` as separate processes on 127.0.0.1 (DESIGN.md §7): the
controller starts from a TOML file and writes the signed announcement; a head, two receivers
and a sender start from that file; each receiver delivers exactly the bytes sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rmsec import credentials
from tests.processes import wait_for_files

pytestmark = pytest.mark.udp

#: Bound on every wait in this file, in seconds.
LIMIT = 60.0
ROOT = Path(__file__).resolve().parents[2]

GROUP_TOML = """\
[group]
name = "cli-test"
[key_management]
name = "lkh"
[source_auth]
name = "ed25519"
[access_policy]
name = "x509"
ca = "creds/ca.pem"
[controller]
credentials = "creds"
announcement = "group.ann"
[network]
kind = "udp"
host = "127.0.0.1"
"""


def make_group(directory: Path, members: list[str], toml: str = GROUP_TOML) -> Path:
    creds = directory / "creds"
    assert credentials.main(["init", str(creds), "--group", "cli-test"]) == 0
    for member in members:
        assert credentials.main(["issue", str(creds), member]) == 0
    config = directory / "group.toml"
    config.write_text(toml)
    return config


Report = dict[str, Any]


def run_group(
    directory: Path, config: Path, *, prefix: tuple[str, ...] = (), receivers: int = 2,
    size: int = 150_000, on_ready: Callable[[], None] | None = None,
) -> tuple[Report, list[Report], Report, bytes]:
    """Controller, head, receivers, then the sender; returns what each reported.
    ``on_ready`` runs once the receivers have joined, before the sender starts."""
    rmsec = [*prefix, sys.executable, "-m", "rmsec.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[str]] = []
    announcement = directory / "group.ann"
    member = ["--credentials", str(directory / "creds"), "--wait", str(LIMIT), "--quiet"]

    def spawn(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*rmsec, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=directory)
        procs.append(proc)
        return proc

    data = os.urandom(size)
    (directory / "data.bin").write_bytes(data)
    try:
        controller = spawn("controller", str(config), "--duration", str(LIMIT), "--json")
        wait_for_files([announcement], procs, LIMIT)
        head = spawn("head", str(announcement), "--name", "head0", "--ready", "head.ready",
                     "--duration", str(LIMIT), *member)
        wait_for_files([directory / "head.ready"], procs, LIMIT)
        rx = [spawn("recv", str(announcement), "--name", f"rx{i}", "--ready", f"rx{i}.ready",
                    "--json", "--output", f"rx{i}.out", "--duration", str(LIMIT), *member)
              for i in range(receivers)]
        wait_for_files([directory / f"rx{i}.ready" for i in range(receivers)], procs, LIMIT)
        if on_ready is not None:
            on_ready()
        sender = spawn("send", str(announcement), "--name", "tx", "--file", "data.bin",
                       "--message-size", "1000", "--json", *member)
        out, err = sender.communicate(timeout=LIMIT)
        assert sender.returncode == 0, err
        sent = json.loads(out)
        received = []
        for proc in rx:
            out, err = proc.communicate(timeout=LIMIT)
            assert proc.returncode == 0, err
            received.append(json.loads(out))
        for proc in (head, controller):
            proc.send_signal(signal.SIGINT)
        _, err = head.communicate(timeout=LIMIT)
        assert head.returncode == 0, err
        out, err = controller.communicate(timeout=LIMIT)
        assert controller.returncode == 0, err
        ctl = json.loads(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return sent, received, ctl, data


def test_controller_head_send_recv_as_processes(tmp_path: Path) -> None:
    config = make_group(tmp_path, ["head0", "rx0", "rx1", "tx"])
    sent, received, ctl, data = run_group(tmp_path, config)
    assert sent["confirmed"] is True
    assert (sent["count"], sent["bytes"]) == (150, len(data))
    for i, result in enumerate(received):
        assert (result["count"], result["sha256"], result["in_order"], result["error"]) == (
            sent["count"], sent["sha256"], True, None), result
        assert (tmp_path / f"rx{i}.out").read_bytes() == data
        assert result["stats"]["auth_failures"] == 0
    assert ctl["stats"]["registrations"] == 4
    assert ctl["network"]["kind"] == "udp"


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    config = make_group(tmp_path, [], GROUP_TOML.replace('kind = "udp"', 'kind = "memory"'))
    proc = subprocess.run([sys.executable, "-m", "rmsec.cli", "controller", str(config)],
                          capture_output=True, text=True, timeout=LIMIT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "[network] kind = 'memory': choose one of udp, ip_multicast" in proc.stderr
