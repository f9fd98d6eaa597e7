"""`connect()`: pick a transport by URL and build a `Bus` on it."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from ._bus import Bus
from .errors import ConfigError
from .transports import Transport, transport_class

DEFAULT_URL = "inproc://"
URL_ENV = "LATENTWIRE_URL"

_BUS_OPTIONS = {"receive_window", "connect_timeout", "reconnect_timeout", "operation_timeout",
                "dedup_window"}


def transport_for_url(url: str, *, token: str | None = None, **options: Any) -> Transport:
    """The transport for ``url``: the class registered for its scheme (see
    `latentwire.transports.register_transport`) parses the URL itself (`Transport.from_url`)."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ConfigError(f"malformed URL {url!r} ({exc}); use a URL like grpc://127.0.0.1:7878") from None
    return transport_class(scheme, url=url).from_url(url, token=token, **options)


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
    ``tls_server_name``, ``max_frame_bytes`` for grpc/grpcs; see `MqttTransport` for mqtt/mqtts,
    `NatsSettings` for nats/tls).
    """
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    bus_options = {k: options.pop(k) for k in list(options) if k in _BUS_OPTIONS}
    if transport is None:
        transport = transport_for_url(url, token=token, **options)
    elif options:
        raise ConfigError(f"transport options {sorted(options)} given with transport=")
    return Bus(transport, agent=agent, token=token, url=url, **bus_options)
