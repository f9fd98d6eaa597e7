"""``latentwire sub``, ``pub`` and ``top``: watch and drive a bus from a shell.

``sub`` and ``pub`` are ordinary agents, so they work on every bus URL (``grpc[s]://``,
``mqtt[s]://``; ``inproc://`` only reaches this one process). ``top`` reads the hub's admin
API, which only a hub daemon has. Each takes ``--url`` (default ``$LATENTWIRE_URL``),
``--token`` (default ``$LATENTWIRE_TOKEN``) and ``--tls-ca``; ``sub``/``pub`` also ``--agent``
(default ``$LATENTWIRE_AGENT``, else a random ``cli-...`` id).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from .errors import ConfigError, InvalidMessage

TOKEN_ENV = "LATENTWIRE_TOKEN"
AGENT_ENV = "LATENTWIRE_AGENT"


def add_commands(commands: Any) -> None:
    """Add ``sub``, ``pub`` and ``top`` to the ``latentwire`` command's subparsers."""
    sub = commands.add_parser("sub", help="print messages on topic filters as they arrive (like mosquitto_sub -v)")
    sub.add_argument("filters", nargs="+", metavar="FILTER", help="topic filter, + and # wildcards ('#': everything)")
    sub.add_argument("--json", action="store_true", help="one JSON object per message")
    sub.add_argument("--group", default=None, metavar="NAME",
                     help="share the messages with the other subscribers of this group (replicas): "
                          "each goes to one")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N", help="exit after N messages (default: run until Ctrl-C)")
    _common(sub, agent=True)
    sub.set_defaults(func=_run_sub)

    pub = commands.add_parser("pub", help="publish one text message or a latent from a .npy file")
    pub.add_argument("topic", help="topic to publish to")
    pub.add_argument("text", nargs="?", help="the text to send")
    pub.add_argument("--latent", metavar="FILE.npy", help="send this array (numpy.save format) instead of text")
    pub.add_argument("--space", help="the latent's codec space, e.g. hub")
    pub.add_argument("--family", help="the model family that made the latent, e.g. gemma3")
    _common(pub, agent=True)
    pub.set_defaults(func=_run_pub)

    top = commands.add_parser("top", help="a live table of a hub's agents and topics (its admin API)")
    top.add_argument("--once", action="store_true", help="print one table and exit")
    top.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    top.add_argument("--topics", type=int, default=20, metavar="N", help="busiest topics shown (default 20)")
    _common(top, agent=False)
    top.set_defaults(func=_run_top)


def _common(parser: argparse.ArgumentParser, *, agent: bool) -> None:
    parser.add_argument("--url", default=None, help="bus URL (default: $LATENTWIRE_URL)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token (default: ${TOKEN_ENV}; prefer the variable: arguments show in ps)")
    parser.add_argument("--tls-ca", default=None, metavar="FILE", help="PEM roots to trust for grpcs:// or mqtts://")
    if agent:
        parser.add_argument("--agent", default=os.environ.get(AGENT_ENV),
                            help=f"agent id (default: ${AGENT_ENV}, else a random cli-... id); an auth file "
                                 "must list it with this token")


def _url(args: argparse.Namespace) -> str:
    from ._connect import DEFAULT_URL, URL_ENV

    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    if url.startswith("inproc:"):
        print(f"latentwire {args.command}: note: {url} is a hub inside this process; nothing else "
              "reaches it (give --url or $LATENTWIRE_URL)", file=sys.stderr)
    return url


def _bus(args: argparse.Namespace, role: str) -> Any:
    from ._connect import connect

    agent = args.agent or f"cli-{role}-{uuid.uuid4().hex[:8]}"
    options = {"tls_ca": args.tls_ca} if args.tls_ca else {}
    return connect(_url(args), agent=agent, token=args.token, **options)


def _check(kind: str, value: str, check: Any) -> str:
    try:
        return check(value)
    except InvalidMessage as exc:  # bad input on the command line: exit 2, one line
        raise ConfigError(f"{kind} {value!r}: {exc}") from None


# -- sub --------------------------------------------------------------------------------------


def _run_sub(args: argparse.Namespace) -> int:
    from ._topics import validate_filter, validate_group

    filters = [_check("filter", f, validate_filter) for f in args.filters]
    if args.group is not None:
        validate_group(args.group)  # a ConfigError: one line, exit 2
    if args.count < 0:
        raise ConfigError(f"--count must be 0 (no limit) or more, got {args.count}")
    try:
        return asyncio.run(_sub(args, filters))
    except BrokenPipeError:  # `latentwire sub '#' | head`: the reader has seen enough
        sys.stderr.close()
        return 0


async def _sub(args: argparse.Namespace, filters: list[str]) -> int:
    from ._peek import describe, summary_line

    async with _bus(args, "sub") as bus, bus.subscribe(*filters, group=args.group) as sub:
        # On stderr, so stdout holds only messages; scripts can wait for this line.
        group = f" in group {args.group}" if args.group else ""
        print(f"latentwire sub: subscribed to {' '.join(filters)}{group} as {bus.agent}",
              file=sys.stderr, flush=True)
        seen = 0
        async for msg in sub:
            print(json.dumps(describe(msg)) if args.json else summary_line(msg), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


# -- pub --------------------------------------------------------------------------------------


def load_latent(path: str, space: str | None = None, family: str | None = None) -> Any:
    """The array in a ``.npy`` file as a `Latent`; raises `ConfigError` in one line naming the
    file and what is wrong with it (unreadable, not .npy, object or unsupported dtype)."""
    import numpy as np

    from ._latent import Latent

    try:
        data = np.load(path, allow_pickle=False)  # never unpickle: a .npy file can carry code
    except OSError as exc:
        raise ConfigError(f"--latent {path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:
        if "Object arrays" in str(exc):
            raise ConfigError(f"--latent {path}: holds an object array (Python objects); save a numeric "
                              "array, e.g. numpy.save(path, x.astype('float32'))") from None
        why = "" if "pickled" in str(exc) else f" ({exc})"  # numpy's pickle advice is not for us
        raise ConfigError(f"--latent {path}: not a .npy file that numpy.save wrote{why}") from None
    if not isinstance(data, np.ndarray):
        data.close()
        raise ConfigError(f"--latent {path}: holds several arrays (.npz); save one array with numpy.save")
    try:
        return Latent(data, space=space, family=family)
    except InvalidMessage as exc:
        raise ConfigError(f"--latent {path}: {exc}") from None


def _run_pub(args: argparse.Namespace) -> int:
    from ._topics import validate_topic

    _check("topic", args.topic, validate_topic)
    if (args.text is None) == (args.latent is None):
        raise ConfigError("give the TEXT to publish or --latent FILE.npy (one of them)")
    if args.latent is None and (args.space or args.family):
        raise ConfigError("--space and --family describe a --latent; a text message has neither")
    body: dict[str, Any] = ({"latent": load_latent(args.latent, args.space, args.family)}
                            if args.latent is not None else {"text": args.text})
    return asyncio.run(_pub(args, body))


async def _pub(args: argparse.Namespace, body: dict[str, Any]) -> int:
    async with _bus(args, "pub") as bus:
        await bus.publish(args.topic, **body)  # returns once the hub accepted it
    return 0


# -- top --------------------------------------------------------------------------------------


def _rate(x: float) -> str:
    return f"{x:.1f}" if x < 1000 else f"{x / 1000:.1f}k"


def _bytes(x: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024:
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


async def _frame(admin: Any, topics: int) -> Any:
    """One screen of ``top``: a header line, the sessions table and the topics table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    stats, sessions, busiest = await asyncio.gather(admin.stats(), admin.sessions(), admin.topics(topics))
    now = time.time()
    head = Text.assemble(
        ("latentwire hub ", "bold"), f"{stats.name} {stats.hub_id}  up {_age(now - stats.started_at_ns / 1e9)}  ",
        f"agents {stats.sessions_connected}" + (f" (+{stats.sessions_detached} detached)" if stats.sessions_detached else ""),
        f"  published {stats.published} ({_rate(stats.publish_rate)}/s, {_bytes(stats.publish_byte_rate)}/s)",
        f"  delivered {stats.delivered} ({_rate(stats.delivery_rate)}/s)  rejected {stats.rejected}",
        ("  DRAINING" if stats.draining else "", "bold red"))
    agents = Table(title="agents", title_justify="left", expand=True)
    for name, right in [("agent", False), ("state", False), ("since", True), ("subscriptions", False),
                        ("queued", True), ("unacked", True), ("held", True), ("pub/s", True), ("deliv/s", True)]:
        agents.add_column(name, justify="right" if right else "left", overflow="fold")
    for s in sessions:
        agents.add_row(
            s.agent, "connected" if s.connected else "detached",
            _age(now - s.connected_at_ns / 1e9) if s.connected_at_ns else "-", " ".join(s.subscriptions) or "-",
            Text(str(s.queued_messages), style="bold red" if s.queued_messages else ""),
            f"{s.unacked_messages}/{s.receive_window}", _bytes(s.queued_bytes + s.unacked_bytes),
            _rate(s.publish_rate), _rate(s.delivery_rate), style="" if s.connected else "dim")
    table = Table(title="topics", title_justify="left", expand=True)
    for name, right in [("topic", False), ("msg/s", True), ("bytes/s", True), ("messages", True), ("bytes", True)]:
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    for t in busiest:
        table.add_row(t.topic, _rate(t.message_rate), _bytes(t.byte_rate), str(t.messages), _bytes(t.bytes))
    return Group(head, agents, table)


def _run_top(args: argparse.Namespace) -> int:
    from ._admin import AdminClient

    if args.interval <= 0 or args.topics < 0:
        raise ConfigError("--interval must be above 0 and --topics 0 or more")
    try:
        import rich  # noqa: F401
    except ImportError:
        raise ConfigError("latentwire top needs rich: pip install 'latentwire[ops]'") from None
    options = {"tls_ca": args.tls_ca} if args.tls_ca else {}
    admin = AdminClient(args.url, token=args.token, **options)  # refuses a URL without a hub first
    return asyncio.run(_top(admin, args))


async def _top(admin: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    async with admin:
        if args.once:
            console.print(await _frame(admin, args.topics))
            return 0
        with Live(await _frame(admin, args.topics), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(args.interval)
                live.update(await _frame(admin, args.topics), refresh=True)
