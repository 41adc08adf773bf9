"""A group of separate processes inside a network namespace this test creates and deletes.

Inside the namespace only ``lo`` exists; a route for 224.0.0.0/4 on it makes IP multicast work,
so the IP multicast data plane is tried with real kernel multicast delivery, and nothing can
leave the namespace.  Every node is its own process (``python -m rmsec.testing.runner``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import wait_for_files

pytestmark = pytest.mark.netns

RECEIVERS = 5
#: Bound on every wait in this file, in seconds.
LIMIT = 60.0


@pytest.mark.parametrize("network", ["ip_multicast", "udp"])
def test_processes_in_a_namespace(netns: str, network: str, tmp_path: Path) -> None:
    runner = ["ip", "netns", "exec", netns, sys.executable, "-m", "rmsec.testing.runner"]
    announce, go = tmp_path / "announcement", tmp_path / "go"
    common = ["--announce", str(announce), "--network", network, "--wait", str(LIMIT)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*runner, *args, *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        procs.append(proc)
        return proc

    try:
        sender = spawn(
            "sender",
            "--go",
            str(go),
            "--messages",
            "300",
            "--size",
            "3000",
            "--seed",
            "1",
            "--loss",
            "0.05",
            "--max-children",
            "3",
        )
        wait_for_files([announce], procs, LIMIT)
        head_ready = tmp_path / "head.ready"
        head = spawn("head", "--ready", str(head_ready), "--seed", "2", "--loss", "0.05")
        wait_for_files([head_ready], procs, LIMIT)
        ready = [tmp_path / f"rx{i}.ready" for i in range(RECEIVERS)]
        receivers = [
            spawn("receiver", "--ready", str(r), "--seed", str(10 + i), "--loss", "0.05")
            for i, r in enumerate(ready)
        ]
        wait_for_files(ready, procs, LIMIT)
        go.touch()
        out, err = sender.communicate(timeout=LIMIT)
        assert sender.returncode == 0, err
        sent = json.loads(out)
        results = []
        for proc in receivers:
            out, err = proc.communicate(timeout=LIMIT)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
        head.terminate()
        head.communicate(timeout=LIMIT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert sent["count"] == 300
    for result in results:
        assert (result["count"], result["sha256"], result["in_order"]) == (
            300,
            sent["sha256"],
            True,
        ), result
    # The tree was used: with three children at most per node, someone is below the head.
    parents = {tuple(r["parent"]) for r in results}
    assert len(parents) >= 2
    if network == "ip_multicast":
        assert sent["stats"]["io_dropped_unroutable"] == 0
