"""`latentwire bench mas --quick`: the whole path (shipped space, every pair and mode, timings, PNG) runs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")


@pytest.mark.timeout(400)
def test_bench_mas_quick_scores_and_times_the_same_exchanges(tmp_path):
    """The shipped space, every mode scored at every length it times, intervals on every figure."""
    from latentwire.benchmarks import run_benchmark

    out = tmp_path / "mas.json"
    assert run_benchmark("mas", str(out), True, ["--n", "6", "--timed", "2"]) == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert report["stream"] == "test" and report["n"] == 6
    families = summary["families"]
    assert len(families) == 3 and len(report["pairs"]) == 9 * len(report["lengths"])
    for key in ("matched_speedup", "matched_length", "unseen_over_cotrained_exact", "latent_over_text_exact"):
        assert key in summary
    for key in ("latent_over_text_exact", "unseen_over_cotrained_exact", "none_exact", "shuffled_exact"):
        assert set(summary[key]) == {"value", "ci95"}
    assert [r["length"] for r in summary["per_length"]] == report["lengths"]
    for row in summary["per_length"]:  # accuracy where it is timed, and the timed exchanges scored
        for key in ("latent_exact", "text_oracle_exact", "text_sent_exact", "cotrained_exact",
                    "unseen_exact"):
            assert row[key]["value"] is not None
        assert row["timed_episodes"] == 2 and row["text_ms"] > 0 and row["latent_ms"] > 0
        assert 0 <= row["timed_latent_exact"] <= 1 and row["speedup"]["value"] > 0
    if summary["matched_length"] is not None:
        row = next(r for r in summary["per_length"] if r["length"] == summary["matched_length"])
        assert row["matched"] and summary["matched_speedup"] == row["speedup"]
    assert sum(r["cotrained"] for r in report["pairs"]) >= len(report["lengths"])
    assert (tmp_path / "mas.png").stat().st_size > 1000
    variant = summary["weakly_supervised"]  # the shipped space's variant, under its name, same keys
    assert set(variant) == set(summary) - {"weakly_supervised"}
    assert variant["latent_exact"] == summary["latent_exact"]


def test_the_development_stream_never_reports_under_the_final_name(tmp_path):
    from latentwire.benchmarks import run_benchmark

    out = tmp_path / "mas.json"
    assert run_benchmark("mas", str(out), True, ["--n", "2", "--timed", "1", "--stream", "dev",
                                                 "--families", "gemma3", "llava"]) == 0
    report = json.loads(out.read_text())
    note = report["summary"]["note"]
    assert report["summary"] == {"ok": True, "stream": "dev", "final": False, "note": note}
    assert report["dev_summary"]["stream"] == "dev" and "matched_speedup" in report["dev_summary"]


def test_bootstrap_pairs_methods_on_the_same_resamples():
    import numpy as np

    from latentwire.benchmarks._stats import bootstrap

    a = np.array([1.0, 0.0, 1.0, 1.0])
    value, ci = bootstrap(lambda i: float(a[i].mean()), 4)
    assert value == 0.75 and 0.0 <= ci[0] <= 0.75 <= ci[1] <= 1.0
    same, ci_same = bootstrap(lambda i: float(a[i].mean() - a[i].mean()), 4)
    assert same == 0.0 and ci_same == [0.0, 0.0]  # paired: a method against itself has no spread
    assert bootstrap(lambda i: None, 4) == (None, None)


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
    # ... and encoders tuned through g's decoder (`train ship`'s tune stage): also l -> g and s -> g,
    # while l and s still never met (l -> s, s -> l, l -> l, s -> s).
    tuned = {"g": party("g", "g"), "l": party("g", "g"), "s": party("g", "g")}
    assert together(tuned) == {("g", "g"), ("g", "l"), ("g", "s"), ("l", "g"), ("s", "g")}


def test_parties_read_who_an_encoder_was_tuned_with(tmp_path):
    """A space family folder whose fit record says its encoder was tuned through gemma3's decoder
    counts as trained with gemma3 as receiver, and with no one else."""
    import argparse
    import shutil

    from latentwire.benchmarks.mas import _parties
    from latentwire.tinyworld.space import SHIPPED_SPACE, load_space

    for family in ("gemma3", "llava"):
        shutil.copytree(SHIPPED_SPACE / family, tmp_path / family)
    record = json.loads((tmp_path / "llava" / "shared_fit.json").read_text())
    record["encoder_tuned_to"] = "gemma3"
    (tmp_path / "llava" / "shared_fit.json").write_text(json.dumps(record))
    args = argparse.Namespace(codecs=None, checked_space=load_space(tmp_path), families=None, quick=False)
    parties, _, _ = _parties(args)
    assert parties["llava"].encoder_partner == "gemma3" and parties["llava"].decoder_partner == "gemma3"


def test_compare_space_must_be_the_other_variant(tmp_path, capsys):
    """Comparing the shipped (weakly supervised) space with itself is refused in one line; so is
    --compare-space with --codecs (exit 2, before any model runs)."""
    from latentwire.benchmarks import run_benchmark
    from latentwire.tinyworld.space import SHIPPED_SPACE

    out = tmp_path / "mas.json"
    argv = ["--n", "2", "--timed", "1", "--families", "gemma3", "llava",
            "--compare-space", str(SHIPPED_SPACE)]
    assert run_benchmark("mas", str(out), True, argv) != 0
    assert "other variant" in capsys.readouterr().err
    assert run_benchmark("mas", str(out), True, ["--codecs", str(tmp_path), "--compare-space",
                                                 str(SHIPPED_SPACE)]) == 2
    assert "does not apply to --codecs" in capsys.readouterr().err
