"""RCL on the bus: the learner turns published trajectories into published playbook versions."""

from __future__ import annotations

import json

import latentwire
from latentwire.agents.rcl.backends import ScriptedBackend
from latentwire.agents.rcl.bus import (
    PLAYBOOK_TOPIC,
    VERSION_HEADER,
    LearnerAgent,
    PlaybookFollower,
    publish_trajectory,
)
from latentwire.agents.rcl.envs import Trajectory
from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig
from latentwire.agents.rcl.playbook import Playbook
from latentwire.agents.rcl.simulated import SimConfig, SimulatedEnvironment


def playbook_message(book: Playbook) -> latentwire.Message:
    return latentwire.Message(topic=PLAYBOOK_TOPIC, text=json.dumps(book.to_dict()))


def test_follower_adopts_only_newer_versions_and_ignores_bad_ones() -> None:
    follower = PlaybookFollower()
    old, new = Playbook(), Playbook()
    new.add("rules", "be brief")
    old.commit()
    new.commit()
    new.commit()
    follower.offer(playbook_message(new))
    follower.offer(playbook_message(old))  # older than what is pending: ignored
    follower.offer(latentwire.Message(topic=PLAYBOOK_TOPIC, text="{not json"))
    assert follower.book.version == 0  # nothing changes until the next task starts
    assert follower.adopt().version == 2 and follower.adopted == [2]
    assert [e.content for e in follower.book.entries.values()] == ["be brief"]


async def test_learner_publishes_a_version_learnt_from_bus_trajectories(caplog) -> None:
    env = SimulatedEnvironment(SimConfig(seed=0))
    reflector = ScriptedBackend([json.dumps({"summary": "s", "credit": {}, "insights": ["use a1 for k00"]})])
    mutator = ScriptedBackend([json.dumps({"operations": [
        {"op": "ADD", "section": "rules", "content": "When you see k00, use a1."}]})])
    opt = Optimizer(env, Models(reflector, reflector, mutator), OptimizerConfig())
    learner = LearnerAgent(opt, batch=2)
    async with latentwire.connect("inproc://", agent="worker") as bus, bus.subscribe(PLAYBOOK_TOPIC) as sub:
        async with latentwire.Runtime("inproc://").add(learner):
            first = await sub.receive(timeout=5)
            assert first.headers[VERSION_HEADER] == "0"
            await bus.publish("rcl/trajectories/worker", "not a trajectory")
            for ok in (False, False):
                await publish_trajectory(bus, Trajectory("t000", "p", "k00=a3", ok, 0.0, "0/1"))
            second = await sub.receive(timeout=5)
    assert second.headers[VERSION_HEADER] == "1"
    book = Playbook.from_dict(json.loads(second.text))
    assert [e.content for e in book.entries.values()] == ["When you see k00, use a1."]
    assert learner.steps == 1 and learner.published == [0, 1]
    assert "dropping a bad trajectory from worker" in caplog.text
    assert "task t000 (run 0): FAIL" in reflector.prompts[0][1][1]["content"]
