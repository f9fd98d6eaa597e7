"""Container health probe for the hub: asks the standard gRPC health service on this host.

Exit status 0 when ``latentwire.v1.Bus`` reports SERVING, 1 otherwise (NOT_SERVING while the
hub drains, or no answer within 2 s). It reads the hub's own settings from the environment,
so it probes the port and TLS mode the hub was started with:

* ``LATENTWIRE_HUB_PORT`` (default 7878);
* ``LATENTWIRE_HUB_TLS_CERT``: the hub serves TLS; its certificate is trusted as the root
  (right for a self-signed certificate; set ``LATENTWIRE_HEALTHCHECK_CA`` to a CA bundle
  otherwise) and ``LATENTWIRE_HEALTHCHECK_SERVER_NAME`` overrides the name checked (default
  ``localhost``);
* ``LATENTWIRE_HUB_TLS_CLIENT_CA``: the hub wants client certificates (mutual TLS); give the
  probe one with ``LATENTWIRE_HEALTHCHECK_CERT`` and ``LATENTWIRE_HEALTHCHECK_KEY``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(target: str) -> grpc.Channel:
    cert = os.environ.get("LATENTWIRE_HUB_TLS_CERT")
    if not cert:
        return grpc.insecure_channel(target)
    root = Path(os.environ.get("LATENTWIRE_HEALTHCHECK_CA", cert)).read_bytes()
    client_cert = os.environ.get("LATENTWIRE_HEALTHCHECK_CERT")
    client_key = os.environ.get("LATENTWIRE_HEALTHCHECK_KEY")
    creds = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=Path(client_key).read_bytes() if client_key else None,
        certificate_chain=Path(client_cert).read_bytes() if client_cert else None)
    name = os.environ.get("LATENTWIRE_HEALTHCHECK_SERVER_NAME", "localhost")
    return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", name)])


def main() -> int:
    """Probe once; print the status and return the exit status."""
    target = f"127.0.0.1:{os.environ.get('LATENTWIRE_HUB_PORT', '7878')}"
    try:
        with _channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="latentwire.v1.Bus"), timeout=2.0)
    except (grpc.RpcError, OSError) as exc:
        print(f"latentwire hub at {target}: no health answer ({exc})")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"latentwire hub at {target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
