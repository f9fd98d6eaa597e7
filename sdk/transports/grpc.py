"""``grpc://host:port`` and ``grpcs://host:port``: the hub daemon over one bidi stream.

Each stream message is a batch of wire frames (see `latentwire._wire`), sent with identity
serializers so payload bytes are never wrapped in protobuf. gRPC errors are translated into
`latentwire.errors` here, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from .._wire import FrameDecoder, iter_batches
from ..errors import BusError, ConfigError, ConnectError, PermissionDenied, Unauthenticated, Unavailable
from .base import Connection, Transport, WireFrame

METHOD = "/latentwire.v1.Bus/Connect"
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_RECEIVE_FRAME = 64 * 1024 * 1024
# Headroom above the frame size for gRPC's own per-message bytes.
FRAME_SLACK = 64 * 1024
# Asked when a connection attempt failed: a call that fails fast carries gRPC's reason for it
# (the channel's state does not). Harmless if the hub answers: the standard health check.
PROBE_METHOD = "/grpc.health.v1.Health/Check"


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
    context, which offer the same ``read()``/``write()`` of raw byte messages."""

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


class _GrpcConnection(FramedStream):
    """The client's end: a call on the channel."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stream.done_writing(), 1.0)
        self._stream.cancel()


class GrpcTransport(Transport):
    """Connects to a ``latentwire hub`` daemon; ``tls=True`` (``grpcs://``) verifies its cert.

    ``tls_ca`` is a PEM file of trusted roots (default: the system's); ``tls_cert`` and
    ``tls_key`` present a client certificate for mutual TLS. ``max_receive_bytes`` caps a
    received message (default: the hub's ``max_message_bytes``, from its welcome); a larger
    one is acked and dropped with a warning, never buffered.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_server_name: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_receive_bytes: int | None = None,
        token: str | None = None,
    ) -> None:
        if not target or ":" not in target:
            raise ConfigError(f"gRPC target must be host:port, got {target!r}")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together for mutual TLS")
        if not tls and any(x is not None for x in (tls_ca, tls_cert, tls_key)):
            raise ConfigError("TLS files were given for a plain grpc:// URL; use grpcs://")
        self.target = target
        # What a failed TLS handshake is explained with (`_tls_cause`).
        self._tls_ca, self._tls_cert = tls_ca, tls_cert
        self._server_name = tls_server_name or target.rsplit(":", 1)[0].strip("[]")
        self.max_frame_bytes = max_frame_bytes
        self._max_receive = max_receive_bytes
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # A gRPC message is one frame batch; the hub's frames are at most its max_frame_bytes.
        self._options = channel_options(max_frame_bytes, MAX_RECEIVE_FRAME)
        self._creds: grpc.ChannelCredentials | None = None
        if tls:
            read = lambda p: Path(p).read_bytes() if p is not None else None  # noqa: E731
            try:
                self._creds = grpc.ssl_channel_credentials(read(tls_ca), read(tls_key), read(tls_cert))
            except OSError as exc:
                raise ConfigError(f"cannot read TLS file: {exc}") from exc
            if tls_server_name:
                self._options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._channel: grpc.aio.Channel | None = None

    def _open_channel(self) -> grpc.aio.Channel:
        # Made on first connect, inside the running event loop that will use it (grpc.aio
        # binds a channel to the loop it was created in).
        if self._channel is None:
            if self._creds is not None:
                self._channel = grpc.aio.secure_channel(self.target, self._creds, options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._stub = self._channel.stream_stream(METHOD)  # identity (de)serializers: raw bytes
        return self._channel

    async def connect(self, timeout: float) -> Connection:
        channel = self._open_channel()
        failures: list[str] = []
        try:
            await asyncio.wait_for(self._ready(channel, failures), timeout)
        except asyncio.TimeoutError as exc:
            last = f" (last attempt: {failures[-1]})" if failures else ""
            raise ConnectError(f"no hub reachable at {self.target} within {timeout:.3g} s{last}") from exc
        with translate_errors(f"hub at {self.target}"):
            call = self._stub(metadata=self._metadata, wait_for_ready=False)
        return _GrpcConnection(call, f"hub at {self.target}", self.max_frame_bytes, self._max_receive)

    async def _ready(self, channel: grpc.aio.Channel, failures: list[str]) -> None:
        """Wait until ``channel`` is ready. After each failed attempt, append gRPC's reason to
        ``failures``; a TLS failure raises `ConnectError` at once, since waiting cannot fix it."""
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                try:
                    await channel.unary_unary(PROBE_METHOD)(b"", timeout=1.0, wait_for_ready=False)
                except grpc.aio.AioRpcError as exc:
                    detail = exc.details() or exc.code().name
                    failures.append(re.sub(r"^.*last error: [A-Z_]+: (\S+: )?", "", detail))
                    if (cause := self._tls_cause(detail)) is not None:
                        raise ConnectError(f"hub at {self.target}: {cause}") from exc
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)

    def _tls_cause(self, detail: str) -> str | None:
        """What a failed connection attempt (gRPC's ``detail``) says about TLS; None when it is
        not a TLS mistake (e.g. connection refused: the hub may still be starting)."""
        if "WRONG_VERSION_NUMBER" in detail and self._creds is not None:
            return ("it does not speak TLS (the TLS handshake got plain bytes back); use grpc:// for "
                    "a plain hub")
        if "CERTIFICATE_VERIFY_FAILED" in detail:
            why = re.search(r"CERTIFICATE_VERIFY_FAILED: ([^:]+)", detail)
            return (f"its TLS certificate is not trusted: {why[1] if why else 'verification failed'} "
                    f"(checked against {self._tls_ca or 'the system roots'}; pass tls_ca= the CA that "
                    "signed the hub's certificate)")
        if "Hostname Verification" in detail or "Peer name" in detail:
            return (f"its TLS certificate does not name {self._server_name!r}; connect to a name the "
                    "certificate holds, or pass tls_server_name=")
        if "Socket closed" in detail or "Connection reset" in detail:
            if self._creds is None:
                return ("it closed the connection before gRPC started, as a TLS hub does to a plain "
                        "client; use grpcs://")
            if self._tls_cert is None:
                return ("it closed the connection during the TLS handshake: it requires a client "
                        "certificate (mutual TLS); pass tls_cert and tls_key signed by the hub's "
                        "--tls-client-ca")
            return (f"it closed the connection during the TLS handshake: it does not trust the client "
                    f"certificate {self._tls_cert} (mutual TLS); it must be signed by the hub's "
                    "--tls-client-ca")
        return None

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
