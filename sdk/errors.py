"""Every exception latentwire raises.

Users catch these, never a transport's own errors: each transport translates
gRPC/MQTT failures at its boundary (``raise ... from exc``).

::

    LatentwireError
    ├── ConfigError             bad URL, option or setting
    ├── InvalidMessage          bad input; nothing was sent
    │   ├── InvalidTopic        empty topic, bad level, misplaced wildcard
    │   ├── InvalidTensor       unknown dtype, bad shape, byte length != dtype x shape
    │   └── MessageTooLarge     above the bus's max_message_bytes
    └── BusError                something went wrong on the bus
        ├── ConnectError        could not connect, or the connection was lost for good
        ├── BusClosed           the bus was used after it closed
        ├── ProtocolError       a malformed frame (a bug or a foreign peer)
        ├── UnknownAgent        a direct message or request to an agent the hub does not know
        ├── AlreadyConnected    the agent id has a live session elsewhere
        ├── Unavailable         the hub is draining or shutting down
        ├── AuthError           the hub refused the credentials or the topic
        │   ├── Unauthenticated     no token, a wrong token, or an agent the hub does not know
        │   └── PermissionDenied    an ACL does not allow this topic, filter or recipient
        ├── LimitExceeded       a per-session limit (publish rate, subscriptions) was hit
        ├── RequestTimeout      no reply before the deadline (also a TimeoutError)
        └── RemoteError         the agent that handled a request raised
"""

from __future__ import annotations

__all__ = [
    "AlreadyConnected",
    "AuthError",
    "BusClosed",
    "BusError",
    "ConfigError",
    "ConnectError",
    "InvalidMessage",
    "InvalidTensor",
    "InvalidTopic",
    "LatentwireError",
    "LimitExceeded",
    "MessageTooLarge",
    "PermissionDenied",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "Unauthenticated",
    "Unavailable",
    "UnknownAgent",
]


class LatentwireError(Exception):
    """Base class of every latentwire error."""


class ConfigError(LatentwireError, ValueError):
    """Raised for a bad URL, option or setting."""


class InvalidMessage(LatentwireError, ValueError):
    """Raised when a message is malformed; nothing was sent or accepted."""


class InvalidTopic(InvalidMessage):
    """Raised for an empty or malformed topic or topic filter."""

    def __init__(self, topic: str | None, reason: str) -> None:
        super().__init__(f"invalid topic {topic!r}: {reason}" if topic is not None else reason)
        self.topic = topic
        self.reason = reason


class InvalidTensor(InvalidMessage):
    """Raised for an unknown dtype, a bad shape, or bytes that do not match dtype x shape."""


class MessageTooLarge(InvalidMessage):
    """Raised when a message is larger than the bus's ``max_message_bytes``."""

    def __init__(self, size: int, limit: int, message: str | None = None) -> None:
        super().__init__(
            message or f"message of {size} bytes exceeds max_message_bytes={limit}; "
            "raise the cap on the hub (--max-message-bytes) or send smaller latents"
        )
        self.size = size
        self.limit = limit


class BusError(LatentwireError):
    """Base class of errors from the bus at run time."""


class ConnectError(BusError, ConnectionError):
    """Raised when the hub cannot be reached, or the connection is lost for good."""


class BusClosed(BusError):
    """Raised when a bus (or subscription) is used after it was closed."""


class ProtocolError(BusError):
    """Raised when a peer sends a frame that cannot be parsed or is out of place."""


class UnknownAgent(BusError, LookupError):
    """Raised when a direct message or request names an agent the hub does not know."""

    def __init__(self, agent: str, reason: str | None = None) -> None:
        super().__init__(reason or f"unknown agent {agent!r}: no session with that id on the hub")
        self.agent = agent


class AlreadyConnected(BusError):
    """Raised when the agent id already has a live session on the hub."""


class Unavailable(BusError):
    """Raised when the hub is draining or shutting down."""


class AuthError(BusError, PermissionError):
    """Raised when the hub refuses the credentials or the topic (authn or ACL)."""


class Unauthenticated(AuthError):
    """Raised when the hub does not accept this agent's token (missing, wrong, or unknown agent)."""


class PermissionDenied(AuthError):
    """Raised when the agent's ACL does not allow a publish, subscription or direct message."""


class LimitExceeded(BusError):
    """Raised when a per-session limit of the hub (publish rate, subscriptions) refuses a request."""


class RequestTimeout(BusError, TimeoutError):
    """Raised when a request gets no reply before its deadline."""

    def __init__(self, recipient: str, timeout: float) -> None:
        super().__init__(f"no reply from {recipient!r} within {timeout:g} s")
        self.recipient = recipient
        self.timeout = timeout


class RemoteError(BusError):
    """Raised by ``request()`` when the handling agent raised an exception."""

    def __init__(self, agent: str, error_type: str, detail: str) -> None:
        super().__init__(f"agent {agent!r} failed: {error_type}: {detail}")
        self.agent = agent
        self.error_type = error_type
        self.detail = detail
