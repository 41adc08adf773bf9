"""``rmsec bench security`` at a tiny size: it runs every requested combination on the real
machines and its JSON has the six figures the requirements ask for (DESIGN.md §1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmsec.bench import security


def test_tiny_run_has_the_six_figures_for_every_combination(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    table = tmp_path / "table.md"
    code = security.main(["--members", "8", "--packets", "6", "--repeat", "1", "--quiet",
                          "--schemes", "flat,lkh", "--methods", "groupmac,tesla,multimac",
                          "--markdown", str(table)])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["benchmark"] == "security"
    assert document["parameters"]["members"] == 8
    results = document["results"]
    assert [(r["key_management"], r["source_auth"]) for r in results] == [
        (k, m) for k in ("flat", "lkh") for m in ("groupmac", "tesla", "multimac")]
    for r in results:
        assert "error" not in r, r
        assert r["setup"]["total_s"] > 0 and r["setup"]["controller_s"] > 0  # set-up time
        for change in ("leave", "join"):  # rekey cost
            assert r[change]["controller_ms"] > 0 and r[change]["rekey_bytes"] > 64
            assert r[change]["member_apply_us"] > 0
        assert r["join"]["welcome_bytes"] > 0
        packet = r["packet"]  # per-packet costs and overhead
        assert packet["delivered"] == packet["messages"] == 6
        assert packet["protect_us"] > 0 and packet["verify_decrypt_us"] > 0
        assert packet["overhead_bytes"] >= 28 + 16  # frame header + AEAD tag at least
        keys = r["keys"]  # key lengths
        assert keys["aead_key_bytes"] == 16 and keys["group_secret_bytes"] >= 16
        assert keys["member_key_material_bytes"] > 0
        assert keys["controller_signature_bytes"] == 64
    multimac = [r for r in results if r["source_auth"] == "multimac"]
    assert all(r["keys"]["source_auth_material_bytes"] > 0 for r in multimac)
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == len(results) + 1  # header + one row each


def test_too_small_a_group_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        security.main(["--members", "2", "--quiet"])
