"""Frames over one gRPC bidi stream: what the gRPC transport and the hub's servicer share.

Both ends of ``/latentwire.v1.Bus/Connect`` use the same plumbing, kept here, below both: the
method's name, the channel options (message limits, keepalive), the translation of gRPC
errors into `latentwire.errors` (here and nowhere else), and `FramedStream`, a `Connection`
over a client call or a servicer context. Each stream message is a batch of wire frames
(`latentwire._wire`) with identity serializers, so payload bytes are never wrapped in protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import grpc.aio

from ._wire import FrameDecoder, iter_batches
from .errors import BusError, ConnectError, PermissionDenied, Unauthenticated, Unavailable
from .transports.base import Connection, WireFrame

SERVICE = "latentwire.v1.Bus"
RPC = "Connect"  # the one method: a bidi stream of frame batches
METHOD = f"/{SERVICE}/{RPC}"
# Headroom above the frame size for gRPC's own per-message bytes.
FRAME_SLACK = 64 * 1024


def channel_options(max_frame_bytes: int, receive_limit: int) -> list[tuple[str, int]]:
    """gRPC options shared by the client channel and the hub server."""
    return [
        ("grpc.max_send_message_length", max_frame_bytes + FRAME_SLACK),
        ("grpc.max_receive_message_length", receive_limit + FRAME_SLACK),
        # Notice a dead peer within seconds, so sessions resume promptly.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


@contextlib.contextmanager
def translate_errors(peer: str) -> Iterator[None]:
    """Map gRPC failures on a stream with ``peer`` (e.g. "hub at host:port") to latentwire errors."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code, detail = exc.code(), exc.details() or ""
        where = f"{peer}: {detail or code.name}"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise Unauthenticated(where) from exc
        if code == grpc.StatusCode.PERMISSION_DENIED:
            raise PermissionDenied(where) from exc
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise BusError(f"{where} (a frame above the peer's gRPC message limit?)") from exc
        if code == grpc.StatusCode.UNAVAILABLE and "drain" in detail:
            raise Unavailable(where) from exc
        raise ConnectError(where) from exc
    except (grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
        # Writing to a call that has already finished (the peer went away mid-write).
        raise ConnectError(f"{peer}: stream closed ({exc})") from exc


class FramedStream(Connection):
    """Frames over one gRPC bidi stream; serves both ends, a client call and a servicer
    context, which offer the same ``read()``/``write()`` of raw byte messages. Each end
    supplies its own `aclose`."""

    def __init__(self, stream: Any, peer: str, max_frame: int, max_payload: int | None) -> None:
        self._stream = stream
        self._peer = peer
        self.max_frame_bytes = max_frame
        self._decoder = FrameDecoder(max_payload)
        self._closed = False

    @property
    def max_payload(self) -> int | None:
        return self._decoder.max_payload

    @max_payload.setter
    def max_payload(self, value: int | None) -> None:
        self._decoder.max_payload = value

    async def send(self, frames: Sequence[WireFrame]) -> None:
        if self._closed:
            raise ConnectError(f"{self._peer}: stream closed")
        with translate_errors(self._peer):
            for message in iter_batches(frames, self.max_frame_bytes):
                await self._stream.write(message)

    async def receive(self) -> list[tuple]:
        while True:
            if self._closed:
                raise ConnectError(f"{self._peer}: stream closed")
            with translate_errors(self._peer):
                message = await self._stream.read()
            if message is grpc.aio.EOF:
                raise ConnectError(f"{self._peer} closed the stream")
            frames = self._decoder.feed(message)
            if frames:
                return frames
