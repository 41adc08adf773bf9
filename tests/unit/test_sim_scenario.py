"""The simulator driving the real transport machines on a small group (correctness only).

Nothing here is timed: the figures are checked for sanity (in range, consistent with each
other), never against the benchmark targets.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from rmsec.errors import ConfigError
from rmsec.sim import cli
from rmsec.sim.scenario import SimConfig, run
from rmsec.sim.topology import ROOT, default_heads, plan_tree
from rmsec.transport import TransportConfig


@pytest.fixture(scope="module")
def lossy_group() -> dict[str, Any]:
    return run(SimConfig(receivers=50, messages=150, message_size=1000, loss=0.05, seed=4))


def test_everyone_delivers_everything_once_in_order(lossy_group: dict[str, Any]) -> None:
    delivery = lossy_group["delivery"]
    assert delivery["all_ok"], delivery
    assert delivery["receivers_ok"] == 50
    assert delivery["stream_confirmed"]
    assert delivery["receivers_ended"] == 50


def test_metrics_are_sane(lossy_group: dict[str, Any]) -> None:
    m = lossy_group["metrics"]
    assert m["data_packets"] == 150
    assert m["data_copies_lost"] > 0  # 5 % of ~7,500 copies
    assert m["repairs_by_heads"] + m["repairs_by_sender"] > 0
    assert 0.5 <= m["head_repair_share"] <= 1.0
    assert 0.5 <= m["retransmissions_per_loss"] < 5
    assert 0 < m["control_at_sender"] < m["control_at_head_max"]
    assert m["repairs_by_receivers"] == 0
    assert lossy_group["tree"] == {"heads": 2, "levels": 1, "root_children": 2}
    assert lossy_group["time"]["events"] > 0


def test_same_seed_same_figures() -> None:
    config = SimConfig(receivers=10, messages=40, loss=0.05, seed=11)
    first, second = run(config), run(config)
    assert first["metrics"] == second["metrics"]
    assert first["network"] == second["network"]


@pytest.mark.parametrize("bootstrap", ["static", "head+root"])
def test_unicast_overlay_and_other_bootstraps_deliver(bootstrap: str) -> None:
    config = SimConfig(
        receivers=20, messages=60, loss=0.05, seed=2, bootstrap=bootstrap,  # type: ignore[arg-type]
        transport=TransportConfig(multicast=False),
    )
    result = run(config)
    assert result["delivery"]["all_ok"], result["delivery"]


def test_plan_keeps_heads_within_capacity() -> None:
    for receivers in (1, 50, 1000, 10_000):
        plan = plan_tree(receivers, max_children=32)
        assert plan.heads == default_heads(receivers)
        load = Counter(plan.receiver_head) + Counter(p for p in plan.head_parent if p != ROOT)
        assert max(load.values()) <= 32
        assert sum(1 for p in plan.head_parent if p == ROOT) <= 32
        assert len(plan.receiver_head) == receivers
    assert plan_tree(10_000).depth == 2
    for receivers in (100, 1000, 10_000):  # a fixed root fan-out: deeper trees instead
        plan = plan_tree(receivers, root_children=4)
        assert sum(1 for p in plan.head_parent if p == ROOT) == 4
        load = Counter(plan.receiver_head) + Counter(p for p in plan.head_parent if p != ROOT)
        assert max(load.values()) <= 32
    assert plan_tree(10_000, root_children=4).depth == 3
    with pytest.raises(ConfigError):
        plan_tree(1000, heads=5)


def test_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-n", "8", "-m", "20", "--loss", "0.02", "--quiet", "--set", "ack_window=16"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["delivery"]["all_ok"]
    assert out["config"]["transport"]["ack_window"] == 16


def test_cli_rejects_unknown_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--set", "no_such_option=1", "--quiet"]) == 2
    assert "no_such_option" in capsys.readouterr().err
