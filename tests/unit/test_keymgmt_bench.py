"""``rmsec bench keymgmt`` runs end to end on a tiny group and prints one JSON document
(a smoke test of the benchmark's plumbing, never a timing)."""

from __future__ import annotations

import json

import pytest

from rmsec import cli


def test_bench_keymgmt_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "keymgmt", "--sizes", "300", "--repeat", "2", "--quiet"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["benchmark"] == "keymgmt"
    assert set(document["results"]) == {"flat", "lkh", "oft", "regions"}
    row = document["results"]["lkh"]["300"]
    assert row["members"] == 300
    assert row["leave"]["wraps"] >= document["lower_bound"]["300"]["wraps"]
    assert row["batch_10pct"]["leaves"] == 30
    assert "note" in document["targets"]  # targets are evaluated at n = 1,000,000 only
