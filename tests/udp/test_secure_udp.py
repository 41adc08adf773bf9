"""A secured group over real UDP on 127.0.0.1 (registration over TLS on TCP): 50 members, with
members leaving and joining between rounds while the sender's stream flows; each reads exactly
what was sent while it was a member (once, in order, nothing else)."""

from __future__ import annotations

import pathlib
import sys

import pytest
import trio

import rmsec.io
from rmsec.credentials import ControllerCredentials

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tests.trio.test_secure_group import check_exact, group_config, run_churn

pytestmark = pytest.mark.udp

MEMBERS, ROUNDS, CHURN, PER_ROUND = 50, 6, 5, 5


async def test_secure_group_with_churn_over_udp(tmp_path: pathlib.Path) -> None:
    creds = ControllerCredentials.create("secure-udp")
    with trio.fail_after(60):
        ctl, read, expected = await run_churn(
            rmsec.io.udp(host="127.0.0.1"), creds, group_config(tmp_path, creds),
            initial=MEMBERS, rounds=ROUNDS, joins=CHURN, leaves=CHURN, per_round=PER_ROUND,
        )
    assert len(read) == MEMBERS + (ROUNDS - 1) * CHURN
    check_exact(read, expected)
    sent = ROUNDS * PER_ROUND
    assert sum(len(e) == sent for e in expected.values()) == MEMBERS - (ROUNDS - 1) * CHURN
    stats = ctl.stats()
    assert stats["rekeys"] >= ROUNDS
    assert stats["members"] == 0
