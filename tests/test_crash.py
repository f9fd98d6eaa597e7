"""The crash test, small: a journaled hub daemon SIGKILLed mid-stream loses no acknowledged
message and no handler sees one twice; without the journal the same run loses messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from latentwire.benchmarks.crash import CrashConfig, crash_run

pytestmark = pytest.mark.timeout(120)


def test_two_sigkills_lose_nothing_acknowledged_and_duplicate_nothing(tmp_path: Path) -> None:
    out = tmp_path / "crash.json"
    proc = subprocess.run(
        [sys.executable, "-m", "latentwire.cli", "bench", "crash", "--quick", "--no-baseline",
         "--messages", "500", "--kills", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())["results"]["journal"]
    assert result["acknowledged"] == 500 and result["received"] == 500
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert len(result["kills"]) == 2
    assert "PASS: 0 lost, 0 duplicates" in proc.stdout


async def test_without_the_journal_the_same_crash_loses_messages() -> None:
    # The check above can fail: the consumer lags, so a killed in-memory hub takes its
    # backlog with it (and the restarted hub has no session to route into at first).
    cfg = CrashConfig(messages=300, kills=1, seed=3, settle_s=0.2, missing_wait_s=2.0)
    report = await crash_run(cfg, log=lambda text: None, journal=False)
    assert report.acknowledged == 300
    assert report.lost > 0
