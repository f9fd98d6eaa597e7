"""``latentwire hub``: the daemon (its flags are in `latentwire.hub.options`).

SIGTERM or SIGINT starts a graceful drain: new sessions are refused, connected clients get
what is queued for them (up to ``--drain-timeout`` s), then the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from latentwire.errors import ConfigError

from .auth import reload_policy
from .core import Hub
from .dashboard import Dashboard
from .journal import Journal, JournalError
from .logs import configure_logging
from .metrics import HubMetrics
from .options import config_from_args, limits_from_args, policy_from_args
from .server import serve

log = logging.getLogger("latentwire.hub")


async def _main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    policy = await asyncio.to_thread(policy_from_args, args)
    journal = None
    if args.journal:
        journal = await Journal.open(args.journal, max_age=args.journal_max_age,
                                     max_bytes=args.journal_max_bytes, recover=args.journal_recover)
    try:
        return await _serve(args, Hub(config, name="daemon", journal=journal, policy=policy))
    finally:
        if journal is not None:
            await journal.aclose()  # commits what the last acks and drops submitted


async def _serve(args: argparse.Namespace, hub: Hub) -> int:
    metrics = HubMetrics(hub, topic_patterns=args.metrics_topic) if args.metrics_port is not None else None
    server = await serve(hub, host=args.host, port=args.port, tls_cert=args.tls_cert,
                         tls_key=args.tls_key, tls_client_ca=args.tls_client_ca)
    dashboard = Dashboard(hub) if args.dashboard_port is not None else None
    metrics_port = dashboard_port = None
    try:  # before the banner: a metrics or dashboard port in use stops the start, like a bus port
        if metrics is not None:
            metrics_port = await metrics.start(args.metrics_port, args.metrics_host)
        if dashboard is not None:
            dashboard_port = await dashboard.start(args.dashboard_port, args.dashboard_host)
    except ConfigError:
        if metrics is not None:
            await metrics.stop()
        await server.stop(grace=0)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()
    if args.auth_file:  # SIGHUP: apply an edited auth file (rotated tokens, new ACLs) in place
        def reload() -> None:
            task = loop.create_task(reload_policy(hub, args.auth_file, limits_from_args(args)))
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        loop.add_signal_handler(signal.SIGHUP, reload)
    # One parseable line, so scripts and tests can find the port when --port 0 was asked.
    print(f"latentwire hub listening on {server.url}", flush=True)
    if hub.policy.auth is None:
        log.warning("no --auth-file: any agent may connect and use any topic")
    else:
        log.info("auth file %s: %d agents", args.auth_file, len(hub.policy.auth.agents))
    if metrics is not None:
        print(f"latentwire hub metrics on http://{args.metrics_host}:{metrics_port}/metrics", flush=True)
    if dashboard is not None:
        if hub.policy.auth is None and args.dashboard_host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("dashboard on %s without --auth-file: whoever reaches it sees every agent and "
                        "topic", args.dashboard_host)
        host = f"[{args.dashboard_host}]" if ":" in args.dashboard_host else args.dashboard_host
        print(f"latentwire hub dashboard on http://{host}:{dashboard_port}/", flush=True)
    if not hub.journal.durable:
        log.warning("no --journal: messages live in memory only; what is queued or unacknowledged "
                    "is lost if the hub crashes or restarts")
    else:
        s = hub.journal.stats
        print(f"latentwire hub journal {hub.journal.path}: {s.restored_sessions} sessions and "
              f"{s.restored_deliveries} unacknowledged deliveries restored", flush=True)
    await stop.wait()
    log.info("draining (up to %.0f s)", args.drain_timeout)
    drained = await server.stop(grace=args.drain_timeout)
    if metrics is not None:
        await metrics.stop()
    if dashboard is not None:
        await dashboard.stop()
    s = hub.stats
    print(f"latentwire hub stopped: {'drained' if drained else 'drain timed out'}; "
          f"published={s.published} delivered={s.delivered} rejected={s.rejected}", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit status."""
    try:
        configure_logging(args.log_format, args.log_level)
        return asyncio.run(_main(args))
    except (ConfigError, JournalError) as exc:
        print(f"latentwire hub: {exc}", flush=True)
        return 2
