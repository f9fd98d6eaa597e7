"""The wire format of ``mqtt://``: a latentwire envelope as an MQTT 5 PUBLISH, and back.

Pure functions and one small class; nothing here does I/O, so any MQTT client (or a test)
can use them. A message is the raw payload (tensor bytes, UTF-8 text, or a control message
as JSON) plus MQTT 5 properties: content type, message expiry, response topic, correlation
data, and the user properties ``lw:msg`` (id, sender, creation time, ttl) and ``lw:tensor``
(dtype, shape, space, family), small JSON objects, next to the application's own headers (a
W3C ``traceparent`` stays ``traceparent``).
"""

from __future__ import annotations

import json
import math
import time
import uuid
import zlib
from typing import Any

from google.protobuf import json_format
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..._proto import bus_pb2 as pb
from ...errors import ConfigError, InvalidMessage

__all__ = [
    "CONTENT_CONTROL",
    "CONTENT_TENSOR",
    "CONTENT_TEXT",
    "DEFAULT_NAMESPACE",
    "MQTT_MAX_MESSAGE",
    "PACKET_SLACK",
    "PROPERTY_PREFIX",
    "TopicMap",
    "decode_message",
    "encode_message",
]

DEFAULT_NAMESPACE = "latentwire"
# Room in a packet for the topic and properties around the payload.
PACKET_SLACK = 64 * 1024
# The largest MQTT packet is 268,435,455 bytes; leave room for the topic and properties.
MQTT_MAX_MESSAGE = 256 * 1024 * 1024 - PACKET_SLACK
# The largest MQTT 5 subscription identifier (a variable byte integer).
MAX_SUBSCRIPTION_ID = 268_435_455
PROPERTY_PREFIX = "lw:"  # user properties that carry envelope fields (reserved)
CONTENT_TEXT = "text/plain; charset=utf-8"
CONTENT_TENSOR = "application/x-latentwire-tensor"
CONTENT_CONTROL = "application/x-latentwire-control+json"


class TopicMap:
    """Where latentwire topics and agent inboxes live in the broker's topic tree."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        if not namespace or any(c in namespace for c in "+#\x00") or namespace.startswith("$"):
            raise ConfigError(f"MQTT namespace must be a plain topic prefix, got {namespace!r}")
        self.namespace = namespace.strip("/")
        self._topics = f"{self.namespace}/topic/"
        self._inboxes = f"{self.namespace}/inbox/"

    def topic(self, name: str) -> str:
        """The MQTT topic (or filter: wildcards map 1:1) of a latentwire topic."""
        return self._topics + name

    def inbox(self, agent: str) -> str:
        """The topic an agent's direct messages, requests and replies go to."""
        return self._inboxes + agent

    def shared(self, group: str, pattern: str) -> str:
        """The MQTT 5 shared subscription of a (valid) group on a latentwire filter."""
        return f"$share/{group}/{self.topic(pattern)}"

    @staticmethod
    def group_identifier(group: str) -> int:
        """The subscription identifier of a group's shared subscriptions: a digest of its
        name, so the same on every connection and process that resumes the broker's session."""
        return zlib.crc32(group.encode()) % MAX_SUBSCRIPTION_ID + 1

    def owner(self, agent: str) -> str:
        """The retained topic that names the bus currently holding an agent id."""
        return f"{self.namespace}/owner/{agent}"

    def parse(self, mqtt_topic: str) -> tuple[str, str]:
        """``("topic", name)`` or ``("inbox", agent)``; raises `InvalidMessage` for others."""
        if mqtt_topic.startswith(self._topics):
            return "topic", mqtt_topic[len(self._topics):]
        if mqtt_topic.startswith(self._inboxes):
            return "inbox", mqtt_topic[len(self._inboxes):]
        raise InvalidMessage(f"MQTT topic {mqtt_topic!r} is outside namespace {self.namespace!r}")


def _compact(fields: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))


def encode_message(env: pb.Envelope, payload: Any, sender: str, topics: TopicMap
                   ) -> tuple[str, bytes, Properties]:
    """The MQTT topic, payload and PUBLISH properties of one (checked) message.

    The envelope's fields travel as two small JSON user properties, ``lw:msg`` and (for a
    tensor) ``lw:tensor``, rather than one property each: paho copies the rest of a received
    packet once per property, so fewer properties make large latents cheaper to receive.
    """
    props = Properties(PacketTypes.PUBLISH)
    for key in env.headers:
        if key.startswith(PROPERTY_PREFIX):
            raise InvalidMessage(f"header {key!r}: names starting with {PROPERTY_PREFIX!r} are "
                                 "reserved on mqtt://")
    meta = {"id": env.id, "sender": sender, "created_ns": env.created_at_ns, "ttl_ms": env.ttl_ms}
    if env.recipient:
        mqtt_topic = topics.inbox(env.recipient)
        meta["topic"] = env.topic  # a direct message's own topic, if it has one
    else:
        mqtt_topic = topics.topic(env.topic)
    user = [("lw:msg", _compact(meta))]
    if env.reply_to:
        props.ResponseTopic = topics.inbox(env.reply_to)
    if env.correlation_id:
        props.CorrelationData = env.correlation_id.encode()
    if env.ttl_ms:
        # Whole seconds on MQTT, rounded up; the receiving transport drops by the exact ttl.
        props.MessageExpiryInterval = math.ceil(env.ttl_ms / 1000)
    kind = env.WhichOneof("body")
    if kind == "tensor":
        t = env.tensor
        props.ContentType = CONTENT_TENSOR
        user.append(("lw:tensor", _compact({"dtype": t.dtype, "shape": list(t.shape) or None,
                                            "space": t.space, "family": t.family})))
    elif kind == "control":
        props.ContentType = CONTENT_CONTROL
        payload = json.dumps({"kind": env.control.kind,
                              "args": json_format.MessageToDict(env.control.args)}).encode()
    else:
        props.ContentType = CONTENT_TEXT
    props.UserProperty = user + list(env.headers.items())
    return mqtt_topic, payload if isinstance(payload, (bytes, bytearray)) else bytes(payload), props


def decode_message(mqtt_topic: str, payload: bytes, props: Properties | None, topics: TopicMap
                   ) -> pb.Envelope:
    """The envelope of a received MQTT message (its payload stays the frame payload).

    A message from a plain MQTT client (no ``lw:`` properties) arrives as text. Raises
    `InvalidMessage` for fields that cannot be read.
    """
    kind, name = topics.parse(mqtt_topic)
    user: dict[str, str] = {}
    headers: dict[str, str] = {}
    for key, value in getattr(props, "UserProperty", None) or []:
        (user if key.startswith(PROPERTY_PREFIX) else headers)[key] = value
    try:
        meta = json.loads(user.get("lw:msg") or "{}")
        env = pb.Envelope(
            id=meta.get("id") or f"mqtt-{uuid.uuid4().hex}",
            sender=meta.get("sender", ""),
            headers=headers,
            created_at_ns=int(meta.get("created_ns") or time.time_ns()),
            ttl_ms=int(meta.get("ttl_ms") or 0),
        )
        if kind == "inbox":
            env.recipient = name
            env.topic = meta.get("topic", "")
        else:
            env.topic = name
        response_topic = getattr(props, "ResponseTopic", None)
        if response_topic:
            reply_kind, env.reply_to = topics.parse(response_topic)
            if reply_kind != "inbox":
                raise InvalidMessage(f"response topic {response_topic!r} is not an agent inbox")
        correlation = getattr(props, "CorrelationData", None)
        if correlation:
            env.correlation_id = bytes(correlation).decode()
        content_type = getattr(props, "ContentType", None) or CONTENT_TEXT
        if content_type == CONTENT_TENSOR:
            tensor = json.loads(user.get("lw:tensor") or "{}")
            env.tensor.dtype = tensor.get("dtype", "")
            env.tensor.shape.extend(tensor.get("shape") or [])
            env.tensor.space = tensor.get("space", "")
            env.tensor.family = tensor.get("family", "")
        elif content_type == CONTENT_CONTROL:
            control = json.loads(payload)
            env.control.kind = control["kind"]
            env.control.args.update(control.get("args") or {})
        else:
            env.text = ""
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"unreadable MQTT message on {mqtt_topic!r}: {exc!r}") from exc
    return env
