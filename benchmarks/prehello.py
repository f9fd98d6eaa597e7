"""``latentwire bench prehello``: what clients that never say hello cost a hub in memory.

A ``latentwire hub`` daemon runs as its own process. This process opens ``--streams`` gRPC
calls to it (4 and 64 by default) that skip the hello: each sends the first 1 KiB chunk of a
publish whose header declares ``--declared-mib`` MiB (250: just under the default
``--max-message-bytes``) and then keeps its call open. For ``--hold-s`` seconds the hub's RSS
is sampled every 20 ms; the report gives its peak growth over the RSS before the streams
opened, and how many calls the hub ended (it should refuse each at once: a client it has not
admitted may not make it buffer anything).

Run::

    latentwire bench prehello --json bench-results/prehello.json
    latentwire bench prehello --streams 4 --streams 64 --hold-s 2
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ._report import bench_parser, progress, report_header, run_report
from .bus import MiB, _RssSampler, _start_hub


@dataclass
class PrehelloConfig:
    """One run: how many pre-hello streams, what each declares, how long they are held."""

    streams: list[int] = field(default_factory=lambda: [4, 64])
    declared_mib: int = 250  # payload size each stream's header declares
    hold_s: float = 2.0  # how long the streams stay open while the hub's RSS is sampled
    growth_limit_mib: float = 64.0  # the run fails above this growth (declared: 250 MiB each)
    quick: bool = False


async def _read_all(call: Any) -> None:
    import grpc.aio

    while await call.read() is not grpc.aio.EOF:
        pass


async def _streams(url: str, count: int, declared: int, hold_s: float, hub_pid: int) -> dict:
    """Open ``count`` pre-hello streams to the hub at ``url``; the hub's RSS while they are held."""
    import grpc
    import grpc.aio

    from latentwire._proto import bus_pb2 as pb
    from latentwire._wire import PREFIX
    from latentwire._grpc_stream import METHOD

    envelope = pb.Envelope(id="big", topic="t")
    envelope.tensor.dtype = "uint8"
    envelope.tensor.shape.append(declared)
    header = pb.Frame(payload_size=declared, publish=pb.Publish(seq=1, envelope=envelope)).SerializeToString()
    first_chunk = PREFIX.pack(len(header), 1024) + header + b"\0" * 1024
    async with grpc.aio.insecure_channel(url.split("://", 1)[1]) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        calls = [channel.stream_stream(METHOD)() for _ in range(count)]
        with _RssSampler({"hub": hub_pid}) as rss:
            await asyncio.sleep(0.2)  # the baseline: connected, nothing sent yet
            rss.baseline = rss.sample()
            rss.peak = dict(rss.baseline)
            await asyncio.gather(*(call.write(first_chunk) for call in calls), return_exceptions=True)
            # Read what the hub answers (gRPC hands a call's status over only after its
            # messages), while the streams are held open.
            answers = [asyncio.ensure_future(_read_all(call)) for call in calls]
            await asyncio.sleep(hold_s)
            ended = [call for call in calls if call.done()]
            refused = sum([await call.code() != grpc.StatusCode.OK for call in ended])
            for answer in answers:
                answer.cancel()
        for call in calls:
            call.cancel()
    return {"streams": count, "declared_mib": declared / MiB,
            "hub_rss_before_mib": rss.baseline["hub"] / MiB, "hub_rss_peak_mib": rss.peak["hub"] / MiB,
            "hub_rss_growth_mib": rss.growth_mib("hub"), "calls_ended": len(ended), "calls_refused": refused}


async def prehello_run(cfg: PrehelloConfig, log: Any = print) -> list[dict]:
    """Measure each stream count of ``cfg`` against one hub daemon."""
    hub, url = await _start_hub()
    try:
        results = []
        for count in cfg.streams:
            result = await _streams(url, count, cfg.declared_mib * MiB, cfg.hold_s, hub.pid)
            log(f"{count} pre-hello streams: hub RSS {result['hub_rss_before_mib']:.0f} -> "
                f"{result['hub_rss_peak_mib']:.0f} MiB, {result['calls_refused']}/{count} refused")
            results.append(result)
        return results
    finally:
        await hub.stop()


def render(report: dict) -> str:
    """The table of one report."""
    lines = [f"pre-hello streams, each declaring {report['config']['declared_mib']} MiB "
             f"(held {report['config']['hold_s']:g} s):",
             f"  {'streams':>7} {'hub RSS before':>15} {'peak':>9} {'growth':>9} {'refused':>8}"]
    for r in report["results"]:
        lines.append(f"  {r['streams']:>7} {r['hub_rss_before_mib']:>11.0f} MiB "
                     f"{r['hub_rss_peak_mib']:>5.0f} MiB "
                     f"{r['hub_rss_growth_mib']:>5.0f} MiB {r['calls_refused']:>4}/{r['streams']}")
    lines.append("  result: " + ("PASS" if report["summary"]["ok"] else "FAIL"))
    return "\n".join(lines)


def _parse(argv: list[str], quick: bool) -> PrehelloConfig:
    cfg = PrehelloConfig(streams=[4], hold_s=0.5, quick=True) if quick else PrehelloConfig()
    parser = bench_parser("prehello", "hub memory under clients that never say hello")
    parser.add_argument("--streams", type=int, action="append", metavar="N",
                        help="pre-hello streams to open (repeatable; default 4 and 64)")
    parser.add_argument("--declared-mib", type=int, default=cfg.declared_mib,
                        help="payload MiB each stream's header declares")
    parser.add_argument("--hold-s", type=float, default=cfg.hold_s, help="seconds the streams stay open")
    args = parser.parse_args(argv)
    if args.streams and min(args.streams) < 1:
        parser.error(f"--streams must be >= 1, got {min(args.streams)}")
    if args.declared_mib < 1 or args.hold_s <= 0:
        parser.error("--declared-mib and --hold-s must be positive")
    cfg.streams = args.streams or cfg.streams
    cfg.declared_mib, cfg.hold_s = args.declared_mib, args.hold_s
    return cfg


def _measure(cfg: PrehelloConfig) -> dict:
    started = time.time()
    results = asyncio.run(prehello_run(cfg, progress))
    ok = all(r["hub_rss_growth_mib"] < cfg.growth_limit_mib and r["calls_refused"] == r["streams"]
             for r in results)
    summary = {"ok": ok, **{f"hub_rss_growth_mib_{r['streams']}": r["hub_rss_growth_mib"] for r in results}}
    return {**report_header("prehello", started), "config": asdict(cfg), "summary": summary,
            "results": results}


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the pre-hello memory benchmark, print the table, write JSON to ``json_path`` if given.

    Returns 0 when the hub refused every stream and its RSS grew less than 64 MiB for each
    stream count, 1 otherwise, 2 on bad options.
    """
    return run_report("prehello", json_path, lambda: _parse(list(argv or []), quick), _measure, render,
                      requires="psutil")


if __name__ == "__main__":
    sys.exit(run(None, "--quick" in sys.argv, [a for a in sys.argv[1:] if a != "--quick"]))
