"""`HublessConnection`: the part of a broker transport's connection that plays the hub.

On ``mqtt://`` and ``nats://`` no latentwire hub runs; the broker routes, and the connection
answers the bus's frames the way a hub would. The skeleton of that is the same on every
broker: frames for the bus wait in a list that `receive` hands over; `send` passes each frame
the bus sends to the handler of its kind (`_hello`, `_publish`, `_acked`, `_subscription`,
`_bye`), which the broker's subclass writes; a failure of the broker connection is kept and
raised to the bus on its next call, which then reconnects; background work runs in tasks
named after the agent. The list needs no bound of its own: deliveries are bounded by the
receive window, publish acks by the publish window, subscribe acks by the bus's open requests.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from .._proto import bus_pb2 as pb
from ..errors import ConnectError, ProtocolError
from .base import Connection, WireFrame


class HublessConnection(Connection):
    """A connection that speaks the bus's frames itself, over a broker instead of a hub."""

    max_frame_bytes = None  # the broker takes whole messages (a subclass may chunk them itself)
    #: Names the transport in task names and errors.
    label = "broker"

    def __init__(self) -> None:
        self._agent = ""  # known from the hello
        self._ready: list[WireFrame] = []
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._welcomed = False  # the hello succeeded: other frames may follow
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the Connection contract ---------------------------------------------------------------

    async def send(self, frames: Sequence[WireFrame]) -> None:
        self._check_open()
        self._raise_failure()
        await self._handle(frames)

    async def receive(self) -> list[tuple]:
        while not self._ready:
            self._raise_failure()
            self._check_open()
            self._wake.clear()
            await self._wake.wait()  # set by every frame and by the end of the connection
        frames, self._ready = self._ready, []
        return frames

    async def _handle(self, frames: Sequence[WireFrame]) -> None:
        """Answer the bus's frames, in order, as the hub would."""
        for frame, payload in frames:
            kind = frame.WhichOneof("kind")
            if kind == "hello":
                await self._hello(frame.hello)
            elif not self._welcomed:
                raise ProtocolError(f"{kind!r} frame before hello")
            elif kind == "publish":
                await self._publish(frame.publish, payload)
            elif kind == "delivery_ack":
                await self._acked(frame.delivery_ack.seqs)
            elif kind in ("subscribe", "unsubscribe"):
                await self._subscription(kind, getattr(frame, kind))
            elif kind == "bye":
                await self._bye()
            else:
                raise ProtocolError(f"a client does not send {kind!r} frames")

    # -- what a broker's connection does with each frame ---------------------------------------

    @abc.abstractmethod
    async def _hello(self, hello: pb.Hello) -> None:
        """Connect to the broker for ``hello.agent`` and push the welcome (or an error frame)."""

    @abc.abstractmethod
    async def _publish(self, publish: pb.Publish, payload: Any) -> None:
        """Publish; push its ack (or rejection) once the broker has it."""

    @abc.abstractmethod
    async def _acked(self, seqs: Sequence[int]) -> None:
        """The bus took these deliveries: acknowledge them to the broker."""

    @abc.abstractmethod
    async def _subscription(self, kind: str, request: pb.Subscribe | pb.Unsubscribe) -> None:
        """(Un)subscribe; push the subscribe ack."""

    @abc.abstractmethod
    async def _bye(self) -> None:
        """The bus leaves for good: end the session at the broker."""

    # -- plumbing ------------------------------------------------------------------------------

    def _push(self, frame: pb.Frame, payload: Any) -> None:
        """Hand a frame to the bus."""
        self._ready.append((frame, payload))
        self._wake.set()

    def _welcome(self, session_id: str, resumed: bool, publish_window: int, publish_window_bytes: int,
                 max_message_bytes: int, hub_id: str) -> None:
        """Hand the bus its welcome, ahead of anything already waiting (a resumed session's
        messages may have arrived first); from now on a lost connection ends this one. A broker
        takes whole messages (no frame limit) and routes subscription groups."""
        welcome = pb.Welcome(session_id=session_id, resumed=resumed, publish_window=publish_window,
                             publish_window_bytes=publish_window_bytes, max_message_bytes=max_message_bytes,
                             max_frame_bytes=0, hub_id=hub_id, groups=True)
        self._ready.insert(0, (pb.Frame(welcome=welcome), b""))
        self._welcomed = True
        self._wake.set()

    def _push_rejection(self, seq: int, code: int, reason: str) -> None:
        """Refuse publish ``seq`` with wire ``code``, as a hub's publish ack would."""
        ack = pb.Ack(rejections=[pb.Rejection(seq=seq, code=code, reason=reason)])
        self._push(pb.Frame(publish_ack=ack), b"")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` in the background, until it ends or the connection closes."""
        task = asyncio.create_task(coro, name=f"latentwire[{self._agent}].{self.label}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, exc: BaseException) -> None:
        """The broker connection is gone (the first cause is kept): the bus hears it next."""
        if self._failure is None:
            self._failure = exc
        self._wake.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectError(f"{self.label}:// connection closed")
