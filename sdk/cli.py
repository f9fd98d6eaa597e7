"""The ``latentwire`` command: ``hub``, ``demo``, ``bench``, ``train``, ``rcl``, and ``sub``,
``pub`` and ``top`` for operators (`latentwire._ops_cli`).

The CLI composes the layers, so it imports the hub and benchmarks inside their subcommands
(the SDK itself never imports them at import time).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from urllib.parse import urlsplit

from ._version import __version__
from .errors import ConfigError, LatentwireError


def _hub(args: argparse.Namespace) -> int:
    from .hub.daemon import run

    return run(args)


def _hash_token(args: argparse.Namespace) -> int:
    from .hub.tokens import main

    return main(args.extra + (["--help"] if args.help else []))


# How long `latentwire demo` waits for the hub at --url before it loads any model.
DEMO_CONNECT_TIMEOUT = 5.0


async def _check_demo_url(url: str | None) -> None:
    """Refuse a bad ``--url`` and reach its hub (then leave) before the demo loads any model: a
    typo or a hub that is not running ends in one line saying how to fix it, not after the models
    load. The embedded ``inproc://`` hub needs no check."""
    from ._connect import URL_ENV, connect
    from .errors import ConnectError

    # A bad URL raises ConfigError here (exit 2).
    bus = connect(url, agent="latentwire-demo-check", connect_timeout=DEMO_CONNECT_TIMEOUT)
    if bus.url.startswith("inproc:"):
        return
    try:
        async with bus:
            pass
    except ConnectError as exc:
        parts = urlsplit(bus.url)
        start = (f"start one with `latentwire hub --port {parts.port}`" if parts.scheme.startswith("grpc")
                 else "start the MQTT broker")
        instead = "leave out --url" if url else f"unset {URL_ENV}"
        raise ConnectError(f"{exc}; {start}, or {instead} to run the demo on an embedded hub") from exc


def _demo(args: argparse.Namespace) -> int:
    asyncio.run(_check_demo_url(args.url))
    if not args.bus:
        try:
            from .tinyworld.demo import DEFAULT_FAMILIES, run_vlm_demo
        except ModuleNotFoundError as exc:  # the models extra is not installed: the bus demo still runs
            if exc.name is None or exc.name.startswith("latentwire"):
                raise  # our own module missing is a bug, not a missing extra
            print(f"(VLM demo needs `pip install latentwire[models]`: {exc}; running the bus demo)\n")
        else:
            return asyncio.run(run_vlm_demo(args.url, task=args.task, episodes=args.episodes, length=args.length,
                                            families=tuple(args.families) if args.families else DEFAULT_FAMILIES,
                                            space=args.space, untrained=args.untrained))
    from ._demo import run_demo

    return asyncio.run(run_demo(args.url, rounds=args.rounds))


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks import BENCHMARKS, run_benchmark

    if args.name is None:
        args.parser.print_help()
        print(f"\nbenchmarks: {', '.join(sorted(BENCHMARKS))}")
        return 0 if args.help else 2
    extra = [*args.extra, "--help"] if args.help else args.extra
    return run_benchmark(args.name, args.json, args.quick, extra)


# Job name -> module with ``main(argv)``; imported only when run, so `--help` stays fast and the
# bus-only install (no torch) still has a working command.
TRAIN_JOBS = {
    "anchors": "latentwire.training.anchors",
    "codec": "latentwire.training.align",
    "mopd": "latentwire.training.mopd.job",
    "ship": "latentwire.training.ship",
    "space-maps": "latentwire.training.shared_space",
    "tinyworld": "latentwire.training.pretrain",
}
# Old job name -> its new name: still run (with a warning), not listed.
DEPRECATED_TRAIN_JOBS = {"hub-maps": "space-maps"}
RCL_MODULE = "latentwire.agents.rcl.cli"


def _run_main(module_name: str, argv: list[str]) -> int:
    """Import ``module_name`` and call its ``main(argv)``; an int result is the exit status."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if (exc.name or "").startswith("latentwire"):
            raise  # our own module is missing: a packaging bug, not a missing extra
        print(f"latentwire: {module_name} needs `pip install latentwire[models]`: {exc}", file=sys.stderr)
        return 2
    result = module.main(argv)
    return result if isinstance(result, int) else 0


def _train(args: argparse.Namespace) -> int:
    if args.job in DEPRECATED_TRAIN_JOBS:
        args.job = DEPRECATED_TRAIN_JOBS[args.job]
        print(f"latentwire train: this job name is deprecated, use `latentwire train {args.job}`", file=sys.stderr)
    if args.job is None or args.job not in TRAIN_JOBS:
        if args.job is not None:
            print(f"latentwire train: unknown job {args.job!r}", file=sys.stderr)
        args.parser.print_help()
        print(f"\njobs: {', '.join(sorted(TRAIN_JOBS))}  (`latentwire train JOB --help` for its options)")
        return 0 if args.help and args.job is None else 2
    return _run_main(TRAIN_JOBS[args.job], [*args.extra, *(["--help"] if args.help else [])])


def _rcl(args: argparse.Namespace) -> int:
    return _run_main(RCL_MODULE, [*args.extra, *(["--help"] if args.help else [])])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``latentwire`` command."""
    parser = argparse.ArgumentParser(prog="latentwire", description="Agents that talk in latents.")
    parser.add_argument("--version", action="version", version=f"latentwire {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    hub = sub.add_parser("hub", help="run the hub daemon (gRPC)")
    from .hub.options import add_arguments  # light: no gRPC import for other commands

    add_arguments(hub)
    hub.set_defaults(func=_hub)

    hash_token = sub.add_parser("hash-token", add_help=False,
                                help="print the auth-file hash of an agent token (`--new` makes a token)")
    hash_token.add_argument("-h", "--help", action="store_true", help="the command's options")
    hash_token.set_defaults(func=_hash_token)

    demo = sub.add_parser("demo", help="VLM agents talking in latents and in text on an embedded hub")
    demo.add_argument("--url", default=None, help="bus URL (default: $LATENTWIRE_URL, else inproc://, no server needed)")
    from .tinyworld.tasks import TASKS  # light: stdlib only

    demo.add_argument("--task", default="secret", choices=list(TASKS), help="tinyworld task (default: secret)")
    demo.add_argument("--episodes", type=int, default=8, help="episodes per mode")
    demo.add_argument("--length", type=int, default=8, help="secret length in characters (default: 8)")
    demo.add_argument("--families", nargs=2, metavar=("SENDER", "RECEIVER"),
                      help="the sender's and the receiver's family (default: a pair never trained together)")
    demo.add_argument("--space", metavar="DIR",
                      help="a shared space of your own (latentwire train ship --out DIR); default: the shipped one")
    demo.add_argument("--untrained", action="store_true",
                      help="fresh untrained codecs instead of a trained space (latent mode reads a blank image)")
    demo.add_argument("--bus", action="store_true", help="the bus-only demo (no models: text and raw latents)")
    demo.add_argument("--rounds", type=int, default=3, help="camera frames to send (--bus)")
    demo.set_defaults(func=_demo)

    # No automatic -h here: `latentwire bench bus --help` must reach the benchmark's own parser.
    bench = sub.add_parser("bench", add_help=False,
                           help="run a benchmark and print ratios against its baseline")
    bench.add_argument("name", nargs="?", help="benchmark name, e.g. bus")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    bench.add_argument("-h", "--help", action="store_true", help="this help, or a benchmark's options")
    bench.set_defaults(func=_bench, parser=bench)

    # Jobs own their options: everything after the job name is passed through to it.
    train = sub.add_parser("train", add_help=False, help="run a training job (anchors, codec, space-maps, ship, mopd, tinyworld)")
    train.add_argument("job", nargs="?", help="job name, e.g. codec")
    train.add_argument("-h", "--help", action="store_true", help="this help, or a job's options")
    train.set_defaults(func=_train, parser=train)

    rcl = sub.add_parser("rcl", add_help=False, help="reflective context learning (`latentwire rcl train --config FILE`)")
    rcl.add_argument("-h", "--help", action="store_true", help="the RCL command's options")
    rcl.set_defaults(func=_rcl, parser=rcl)

    from ._ops_cli import add_commands  # sub, pub, top (light: their imports happen when run)

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentwire`` command."""
    parser = build_parser()
    # A benchmark's own options (`latentwire bench bus --help`) are passed through to it.
    args, extra = parser.parse_known_args(argv)
    if args.command in ("bench", "train", "rcl", "hash-token"):
        args.extra = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except LatentwireError as exc:
        # One line naming the problem, never a traceback: a bad setting is a usage error (2),
        # anything else (no hub reachable, a refused token) a failed run (1).
        print(f"latentwire {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
