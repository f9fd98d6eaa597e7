"""Smoke test of ``latentwire bench journal --quick`` (slow: four hub runs through subprocesses).
Timings are never asserted; only that every message arrived and the ratios were measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")  # the `bench` extra


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_journal_bench_measures_both_hubs(tmp_path: Path) -> None:
    out = tmp_path / "journal.json"
    proc = subprocess.run(
        [sys.executable, "-m", "latentwire.cli", "bench", "journal", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    summary = json.loads(out.read_text())["summary"]
    assert summary["ok"] is True
    for key in ("journal_vs_memory_64b", "journal_vs_memory_64kib"):
        assert isinstance(summary[key], float) and summary[key] > 0
    assert "journal/memory" in proc.stdout
