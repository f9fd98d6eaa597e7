"""`NatsSettings`: what a NATS URL and its options say (servers, namespace, credentials, TLS,
limits), checked once, and the nats-py connect arguments they make."""

from __future__ import annotations

import importlib.util
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import ConfigError
from ..base import Transport
from .format import DEFAULT_NAMESPACE, SubjectMap

DEFAULT_PORT = 4222
TLS_SCHEMES = ("tls", "nats+tls")
SCHEMES = ("nats", *TLS_SCHEMES)
MiB = 1024 * 1024


def _split_hosts(netloc: str, url: str, example: str) -> list[tuple[str, int]]:
    """``host[:port][,host[:port]...]`` (IPv6 hosts in brackets) -> [(host, port)]."""
    hosts = []
    for item in netloc.split(","):
        host, port = item, ""
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        elif ":" in item:
            host, _, port = item.rpartition(":")
        if not host or (port and not (port.isdigit() and int(port) <= 65535)):
            raise Transport.url_error(url, f"bad NATS server {item!r} (use host:port)", example)
        hosts.append((host, int(port) if port else DEFAULT_PORT))
    return hosts


class NatsSettings:
    """How to reach a NATS JetStream server or cluster, and the limits of the bus on it.

    ``servers`` are (host, port) pairs; the client connects to one of them (a cluster tells it
    the others). ``namespace`` prefixes every subject and names the stream (``LW_<namespace>``,
    or ``stream``), so several applications share a cluster. Credentials: ``token``, or
    ``user``/``password``, or an NKey seed file (``nkey_seed``), or a credentials file
    (``creds``, a JWT and its seed). TLS (``tls=True``): ``tls_ca`` (trusted roots, default the
    system's), ``tls_cert``/``tls_key`` (a client certificate) and ``tls_server_name``.

    ``replicas`` is the stream's replica count when a connection creates it (3 on a
    three-node cluster). ``session_expiry`` (s) is how long a disconnected agent's consumer and
    its unread messages are kept; ``ack_wait`` (s) is when JetStream sends a delivery again that
    was not acknowledged; ``keepalive`` (s) is the ping interval that notices a dead server.
    ``publish_window``/``publish_window_bytes`` bound publishes in flight; ``puback_timeout``
    (s) is how long one waits for its PubAck before the connection is given up and the publish
    resent. ``max_message_bytes`` caps a message (larger than the server's ``max_payload`` it is
    chunked); ``max_receive_bytes`` drops larger deliveries unread. ``stream_max_bytes`` caps
    the stream a connection creates (past it, publishes are refused with `LimitExceeded`).
    """

    def __init__(
        self,
        servers: list[tuple[str, int]],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        stream: str | None = None,
        tls: bool = False,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        nkey_seed: str | Path | None = None,
        creds: str | Path | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_server_name: str | None = None,
        replicas: int = 1,
        session_expiry: float = 300.0,
        ack_wait: float = 30.0,
        keepalive: float = 10.0,
        publish_window: int = 256,
        publish_window_bytes: int = 16 * MiB,
        puback_timeout: float = 10.0,
        max_message_bytes: int = 256 * MiB,
        max_receive_bytes: int | None = None,
        stream_max_bytes: int | None = None,
        duplicate_window: float = 120.0,
    ) -> None:
        if not servers:
            raise ConfigError("a NATS URL needs at least one server, like nats://127.0.0.1:4222")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together for a client certificate")
        if not tls and any(x is not None for x in (tls_ca, tls_cert, tls_key, tls_server_name)):
            raise ConfigError("TLS options were given for a plain nats:// URL; use tls:// (or nats+tls://)")
        if sum(x is not None for x in (token, user, nkey_seed, creds)) > 1:
            raise ConfigError("give one kind of NATS credentials: token, user/password, nkey_seed or creds")
        if (user is None) != (password is None):
            raise ConfigError("user and password must be given together")
        Transport.check_positive(replicas=replicas, session_expiry=session_expiry, ack_wait=ack_wait,
                                 keepalive=keepalive, publish_window=publish_window,
                                 publish_window_bytes=publish_window_bytes, puback_timeout=puback_timeout,
                                 max_message_bytes=max_message_bytes, duplicate_window=duplicate_window)
        if replicas > 5:
            raise ConfigError(f"replicas must be 1-5 (JetStream's limit), got {replicas}")
        for name, value in (("nkey_seed", nkey_seed), ("creds", creds)):
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"{name} file {str(value)!r} does not exist")
            if value is not None and importlib.util.find_spec("nkeys") is None:
                raise ConfigError(f"{name} needs the nkeys package: pip install 'nats-py[nkeys]'")
        self.servers = servers
        self.address = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)
        self.subjects = SubjectMap(namespace, stream)
        self.tls = tls
        self._credentials = {"token": token, "user": user, "password": password,
                             "nkeys_seed": str(nkey_seed) if nkey_seed else None,
                             "user_credentials": str(creds) if creds else None}
        self.tls_context: ssl.SSLContext | None = (
            Transport.tls_client_context(tls_ca, tls_cert, tls_key) if tls else None)
        self.tls_server_name = tls_server_name
        self.replicas = replicas
        self.session_expiry = session_expiry
        self.ack_wait = ack_wait
        self.keepalive = keepalive
        self.publish_window = publish_window
        self.publish_window_bytes = publish_window_bytes
        self.puback_timeout = puback_timeout
        self.max_message_bytes = max_message_bytes
        self.max_receive_bytes = max_receive_bytes
        self.stream_max_bytes = stream_max_bytes
        self.duplicate_window = duplicate_window

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> NatsSettings:
        """The settings of ``nats://[user:password@|token@]host[:port][,host[:port]...][/namespace]``;
        ``tls://`` and ``nats+tls://`` are the same over TLS. ``token`` is the bus's token;
        other keyword options are the constructor's."""
        scheme = url.partition(":")[0].lower()
        scheme = scheme if scheme in SCHEMES else "nats"
        example = f"{scheme}://127.0.0.1:4222,127.0.0.1:4223/{DEFAULT_NAMESPACE}"
        try:
            parts = urlsplit(url)  # no port check here: the netloc may list several servers
        except ValueError as exc:
            raise Transport.url_error(url, f"malformed URL ({exc})", example) from None
        if parts.scheme not in SCHEMES:
            raise Transport.url_error(url, "NatsTransport takes nats://, tls:// or nats+tls:// URLs", example)
        for name in ("namespace", "tls"):
            if name in options:
                raise ConfigError(f"{name!r} comes from the URL ({example}); do not pass it as an option")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        if not hosts:
            raise Transport.url_error(url, f"{parts.scheme}:// URL needs a host", example)
        if userinfo:
            name, colon, secret = userinfo.partition(":")
            if colon:
                options.setdefault("user", unquote(name))
                options.setdefault("password", unquote(secret))
            elif token is None:
                token = unquote(name)
        path = parts.path.strip("/")
        return cls(_split_hosts(hosts, url, example), namespace=path or DEFAULT_NAMESPACE, token=token,
                   tls=parts.scheme in TLS_SCHEMES, **options)

    def connect_options(self, agent: str, hello_token: str) -> dict[str, Any]:
        """nats-py ``connect()`` keyword arguments for one connection of ``agent``."""
        scheme = "tls" if self.tls else "nats"
        options: dict[str, Any] = {
            "servers": [f"{scheme}://[{h}]:{p}" if ":" in h else f"{scheme}://{h}:{p}"
                        for h, p in self.servers],
            "name": f"latentwire:{agent}",
            # The bus reconnects (and resumes the session) itself; nats-py tries each server at
            # most twice, without waiting between, and reports a lost connection at once.
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,
            "ping_interval": self.keepalive,
            "max_outstanding_pings": 2,
            "tls": self.tls_context,
            "tls_hostname": self.tls_server_name,
        }
        options.update(self._credentials_for(hello_token))
        return options

    def _credentials_for(self, hello_token: str) -> dict[str, str]:
        # The bus's token (connect(token=...)) is the NATS token unless other credentials are set.
        credentials = {k: v for k, v in self._credentials.items() if v is not None}
        if not credentials and hello_token:
            credentials["token"] = hello_token
        return credentials

    def credentials_named(self, hello_token: str) -> str:
        """Which credentials a connection presents, for errors (never the secrets themselves)."""
        c = self._credentials_for(hello_token)
        if "user" in c:
            return f"user {c['user']!r} and a password"
        if "token" in c:
            return "a token"
        if "nkeys_seed" in c:
            return f"the NKey seed {c['nkeys_seed']!r}"
        if "user_credentials" in c:
            return f"the credentials file {c['user_credentials']!r}"
        return "no credentials"
