"""The one mapping between `latentwire.errors` and the wire's `ErrorCode`, used by hub and SDK."""

from __future__ import annotations

from ._proto import bus_pb2 as pb
from .errors import (
    AlreadyConnected,
    BusError,
    InvalidMessage,
    InvalidTensor,
    InvalidTopic,
    LatentwireError,
    LimitExceeded,
    MessageTooLarge,
    PermissionDenied,
    ProtocolError,
    Unauthenticated,
    Unavailable,
    UnknownAgent,
)

# Most specific class first: code_for picks the first match.
_CLASS_CODES: list[tuple[type[Exception], int]] = [
    (MessageTooLarge, pb.PAYLOAD_TOO_LARGE),
    (InvalidTopic, pb.INVALID_TOPIC),
    (InvalidTensor, pb.INVALID_TENSOR),
    (InvalidMessage, pb.INVALID_ARGUMENT),
    (UnknownAgent, pb.NOT_FOUND),
    (ProtocolError, pb.MALFORMED),
    (AlreadyConnected, pb.ALREADY_EXISTS),
    (Unavailable, pb.UNAVAILABLE),
    (Unauthenticated, pb.UNAUTHENTICATED),
    (PermissionDenied, pb.PERMISSION_DENIED),
    (LimitExceeded, pb.RESOURCE_EXHAUSTED),
]


def code_for(exc: BaseException) -> int:
    """The wire code for an exception (INVALID_ARGUMENT for an unmapped one)."""
    for cls, code in _CLASS_CODES:
        if isinstance(exc, cls):
            return code
    return pb.INVALID_ARGUMENT


def error_for(code: int, reason: str, *, agent: str = "", size: int = 0, limit: int = 0) -> LatentwireError:
    """The exception a client raises for a hub's refusal with ``code`` and ``reason``."""
    if code == pb.PAYLOAD_TOO_LARGE:
        return MessageTooLarge(size, limit, reason)
    if code == pb.INVALID_TOPIC:
        return InvalidTopic(None, reason)
    if code == pb.INVALID_TENSOR:
        return InvalidTensor(reason)
    if code in (pb.INVALID_ARGUMENT, pb.EXPIRED):
        return InvalidMessage(reason)
    if code == pb.NOT_FOUND:
        return UnknownAgent(agent, reason)
    if code == pb.MALFORMED:
        return ProtocolError(reason)
    if code == pb.ALREADY_EXISTS:
        return AlreadyConnected(reason)
    if code == pb.UNAVAILABLE:
        return Unavailable(reason)
    if code == pb.UNAUTHENTICATED:
        return Unauthenticated(reason)
    if code == pb.PERMISSION_DENIED:
        return PermissionDenied(reason)
    if code == pb.RESOURCE_EXHAUSTED:
        return LimitExceeded(reason)
    return BusError(f"{pb.ErrorCode.Name(code) if code in pb.ErrorCode.values() else code}: {reason}")
