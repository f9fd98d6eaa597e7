"""`latentwire bench mas --quick`: the whole path (align, shared-space maps, pairs, timings, PNG) runs."""

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


def test_pairs_trained_together_in_each_scheme():
    from types import SimpleNamespace

    from latentwire.benchmarks.mas import _trained_together

    def party(encoder, decoder):
        return SimpleNamespace(encoder_partner=encoder, decoder_partner=decoder)

    def together(parties):
        return {(s, r) for s in parties for r in parties if _trained_together(parties, s, r)}

    # Reference scheme: each family only with itself.
    alone = {f: party(f, f) for f in ("g", "l", "s")}
    assert together(alone) == {("g", "g"), ("l", "l"), ("s", "s")}
    # Anchored to g: l and s with g, both ways; never with themselves or each other.
    anchored = {"g": party("g", "g"), "l": party("g", "g"), "s": party("g", "g")}
    assert together(anchored) == {("g", "g"), ("l", "g"), ("g", "l"), ("s", "g"), ("g", "s")}
    # Shared-space decoders anchored to g: only g's encoder was trained with them.
    hub = {"g": party("g", "g"), "l": party(None, "g"), "s": party(None, "g")}
    assert together(hub) == {("g", "g"), ("g", "l"), ("g", "s")}
