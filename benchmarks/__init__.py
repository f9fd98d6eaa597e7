"""Measured comparisons, run by ``latentwire bench NAME --json FILE``; each prints ratios
against a baseline run in the same process or run.

Each benchmark is a module here with ``run(json_path, quick, argv) -> int`` (the exit status);
`run_benchmark` picks it by name. Available: ``bus`` (hub vs a raw gRPC relay vs ``inproc://``,
and backpressure under a stalled consumer), ``crash`` (a journaled hub SIGKILLed mid-stream:
lost and duplicated messages), ``journal`` (journaled vs in-memory hub throughput) and
``prehello`` (the hub's memory under streams that never say hello).
"""

from __future__ import annotations

import importlib
import sys

# Benchmark name -> module; modules are imported only when run, so `--help` stays fast.
BENCHMARKS = {
    "bus": "latentwire.benchmarks.bus",
    "crash": "latentwire.benchmarks.crash",
    "journal": "latentwire.benchmarks.journal",
    "mas": "latentwire.benchmarks.mas",
    "mopd": "latentwire.benchmarks.mopd",
    "prehello": "latentwire.benchmarks.prehello",
    "rcl": "latentwire.benchmarks.rcl",
}


def run_benchmark(name: str, json_path: str | None, quick: bool, extra: list[str] | None) -> int:
    """Run benchmark ``name``; print its table, write JSON to ``json_path`` if given.

    ``extra`` holds the benchmark's own options (``latentwire bench bus --help`` lists them).
    Returns the process exit status: 0 when the run completed and every message arrived.
    """
    module_name = BENCHMARKS.get(name)
    if module_name is None:
        print(f"latentwire bench: unknown benchmark {name!r}; available: {', '.join(sorted(BENCHMARKS))}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    return module.run(json_path=json_path, quick=quick, argv=list(extra or []))


__all__ = ["BENCHMARKS", "run_benchmark"]
