"""A stalled consumer holds its producers back; hub memory stays bounded."""

from __future__ import annotations

import asyncio

import numpy as np
import psutil
import pytest

from .conftest import HubEnv

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


async def test_stalled_consumer_holds_producer_back(make_env) -> None:
    env: HubEnv = await make_env(session_max_bytes=8 * MiB, publish_window=16)
    latent = np.random.default_rng(1).random(MiB // 4, dtype=np.float32)  # 1 MiB
    target = 128  # MiB the producer tries to push (the benchmark pushes 1 GiB)
    rss_before = psutil.Process().memory_info().rss
    async with env.connect("producer") as p, env.connect("consumer", receive_window=4) as c:
        sub = await c.subscribe("latents")
        accepted = 0

        async def produce() -> None:
            nonlocal accepted
            for _ in range(target):
                await p.publish("latents", latent=latent, wait=False)
                accepted += 1
            await p.flush()

        producer = asyncio.create_task(produce())
        await asyncio.sleep(1.5)  # the consumer reads nothing meanwhile
        session = env.hub.sessions["consumer"]
        assert not producer.done(), "producer was not held back by a stalled consumer"
        # Held in the hub: the session cap (plus one message), nothing more; the producer
        # can be ahead only by its publish window.
        assert session.held_bytes <= 8 * MiB + MiB + 4096
        assert accepted <= 8 + 16 + 1
        growth = (psutil.Process().memory_info().rss - rss_before) / MiB
        assert growth < 100, f"RSS grew {growth:.0f} MiB while {accepted} MiB were accepted"

        received = 0
        async for msg in sub:  # the consumer wakes up: everything arrives, in order
            assert msg.latent.nbytes == MiB
            received += 1
            if received == target:
                break
        await asyncio.wait_for(producer, 30)
        assert received == target
        async with asyncio.timeout(5):  # the last acks are on their way to the hub
            while session.held_bytes:
                await asyncio.sleep(0.01)


async def test_unconsumed_direct_messages_hold_sender_back(make_env) -> None:
    env: HubEnv = await make_env(session_max_messages=10, publish_window=4)
    async with env.connect("s") as s, env.connect("r", receive_window=2) as r:
        sent = 0

        async def send_many() -> None:
            nonlocal sent
            for i in range(50):
                await s.send("r", str(i), wait=False)
                sent += 1

        task = asyncio.create_task(send_many())
        await asyncio.sleep(0.5)
        assert not task.done() and sent <= 10 + 4 + 1
        texts = [(await r.inbox().receive(timeout=10)).text for _ in range(50)]
        await asyncio.wait_for(task, 10)
        assert texts == [str(i) for i in range(50)]


async def test_publish_window_counts_bytes(make_env) -> None:
    env: HubEnv = await make_env(session_max_bytes=2 * MiB, publish_window=256,
                                 publish_window_bytes=4 * MiB)
    async with env.connect("p") as p, env.connect("c", receive_window=1) as c:
        sub = await c.subscribe("t")
        latent = np.zeros(MiB, np.uint8)
        sent = 0

        async def produce() -> None:
            nonlocal sent
            for _ in range(20):
                await p.publish("t", latent=latent, wait=False)
                sent += 1

        task = asyncio.create_task(produce())
        await asyncio.sleep(0.5)
        # 256 message credits, but only 4 MiB of them may be in flight: 2 MiB sit in the
        # consumer's session, 4 MiB wait unacked, one waits for credit.
        assert not task.done() and sent <= 2 + 4 + 1
        assert p._credits.used_bytes <= 4 * MiB
        for _ in range(20):
            await sub.receive(timeout=10)
        await asyncio.wait_for(task, 10)


async def test_hub_refuses_publishes_beyond_the_window(make_env) -> None:
    from latentwire._proto import bus_pb2 as pb

    from .test_bad_input import RawClient, tensor_envelope

    env: HubEnv = await make_env(session_max_messages=1, publish_window=2)
    async with env.connect("c", receive_window=1) as c, RawClient(env, "greedy") as raw:
        await c.subscribe("t")
        frames = []
        for seq in range(1, 6):  # ignores its window of 2: publishes 5 without waiting
            envelope = tensor_envelope("uint8", [1])
            envelope.id = f"m{seq}"
            frames.append((pb.Frame(publish=pb.Publish(seq=seq, envelope=envelope)), b"x"))
        await raw.conn.send(frames)
        rejected: list[pb.Rejection] = []
        acked: list[int] = []
        async with asyncio.timeout(5):
            while len(rejected) + len(acked) < 2:  # the first fits, the rest stay in the hub
                for frame, _ in await raw.conn.receive():
                    if frame.HasField("publish_ack"):
                        rejected += frame.publish_ack.rejections
                        acked += frame.publish_ack.seqs
        assert [r.seq for r in rejected] == [3, 4, 5] and acked == [1]
        assert "publish window exceeded: 2 publishes" in rejected[0].reason
