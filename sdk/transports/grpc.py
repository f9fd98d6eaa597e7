"""``grpc://host:port`` and ``grpcs://host:port``: the hub daemon over one bidi stream.

The channel, TLS and the client's end of the stream live here; the stream itself (frame
batches with identity serializers, error translation, channel options) is shared with the
hub's servicer in `latentwire._grpc_stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from .._grpc_stream import METHOD, FramedStream, channel_options, translate_errors
from ..errors import ConfigError, ConnectError
from .base import Connection, Transport

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_RECEIVE_FRAME = 64 * 1024 * 1024
# Asked when a connection attempt failed: a call that fails fast carries gRPC's reason for it
# (the channel's state does not). Harmless if the hub answers: the standard health check.
PROBE_METHOD = "/grpc.health.v1.Health/Check"


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

    @classmethod
    def from_url(cls, url: str, *, token: str | None = None, **options: Any) -> GrpcTransport:
        """``grpc://host:port`` (plain) or ``grpcs://host:port`` (TLS); ``options`` are the
        constructor's keywords, and ``token`` goes with every call as ``authorization: Bearer``."""
        scheme = "grpcs" if url.lower().startswith("grpcs:") else "grpc"
        example = f"{scheme}://127.0.0.1:7878"
        parts = cls.split_url(url, example)
        if not parts.hostname or parts.port is None:
            raise cls.url_error(url, f"{scheme}:// URL needs a host and port", example)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(f"{host}:{parts.port}", tls=scheme == "grpcs", token=token, **options)

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

    def channel(self) -> grpc.aio.Channel:
        """The channel to the hub (opened on first use, in the running loop), for the other
        services on its port (health, admin); `aclose` closes it."""
        return self._open_channel()

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
