"""The standard gRPC health service (``grpc.health.v1.Health``) for the hub daemon.

Load balancers, Kubernetes probes and ``grpc_health_probe`` ask ``Check`` (or ``Watch``) for
the overall server (service ``""``) or for ``latentwire.v1.Bus``. Both report SERVING while the
hub accepts sessions and NOT_SERVING from the moment a drain starts, so traffic moves elsewhere
while connected clients still get what is queued for them.
"""

from __future__ import annotations

import asyncio

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from latentwire._grpc_stream import SERVICE

SERVICES = ("", SERVICE)
SERVICE_NAME = health.SERVICE_NAME  # "grpc.health.v1.Health", for reflection


class HubHealth(health.aio.HealthServicer):
    """grpc_health's servicer, whose ``Watch`` streams can be ended: the library's wait for the
    next status forever, so at shutdown the server would cut them (status UNAVAILABLE) and the
    event loop's teardown cancels what is left, which gRPC logs as an error with a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """Stream the service's status until it changes for good (`end_watches`), then end the
        call with OK."""
        watch = asyncio.ensure_future(super().Watch(request, context))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({watch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, stopped):
                task.cancel()
            await asyncio.gather(watch, stopped, return_exceptions=True)
        if watch.done() and not watch.cancelled() and watch.exception() is not None:
            raise watch.exception()

    def end_watches(self) -> None:
        """End every open ``Watch`` call with OK (what they last sent was NOT_SERVING)."""
        self._stopped.set()


async def add_health(server: grpc.aio.Server) -> HubHealth:
    """Add the health service to ``server``, reporting SERVING for the hub."""
    servicer = HubHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in SERVICES:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def mark_draining(servicer: HubHealth) -> None:
    """Report NOT_SERVING for good (a draining hub never serves again)."""
    await servicer.enter_graceful_shutdown()
