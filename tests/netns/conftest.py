"""The network namespace every test here runs in: created for the test, deleted after.

Inside it only ``lo`` exists, with a 224.0.0.0/4 route on it, so IP multicast gets real
kernel delivery and nothing can leave the namespace (DESIGN.md §9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest


def _cannot_use_netns() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _cannot_use_netns()
    if reason:
        pytest.skip(reason)
    name = f"rmsec-t-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        for command in (
            ["ip", "-n", name, "link", "set", "lo", "up"],
            ["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
