"""The standard gRPC health service (``grpc.health.v1.Health``) for the hub daemon.

Load balancers, Kubernetes probes and ``grpc_health_probe`` ask ``Check`` (or ``Watch``) for
the overall server (service ``""``) or for ``latentwire.v1.Bus``. Both report SERVING while the
hub accepts sessions and NOT_SERVING from the moment a drain starts, so traffic moves elsewhere
while connected clients still get what is queued for them.
"""

from __future__ import annotations

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from latentwire._grpc_stream import SERVICE

SERVICES = ("", SERVICE)
SERVICE_NAME = health.SERVICE_NAME  # "grpc.health.v1.Health", for reflection


async def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Add the health service to ``server``, reporting SERVING for the hub."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in SERVICES:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def mark_draining(servicer: health.aio.HealthServicer) -> None:
    """Report NOT_SERVING for good (a draining hub never serves again)."""
    await servicer.enter_graceful_shutdown()
