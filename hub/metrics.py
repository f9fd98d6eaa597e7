"""Prometheus metrics of a hub, served on ``--metrics-port``.

Counters move on the event loop as messages pass (messages and bytes in and out per topic
label, redeliveries, refusals by code). Levels (sessions, queue depths, credits, journal lag)
are read from the hub at scrape time: the HTTP server runs in its own thread, so the scrape
asks the event loop for a snapshot instead of reading the hub's dicts while the loop changes
them.

Label cardinality is bounded: a topic is labelled with the first of the configured
``--metrics-topic`` patterns it matches; without one, with its first level plus ``/#`` for the
first ``max_topic_labels`` first levels seen, then ``other``. Direct messages are ``direct``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from latentwire._proto import bus_pb2 as pb
from latentwire._topics import topic_matches, validate_filter
from latentwire.errors import ConfigError, InvalidTopic

if TYPE_CHECKING:
    from .core import Hub

log = logging.getLogger("latentwire.hub")

OTHER = "other"
DIRECT = "direct"
SNAPSHOT_TIMEOUT = 2.0  # seconds a scrape waits for the event loop
_LABEL_CACHE = 4096  # topics remembered with their label


@dataclass
class Snapshot:
    """The hub's levels at one moment (taken on the event loop)."""

    sessions_connected: int
    sessions_detached: int
    queued_messages: int
    queued_bytes: int
    inflight: int
    receive_credits: int
    publishes_unacked: int
    publish_bytes_unacked: int
    max_session_messages: int
    subscriptions: int
    stats: dict[str, int]
    journal_pending: int | None
    journal_messages: int | None
    journal_bytes: int | None


def take_snapshot(hub: Hub) -> Snapshot:
    """Read the hub's levels; call on the hub's event loop."""
    sessions = list(hub.sessions.values())
    connected = [s for s in sessions if s.conn is not None]
    journal = hub.journal
    durable = journal.durable  # without a journal (a NullJournal) there are no journal gauges
    return Snapshot(
        sessions_connected=len(connected),
        sessions_detached=len(sessions) - len(connected),
        queued_messages=sum(len(s.queue) for s in sessions),
        queued_bytes=sum(s.held_bytes for s in sessions),
        inflight=sum(len(s.inflight) for s in sessions),
        receive_credits=sum(max(0, s.window - len(s.inflight)) for s in connected),
        publishes_unacked=sum(s.ingress.messages for s in connected if s.ingress is not None),
        publish_bytes_unacked=sum(s.ingress.nbytes for s in connected if s.ingress is not None),
        max_session_messages=max((s.held_messages for s in sessions), default=0),
        subscriptions=sum(len(s.filters) for s in sessions),
        stats=dict(vars(hub.stats)),
        journal_pending=journal.pending if durable else None,
        journal_messages=journal.stats.messages if durable else None,
        journal_bytes=journal.stats.stored_bytes if durable else None,
    )


class _LevelCollector(Collector):
    """Gauges and totals read from a snapshot of the hub when Prometheus scrapes."""

    def __init__(self, metrics: HubMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        snap = self._metrics.snapshot_from_any_thread()
        if snap is None:
            return
        g = GaugeMetricFamily
        sessions = g("latentwire_hub_sessions", "Agent sessions on the hub", labels=["state"])
        sessions.add_metric(["connected"], snap.sessions_connected)
        sessions.add_metric(["detached"], snap.sessions_detached)
        yield sessions
        yield g("latentwire_hub_queued_messages", "Deliveries queued, not yet sent",
                value=snap.queued_messages)
        yield g("latentwire_hub_held_bytes", "Bytes queued plus sent-but-unacked", value=snap.queued_bytes)
        yield g("latentwire_hub_inflight_messages", "Deliveries sent, awaiting the client's ack",
                value=snap.inflight)
        yield g("latentwire_hub_receive_credits", "Deliveries connected clients can still take "
                "(receive window minus unacked)", value=snap.receive_credits)
        yield g("latentwire_hub_publishes_unacked", "Publishes accepted from connected clients, not yet "
                "acked (publish credits in use)", value=snap.publishes_unacked)
        yield g("latentwire_hub_publishes_unacked_bytes", "Payload bytes of those publishes",
                value=snap.publish_bytes_unacked)
        yield g("latentwire_hub_max_session_messages", "Most messages held by one session",
                value=snap.max_session_messages)
        yield g("latentwire_hub_subscriptions", "Topic filters held by all sessions",
                value=snap.subscriptions)
        for name, doc in [("connections", "Connections that completed a hello"),
                          ("expired", "Deliveries dropped because their ttl passed"),
                          ("malformed", "Malformed frames received")]:
            yield CounterMetricFamily(f"latentwire_hub_{name}", doc, value=snap.stats.get(name, 0))
        if snap.journal_pending is not None:
            yield g("latentwire_hub_journal_lag", "Journal operations submitted but not yet committed",
                    value=snap.journal_pending)
        if snap.journal_messages is not None:
            yield g("latentwire_hub_journal_messages", "Messages stored in the journal",
                    value=snap.journal_messages)
        if snap.journal_bytes is not None:
            yield g("latentwire_hub_journal_bytes", "Bytes stored in the journal", value=snap.journal_bytes)


class HubMetrics:
    """A hub's Prometheus metrics in their own registry (several hubs can share a process).

    ``HubMetrics(hub)`` attaches itself (``hub.metrics``, in place of the hub's `NullMetrics`);
    `start` serves ``/metrics``.
    """

    def __init__(self, hub: Hub, *, topic_patterns: Sequence[str] = (), max_topic_labels: int = 64,
                 registry: CollectorRegistry | None = None) -> None:
        self.hub = hub
        try:
            self.patterns = [validate_filter(p) for p in topic_patterns]
        except InvalidTopic as exc:
            raise ConfigError(f"--metrics-topic: {exc}") from None
        self.max_topic_labels = max_topic_labels
        self.registry = registry or CollectorRegistry()
        self._labels: OrderedDict[str, str] = OrderedDict()
        # Counter children per label, looked up once: labels() costs a lock and a dict each call.
        self._in: dict[str, tuple[Any, Any]] = {}
        self._out: dict[str, tuple[Any, Any]] = {}
        self._first_levels: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        # No `_created` series per counter and label: they double what a scrape carries and no
        # dashboard of ours reads them. (prometheus_client's switch is process-wide.)
        disable_created_metrics()
        r = self.registry
        # Names end in their unit (`..._bytes_total`), as Prometheus' naming rules ask.
        self.messages_in = Counter("latentwire_hub_messages_in", "Messages accepted and routed",
                                   ["topic"], registry=r)
        self.bytes_in = Counter("latentwire_hub_messages_in_bytes", "Bytes (header + payload) accepted",
                                ["topic"], registry=r)
        self.messages_out = Counter("latentwire_hub_messages_out", "Deliveries sent to clients",
                                    ["topic"], registry=r)
        self.bytes_out = Counter("latentwire_hub_messages_out_bytes", "Payload bytes of deliveries sent",
                                 ["topic"], registry=r)
        self.redeliveries = Counter("latentwire_hub_redeliveries", "Deliveries sent again after a "
                                    "reconnect or restart", registry=r)
        self.rejections = Counter("latentwire_hub_rejections", "Publishes refused, by error code",
                                  ["code"], registry=r)
        r.register(_LevelCollector(self))
        if registry is None:  # the process's memory, open files and CPU (process_*), once per registry
            ProcessCollector(registry=r)
        hub.metrics = self

    # -- counters (event loop) -----------------------------------------------------------------

    def topic_label(self, env: pb.Envelope) -> str:
        """The bounded label for a message's destination."""
        if env.recipient:
            return DIRECT
        topic = env.topic
        label = self._labels.get(topic)
        if label is None:
            label = next((p for p in self.patterns if topic_matches(p, topic)), None)
            if label is None:
                first = topic.split("/", 1)[0]
                if first in self._first_levels or len(self._first_levels) < self.max_topic_labels:
                    self._first_levels.add(first)
                    label = f"{first}/#"
                else:
                    label = OTHER
            self._labels[topic] = label
            if len(self._labels) > _LABEL_CACHE:
                self._labels.popitem(last=False)
        return label

    def on_publish(self, env: pb.Envelope, size: int) -> None:
        """A message was accepted and routed."""
        label = self.topic_label(env)
        counters = self._in.get(label)
        if counters is None:
            counters = self._in[label] = (self.messages_in.labels(label), self.bytes_in.labels(label))
        counters[0].inc()
        counters[1].inc(size)

    def on_send(self, frames: Iterable[tuple[pb.Frame, Any]]) -> None:
        """Frames are about to go to a client; count the deliveries among them."""
        for frame, payload in frames:
            if frame.WhichOneof("kind") != "deliver":
                continue
            label = self.topic_label(frame.deliver.envelope)
            counters = self._out.get(label)
            if counters is None:
                counters = self._out[label] = (self.messages_out.labels(label), self.bytes_out.labels(label))
            counters[0].inc()
            counters[1].inc(len(payload))
            if frame.deliver.redelivered:
                self.redeliveries.inc()

    def on_reject(self, code: int) -> None:
        """A publish was refused with wire error ``code``."""
        name = pb.ErrorCode.Name(code) if code in pb.ErrorCode.values() else str(code)
        self.rejections.labels(name).inc()

    # -- levels (any thread) ---------------------------------------------------------------------

    def snapshot_from_any_thread(self) -> Snapshot | None:
        """The hub's levels, taken on its event loop; None when the loop is gone or busy too long."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        try:
            if asyncio.get_running_loop() is loop:
                return take_snapshot(self.hub)
        except RuntimeError:
            pass  # not on an event loop: the usual case, the HTTP server's thread

        async def snap() -> Snapshot:
            return take_snapshot(self.hub)

        try:
            return asyncio.run_coroutine_threadsafe(snap(), loop).result(SNAPSHOT_TIMEOUT)
        except Exception as exc:  # a scrape must not fail because the loop is stopping
            log.debug("metrics snapshot failed: %r", exc)
            return None

    # -- HTTP ------------------------------------------------------------------------------------

    async def start(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks a free port); returns the bound port."""
        self._loop = asyncio.get_running_loop()
        try:
            server, _thread = await asyncio.to_thread(start_http_server, port, host, self.registry)
        except OSError as exc:  # e.g. the port is in use
            raise ConfigError(f"--metrics-port {port}: cannot serve metrics on {host}:{port}: "
                              f"{exc.strerror or exc}") from exc
        self._server = server
        bound = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def bind_loop(self) -> None:
        """Take snapshots on the running loop (`start` does this; for scraping without HTTP)."""
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Stop serving ``/metrics``."""
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
