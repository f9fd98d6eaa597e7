"""What every benchmark does around its measurement: options, the table, the JSON report."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any


class BenchError(RuntimeError):
    """A benchmark party failed or did not answer in time (the message quotes its stderr)."""


def machine_info() -> dict:
    """What the figures were measured on."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "numpy": version("numpy"),
        "latentwire": version("latentwire"),
    }


def bench_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The option parser of ``latentwire bench NAME``: the benchmark adds its own options; the
    options every benchmark shares are listed too, so ``bench NAME --help`` shows them all
    (``latentwire bench`` itself parses them before the benchmark runs)."""
    parser = argparse.ArgumentParser(prog=f"latentwire bench {name}", description=description)
    common = parser.add_argument_group("options of every benchmark")
    # SUPPRESS: shown in --help, never added to the benchmark's own namespace (the command took them).
    common.add_argument("--json", metavar="FILE", default=argparse.SUPPRESS,
                        help="also write the results as JSON (and a PNG beside it)")
    common.add_argument("--quick", action="store_true", default=argparse.SUPPRESS,
                        help="a short run of the same path (smoke test)")
    return parser


def existing_folder(what: str) -> Callable[[str], str]:
    """An argparse ``type=`` that refuses, while the options are parsed, a path that is not a
    folder; ``what`` names the folder the option wants (the fix), e.g. "the --out folder of
    `latentwire train space-maps`". The path itself is passed on as given."""

    def check(text: str) -> str:
        path = Path(text)
        if path.is_dir():
            return text
        problem = "is a file, not a folder" if path.exists() else "no such folder"
        raise argparse.ArgumentTypeError(f"{text}: {problem}; give {what}")

    return check


def report_header(name: str, started: float) -> dict[str, Any]:
    """The fields every JSON report starts with: benchmark name, start time, duration, machine."""
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
