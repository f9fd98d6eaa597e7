"""`latentwire bench mas --quick`: the whole path (align, hub maps, pairs, timings, PNG) runs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


@pytest.mark.timeout(400)
def test_bench_mas_quick_writes_json_summary_and_png(tmp_path):
    from latentwire.benchmarks import run_benchmark

    out = tmp_path / "mas.json"
    assert run_benchmark("mas", str(out), True, ["--n", "4", "--tasks", "secret", "--lengths", "8",
                                                 "--repeats", "1"]) == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    for key in ("latent_over_text_accuracy", "speedup_latent_vs_text", "no_message_accuracy",
                "chance_accuracy", "unseen_over_cotrained_accuracy", "shuffled_accuracy"):
        assert key in summary
    families = report["families"]
    assert len(families) == 3 and len(report["pairs"]) == 9  # every ordered pair, one task
    assert sum(r["cotrained"] for r in report["pairs"]) == 3
    timing = report["timings"][0]
    assert timing["text_tokens_generated"] == 8 and timing["latent_s"] > 0 and timing["text_s"] > 0
    assert (tmp_path / "mas.png").stat().st_size > 1000
