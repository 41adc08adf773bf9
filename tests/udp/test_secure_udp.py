"""A secured group over real UDP on 127.0.0.1 (registration over TLS on TCP): members join and
leave while data flows and each reads exactly what was sent while it was a member."""

from __future__ import annotations

import pathlib
import sys

import pytest
import trio

import rmsec.io
from rmsec.credentials import ControllerCredentials

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tests.trio.test_secure_group import group_config, run_churn

pytestmark = pytest.mark.udp


async def test_secure_group_with_churn_over_udp(tmp_path: pathlib.Path) -> None:
    creds = ControllerCredentials.create("secure-udp")
    with trio.fail_after(60):
        ctl, read, expected = await run_churn(
            rmsec.io.udp(host="127.0.0.1"), creds, group_config(tmp_path, creds),
            initial=6, rounds=4, joins=2, leaves=2, per_round=5,
        )
    assert len(read) == 6 + 3 * 2
    for name in read:
        assert sorted(read[name]) == sorted(expected[name]), name
    assert ctl.stats()["rekeys"] >= 4
