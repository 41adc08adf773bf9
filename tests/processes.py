"""Waiting on node processes (``rmsec`` commands, the test runner) started by a test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_files(paths: list[Path], procs: list[subprocess.Popen[str]], limit: float) -> None:
    """Return once every path exists (each process creates its file when ready); fail at
    once, with its stderr, if a process exits first, and after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"{proc.args} exited early ({proc.returncode}): {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {[str(p) for p in paths]}")
        time.sleep(0.05)
