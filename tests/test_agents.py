"""Agents declared with decorators, run together by a Runtime."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import latentwire
from latentwire import Agent, Latent, Runtime, on, on_direct

from .conftest import HubEnv

pytestmark = pytest.mark.timeout(60)


class Camera(Agent):
    """Publishes one latent per frame as soon as the runtime is up."""

    async def on_start(self) -> None:
        for i in range(3):
            await self.bus.publish(f"vision/cam/{i}", latent=Latent(np.full((2, 4), i, np.float32)))


class Observer(Agent):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.seen: list[tuple[str, float]] = []
        self.done = asyncio.Event()

    @on("vision/#")
    async def watch(self, msg: latentwire.Message) -> None:
        reply = await self.bus.request("critic", latent=msg.latent, timeout=5)
        self.seen.append((msg.topic, float(reply.text)))
        if len(self.seen) == 3:
            self.done.set()


class Critic(Agent):
    @on_direct
    async def judge(self, msg: latentwire.Message) -> str:
        if msg.latent is None:
            raise ValueError("send me a latent")
        return str(float(msg.latent.numpy().sum()))


async def test_runtime_runs_agents_that_talk(env: HubEnv) -> None:
    observer = Observer()
    runtime = Runtime(env.url, **env.options).add(Critic(), observer, Camera())
    async with runtime:
        await asyncio.wait_for(observer.done.wait(), 10)
    assert observer.seen == [("vision/cam/0", 0.0), ("vision/cam/1", 8.0), ("vision/cam/2", 16.0)]


async def test_handler_error_becomes_remote_error(env: HubEnv) -> None:
    async with Runtime(env.url, **env.options).add(Critic()):
        async with env.connect("asker") as asker:
            with pytest.raises(latentwire.RemoteError, match="ValueError: send me a latent") as info:
                await asker.request("critic", "no latent", timeout=5)
            assert info.value.agent == "critic" and info.value.error_type == "ValueError"
            ok = await asker.request("critic", latent=np.ones(3, np.float32), timeout=5)
            assert ok.text == "3.0"  # the agent went on after the failure


async def test_agent_declaration_errors() -> None:
    with pytest.raises(TypeError, match="must be an async def"):
        on("x")(lambda self, msg: None)
    with pytest.raises(TypeError, match="at least one topic filter"):
        on()

    class Twice(Agent):
        @on_direct
        async def a(self, msg): ...

        @on_direct
        async def b(self, msg): ...

    with pytest.raises(TypeError, match="2 @on_direct handlers"):
        Twice()._handlers()
    with pytest.raises(ValueError, match="already in this runtime"):
        Runtime().add(Critic(), Critic())
    with pytest.raises(latentwire.LatentwireError, match="not running"):
        Critic().bus


async def test_agent_without_direct_handler_refuses_requests_and_keeps_receiving(env: HubEnv) -> None:
    observer = Observer("watcher")
    async with Runtime(env.url, **env.options, receive_window=2).add(observer):
        async with env.connect("asker") as asker:
            for i in range(5):  # more than its receive window: they must not stall it
                await asker.send("watcher", f"note {i}")
            with pytest.raises(latentwire.RemoteError, match="takes no direct messages"):
                await asker.request("watcher", "are you there?", timeout=5)


async def test_topic_handlers_from_configuration(env: HubEnv) -> None:
    class Configured(Agent):
        def __init__(self, topics: tuple[str, ...]) -> None:
            super().__init__("configured")
            self.topics = topics
            self.got: list[str] = []

        def topic_handlers(self):
            return [(self.topics, self.collect)]

        async def collect(self, msg: latentwire.Message) -> None:
            self.got.append(msg.topic)

    agent = Configured(("cfg/+",))
    async with Runtime(env.url, **env.options).add(agent):
        async with env.connect("p") as p:
            await p.publish("cfg/a", "x")
            await p.publish("other", "y")
            await p.publish("cfg/b", "z")
            async with asyncio.timeout(5):
                while len(agent.got) < 2:
                    await asyncio.sleep(0.01)
    assert agent.got == ["cfg/a", "cfg/b"]
