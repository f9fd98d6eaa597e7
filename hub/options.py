"""The ``latentwire hub`` flags; each falls back to a ``LATENTWIRE_HUB_<FLAG>`` environment variable.

Kept apart from the daemon so that building the CLI's parser imports no gRPC.
"""

from __future__ import annotations

import argparse
import os

from latentwire.errors import ConfigError

from .auth import Limits, Policy
from .core import MiB, HubConfig


def _env(name: str, default: object) -> object:
    # argparse converts a string default with the flag's type, so a bad value in the
    # environment gets the same clear error as on the command line, at parse time.
    return os.environ.get(f"LATENTWIRE_HUB_{name}", default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the hub's flags to ``parser``."""
    d = HubConfig()
    parser.epilog = ("Every flag can also be set in the environment as LATENTWIRE_HUB_<FLAG> "
                     "(--journal-max-age: LATENTWIRE_HUB_JOURNAL_MAX_AGE); a flag given here wins.")
    a = parser.add_argument
    a("--host", default=_env("HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    a("--port", type=int, default=_env("PORT", 7878), help="port (0 picks a free one; default 7878)")
    a("--max-message-bytes", type=int, default=_env("MAX_MESSAGE_BYTES", d.max_message_bytes),
      help=f"largest message accepted (default {d.max_message_bytes // MiB} MiB)")
    a("--max-frame-bytes", type=int, default=_env("MAX_FRAME_BYTES", d.max_frame_bytes),
      help="largest gRPC message; bigger frames are chunked")
    a("--publish-window", type=int, default=_env("PUBLISH_WINDOW", d.publish_window),
      help="unacked publishes a client may have in flight")
    a("--publish-window-bytes", type=int, default=_env("PUBLISH_WINDOW_BYTES", d.publish_window_bytes),
      help=f"... and their payload bytes (default {d.publish_window_bytes // MiB} MiB)")
    a("--session-max-bytes", type=int, default=_env("SESSION_MAX_BYTES", d.session_max_bytes),
      help="bytes queued + unacked per session before producers wait")
    a("--session-max-messages", type=int, default=_env("SESSION_MAX_MESSAGES", d.session_max_messages),
      help="messages queued + unacked per session before producers wait")
    a("--session-expiry", type=float, default=_env("SESSION_EXPIRY", d.session_expiry),
      help="seconds a disconnected session is kept for resume")
    a("--drain-timeout", type=float, default=_env("DRAIN_TIMEOUT", 10.0),
      help="seconds to deliver queued messages on SIGTERM")
    a("--journal", default=_env("JOURNAL", None), metavar="FILE",
      help="SQLite journal: accepted messages and sessions survive a crash or restart "
           "(default: none, in memory only)")
    a("--journal-max-age", type=float, default=_env("JOURNAL_MAX_AGE", None), metavar="SECONDS",
      help="drop journaled messages older than this (default: keep until acknowledged)")
    a("--journal-max-bytes", type=int, default=_env("JOURNAL_MAX_BYTES", None), metavar="BYTES",
      help="drop the oldest journaled messages above this many stored bytes (default: no cap)")
    a("--journal-recover", action="store_true",
      default=str(_env("JOURNAL_RECOVER", "")).strip().lower() in ("1", "true", "yes", "on"),
      help="start even though the journal's -wal file is missing or damaged after a crash, accepting "
           "the loss of what was acknowledged since its last checkpoint (default: refuse)")
    a("--tls-cert", default=_env("TLS_CERT", None), help="PEM certificate (enables TLS: grpcs://)")
    a("--tls-key", default=_env("TLS_KEY", None), help="PEM private key for --tls-cert")
    a("--tls-client-ca", default=_env("TLS_CLIENT_CA", None),
      help="PEM CA bundle: require client certificates signed by it (mutual TLS)")
    # Security and observability: docs/security.md, docs/observability.md.
    a("--auth-file", default=_env("AUTH_FILE", None), metavar="FILE",
      help="TOML/JSON file of agents, hashed tokens, ACLs and limits (default: no authentication)")
    a("--publish-rate", type=float, default=_env("PUBLISH_RATE", None), metavar="PER_S",
      help="publishes per second a session may sustain (default: no limit)")
    a("--publish-burst", type=int, default=_env("PUBLISH_BURST", None), metavar="N",
      help="publishes a session may send at once above --publish-rate (default: 1 s of it)")
    a("--max-subscriptions", type=int, default=_env("MAX_SUBSCRIPTIONS", None), metavar="N",
      help="topic filters a session may hold (default: no limit)")
    a("--metrics-port", type=int, default=_env("METRICS_PORT", None), metavar="PORT",
      help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (0 picks a port; default off)")
    a("--metrics-host", default=_env("METRICS_HOST", "127.0.0.1"), help="address for --metrics-port")
    a("--metrics-topic", action="append", metavar="PATTERN",
      default=[p for p in str(_env("METRICS_TOPIC", "")).split(",") if p],
      help="label message counters with this topic pattern (repeatable; env: comma-separated); "
           "other topics are labelled by their first level")
    a("--dashboard-port", type=int, default=_env("DASHBOARD_PORT", None), metavar="PORT",
      help="serve the web dashboard on http://DASHBOARD_HOST:PORT/ (0 picks a port; default off); "
           "with --auth-file it needs an admin agent's token")
    a("--dashboard-host", default=_env("DASHBOARD_HOST", "127.0.0.1"), help="address for --dashboard-port")
    a("--log-format", choices=["text", "json"], default=_env("LOG_FORMAT", "text"),
      help="text lines, or one JSON object per line (default text)")
    a("--log-level", choices=["debug", "info", "warning", "error"], default=_env("LOG_LEVEL", None),
      help="least severe log level shown (default warning, or info/debug with -v/-vv)")


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The per-session `Limits` of the flags; raises `ConfigError` naming a bad one."""
    for flag in ("publish_rate", "publish_burst", "max_subscriptions"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive number, got {value}")
    return Limits(publish_rate=args.publish_rate, publish_burst=args.publish_burst,
                  max_subscriptions=args.max_subscriptions)


def policy_from_args(args: argparse.Namespace) -> Policy:
    """The `Policy` of ``--auth-file`` and the limit flags; raises `ConfigError` naming a bad one.

    Loading hashes a decoy token (scrypt), so call it off the event loop."""
    return Policy.from_file(args.auth_file, limits_from_args(args))


def config_from_args(args: argparse.Namespace) -> HubConfig:
    """The `HubConfig` the flags describe; raises `ConfigError` naming a bad one (ports too,
    which gRPC would wrap into another port, so nothing starts on a wrong one)."""
    for flag in ("port", "metrics_port", "dashboard_port"):
        value = getattr(args, flag)
        if value is not None and not 0 <= value <= 65535:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a port number from 0 to 65535, "
                              f"got {value}")
    return HubConfig(
        max_message_bytes=args.max_message_bytes,
        max_frame_bytes=args.max_frame_bytes,
        publish_window=args.publish_window,
        publish_window_bytes=args.publish_window_bytes,
        session_max_bytes=args.session_max_bytes,
        session_max_messages=args.session_max_messages,
        session_expiry=args.session_expiry,
    )
