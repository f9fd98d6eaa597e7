"""The hub over gRPC: a thin servicer that hands each bidi stream to the `Hub` core.

Stream messages are batches of wire frames with identity serializers (raw bytes), so the
servicer parses only frame headers; payloads are forwarded as they arrived. The stream
plumbing is the SDK's (`latentwire._grpc_stream`), shared with the gRPC transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from latentwire._grpc_stream import RPC, SERVICE, FramedStream, channel_options
from latentwire._proto import bus_pb2 as pb
from latentwire.errors import ConfigError

from .admin import AdminGate, AdminInterceptor, add_admin
from .core import HELLO_MAX_PAYLOAD, Hub, HubConfig
from .health import SERVICE_NAME as HEALTH, add_health, mark_draining

log = logging.getLogger("latentwire.hub")

# gRPC status for a refused hello, by wire code.
_STATUS = {
    pb.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    pb.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    pb.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    pb.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    pb.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    pb.INVALID_TOPIC: grpc.StatusCode.INVALID_ARGUMENT,
    pb.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    pb.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


class _StreamConnection(FramedStream):
    """The hub's end of one client stream."""

    def __init__(self, context: grpc.aio.ServicerContext, config: HubConfig) -> None:
        # Until the hub accepts its hello, a client may not make the decoder buffer anything;
        # then the session's own cap applies (`Session.payload_cap`). A payload above the cap
        # is refused from its header and skipped, never buffered.
        super().__init__(context, f"client {context.peer()}", config.max_frame_bytes,
                         HELLO_MAX_PAYLOAD)
        # "ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4": failed logins are paced per address, not per port.
        peer = context.peer() or ""
        self.peer_address = peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer or None
        self._task = asyncio.current_task()
        self.closed_by_hub = False
        self.refusal: tuple[int, str] | None = None

    def refused(self, code: int, reason: str) -> None:
        self.refusal = (code, reason)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None and self._task is not asyncio.current_task() and not self._task.done():
            # The handler task is parked in read(); end it (the handler returns quietly).
            self.closed_by_hub = True
            self._task.cancel()


class BusServicer:
    """Serves ``/latentwire.v1.Bus/Connect``."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def connect(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        conn = _StreamConnection(context, self.hub.config)
        try:
            await self.hub.serve_connection(conn)
        except asyncio.CancelledError:
            if not conn.closed_by_hub:
                raise
            asyncio.current_task().uncancel()
        if conn.refusal is not None and conn.refusal[0] in _STATUS:
            # The Error frame already told our SDK; the status tells any gRPC client or proxy.
            code, reason = conn.refusal
            await context.abort(_STATUS[code], reason)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a grpc.aio server (identity serializers)."""
        return grpc.method_handlers_generic_handler(
            SERVICE, {RPC: grpc.stream_stream_rpc_method_handler(self.connect)}
        )


@dataclass
class HubServer:
    """A running hub daemon: the `Hub` core, its gRPC server and the bound address."""

    hub: Hub
    server: grpc.aio.Server
    host: str
    port: int
    tls: bool
    health: Any = None  # the gRPC health servicer (hub/health.py)

    @property
    def url(self) -> str:
        """The URL clients connect to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'grpcs' if self.tls else 'grpc'}://{host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> bool:
        """Drain (deliver what is queued to connected clients, up to ``grace`` s), then stop.

        Returns whether everything queued for connected clients was delivered.
        """
        if self.health is not None:
            await mark_draining(self.health)  # probes see NOT_SERVING while it drains
        drained = await self.hub.drain(grace)
        await self.hub.aclose()
        if self.health is not None:
            self.health.end_watches()  # ended by us, not cut by the server's stop
        await self.server.stop(grace=1.0)
        return drained


async def serve(
    hub: Hub | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    tls_client_ca: str | Path | None = None,
) -> HubServer:
    """Start a hub on ``host:port`` (port 0 picks a free one) and return it running."""
    hub = hub or Hub()
    config = hub.config
    # No SO_REUSEPORT: with it a second hub on a port in use would start and share its traffic.
    server = grpc.aio.server(options=[*channel_options(config.max_frame_bytes, config.max_frame_bytes),
                                      ("grpc.so_reuseport", 0)],
                             interceptors=[AdminInterceptor(AdminGate(hub))])
    server.add_generic_rpc_handlers((BusServicer(hub).handler(),))
    add_admin(server, hub, [SERVICE, HEALTH])  # the admin API (hub/admin.py) and gRPC reflection
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls = tls_cert is not None or tls_key is not None
    if tls:
        if tls_cert is None or tls_key is None:
            raise ConfigError("--tls-cert and --tls-key must be given together")
        try:
            key, cert = Path(tls_key).read_bytes(), Path(tls_cert).read_bytes()
            client_ca = Path(tls_client_ca).read_bytes() if tls_client_ca else None
        except OSError as exc:
            raise ConfigError(f"cannot read TLS file: {exc}") from exc
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                            require_client_auth=client_ca is not None)
    else:
        if tls_client_ca:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        creds = None
    if not 0 <= port <= 65535:  # gRPC would wrap it into another port
        raise ConfigError(f"--port must be a port number from 0 to 65535, got {port}")
    try:
        bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError:  # gRPC's "Failed to bind to address"
        bound = 0
    if not bound:
        raise ConfigError(f"cannot listen on {host}:{port}: the port is in use, or {host} is not an "
                          "address of this machine; is another hub running? pick another --port")
    health = await add_health(server)
    await server.start()
    log.info("hub %s listening on %s:%d", hub.id, host, bound)
    return HubServer(hub, server, host, bound, tls, health)


@contextlib.asynccontextmanager
async def running_hub(**kwargs: object):
    """``async with running_hub(port=0) as server:`` a hub for the body of the block."""
    server = await serve(**kwargs)
    try:
        yield server
    finally:
        await server.stop(grace=1.0)
