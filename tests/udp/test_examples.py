"""The examples run as written (real UDP on 127.0.0.1, TLS registration)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.udp

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_secure_group_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "secure_group.py")],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for name in ("rx-0", "rx-1"):
        read = [ln.split("'") for ln in lines if ln.startswith(f"{name} read")]
        assert [r[1] for r in read] == [f"message {i}" for i in range(4)], lines
        epochs = [int(r[2].strip(" ()epoch")) for r in read]
        assert epochs[0] == epochs[1] < epochs[2] == epochs[3], lines  # rekeyed when rx-2 left
        assert f"{name}: stream ended" in lines
    # the member that left read nothing sent after it left
    assert [ln.split("'")[1] for ln in lines if ln.startswith("rx-2 read")] == ["message 0", "message 1"]
