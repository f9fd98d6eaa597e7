"""Every primitive of the RCL optimiser: each test fails if its primitive is off or broken."""

from __future__ import annotations

import json
import random

import pytest

from latentwire.agents.rcl.backends import ScriptedBackend
from latentwire.agents.rcl.envs import Trajectory
from latentwire.agents.rcl.errors import RCLConfigError
from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig
from latentwire.agents.rcl.playbook import Playbook
from latentwire.agents.rcl.replay import ReplayBuffer, Sampler
from latentwire.agents.rcl.simulated import SimConfig, SimulatedEnvironment, SimulatedModel, rule_text

ENV = SimulatedEnvironment(SimConfig(seed=3, noise=0.1, p_malformed=0.0))
REFLECTION = json.dumps({"summary": "s", "credit": {}, "insights": ["x"]})


def sim_opt(reflector=None, mutator=None, book=None, **cfg) -> Optimizer:
    model = SimulatedModel(ENV)
    return Optimizer(ENV, Models(model, reflector or model, mutator or model), OptimizerConfig(**cfg), book)


def traj(task: str, ok: bool, run: int = 0) -> Trajectory:
    return Trajectory(task, "p", "r", ok, float(ok), "f", run=run)


# -- failure replay

def test_replay_buffer_graduates_and_evicts() -> None:
    buf = ReplayBuffer(ratio=1.0, graduate_after=2, max_attempts=2)
    buf.record("a", False)
    buf.record("b", False)
    buf.record("c", True)  # a pass never enters
    assert sorted(buf.slots) == ["a", "b"]
    buf.record("a", True)
    buf.record("a", False)  # a failure resets the streak
    buf.record("a", True)
    assert "a" in buf
    buf.record("a", True)
    assert buf.graduated == ["a"] and "a" not in buf
    rng = random.Random(0)
    for _ in range(3):
        buf.draw(4, rng)
    assert buf.evicted == ["b"] and not buf.slots


async def test_replay_revisits_failed_tasks_and_graduates_them() -> None:
    opt = sim_opt(replay_ratio=0.5, batch_size=4, iterations=25)
    await opt.step()
    failed = set(opt.replay.slots)
    assert failed, "the first step should leave failures to replay"
    batch = {t.id for t in opt._batch(random.Random(1))}
    assert len(batch & failed) == 2  # half the batch comes from the buffer
    await opt.run()
    assert opt.replay.graduated, "tasks that learnt to pass must graduate"


# -- grouped rollouts

def test_signal_selection_prefers_contrastive_groups() -> None:
    trajs = [traj("all-fail", False, r) for r in range(3)] + [traj("mixed", r == 0, r) for r in range(3)]
    trajs += [traj("all-pass", True, r) for r in range(3)]
    opt = sim_opt(signal_traces=1)
    for seed in range(20):
        (group,) = opt.select_signal(trajs, random.Random(seed))
        assert group[0].task_id == "mixed"
    blind = sim_opt(signal_traces=1, prefer_contrastive=False)
    picks = {blind.select_signal(trajs, random.Random(s))[0][0].task_id for s in range(20)}
    assert picks == {"all-fail", "mixed"}  # passing groups are never signal


async def test_grouped_rollouts_reach_the_reflector_as_one_merged_group() -> None:
    reflector = ScriptedBackend([REFLECTION])
    opt = sim_opt(reflector=reflector, group_size=4, batch_size=3, iterations=1)
    trajs = await opt.rollouts(opt.book, ENV.train[:3], "0")
    assert len(trajs) == 12 and sorted({t.run for t in trajs}) == [0, 1, 2, 3]
    await opt.step()
    prompt = reflector.prompts[0][1][1]["content"]
    assert "=== group 0 (4 runs of one task)" in prompt


# -- credit assignment (dual trace)

@pytest.mark.parametrize("on", [True, False])
async def test_dual_trace_reaches_the_reflector(on: bool) -> None:
    book = Playbook()
    book.add("rules", rule_text("k00", "a0"))
    reflector = ScriptedBackend([REFLECTION])
    opt = sim_opt(reflector=reflector, mutator=ScriptedBackend(['{"operations": []}']), book=book,
                  credit_assignment=on, batch_size=8, signal_traces=8)
    await opt.step()
    prompt = reflector.prompts[0][1][1]["content"]
    assert ("annotated run:" in prompt) is on
    assert ("MISSING: rule for" in prompt) is on
    actor_prompts = opt.models.actor.usage.calls
    assert actor_prompts == 8 * (2 if on else 1) + len(ENV.val)  # one annotated run per plain run


# -- auxiliary losses

async def test_auxiliary_fields_are_required_when_on() -> None:
    for aux, accepted in [(True, 0), (False, 1)]:
        reflector = ScriptedBackend([REFLECTION])
        mutator = ScriptedBackend(['{"operations": []}'])
        opt = sim_opt(reflector=reflector, mutator=mutator, aux_losses=aux, batch_size=8)
        record = await opt.step()
        assert record["reflections"] == accepted
        assert len(mutator.prompts) == accepted  # a rejected reflection never reaches the mutator
        if aux:
            assert "failure_type" in reflector.prompts[0][1][0]["content"]
            assert any("auxiliary fields missing: failure_type, root_cause, coverage_gaps" in r
                       for r in opt.rejections)


# -- optimiser state (ledger)

@pytest.mark.parametrize("on", [True, False])
async def test_ledger_is_shown_to_the_mutator(on: bool) -> None:
    book = Playbook()
    book.add("rules", "When you see k00, use a9.")
    mutator = ScriptedBackend(['{"operations": [{"op": "UPDATE", "entry_id": "e-0001", '
                               '"content": "When you see k00, use a8."}]}', '{"operations": []}'])
    opt = sim_opt(mutator=mutator, book=book, optimizer_state=on, batch_size=8, signal_traces=4)
    await opt.step()
    await opt.step()
    second = mutator.prompts[1][1][1]["content"]
    assert ("Optimiser ledger" in second) is on
    if on:
        assert "UPDATE e-0001 'When you see k00, use a8.'" in second
        assert "refuted (do not propose again):\n- When you see k00, use a9." in second


# -- batch and mini-batch of signal traces

@pytest.mark.parametrize("batched, calls", [(True, 1), (False, 3)])
async def test_batched_or_per_trace_reflection(batched: bool, calls: int) -> None:
    reflector = ScriptedBackend([REFLECTION])
    opt = sim_opt(reflector=reflector, signal_traces=3, batch_size=8, batched_reflection=batched)
    await opt.step()
    assert len(reflector.prompts) == calls


# -- sampling / curriculum

def test_curriculum_starts_with_easy_tasks() -> None:
    easy = Sampler("curriculum", warmup=10).draw(ENV.train, 5, 0, random.Random(0))
    assert all(t.meta["difficulty"] == 1 for t in easy)
    late = Sampler("curriculum", warmup=10).draw(ENV.train, 30, 20, random.Random(0))
    assert max(t.meta["difficulty"] for t in late) == 3


# -- strong/weak allocation and GEPA-style acceptance

async def test_each_role_uses_its_own_model() -> None:
    actor, strong = SimulatedModel(ENV), SimulatedModel(ENV)
    opt = Optimizer(ENV, Models(actor, strong, strong), OptimizerConfig(batch_size=4))
    await opt.step()
    assert actor.usage.calls == 4 + len(ENV.val)
    assert strong.usage.calls >= 1 and opt.models.usage().calls == actor.usage.calls + strong.usage.calls


async def test_minibatch_acceptance_refuses_a_worse_child() -> None:
    wrong = next(f"a{j}" for j in range(4) if f"a{j}" != ENV.rules["k00"])
    mutator = ScriptedBackend([json.dumps({"operations": [
        {"op": "ADD", "section": "rules", "content": rule_text(t, wrong if t == "k00" else "a9")}
        for t in ("k00",)]})])
    for acceptance, kept in [("minibatch", 0), ("always", 1)]:
        opt = sim_opt(mutator=mutator, acceptance=acceptance, batch_size=16, signal_traces=4)
        record = await opt.step()
        assert record["accepted"] is (kept == 1)
        assert len(opt.book) == kept


# -- checkpoint and resume

async def test_resume_gives_the_same_state() -> None:
    cfg = dict(iterations=6, group_size=2, credit_assignment=True, aux_losses=True, replay_ratio=0.5,
               optimizer_state=True, signal_traces=2)
    straight = sim_opt(**cfg)
    await straight.run()
    first = sim_opt(**cfg)
    first.best_val = sum((await first.validate(first.book)).values()) / len(ENV.val)  # as run() starts
    for _ in range(3):
        await first.step()
    saved = json.loads(json.dumps(first.checkpoint()))
    resumed = sim_opt(**cfg)
    resumed.restore(saved)
    await resumed.run()
    a, b = straight.checkpoint(), resumed.checkpoint()
    assert a["book"] == b["book"] and a["ledger"] == b["ledger"] and a["replay"] == b["replay"]
    assert [h["val_success"] for h in a["history"]] == [h["val_success"] for h in b["history"]]
    with pytest.raises(RCLConfigError, match="fields differ: \\['group_size'\\]"):
        sim_opt(**{**cfg, "group_size": 3}).restore(saved)


async def test_state_model_keeps_the_hypotheses_and_bad_answers_are_skipped() -> None:
    reflection = json.dumps({"summary": "s", "credit": {}, "insights": [], "root_cause": "k00 lacks a rule"})
    for answers, expected in [(['{"hypotheses": ["k00 needs a rule", "k03 is noisy"]}'],
                               ["k00 needs a rule", "k03 is noisy"]),
                              (["no idea"], ["k00 lacks a rule"])]:
        state = ScriptedBackend(answers)
        model = SimulatedModel(ENV)
        opt = Optimizer(ENV, Models(model, ScriptedBackend([reflection]),
                                    ScriptedBackend(['{"operations": []}']),
                                    state), OptimizerConfig(optimizer_state=True, batch_size=8))
        await opt.step()
        assert list(opt.ledger.hypotheses) == expected
        assert "Ledger:\nchanges:" in state.prompts[0][1][1]["content"]
        assert opt.checkpoint()["usage"]["state"]["calls"] == 1
