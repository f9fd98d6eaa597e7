"""``inproc://[name]``: an embedded hub in this process, the default transport.

``inproc://`` is an embedded hub, so its transport lives with the hub, above the SDK;
``import latentwire`` does not import it (`latentwire.transports` names it by string).
Frames are handed over as Python objects through two bounded queues, never serialised, so
a latent moves at memory speed (one copy, made when the sender's array becomes bytes). Each
event loop has its own embedded hubs, keyed by name (``inproc://`` is the hub named
``default``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from latentwire.errors import ConfigError, ConnectError
from latentwire.transports.base import Connection, Transport, WireFrame

from .core import Hub, HubConfig

# Batches a side may have queued before its sender waits (frames are already bounded by the
# publish and receive windows; this bounds control traffic too).
QUEUE_BATCHES = 1024

_CLOSED = object()
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Hub]] = (
    weakref.WeakKeyDictionary()
)


def embedded_hub(name: str = "default", **config: object) -> Hub:
    """The embedded hub called ``name`` in the running event loop (created on first use).

    Keyword arguments configure a hub being created (see `latentwire.hub.HubConfig`);
    they are ignored for an existing one.
    """
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(name)
    if hub is None or hub.closed:
        hub = hubs[name] = Hub(HubConfig(**config), name=f"inproc://{name}")
    return hub


class _QueueConnection(Connection):
    """One side of an in-process stream: sends into the peer's queue, reads its own."""

    def __init__(self, inbox: asyncio.Queue, outbox: asyncio.Queue) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False
        self.peer: _QueueConnection | None = None

    async def send(self, frames: Sequence[WireFrame]) -> None:
        if self._closed or (self.peer is not None and self.peer._closed):
            raise ConnectError("in-process connection closed")
        await self._outbox.put(list(frames))

    async def receive(self) -> list[tuple]:
        if self._closed:
            raise ConnectError("in-process connection closed")
        batch = await self._inbox.get()
        if batch is _CLOSED:
            self._closed = True
            raise ConnectError("in-process connection closed by peer")
        return batch

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wake the peer's pending receive; never block on a full queue while closing.
        for q in (self._outbox, self._inbox):
            while True:
                try:
                    q.put_nowait(_CLOSED)
                    break
                except asyncio.QueueFull:
                    q.get_nowait()


def connection_pair() -> tuple[_QueueConnection, _QueueConnection]:
    """Two connected in-process connection ends (client side, hub side)."""
    a_to_b: asyncio.Queue = asyncio.Queue(QUEUE_BATCHES)
    b_to_a: asyncio.Queue = asyncio.Queue(QUEUE_BATCHES)
    client = _QueueConnection(inbox=b_to_a, outbox=a_to_b)
    server = _QueueConnection(inbox=a_to_b, outbox=b_to_a)
    client.peer, server.peer = server, client
    return client, server


class InprocTransport(Transport):
    """Connects to an embedded hub in this process (see `embedded_hub`)."""

    max_frame_bytes = None

    def __init__(self, name: str = "default", hub: Hub | None = None) -> None:
        self.name = name or "default"
        self._hub = hub

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> InprocTransport:
        """``inproc://[name]``: the embedded hub called ``name`` (``default`` if empty). It takes
        no transport options, and the token needs no transport: it travels in the bus's hello."""
        if options:
            raise ConfigError(f"inproc:// takes no transport options, got {sorted(options)} for "
                              f"{url!r}; those belong to grpc:// and mqtt:// URLs")
        parts = cls.split_url(url, "inproc://name")
        return cls(parts.netloc or parts.path.strip("/") or "default")

    @property
    def hub(self) -> Hub:
        """The embedded hub this transport connects to."""
        if self._hub is None or self._hub.closed:
            self._hub = embedded_hub(self.name)
        return self._hub

    async def connect(self, timeout: float) -> Connection:
        hub = self.hub
        if hub.closed:
            raise ConnectError(f"embedded hub {self.name!r} is closed")
        client, server = connection_pair()
        hub.spawn_connection(server)
        return client
