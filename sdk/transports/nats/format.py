"""How latentwire messages look on NATS JetStream: subjects, stream and consumer names, headers.

With namespace ``NS``:

* a topic ``a/b/c`` is the subject ``NS.topic.a.b.c``: each level is one subject token, escaped
  where NATS would read it otherwise (``.``, ``*``, ``>``, whitespace, ``%`` and anything else
  outside ``A-Z a-z 0-9 - _ ~ : @ = , ; !`` become ``%XX`` per UTF-8 byte);
* filters map their wildcards: ``+`` -> ``*`` and ``#`` -> ``>`` (plus the parent subject, since
  ``a/#`` matches ``a`` and ``a.>`` does not);
* an agent's direct messages, requests and replies go to ``NS.inbox.<agent>``;
* a live bus answers on ``NS.presence.<agent>`` (core NATS, never stored), which is how a second
  bus with the same agent id is refused;
* the stream ``LW_NS`` stores ``NS.topic.>`` and ``NS.inbox.>``; each agent's session is the
  durable consumer named after it; a subscription group shares one per filter (`group_consumer`).

A message is its raw payload (tensor bytes, UTF-8 text, or a control message as JSON) plus NATS
headers: ``Lw-Body`` (``text``, ``tensor`` or ``control``; absent means text, so a plain NATS
publish arrives as text), ``Lw-Msg`` (id, sender, creation time, ttl, and a direct message's
topic, reply_to and correlation id, as a small JSON object), ``Lw-Tensor`` (dtype, shape, space,
family), ``Nats-Msg-Id`` (the message id: JetStream drops a resent copy), and the application's
own headers under their own names (a W3C ``traceparent`` stays ``traceparent``). The names above
(and ``Lw-Chunk``, see `chunks`) and those starting ``Nats-`` are reserved; a header NATS cannot
carry verbatim (a name that is
not an HTTP token, a value with line breaks or outer whitespace) travels inside ``Lw-Msg``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format

from ..._proto import bus_pb2 as pb
from ...errors import ConfigError, InvalidMessage

DEFAULT_NAMESPACE = "latentwire"
NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")
HDR_BODY, HDR_MSG, HDR_TENSOR = "Lw-Body", "Lw-Msg", "Lw-Tensor"
HDR_MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication header
HDR_CHUNK = "Lw-Chunk"  # see chunks.py
# Header names this transport writes (compared without case), and NATS's own prefix.
RESERVED = frozenset(h.lower() for h in (HDR_BODY, HDR_MSG, HDR_TENSOR, HDR_CHUNK))
RESERVED_PREFIX = "nats-"


def reserved(name: str) -> bool:
    """Whether a header name belongs to this transport or to NATS, not to the application."""
    lower = name.lower()
    return lower in RESERVED or lower.startswith(RESERVED_PREFIX)
# What may appear unescaped in a subject token (the rest becomes %XX).
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~:@=,;!")
# A header name NATS carries as is (an HTTP token, as nats-py checks it).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Stream and consumer names are also file names on the server; keep them well inside its limit.
MAX_NAME = 200


def escape_token(text: str) -> str:
    """One subject token for ``text`` (a topic level or an agent id); reversible."""
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def unescape_token(token: str) -> str:
    """The text of a subject token made by `escape_token`."""
    return unquote(token, errors="strict") if "%" in token else token


def _covers(wide: list[str], narrow: list[str]) -> bool:
    """Whether every subject matching ``narrow`` also matches ``wide`` (token lists)."""
    for i, token in enumerate(wide):
        if token == ">":
            return len(narrow) > i
        if i >= len(narrow) or narrow[i] == ">" or (token != "*" and token != narrow[i]):
            return False
    return len(narrow) == len(wide)


def without_overlaps(subjects: list[str]) -> list[str]:
    """``subjects`` without those another one already covers (a JetStream consumer refuses
    filters that overlap this way); order kept, duplicates dropped."""
    split = [s.split(".") for s in dict.fromkeys(subjects)]
    return [".".join(a) for i, a in enumerate(split)
            if not any(j != i and _covers(b, a) for j, b in enumerate(split))]


class SubjectMap:
    """Where latentwire topics, inboxes and sessions live in one NATS namespace."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, stream: str | None = None) -> None:
        if not NAMESPACE.fullmatch(namespace or ""):
            raise ConfigError(f"NATS namespace {namespace!r} is not a plain subject token: use 1-64 of "
                              "A-Z a-z 0-9 _ - (it prefixes every subject and names the stream)")
        self.namespace = namespace
        self.stream = stream or f"LW_{namespace}"
        if not NAMESPACE.fullmatch(self.stream):
            raise ConfigError(f"NATS stream name {self.stream!r}: use 1-64 of A-Z a-z 0-9 _ -")
        self._topics = f"{namespace}.topic."
        self._inboxes = f"{namespace}.inbox."

    @property
    def stream_subjects(self) -> list[str]:
        """The subjects the namespace's stream stores."""
        return [self._topics + ">", self._inboxes + ">"]

    def topic(self, name: str) -> str:
        """The subject of a (valid) latentwire topic."""
        return self._topics + ".".join(escape_token(level) for level in name.split("/"))

    def filter(self, pattern: str) -> list[str]:
        """The subjects of a (valid) latentwire filter: one, or two for ``a/#``."""
        levels = pattern.split("/")
        tokens = ["*" if lv == "+" else ">" if lv == "#" else escape_token(lv) for lv in levels]
        subjects = [self._topics + ".".join(tokens)]
        if len(levels) > 1 and levels[-1] == "#":
            subjects.insert(0, self._topics + ".".join(tokens[:-1]))  # '#' matches its parent too
        return subjects

    def consumer_filters(self, agent: str, patterns: set[str] | list[str]) -> list[str]:
        """The filter subjects of an agent's consumer: its inbox and its topic filters."""
        return without_overlaps([self.inbox(agent)] + [s for p in sorted(patterns) for s in self.filter(p)])

    def inbox(self, agent: str) -> str:
        """The subject an agent's direct messages, requests and replies go to."""
        return self._inboxes + escape_token(agent)

    def presence(self, agent: str) -> str:
        """The core NATS subject a live bus of ``agent`` answers on."""
        return f"{self.namespace}.presence.{escape_token(agent)}"

    def consumer(self, agent: str) -> str:
        """The durable consumer (the session) of ``agent``."""
        name = escape_token(agent)
        if len(name) > MAX_NAME:  # an id of many escaped characters: keep it unique, and short
            name = f"{name[:MAX_NAME - 33]}-{hashlib.sha256(agent.encode()).hexdigest()[:32]}"
        return name

    def group_consumer(self, group: str, pattern: str) -> str:
        """The durable consumer a subscription group shares on one filter (a JetStream queue
        group). Stable, so every member finds it; legal, since a (valid) group name is plain
        token characters and the filter, which is not, enters only as a digest; and apart from
        the agents' consumers, whose names never start with ``_``."""
        return f"_g_{group}_{hashlib.sha256(pattern.encode()).hexdigest()[:16]}"

    def parse(self, subject: str) -> tuple[str, str]:
        """``("topic", name)`` or ``("inbox", agent)``; raises `InvalidMessage` for others."""
        try:
            if subject.startswith(self._topics):
                return "topic", "/".join(unescape_token(t) for t in subject[len(self._topics):].split("."))
            if subject.startswith(self._inboxes):
                return "inbox", unescape_token(subject[len(self._inboxes):])
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"subject {subject!r} has a bad %-escape: {exc}") from exc
        raise InvalidMessage(f"NATS subject {subject!r} is outside namespace {self.namespace!r}")


def _compact(fields: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))


def _verbatim(name: str, value: str) -> bool:
    return (bool(_HEADER_NAME.fullmatch(name)) and value == value.strip()
            and "\r" not in value and "\n" not in value)


def encode_message(env: pb.Envelope, payload: Any, sender: str, subjects: SubjectMap
                   ) -> tuple[str, dict[str, str], bytes | memoryview]:
    """The subject, headers and payload of one (checked) message; raises `InvalidMessage` for a
    reserved header name."""
    headers: dict[str, str] = {}
    odd: dict[str, str] = {}
    for key, value in env.headers.items():
        if reserved(key):
            raise InvalidMessage(f"header {key!r} is reserved on nats:// (Lw-Body, Lw-Msg, Lw-Tensor, "
                                 "Lw-Chunk and names starting with 'Nats-')")
        (headers if _verbatim(key, value) else odd)[key] = value
    meta: dict[str, Any] = {"id": env.id, "sender": sender, "created_ns": env.created_at_ns,
                            "ttl_ms": env.ttl_ms, "reply_to": env.reply_to,
                            "correlation_id": env.correlation_id, "headers": odd}
    if env.recipient:
        subject = subjects.inbox(env.recipient)
        meta["topic"] = env.topic  # a direct message's own topic, if it has one
    else:
        subject = subjects.topic(env.topic)
    headers[HDR_MSG] = _compact(meta)
    headers[HDR_MSG_ID] = env.id
    kind = env.WhichOneof("body")
    headers[HDR_BODY] = kind or "text"
    if kind == "tensor":
        t = env.tensor
        headers[HDR_TENSOR] = _compact({"dtype": t.dtype, "shape": list(t.shape) or None,
                                        "space": t.space, "family": t.family})
    elif kind == "control":
        payload = json.dumps({"kind": env.control.kind,
                              "args": json_format.MessageToDict(env.control.args)}).encode()
    return subject, headers, payload


def decode_message(subject: str, headers: dict[str, str] | None, payload: bytes, subjects: SubjectMap
                   ) -> pb.Envelope:
    """The envelope of a received message (its payload stays the frame payload).

    A message from a plain NATS client (no ``Lw-`` headers) arrives as text. Raises
    `InvalidMessage` for fields that cannot be read.
    """
    kind, name = subjects.parse(subject)
    headers = headers or {}
    try:
        meta = json.loads(headers.get(HDR_MSG) or "{}")
        user = {k: v for k, v in headers.items() if not reserved(k)}
        user.update(meta.get("headers") or {})
        env = pb.Envelope(
            id=meta.get("id") or headers.get(HDR_MSG_ID) or f"nats-{uuid.uuid4().hex}",
            sender=meta.get("sender", ""),
            headers=user,
            created_at_ns=int(meta.get("created_ns") or time.time_ns()),
            ttl_ms=int(meta.get("ttl_ms") or 0),
            reply_to=meta.get("reply_to", ""),
            correlation_id=meta.get("correlation_id", ""),
        )
        if kind == "inbox":
            env.recipient = name
            env.topic = meta.get("topic", "")
        else:
            env.topic = name
        body = headers.get(HDR_BODY, "text")
        if body == "tensor":
            tensor = json.loads(headers.get(HDR_TENSOR) or "{}")
            env.tensor.dtype = tensor.get("dtype", "")
            env.tensor.shape.extend(tensor.get("shape") or [])
            env.tensor.space = tensor.get("space", "")
            env.tensor.family = tensor.get("family", "")
        elif body == "control":
            control = json.loads(payload)
            env.control.kind = control["kind"]
            env.control.args.update(control.get("args") or {})
        elif body == "text":
            env.text = ""
        else:
            raise ValueError(f"unknown {HDR_BODY} {body!r}")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"unreadable NATS message on {subject!r}: {exc!r}") from exc
    return env
