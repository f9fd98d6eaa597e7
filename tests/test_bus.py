"""The shared transport suite: what a bus user sees, on inproc://, grpc:// and grpcs://."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

import latentwire
from latentwire import DTYPES, Control, Latent

from .conftest import HubEnv

pytestmark = pytest.mark.timeout(60)


async def drain_n(sub: latentwire.Subscription, n: int, timeout: float = 10) -> list[latentwire.Message]:
    return [await sub.receive(timeout=timeout) for _ in range(n)]


async def assert_quiet(sub: latentwire.Subscription, wait: float = 0.1) -> None:
    with pytest.raises(TimeoutError):
        await sub.receive(timeout=wait)


async def test_wildcard_routing(env: HubEnv) -> None:
    filters = {"plus": "a/+/c", "hash": "a/#", "exact": "a/b/c", "other": "x/+", "all": "#"}
    published = ["a/b/c", "a/z/c", "a", "a/b/c/d", "x/y", "x/y/z"]
    expected = {
        "plus": ["a/b/c", "a/z/c"],
        "hash": ["a/b/c", "a/z/c", "a", "a/b/c/d"],
        "exact": ["a/b/c"],
        "other": ["x/y"],
        "all": published,
    }
    async with env.connect("producer") as producer:
        buses = {name: env.connect(name) for name in filters}
        for bus in buses.values():
            await bus.open()
        try:
            subs = {name: await buses[name].subscribe(f) for name, f in filters.items()}
            for topic in published:
                await producer.publish(topic, topic)
            for name, want in expected.items():
                msgs = await drain_n(subs[name], len(want))
                assert [m.topic for m in msgs] == want, name
                assert {m.sender for m in msgs} == {"producer"}
                await assert_quiet(subs[name])
        finally:
            for bus in buses.values():
                await bus.aclose()


async def test_one_delivery_per_message_across_overlapping_filters(env: HubEnv) -> None:
    async with env.connect("p") as p, env.connect("c") as c:
        s1, s2 = await c.subscribe("t/#"), await c.subscribe("t/+")
        await p.publish("t/x", "once")
        assert (await s1.receive(timeout=5)).text == "once"
        assert (await s2.receive(timeout=5)).text == "once"
        await s2.aclose()
        await p.publish("t/y", "again")
        assert (await s1.receive(timeout=5)).text == "again"
        await assert_quiet(s1)


async def test_direct_message_and_sender_set_by_hub(env: HubEnv) -> None:
    async with env.connect("alice") as alice, env.connect("bob") as bob:
        await alice.send("bob", "hi bob", topic="chat/dm", headers={"k": "v"})
        msg = await bob.inbox().receive(timeout=5)
        assert (msg.text, msg.sender, msg.recipient, msg.topic, msg.headers) == (
            "hi bob", "alice", "bob", "chat/dm", {"k": "v"})


async def test_request_reply_with_latent(env: HubEnv) -> None:
    async with env.connect("asker") as asker, env.connect("doubler") as doubler:
        async def serve() -> None:
            async for msg in doubler.inbox():
                await doubler.reply(msg, latent=Latent(msg.latent.numpy() * 2, space="hub"))

        task = asyncio.create_task(serve())
        try:
            x = np.arange(16, dtype=np.float32).reshape(2, 8)
            reply = await asker.request("doubler", latent=x, timeout=5)
            np.testing.assert_array_equal(reply.latent.numpy(), x * 2)
            assert reply.latent.space == "hub" and reply.sender == "doubler"
        finally:
            task.cancel()


async def test_request_timeout(env: HubEnv) -> None:
    async with env.connect("asker") as asker, env.connect("silent"):
        with pytest.raises(latentwire.RequestTimeout) as info:
            await asker.request("silent", "anyone?", timeout=0.3)
        assert info.value.recipient == "silent" and isinstance(info.value, TimeoutError)


async def test_request_to_unknown_agent(env: HubEnv) -> None:
    async with env.connect("asker") as asker:
        with pytest.raises(latentwire.UnknownAgent, match="nobody"):
            await asker.request("nobody", "hello?", timeout=30)
        with pytest.raises(latentwire.UnknownAgent):
            await asker.send("nobody", "hello?")
        await asker.publish("still/fine", "ok")  # the bus goes on


async def test_per_sender_order(env: HubEnv) -> None:
    n = 300
    async with env.connect("c") as c, env.connect("p1") as p1, env.connect("p2") as p2:
        sub = await c.subscribe("seq/#")

        async def produce(bus: latentwire.Bus) -> None:
            for i in range(n):
                await bus.publish(f"seq/{bus.agent}", str(i), wait=False)
            await bus.flush()

        await asyncio.gather(produce(p1), produce(p2))
        got: dict[str, list[int]] = {"p1": [], "p2": []}
        for msg in await drain_n(sub, 2 * n):
            got[msg.sender].append(int(msg.text))
        assert got == {"p1": list(range(n)), "p2": list(range(n))}


async def test_64mib_tensor_bit_exact(env: HubEnv) -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 2**31, size=(4096, 4096), dtype=np.int32)  # 64 MiB
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("big")
        await p.publish("big", latent=Latent(big, space="hub", family="test"))
        msg = await sub.receive(timeout=60)
        got = msg.latent.numpy()
        assert got.shape == big.shape and got.dtype == big.dtype
        assert hashlib.sha256(got.tobytes()).digest() == hashlib.sha256(big.tobytes()).digest()
        assert (msg.latent.space, msg.latent.family) == ("hub", "test")


def _special_values(name: str) -> np.ndarray:
    dtype = DTYPES[name]
    if name == "bool":
        return np.array([[True, False, True]], dtype=dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, -1 if info.min else 0, 0, 1, info.max]], dtype=dtype)
    values = [0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, np.nan, 1e-3]
    return np.array([values, values[::-1]], dtype=np.float32).astype(dtype)


async def test_every_dtype_round_trips_exactly(env: HubEnv) -> None:
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("dtype/+")
        for name in DTYPES:
            await p.publish(f"dtype/{name}", latent=_special_values(name))
        for name in DTYPES:
            msg = await sub.receive(timeout=5)
            sent = _special_values(name)
            assert msg.latent.dtype == name
            assert msg.latent.numpy().dtype == sent.dtype
            assert msg.latent.numpy().tobytes() == sent.tobytes(), name  # bitwise (NaN, -0.0)


async def test_torch_tensors_round_trip(env: HubEnv) -> None:
    torch = pytest.importorskip("torch")
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("torch/+")
        sent = []
        for i, dtype in enumerate(dtypes):
            t = (torch.randn(3, 5) * 50).to(dtype)
            sent.append(t)
            await p.publish(f"torch/{i}", latent=t)
        for t in sent:
            got = (await sub.receive(timeout=5)).latent.torch()
            assert got.dtype == t.dtype and got.shape == t.shape
            assert torch.equal(got, t)


async def test_control_messages(env: HubEnv) -> None:
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("ctl")
        await p.publish("ctl", control=Control(kind="pause", args={"steps": 3, "why": "test"}))
        msg = await sub.receive(timeout=5)
        assert msg.control == Control(kind="pause", args={"steps": 3, "why": "test"})


async def test_duplicates_are_dropped_by_id(env: HubEnv) -> None:
    from latentwire._message import to_envelope

    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("dup")
        for _ in range(3):  # at-least-once means a sender may resend the very same message
            envelope, payload = to_envelope(topic="dup", text="same", message_id="fixed-id")
            await p._send_envelope(envelope, payload, wait=True)
        await p.publish("dup", "different")
        assert [m.text for m in await drain_n(sub, 2)] == ["same", "different"]
        await assert_quiet(sub)


async def test_consumer_resumes_session_after_disconnect(env: HubEnv) -> None:
    n = 50
    async with env.connect("p") as p, env.connect("c", receive_window=8) as c:
        sub = await c.subscribe("resume/#")
        for i in range(n):
            await p.publish("resume/x", str(i), wait=False)
        first = await drain_n(sub, 5)
        assert env.hub.disconnect("c")  # unacked deliveries must come again, then the rest
        rest = await drain_n(sub, n - 5, timeout=15)
        await p.flush()
        assert [int(m.text) for m in first + rest] == list(range(n))
        await assert_quiet(sub, 0.3)  # redelivered copies were dropped as duplicates
        assert c.state is latentwire.BusState.OPEN


async def test_producer_resends_unacked_after_disconnect(env: HubEnv) -> None:
    n = 200
    async with env.connect("p") as p, env.connect("c") as c:
        sub = await c.subscribe("re/#")
        for i in range(n):
            await p.publish("re/x", str(i), wait=False)
            if i == n // 2:
                env.hub.disconnect("p")
        await p.flush(timeout=20)
        got = [int(m.text) for m in await drain_n(sub, n, timeout=15)]
        assert sorted(got) == list(range(n))  # none lost, none twice
        await assert_quiet(sub, 0.3)


async def test_expired_messages_are_not_delivered(env: HubEnv) -> None:
    async with env.connect("p") as p, env.connect("c", receive_window=1) as c:
        sub = await c.subscribe("ttl")
        await p.publish("ttl", "first")
        await p.publish("ttl", "stale", ttl=0.05)  # waits behind "first" (window of one)
        await p.publish("ttl", "fresh")
        await asyncio.sleep(0.2)
        assert [m.text for m in await drain_n(sub, 2)] == ["first", "fresh"]
        assert env.hub.stats.expired == 1


async def test_subscription_ends_when_bus_closes(env: HubEnv) -> None:
    bus = env.connect("c")
    await bus.open()
    sub = await bus.subscribe("x")
    reader = asyncio.create_task(anext(aiter(sub), None))
    await asyncio.sleep(0.05)
    await bus.aclose()
    assert await asyncio.wait_for(reader, 5) is None
    with pytest.raises(latentwire.BusClosed):
        await bus.publish("x", "late")
    with pytest.raises(latentwire.BusClosed, match="not reentrant"):
        await bus.open()


async def test_session_is_forgotten_after_clean_close(env: HubEnv) -> None:
    async with env.connect("p") as p:
        async with env.connect("c"):
            pass
        with pytest.raises(latentwire.UnknownAgent):
            await p.send("c", "gone?")


async def test_agent_id_in_use_is_refused(env: HubEnv) -> None:
    async with env.connect("twin"):
        with pytest.raises(latentwire.AlreadyConnected, match="twin"):
            async with env.connect("twin"):
                pass
