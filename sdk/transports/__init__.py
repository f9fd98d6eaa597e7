"""Transports: how a `Bus` reaches a hub or a broker, and the one table of URL schemes.

``connect("grpc://host:port")`` looks the scheme up here, imports the transport's module on
first use and lets the transport parse its own URL (`Transport.from_url`). Modules are named
as strings, so ``import latentwire`` imports no transport (nor the hub behind ``inproc://``)
and an optional dependency is needed only by those who use its scheme. A new transport is
one `register_transport` call; `connect` never changes.
"""

from __future__ import annotations

import importlib
import re

from ..errors import ConfigError
from .base import Connection, Transport

__all__ = ["Connection", "Transport", "register_transport", "schemes", "transport_class"]

# scheme -> ("module:Class", the extra that installs its dependencies, or None)
_SCHEMES: dict[str, tuple[str, str | None]] = {
    "inproc": ("latentwire.hub.inproc:InprocTransport", None),  # an embedded hub, the default
    "grpc": ("latentwire.transports.grpc:GrpcTransport", None),
    "grpcs": ("latentwire.transports.grpc:GrpcTransport", None),
    "mqtt": ("latentwire.transports.mqtt:MqttTransport", "mqtt"),
    "mqtts": ("latentwire.transports.mqtt:MqttTransport", "mqtt"),
    "nats": ("latentwire.transports.nats:NatsTransport", "nats"),
    "tls": ("latentwire.transports.nats:NatsTransport", "nats"),  # NATS's own name for nats over TLS
    "nats+tls": ("latentwire.transports.nats:NatsTransport", "nats"),
}

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")  # RFC 3986, lower case (urlsplit lowers it)
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_EXAMPLE = 'register_transport("zmq", "mypackage.zmq:ZmqTransport", extra=None)'


def register_transport(scheme: str, target: str, extra: str | None = None) -> None:
    """Make ``scheme://`` URLs use the `Transport` subclass ``target`` (``"module:Class"``).

    The module is imported when such a URL is first used; if that fails and ``extra`` is
    given, the error says ``pip install 'latentwire[<extra>]'``. Registering a scheme again
    with the same target is a no-op; a different target raises `ConfigError`.
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise ConfigError(f"transport scheme must be lower-case letters, digits, '+', '-' or '.', "
                          f"starting with a letter; got {scheme!r} (e.g. {_EXAMPLE})")
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ConfigError(f"transport target must be 'module:Class', got {target!r} (e.g. {_EXAMPLE})")
    row = (target, extra)
    if _SCHEMES.setdefault(scheme, row) != row:
        raise ConfigError(f"{scheme}:// is already registered to {_SCHEMES[scheme][0]}; "
                          f"cannot register it to {target}")


def schemes() -> list[str]:
    """The registered URL schemes, in registration order."""
    return list(_SCHEMES)


def transport_class(scheme: str, *, url: str = "") -> type[Transport]:
    """The `Transport` subclass registered for ``scheme``, its module imported on first use.

    Raises `ConfigError` for an unknown scheme (listing the known ones; ``url`` is quoted),
    a missing optional dependency (naming the extra to install) or a bad registration.
    """
    row = _SCHEMES.get(scheme)
    if row is None:
        where = f" in {url!r}" if url else ""
        raise ConfigError(f"unsupported URL scheme {scheme!r}{where}; use one of: "
                          + ", ".join(f"{s}://" for s in _SCHEMES))
    target, extra = row
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is not None:
            raise ConfigError(f"{scheme}:// needs the {extra!r} extra: "
                              f"pip install 'latentwire[{extra}]' ({exc})") from exc
        raise ConfigError(f"{scheme}:// transport {target} cannot be imported: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise ConfigError(f"{scheme}:// is registered to {target}, which is not a "
                          "latentwire.transports.Transport subclass")
    return cls
