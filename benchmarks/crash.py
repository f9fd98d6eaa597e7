"""``latentwire bench crash``: a journaled hub killed with SIGKILL mid-stream loses nothing.

A ``latentwire hub --journal FILE`` daemon runs as its own process. In this process a consumer
subscribes, then a producer publishes ``--messages`` messages (``--workers`` publishes awaited
concurrently, each ``publish(wait=True)``, so every acknowledged id is known). At ``--kills``
random points (uniform in 10-90 % of the acknowledged count) the hub is killed with SIGKILL and
started again on the same port with the same journal. Both clients reconnect with backoff and
resume their sessions; the producer re-sends what the hub had not acknowledged.

The consumer's handler is a little slower than the producer (``handler_delay_s`` per
message, a receive window of 32), so the hub always holds a backlog for it when it is killed.

Counted at the end: acknowledged publishes, messages the consumer's handler received, lost
(acknowledged but never received: must be 0), duplicates (a handler saw an id twice: must be
0), and redelivered (received with the redelivered flag, i.e. replayed from the journal).
The same run against a hub without ``--journal`` (the baseline; ``--no-baseline`` skips it)
shows what the journal is for: there the backlog dies with the process. Exit status 0 only
when the journaled run lost nothing, duplicated nothing and every kill happened.

Run::

    latentwire bench crash --json bench-results/crash.json     # 10,000 messages, 2 kills
    latentwire bench crash --quick                             # 500 messages, 2 kills
    python -m latentwire.benchmarks.crash --messages 2000 --kills 3 --seed 7
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._report import BenchError, bench_parser, progress, report_header, run_report
from .bus import _Child, _start_hub

TOPIC = "crash/stream"


@dataclass
class CrashConfig:
    """One crash run: how much traffic, how many kills, and the timeouts around them."""

    messages: int = 10_000
    kills: int = 2
    workers: int = 64  # publishes awaited concurrently by the producer
    seed: int | None = None  # None: a random seed (reported, so a run can be repeated)
    reconnect_timeout: float = 60.0  # clients give up after this long without a hub
    run_timeout: float = 300.0  # publishing, kills and delivery together
    settle_s: float = 1.0  # after the last expected message, wait this long for duplicates
    missing_wait_s: float = 60.0  # how long to wait for missing messages before counting them lost
    handler_delay_s: float = 0.0005  # the consumer's handler is slower than the producer
    receive_window: int = 32  # the consumer's receive window
    baseline: bool = True  # also run against a hub without --journal
    quick: bool = False


@dataclass
class CrashReport:
    """What one run counted (see the module docstring)."""

    published: int  # publishes attempted
    acknowledged: int  # publishes the hub acknowledged
    refused: int  # publishes that raised (none expected)
    received: int  # distinct ids the consumer's handler saw
    lost: int  # acknowledged, never received
    duplicates: int  # handler calls beyond the first per id
    redelivered: int  # received with the redelivered flag
    kills: list[dict]  # per kill: acknowledged count when killed, restart seconds
    elapsed_s: float
    seed: int
    journal: bool  # whether the hub ran with --journal

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing seen twice, every kill done."""
        return self.lost == 0 and self.duplicates == 0 and self.refused == 0


class _Hub:
    """The hub daemon under test: started, SIGKILLed and restarted on one port and journal."""

    def __init__(self, journal: Path | None) -> None:
        self.journal = journal
        self.child: _Child | None = None
        self.url = ""
        self.port = 0

    async def start(self) -> None:
        flags: list[object] = ["--session-expiry", 600]
        if self.journal is not None:
            flags += ["--journal", self.journal]
        if self.port:
            flags += ["--port", self.port]
        self.child, url = await _start_hub(*flags)
        if self.port == 0:
            self.url, self.port = url, int(url.rsplit(":", 1)[1])

    async def kill(self) -> None:
        """SIGKILL: no drain, no journal close, nothing flushed."""
        child = self.child
        child.proc.send_signal(signal.SIGKILL)
        await child.proc.wait()
        await child.stop()  # closes its stderr file

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop()


async def crash_run(cfg: CrashConfig, log: Any = print, *, journal: bool = True) -> CrashReport:
    """Run the crash test described by ``cfg`` (``journal=False``: the in-memory baseline)."""
    import latentwire

    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    # Kill points: acknowledged counts, spread over the middle of the run.
    points = sorted(int(cfg.messages * rng.uniform(0.1, 0.9)) for _ in range(cfg.kills))
    seen: Counter[str] = Counter()
    acked: set[str] = set()
    redelivered = refused = 0
    kills: list[dict] = []
    all_in = asyncio.Event()  # every acknowledged id received, after the producer finished
    published = asyncio.Event()  # every publish was acknowledged or refused
    producing = True

    with tempfile.TemporaryDirectory(prefix="latentwire-crash-") as tmp:
        hub = _Hub(Path(tmp) / "journal.db" if journal else None)
        await hub.start()
        options = {"reconnect_timeout": cfg.reconnect_timeout}
        t0 = time.perf_counter()
        try:
            async with latentwire.connect(hub.url, agent="crash-consumer", receive_window=cfg.receive_window,
                                          **options) as consumer, \
                    latentwire.connect(hub.url, agent="crash-producer", **options) as producer:
                sub = await consumer.subscribe(TOPIC)

                async def handle() -> None:
                    nonlocal redelivered
                    async for msg in sub:  # the handler: each call is one message seen
                        seen[msg.id] += 1
                        redelivered += msg.redelivered
                        await asyncio.sleep(cfg.handler_delay_s)
                        if not producing and acked <= seen.keys():
                            all_in.set()

                async def publish(numbers: Any) -> None:
                    nonlocal refused
                    for i in numbers:
                        try:
                            acked.add(await producer.publish(TOPIC, f"message {i}"))
                        except latentwire.LatentwireError as exc:
                            refused += 1
                            log(f"publish {i} refused: {exc}")

                async def killer() -> None:
                    for n, point in enumerate(points, 1):
                        while len(acked) < point:
                            if published.is_set():
                                return  # refusals kept the count below this point
                            await asyncio.sleep(0.005)
                        at = len(acked)
                        await hub.kill()
                        t = time.perf_counter()
                        await asyncio.sleep(rng.uniform(0.0, 0.3))  # the hub stays down a moment
                        await hub.start()
                        kills.append({"acknowledged_at_kill": at, "restart_s": time.perf_counter() - t})
                        log(f"kill {n}/{len(points)}: SIGKILL after {at} acknowledged; restarted in "
                            f"{kills[-1]['restart_s']:.1f} s")

                numbers = iter(range(cfg.messages))  # shared: each worker takes the next number
                async with asyncio.timeout(cfg.run_timeout):
                    handler = asyncio.create_task(handle(), name="crash.handler")
                    kill_task = asyncio.create_task(killer(), name="crash.killer")
                    await asyncio.gather(*(publish(numbers) for _ in range(cfg.workers)))
                    published.set()
                    # Every kill point is below the acknowledged total, so every kill happens;
                    # the last ones may fall while the consumer is still catching up.
                    await kill_task
                    producing = False
                    if acked <= seen.keys():
                        all_in.set()
                    with contextlib.suppress(TimeoutError):
                        # Whatever is still missing is lost; do not wait out the whole run.
                        wait = cfg.missing_wait_s if journal else min(cfg.missing_wait_s, 5.0)
                        await asyncio.wait_for(all_in.wait(), wait)
                    await asyncio.sleep(cfg.settle_s)  # late duplicates would show up here
                    handler.cancel()
                    await asyncio.gather(handler, return_exceptions=True)
        except TimeoutError:
            raise BenchError(f"the crash run did not finish within {cfg.run_timeout:g} s "
                             f"({len(acked)} acknowledged, {len(seen)} received)") from None
        finally:
            await hub.stop()
    if len(kills) < cfg.kills:
        raise BenchError(f"only {len(kills)} of {cfg.kills} kills happened")
    return CrashReport(
        published=cfg.messages, acknowledged=len(acked), refused=refused, received=len(seen),
        lost=len(acked - seen.keys()), duplicates=sum(seen.values()) - len(seen),
        redelivered=redelivered, kills=kills, elapsed_s=time.perf_counter() - t0, seed=seed,
        journal=journal)


def render(report: CrashReport) -> str:
    """The counts as a small table."""
    rows = [("published", report.published), ("acknowledged by the hub", report.acknowledged),
            ("refused", report.refused), ("received by the handler (distinct)", report.received),
            ("lost (acknowledged, never received)", report.lost),
            ("duplicates seen by the handler", report.duplicates),
            ("received as redelivered", report.redelivered),
            ("hub SIGKILLs", len(report.kills))]
    hub = "--journal" if report.journal else "in memory (baseline, no --journal)"
    lines = [f"crash test, hub {hub} (seed {report.seed}, {report.elapsed_s:.1f} s):"]
    lines += [f"  {name:<38} {value:>7}" for name, value in rows]
    if report.journal:
        lines.append("  result: " + ("PASS: 0 lost, 0 duplicates" if report.ok else "FAIL"))
    return "\n".join(lines)


def _parse(argv: list[str], quick: bool) -> CrashConfig:
    cfg = CrashConfig(messages=500, quick=True) if quick else CrashConfig()
    parser = bench_parser("crash", "SIGKILL a journaled hub mid-stream; "
                                                 "count lost and duplicates")
    parser.add_argument("--messages", type=int, default=cfg.messages, help="messages to publish")
    parser.add_argument("--kills", type=int, default=cfg.kills, help="SIGKILLs of the hub during the run")
    parser.add_argument("--workers", type=int, default=cfg.workers, help="publishes awaited concurrently")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill points (default: random)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without --journal")
    args = parser.parse_args(argv)
    for name in ("messages", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.kills < 0:
        parser.error(f"--kills must be >= 0, got {args.kills}")
    cfg.messages, cfg.kills, cfg.workers, cfg.seed = args.messages, args.kills, args.workers, args.seed
    cfg.baseline = not args.no_baseline
    if cfg.seed is None:  # one seed for both runs: the baseline is killed at the same points
        cfg.seed = random.SystemRandom().randrange(2**31)
    return cfg


def _measure(cfg: CrashConfig) -> dict:
    started = time.time()
    journaled = asyncio.run(crash_run(cfg, progress))
    baseline = asyncio.run(crash_run(cfg, progress, journal=False)) if cfg.baseline else None
    summary = {"ok": journaled.ok, "acknowledged": journaled.acknowledged, "lost": journaled.lost,
               "duplicates": journaled.duplicates, "kills": len(journaled.kills),
               "baseline_lost": baseline.lost if baseline else None}
    return {**report_header("crash", started), "config": asdict(cfg), "summary": summary,
            "results": {"journal": asdict(journaled), "baseline": asdict(baseline) if baseline else None}}


def _render(report: dict) -> str:
    return "\n".join(render(CrashReport(**r)) for r in report["results"].values() if r is not None)


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the crash test (journaled, then the in-memory baseline), print the counts, write JSON
    to ``json_path`` if given.

    Returns 0 when the journaled run lost nothing acknowledged and no handler saw a duplicate,
    1 otherwise, 2 on bad options.
    """
    return run_report("crash", json_path, lambda: _parse(list(argv or []), quick), _measure, _render)


if __name__ == "__main__":
    sys.exit(run(None, "--quick" in sys.argv, [a for a in sys.argv[1:] if a != "--quick"]))
