"""Observability as an operator meets it: /metrics scraped over HTTP, the gRPC health service
through a drain, a trace that follows a message, and JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import urllib.request

import latentwire
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from latentwire import Agent, Runtime, _tracing, on
from latentwire.hub import Hub
from latentwire.hub.logs import JsonFormatter
from latentwire.hub.metrics import HubMetrics
from prometheus_client.parser import text_string_to_metric_families

from .conftest import HubEnv
from .test_security import grpc_channel

pytestmark = pytest.mark.timeout(60)


def hub_env(env: HubEnv) -> HubEnv:
    if env.broker:
        pytest.skip(f"{env.kind}:// has no latentwire hub to observe (the broker has its own metrics)")
    return env


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample on http://127.0.0.1:port/metrics, by (name, sorted labels)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    text = await asyncio.to_thread(get)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_endpoint_shows_counters_moving(make_env) -> None:
    env = hub_env(await make_env())
    metrics = HubMetrics(env.hub, topic_patterns=["robots/+/camera"])
    port = await metrics.start(0)
    try:
        before = await scrape(port)
        cam = ("topic", "robots/+/camera"),
        assert before.get(("latentwire_hub_messages_in_total", cam), 0) == 0
        async with env.connect("p") as p, env.connect("c", receive_window=2) as c:
            sub = await c.subscribe("robots/#")
            for i in range(5):
                await p.publish(f"robots/arm{i}/camera", latent=np.zeros(16, np.float32), wait=False)
            await p.publish("logs/x", "not a camera")
            with pytest.raises(latentwire.UnknownAgent):  # refused by the hub, counted by code
                await p.send("nobody", "x")
            await p.flush()
            mid = await scrape(port)  # the consumer took nothing yet: 2 in flight, 3 queued
            assert mid[("latentwire_hub_messages_in_total", cam)] == 5
            assert mid[("latentwire_hub_messages_in_bytes_total", cam)] > 5 * 64
            assert mid[("latentwire_hub_messages_in_total", (("topic", "logs/#"),))] == 1
            assert mid[("latentwire_hub_messages_out_total", cam)] == 2
            assert mid[("latentwire_hub_inflight_messages", ())] == 2
            assert mid[("latentwire_hub_queued_messages", ())] == 3
            # c's window of 2 is used up; p (which subscribes to nothing) has its default 256 free
            assert mid[("latentwire_hub_receive_credits", ())] == 256
            assert mid[("latentwire_hub_publishes_unacked", ())] == 0  # p's publishes were all acked
            assert mid[("latentwire_hub_sessions", (("state", "connected"),))] == 2
            assert mid[("latentwire_hub_rejections_total", (("code", "NOT_FOUND"),))] == 1
            for _ in range(5):
                await sub.receive(timeout=5)
            await asyncio.sleep(0.05)  # let the last acks reach the hub
            after = await scrape(port)
            assert after[("latentwire_hub_messages_out_total", cam)] == 5
            assert after[("latentwire_hub_messages_out_bytes_total", cam)] == 5 * 64
            assert after[("latentwire_hub_queued_messages", ())] == 0
            assert after[("latentwire_hub_inflight_messages", ())] == 0
    finally:
        await metrics.stop()


async def test_redeliveries_are_counted(make_env) -> None:
    env = hub_env(await make_env())
    metrics = HubMetrics(env.hub)
    metrics.bind_loop()
    async with env.connect("p") as p, env.connect("c", receive_window=4) as c:
        sub = await c.subscribe("t")
        await p.publish("t", "once")
        await asyncio.sleep(0.1)  # delivered, not consumed, so not acked
        assert env.hub.disconnect("c")
        assert (await sub.receive(timeout=10)).text == "once"
        async with asyncio.timeout(10):  # the bus resumes; the hub sends it again (deduplicated)
            while metrics.redeliveries._value.get() < 1:
                await asyncio.sleep(0.02)
        await p.publish("t", "next")
        assert (await sub.receive(timeout=10)).text == "next"  # the copy was dropped by id


async def test_topic_labels_are_bounded(make_env) -> None:
    env = hub_env(await make_env())
    metrics = HubMetrics(env.hub, max_topic_labels=2)
    async with env.connect("p") as p:
        for i in range(6):
            await p.publish(f"tenant{i}/data", "x")
        await p.send("p", "to myself")
    labels = {s.labels["topic"] for f in metrics.registry.collect() if f.name == "latentwire_hub_messages_in"
              for s in f.samples if s.name.endswith("_total")}
    assert labels == {"tenant0/#", "tenant1/#", "other", "direct"}


async def test_health_serving_then_not_serving_during_drain(make_env) -> None:
    env = hub_env(await make_env())
    if env.server is None:
        pytest.skip("the health service is a gRPC service")
    async with grpc_channel(env) as ch:
        stub = health_pb2_grpc.HealthStub(ch)

        async def status(service: str) -> int:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return reply.status

        serving = health_pb2.HealthCheckResponse.SERVING
        assert await status("") == serving and await status("latentwire.v1.Bus") == serving
        async with env.connect("p") as p, env.connect("c", receive_window=1, reconnect_timeout=1) as c:
            sub = await c.subscribe("t")
            for i in range(3):
                await p.publish("t", str(i))
            stopping = asyncio.create_task(env.server.stop(grace=10))
            await asyncio.sleep(0.1)  # the drain waits for c, which has read nothing yet
            assert not stopping.done()
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert await status("") == not_serving and await status("latentwire.v1.Bus") == not_serving
            assert [(await sub.receive(timeout=5)).text for _ in range(3)] == ["0", "1", "2"]
            assert await asyncio.wait_for(stopping, 10)  # drained: everything was delivered


class Handler(Agent):
    """Records the trace context it sees while handling."""

    def __init__(self) -> None:
        super().__init__("handler")
        self.seen = asyncio.Event()
        self.context = None

    @on("jobs/#")
    async def handle(self, msg: latentwire.Message) -> None:
        from opentelemetry import trace

        self.context = trace.get_current_span().get_span_context()
        self.seen.set()


async def test_a_trace_follows_a_message_from_publisher_through_hub_to_handler(make_env, monkeypatch) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    env = hub_env(await make_env())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # This test's provider, not a process-wide one (the global can be set only once).
    monkeypatch.setattr(_tracing, "_tracer", lambda: provider.get_tracer("latentwire"))
    handler = Handler()
    async with Runtime(env.url, **env.options).add(handler):
        async with env.connect("producer") as producer:
            with provider.get_tracer("app").start_as_current_span("user request") as root:
                await producer.publish("jobs/resize", "go")
            await asyncio.wait_for(handler.seen.wait(), 10)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) >= {"user request", "publish jobs/resize", "route jobs/resize", "process jobs/resize"}
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values()} == {trace_id}  # one trace
    publish, route, process = (spans[f"{kind} jobs/resize"] for kind in ("publish", "route", "process"))
    assert publish.parent.span_id == root.get_span_context().span_id
    assert route.parent.span_id == publish.context.span_id  # the hub's hop is the publisher's child
    assert process.parent.span_id == route.context.span_id  # the handler's is the hub's child
    assert publish.kind == trace.SpanKind.PRODUCER and process.kind == trace.SpanKind.CONSUMER
    assert route.attributes["latentwire.sender"] == "producer"
    assert handler.context.span_id == process.context.span_id  # the handler runs inside its span


async def test_no_trace_headers_without_a_tracer(env: HubEnv) -> None:
    hub_env(env)
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("t")
        await p.publish("t", "plain")
        assert "traceparent" not in (await sub.receive(timeout=5)).headers


def test_json_log_lines_carry_fields_and_trace_ids() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    record = logging.LogRecord("latentwire.hub", logging.WARNING, __file__, 1, "refused agent %r", ("bob",),
                               None)
    record.agent = "bob"
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "latentwire.hub"
    assert line["message"] == "refused agent 'bob'" and line["agent"] == "bob"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["ts"].endswith("+00:00")


async def test_daemon_serves_metrics_and_json_logs() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", "--metrics-port", "0",
         "--log-format", "json", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        metrics_url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        port = int(metrics_url.rsplit(":", 1)[1].split("/")[0])
        async with latentwire.connect(url, agent="p") as p:
            await p.publish("work/a", "x")
        samples = await scrape(port)
        assert samples[("latentwire_hub_messages_in_total", (("topic", "work/#"),))] == 1
    finally:
        proc.terminate()
        proc.wait(10)
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
    assert any("no --auth-file" in line["message"] and line["level"] == "warning" for line in lines)
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)


async def test_journal_levels_are_exported(tmp_path) -> None:
    from latentwire.hub.journal import Journal
    from latentwire.hub.inproc import InprocTransport

    journal = await Journal.open(tmp_path / "hub.db")
    hub = Hub(journal=journal)
    metrics = HubMetrics(hub)
    metrics.bind_loop()
    try:
        def connect(name: str) -> latentwire.Bus:
            return latentwire.connect("inproc://journaled", agent=name, transport=InprocTransport(hub=hub))

        async with connect("c") as c, connect("p") as p:
            await c.subscribe("t")
            for i in range(3):
                await p.publish("t", str(i))  # acked once committed: the lag is back to 0
            samples = {s.name: s.value for f in metrics.registry.collect() for s in f.samples}
            assert samples["latentwire_hub_journal_lag"] == 0
            assert samples["latentwire_hub_journal_messages"] == 3
            assert samples["latentwire_hub_journal_bytes"] > 0
    finally:
        await hub.aclose()
        await journal.aclose()
