"""The transport contract: move batches of frames to and from a hub, nothing more.

Topics, acks, credits, sessions, dedup and reconnects are the `Bus`'s job and are done once
there; a transport only opens connections and carries ``(Frame, payload)`` pairs over them.
The same `Connection` contract serves the hub side, so the hub core runs over any transport.
Each transport parses its own URL (`Transport.from_url`); `latentwire.transports` maps URL
schemes to transports.
"""

from __future__ import annotations

import abc
import ssl
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .._wire import Oversize, Payload, WireFrame
from ..errors import ConfigError

__all__ = ["Connection", "Oversize", "Payload", "Transport", "WireFrame"]


class Connection(abc.ABC):
    """One live, ordered, bidirectional stream of frames between a client and the hub."""

    #: Largest transport message this connection sends (None: frames are never chunked).
    max_frame_bytes: int | None = None
    #: Largest payload accepted from the peer; larger ones arrive as `Oversize` markers.
    #: None until known: the bus sets it from the hub's welcome.
    max_payload: int | None = None
    #: The peer's network address without its port (None in process); the hub paces failed
    #: logins per address.
    peer_address: str | None = None

    @abc.abstractmethod
    async def send(self, frames: Sequence[WireFrame]) -> None:
        """Send frames in order; raises `ConnectError` once the stream is gone."""

    @abc.abstractmethod
    async def receive(self) -> list[tuple]:
        """Wait for the next frames; raises `ConnectError` when the stream ends.

        A malformed message raises `ProtocolError` and the stream stays usable.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """End the stream; idempotent."""

    def refused(self, code: int, reason: str) -> None:
        """The hub refused this connection's hello with wire ``code`` (the Error frame is sent);
        a transport with its own status codes may report it natively too."""


class Transport(abc.ABC):
    """Knows how to reach one hub (by URL) and opens connections to it."""

    #: Largest transport message; frames above it are chunked (None: no limit, no chunking).
    max_frame_bytes: int | None = None

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> Transport:
        """The transport for ``url`` with its transport ``options``; `latentwire.connect` calls
        this on the class registered for the URL's scheme (`latentwire.transports`).

        ``token`` is the agent's bearer token, for a transport that presents it outside the
        bus's hello (gRPC call metadata). Raises `ConfigError` naming the URL and showing a
        correct one. A transport with a URL scheme overrides this.
        """
        raise ConfigError(f"{cls.__qualname__} is not made from a URL (got {url!r}); construct it "
                          f"and pass it as connect(transport={cls.__qualname__}(...))")

    @staticmethod
    def url_error(url: str, problem: str, example: str) -> ConfigError:
        """The error for a URL a transport cannot use: what is wrong, the URL, a correct one."""
        return ConfigError(f"{problem}: got {url!r}, use a URL like {example}")

    @classmethod
    def split_url(cls, url: str, example: str) -> SplitResult:
        """``url`` split into its parts, port checked; a `url_error` showing ``example`` if it
        cannot be (an unclosed IPv6 bracket, a port that is not a number in 0-65535)."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError as exc:
            raise cls.url_error(url, f"malformed URL ({exc})", example) from None
        return parts

    @staticmethod
    def check_positive(**values: float) -> None:
        """`ConfigError` naming the first option that is not above 0."""
        for name, value in values.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")

    @staticmethod
    def tls_client_context(tls_ca: str | Path | None, tls_cert: str | Path | None = None,
                           tls_key: str | Path | None = None) -> ssl.SSLContext:
        """A TLS client context that trusts ``tls_ca`` (default: the system's roots) and presents
        ``tls_cert``/``tls_key`` when given; `ConfigError` naming the file it cannot read."""
        try:
            context = ssl.create_default_context(cafile=tls_ca)
            if tls_cert is not None:
                context.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot read TLS file: {exc}") from exc
        return context

    @abc.abstractmethod
    async def connect(self, timeout: float) -> Connection:
        """Open a new connection; raises `ConnectError` when the hub is unreachable in time."""

    async def aclose(self) -> None:
        """Release what the transport holds (channels, embedded hub references)."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
