"""The `Connection` the bus drives on ``mqtt://``: the hub's half of the frame protocol,
played locally over one MQTT 5 connection; and `MqttTransport`, which opens them.

There is no latentwire hub on this path: the broker routes. `MqttConnection` keeps the same
`Connection` contract as ``inproc://`` and ``grpc://``, so `latentwire.Bus` (acks, credits,
dedup, request/reply, reconnects) runs unchanged on top:

* hello -> MQTT CONNECT with a persistent session (clean start off, session expiry, client id
  ``namespace:agent``, ``receive_maximum`` = the bus's receive window); the welcome is built
  from the CONNACK (session present -> resumed, the broker's receive maximum and maximum
  packet size -> publish window and message cap).
* publish -> PUBLISH at QoS 1; the PUBACK (and its MQTT 5 reason code) -> the publish ack.
  The message is checked here first (`check_envelope`), so what a hub would refuse is refused.
* subscribe/unsubscribe -> SUBSCRIBE/UNSUBSCRIBE; filters map 1:1 (``+`` and ``#`` mean the
  same in latentwire and MQTT) under ``namespace/topic/``. A group subscription is the MQTT 5
  shared subscription ``$share/<group>/namespace/topic/<filter>``, with the group's
  subscription identifier, which tells the deliveries it brings from plain ones.
* deliveries -> deliver frames; a message is PUBACKed (manual ack) only when the application
  took it, so unconsumed messages stay with the broker's session and come again after a
  reconnect. At most ``receive_window`` deliveries are handed to the bus unacked.
* direct messages go to the recipient's inbox topic ``namespace/inbox/<agent>``; a PUBACK
  "no matching subscribers" there means no such agent (`UnknownAgent`). Requests carry the
  MQTT 5 response topic (the asker's inbox) and correlation data.

What the MQTT client raises becomes a latentwire error in one place, `translate_errors`.
A refusal is answered as a hub answers it (an error frame, a publish rejection, a
subscribe-ack code), so the bus raises the same error on every transport. `MqttTransport`
parses the URL and options and keeps what outlives one connection (the agent-id claim, the
delivery counter); it lives here because each needs the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..._codes import code_for, error_for
from ..._message import check_envelope, is_expired
from ..._proto import bus_pb2 as pb
from ..._topics import AGENT_ID, validate_filter, validate_group
from ..._wire import Oversize
from ...errors import (
    AlreadyConnected,
    ConfigError,
    ConnectError,
    InvalidMessage,
    LatentwireError,
)
from ..base import Connection, Transport, WireFrame
from ..hubless import HublessConnection
from .client import BrokerRefused, ConnectionLost, MqttClient
from .format import (
    DEFAULT_NAMESPACE,
    MQTT_MAX_MESSAGE,
    PACKET_SLACK,
    TopicMap,
    decode_message,
    encode_message,
)

__all__ = [
    "BACKLOG_BYTES",
    "BACKLOG_FACTOR",
    "BACKLOG_MIN",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "OWNER_WAIT",
    "RC_NO_MATCHING_SUBSCRIBERS",
    "RC_SESSION_TAKEN_OVER",
    "TAKEOVER_GRACE",
    "MqttConnection",
    "MqttTransport",
    "translate_errors",
]

log = logging.getLogger("latentwire.mqtt")

# Deliveries a broker sends beyond the receive window wait in the connection; some brokers
# (mosquitto 2.0.11 among them, docs/mqtt.md) do not keep to the receive maximum a client asks for. Past
# this many messages (x the window, at least the minimum) or bytes the client stops reading
# the socket, so TCP holds the broker back, until half of them went to the bus.
BACKLOG_FACTOR, BACKLOG_MIN, BACKLOG_BYTES = 8, 1024, 64 * 1024 * 1024
# How long a reconnecting bus waits for the broker's retained owner claim of its agent id.
OWNER_WAIT = 1.0
# A reconnect waits this long before its CONNECT, so that a newer bus that has just taken the
# agent id over (which closed this bus's connection) can publish its claim first.
TAKEOVER_GRACE = 0.25
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
SCHEMES = ("mqtt", "mqtts")
# MQTT 5 reason codes (spec 2.4) this transport acts on.
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_SESSION_TAKEN_OVER = 0x8E
# The largest packet MQTT allows (a broker's or client's maximum packet size can only be lower).
MQTT_MAX_PACKET = 268_435_455
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


@contextlib.contextmanager
def translate_errors(broker: str, what: str, *, connect_timeout: float | None = None) -> Iterator[None]:
    """Map what the MQTT client raises while the broker at ``broker`` handles ``what`` (like
    ``"'alice'"`` or ``"the message"``) to latentwire errors, chained ``from`` the original.

    * a failure reason code -> the error a hub raises for that refusal: 0x86 (bad user name
      or password) -> `Unauthenticated`, 0x87 (not authorized) -> `PermissionDenied`, 0x97
      (quota exceeded) -> `LimitExceeded`, 0x95 (packet too large) -> `MessageTooLarge`, ...;
    * a lost connection, an unreachable broker, a TLS failure or no answer in time ->
      `ConnectError` (while connecting, ``connect_timeout`` given: "no MQTT broker reachable").

    latentwire errors pass through unchanged.
    """
    try:
        yield
    except LatentwireError:
        raise  # already translated (ConnectError is an OSError too)
    except BrokerRefused as exc:
        reason = f"MQTT broker at {broker} refused {what}: {exc}"
        raise error_for(_wire_code(exc.reason_code), reason) from exc
    except (ConnectionLost, OSError) as exc:  # OSError: also TimeoutError and ssl.SSLError
        detail = str(exc) or type(exc).__name__
        if connect_timeout is not None:
            raise ConnectError(f"no MQTT broker reachable at {broker} within {connect_timeout:.3g} s: "
                               f"{detail}") from exc
        raise ConnectError(f"lost the MQTT broker at {broker}: {detail}") from exc


class MqttConnection(HublessConnection):
    """One MQTT connection that speaks the bus's frames to the `Bus` above it."""

    label = "mqtt"

    def __init__(self, transport: MqttTransport, timeout: float) -> None:
        super().__init__()
        self._transport = transport
        self._timeout = timeout
        self._client: MqttClient | None = None  # made by the hello
        self.max_payload: int | None = transport.max_receive_bytes
        self._max_message = 0
        # Deliveries handed to the bus and not yet acked, by delivery seq -> (mid, qos).
        self._unacked: dict[int, tuple[int, int]] = {}
        self._window = 1
        self._backlog: deque[tuple[pb.Frame, Any, int, int]] = deque()
        self._backlog_max = BACKLOG_MIN
        self._backlog_bytes = 0
        self._owner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._groups: dict[int, str] = {}  # subscription identifier -> group name

    def _errors(self, what: str, *, connect_timeout: float | None = None
                ) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self._transport.address, what, connect_timeout=connect_timeout)

    # -- the Connection contract ---------------------------------------------------------------

    async def send(self, frames: Sequence[WireFrame]) -> None:
        self._check_open()
        with self._errors("the connection"):
            self._raise_failure()
            await self._handle(frames)

    def _raise_failure(self) -> None:
        with self._errors("the connection"):  # paho's ConnectionLost, as latentwire's error
            super()._raise_failure()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._wake.set()
        if self._client is not None:
            # DISCONNECT keeps the session (expiry as at CONNECT): a new connection resumes it.
            await self._client.disconnect(self._timeout)

    # -- handshake -------------------------------------------------------------------------------

    async def _hello(self, hello: pb.Hello) -> None:
        try:
            await self._open_session(hello)
        except ConnectError:
            raise
        except LatentwireError as exc:
            # A refusal, sent as a hub sends it: the bus raises it as the answer to its hello.
            self._push(pb.Frame(error=pb.Error(code=code_for(exc), reason=str(exc))), b"")

    async def _open_session(self, hello: pb.Hello) -> None:
        # The hub's agent-id rule, so an id that works on one transport works on all (it is
        # also one MQTT topic level and part of the client id).
        if not AGENT_ID.fullmatch(hello.agent):
            raise InvalidMessage(f"invalid agent id {hello.agent!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -, "
                                 "starting with a letter or digit")
        t, agent = self._transport, hello.agent
        if hello.session_id:
            await asyncio.sleep(TAKEOVER_GRACE)
        self._agent = agent
        # Known before CONNECT: a resumed session's group messages may come before the SUBACK.
        shares = [(validate_group(s.group), validate_filter(s.filter)) for s in hello.group_subscriptions]
        for group, _ in shares:
            self._identify(group)
        self._window = max(1, min(hello.receive_window or 1, 65535))
        self._backlog_max = max(BACKLOG_MIN, BACKLOG_FACTOR * self._window)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(t.session_expiry)
        props.ReceiveMaximum = self._window
        if t.max_receive_bytes:
            props.MaximumPacketSize = min(t.max_receive_bytes + PACKET_SLACK, MQTT_MAX_PACKET)
        client = self._client = MqttClient(
            t.host, t.port, client_id=f"{t.topics.namespace}:{agent}", on_message=self._on_message,
            # The bus's token is the MQTT password, with the agent id as user name.
            username=agent if hello.token else None, password=hello.token or None,
            tls_context=t.tls_context, keepalive=t.keepalive, properties=props,
            max_inflight=t.publish_window,  # the bus's window, cut to the broker's in the welcome
        )
        with self._errors(repr(agent), connect_timeout=self._timeout):
            connack = await client.connect(self._timeout)
        client.disconnected.add_done_callback(self._on_disconnected)
        broker_window = getattr(connack.properties, "ReceiveMaximum", None) or 65535
        publish_window = max(1, min(t.publish_window, broker_window))
        broker_max = getattr(connack.properties, "MaximumPacketSize", None)
        self._max_message = min(t.max_message_bytes,
                                broker_max - PACKET_SLACK if broker_max else MQTT_MAX_MESSAGE)
        # Subscriptions survive in a present session; (re)subscribing is idempotent, and does it
        # when the broker lost the session. The owner claim at QoS 0, which the receive window
        # does not hold back behind queued messages.
        owner_topic = t.topics.owner(agent)
        filters = [(t.topics.inbox(agent), 1), (owner_topic, 0)] + [
            (t.topics.topic(validate_filter(f)), 1) for f in hello.subscriptions]
        with self._errors(f"the subscriptions of {agent!r}"):
            await client.subscribe(filters, self._timeout)
            for group, pattern in shares:
                await self._share(group, [pattern], True)
        if hello.session_id and await self._taken_over():
            assert t.taken_over is not None
            raise AlreadyConnected(t.taken_over)
        # Claim the agent id (retained), so a bus that loses it to a newer one can tell.
        with self._errors(f"the agent id claim of {agent!r}"):
            async with asyncio.timeout(self._timeout):
                await client.publish(owner_topic, t.nonce.encode(), retain=True)
        resumed = connack.session_present and bool(hello.session_id)
        self._welcome(hello.session_id if resumed else uuid.uuid4().hex, resumed, publish_window,
                      t.publish_window_bytes, self._max_message, f"mqtt://{t.address}/{t.topics.namespace}")

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
        return True

    async def _bye(self) -> None:
        assert self._client is not None
        t = self._transport
        with contextlib.suppress(LatentwireError, TimeoutError), self._errors("the goodbye"):
            async with asyncio.timeout(self._timeout):
                # Leave the inbox first and wait for the UNSUBACK: DISCONNECT has no ack, so
                # without it a direct message sent right after a clean close could still find
                # the inbox (the broker reads sockets in any order).
                await self._client.unsubscribe([t.topics.inbox(self._agent)], self._timeout)
                # Release the agent id: an empty retained message deletes the claim.
                await self._client.publish(t.topics.owner(self._agent), b"", retain=True)
        # Session expiry 0: the broker forgets the session, as a hub does on bye.
        await self._client.disconnect(self._timeout, session_expiry=0)
        self._fail(ConnectError("left the broker (bye)"))

    # -- publishing ------------------------------------------------------------------------------

    async def _publish(self, publish: pb.Publish, payload: Any) -> None:
        env, seq = publish.envelope, publish.seq
        try:
            check_envelope(env, len(payload), self._max_message)  # what a hub would refuse
            topic, data, props = encode_message(env, payload, self._agent, self._transport.topics)
        except InvalidMessage as exc:
            self._push_rejection(seq, code_for(exc), str(exc))
            return
        assert self._client is not None
        fut = self._client.publish(topic, data, props)
        fut.add_done_callback(functools.partial(self._on_puback, seq, env.recipient))

    def _on_puback(self, seq: int, recipient: str, fut: asyncio.Future[int]) -> None:
        if fut.cancelled():
            return
        if self._closed:
            fut.exception()  # retrieved: nobody waits for this ack any more
            return
        try:
            with self._errors("the message"):
                code = fut.result()
        except ConnectError:
            return  # the connection is gone; the bus resends unacked publishes
        except LatentwireError as exc:
            self._push_rejection(seq, code_for(exc), str(exc))
            return
        if recipient and code == RC_NO_MATCHING_SUBSCRIBERS:
            self._push_rejection(seq, pb.NOT_FOUND,
                                 f"unknown agent {recipient!r}: no session with that id on the broker")
        else:
            self._push(pb.Frame(publish_ack=pb.Ack(seqs=[seq])), b"")

    # -- subscriptions -------------------------------------------------------------------------

    def _identify(self, group: str) -> int:
        """The subscription identifier of ``group``, remembered to tell its deliveries apart."""
        identifier = self._transport.topics.group_identifier(group)
        if self._groups.setdefault(identifier, group) != group:
            raise ConfigError(f"groups {group!r} and {self._groups[identifier]!r} share an MQTT "
                              "subscription identifier on this bus; rename one")
        return identifier

    async def _share(self, group: str, patterns: list[str], subscribe: bool) -> None:
        """(Un)subscribe a group's shared subscriptions ``$share/<group>/...`` on ``patterns``."""
        assert self._client is not None
        identifier = self._identify(group)
        shared = [self._transport.topics.shared(group, p) for p in patterns]
        if subscribe:
            await self._client.subscribe([(f, 1) for f in shared], self._timeout, identifier)
        else:
            await self._client.unsubscribe(shared, self._timeout)

    async def _subscription(self, kind: str, request: pb.Subscribe | pb.Unsubscribe) -> None:
        # In the background: the bus's other frames (acks above all) do not wait for the SUBACK.
        self._spawn(self._update_subscription(kind, request), "subscription")

    async def _update_subscription(self, kind: str, request: pb.Subscribe | pb.Unsubscribe) -> None:
        assert self._client is not None
        ack = pb.SubscribeAck(request_id=request.request_id)
        try:
            filters = [self._transport.topics.topic(validate_filter(f)) for f in request.filters]
            if request.group:
                with self._errors(f"{kind} of group {request.group!r} to {list(request.filters)}"):
                    await self._share(validate_group(request.group), list(request.filters),
                                      kind == "subscribe")
            elif kind == "subscribe":
                with self._errors(f"subscribing to {list(request.filters)}"):
                    await self._client.subscribe([(f, 1) for f in filters], self._timeout)
            else:
                with self._errors(f"unsubscribing from {list(request.filters)}"):
                    await self._client.unsubscribe(filters, self._timeout)
        except ConnectError as exc:
            self._fail(exc)
            return
        except LatentwireError as exc:
            ack.code, ack.reason = code_for(exc), str(exc)
        self._push(pb.Frame(subscribe_ack=ack), b"")

    # -- deliveries ------------------------------------------------------------------------------

    def _on_message(self, message: paho.MQTTMessage) -> None:
        # Called on the event loop for every PUBLISH the broker sends.
        t = self._transport
        try:
            topic = message.topic
            if topic == t.topics.owner(self._agent):
                self._client_ack(message.mid, message.qos)
                if not self._owner.done() and message.payload:
                    self._owner.set_result(message.payload.decode(errors="replace"))
                return
            env = decode_message(topic, message.payload, message.properties, t.topics)
        except (InvalidMessage, UnicodeDecodeError) as exc:
            log.warning("%s: dropping an MQTT message: %s", self._agent, exc)
            self._client_ack(message.mid, message.qos)
            return
        payload: Any = message.payload
        if self.max_payload is not None and len(payload) > self.max_payload:
            payload = Oversize(len(payload), self.max_payload)
        t.delivery_seq += 1
        # A shared subscription's message carries its group's identifier; a plain one none.
        identifiers = getattr(message.properties, "SubscriptionIdentifier", None) or []
        group = next((self._groups[i] for i in identifiers if i in self._groups), "")
        frame = pb.Frame(deliver=pb.Deliver(seq=t.delivery_seq, envelope=env, redelivered=bool(message.dup),
                                            group=group))
        if len(self._unacked) < self._window and not self._backlog:
            self._hand_over(frame, payload, message.mid, message.qos)
            return
        self._backlog.append((frame, payload, message.mid, message.qos))
        self._backlog_bytes += len(payload)
        if len(self._backlog) >= self._backlog_max or self._backlog_bytes >= BACKLOG_BYTES:
            assert self._client is not None
            self._client.pause_reading(True)

    def _hand_over(self, frame: pb.Frame, payload: Any, mid: int, qos: int) -> None:
        if is_expired(frame.deliver.envelope):
            self._transport.expired += 1
            self._client_ack(mid, qos)
            return
        self._unacked[frame.deliver.seq] = (mid, qos)
        self._push(frame, payload)

    async def _acked(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            entry = self._unacked.pop(seq, None)
            if entry is not None:  # else a delivery of an earlier connection: the broker resends it
                self._client_ack(*entry)
        while self._backlog and len(self._unacked) < self._window:
            frame, payload, mid, qos = self._backlog.popleft()
            self._backlog_bytes -= len(payload)
            self._hand_over(frame, payload, mid, qos)
        if len(self._backlog) <= self._backlog_max // 2 and self._backlog_bytes <= BACKLOG_BYTES // 2:
            assert self._client is not None
            self._client.pause_reading(False)

    def _client_ack(self, mid: int, qos: int) -> None:
        # Nothing is written to a lost connection: the broker resends what it did not get acked.
        if self._client is not None and self._failure is None and not self._closed:
            self._client.ack(mid, qos)

    # -- plumbing --------------------------------------------------------------------------------

    def _on_disconnected(self, fut: asyncio.Future[ConnectionLost]) -> None:
        lost = fut.result()
        if lost.reason_code == RC_SESSION_TAKEN_OVER:
            # This bus must not take the agent id back: its reconnects now fail.
            self._transport.taken_over = (
                f"agent {self._agent!r} connected to the MQTT broker again elsewhere; the broker "
                "handed this session over to the newer connection")
        self._fail(lost)


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
        self.check_positive(session_expiry=session_expiry, keepalive=keepalive, publish_window=publish_window,
                            publish_window_bytes=publish_window_bytes, max_message_bytes=max_message_bytes)
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
        self.tls_context: ssl.SSLContext | None = (
            self.tls_client_context(tls_ca, tls_cert, tls_key) if tls else None)
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
        """The transport for ``mqtt://host[:port][/namespace]`` (port 1883) or
        ``mqtts://host[:port][/namespace]`` (TLS, port 8883); the namespace defaults to
        ``latentwire``. ``options`` are the keyword arguments of `MqttTransport`.

        ``token`` is not kept here: it travels in the bus's hello, which becomes the MQTT
        CONNECT's password.
        """
        del token
        scheme = "mqtts" if url.lower().startswith("mqtts:") else "mqtt"
        example = f"{scheme}://127.0.0.1:1883/{DEFAULT_NAMESPACE}"
        parts = cls.split_url(url, example)
        if parts.scheme not in SCHEMES:
            raise cls.url_error(url, "MqttTransport takes mqtt:// or mqtts:// URLs", example)
        if not parts.hostname:
            raise cls.url_error(url, f"{scheme}:// URL needs a host", example)
        for name in ("namespace", "tls"):
            if name in options:
                raise ConfigError(f"{name!r} comes from the URL ({example}); do not pass it as an option")
        namespace = parts.path.strip("/") or DEFAULT_NAMESPACE
        return cls(parts.hostname, parts.port, namespace=namespace, tls=scheme == "mqtts", **options)

    async def connect(self, timeout: float) -> Connection:
        if self.taken_over:
            # Connecting again would take the agent id back from the newer bus, and so on.
            raise AlreadyConnected(self.taken_over)
        # The MQTT CONNECT needs the agent id, which comes with the bus's hello.
        return MqttConnection(self, timeout)
