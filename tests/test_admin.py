"""The admin API as an operator meets it: sessions, topics, totals and recent headers of a live
hub, who may ask (only an admin agent's token on an authenticated hub), gRPC reflection, and
the bounds of the counters behind it (`latentwire.hub.stats`)."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import latentwire
import numpy as np
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from latentwire._admin import AdminClient
from latentwire._proto import admin_pb2 as apb
from latentwire._proto import bus_pb2
from latentwire.hub import Hub
from latentwire.hub import stats as stats_module
from latentwire.hub.auth import AuthFile, Policy, hash_token
from latentwire.hub.inproc import embedded_hub
from latentwire.hub.server import serve
from latentwire.hub.stats import Meter, TrafficStats

pytestmark = pytest.mark.timeout(60)

TOKENS = {"ops": "ops-secret", "alice": "alice-secret", "bob": "bob-secret"}
HASHES = {agent: hash_token(token, n=1024) for agent, token in TOKENS.items()}  # cheap scrypt for tests


def auth_policy(admin: str = "ops") -> Policy:
    agents = {name: {"token_hash": HASHES[name], "publish": ["#"], "subscribe": ["#"], "admin": name == admin}
              for name in TOKENS}
    return Policy(AuthFile.model_validate({"agents": agents}))


@pytest.fixture
async def hub_server():
    server = await serve(port=0)
    yield server
    await server.stop(grace=0.5)


async def test_sessions_topics_stats_and_recent_headers_of_a_live_hub(hub_server) -> None:
    url = hub_server.url
    async with latentwire.connect(url, agent="camera") as camera, \
            latentwire.connect(url, agent="viewer", receive_window=2) as viewer:
        sub = await viewer.subscribe("cam/#")
        for i in range(6):
            await camera.publish("cam/front", latent=np.full((8, 64), i, np.float32),
                                 headers={"frame": str(i)}, wait=False)
        await camera.publish("cam/status", "ok", wait=False)
        await camera.flush()
        await asyncio.sleep(0.6)  # a rate needs half a second of history
        async with AdminClient(url) as admin:
            stats, sessions, topics = await admin.stats(), await admin.sessions(), await admin.topics()
            recent = await admin.recent("cam/front", limit=3)
        # The viewer took nothing yet: 2 in flight (its receive window), 5 queued at the hub.
        by_agent = {s.agent: s for s in sessions}
        assert set(by_agent) == {"camera", "viewer"}
        v, c = by_agent["viewer"], by_agent["camera"]
        assert v.connected and list(v.subscriptions) == ["cam/#"] and v.receive_window == 2
        assert (v.unacked_messages, v.queued_messages) == (2, 5)
        assert v.unacked_bytes > 0 and v.queued_bytes > v.unacked_bytes
        assert abs(v.connected_at_ns / 1e9 - time.time()) < 30
        assert c.published == 7 and c.publish_rate > 0 and c.publish_byte_rate > 0
        assert [t.topic for t in topics] == ["cam/front", "cam/status"]
        assert topics[0].messages == 6 and topics[0].bytes > 6 * 8 * 64 * 4 and topics[0].message_rate > 0
        assert stats.published == 7 and stats.sessions_connected == 2 and stats.hub_id == hub_server.hub.id
        assert not stats.authenticates and stats.publish_rate > 0
        # Newest first, headers only: what, who, how big; never the values.
        assert [m.headers["frame"] for m in recent] == ["5", "4", "3"]
        assert all(m.sender == "camera" and m.kind == "tensor" and m.dtype == "float32" and list(m.shape) == [8, 64]
                   for m in recent)
        assert "data" not in apb.MessageHeader.DESCRIPTOR.fields_by_name
        # Deliveries show up in the viewer's delivery rate once it takes them.
        for _ in range(7):
            await sub.receive(timeout=5)
        await asyncio.sleep(0.6)
        async with AdminClient(url) as admin:
            viewer_now = {s.agent: s for s in await admin.sessions()}["viewer"]
        assert viewer_now.queued_messages == 0 and viewer_now.delivery_rate > 0


async def test_a_bad_filter_is_refused_before_anything_is_sent(hub_server) -> None:
    async with AdminClient(hub_server.url) as admin:
        with pytest.raises(latentwire.InvalidTopic, match="'#' must be a whole level"):
            await admin.recent("a/#/b")


async def test_only_an_admin_token_opens_the_admin_api(hub_server) -> None:
    hub_server.hub.policy = auth_policy()
    url = hub_server.url
    async with latentwire.connect(url, agent="alice", token=TOKENS["alice"]) as alice:
        await alice.subscribe("secret/plans")
        await alice.publish("secret/plans", "meet at dawn")
        async with AdminClient(url, token=TOKENS["ops"]) as admin:
            assert "alice" in {s.agent for s in await admin.sessions()}
        target = url.split("://", 1)[1]
        async with grpc.aio.insecure_channel(target) as channel:
            calls = {
                "GetStats": (apb.GetStatsRequest(), apb.HubInfo),
                "ListSessions": (apb.ListSessionsRequest(), apb.ListSessionsResponse),
                "ListTopics": (apb.ListTopicsRequest(), apb.ListTopicsResponse),
                "RecentMessages": (apb.RecentMessagesRequest(filter="#"), apb.RecentMessagesResponse),
            }
            for method, (request, reply) in calls.items():
                call = channel.unary_unary(f"/latentwire.v1.Admin/{method}",
                                           request_serializer=lambda m: m.SerializeToString(),
                                           response_deserializer=reply.FromString)
                for metadata, code in [((), grpc.StatusCode.UNAUTHENTICATED),
                                       ((("authorization", f"Bearer {TOKENS['alice']}"),),
                                        grpc.StatusCode.PERMISSION_DENIED),
                                       ((("authorization", "Bearer guess"),), grpc.StatusCode.PERMISSION_DENIED)]:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call(request, metadata=metadata, timeout=10)
                    assert info.value.code() == code, method
                    details = info.value.details()
                    # The refusal says what is needed and nothing about the hub's agents or topics.
                    assert "admin = true" in details
                    assert not any(word in details for word in ("alice", "ops", "secret", "plans"))
        # The SDK client raises latentwire's errors.
        async with AdminClient(url, token=TOKENS["alice"]) as admin:
            with pytest.raises(latentwire.PermissionDenied, match="admin = true"):
                await admin.sessions()
        async with AdminClient(url) as admin:
            with pytest.raises(latentwire.Unauthenticated, match="needs the token"):
                await admin.stats()


async def test_a_reloaded_auth_file_takes_admin_away_at_once(hub_server) -> None:
    hub_server.hub.policy = auth_policy(admin="ops")
    async with AdminClient(hub_server.url, token=TOKENS["ops"]) as admin:
        await admin.stats()  # checked once, then remembered
        hub_server.hub.policy = auth_policy(admin="bob")  # what a SIGHUP reload does
        with pytest.raises(latentwire.PermissionDenied):
            await admin.stats()
    async with AdminClient(hub_server.url, token=TOKENS["bob"]) as admin:
        assert (await admin.stats()).authenticates


async def test_reflection_lists_the_hub_services(hub_server) -> None:
    def services() -> list[str]:
        with grpc.insecure_channel(hub_server.url.split("://", 1)[1]) as channel:
            return ProtoReflectionDescriptorDatabase(channel).get_services()

    names = await asyncio.to_thread(services)
    assert {"latentwire.v1.Bus", "latentwire.v1.Admin", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(names)


async def test_top_needs_a_hub_url() -> None:
    for url, hint in [("inproc://", "inside one process"), ("mqtt://127.0.0.1:1883", "broker's own tools")]:
        with pytest.raises(latentwire.ConfigError, match=f"grpc:// or grpcs:// URL.*{hint}"):
            AdminClient(url)


# -- the counters (hub/stats.py) ---------------------------------------------------------------


def inproc_hub() -> tuple[str, Hub]:
    """A fresh embedded hub and its URL."""
    name = f"admin-{uuid.uuid4().hex[:8]}"
    return f"inproc://{name}", embedded_hub(name)


def test_meter_rates_follow_the_traffic() -> None:
    m = Meter(now=0.0)
    for _ in range(100):
        m.mark(10)
    assert m.update(1.0).rate == pytest.approx(100)  # the first read: the plain average
    assert m.update(1.2).rate == pytest.approx(100)  # too soon: unchanged
    for t in range(2, 40):
        m.update(float(t))  # nothing more arrives
    assert m.rate < 0.1 and m.byte_rate < 1 and m.count == 100


async def test_counters_are_bounded_and_keep_no_payloads(monkeypatch) -> None:
    monkeypatch.setattr(stats_module, "MAX_TOPICS", 4)
    monkeypatch.setattr(stats_module, "RECENT", 8)
    url, hub = inproc_hub()
    stats = TrafficStats.attach(hub)
    assert TrafficStats.attach(hub) is stats and hub.traffic is stats
    async with latentwire.connect(url, agent="p") as p:
        for i in range(20):
            await p.publish(f"t/{i}", latent=np.ones(256, np.float32), wait=False)
        await p.flush()
    topics = {t.topic: t.messages for t in stats.topics()}
    assert len(topics) == 5 and topics[stats_module.OTHER] == 16  # 4 of their own, the rest shared
    assert len(stats._recent) == 8
    assert all(isinstance(env, bus_pb2.Envelope) for env, _ in stats._recent)  # headers, no payloads
    assert not stats._watches  # nobody watches: no latent is kept
    await hub.aclose()


async def test_a_watched_topic_keeps_small_heatmaps_of_its_latents() -> None:
    url, hub = inproc_hub()
    stats = TrafficStats.attach(hub)
    watch = stats.watch("cam/+")
    async with latentwire.connect(url, agent="p") as p:
        big = np.add.outer(np.sin(np.arange(300) / 7), np.cos(np.arange(500) / 11)).astype(np.float32)
        for i in range(stats_module.LATENTS_PER_WATCH + 4):
            watch.last_capture = -1e9  # let every one through the capture rate limit
            await p.publish("cam/a", latent=big)
            async with asyncio.timeout(10):
                while stats._capturing:  # the heatmap is made in a worker thread
                    await asyncio.sleep(0.01)
        await p.publish("other", latent=big)
        await asyncio.sleep(0.1)
    kept = watch.since(0)
    assert len(kept) == stats_module.LATENTS_PER_WATCH
    last = kept[-1]
    assert (last.rows, last.cols, len(last.cells)) == (64, 64, 64 * 64)
    assert last.shape == [300, 500] and last.dtype == "float32" and last.sender == "p"
    assert last.lo < last.hi and last.norm == pytest.approx(float(np.linalg.norm(big)), rel=1e-5)
    assert len(set(last.cells)) > 200  # a gradient, not a blank
    stats.unwatch(watch)
    assert not stats._watches
    with pytest.raises(latentwire.InvalidTopic):
        stats.watch("a/#/b")
    await hub.aclose()
