"""`MqttTransport`: where the broker is (URL and options), and what outlives one connection."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

from ...errors import AlreadyConnected, ConfigError
from ..base import Connection, Transport
from .connection import MqttConnection
from .format import DEFAULT_NAMESPACE, MQTT_MAX_MESSAGE, TopicMap

__all__ = ["DEFAULT_PORT", "DEFAULT_TLS_PORT", "MqttTransport"]

DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
SCHEMES = ("mqtt", "mqtts")


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
