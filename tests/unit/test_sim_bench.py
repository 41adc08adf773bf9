"""``rmsec bench transport`` runs end to end on tiny inputs (never timed: only shape and sanity)."""

from __future__ import annotations

import io
import json

import pytest

from rmsec.bench import common, transport


def test_simulator_part_prints_figures_and_targets(capsys: pytest.CaptureFixture[str]) -> None:
    code = transport.main(["--sim-only", "--sizes", "8", "16", "--messages", "30", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    sim = result["simulator"]
    assert [r["receivers"] for r in sim["runs"]] == [8, 16]
    assert all(r["delivered_all"] for r in sim["runs"])
    assert sim["targets"]["all_delivered"] is True
    for name in ("control_at_sender_flat_within", "head_repair_share_min", "retransmissions_per_loss_max"):
        assert set(sim["targets"][name]) == {"value", "target", "met"}
    assert "udp" not in result
    assert transport.charts(result)  # panels can be built from the JSON alone


def test_target_and_emit() -> None:
    assert common.target(0.97, ">=", 0.95) == {"value": 0.97, "target": ">= 0.95", "met": True}
    assert common.target(None, "<=", 1.3)["met"] is None
    assert common.target(130.0, "<=", 120, " s")["met"] is False
    out = io.StringIO()
    common.emit({"a": (1, 2), "b": b"\x01"}, out)
    assert json.loads(out.getvalue()) == {"a": [1, 2], "b": "01"}


def test_progress_goes_to_its_stream_only_when_enabled() -> None:
    stream = io.StringIO()
    common.Progress(stream=stream)("hello")
    common.Progress(stream=stream, enabled=False)("silent")
    assert "hello" in stream.getvalue() and "silent" not in stream.getvalue()


@pytest.mark.udp
def test_raw_blast_between_processes() -> None:
    figures = transport.blast(1, 240_000, common.Progress(enabled=False))
    assert figures["datagrams_per_receiver"] == 200
    assert 0 < figures["delivered_fraction"] <= 1
    assert figures["per_receiver_mb_s"] > 0
