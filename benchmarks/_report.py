"""What every benchmark does with its report: the common JSON header and the ``--json`` file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def report_header(name: str, started: float) -> dict[str, Any]:
    """The fields every JSON report starts with: benchmark name, start time, duration, machine."""
    from .bus import machine_info

    return {
        "benchmark": name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
        "machine": machine_info(),
    }


def write_report(json_path: str | None, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON to ``json_path`` (parents created); nothing if None."""
    if not json_path:
        return
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
