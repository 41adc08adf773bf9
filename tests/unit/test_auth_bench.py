"""``rmsec bench auth`` runs end to end and prints one JSON document with every figure the
issue asks for; ``--plot`` writes its chart (a smoke test of the plumbing, never a timing:
no assertion here depends on how fast the machine is)."""

from __future__ import annotations

import json
import pathlib

import pytest

from rmsec import cli

METHODS = ["groupmac", "ed25519", "ecdsa-p256", "batchsig", "emss", "tesla", "multimac"]


def test_bench_auth_json_and_plot(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "auth.png"
    argv = ["bench", "auth", "--packets", "200", "--repeat", "1", "--quiet", "--plot", str(png)]
    assert cli.main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["benchmark"] == "auth" and document["payload_bytes"] == 1024
    assert list(document["methods"]) == METHODS
    for name, row in document["methods"].items():
        for side in ("sender", "receiver"):
            assert row[f"{side}_pps"] > 0 and row["floor"][f"{side}_pps"] > 0
            assert row[f"{side}_vs_floor"]["target"] == ">= 0.7x"
        assert row["bytes_per_packet"] > 0 and row["verify_us"] > 0
        assert [v["loss"] for v in row["verifiable"]] == [0.0, 0.05, 0.2]
        assert row["verifiable"][0]["fraction"] == 1.0, name
        for lossy in row["verifiable"][1:]:
            assert lossy["fraction"] >= row["guaranteed_fraction"] - 0.01, name
    for name in ("batchsig", "emss", "tesla"):
        assert document["methods"][name]["receiver_vs_ed25519"]["target"] == ">= 10x"
    assert document["methods"]["multimac"]["cost"]["keys"] > 0
    assert set(document["targets"]) >= {f"{m} receiver_vs_floor" for m in METHODS}
    assert document["plot"] == str(png) and png.stat().st_size > 10_000
