"""What every benchmark does around its measurement: options, the table, the JSON report."""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
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


def run_report(name: str, json_path: str | None, parse: Callable[[], Any], measure: Callable[[Any], dict],
               render: Callable[[dict], str], *, requires: str | None = None) -> int:
    """The ``run()`` of a benchmark: parse its options, measure, print the table, write JSON.

    ``measure`` returns the report (``summary.ok`` says whether the run passed). Returns 0 when
    it passed, 1 when it failed or a party did not answer, 2 on bad options or a missing extra
    (``requires``: a module the benchmark needs).
    """
    from .bus import BenchError

    if requires is not None:
        try:
            importlib.import_module(requires)
        except ImportError:
            print(f"latentwire bench {name} needs {requires}: pip install 'latentwire[bench]'",
                  file=sys.stderr)
            return 2
    try:
        cfg = parse()
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        report = measure(cfg)
    except BenchError as exc:
        print(f"latentwire bench {name}: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    write_report(json_path, report)
    return 0 if report["summary"]["ok"] else 1


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(text, file=sys.stderr, flush=True)
