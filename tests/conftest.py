"""Shared fixtures: one hub per test, reachable over every transport.

`env` is parametrised over ``inproc``, ``grpc`` and ``grpcs``, so a test written once against
it runs on each transport (the shared transport suite). `make_env` builds one with a custom
`HubConfig`.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import latentwire
from latentwire.hub import Hub, HubConfig
from latentwire.hub.server import HubServer, serve
from latentwire.transports.inproc import embedded_hub

TRANSPORTS = ["inproc", "grpc", "grpcs"]


@dataclass
class HubEnv:
    """A running hub and how to connect to it."""

    kind: str
    url: str
    hub: Hub
    options: dict[str, Any] = field(default_factory=dict)
    server: HubServer | None = None

    def connect(self, agent: str | None = None, **options: Any) -> latentwire.Bus:
        """An unopened bus to this hub (use ``async with``)."""
        return latentwire.connect(self.url, agent=agent, **self.options, **options)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "hub.pem", folder / "hub.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return {"cert": cert_file, "key": key_file}


@pytest.fixture(params=TRANSPORTS)
async def make_env(request: pytest.FixtureRequest, tls_files: dict[str, Path]
                   ) -> AsyncIterator[Callable[..., Awaitable[HubEnv]]]:
    """Build a hub with the given `HubConfig` settings on the parametrised transport."""
    kind = request.param
    envs: list[HubEnv] = []

    async def make(**config: Any) -> HubEnv:
        if kind == "inproc":
            name = f"test-{uuid.uuid4().hex[:8]}"
            hub = embedded_hub(name, **config)
            env = HubEnv(kind, f"inproc://{name}", hub)
        else:
            hub = Hub(HubConfig(**config))
            tls = kind == "grpcs"
            server = await serve(hub, port=0, tls_cert=tls_files["cert"] if tls else None,
                                 tls_key=tls_files["key"] if tls else None)
            options = {"tls_ca": tls_files["cert"]} if tls else {}
            env = HubEnv(kind, server.url, hub, options, server)
        envs.append(env)
        return env

    yield make
    for env in envs:
        if env.server is not None:
            await env.server.stop(grace=0.5)
        else:
            await env.hub.aclose()


@pytest.fixture
async def env(make_env: Callable[..., Awaitable[HubEnv]]) -> HubEnv:
    """A hub with default settings on each transport."""
    return await make_env()
