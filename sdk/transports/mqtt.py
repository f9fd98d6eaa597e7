"""``mqtt://host:port[/namespace]`` and ``mqtts://``: the bus over any MQTT 5 broker (aiomqtt).

There is no latentwire hub on this path: the broker routes. The transport keeps the same
`Connection` contract as ``inproc://`` and ``grpc://`` and plays the hub's part of the frame
protocol locally, so `latentwire.Bus` (acks, credits, dedup, request/reply, reconnects) runs
unchanged on top:

* hello -> MQTT CONNECT with a persistent session (clean start off, session expiry, client id
  ``namespace:agent``, ``receive_maximum`` = the bus's receive window); the welcome is built
  from the CONNACK (session present -> resumed, the broker's receive maximum and maximum
  packet size -> publish window and message cap).
* publish -> PUBLISH at QoS 1; the PUBACK (and its MQTT 5 reason code) -> the publish ack.
  The message is checked here first (`check_envelope`), so what a hub would refuse is refused.
* subscribe/unsubscribe -> SUBSCRIBE/UNSUBSCRIBE; filters map 1:1 (``+`` and ``#`` mean the
  same in latentwire and MQTT) under ``namespace/topic/``.
* deliveries -> deliver frames; a message is PUBACKed (manual ack) only when the application
  took it, so unconsumed messages stay with the broker's session and come again after a
  reconnect. At most ``receive_window`` deliveries are handed to the bus unacked.
* direct messages go to the recipient's inbox topic ``namespace/inbox/<agent>``; a PUBACK
  "no matching subscribers" there means no such agent (`UnknownAgent`). Requests carry the
  MQTT 5 response topic (the asker's inbox) and correlation data.

A message is the raw payload (tensor bytes, UTF-8 text, or a control message as JSON) plus
MQTT 5 properties: content type, message expiry, and the user properties ``lw:msg`` (id,
sender, creation time, ttl) and ``lw:tensor`` (dtype, shape, space, family), small JSON
objects, next to the application's own headers (a W3C ``traceparent`` stays
``traceparent``), so any MQTT client can read and write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
import paho.mqtt.client as paho
from google.protobuf import json_format
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .._codes import code_for
from .._message import check_envelope, is_expired
from .._proto import bus_pb2 as pb
from .._topics import AGENT_ID, validate_filter
from .._wire import Oversize
from ..errors import (
    AlreadyConnected,
    ConfigError,
    ConnectError,
    InvalidMessage,
    ProtocolError,
)
from .base import Connection, Transport, WireFrame

log = logging.getLogger("latentwire.mqtt")

DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
DEFAULT_NAMESPACE = "latentwire"
# The largest MQTT packet is 268,435,455 bytes; leave room for the topic and properties.
MQTT_MAX_MESSAGE = 256 * 1024 * 1024 - 64 * 1024
PROPERTY_PREFIX = "lw:"  # user properties that carry envelope fields (reserved)
CONTENT_TEXT = "text/plain; charset=utf-8"
CONTENT_TENSOR = "application/x-latentwire-tensor"
CONTENT_CONTROL = "application/x-latentwire-control+json"
# Deliveries a broker sends beyond the receive window wait in the transport; some brokers
# (mosquitto 2.0.11, measured) do not keep to the receive maximum a client asks for. Past
# this many messages (x the window, at least the minimum) or bytes the transport stops reading
# the socket, so TCP holds the broker back, until half of them went to the bus.
BACKLOG_FACTOR, BACKLOG_MIN, BACKLOG_BYTES = 8, 1024, 64 * 1024 * 1024
# How long a reconnecting bus waits for the broker's retained owner claim of its agent id.
OWNER_WAIT = 1.0
# A reconnect waits this long before its CONNECT, so that a newer bus that has just taken the
# agent id over (which closed this bus's connection) can publish its claim first.
TAKEOVER_GRACE = 0.25
# MQTT 5 reason codes (spec 2.4) this transport acts on.
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_SESSION_TAKEN_OVER = 0x8E
_REASON_CODES = {
    0x86: pb.UNAUTHENTICATED,  # bad user name or password
    0x87: pb.PERMISSION_DENIED,  # not authorized
    0x8C: pb.UNAUTHENTICATED,  # bad authentication method
    0x8F: pb.INVALID_TOPIC,  # topic filter invalid
    0x90: pb.INVALID_TOPIC,  # topic name invalid
    0x95: pb.PAYLOAD_TOO_LARGE,  # packet too large
    0x97: pb.RESOURCE_EXHAUSTED,  # quota exceeded
    0x88: pb.UNAVAILABLE,  # server unavailable
    0x89: pb.UNAVAILABLE,  # server busy
}


def _wire_code(reason_code: int) -> int:
    return _REASON_CODES.get(reason_code, pb.INVALID_ARGUMENT)


class TopicMap:
    """Where latentwire topics and agent inboxes live in the broker's topic tree."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        if not namespace or any(c in namespace for c in "+#\x00") or namespace.startswith("$"):
            raise ConfigError(f"MQTT namespace must be a plain topic prefix, got {namespace!r}")
        self.namespace = namespace.strip("/")
        self._topics = f"{self.namespace}/topic/"
        self._inboxes = f"{self.namespace}/inbox/"

    def topic(self, name: str) -> str:
        """The MQTT topic (or filter: wildcards map 1:1) of a latentwire topic."""
        return self._topics + name

    def inbox(self, agent: str) -> str:
        """The topic an agent's direct messages, requests and replies go to."""
        return self._inboxes + agent

    def owner(self, agent: str) -> str:
        """The retained topic that names the bus currently holding an agent id."""
        return f"{self.namespace}/owner/{agent}"

    def parse(self, mqtt_topic: str) -> tuple[str, str]:
        """``("topic", name)`` or ``("inbox", agent)``; raises `InvalidMessage` for others."""
        if mqtt_topic.startswith(self._topics):
            return "topic", mqtt_topic[len(self._topics):]
        if mqtt_topic.startswith(self._inboxes):
            return "inbox", mqtt_topic[len(self._inboxes):]
        raise InvalidMessage(f"MQTT topic {mqtt_topic!r} is outside namespace {self.namespace!r}")


def _compact(fields: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))


def encode_message(env: pb.Envelope, payload: Any, sender: str, topics: TopicMap
                   ) -> tuple[str, bytes, Properties]:
    """The MQTT topic, payload and PUBLISH properties of one (checked) message.

    The envelope's fields travel as two small JSON user properties, ``lw:msg`` and (for a
    tensor) ``lw:tensor``, rather than one property each: paho copies the rest of a received
    packet once per property, which made 1 MiB latents about twice as slow to receive.
    """
    props = Properties(PacketTypes.PUBLISH)
    for key in env.headers:
        if key.startswith(PROPERTY_PREFIX):
            raise InvalidMessage(f"header {key!r}: names starting with {PROPERTY_PREFIX!r} are "
                                 "reserved on mqtt://")
    meta = {"id": env.id, "sender": sender, "created_ns": env.created_at_ns, "ttl_ms": env.ttl_ms}
    if env.recipient:
        mqtt_topic = topics.inbox(env.recipient)
        meta["topic"] = env.topic  # a direct message's own topic, if it has one
    else:
        mqtt_topic = topics.topic(env.topic)
    user = [("lw:msg", _compact(meta))]
    if env.reply_to:
        props.ResponseTopic = topics.inbox(env.reply_to)
    if env.correlation_id:
        props.CorrelationData = env.correlation_id.encode()
    if env.ttl_ms:
        # Whole seconds on MQTT, rounded up; the receiving transport drops by the exact ttl.
        props.MessageExpiryInterval = math.ceil(env.ttl_ms / 1000)
    kind = env.WhichOneof("body")
    if kind == "tensor":
        t = env.tensor
        props.ContentType = CONTENT_TENSOR
        user.append(("lw:tensor", _compact({"dtype": t.dtype, "shape": list(t.shape) or None,
                                            "space": t.space, "family": t.family})))
    elif kind == "control":
        props.ContentType = CONTENT_CONTROL
        payload = json.dumps({"kind": env.control.kind,
                              "args": json_format.MessageToDict(env.control.args)}).encode()
    else:
        props.ContentType = CONTENT_TEXT
    props.UserProperty = user + list(env.headers.items())
    return mqtt_topic, payload if isinstance(payload, (bytes, bytearray)) else bytes(payload), props


def decode_message(mqtt_topic: str, payload: bytes, props: Properties | None, topics: TopicMap
                   ) -> pb.Envelope:
    """The envelope of a received MQTT message (its payload stays the frame payload).

    A message from a plain MQTT client (no ``lw:`` properties) arrives as text. Raises
    `InvalidMessage` for fields that cannot be read.
    """
    kind, name = topics.parse(mqtt_topic)
    user: dict[str, str] = {}
    headers: dict[str, str] = {}
    for key, value in getattr(props, "UserProperty", None) or []:
        (user if key.startswith(PROPERTY_PREFIX) else headers)[key] = value
    try:
        meta = json.loads(user.get("lw:msg") or "{}")
        env = pb.Envelope(
            id=meta.get("id") or f"mqtt-{uuid.uuid4().hex}",
            sender=meta.get("sender", ""),
            headers=headers,
            created_at_ns=int(meta.get("created_ns") or time.time_ns()),
            ttl_ms=int(meta.get("ttl_ms") or 0),
        )
        if kind == "inbox":
            env.recipient = name
            env.topic = meta.get("topic", "")
        else:
            env.topic = name
        response_topic = getattr(props, "ResponseTopic", None)
        if response_topic:
            reply_kind, env.reply_to = topics.parse(response_topic)
            if reply_kind != "inbox":
                raise InvalidMessage(f"response topic {response_topic!r} is not an agent inbox")
        correlation = getattr(props, "CorrelationData", None)
        if correlation:
            env.correlation_id = bytes(correlation).decode()
        content_type = getattr(props, "ContentType", None) or CONTENT_TEXT
        if content_type == CONTENT_TENSOR:
            tensor = json.loads(user.get("lw:tensor") or "{}")
            env.tensor.dtype = tensor.get("dtype", "")
            env.tensor.shape.extend(tensor.get("shape") or [])
            env.tensor.space = tensor.get("space", "")
            env.tensor.family = tensor.get("family", "")
        elif content_type == CONTENT_CONTROL:
            control = json.loads(payload)
            env.control.kind = control["kind"]
            env.control.args.update(control.get("args") or {})
        else:
            env.text = ""
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"unreadable MQTT message on {mqtt_topic!r}: {exc!r}") from exc
    return env


class _Client(aiomqtt.Client):
    """aiomqtt's client plus the MQTT 5 pieces this transport needs and aiomqtt 2.5 does not
    expose: manual delivery acks, PUBACK reason codes, the CONNACK's session-present flag and
    properties, and a callback per received message instead of an unbounded queue.
    """

    def __init__(self, *args: Any, on_message: Callable[[paho.MQTTMessage], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)
        self._deliver = on_message
        self.session_present = False
        self.connack: Properties | None = None
        self.disconnect_reason: int | None = None
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._reader: tuple[Any, Callable[[], None]] | None = None
        self._paused = False

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # noqa: ANN001
        self.session_present = bool(flags.session_present)
        self.connack = properties
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:  # noqa: ANN001
        self.disconnect_reason = getattr(reason_code, "value", reason_code)
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client, userdata, message: paho.MQTTMessage) -> None:  # noqa: ANN001
        self._deliver(message)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(getattr(reason_code, "value", 0))

    def _on_socket_open(self, client, userdata, sock) -> None:  # noqa: ANN001
        # aiomqtt's, but the reader is kept so that reading can pause (`pause_reading`).
        def read() -> None:
            try:
                while True:
                    client.loop_read()
                    # An SSL socket may hold decoded bytes that select() does not report.
                    if hasattr(client._sock, "pending") and client._sock.pending() > 0:
                        continue
                    break
            except Exception as exc:  # noqa: BLE001 - the connection broke; aiomqtt's own rule
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def start() -> None:
            self._misc_task = self._loop.create_task(self._misc_loop())
            if not self._paused:
                self._loop.add_reader(sock.fileno(), read)

        self._reader = (sock, read)
        self._loop.call_soon_threadsafe(start)  # paho calls this from the connecting thread

    def pause_reading(self, paused: bool) -> None:
        """Stop (True) or resume (False) reading from the broker: TCP then holds it back."""
        if paused == self._paused:
            return
        self._paused = paused
        sock, read = self._reader or (None, None)
        if sock is None or self._client.socket() is not sock or sock.fileno() < 0:
            return  # not connected yet (start() looks at the flag) or already closed
        if paused:
            self._loop.remove_reader(sock.fileno())
        else:
            self._loop.add_reader(sock.fileno(), read)

    def _on_socket_register_write(self, client, userdata, sock) -> None:  # noqa: ANN001
        # aiomqtt defers add_writer with call_soon_threadsafe, so it may run after a lost
        # connection's socket closed and the next connection reused its fd, and then steal
        # that connection's writer. Register only while the socket is still this client's.
        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # noqa: BLE001 - the connection broke; aiomqtt's own rule
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            if client.socket() is sock and sock.fileno() >= 0:
                self._loop.add_writer(sock.fileno(), write)

        self._loop.call_soon_threadsafe(register)

    @property
    def disconnected(self) -> asyncio.Future[None]:
        """Done when the connection to the broker is gone."""
        return self._disconnected

    def publish_qos1(self, topic: str, payload: bytes, properties: Properties | None = None,
                     retain: bool = False) -> asyncio.Future[int]:
        """Queue a QoS 1 PUBLISH in order; the future gets the PUBACK's reason code."""
        info = self._client.publish(topic, payload, 1, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectError(f"MQTT publish failed: {paho.error_string(info.rc)}")
        fut = self._loop.create_future()
        self._acks[info.mid] = fut  # the PUBACK arrives through the event loop, never before
        return fut

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK one received message (manual acks)."""
        if qos > 0:
            self._client.ack(mid, qos)

    def fail_pending(self, exc: BaseException) -> None:
        """End every publish still waiting for its PUBACK (the connection is gone)."""
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: the bus resends these on the next connection
        self._acks.clear()

    def abandon(self) -> None:
        """Close the socket of a connection attempt that did not complete."""
        with contextlib.suppress(Exception):
            self._client._sock_close()

    async def leave(self, timeout: float) -> None:
        """DISCONNECT with session expiry 0: the broker forgets the session (bye)."""
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        if self._client.disconnect(properties=props) == paho.MQTT_ERR_SUCCESS:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes
            # as the future completes, and the disconnect itself ends the bus's reader.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._disconnected)


class _MqttConnection(Connection):
    """One MQTT connection that speaks the bus's frames to the `Bus` above it."""

    max_frame_bytes = None  # the broker takes whole messages; nothing is chunked

    def __init__(self, transport: MqttTransport, timeout: float) -> None:
        self._transport = transport
        self._timeout = timeout
        self._client: _Client | None = None
        self._agent = ""
        self.max_payload: int | None = transport.max_receive_bytes
        self._max_message = 0
        self._ready: list[WireFrame] = []
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._tasks: set[asyncio.Task] = set()
        # Deliveries handed to the bus and not yet acked, by delivery seq -> (mid, qos).
        self._unacked: dict[int, tuple[int, int]] = {}
        self._window = 1
        self._backlog: deque[tuple[pb.Frame, Any, int, int]] = deque()
        self._backlog_max = BACKLOG_MIN
        self._backlog_bytes = 0
        self._mqtt: _Client | None = None  # the client, also while it connects
        self._owner: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # -- the Connection contract ---------------------------------------------------------------

    async def send(self, frames: Sequence[WireFrame]) -> None:
        self._check_open()
        if self._failure is not None:
            raise self._failure
        for frame, payload in frames:
            kind = frame.WhichOneof("kind")
            if kind == "hello":
                await self._hello(frame.hello)
            elif self._client is None:
                raise ProtocolError(f"{kind!r} frame before hello")
            elif kind == "publish":
                self._publish(frame.publish, payload)
            elif kind == "delivery_ack":
                self._acked(frame.delivery_ack.seqs)
            elif kind in ("subscribe", "unsubscribe"):
                self._spawn(self._subscription(kind, getattr(frame, kind)))
            elif kind == "bye":
                with contextlib.suppress(aiomqtt.MqttError, ConnectError, TimeoutError):
                    async with asyncio.timeout(self._timeout):
                        # Leave the inbox first and wait for the UNSUBACK: DISCONNECT has no ack,
                        # so without it a direct message sent right after a clean close could
                        # still find the inbox (the broker reads sockets in any order).
                        await self._client.unsubscribe(self._transport.topics.inbox(self._agent),
                                                       timeout=self._timeout)
                        # Release the agent id: an empty retained message deletes the claim.
                        await self._client.publish_qos1(self._transport.topics.owner(self._agent), b"",
                                                        retain=True)
                await self._client.leave(self._timeout)
                self._fail(ConnectError("left the broker (bye)"))
            else:
                raise ProtocolError(f"a client does not send {kind!r} frames")

    async def receive(self) -> list[tuple]:
        while not self._ready:
            if self._failure is not None:
                raise self._failure
            self._check_open()
            self._wake.clear()
            await self._wake.wait()
        frames, self._ready = self._ready, []
        return frames

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._wake.set()
        client, self._client = self._client, None
        if client is not None:
            client.fail_pending(ConnectError("connection closed"))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await client.__aexit__(None, None, None)

    # -- handshake -------------------------------------------------------------------------------

    async def _hello(self, hello: pb.Hello) -> None:
        # The hub's agent-id rule, so an id that works on one transport works on all (it is
        # also one MQTT topic level and part of the client id).

        if not AGENT_ID.fullmatch(hello.agent):
            self._push(pb.Frame(error=pb.Error(
                code=pb.INVALID_ARGUMENT,
                reason=f"invalid agent id {hello.agent!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -, "
                       "starting with a letter or digit")), b"")
            return
        t = self._transport
        if hello.session_id:
            await asyncio.sleep(TAKEOVER_GRACE)
        self._agent = hello.agent
        self._window = max(1, min(hello.receive_window or 1, 65535))
        self._backlog_max = max(BACKLOG_MIN, BACKLOG_FACTOR * self._window)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(t.session_expiry)
        props.ReceiveMaximum = self._window
        if t.max_receive_bytes:
            props.MaximumPacketSize = min(t.max_receive_bytes + 64 * 1024, 268_435_455)
        client = self._mqtt = _Client(
            t.host, t.port, identifier=f"{t.topics.namespace}:{hello.agent}",
            protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
            username=hello.agent if hello.token else None, password=hello.token or None,
            keepalive=t.keepalive, timeout=self._timeout, tls_context=t.tls_context,
            max_inflight_messages=t.publish_window,  # the bus's window, cut to the broker's below
            # Small packets (PUBACKs, small messages) go out at once, not after Nagle's delay.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            on_message=self._on_message,
        )
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    await client.__aenter__()
            except BaseException:
                client.abandon()  # refused, timed out or cancelled: aiomqtt leaves the socket open
                raise
        except MqttConnectError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            self._push(pb.Frame(error=pb.Error(code=_wire_code(code), reason=(
                f"MQTT broker at {t.address} refused {hello.agent!r}: {exc}"))), b"")
            return
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise ConnectError(f"no MQTT broker reachable at {t.address} within "
                               f"{self._timeout:.3g} s: {exc or type(exc).__name__}") from exc
        self._client = client
        client.disconnected.add_done_callback(self._on_disconnected)
        connack = client.connack
        broker_window = getattr(connack, "ReceiveMaximum", None) or 65535
        publish_window = max(1, min(t.publish_window, broker_window))
        broker_max = getattr(connack, "MaximumPacketSize", None)
        self._max_message = min(t.max_message_bytes, broker_max - 64 * 1024 if broker_max else MQTT_MAX_MESSAGE)
        # Subscriptions survive in a present session; (re)subscribing is idempotent, and does it
        # when the broker lost the session.
        owner_topic = t.topics.owner(hello.agent)
        filters = [t.topics.inbox(hello.agent), owner_topic] + [
            t.topics.topic(validate_filter(f)) for f in hello.subscriptions]
        try:
            # The claim at QoS 0, which the receive window does not hold back behind queued messages.
            codes = await self._subscribe(filters, qos0=owner_topic)
            if any(c >= 0x80 for c in codes):
                code = next(c for c in codes if c >= 0x80)
                self._push(pb.Frame(error=pb.Error(code=_wire_code(code), reason=(
                    f"MQTT broker refused the subscriptions of {hello.agent!r} (reason code "
                    f"{code:#x})"))), b"")
                return
            if hello.session_id and await self._taken_over():
                return
            # Claim the agent id (retained), so a bus that loses it to a newer one can tell.
            await asyncio.wait_for(client.publish_qos1(owner_topic, t.nonce.encode(), retain=True),
                                   self._timeout)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise ConnectError(f"MQTT broker at {t.address} dropped {hello.agent!r} while it "
                               f"connected: {exc or type(exc).__name__}") from exc
        resumed = client.session_present and bool(hello.session_id)
        # A resumed session's messages may already have arrived; the welcome goes first.
        self._ready.insert(0, (pb.Frame(welcome=pb.Welcome(
            session_id=hello.session_id if resumed else uuid.uuid4().hex,
            resumed=resumed,
            publish_window=publish_window,
            publish_window_bytes=t.publish_window_bytes,
            max_message_bytes=self._max_message,
            max_frame_bytes=0,
            hub_id=f"mqtt://{t.address}/{t.topics.namespace}",
        )), b""))
        self._wake.set()

    async def _taken_over(self) -> bool:
        """On a reconnect: has a newer bus claimed this agent id since? Then give it back.

        MQTT gives a client id to the newest connection and closes the older one, so without
        this check two buses with one agent id would take it from each other forever.
        """
        t = self._transport
        with contextlib.suppress(TimeoutError):  # no claim at all: nobody took it
            async with asyncio.timeout(min(OWNER_WAIT, self._timeout)):
                await asyncio.shield(self._owner)
        owner = self._owner.result() if self._owner.done() else None
        if owner is None or owner == t.nonce:
            return False
        t.taken_over = (f"agent {self._agent!r} connected to the MQTT broker again elsewhere; "
                        "the broker handed its session to the newer connection")
        self._push(pb.Frame(error=pb.Error(code=pb.ALREADY_EXISTS, reason=t.taken_over)), b"")
        return True

    # -- publishing ------------------------------------------------------------------------------

    def _publish(self, publish: pb.Publish, payload: Any) -> None:
        env, seq = publish.envelope, publish.seq
        try:
            check_envelope(env, len(payload), self._max_message)  # what a hub would refuse
            topic, data, props = encode_message(env, payload, self._agent, self._transport.topics)
        except InvalidMessage as exc:
            self._push_rejection(seq, code_for(exc), str(exc))
            return
        assert self._client is not None
        fut = self._client.publish_qos1(topic, data, props)
        fut.add_done_callback(lambda f: self._on_puback(seq, env.recipient, f))

    def _on_puback(self, seq: int, recipient: str, fut: asyncio.Future[int]) -> None:
        if fut.cancelled() or fut.exception() is not None or self._closed:
            return  # the connection is gone; the bus resends unacked publishes
        code = fut.result()
        if recipient and code == RC_NO_MATCHING_SUBSCRIBERS:
            self._push_rejection(seq, pb.NOT_FOUND,
                                 f"unknown agent {recipient!r}: no session with that id on the broker")
        elif code >= 0x80:
            self._push_rejection(seq, _wire_code(code), f"MQTT broker refused the message "
                                 f"(reason code {code:#x})")
        else:
            self._push(pb.Frame(publish_ack=pb.Ack(seqs=[seq])), b"")

    def _push_rejection(self, seq: int, code: int, reason: str) -> None:
        ack = pb.Ack(rejections=[pb.Rejection(seq=seq, code=code, reason=reason)])
        self._push(pb.Frame(publish_ack=ack), b"")

    # -- subscriptions -------------------------------------------------------------------------

    async def _subscribe(self, mqtt_filters: list[str], qos0: str = "") -> list[int]:
        assert self._client is not None
        codes = await self._client.subscribe(
            [(f, SubscribeOptions(qos=0 if f == qos0 else 1)) for f in mqtt_filters], timeout=self._timeout)
        return [getattr(c, "value", c) for c in codes]

    async def _subscription(self, kind: str, request: pb.Subscribe | pb.Unsubscribe) -> None:
        ack = pb.SubscribeAck(request_id=request.request_id)
        try:
            filters = [self._transport.topics.topic(validate_filter(f)) for f in request.filters]
            if kind == "subscribe":
                codes = await self._subscribe(filters)
                bad = [c for c in codes if c >= 0x80]
                if bad:
                    ack.code, ack.reason = _wire_code(bad[0]), (
                        f"MQTT broker refused subscribing to {list(request.filters)} "
                        f"(reason code {bad[0]:#x})")
            else:
                assert self._client is not None
                await self._client.unsubscribe(filters, timeout=self._timeout)
        except InvalidMessage as exc:
            ack.code, ack.reason = code_for(exc), str(exc)
        except aiomqtt.MqttError as exc:
            self._fail(ConnectError(f"MQTT {kind} failed: {exc}"))
            return
        self._push(pb.Frame(subscribe_ack=ack), b"")

    # -- deliveries ------------------------------------------------------------------------------

    def _on_message(self, message: paho.MQTTMessage) -> None:
        # Called by paho on the event loop for every PUBLISH the broker sends.
        t = self._transport
        if message.topic == t.topics.owner(self._agent):
            self._client_ack(message.mid, message.qos)
            if not self._owner.done() and message.payload:
                self._owner.set_result(message.payload.decode(errors="replace"))
            return
        try:
            env = decode_message(message.topic, message.payload, message.properties, t.topics)
        except InvalidMessage as exc:
            log.warning("%s: dropping an MQTT message: %s", self._agent, exc)
            self._client_ack(message.mid, message.qos)
            return
        payload: Any = message.payload
        if self.max_payload is not None and len(payload) > self.max_payload:
            payload = Oversize(len(payload), self.max_payload)
        t.delivery_seq += 1
        frame = pb.Frame(deliver=pb.Deliver(seq=t.delivery_seq, envelope=env, redelivered=bool(message.dup)))
        if len(self._unacked) < self._window and not self._backlog:
            self._hand_over(frame, payload, message.mid, message.qos)
            return
        self._backlog.append((frame, payload, message.mid, message.qos))
        self._backlog_bytes += len(payload)
        if len(self._backlog) >= self._backlog_max or self._backlog_bytes >= BACKLOG_BYTES:
            self._mqtt.pause_reading(True)

    def _hand_over(self, frame: pb.Frame, payload: Any, mid: int, qos: int) -> None:
        if is_expired(frame.deliver.envelope):
            self._transport.expired += 1
            self._client_ack(mid, qos)
            return
        self._unacked[frame.deliver.seq] = (mid, qos)
        self._push(frame, payload)

    def _acked(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            entry = self._unacked.pop(seq, None)
            if entry is not None:  # else a delivery of an earlier connection: the broker resends it
                self._client_ack(*entry)
        while self._backlog and len(self._unacked) < self._window:
            frame, payload, mid, qos = self._backlog.popleft()
            self._backlog_bytes -= len(payload)
            self._hand_over(frame, payload, mid, qos)
        if len(self._backlog) <= self._backlog_max // 2 and self._backlog_bytes <= BACKLOG_BYTES // 2:
            self._mqtt.pause_reading(False)

    def _client_ack(self, mid: int, qos: int) -> None:
        # Nothing is written to a lost connection: the broker resends what it did not get acked.
        if self._client is not None and self._failure is None and not self._closed:
            self._client.ack(mid, qos)

    # -- plumbing --------------------------------------------------------------------------------

    def _push(self, frame: pb.Frame, payload: Any) -> None:
        # Bounded by construction: deliveries by the receive window, publish acks by the
        # publish window, subscribe acks by the bus's outstanding requests.
        self._ready.append((frame, payload))
        self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_disconnected(self, fut: asyncio.Future[None]) -> None:
        client = self._client
        reason = client.disconnect_reason if client is not None else None
        if reason == RC_SESSION_TAKEN_OVER:
            self._fail(AlreadyConnected(
                f"agent {self._agent!r} connected to the MQTT broker again elsewhere; the broker "
                "handed this session over to the newer connection"))
        else:
            detail = fut.exception() if not fut.cancelled() else None
            self._fail(ConnectError(f"lost the MQTT broker at {self._transport.address}: "
                                    f"{detail or 'disconnected'}"))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        if self._client is not None:
            self._client.fail_pending(ConnectError(str(exc)))
        self._wake.set()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectError("MQTT connection closed")


class MqttTransport(Transport):
    """Connects the bus to an MQTT 5 broker (mosquitto, EMQX, HiveMQ, ...).

    ``namespace`` (the URL path, default ``latentwire``) prefixes every topic, so several
    applications can share a broker. ``session_expiry`` is how long (s) the broker keeps a
    disconnected agent's session and queued messages. ``publish_window`` caps publishes in
    flight (also by the broker's receive maximum), ``publish_window_bytes`` their bytes.
    ``max_message_bytes`` caps a message (also by the broker's maximum packet size);
    ``max_receive_bytes`` asks the broker not to send larger ones (MQTT 5 maximum packet
    size: the broker drops them for this client). ``mqtts://`` takes ``tls_ca`` (trusted
    roots, default: the system's) and ``tls_cert``/``tls_key`` for a client certificate.
    The bus's ``token`` is sent as the MQTT password, with the agent id as user name.
    """

    max_frame_bytes = None

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        session_expiry: float = 300.0,
        keepalive: int = 10,
        publish_window: int = 256,
        publish_window_bytes: int = 16 * 1024 * 1024,
        max_message_bytes: int = MQTT_MAX_MESSAGE,
        max_receive_bytes: int | None = None,
    ) -> None:
        if not host:
            raise ConfigError("mqtt:// URL needs a host, like mqtt://127.0.0.1:1883")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together for a client certificate")
        if not tls and any(x is not None for x in (tls_ca, tls_cert, tls_key)):
            raise ConfigError("TLS files were given for a plain mqtt:// URL; use mqtts://")
        for name, value in (("session_expiry", session_expiry), ("keepalive", keepalive),
                            ("publish_window", publish_window),
                            ("publish_window_bytes", publish_window_bytes),
                            ("max_message_bytes", max_message_bytes)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        if max_message_bytes > MQTT_MAX_MESSAGE:
            raise ConfigError(f"max_message_bytes above MQTT's packet limit ({MQTT_MAX_MESSAGE})")
        self.host = host
        self.port = port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.topics = TopicMap(namespace)
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.publish_window = publish_window
        self.publish_window_bytes = publish_window_bytes
        self.max_message_bytes = max_message_bytes
        self.max_receive_bytes = max_receive_bytes
        self.tls_context: ssl.SSLContext | None = None
        if tls:
            try:
                self.tls_context = ssl.create_default_context(cafile=tls_ca)
                if tls_cert is not None:
                    self.tls_context.load_cert_chain(tls_cert, tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot read TLS file: {exc}") from exc
        #: Deliveries dropped because their ttl had passed (the broker drops others unseen).
        self.expired = 0
        # Names this bus in the retained owner claim of its agent id.
        self.nonce = uuid.uuid4().hex
        # Set once a newer bus took the agent id over: this one then never reconnects.
        self.taken_over: str | None = None
        # Delivery seqs keep counting across connections, so an ack the bus sends for a
        # delivery of a lost connection never names a delivery of the new one.
        self.delivery_seq = 0

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> MqttTransport:
        """``mqtt://host[:port][/namespace]`` or ``mqtts://`` (TLS); ``options`` are the
        constructor's keywords. The token is not used here: it travels in the bus's hello,
        which becomes the MQTT CONNECT's password."""
        scheme = "mqtts" if url.lower().startswith("mqtts:") else "mqtt"
        example = f"{scheme}://127.0.0.1:1883/{DEFAULT_NAMESPACE}"
        parts = cls.split_url(url, example)
        if not parts.hostname:
            raise cls.url_error(url, f"{scheme}:// URL needs a host", example)
        namespace = parts.path.strip("/") or DEFAULT_NAMESPACE
        return cls(parts.hostname, parts.port, namespace=namespace, tls=scheme == "mqtts", **options)

    async def connect(self, timeout: float) -> Connection:
        if self.taken_over:
            # Connecting again would take the agent id back from the newer bus, and so on.
            raise AlreadyConnected(self.taken_over)
        # The MQTT CONNECT needs the agent id, which comes with the bus's hello.
        return _MqttConnection(self, timeout)
