"""``latentwire hub``: the daemon. Flags fall back to ``LATENTWIRE_HUB_*`` environment variables.

SIGTERM or SIGINT starts a graceful drain: new sessions are refused, connected clients get
what is queued for them (up to ``--drain-timeout`` s), then the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from ..errors import ConfigError
from .core import MiB, Hub, HubConfig
from .server import serve

log = logging.getLogger("latentwire.hub")


def _env(name: str, default: object) -> object:
    return os.environ.get(f"LATENTWIRE_HUB_{name}", default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the hub's flags to ``parser``."""
    d = HubConfig()
    a = parser.add_argument
    a("--host", default=_env("HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    a("--port", type=int, default=int(_env("PORT", 7878)), help="port (0 picks a free one; default 7878)")
    a("--max-message-bytes", type=int, default=int(_env("MAX_MESSAGE_BYTES", d.max_message_bytes)),
      help=f"largest message accepted (default {d.max_message_bytes // MiB} MiB)")
    a("--max-frame-bytes", type=int, default=int(_env("MAX_FRAME_BYTES", d.max_frame_bytes)),
      help="largest gRPC message; bigger frames are chunked")
    a("--publish-window", type=int, default=int(_env("PUBLISH_WINDOW", d.publish_window)),
      help="unacked publishes a client may have in flight")
    a("--session-max-bytes", type=int, default=int(_env("SESSION_MAX_BYTES", d.session_max_bytes)),
      help="bytes queued + unacked per session before producers wait")
    a("--session-max-messages", type=int, default=int(_env("SESSION_MAX_MESSAGES", d.session_max_messages)),
      help="messages queued + unacked per session before producers wait")
    a("--session-expiry", type=float, default=float(_env("SESSION_EXPIRY", d.session_expiry)),
      help="seconds a disconnected session is kept for resume")
    a("--drain-timeout", type=float, default=float(_env("DRAIN_TIMEOUT", 10.0)),
      help="seconds to deliver queued messages on SIGTERM")
    a("--tls-cert", default=_env("TLS_CERT", None), help="PEM certificate (enables TLS: grpcs://)")
    a("--tls-key", default=_env("TLS_KEY", None), help="PEM private key for --tls-cert")
    a("--tls-client-ca", default=_env("TLS_CLIENT_CA", None),
      help="PEM CA bundle: require client certificates signed by it (mutual TLS)")


def config_from_args(args: argparse.Namespace) -> HubConfig:
    """The `HubConfig` the flags describe; raises `ConfigError` naming a bad one."""
    return HubConfig(
        max_message_bytes=args.max_message_bytes,
        max_frame_bytes=args.max_frame_bytes,
        publish_window=args.publish_window,
        session_max_bytes=args.session_max_bytes,
        session_max_messages=args.session_max_messages,
        session_expiry=args.session_expiry,
    )


async def _main(args: argparse.Namespace) -> int:
    hub = Hub(config_from_args(args), name="daemon")
    server = await serve(hub, host=args.host, port=args.port, tls_cert=args.tls_cert,
                         tls_key=args.tls_key, tls_client_ca=args.tls_client_ca)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # One parseable line, so scripts and tests can find the port when --port 0 was asked.
    print(f"latentwire hub listening on {server.url}", flush=True)
    await stop.wait()
    log.warning("draining (up to %.0f s)", args.drain_timeout)
    drained = await server.stop(grace=args.drain_timeout)
    s = hub.stats
    print(f"latentwire hub stopped: {'drained' if drained else 'drain timed out'}; "
          f"published={s.published} delivered={s.delivered} rejected={s.rejected}", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit status."""
    try:
        return asyncio.run(_main(args))
    except ConfigError as exc:
        print(f"latentwire hub: {exc}", flush=True)
        return 2
