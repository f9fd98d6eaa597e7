"""Smoke test of ``latentwire bench bus --quick``: it runs end to end, writes the JSON report,
and every message arrives. Timings are never asserted (they belong to the benchmark's output).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")  # the `bench` extra


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """Run the quick bus benchmark once for this module; return its JSON report and stdout."""
    path = tmp_path_factory.mktemp("bench") / "bus.json"
    # `--json` after the name on purpose: the CLI hands it on with the benchmark's own options.
    proc = subprocess.run(
        [sys.executable, "-m", "latentwire.cli", "bench", "bus", "--quick", "--json", str(path)],
        capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return json.loads(Path(path).read_text()), proc.stdout


def test_report_has_summary_results_and_machine(quick_report: tuple[dict, str]) -> None:
    report, stdout = quick_report
    summary = report["summary"]
    for key in ("hub_vs_raw_1mib", "hub_vs_raw_64b", "inproc_vs_raw_1mib", "inproc_vs_raw_64b"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert isinstance(summary["backpressure_hub_rss_growth_mib"], float)
    assert summary["all_delivered"] is True
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] and machine["grpcio"]
    assert report["config"]["quick"] is True and report["config"]["repeats"] == 1
    assert "hub/raw" in stdout and "backpressure" in stdout


@pytest.mark.parametrize("case", ["1mib", "64b"])
@pytest.mark.parametrize("system", ["raw", "hub", "inproc"])
def test_every_throughput_message_arrived(quick_report: tuple[dict, str], case: str, system: str) -> None:
    report, _ = quick_report
    result = report["results"]["throughput"][case]
    assert result["payload_bytes"] == {"1mib": 1024 * 1024, "64b": 64}[case]
    figures = result[system]
    assert figures["all_delivered"] is True
    assert len(figures["runs"]) == 1
    for run in figures["runs"]:
        assert run["received"] == run["expected"] == result["count"]
        assert run["complete"] and not run["timed_out"]
        assert run["msgs_per_s"] > 0 and run["bytes_per_s"] > 0


def test_backpressure_holds_the_producer_back_and_loses_nothing(quick_report: tuple[dict, str]) -> None:
    report, _ = quick_report
    bp = report["results"]["backpressure"]
    assert bp["held_back"] is True
    # The producer is let through only while the session and the publish window have room.
    assert 0 < bp["accepted_before_stall"] <= bp["expected_accepted_bound"] < bp["messages"]
    assert bp["sent"] == bp["messages"]
    assert bp["unique"] == bp["messages"] and bp["missing"] == 0 and bp["duplicates"] == 0
    assert bp["all_delivered"] is True
    assert set(bp["rss_growth_mib"]) == {"hub", "consumer", "producer"}
