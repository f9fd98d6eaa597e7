"""``latentwire bench journal``: what the journal costs, as hub throughput with and without it.

Two ``latentwire hub`` daemons run side by side: one in memory (the baseline) and one with
``--journal FILE`` (SQLite WAL, ``synchronous=FULL``: every acknowledged publish is fsynced,
publishes that arrive together share one commit). Each run is the same three processes as
``latentwire bench bus``'s hub run: a consumer process subscribed to ``bench/#`` and a producer
process publishing with ``wait=False`` then ``flush()``; the consumer times from the last
warm-up message to the last message. Runs alternate between the two hubs and repeat; the
median is reported, and the ratio journaled / in-memory is the figure to read.

Run::

    latentwire bench journal --json bench-results/journal.json   # a few minutes on 2 cores
    latentwire bench journal --quick                             # smoke test
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._report import bench_parser, progress, report_header, run_report
from .bus import Payload, _median, _start_hub, _three_process_run, _with_rates

SYSTEMS = ("memory", "journal")


@dataclass
class JournalBenchConfig:
    """Counts and repeats of one run; ``quick`` makes a smoke-test-sized one."""

    n_64b: int = 20_000
    n_64kib: int = 2_000
    repeats: int = 3
    run_timeout: float = 180.0
    quick: bool = False

    def payloads(self) -> list[Payload]:
        """Small messages (the journal's per-commit cost) and 64 KiB latents (its write bandwidth)."""
        return [
            Payload("64b", "64 B", "uint8", 64, self.n_64b, max(1, self.n_64b // 10)),
            Payload("64kib", "64 KiB", "float32", 16384, self.n_64kib, max(1, self.n_64kib // 10)),
        ]


async def _main(cfg: JournalBenchConfig, log: Any) -> dict:
    started = time.time()
    payloads = cfg.payloads()
    runs: dict[str, dict[str, list[dict]]] = {p.key: {s: [] for s in SYSTEMS} for p in payloads}
    hubs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="latentwire-journal-bench-") as tmp:
        try:
            hubs["memory"] = await _start_hub()
            hubs["journal"] = await _start_hub("--journal", Path(tmp) / "journal.db")
            for rep in range(cfg.repeats):
                order = SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]  # neither always runs first
                for p in payloads:
                    for system in order:
                        child, url = hubs[system]
                        r = _with_rates(await _three_process_run("hub", child, ["--url", url], p,
                                                                 cfg.run_timeout), p)
                        r["repeat"] = rep
                        runs[p.key][system].append(r)
                        rate = f"{r['msgs_per_s']:,.0f} msg/s" if r["msgs_per_s"] else "incomplete"
                        log(f"{p.label:>6} {system:<7} repeat {rep + 1}: {rate}")
        finally:
            for child, _ in hubs.values():
                await child.stop()
    results: dict[str, Any] = {}
    summary: dict[str, Any] = {"ok": True}
    for p in payloads:
        case: dict[str, Any] = {"payload_bytes": p.nbytes, "count": p.count, "warmup": p.warmup}
        for system in SYSTEMS:
            rs = runs[p.key][system]
            delivered = all(r["complete"] and r.get("bytes_ok", True) for r in rs)
            summary["ok"] &= delivered  # every message arrived in every run
            case[system] = {"median_msgs_per_s": _median([r["msgs_per_s"] for r in rs]),
                            "all_delivered": delivered, "runs": rs}
        mem, jour = case["memory"]["median_msgs_per_s"], case["journal"]["median_msgs_per_s"]
        case["journal_vs_memory"] = jour / mem if mem and jour else None
        summary[f"journal_vs_memory_{p.key}"] = case["journal_vs_memory"]
        results[p.key] = case
    return {
        **report_header("journal", started),
        "config": asdict(cfg),
        "summary": summary,
        "results": results,
    }


def render(report: dict) -> str:
    """Median throughput per payload and the journaled / in-memory ratio."""
    lines = ["hub throughput, journaled (--journal, synchronous=FULL) vs in memory:",
             f"  {'payload':>8}  {'in memory':>14}  {'journaled':>14}  {'journal/memory':>14}"]
    for case in report["results"].values():
        def rate(system: str) -> str:
            v = case[system]["median_msgs_per_s"]
            return f"{v:,.0f} msg/s" if v else "incomplete"
        ratio = case["journal_vs_memory"]
        size = case["payload_bytes"]
        label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
        lines.append(f"  {label:>8}  {rate('memory'):>14}  {rate('journal'):>14}  "
                     f"{(f'{ratio:.2f}' if ratio else '-'):>14}")
    return "\n".join(lines)


def _parse(argv: list[str], quick: bool) -> JournalBenchConfig:
    cfg = JournalBenchConfig(n_64b=1000, n_64kib=100, repeats=1, run_timeout=60.0, quick=True) \
        if quick else JournalBenchConfig()
    parser = bench_parser("journal", "hub throughput with and without --journal")
    parser.add_argument("--repeats", type=int, default=cfg.repeats, help="alternating repeats (median)")
    parser.add_argument("--n-64b", type=int, default=cfg.n_64b, help="timed 64 B messages per run")
    parser.add_argument("--n-64kib", type=int, default=cfg.n_64kib, help="timed 64 KiB messages per run")
    args = parser.parse_args(argv)
    for name in ("repeats", "n_64b", "n_64kib"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        setattr(cfg, name, getattr(args, name))
    return cfg


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the journal benchmark, print its table, write JSON to ``json_path`` if given.

    Returns 0 when every message arrived in every run, 1 otherwise, 2 on bad options.
    """
    return run_report("journal", json_path, lambda: _parse(list(argv or []), quick),
                      lambda cfg: asyncio.run(_main(cfg, progress)), render,
                      requires="psutil")  # the hub runs measure its CPU
