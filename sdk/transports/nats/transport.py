"""`NatsTransport`: the bus's transport for ``nats://``, ``tls://`` and ``nats+tls://`` URLs."""

from __future__ import annotations

from typing import Any

from ..base import Connection, Transport
from .connection import NatsConnection, SessionState
from .settings import NatsSettings


class NatsTransport(Transport):
    """Connects the bus to a NATS JetStream server or cluster (see `NatsSettings` for the options).

    It outlives the bus's connections: the `SessionState` it keeps lets a new connection
    acknowledge deliveries of the one before and answer for the agent id as the same bus.
    """

    max_frame_bytes = None

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.state = SessionState()

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> NatsTransport:
        """The transport for ``nats://[user:password@|token@]host[:port][,host[:port]...][/namespace]``;
        ``tls://`` and ``nats+tls://`` are the same over TLS. ``token`` is the bus's token;
        other keyword options are `NatsSettings`'."""
        return cls(NatsSettings.from_url(url, token=token, **options))

    @property
    def expired(self) -> int:
        """Deliveries dropped because their ttl had passed."""
        return self.state.expired

    async def connect(self, timeout: float) -> Connection:
        # Connecting needs the agent id (the presence check, the consumer), from the bus's hello.
        return NatsConnection(self.settings, self.state, timeout)
