"""The scheme table: `connect()` finds every transport by its URL scheme, including one a third
party registers, and bad schemes, targets and missing extras get one clear line."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

import latentwire
from latentwire.hub.inproc import connection_pair, embedded_hub
from latentwire.transports import Connection, Transport, register_transport, schemes


class LoopbackTransport(Transport):
    """``loopback://name``: a third-party transport; here it reaches the embedded hub ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> LoopbackTransport:
        return cls(cls.split_url(url, "loopback://name").netloc)

    async def connect(self, timeout: float) -> Connection:
        client, server = connection_pair()
        embedded_hub(self.name).spawn_connection(server)
        return client


register_transport("loopback", f"{__name__}:LoopbackTransport")


async def test_a_registered_transport_carries_messages() -> None:
    name = f"loop-{uuid.uuid4().hex[:8]}"
    try:
        async with latentwire.connect(f"loopback://{name}", agent="a") as a, \
                latentwire.connect(f"inproc://{name}", agent="b") as b:
            assert isinstance(a._transport, LoopbackTransport)
            sub = await b.subscribe("greetings")
            await a.publish("greetings", "hello")
            msg = await sub.receive(timeout=5)
        assert (msg.sender, msg.text) == ("a", "hello")
    finally:
        await embedded_hub(name).aclose()


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(latentwire.ConfigError) as info:
        latentwire.connect("zmq://localhost:4222")
    message = str(info.value)
    assert "unsupported URL scheme 'zmq' in 'zmq://localhost:4222'" in message
    assert all(f"{s}://" in message for s in ["inproc", "grpc", "grpcs", "mqtt", "mqtts", "nats", "tls",
                                               "nats+tls", "loopback"])
    assert schemes()[:5] == ["inproc", "grpc", "grpcs", "mqtt", "mqtts"]
    assert schemes()[5:8] == ["nats", "tls", "nats+tls"]


@pytest.mark.parametrize("package, library, url, message", [
    # As if paho-mqtt were not installed: the mqtt transport's modules cannot be imported.
    ("mqtt", "paho.mqtt.client", "mqtts://broker.local",
     r"mqtts:// needs the 'mqtt' extra: pip install 'latentwire\[mqtt\]'"),
    # As if nats-py were not installed.
    ("nats", "nats", "tls://n1:4222", r"tls:// needs the 'nats' extra: pip install 'latentwire\[nats\]'"),
])
def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, package: str, library: str, url: str,
                                  message: str) -> None:
    for name in [m for m in sys.modules if m.startswith(f"latentwire.transports.{package}")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, library, None)
    with pytest.raises(latentwire.ConfigError, match=message):
        latentwire.connect(url)


@pytest.mark.parametrize("scheme, target, reason", [
    ("Nats", "pkg.mod:Cls", "transport scheme must be lower-case"),
    ("1nats", "pkg.mod:Cls", "transport scheme must be lower-case"),
    ("nats", "pkg.mod.Cls", "transport target must be 'module:Class'"),
    ("grpc", "pkg.mod:Cls", "grpc:// is already registered to latentwire.transports.grpc:GrpcTransport"),
])
def test_bad_registrations_are_refused(scheme: str, target: str, reason: str) -> None:
    with pytest.raises(latentwire.ConfigError, match=reason):
        register_transport(scheme, target)


def test_registering_the_same_row_again_is_harmless() -> None:
    register_transport("loopback", f"{__name__}:LoopbackTransport")
    register_transport("mqtt", "latentwire.transports.mqtt:MqttTransport", extra="mqtt")


def test_a_registered_target_that_is_not_a_transport_is_refused() -> None:
    register_transport("not-a-transport", f"{__name__}:test_unknown_scheme_lists_the_known_ones")
    with pytest.raises(latentwire.ConfigError, match="not a latentwire.transports.Transport subclass"):
        latentwire.connect("not-a-transport://x")
    register_transport("no-such-module", "latentwire_no_such_module:Transport")
    with pytest.raises(latentwire.ConfigError, match="no-such-module:// transport .* cannot be imported"):
        latentwire.connect("no-such-module://x")


@pytest.mark.parametrize("url, reason", [
    ("grpc://h:abc", "malformed URL .*got 'grpc://h:abc', use a URL like grpc://127.0.0.1:7878"),
    ("grpcs://host", "grpcs:// URL needs a host and port: got 'grpcs://host', use a URL like grpcs://"),
    ("mqtt://[::1", "malformed URL 'mqtt://\\[::1'"),
    ("mqtts:///ns", "mqtts:// URL needs a host: got 'mqtts:///ns', use a URL like mqtts://127.0.0.1:1883"),
    ("nats:///ns", "nats:// URL needs a host: got 'nats:///ns', use a URL like nats://127.0.0.1:4222"),
    ("tls://n1:x", "bad NATS server 'n1:x' .*: got 'tls://n1:x', use a URL like tls://127.0.0.1:4222"),
])
def test_each_transport_names_the_url_and_shows_a_good_one(url: str, reason: str) -> None:
    with pytest.raises(latentwire.ConfigError, match=reason):
        latentwire.connect(url)


def test_a_transport_without_a_scheme_says_how_to_use_it() -> None:
    with pytest.raises(latentwire.ConfigError, match=r"pass it as connect\(transport=Transport"):
        Transport.from_url("x://y")


class _OlderHubConnection:
    """A connection to a hub that predates subscription groups: its welcome leaves ``groups`` unset."""

    def __init__(self, inner: Connection) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def receive(self) -> list[tuple]:
        frames = await self._inner.receive()
        for frame, _ in frames:
            if frame.WhichOneof("kind") == "welcome":
                frame.welcome.ClearField("groups")
        return frames


class OlderHubTransport(LoopbackTransport):
    """``olderhub://name``: the embedded hub ``name`` as a hub from before subscription groups."""

    async def connect(self, timeout: float) -> Connection:
        return _OlderHubConnection(await super().connect(timeout))


register_transport("olderhub", f"{__name__}:OlderHubTransport")


async def test_a_group_subscription_on_a_hub_without_groups_is_refused() -> None:
    # An older hub would route it as a plain subscription, whose deliveries no group
    # subscription of this bus would take.
    name = f"old-{uuid.uuid4().hex[:8]}"
    try:
        async with latentwire.connect(f"olderhub://{name}", agent="a") as bus:
            refused = "does not route subscription groups.*upgrade the hub"
            with pytest.raises(latentwire.ConfigError, match=refused):
                async with bus.subscribe("jobs", group="workers"):
                    pass
            async with bus.subscribe("jobs") as sub:  # plain subscriptions still work
                await bus.publish("jobs", "x")
                assert (await sub.receive(timeout=5)).text == "x"
    finally:
        await embedded_hub(name).aclose()
