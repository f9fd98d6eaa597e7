"""`connect()`: pick a transport by URL and build a `Bus` on it."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from ._bus import Bus
from .errors import ConfigError
from .transports.base import Transport

DEFAULT_URL = "inproc://"
URL_ENV = "LATENTWIRE_URL"
SCHEMES = ("inproc", "grpc", "grpcs", "mqtt", "mqtts")

_BUS_OPTIONS = {"receive_window", "connect_timeout", "reconnect_timeout", "operation_timeout",
                "dedup_window"}


def transport_for_url(url: str, *, token: str | None = None, **options: Any) -> Transport:
    """The transport for ``url``: ``inproc://[name]``, ``grpc://host:port``, ``grpcs://host:port``,
    ``mqtt://host[:port][/namespace]``, ``mqtts://host[:port][/namespace]``."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "inproc":
        if options:
            raise ConfigError(f"inproc:// takes no transport options, got {sorted(options)}")
        from .transports.inproc import InprocTransport

        return InprocTransport(parts.netloc or parts.path.strip("/") or "default")
    if scheme in ("grpc", "grpcs"):
        if not parts.hostname or parts.port is None:
            raise ConfigError(f"{scheme}:// URL needs a host and port, like {scheme}://127.0.0.1:7878; got {url!r}")
        from .transports.grpc import GrpcTransport

        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return GrpcTransport(f"{host}:{parts.port}", tls=scheme == "grpcs", token=token, **options)
    if scheme in ("mqtt", "mqtts"):
        try:
            from .transports.mqtt import DEFAULT_NAMESPACE, MqttTransport
        except ImportError as exc:
            raise ConfigError(f"{scheme}:// needs aiomqtt: pip install 'latentwire[mqtt]' ({exc})") from exc

        # The token travels in the bus's hello, which becomes the MQTT CONNECT's password.
        namespace = parts.path.strip("/") or DEFAULT_NAMESPACE
        return MqttTransport(parts.hostname or "", parts.port, namespace=namespace,
                             tls=scheme == "mqtts", **options)
    if scheme in ("nats", "tls", "nats+tls"):
        try:
            from .transports.nats import NatsTransport
        except ImportError as exc:
            raise ConfigError(f"{scheme}:// needs nats-py: pip install 'latentwire[nats]' ({exc})") from exc

        return NatsTransport.from_url(url, token=token, **options)
    raise ConfigError(f"unsupported URL scheme {scheme!r} in {url!r}; use one of: "
                      + ", ".join(f"{s}://" for s in SCHEMES))


def connect(
    url: str | None = None,
    *,
    agent: str | None = None,
    token: str | None = None,
    transport: Transport | None = None,
    **options: Any,
) -> Bus:
    """Connect an agent to the bus; use as ``async with connect(...) as bus``.

    ``url`` defaults to ``$LATENTWIRE_URL`` or ``inproc://`` (an embedded hub in this
    process, no server needed). ``agent`` is this connection's agent id (default: a random
    ``anon-...``); ``token`` is its bearer token. Bus options: ``receive_window``,
    ``connect_timeout``, ``reconnect_timeout``, ``operation_timeout``, ``dedup_window``; other
    keyword options go to the transport (``tls_ca``, ``tls_cert``, ``tls_key``,
    ``tls_server_name``, ``max_frame_bytes`` for grpc/grpcs; see `MqttTransport` for mqtt/mqtts).
    """
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    bus_options = {k: options.pop(k) for k in list(options) if k in _BUS_OPTIONS}
    if transport is None:
        transport = transport_for_url(url, token=token, **options)
    elif options:
        raise ConfigError(f"transport options {sorted(options)} given with transport=")
    return Bus(transport, agent=agent, token=token, url=url, **bus_options)
