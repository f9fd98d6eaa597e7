"""``mqtt://host[:port][/namespace]`` and ``mqtts://``: the bus over any MQTT 5 broker.

There is no latentwire hub on this path: the broker routes, and the transport plays the
hub's half of the frame protocol locally, so `latentwire.Bus` runs unchanged on top
(docs/mqtt.md). One job per module:

* `format`: a latentwire envelope as an MQTT 5 PUBLISH (topic, properties, payload) and
  back; pure functions, no I/O.
* `client`: the MQTT client plumbing, paho-mqtt's external-loop API driven by asyncio
  (connect, publish and its PUBACK, subscribe, manual acks, reading paused under load).
* `connection`: `MqttConnection`, the `Connection` the bus drives; `translate_errors`,
  where MQTT failures become `latentwire.errors`; and `MqttTransport` (URL, options, what
  outlives a connection), which opens the connections.
"""

from .connection import (
    BACKLOG_BYTES,
    BACKLOG_FACTOR,
    BACKLOG_MIN,
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    OWNER_WAIT,
    RC_NO_MATCHING_SUBSCRIBERS,
    RC_SESSION_TAKEN_OVER,
    TAKEOVER_GRACE,
    MqttTransport,
)
from .format import (
    CONTENT_CONTROL,
    CONTENT_TENSOR,
    CONTENT_TEXT,
    DEFAULT_NAMESPACE,
    MQTT_MAX_MESSAGE,
    PROPERTY_PREFIX,
    TopicMap,
    decode_message,
    encode_message,
)

__all__ = [
    "BACKLOG_BYTES",
    "BACKLOG_FACTOR",
    "BACKLOG_MIN",
    "CONTENT_CONTROL",
    "CONTENT_TENSOR",
    "CONTENT_TEXT",
    "DEFAULT_NAMESPACE",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "MQTT_MAX_MESSAGE",
    "OWNER_WAIT",
    "PROPERTY_PREFIX",
    "RC_NO_MATCHING_SUBSCRIBERS",
    "RC_SESSION_TAKEN_OVER",
    "TAKEOVER_GRACE",
    "MqttTransport",
    "TopicMap",
    "decode_message",
    "encode_message",
]
