"""``latentwire bench mopd --quick``: a smoke run of the whole benchmark (a few seconds to a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")


def test_bench_mopd_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from latentwire.benchmarks import run_benchmark

    out = tmp_path / "mopd.json"
    small = ["--seeds", "1", "--steps", "2", "--eval-n", "16", "--signal-prompts", "6", "--check-n", "8"]
    assert run_benchmark("mopd", str(out), quick=True, extra=small) == 0
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert set(summary["final_success"]) == {"grpo", "opd", "mopd_positive", "mopd_contrastive"}
    assert all(0.0 <= v <= 1.0 for v in summary["final_success"].values())
    assert set(summary["teacher_auroc"]) == {"none", "positive", "contrastive", "random_peer", "unrelated"}
    assert Path(report["png"]).stat().st_size > 0
    histories = report["training"]["mopd_contrastive"]["histories"]
    assert [h["step"] for h in histories[0]] == [0, 2]
    printed = capsys.readouterr().out
    assert "mopd_contrastive" in printed and "AUROC" in printed


def test_bench_mopd_bad_option() -> None:
    from latentwire.benchmarks import run_benchmark

    assert run_benchmark("mopd", None, quick=True, extra=["--seeds", "0"]) == 2
