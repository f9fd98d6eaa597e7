"""`AdminClient`: the hub's admin API (``latentwire.v1.Admin``) from Python, for `latentwire top`.

Only a hub daemon has it: the URL must be ``grpc://`` or ``grpcs://``. The token is sent as
``authorization: Bearer <token>``; the hub answers only an agent marked ``admin`` in its auth
file (or everyone, without an auth file).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.message import Message as ProtoMessage

from ._connect import DEFAULT_URL, URL_ENV, transport_for_url
from ._grpc_stream import translate_errors
from ._proto import admin_pb2 as apb
from ._topics import validate_filter
from .errors import ConfigError
from .transports.grpc import GrpcTransport

SERVICE = "latentwire.v1.Admin"


class AdminClient:
    """Reads a hub's sessions, topics, totals and recent headers; ``async with`` owns the channel.

    ``url`` defaults to ``$LATENTWIRE_URL``; ``token`` is an admin agent's token; other keyword
    options (``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_server_name``) are the gRPC
    transport's. Errors are `latentwire.errors` (`Unauthenticated`, `PermissionDenied`,
    `ConnectError`), as for a bus.
    """

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 10.0,
                 **options: Any) -> None:
        url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        scheme = urlsplit(url).scheme
        if scheme not in ("grpc", "grpcs"):
            where = {"inproc": "an inproc:// hub lives inside one process, out of reach",
                     "mqtt": "an MQTT broker runs no latentwire hub; use the broker's own tools",
                     "mqtts": "an MQTT broker runs no latentwire hub; use the broker's own tools"}
            raise ConfigError(f"the admin API needs a hub daemon's grpc:// or grpcs:// URL, got {url!r}"
                              + (f" ({where[scheme]})" if scheme in where else ""))
        transport = transport_for_url(url, **options)
        assert isinstance(transport, GrpcTransport)
        self.url = url
        self.timeout = timeout
        self._transport = transport
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel."""
        await self._transport.aclose()

    async def _call(self, method: str, request: ProtoMessage, reply: type[ProtoMessage]) -> Any:
        call = self._transport.channel().unary_unary(
            f"/{SERVICE}/{method}", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString)
        with translate_errors(f"hub at {self._transport.target}"):
            return await call(request, metadata=self._metadata, timeout=self.timeout)

    async def stats(self) -> apb.HubInfo:
        """Identity, totals and rates of the hub."""
        return await self._call("GetStats", apb.GetStatsRequest(), apb.HubInfo)

    async def sessions(self) -> list[apb.SessionInfo]:
        """Every session (connected or kept for resume), by agent id."""
        return list((await self._call("ListSessions", apb.ListSessionsRequest(),
                                      apb.ListSessionsResponse)).sessions)

    async def topics(self, limit: int = 0) -> list[apb.TopicInfo]:
        """Topics with traffic, busiest first (``limit`` 0: all the hub tracks)."""
        return list((await self._call("ListTopics", apb.ListTopicsRequest(limit=limit),
                                      apb.ListTopicsResponse)).topics)

    async def recent(self, flt: str = "#", limit: int = 0) -> list[apb.MessageHeader]:
        """Headers of the last messages published on ``flt``, newest first."""
        request = apb.RecentMessagesRequest(filter=validate_filter(flt), limit=limit)
        return list((await self._call("RecentMessages", request, apb.RecentMessagesResponse)).messages)
