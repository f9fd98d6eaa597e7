"""Traffic counters for operators: rates per topic and per agent, the last message headers, and
recent latents of the topics a dashboard watches (`hub/admin.py` and `hub/dashboard.py` read
them).

The hub core calls `TrafficStats.on_route` once per publish it routes; on that path a message
costs two dict lookups, four integer additions and one ring append of a reference to its
header (payloads are never kept there). Rates are computed only when someone reads them: a
`Meter` keeps running totals, and each read folds the totals since the previous read into an
exponentially weighted moving average over ``TAU`` seconds, whatever the time between reads.
Queue depths are read from the sessions at that moment, and a session's delivery rate comes
from its delivery sequence numbers, so deliveries cost nothing here. Reads answer with the
admin API's own messages (``latentwire.v1.Admin``: `HubInfo`, `SessionInfo`, `TopicInfo`,
`MessageHeader`), so the API and the dashboard share one schema.

Everything is bounded: ``MAX_TOPICS`` topics have their own counters (the rest share
``OTHER``; topics idle for ``TOPIC_IDLE`` s are forgotten), ``RECENT`` headers are kept, and
latent payloads are kept only for watched topics, as at most ``LATENTS_PER_WATCH`` heatmaps of
at most 64 x 64 cells each, captured at most ``CAPTURES_PER_SECOND`` times a second per watch
and one at a time, in a worker thread (a heatmap reads the whole latent). Everything else runs
on the hub's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from latentwire._latent import Latent
from latentwire._peek import heatmap, latent_norm, quantize
from latentwire._proto import admin_pb2 as apb
from latentwire._proto import bus_pb2 as pb
from latentwire._topics import topic_matches, validate_filter
from latentwire._wire import Payload
from latentwire.errors import LimitExceeded

if TYPE_CHECKING:
    from .core import Hub, Session

log = logging.getLogger("latentwire.hub")

TAU = 5.0  # seconds: the time constant of every rate
MIN_INTERVAL = 0.5  # reads closer together than this return the last rate unchanged
MAX_TOPICS = 1024
OTHER = "(other topics)"
TOPIC_IDLE = 300.0  # seconds without traffic before a topic's counters are dropped
MAX_SENDERS = 4096  # per-agent publish counters kept before those of gone agents are pruned
RECENT = 256  # message headers kept (the ring RecentMessages reads)
MAX_WATCHES = 32  # topic filters watched for latents at once
LATENTS_PER_WATCH = 16
CAPTURES_PER_SECOND = 8.0


class Meter:
    """Running totals of messages and bytes, and their rates as an EWMA updated when read."""

    __slots__ = ("count", "nbytes", "rate", "byte_rate", "active_at", "_t", "_count", "_nbytes",
                 "_primed")

    def __init__(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.count = 0
        self.nbytes = 0
        self.rate = 0.0  # per second
        self.byte_rate = 0.0
        self.active_at = now  # when a read last saw the count move
        self._t, self._count, self._nbytes, self._primed = now, 0, 0, False

    def mark(self, nbytes: int) -> None:
        """One message of ``nbytes`` passed (the hot path: two additions)."""
        self.count += 1
        self.nbytes += nbytes

    def update(self, now: float) -> Meter:
        """Fold what passed since the last update into the rates; returns self."""
        dt = now - self._t
        if dt < MIN_INTERVAL:
            return self
        # A total that went down (a session's deliveries went back to its queue) restarts.
        dc, db = max(0, self.count - self._count), max(0, self.nbytes - self._nbytes)
        if dc:
            self.active_at = now
        # The first read takes the plain average, so a new meter does not start near zero.
        keep = math.exp(-dt / TAU) if self._primed else 0.0
        self.rate = keep * self.rate + (1 - keep) * dc / dt
        self.byte_rate = keep * self.byte_rate + (1 - keep) * db / dt
        self._t, self._count, self._nbytes, self._primed = now, self.count, self.nbytes, True
        return self


@dataclass
class LatentView:
    """A captured latent of a watched topic, as a heatmap of quantised cells."""

    seq: int  # increases with every capture; `Watch.since` pages by it
    id: str
    topic: str
    sender: str
    created_at_ns: int
    dtype: str
    shape: list[int]
    space: str
    family: str
    norm: float | None  # None when not finite
    rows: int
    cols: int
    cells: bytes  # rows x cols bytes, 0-255 between lo and hi
    lo: float
    hi: float


class Watch:
    """A topic filter whose latents are kept (shared by every watcher of the same filter)."""

    def __init__(self, flt: str) -> None:
        self.filter = flt
        self.refs = 0
        self.latents: deque[LatentView] = deque(maxlen=LATENTS_PER_WATCH)
        self.last_capture = -math.inf

    def since(self, seq: int) -> list[LatentView]:
        """Captured latents newer than ``seq``, oldest first."""
        return [v for v in self.latents if v.seq > seq]


class TrafficStats:
    """A hub's operator counters; `attach` hooks one to a hub (``hub.traffic``)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.started_at = time.time()
        now = time.monotonic()
        self._all = Meter(now)  # every routed publish
        self._delivered = Meter(now)  # mirrors hub.stats.delivered
        self._topics: dict[str, Meter] = {}
        self._senders: dict[str, Meter] = {}
        self._deliveries: dict[str, tuple[Session, Meter]] = {}
        self._recent: deque[tuple[pb.Envelope, int]] = deque(maxlen=RECENT)
        self._watches: dict[str, Watch] = {}
        self._seq = 0
        self._capturing = False  # a heatmap is being made in a worker thread
        self._pruned_at = now

    @classmethod
    def attach(cls, hub: Hub) -> TrafficStats:
        """The hub's `TrafficStats`, made and attached on first use."""
        stats = hub.traffic
        if not isinstance(stats, TrafficStats):  # the core's NullTraffic
            stats = hub.traffic = cls(hub)
        return stats

    # -- the hot path (hub core) --------------------------------------------------------------

    def on_route(self, env: pb.Envelope, payload: Payload, size: int) -> None:
        """The hub is routing a publish of ``size`` bytes (header + payload)."""
        self._all.mark(size)
        sender = self._senders.get(env.sender)
        if sender is None:
            sender = self._new_sender(env.sender)
        sender.mark(size)
        if env.recipient:
            return  # direct messages count for their sender only
        topic = self._topics.get(env.topic)
        if topic is None:
            topic = self._new_topic(env.topic)
        topic.mark(size)
        self._recent.append((env, size))
        if self._watches and env.WhichOneof("body") == "tensor":
            self._capture(env, payload)

    def _new_sender(self, agent: str) -> Meter:
        if len(self._senders) >= MAX_SENDERS:
            self._senders = {a: m for a, m in self._senders.items() if a in self.hub.sessions}
        meter = self._senders[agent] = Meter()
        return meter

    def _new_topic(self, topic: str) -> Meter:
        now = time.monotonic()
        if len(self._topics) >= MAX_TOPICS and now - self._pruned_at > 10:
            self._prune_topics(now)
        if len(self._topics) >= MAX_TOPICS:
            topic = OTHER
            if OTHER in self._topics:
                return self._topics[OTHER]
        meter = self._topics[topic] = Meter(now)
        return meter

    def _prune_topics(self, now: float) -> None:
        self._pruned_at = now
        for name, meter in list(self._topics.items()):
            if now - meter.update(now).active_at > TOPIC_IDLE:
                del self._topics[name]

    def _capture(self, env: pb.Envelope, payload: Payload) -> None:
        now = time.monotonic()
        if self._capturing:
            return  # one heatmap at a time: a flood of big latents never queues work
        due = [w for w in self._watches.values()
               if now - w.last_capture >= 1 / CAPTURES_PER_SECOND and topic_matches(w.filter, env.topic)]
        if not due:
            return
        for watch in due:
            watch.last_capture = now
        self._capturing = True
        t = env.tensor
        header = (env.id, env.topic, env.sender, env.created_at_ns, t.dtype, list(t.shape), t.space, t.family)
        # The norm and the heatmap read the whole latent (long enough, for a large one, to stall
        # the loop): in a worker thread, on the payload bytes, which nothing changes once received.
        work = asyncio.get_running_loop().run_in_executor(None, _render, t.dtype, header[5], payload)
        work.add_done_callback(lambda done: self._captured(done, header, due))

    def _captured(self, done: asyncio.Future, header: tuple, due: list[Watch]) -> None:
        self._capturing = False
        if done.cancelled() or done.exception() is not None:
            log.debug("latent preview failed: %r", None if done.cancelled() else done.exception())
            return
        cells, data, lo, hi, norm = done.result()
        self._seq += 1
        msg_id, topic, sender, created_at_ns, dtype, shape, space, family = header
        view = LatentView(self._seq, msg_id, topic, sender, created_at_ns, dtype, shape, space, family,
                          norm if math.isfinite(norm) else None, cells.shape[0], cells.shape[1], data, lo, hi)
        for watch in due:
            if self._watches.get(watch.filter) is watch:  # still watched
                watch.latents.append(view)

    # -- watches (dashboard) ---------------------------------------------------------------------

    def watch(self, flt: str) -> Watch:
        """Start keeping latents published on ``flt``; pair with `unwatch`. Raises `InvalidTopic`
        for a bad filter and `LimitExceeded` above ``MAX_WATCHES`` filters."""
        flt = validate_filter(flt)
        watch = self._watches.get(flt)
        if watch is None:
            if len(self._watches) >= MAX_WATCHES:
                raise LimitExceeded(f"{MAX_WATCHES} topic filters are watched already; close a "
                                    "dashboard tab or pick one of those topics")
            watch = self._watches[flt] = Watch(flt)
        watch.refs += 1
        return watch

    def unwatch(self, watch: Watch) -> None:
        """One watcher of ``watch`` is gone; the last one drops its latents."""
        watch.refs -= 1
        if watch.refs <= 0 and self._watches.get(watch.filter) is watch:
            del self._watches[watch.filter]

    # -- reads -----------------------------------------------------------------------------------

    def hub_view(self) -> apb.HubInfo:
        """Totals and rates of the whole hub now."""
        hub, now = self.hub, time.monotonic()
        s = hub.stats
        self._all.update(now)
        self._delivered.count = s.delivered
        self._delivered.update(now)
        connected = sum(1 for x in hub.sessions.values() if x.conn is not None)
        return apb.HubInfo(
            hub_id=hub.id, name=hub.name, started_at_ns=int(self.started_at * 1e9),
            sessions_connected=connected, sessions_detached=len(hub.sessions) - connected,
            connections=s.connections, published=s.published, delivered=s.delivered,
            rejected=s.rejected, expired=s.expired, malformed=s.malformed,
            publish_rate=self._all.rate, publish_byte_rate=self._all.byte_rate,
            delivery_rate=self._delivered.rate, draining=hub.draining,
            authenticates=hub.policy.authenticates, topics_tracked=len(self._topics))

    def sessions(self) -> list[apb.SessionInfo]:
        """Every session, by agent id."""
        now = time.monotonic()
        views = []
        for agent, session in sorted(self.hub.sessions.items()):
            views.append(self._session_view(session, now))
        live = self.hub.sessions
        self._deliveries = {a: v for a, v in self._deliveries.items() if a in live}
        return views

    def _session_view(self, session: Session, now: float) -> apb.SessionInfo:
        kept = self._deliveries.get(session.agent)
        if kept is None or kept[0] is not session:  # a new session numbers from 1 again
            # Counted from the connection's hello, so the first read is that connection's average.
            since = now - max(0.0, time.time() - session.connected_at) if session.connected_at else now
            kept = self._deliveries[session.agent] = (session, Meter(since))
        delivered = kept[1]
        # Sequence numbers handed out, minus those still queued: deliveries sent.
        delivered.count = session.next_seq - 1 - len(session.queue)
        delivered.update(now)
        published = self._senders.get(session.agent)
        if published is not None:
            published.update(now)
        unacked_bytes = sum(d.size for d in session.inflight.values())
        return apb.SessionInfo(
            agent=session.agent, session_id=session.id, connected=session.conn is not None,
            connected_at_ns=int(session.connected_at * 1e9), subscriptions=sorted(session.subscriptions),
            queued_messages=len(session.queue), queued_bytes=max(0, session.held_bytes - unacked_bytes),
            unacked_messages=len(session.inflight), unacked_bytes=unacked_bytes,
            receive_window=session.window,
            published=published.count if published else 0,
            publish_rate=published.rate if published else 0.0,
            publish_byte_rate=published.byte_rate if published else 0.0,
            delivery_rate=delivered.rate)

    def topics(self, limit: int = 0) -> list[apb.TopicInfo]:
        """Tracked topics, busiest first (by rate, then total); ``limit`` 0 returns all."""
        now = time.monotonic()
        self._prune_topics(now)
        views = [apb.TopicInfo(topic=name, messages=m.count, bytes=m.nbytes, message_rate=m.rate,
                               byte_rate=m.byte_rate) for name, m in self._topics.items()]
        views.sort(key=lambda v: (-v.message_rate, -v.messages, v.topic))
        return views[:limit] if limit else views

    def recent(self, flt: str = "#", limit: int = 0) -> list[apb.MessageHeader]:
        """Headers of the last published messages on ``flt``, newest first (raises
        `InvalidTopic` for a bad filter)."""
        flt = validate_filter(flt or "#")
        out = []
        for env, size in reversed(self._recent):
            if limit and len(out) >= limit:
                break
            if topic_matches(flt, env.topic):
                out.append(_header_view(env, size))
        return out


def _header_view(env: pb.Envelope, size: int) -> apb.MessageHeader:
    kind = env.WhichOneof("body") or ""
    view = apb.MessageHeader(id=env.id, topic=env.topic, sender=env.sender, created_at_ns=env.created_at_ns,
                             size=size, kind=kind, headers=env.headers)
    if kind == "tensor":
        t = env.tensor
        view.dtype, view.space, view.family = t.dtype, t.space, t.family
        view.shape.extend(t.shape)
    elif kind == "control":
        view.control_kind = env.control.kind
    return view


def _render(dtype: str, shape: list[int], payload: Payload) -> tuple:
    """Heatmap cells, their bytes and range, and the norm of a latent's payload (any thread)."""
    array = Latent.frombuffer(payload, dtype, shape).numpy()
    cells = heatmap(array)
    data, lo, hi = quantize(cells)
    return cells, data, lo, hi, latent_norm(array)
