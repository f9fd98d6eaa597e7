"""`Message`: what an application sends and receives, and its mapping to the wire `Envelope`.

The mapping lives here once, for the SDK and the hub alike: `to_envelope` splits a message into
a small protobuf header and the raw payload bytes (text as UTF-8, a tensor's buffer), and
`from_envelope` puts them back together without copying the payload. `check_envelope` is the
one validation both sides run, so the hub refuses exactly what the SDK would.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field

from ._latent import Latent, expected_nbytes
from ._proto import bus_pb2 as pb
from ._topics import validate_topic
from .errors import InvalidMessage, InvalidTensor, MessageTooLarge

Payload = bytes | bytearray | memoryview

# Header a reply carries when the handler failed (see Bus.reply).
ERROR_TYPE_HEADER = "lw-error-type"
MAX_ID_LENGTH = 128
MAX_HEADERS_BYTES = 64 * 1024


def new_id() -> str:
    """A fresh message id (128 random bits, hex)."""
    return uuid.uuid4().hex


class Control(BaseModel):
    """A small control instruction between agents: a ``kind`` and JSON-like ``args``."""

    model_config = ConfigDict(frozen=True)

    kind: str
    args: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    """A message on the bus: routing fields plus exactly one body (text, latent or control).

    ``sender`` is set by the hub from the sending session, so it cannot be forged.
    ``ttl`` is in seconds; the hub drops a message whose ttl passed before delivery.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str = Field(default_factory=new_id)
    topic: str = ""
    sender: str = ""
    recipient: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    ttl: float | None = None
    text: str | None = None
    latent: Latent | None = None
    control: Control | None = None
    redelivered: bool = False

    @property
    def body(self) -> str | Latent | Control | None:
        """Whichever of text, latent or control the message carries."""
        if self.text is not None:
            return self.text
        return self.latent if self.latent is not None else self.control

    @property
    def is_request(self) -> bool:
        """True when the sender awaits a reply (`Bus.reply` answers it)."""
        return bool(self.reply_to and self.correlation_id)

    @property
    def is_error(self) -> bool:
        """True for a reply that reports a failed handler."""
        return ERROR_TYPE_HEADER in self.headers


def to_envelope(
    *,
    topic: str = "",
    recipient: str | None = None,
    text: str | None = None,
    latent: Latent | Any = None,
    control: Control | None = None,
    headers: dict[str, str] | None = None,
    ttl: float | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    message_id: str | None = None,
) -> tuple[pb.Envelope, bytes]:
    """Build the wire header and payload for one message; raises `InvalidMessage` on bad input."""
    bodies = [b for b in (text, latent, control) if b is not None]
    if len(bodies) != 1:
        raise InvalidMessage(
            f"a message needs exactly one body of text=, latent= or control=; got {len(bodies)}"
        )
    if ttl is not None and not ttl > 0:
        raise InvalidMessage(f"ttl must be a positive number of seconds, got {ttl!r}")
    env = pb.Envelope(
        id=message_id or new_id(),
        topic=topic,
        recipient=recipient or "",
        correlation_id=correlation_id or "",
        reply_to=reply_to or "",
        headers=headers or {},
        created_at_ns=time.time_ns(),
        ttl_ms=0 if ttl is None else max(1, round(ttl * 1000)),
    )
    payload = b""
    if text is not None:
        if not isinstance(text, str):
            raise InvalidMessage(f"text must be a str, not {type(text).__name__}")
        env.text = ""
        payload = text.encode("utf-8")
    elif control is not None:
        if not isinstance(control, Control):
            raise InvalidMessage(f"control must be a latentwire.Control, not {type(control).__name__}")
        env.control.kind = control.kind
        env.control.args.update(control.args)
    else:
        if not isinstance(latent, Latent):
            latent = Latent(latent)  # a bare numpy array or torch tensor
        env.tensor.dtype = latent.dtype
        env.tensor.shape.extend(latent.shape)
        env.tensor.space = latent.space or ""
        env.tensor.family = latent.family or ""
        payload = latent.tobytes()
    return env, payload


def message_size(env: pb.Envelope, payload_len: int) -> int:
    """Bytes a message counts against ``max_message_bytes``: header plus payload."""
    return env.ByteSize() + payload_len


def check_envelope(env: pb.Envelope, payload_len: int, max_message_bytes: int) -> None:
    """Validate a message header against its payload; raise the matching `InvalidMessage`."""
    size = message_size(env, payload_len)
    if size > max_message_bytes:
        raise MessageTooLarge(size, max_message_bytes)
    if not env.id or len(env.id) > MAX_ID_LENGTH:
        raise InvalidMessage(f"message id must be 1..{MAX_ID_LENGTH} characters, got {len(env.id)}")
    if env.headers:
        header_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in env.headers.items())
        if header_bytes > MAX_HEADERS_BYTES:
            raise InvalidMessage(f"headers take {header_bytes} bytes; at most {MAX_HEADERS_BYTES} are allowed")
    if env.recipient:
        if env.topic:
            validate_topic(env.topic)
    else:
        validate_topic(env.topic)
    kind = env.WhichOneof("body")
    if kind is None:
        raise InvalidMessage("message has no body: set one of text, tensor or control")
    if kind == "tensor":
        t = env.tensor
        if t.data:
            raise InvalidTensor("tensor bytes must travel as the frame payload, not inline")
        want = expected_nbytes(t.dtype, list(t.shape))
        if payload_len != want:
            raise InvalidTensor(
                f"tensor bytes do not match dtype x shape: {t.dtype} {tuple(t.shape)} needs "
                f"{want} bytes, got {payload_len}"
            )
    elif kind == "control":
        if payload_len:
            raise InvalidMessage("a control message carries no payload")
    elif kind == "text" and env.text:
        raise InvalidMessage("text must travel as the frame payload, not inline")


def from_envelope(env: pb.Envelope, payload: Payload, *, redelivered: bool = False) -> Message:
    """Turn a received header and payload into a `Message` (the payload is not copied)."""
    kind = env.WhichOneof("body")
    text = latent = control = None
    if kind == "text":
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"text payload is not valid UTF-8: {exc}") from exc
    elif kind == "tensor":
        t = env.tensor
        latent = Latent.frombuffer(payload, t.dtype, list(t.shape), space=t.space, family=t.family)
    elif kind == "control":
        control = Control(kind=env.control.kind, args=json_format.MessageToDict(env.control.args))
    return Message(
        id=env.id,
        topic=env.topic,
        sender=env.sender,
        recipient=env.recipient or None,
        correlation_id=env.correlation_id or None,
        reply_to=env.reply_to or None,
        headers=dict(env.headers),
        created_at=datetime.fromtimestamp(env.created_at_ns / 1e9, timezone.utc),
        ttl=env.ttl_ms / 1000 if env.ttl_ms else None,
        text=text,
        latent=latent,
        control=control,
        redelivered=redelivered,
    )


def is_expired(env: pb.Envelope, now_ns: int | None = None) -> bool:
    """Whether the message's ttl has passed."""
    if not env.ttl_ms:
        return False
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns > env.created_at_ns + env.ttl_ms * 1_000_000


__all__ = ["Control", "Message", "check_envelope", "from_envelope", "is_expired", "to_envelope"]
