"""Messages above the server's ``max_payload`` travel as several stream messages ("chunks").

Each chunk is one JetStream message on the message's own subject, so chunks of one message stay
in publish order in the stream. The first carries the message's headers; every chunk carries
``Lw-Chunk: <index>/<count>/<total bytes> <message id>`` and its own ``Nats-Msg-Id``
(``<id>/<index>``), so a resent chunk is dropped by the server. The receiver keeps each chunk
(and its ack subject) until the message is whole; chunks are acknowledged only together, once
the application took the message, so a lost connection or a crash redelivers all of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..._wire import Oversize
from ...errors import InvalidMessage
from .format import HDR_CHUNK, HDR_MSG_ID


def split(headers: dict[str, str], payload: bytes | memoryview, msg_id: str, room: int
          ) -> list[tuple[dict[str, str], bytes | memoryview]]:
    """The NATS messages of one message: itself if ``payload`` fits in ``room`` bytes, else its
    chunks of at most ``room`` bytes each."""
    size = len(payload)
    if size <= room:
        return [(headers, payload)]
    view = memoryview(payload).cast("B")
    count = math.ceil(size / room)
    parts = []
    for i in range(count):
        own = headers if i == 0 else {}
        own = {**own, HDR_CHUNK: f"{i}/{count}/{size} {msg_id}", HDR_MSG_ID: f"{msg_id}/{i}"}
        parts.append((own, view[i * room:(i + 1) * room]))
    return parts


@dataclass(slots=True)
class Arrived:
    """A whole message as it arrived: its first stream sequence, the headers of its first
    (or only) NATS message, its payload (or an `Oversize` marker) and every ack subject."""

    seq: int
    headers: dict[str, str]
    payload: bytes | Oversize
    acks: list[str]
    redelivered: bool = False


@dataclass(slots=True)
class _Partial:
    count: int
    size: int
    keep: bool  # False: above the receive cap, pieces are not kept
    started: float = field(default_factory=time.monotonic)
    pieces: dict[int, bytes] = field(default_factory=dict)
    acks: dict[int, str] = field(default_factory=dict)
    seqs: dict[int, int] = field(default_factory=dict)
    headers: dict[str, str] | None = None
    redelivered: bool = False


class Reassembler:
    """Collects chunks until their message is whole; ``max_payload`` (None: no cap) is the
    receive cap above which a message's bytes are not kept (it arrives as `Oversize`)."""

    def __init__(self, max_payload: int | None = None) -> None:
        self.max_payload = max_payload
        self._partials: dict[str, _Partial] = {}

    @property
    def missing(self) -> int:
        """Chunks still to come for the messages begun so far."""
        return sum(p.count - len(p.acks) for p in self._partials.values())

    def add(self, chunk: str, headers: dict[str, str], data: bytes, seq: int, ack: str,
            redelivered: bool) -> Arrived | None:
        """Take one chunk (its ``Lw-Chunk`` value); return the message once it is whole.

        A chunk that comes again (a redelivery) replaces the earlier copy and its ack subject.
        Raises `InvalidMessage` for an ``Lw-Chunk`` value that cannot be read.
        """
        try:
            position, _, msg_id = chunk.partition(" ")
            index, count, size = (int(x) for x in position.split("/"))
            if not (0 <= index < count and msg_id and size >= 0):
                raise ValueError("index out of range or no message id")
        except ValueError as exc:
            raise InvalidMessage(f"unreadable {HDR_CHUNK} header {chunk!r}: {exc}") from exc
        partial = self._partials.get(msg_id)
        if partial is None or (partial.count, partial.size) != (count, size):
            keep = self.max_payload is None or size <= self.max_payload
            partial = self._partials[msg_id] = _Partial(count, size, keep)
        if partial.keep:
            partial.pieces[index] = data
        partial.acks[index] = ack
        partial.seqs[index] = seq
        partial.redelivered |= redelivered
        if index == 0:
            partial.headers = headers
        if len(partial.acks) < count:
            return None
        del self._partials[msg_id]
        acks = [partial.acks[i] for i in range(count)]
        first = partial.seqs[0]
        if not partial.keep:
            return Arrived(first, partial.headers or {}, Oversize(size, self.max_payload or 0), acks,
                           partial.redelivered)
        payload = b"".join(partial.pieces[i] for i in range(count))
        if len(payload) != size:
            raise InvalidMessage(f"chunks of message {msg_id!r} add up to {len(payload)} bytes, "
                                 f"not the {size} announced")
        return Arrived(first, partial.headers or {}, payload, acks, partial.redelivered)

    def expire(self, older_than: float) -> list[tuple[str, list[str]]]:
        """Forget messages begun more than ``older_than`` s ago and still not whole (their
        sender died mid-message and never resent it); returns (message id, ack subjects)."""
        now = time.monotonic()
        stale = [k for k, p in self._partials.items() if now - p.started > older_than]
        return [(k, list(self._partials.pop(k).acks.values())) for k in stale]

    def clear(self) -> None:
        """Forget every partial message (a new connection delivers them all again)."""
        self._partials.clear()
