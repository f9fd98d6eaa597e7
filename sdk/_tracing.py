"""W3C trace context (``traceparent``/``tracestate``) through envelope headers.

With OpenTelemetry installed and a tracer provider set (``pip install 'latentwire[otel]'``),
one trace follows a message: the publisher's ``publish`` span (PRODUCER), the hub's ``route``
span (its child, written back into the headers) and the handler's ``process`` span (CONSUMER,
child of the hub's). Without opentelemetry, or with no provider set, every function here does
nothing and costs one check, so the bus pays nothing for tracing it does not use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # optional dependency
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._message import Message
    from ._proto import bus_pb2 as pb

TRACEPARENT = "traceparent"
_NOOP_PROVIDERS: tuple[type, ...] = (
    (trace.ProxyTracerProvider, trace.NoOpTracerProvider) if trace is not None else ()
)


def _tracer() -> Any:
    """The latentwire tracer, or None when nothing would record spans."""
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, _NOOP_PROVIDERS):
        return None
    return provider.get_tracer("latentwire")


@contextlib.contextmanager
def publish_span(env: pb.Envelope) -> Iterator[None]:
    """Around a publish: a PRODUCER span whose context goes into ``env.headers``."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    name = f"publish {env.topic or env.recipient}"
    with tracer.start_as_current_span(name, kind=trace.SpanKind.PRODUCER, attributes={
        "messaging.system": "latentwire", "messaging.destination.name": env.topic or env.recipient,
        "messaging.message.id": env.id,
    }):
        propagate.inject(env.headers)
        yield


def hub_span(env: pb.Envelope, hub_id: str) -> None:
    """The hub accepted ``env``: record its hop as a child of the sender's span, and pass the
    hop's context on in the headers (only for messages that carry a ``traceparent``)."""
    if TRACEPARENT not in env.headers:
        return
    tracer = _tracer()
    if tracer is None:
        return
    parent = propagate.extract(env.headers)
    with tracer.start_as_current_span(f"route {env.topic or env.recipient}", context=parent,
                                      kind=trace.SpanKind.INTERNAL, attributes={
                                          "messaging.system": "latentwire",
                                          "messaging.destination.name": env.topic or env.recipient,
                                          "messaging.message.id": env.id,
                                          "latentwire.sender": env.sender,
                                          "latentwire.hub_id": hub_id}):
        propagate.inject(env.headers)


@contextlib.contextmanager
def process_span(msg: Message, handler: str) -> Iterator[None]:
    """Around a handler: a CONSUMER span, child of the context in the message's headers."""
    tracer = _tracer()
    if tracer is None or TRACEPARENT not in msg.headers:
        yield
        return
    with tracer.start_as_current_span(f"process {msg.topic or msg.recipient}",
                                      context=propagate.extract(msg.headers),
                                      kind=trace.SpanKind.CONSUMER, attributes={
                                          "messaging.system": "latentwire",
                                          "messaging.destination.name": msg.topic or msg.recipient or "",
                                          "messaging.message.id": msg.id,
                                          "latentwire.sender": msg.sender,
                                          "latentwire.handler": handler}):
        yield
