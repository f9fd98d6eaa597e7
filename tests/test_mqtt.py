"""What is particular to ``mqtt://``: the message format any MQTT client can read and write,
request/reply through MQTT 5 response topics, TLS, URLs and options, session takeover.

The shared transport suite (test_bus.py and friends) runs on mqtt:// through conftest's `env`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import latentwire
from latentwire._message import Control, to_envelope
from latentwire._proto import bus_pb2 as pb
from latentwire.transports.mqtt import (
    CONTENT_TENSOR,
    MqttTransport,
    TopicMap,
    decode_message,
    encode_message,
)

from .conftest import Mosquitto, free_port, run_mosquitto

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def url(mosquitto: Mosquitto, namespace: str) -> str:
    return f"mqtt://{mosquitto.host}:{mosquitto.port}/{namespace}"


def plain_client(mosquitto: Mosquitto) -> aiomqtt.Client:
    """An MQTT 5 client that knows nothing of latentwire."""
    return aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5)


def test_envelope_round_trips_through_mqtt_properties() -> None:
    topics = TopicMap("ns")
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    env, payload = to_envelope(topic="chat/dm", recipient="bob", latent=x, headers={"traceparent": "00-ab-cd-01"},
                               ttl=2.5, correlation_id="c-1", reply_to="alice")
    env.tensor.space, env.tensor.family = "hub", "gemma3"
    topic, data, props = encode_message(env, payload, "alice", topics)
    assert topic == "ns/inbox/bob" and data == x.tobytes()
    assert props.ResponseTopic == "ns/inbox/alice" and props.CorrelationData == b"c-1"
    assert props.MessageExpiryInterval == 3  # whole seconds, rounded up
    back = decode_message(topic, data, props, topics)
    env.sender = "alice"
    assert back == env

    control, _ = to_envelope(topic="ctl/x", control=Control(kind="pause", args={"steps": 3, "why": "t"}))
    topic, data, props = encode_message(control, b"", "p", topics)
    assert topic == "ns/topic/ctl/x" and b'"pause"' in data  # control travels as JSON
    back = decode_message(topic, data, props, topics)
    assert back.control.kind == "pause" and dict(back.control.args) == {"steps": 3, "why": "t"}


@pytest.mark.parametrize(("user", "match"), [
    ([("lw:tensor", '{"dtype": "float32", "shape": [2, "x"]}')], "TypeError"),
    ([("lw:msg", '{"created_ns": "yesterday"}')], "invalid literal"),
    ([("lw:msg", "not json")], "Expecting value"),
    ([("lw:tensor", '["float32"]')], "AttributeError"),
])
def test_unreadable_properties_are_refused_clearly(user: list[tuple[str, str]], match: str) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = CONTENT_TENSOR
    props.UserProperty = user
    with pytest.raises(latentwire.InvalidMessage, match=f"unreadable MQTT message on 'ns/topic/a'.*{match}"):
        decode_message("ns/topic/a", b"\0" * 8, props, TopicMap("ns"))
    with pytest.raises(latentwire.InvalidMessage, match="outside namespace"):
        decode_message("other/topic/a", b"", None, TopicMap("ns"))


async def test_a_plain_mqtt_client_reads_a_latent(mosquitto: Mosquitto, url: str, namespace: str) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    async with plain_client(mosquitto) as plain, latentwire.connect(url, agent="speaker") as bus:
        await plain.subscribe(f"{namespace}/topic/#", qos=1)
        await bus.publish("robots/arm", latent=latentwire.Latent(x, space="hub"),
                          headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        msg = await asyncio.wait_for(anext(plain.messages), 5)
    assert str(msg.topic) == f"{namespace}/topic/robots/arm"
    assert msg.payload == x.tobytes() and msg.qos == 1
    user = dict(msg.properties.UserProperty)
    assert msg.properties.ContentType == CONTENT_TENSOR
    assert json.loads(user["lw:tensor"]) == {"dtype": "float32", "shape": [2, 3], "space": "hub"}
    assert json.loads(user["lw:msg"])["sender"] == "speaker"
    assert user["traceparent"].startswith("00-4bf92f35")


async def test_a_plain_mqtt_publish_arrives_as_text(mosquitto: Mosquitto, url: str, namespace: str) -> None:
    async with latentwire.connect(url, agent="listener") as bus, plain_client(mosquitto) as plain:
        sub = await bus.subscribe("sensors/+")
        await plain.publish(f"{namespace}/topic/sensors/door", b"open", qos=1)
        msg = await sub.receive(timeout=5)
    assert (msg.topic, msg.text, msg.sender) == ("sensors/door", "open", "")


async def test_request_reply_through_response_topic_and_correlation_data(
        mosquitto: Mosquitto, url: str, namespace: str) -> None:
    """A responder written against plain MQTT 5 answers a latentwire request."""
    async with plain_client(mosquitto) as responder:
        await responder.subscribe(f"{namespace}/inbox/echo", qos=1)

        async def serve() -> None:
            request = await anext(responder.messages)
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = request.properties.CorrelationData
            await responder.publish(request.properties.ResponseTopic, request.payload.upper(), qos=1,
                                    properties=props)

        task = asyncio.create_task(serve())
        try:
            async with latentwire.connect(url, agent="asker") as bus:
                reply = await bus.request("echo", "ping", timeout=5)
            assert reply.text == "PING"
        finally:
            task.cancel()


async def flood(p: latentwire.Bus, c: latentwire.Bus, n: int) -> list[int]:
    """``p`` publishes 0..n-1 on "flood" without waiting; what ``c`` receives, in order."""
    sub = await c.subscribe("flood")
    for i in range(n):
        await p.publish("flood", str(i), wait=False)
    await p.flush()
    return [int((await sub.receive(timeout=10)).text) for _ in range(n)]


async def test_deliveries_beyond_the_receive_window_pause_reading(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """mosquitto 2.0 sends past the receive maximum: the transport keeps a bounded backlog and
    stops reading the socket when it is full (TCP holds the broker back); nothing is lost."""
    from latentwire.transports.mqtt import client, connection

    monkeypatch.setattr(connection, "BACKLOG_MIN", 4)
    monkeypatch.setattr(connection, "BACKLOG_FACTOR", 1)
    pauses: list[bool] = []
    original = client.MqttClient.pause_reading

    def spy(self: client.MqttClient, paused: bool) -> None:
        pauses.append(paused)
        original(self, paused)

    monkeypatch.setattr(client.MqttClient, "pause_reading", spy)
    most = [0]
    on_message = connection.MqttConnection._on_message

    def watch(self: connection.MqttConnection, message: object) -> None:
        on_message(self, message)
        most[0] = max(most[0], len(self._backlog))

    monkeypatch.setattr(connection.MqttConnection, "_on_message", watch)
    n = 300
    async with latentwire.connect(url, agent="p") as p, latentwire.connect(url, agent="c", receive_window=2) as c:
        got = await flood(p, c, n)
    assert got == list(range(n))
    assert True in pauses and False in pauses  # the socket was paused and resumed
    assert most[0] <= 4  # and nothing more was read while it was paused


async def test_reserved_header_names_are_refused(url: str) -> None:
    async with latentwire.connect(url, agent="p") as bus:
        with pytest.raises(latentwire.InvalidMessage, match="'lw:id'.*reserved"):
            await bus.publish("a", "x", headers={"lw:id": "forged"})
        await bus.publish("a", "still fine")


async def test_the_newer_connection_takes_an_agent_id_over(url: str) -> None:
    """MQTT hands a client id to the newest connection; the older bus ends, it does not take
    the id back (which would go on forever between the two)."""
    async with latentwire.connect(url, agent="twin", reconnect_timeout=1) as first:
        async with latentwire.connect(url, agent="twin") as second, latentwire.connect(url, agent="p") as p:
            sub = await second.subscribe("t")
            async with asyncio.timeout(10):
                while first.state is not latentwire.BusState.CLOSED:
                    await asyncio.sleep(0.02)
            with pytest.raises(latentwire.ConnectError, match="connected to the MQTT broker again elsewhere"):
                await first.publish("t", "from the old one")
            await p.publish("t", "hello")
            assert (await sub.receive(timeout=5)).text == "hello"
            assert second.state is latentwire.BusState.OPEN


async def test_mqtts_verifies_the_broker_certificate(mosquitto: Mosquitto, tls_files: dict[str, Path],
                                                     namespace: str) -> None:
    url = f"mqtts://127.0.0.1:{mosquitto.tls_port}/{namespace}"
    async with latentwire.connect(url, agent="p", tls_ca=tls_files["cert"]) as p, \
            latentwire.connect(url, agent="c", tls_ca=tls_files["cert"]) as c:
        sub = await c.subscribe("secure/#")
        await p.publish("secure/x", latent=np.arange(4, dtype=np.int64))
        assert (await sub.receive(timeout=5)).latent.numpy().tolist() == [0, 1, 2, 3]
    with pytest.raises(latentwire.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        async with latentwire.connect(url, agent="x", connect_timeout=5):  # system roots only
            pass


async def test_broker_authentication_and_acls_surface_as_auth_errors(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Agent id = MQTT user name, token = password; the broker's refusals keep their meaning."""
    passwd = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    (tmp_path / "passwd").touch()
    for user, password in (("alice", "s3cret"), ("bob", "hunter2")):
        subprocess.run([passwd, "-b", str(tmp_path / "passwd"), user, password], check=True)
    # Everyone may use the namespace, except publishing under secret/.
    (tmp_path / "acl").write_text("pattern readwrite ns/#\npattern deny ns/topic/secret/#\n")
    port = free_port()
    config = (f"listener {port} 127.0.0.1\nallow_anonymous false\n"
              f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n")
    url = f"mqtt://127.0.0.1:{port}/ns"
    with run_mosquitto(tmp_path, config, [port]):
        with pytest.raises(latentwire.AuthError, match="refused 'alice'"):
            async with latentwire.connect(url, agent="alice", token="wrong"):
                pass
        with pytest.raises(latentwire.AuthError):
            async with latentwire.connect(url, agent="mallory"):
                pass
        async with latentwire.connect(url, agent="alice", token="s3cret") as alice, \
                latentwire.connect(url, agent="bob", token="hunter2") as bob:
            sub = await bob.subscribe("#")
            with pytest.raises(latentwire.AuthError, match="0x87"):
                await alice.publish("secret/plans", "x")
            await alice.publish("open/news", "hello")  # the refusal ended nothing
            msg = await sub.receive(timeout=5)
            assert (msg.topic, msg.text, msg.sender) == ("open/news", "hello", "alice")


async def test_unreachable_broker() -> None:
    with pytest.raises(latentwire.ConnectError, match="no MQTT broker reachable at 127.0.0.1:9 within 0.5 s"):
        async with latentwire.connect("mqtt://127.0.0.1:9", connect_timeout=0.5):
            pass


async def test_a_silent_server_is_not_waited_on_forever() -> None:
    """A TCP peer that never answers CONNECT: a clear error after connect_timeout, and the
    attempt's socket is closed, not left open."""
    peers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    server = await asyncio.start_server(lambda r, w: peers.append((r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(latentwire.ConnectError, match=f"no MQTT broker reachable at 127.0.0.1:{port} within 0.5 s"):
            async with latentwire.connect(f"mqtt://127.0.0.1:{port}", connect_timeout=0.5):
                pass
        reader, _ = peers[0]
        connect_packet = await asyncio.wait_for(reader.read(), 5)  # returns only at EOF
        assert connect_packet[:1] == b"\x10"  # it was an MQTT CONNECT
    finally:
        for _, writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()


def test_urls_and_options(tls_files: dict[str, Path]) -> None:
    t = latentwire.connect("mqtt://broker.local/fleet-a")._transport
    assert isinstance(t, MqttTransport)
    assert (t.host, t.port, t.topics.namespace, t.tls_context) == ("broker.local", 1883, "fleet-a", None)
    t = latentwire.connect("mqtts://broker.local", tls_ca=tls_files["cert"], session_expiry=60)._transport
    assert (t.port, t.topics.namespace, t.session_expiry) == (8883, "latentwire", 60)
    assert t.tls_context is not None
    with pytest.raises(latentwire.ConfigError, match="use mqtts://"):
        latentwire.connect("mqtt://broker.local", tls_ca=tls_files["cert"])
    with pytest.raises(latentwire.ConfigError, match="needs a host"):
        latentwire.connect("mqtt:///ns")
    with pytest.raises(latentwire.ConfigError, match="namespace"):
        latentwire.connect("mqtt://broker.local/a/+")
    with pytest.raises(latentwire.ConfigError, match="publish_window must be positive"):
        latentwire.connect("mqtt://broker.local", publish_window=0)
    with pytest.raises(latentwire.ConfigError, match="cannot read TLS file"):
        latentwire.connect("mqtts://broker.local", tls_ca="/nonexistent.pem")


def test_wire_codes_cover_broker_refusals() -> None:
    from latentwire.transports.mqtt.connection import _wire_code

    assert _wire_code(0x87) == pb.PERMISSION_DENIED and _wire_code(0x86) == pb.UNAUTHENTICATED
    assert _wire_code(0x97) == pb.RESOURCE_EXHAUSTED and _wire_code(0x80) == pb.INVALID_ARGUMENT


async def test_tls_deliveries_beyond_the_receive_window_arrive_in_order(
        mosquitto: Mosquitto, tls_files: dict[str, Path], namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading paused and resumed under a flood works on TLS too (an SSL socket can hold
    decrypted bytes that the selector does not report; they are read on resume)."""
    from latentwire.transports.mqtt import connection

    monkeypatch.setattr(connection, "BACKLOG_MIN", 4)
    monkeypatch.setattr(connection, "BACKLOG_FACTOR", 1)
    url = f"mqtts://127.0.0.1:{mosquitto.tls_port}/{namespace}"
    n = 200
    async with latentwire.connect(url, agent="p", tls_ca=tls_files["cert"]) as p, \
            latentwire.connect(url, agent="c", tls_ca=tls_files["cert"], receive_window=2) as c:
        got = await flood(p, c, n)
    assert got == list(range(n))


def test_from_url_parses_host_port_namespace_and_tls(tls_files: dict[str, Path]) -> None:
    t = MqttTransport.from_url("mqtt://[::1]:1999/fleet/a", token="ignored", keepalive=5)
    assert (t.host, t.port, t.address) == ("::1", 1999, "[::1]:1999")
    assert (t.topics.namespace, t.keepalive) == ("fleet/a", 5)
    t = MqttTransport.from_url("mqtts://broker.local", tls_ca=tls_files["cert"])
    assert (t.port, t.topics.namespace, t.tls_context is not None) == (8883, "latentwire", True)
    with pytest.raises(latentwire.ConfigError, match="malformed URL .*'mqtt://h:x', use a URL like mqtt://"):
        MqttTransport.from_url("mqtt://h:x")
    with pytest.raises(latentwire.ConfigError, match="takes mqtt:// or mqtts:// URLs"):
        MqttTransport.from_url("grpc://h:1")
    with pytest.raises(latentwire.ConfigError, match="'namespace' comes from the URL"):
        MqttTransport.from_url("mqtt://h", namespace="x")


def test_the_error_translator_maps_reason_codes_and_lost_connections() -> None:
    from latentwire.transports.mqtt.client import BrokerRefused, ConnectionLost
    from latentwire.transports.mqtt.connection import translate_errors

    cases = [
        (BrokerRefused("CONNACK", 0x86, "Bad user name or password"), latentwire.Unauthenticated,
         r"MQTT broker at b:1 refused 'alice': Bad user name or password \(reason code 0x86 in CONNACK\)"),
        (BrokerRefused("PUBACK", 0x87, "Not authorized"), latentwire.PermissionDenied, "0x87"),
        (BrokerRefused("SUBACK", 0x97, "Quota exceeded"), latentwire.LimitExceeded, "0x97"),
        (BrokerRefused("PUBACK", 0x95, "Packet too large"), latentwire.MessageTooLarge, "0x95"),
        (ConnectionLost("the broker disconnected: Session taken over", 0x8E), latentwire.ConnectError,
         r"lost the MQTT broker at b:1: .*Session taken over \(reason code 0x8e\)"),
        (ConnectionRefusedError(111, "Connection refused"), latentwire.ConnectError, "lost the MQTT broker"),
    ]
    for raised, expected, match in cases:
        with pytest.raises(expected, match=match) as info, translate_errors("b:1", "'alice'"):
            raise raised
        assert info.value.__cause__ is raised
    with pytest.raises(latentwire.ConnectError, match="no MQTT broker reachable at b:1 within 0.5 s: Timeout"):
        with translate_errors("b:1", "'alice'", connect_timeout=0.5):
            raise TimeoutError
    with pytest.raises(latentwire.UnknownAgent):  # latentwire errors pass through
        with translate_errors("b:1", "the message"):
            raise latentwire.UnknownAgent("bob")


async def test_a_session_taken_over_by_the_broker_ends_reconnects() -> None:
    """Brokers that send DISCONNECT 0x8E (session taken over; mosquitto 2.0 just closes):
    the connection ends with ConnectError and the transport refuses to reconnect."""
    from latentwire.transports.mqtt.client import ConnectionLost
    from latentwire.transports.mqtt.connection import MqttConnection

    transport = MqttTransport("127.0.0.1")
    conn = await transport.connect(1.0)
    assert isinstance(conn, MqttConnection)
    lost: asyncio.Future[ConnectionLost] = asyncio.get_running_loop().create_future()
    lost.set_result(ConnectionLost("the broker disconnected: Session taken over", 0x8E))
    conn._on_disconnected(lost)
    with pytest.raises(latentwire.ConnectError, match="Session taken over"):
        await conn.receive()
    with pytest.raises(latentwire.AlreadyConnected, match="connected to the MQTT broker again elsewhere"):
        await transport.connect(1.0)
    await conn.aclose()
