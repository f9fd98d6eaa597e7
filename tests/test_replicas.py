"""Replicas sharing a subscription (``group=``), in the shared transport suite: every transport.

A group's messages are split across its live members, each handled by one of them, while
subscribers without a group still get every message; a replica that dies holding unacked
messages gives them to another member, marked redelivered.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import latentwire
from latentwire.errors import ConfigError
from latentwire.hub import Hub
from latentwire.hub.journal import Journal
from latentwire.hub.server import serve

from .conftest import HubEnv

pytestmark = pytest.mark.timeout(90)

N_REPLICAS, N_MESSAGES = 3, 300


def replica_options(env: HubEnv) -> dict[str, Any]:
    """Options that make a dead replica's messages come back within a test's patience."""
    # JetStream hands a dead replica's unacked messages on after the consumer's ack_wait.
    return {"ack_wait": 1.0} if env.kind == "nats" else {}


async def collect(sub: latentwire.Subscription, into: list[latentwire.Message]) -> None:
    async for msg in sub:
        into.append(msg)


async def wait_until(check: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


async def settled(count: Any, quiet: float = 0.5) -> None:
    """Wait until ``count()`` stops changing for ``quiet`` seconds."""
    last = -1
    while count() != last:
        last = count()
        await asyncio.sleep(quiet)


def kill(env: HubEnv, bus: latentwire.Bus) -> None:
    """Drop ``bus``'s connection abruptly, without bye or acks, and never reconnect: a replica
    whose process died."""
    bus._leaving = True  # tests only: the bus must not come back under the same session
    assert env.hub.disconnect(bus.agent)


async def test_a_group_splits_messages_and_plain_subscribers_get_all(env: HubEnv) -> None:
    options = replica_options(env)
    async with (env.connect("producer") as producer, env.connect("watcher") as watcher,
                env.connect("r0", **options) as r0, env.connect("r1", **options) as r1,
                env.connect("r2", **options) as r2):
        got: list[list[latentwire.Message]] = [[] for _ in range(N_REPLICAS)]
        subs = [await bus.subscribe("jobs/#", group="workers") for bus in (r0, r1, r2)]
        seen_by_watcher = await watcher.subscribe("jobs/#")
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(collect(sub, into)) for sub, into in zip(subs, got)]
            for i in range(N_MESSAGES):
                await producer.publish(f"jobs/{i % 7}", str(i), wait=False)
            await producer.flush(timeout=30)
            await wait_until(lambda: sum(map(len, got)) >= N_MESSAGES, 30, "every job handled")
            await asyncio.sleep(0.3)  # a message handled twice would show up now
            for task in tasks:
                task.cancel()
        handled = Counter(m.text for into in got for m in into)
        assert sorted(handled, key=int) == [str(i) for i in range(N_MESSAGES)]
        assert set(handled.values()) == {1}, "a message went to two live replicas"
        assert all(got), f"every live replica takes a share: {[len(g) for g in got]}"
        watched = [(await seen_by_watcher.receive(timeout=10)).text for _ in range(N_MESSAGES)]
        assert sorted(watched, key=int) == [str(i) for i in range(N_MESSAGES)]


async def test_a_dead_replicas_unacked_messages_go_to_another(env: HubEnv) -> None:
    options = replica_options(env)
    producer = env.connect("producer")
    # r2 takes its share and never reads it: its receive window holds the messages unacked.
    replicas = [env.connect(f"r{i}", **options) for i in range(2)]
    stalled = env.connect("r2", receive_window=16, **options)
    async with producer, replicas[0], replicas[1]:
        await stalled.open()
        try:
            got: list[list[latentwire.Message]] = [[], []]
            subs = [await bus.subscribe("jobs/#", group="workers") for bus in replicas]
            held = await stalled.subscribe("jobs/#", group="workers")
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(collect(sub, into)) for sub, into in zip(subs, got)]
                for i in range(N_MESSAGES):
                    await producer.publish("jobs/x", str(i), wait=False)
                await producer.flush(timeout=30)
                await wait_until(lambda: held._queue.qsize() > 0, 30, "the stalled replica holds some")
                await settled(lambda: sum(map(len, got)))
                # What the live replicas did not get, the stalled one holds (in its queue, or
                # beyond its receive window where a broker sends more).
                unacked = {str(i) for i in range(N_MESSAGES)} - {m.text for into in got for m in into}
                assert {held._queue.get_nowait()[0].text for _ in range(held._queue.qsize())} <= unacked
                kill(env, stalled)
                if env.kind != "mqtt":
                    await wait_until(lambda: sum(map(len, got)) >= N_MESSAGES, 30,
                                     "the dead replica's messages handled by the others")
                await asyncio.sleep(0.3)
                for task in tasks:
                    task.cancel()
            if env.kind == "mqtt":
                await mosquitto_keeps_a_dead_members_share(got, unacked)
            handled = Counter(m.text for into in got for m in into)
            assert sorted(handled, key=int) == [str(i) for i in range(N_MESSAGES)]
            assert set(handled.values()) == {1}
            again = {m.text for into in got for m in into if m.text in unacked}
            assert again == unacked
            assert all(m.redelivered for into in got for m in into if m.text in unacked)
        finally:
            await stalled.aclose()


async def test_a_replica_that_reconnects_leaves_its_unread_share_to_the_others(env: HubEnv) -> None:
    options = replica_options(env)
    async with (env.connect("producer") as producer, env.connect("r0", **options) as r0,
                env.connect("r1", receive_window=8, **options) as r1):
        got: list[list[latentwire.Message]] = [[], []]
        live = await r0.subscribe("jobs/#", group="workers")
        blipped = await r1.subscribe("jobs/#", group="workers")
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(collect(live, got[0]))
            for i in range(60):
                await producer.publish("jobs/x", str(i), wait=False)
            await producer.flush(timeout=30)
            await wait_until(lambda: blipped._queue.qsize() > 0, 30, "r1 holds some unread")
            assert env.hub.disconnect("r1")  # a network blip: r1 comes back, same session
            # The bus drops what it had not read when it notices the loss, then resumes.
            await wait_until(lambda: blipped._queue.qsize() == 0, 30, "r1 gave its unread share back")
            await wait_until(lambda: r1.state is latentwire.BusState.OPEN, 30, "r1 is back")
            late = tg.create_task(collect(blipped, got[1]))
            await wait_until(lambda: sum(map(len, got)) >= 60, 30, "every job handled")
            await asyncio.sleep(0.3)
            reader.cancel()
            late.cancel()
        handled = Counter(m.text for into in got for m in into)
        assert sorted(handled, key=int) == [str(i) for i in range(60)]
        assert set(handled.values()) == {1}, "r1 handled messages given to r0 as well"


async def test_with_no_live_member_a_groups_messages_wait_for_one(env: HubEnv) -> None:
    if env.kind == "mqtt":
        pytest.skip("mosquitto gives a dead member's session its turn of new messages and keeps "
                    "them there (docs/mqtt.md); a member joining later gets only its own turns")
    options = replica_options(env)
    async with env.connect("producer") as producer, env.connect("r1", **options) as r1:
        r0 = env.connect("r0", **options)
        await r0.open()
        try:
            await r0.subscribe("jobs/#", group="workers")
            kill(env, r0)  # the group's only member is gone; the group stays
            await asyncio.sleep(0.2)
            for i in range(20):
                await producer.publish("jobs/x", str(i), wait=False)
            await producer.flush(timeout=30)
            late = await r1.subscribe("jobs/#", group="workers")
            got = [(await late.receive(timeout=15)).text for _ in range(20)]
            assert sorted(got, key=int) == [str(i) for i in range(20)]
        finally:
            await r0.aclose()


async def test_leaving_a_group_hands_unread_messages_to_the_others(env: HubEnv) -> None:
    if env.kind == "mqtt":
        pytest.skip("MQTT has no negative ack: a shared subscriber's unacked messages stay with "
                    "its session after it unsubscribes (docs/mqtt.md)")
    options = replica_options(env)
    async with (env.connect("producer") as producer, env.connect("r0", **options) as r0,
                env.connect("r1", receive_window=8, **options) as r1):
        leaving = await r1.subscribe("jobs/#", group="workers")
        got: list[latentwire.Message] = []
        staying = await r0.subscribe("jobs/#", group="workers")
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(collect(staying, got))
            for i in range(40):
                await producer.publish("jobs/x", str(i), wait=False)
            await producer.flush(timeout=30)
            await wait_until(lambda: leaving._queue.qsize() > 0, 30, "r1 holds some unread")
            await leaving.aclose()  # never read: the group gives them to r0
            await wait_until(lambda: len(got) >= 40, 30, "r0 handles everything")
            reader.cancel()
        assert sorted((m.text for m in got), key=int) == [str(i) for i in range(40)]


async def test_a_group_on_a_restarted_hub_gets_what_no_member_acked(tmp_path: Path) -> None:
    """The journal keeps a group's messages under the group, once, whichever member held them."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    server = await serve(Hub(journal=journal), port=0)
    try:
        buses = [latentwire.connect(server.url, agent=f"r{i}", receive_window=4, reconnect_timeout=20)
                 for i in range(2)]
        async with buses[0], buses[1], latentwire.connect(server.url, agent="p") as p:
            subs = [await bus.subscribe("jobs/#", group="workers") for bus in buses]
            for i in range(40):
                await p.publish("jobs/x", str(i), wait=False)
            await p.flush()  # acknowledged: stored once each, under the group
            before = [(await sub.receive(timeout=5)).text for sub in subs for _ in range(3)]
            await asyncio.sleep(0.3)  # their acks reach the journal
            await server.stop(grace=0.1)
            await journal.aclose()

            journal = await Journal.open(path)
            assert journal.stats.restored_deliveries == 40 - len(before)
            server = await serve(Hub(journal=journal), port=server.port)
            got: list[list[latentwire.Message]] = [[], []]
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(collect(sub, into)) for sub, into in zip(subs, got)]
                await wait_until(lambda: sum(map(len, got)) >= 40 - len(before), 30, "the rest handled")
                await asyncio.sleep(0.3)
                for task in tasks:
                    task.cancel()
            after = [m.text for into in got for m in into]
            assert sorted(before + after, key=int) == [str(i) for i in range(40)]  # none twice
            assert all(m.redelivered for into in got for m in into)
    finally:
        await server.stop(grace=0.1)
        await journal.aclose()


async def mosquitto_keeps_a_dead_members_share(got: list[list[latentwire.Message]], unacked: set[str]
                                               ) -> None:
    """What mosquitto (2.0) does with a dead shared subscriber's messages: it keeps them in that
    client's session, for the client id to come back, and never gives them to another member;
    they are lost when the session expires (docs/mqtt.md). Asserted, so a broker that does
    better shows up here; the redelivery half of the test cannot pass on it."""
    await asyncio.sleep(2.0)
    assert not unacked & {m.text for into in got for m in into}
    pytest.xfail("mosquitto does not hand a dead shared subscriber's unacked messages to another "
                 "member (MQTT 5 makes it optional); they wait for that client id's session")


async def test_an_agent_of_a_group_is_a_replica(env: HubEnv) -> None:
    class Worker(latentwire.Agent):
        group = "workers"

        def __init__(self, name: str, handled: list[str]) -> None:
            super().__init__(name)
            self.handled = handled

        @latentwire.on("work/#")
        async def work(self, msg: latentwire.Message) -> None:
            self.handled.append(msg.text)

    handled: list[str] = []
    workers = [Worker(f"w{i}", handled) for i in range(N_REPLICAS)]
    async with latentwire.Runtime(env.url, **env.options).add(*workers), env.connect("producer") as producer:
        for i in range(30):
            await producer.publish("work/item", str(i), wait=False)
        await producer.flush(timeout=30)
        await wait_until(lambda: len(handled) >= 30, 30, "every item handled")
        await asyncio.sleep(0.2)
    assert sorted(handled, key=int) == [str(i) for i in range(30)]
    assert all(w.group == "workers" for w in workers)


@pytest.mark.parametrize("group", ["", "work ers", "a/b", "$share", "-x", "a.b", "x" * 65, "w+", 7])
def test_an_illegal_group_name_is_one_clear_config_error(group: Any) -> None:
    bus = latentwire.connect("inproc://replicas-bad-input")
    with pytest.raises(ConfigError, match=r"A-Z a-z 0-9 _ -") as info:
        bus.subscribe("jobs/#", group=group)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"A-Z a-z 0-9 _ -"):
        latentwire.Agent("w", group=group)
