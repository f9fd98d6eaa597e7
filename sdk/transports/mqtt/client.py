"""MQTT 5 client plumbing: paho-mqtt's external-loop API, driven by asyncio.

paho-mqtt speaks the protocol (packets, packet ids, keep-alive, in-flight window); this
module does its I/O on the running event loop, through paho's documented external-loop
API only:

* `MqttClient.connect` runs paho's blocking ``connect()`` (DNS, TCP, TLS handshake, CONNECT)
  in a worker thread, bounded by the timeout, then waits for the CONNACK;
* the socket is watched with ``add_reader``/``add_writer`` and served with ``loop_read`` and
  ``loop_write``; paho asks for the writer through ``on_socket_register_write`` and
  ``on_socket_unregister_write``; a task calls ``loop_misc`` (keep-alive) every second;
* every paho callback then runs on the event loop thread and completes a future: the CONNACK,
  each PUBACK, SUBACK and UNSUBACK (by packet id), and `MqttClient.disconnected`;
* received PUBLISHes go to one callback and are acknowledged only when the owner calls
  `MqttClient.ack` (paho's ``manual_ack``); `MqttClient.pause_reading` stops reading the
  socket, so TCP holds the broker back.

Failures surface as `BrokerRefused` (a failure reason code), `ConnectionLost`, `OSError`
(unreachable, TLS) or `TimeoutError`; the transport translates them (`translate_errors`).
Nothing here knows latentwire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

__all__ = ["BrokerRefused", "ConnAck", "ConnectionLost", "MqttClient", "MqttError"]

log = logging.getLogger("latentwire.mqtt")

# How often paho's loop_misc runs: it sends keep-alive pings and notices a silent broker.
MISC_INTERVAL = 1.0


class MqttError(Exception):
    """Base of the MQTT failures `MqttClient` raises (besides `OSError` and `TimeoutError`)."""


class BrokerRefused(MqttError):
    """Raised when the broker answers a packet with a failure reason code (0x80 or above)."""

    def __init__(self, packet: str, reason_code: int, reason: str) -> None:
        super().__init__(f"{reason} (reason code {reason_code:#x} in {packet})")
        self.packet = packet
        self.reason_code = reason_code
        self.reason = reason


class ConnectionLost(MqttError):
    """Raised when the connection is gone; ``reason_code`` is the broker's DISCONNECT reason
    code when the broker sent one."""

    def __init__(self, detail: str, reason_code: int | None = None) -> None:
        super().__init__(detail if reason_code is None else f"{detail} (reason code {reason_code:#x})")
        self.reason_code = reason_code


@dataclass(frozen=True)
class ConnAck:
    """What the broker's CONNACK said."""

    #: The broker still had this client id's session (clean start was off).
    session_present: bool
    #: MQTT 5 properties: ReceiveMaximum, MaximumPacketSize, ... (absent ones are unset).
    properties: Properties


def _refusal(packet: str, codes: Sequence[ReasonCode]) -> BrokerRefused | None:
    failed = next((code for code in codes if code.is_failure), None)
    return None if failed is None else BrokerRefused(packet, failed.value, str(failed))


class MqttClient:
    """One MQTT 5 connection to a broker, served on the running event loop.

    Used once: `connect`, then `publish`/`subscribe`/`unsubscribe`/`ack`, then `disconnect`
    or `close`. A lost connection is not re-established (the caller makes a new client), so
    paho's own reconnecting is off. ``on_message`` gets every received PUBLISH, on the loop.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        on_message: Callable[[paho.MQTTMessage], None],
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        keepalive: int = 60,
        properties: Properties | None = None,
        max_inflight: int = 20,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._host, self._port, self._keepalive, self._properties = host, port, keepalive, properties
        self._name = client_id
        client = self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                            protocol=paho.MQTTv5, reconnect_on_failure=False,
                                            manual_ack=True)
        if username is not None:
            client.username_pw_set(username, password)
        if tls_context is not None:
            client.tls_set_context(tls_context)
        client.max_inflight_messages = max_inflight
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = lambda _client, _userdata, message: on_message(message)
        client.on_publish = self._on_answer
        client.on_subscribe = self._on_answer
        client.on_unsubscribe = self._on_answer
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        #: Done (with the `ConnectionLost` that says why) once the connection is gone.
        self.disconnected: asyncio.Future[ConnectionLost] = self._loop.create_future()
        # Futures of packets waiting for the broker's answer, by packet id.
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._fd = -1  # the socket's descriptor while this client watches it
        self._reading = self._writing = self._paused = False
        self._misc: asyncio.Task[None] | None = None

    # -- connecting and closing -------------------------------------------------------------------

    async def connect(self, timeout: float) -> ConnAck:
        """Open the connection and take the CONNACK, within ``timeout`` seconds in all.

        Raises `BrokerRefused` (the CONNACK's reason code), `ConnectionLost`, `OSError` or
        `TimeoutError`; the socket is closed then, also when this is cancelled.
        """
        self._client.connect_timeout = timeout  # bounds the TCP connect and TLS handshake
        attempt = self._loop.run_in_executor(None, functools.partial(
            self._client.connect, self._host, self._port, self._keepalive, clean_start=False,
            properties=self._properties))
        try:
            async with asyncio.timeout(timeout):
                # Shielded: a thread cannot be cancelled, and its socket is closed when it ends.
                await asyncio.shield(attempt)
                self._start()
                return await self._connack
        except BaseException:
            attempt.add_done_callback(lambda _: self.close())
            raise

    def _start(self) -> None:
        # From here on paho is driven on the event loop thread only.
        client = self._client
        sock = client.socket()
        if sock is None:
            raise ConnectionLost("the broker closed the connection")
        with contextlib.suppress(OSError):
            # Small packets (PUBACKs, small messages) go out at once, not after Nagle's delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._fd = sock.fileno()
        client.on_socket_close = lambda _client, _userdata, _sock: self._stop_watching()
        client.on_socket_register_write = lambda _client, _userdata, _sock: self._watch_writes(True)
        client.on_socket_unregister_write = lambda _client, _userdata, _sock: self._watch_writes(False)
        self._watch_reads()
        # CONNECT was written in the connecting thread; anything left goes out from here.
        self._watch_writes(client.want_write())
        self._misc = self._loop.create_task(self._misc_loop(), name=f"mqtt[{self._name}].keepalive")

    async def disconnect(self, timeout: float, *, session_expiry: int | None = None) -> None:
        """Send DISCONNECT and wait up to ``timeout`` until it went out, then close.

        ``session_expiry=0`` asks the broker to forget the session now; by default it keeps
        it for the session expiry given at CONNECT.
        """
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = session_expiry
        try:
            # Only once connect() handed paho over to the loop: before that its thread owns it.
            if self._fd >= 0 and not self.disconnected.done() and \
                    self._client.disconnect(properties=props) == paho.MQTT_ERR_SUCCESS:
                # paho closes the socket once DISCONNECT is written, and then reports it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(self.disconnected)
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection now, without DISCONNECT; idempotent."""
        if self._misc is not None:
            self._misc.cancel()
        sock = self._client.socket()
        self._stop_watching()
        if sock is not None:
            sock.close()  # paho is never driven again, so it does not mind
        self._ended(ConnectionLost("connection closed"))

    # -- operations -------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None, *,
                retain: bool = False) -> asyncio.Future[int]:
        """Queue a QoS 1 PUBLISH (in order); the future gets the PUBACK's reason code, or
        `BrokerRefused` for a failure code, or `ConnectionLost`."""
        self._check_connected()
        info = self._client.publish(topic, payload, 1, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionLost(f"cannot publish: {paho.error_string(info.rc)}")
        return self._expect(info.mid)

    async def subscribe(self, filters: Sequence[tuple[str, int]], timeout: float,
                        identifier: int = 0) -> None:
        """SUBSCRIBE to ``(filter, qos)`` pairs and wait up to ``timeout`` for the SUBACK;
        raises `BrokerRefused` if the broker refused any of them. A nonzero ``identifier`` (MQTT
        5 subscription identifier) comes back on every message these filters match."""
        self._check_connected()
        props = None
        if identifier:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = identifier
        rc, mid = self._client.subscribe([(f, SubscribeOptions(qos=qos)) for f, qos in filters],
                                         properties=props)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLost(f"cannot subscribe: {paho.error_string(rc)}")
        refused = _refusal("SUBACK", await self._answer(mid, timeout))
        if refused is not None:
            raise refused

    async def unsubscribe(self, filters: Sequence[str], timeout: float) -> None:
        """UNSUBSCRIBE from ``filters`` and wait up to ``timeout`` for the UNSUBACK."""
        self._check_connected()
        rc, mid = self._client.unsubscribe(list(filters))
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLost(f"cannot unsubscribe: {paho.error_string(rc)}")
        refused = _refusal("UNSUBACK", await self._answer(mid, timeout))
        if refused is not None:
            raise refused

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK one received message (manual acks); nothing for QoS 0 or a closed connection,
        whose broker sends again what it did not get acked."""
        if qos > 0 and not self.disconnected.done():
            self._client.ack(mid, qos)

    def pause_reading(self, paused: bool) -> None:
        """Stop (True) or resume (False) reading from the broker: TCP then holds it back."""
        if paused == self._paused:
            return
        self._paused = paused
        self._watch_reads()
        if not paused:
            # An SSL socket may hold decrypted bytes that the selector does not report.
            self._loop.call_soon(self._read)

    # -- the socket -------------------------------------------------------------------------------

    def _watch_reads(self) -> None:
        want = self._fd >= 0 and not self._paused
        if want and not self._reading:
            self._loop.add_reader(self._fd, self._read)
        elif self._reading and not want:
            self._loop.remove_reader(self._fd)
        self._reading = want

    def _watch_writes(self, want: bool) -> None:
        want = want and self._fd >= 0
        if want and not self._writing:
            self._loop.add_writer(self._fd, self._write)
        elif self._writing and not want:
            self._loop.remove_writer(self._fd)
        self._writing = want

    def _stop_watching(self) -> None:
        # Before the socket closes, so that a later socket with the same descriptor is never
        # touched by this client.
        if self._reading:
            self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._reading = self._writing = False
        self._fd = -1

    def _read(self) -> None:
        try:
            while self._reading and self._client.loop_read() == paho.MQTT_ERR_SUCCESS:
                sock = self._client.socket()
                # An SSL socket may hold decrypted bytes that the selector does not report.
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except Exception as exc:  # noqa: BLE001 - a callback failed: end the connection, never hang
            self._crashed(exc)

    def _write(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # noqa: BLE001 - as in _read
            self._crashed(exc)

    async def _misc_loop(self) -> None:
        try:
            while self._client.loop_misc() == paho.MQTT_ERR_SUCCESS:
                await asyncio.sleep(MISC_INTERVAL)
        except Exception as exc:  # noqa: BLE001 - as in _read
            self._crashed(exc)

    def _crashed(self, exc: Exception) -> None:
        log.error("MQTT client %s failed; closing its connection", self._name, exc_info=exc)
        self._ended(ConnectionLost(f"MQTT client failed: {exc!r}"))
        self.close()

    # -- answers from the broker (paho callbacks, on the event loop) ------------------------------

    def _expect(self, mid: int) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        self._pending[mid] = fut  # the answer is read from the socket later, never before
        return fut

    async def _answer(self, mid: int, timeout: float) -> Any:
        fut = self._expect(mid)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(mid, None)

    def _on_answer(self, _client: paho.Client, _userdata: Any, mid: int,
                   reason: ReasonCode | list[ReasonCode], _properties: Properties | None) -> None:
        # PUBACK (one reason code), SUBACK and UNSUBACK (one per filter).
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return  # its waiter gave up (timeout or cancel)
        if isinstance(reason, list):
            fut.set_result(reason)
        elif reason.is_failure:
            fut.set_exception(BrokerRefused("PUBACK", reason.value, str(reason)))
        else:
            fut.set_result(reason.value)

    def _on_connect(self, _client: paho.Client, _userdata: Any, flags: paho.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(BrokerRefused("CONNACK", reason.value, str(reason)))
        else:
            self._connack.set_result(ConnAck(flags.session_present,
                                             properties or Properties(PacketTypes.CONNACK)))

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, flags: paho.DisconnectFlags,
                       reason: ReasonCode, _properties: Properties | None) -> None:
        if flags.is_disconnect_packet_from_server:
            self._ended(ConnectionLost(f"the broker disconnected: {reason}", reason.value))
        else:
            self._ended(ConnectionLost(f"disconnected: {str(reason).lower()}"))

    def _ended(self, lost: ConnectionLost) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(lost)
        waiting = [*self._pending.values(), self._connack]
        self._pending.clear()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(lost)
                fut.exception()  # retrieved: a waiter may be gone (the caller resends)

    def _check_connected(self) -> None:
        if self.disconnected.done():
            raise self.disconnected.result()
