"""``latentwire bench mopd --quick``: a smoke run of the whole benchmark (a few seconds to a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")


def test_bench_mopd_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from latentwire.benchmarks import run_benchmark
    from latentwire.benchmarks.mopd import METHODS, MOPD_METHODS, OPD_METHODS, SEPARATE_ROW, SIGNAL_MODES

    out = tmp_path / "mopd.json"
    small = ["--seeds", "2", "--steps", "2", "--eval-n", "8", "--signal-prompts", "6", "--check-n", "8",
             "--prompts-per-step", "2", "--group-size", "4"]
    assert run_benchmark("mopd", str(out), quick=True, extra=small) == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert set(summary["final_success"]) == set(METHODS)
    for name, figure in summary["final_success"].items():
        assert 0.0 <= figure["mean"] <= 1.0 and len(figure["per_seed"]) == 2
        assert figure["ci95"] is None or figure["ci95"][0] <= figure["mean"] <= figure["ci95"][1]
        assert set(summary["change"][name]) == {"mean", "ci95", "per_seed"}
    assert set(summary["initial_success"]) == {"mean", "ci95", "per_seed"}
    # Every mode (and the separate teacher) on one matched subset, with an interval over prompts.
    assert set(summary["teacher_auroc_matched"]) == {*SIGNAL_MODES, SEPARATE_ROW}
    assert all(set(v) == {"value", "ci95"} for v in summary["teacher_auroc_matched"].values())
    assert set(summary["teacher_auroc"]) == {*SIGNAL_MODES, SEPARATE_ROW}
    assert set(summary["opd_teacher"]) == {"opd_separate", "opd_privileged"}
    assert "sort_teacher" in summary["opd_teacher"]["opd_separate"]
    assert set(summary["mopd_minus_opd"]) == {f"{m} - {o}" for m in MOPD_METHODS for o in OPD_METHODS}
    assert Path(report["png"]).stat().st_size > 0
    histories = report["training"]["mopd_contrastive"]["histories"]
    assert [h["step"] for h in histories[0]] == [0, 2]
    printed = capsys.readouterr().out
    assert "mopd_contrastive" in printed and "AUROC" in printed and "matched subset" in printed


def test_bench_mopd_methods_option(tmp_path: Path) -> None:
    from latentwire.benchmarks import run_benchmark

    out = tmp_path / "mopd.json"
    small = ["--seeds", "1", "--steps", "1", "--eval-n", "4", "--signal-prompts", "4", "--check-n", "4",
             "--prompts-per-step", "1", "--group-size", "2", "--methods", "grpo", "opd_privileged"]
    assert run_benchmark("mopd", str(out), quick=True, extra=small) == 0
    summary = json.loads(out.read_text())["summary"]
    assert set(summary["final_success"]) == {"grpo", "opd_privileged"}
    assert set(summary["opd_teacher"]) == {"opd_privileged"} and summary["mopd_minus_opd"] == {}


def test_bench_mopd_bad_option() -> None:
    from latentwire.benchmarks import run_benchmark

    assert run_benchmark("mopd", None, quick=True, extra=["--seeds", "0"]) == 2
