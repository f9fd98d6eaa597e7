"""``nats://`` and ``tls://``: the bus over NATS JetStream (nats-py), for when one hub is not enough.

``nats://[user:password@|token@]host[:port][,host[:port]...][/namespace]``; ``tls://`` (or
``nats+tls://``) is the same over TLS. A replicated JetStream stream holds the messages and
each agent's durable consumer is its session, so a reconnecting agent resumes where it left off,
on any node of the cluster. The modules: `format` (subjects and headers of a message),
`chunks` (messages above the server's max_payload), `settings` (URLs and options, checked
once), `connection` (the bus's frame protocol played onto JetStream, and the one translation of
NATS errors), `transport` (`NatsTransport`, which opens connections).
See docs/nats.md.
"""

from .format import DEFAULT_NAMESPACE, SubjectMap, decode_message, encode_message
from .settings import NatsSettings
from .transport import NatsTransport

__all__ = ["DEFAULT_NAMESPACE", "NatsSettings", "NatsTransport", "SubjectMap", "decode_message",
           "encode_message"]
