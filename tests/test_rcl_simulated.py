"""The simulated world's mechanisms: each primitive acts through one that can fail (SIMULATED)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import replace

import pytest

from latentwire.agents.rcl.backends import ScriptedBackend
from latentwire.agents.rcl.envs import Trajectory
from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig, ace_like
from latentwire.agents.rcl.playbook import Playbook
from latentwire.agents.rcl.reflection import Reflection
from latentwire.agents.rcl.simulated import (
    SimConfig,
    SimulatedEnvironment,
    SimulatedModel,
    rule_of,
    rule_text,
)
from latentwire.agents.rcl.state import Ledger

QUIET = SimConfig(seed=5, noise=0.0, p_ignore=0.0, p_malformed=0.0, p_miscite=0.0)


def task_with(env: SimulatedEnvironment, n_items: int):
    return next(t for t in env.train if len(t.meta["items"]) == n_items)


def wrong(env: SimulatedEnvironment, k: str) -> str:
    return next(f"a{j}" for j in range(env.cfg.n_actions) if f"a{j}" != env.rules[k])


def act(model: SimulatedModel, task, book: Playbook, n: int = 300, annotate: bool = False) -> list[str]:
    async def go() -> list[str]:
        return [await model.complete([{"role": "user", "content": ""}], role="actor",
                                     context={"task": task, "book": book, "annotate": annotate,
                                              "key": f"k{i}"}) for i in range(n)]
    return asyncio.run(go())


def reflect(model: SimulatedModel, group: list[Trajectory], book: Playbook, aux: bool, key: str) -> dict:
    text = asyncio.run(model.complete([{"role": "user", "content": ""}], role="reflector",
                                      context={"groups": [group], "book": book, "aux": aux, "key": key}))
    return json.loads(text)


def test_the_actor_weighs_conflicting_entries_by_their_counters() -> None:
    env = SimulatedEnvironment(QUIET)
    task = task_with(env, 1)
    (k,) = task.meta["items"]
    book = Playbook()
    right, bad = book.add("r", rule_text(k, env.rules[k])), book.add("r", rule_text(k, wrong(env, k)))
    for _ in range(3):
        book.credit(bad.id, helpful=True)  # misleading credit
    followed = Counter(a.split("=")[1] for a in act(SimulatedModel(env), task, book))
    assert followed[wrong(env, k)] > 0.7 * 300  # exp(0.5 * 3) : 1
    blind = SimulatedModel(env, replace(QUIET, trust=0.0))
    assert 0.35 * 300 < Counter(a.split("=")[1] for a in act(blind, task, book))[env.rules[k]] < 0.65 * 300
    assert right.id in book.entries


def test_the_actor_distrusts_an_entry_with_a_bad_record() -> None:
    env = SimulatedEnvironment(QUIET)
    task = task_with(env, 1)
    (k,) = task.meta["items"]
    book = Playbook()
    entry = book.add("r", rule_text(k, env.rules[k]))
    assert all(f"[{entry.id}]" in a for a in act(SimulatedModel(env), task, book, 50, annotate=True))
    book.credit(entry.id, helpful=False)
    book.credit(entry.id, helpful=False)
    cited = sum(f"[{entry.id}]" in a for a in act(SimulatedModel(env), task, book, annotate=True))
    assert 0.25 * 300 < cited < 0.5 * 300  # followed with probability exp(-0.5 * 2) = 0.37


def test_an_annotated_run_can_cite_the_wrong_entry() -> None:
    env = SimulatedEnvironment(replace(QUIET, p_miscite=1.0))
    task = task_with(env, 1)
    (k,) = task.meta["items"]
    book = Playbook()
    used = book.add("r", rule_text(k, env.rules[k]))
    other = book.add("r", rule_text("k99", "a0"))
    answers = act(SimulatedModel(env), task, book, 20, annotate=True)
    assert all(f"[{other.id}]" in a and f"={env.rules[k]}" in a for a in answers)
    assert not any(f"[{used.id}]" in a for a in answers)


@pytest.mark.parametrize("p_contrast", [1.0, 0.0])
def test_a_contrastive_group_can_be_misread(p_contrast: float) -> None:
    env = SimulatedEnvironment(replace(QUIET, p_contrast=p_contrast))
    task = task_with(env, 1)
    (k,) = task.meta["items"]
    book = Playbook()
    entry = book.add("r", rule_text(k, env.rules[k]))
    good = Trajectory(task.id, task.prompt, f"{k}={env.rules[k]}", True, 1.0, "1/1")
    bad = Trajectory(task.id, task.prompt, f"{k}={wrong(env, k)}", False, 0.0, "0/1", run=1)
    out = reflect(SimulatedModel(env), [good, bad], book, False, "x")
    if p_contrast == 1.0:
        assert out["credit"] == {entry.id: "helpful"} and out["insights"] == []
    else:  # it took the failing run's action for the right one: the right entry is blamed
        assert out["credit"] == {entry.id: "harmful"}
        assert out["insights"] == [rule_text(k, wrong(env, k))]


def test_auxiliary_losses_find_the_step_that_failed() -> None:
    env = SimulatedEnvironment(replace(QUIET, p_diagnose=1.0))
    task = task_with(env, 2)
    k_ok, k_bad = task.meta["items"]
    book = Playbook()
    ok = book.add("r", rule_text(k_ok, env.rules[k_ok]))
    bad = book.add("r", rule_text(k_bad, wrong(env, k_bad)))
    trace = Trajectory(task.id, task.prompt, f"{k_ok}={env.rules[k_ok]}; {k_bad}={wrong(env, k_bad)}",
                       False, 0.5, "1/2")
    model = SimulatedModel(env)
    with_aux = [reflect(model, [trace], book, True, f"a{i}")["credit"] for i in range(40)]
    assert all(c == {bad.id: "harmful"} for c in with_aux)
    without = Counter(next(iter(reflect(model, [trace], book, False, f"a{i}")["credit"])) for i in range(40))
    assert without[ok.id] > 5 and without[bad.id] > 5  # a random suspect of the failed task


def test_ace_like_keeps_pruning_and_de_dup() -> None:
    cfg = ace_like()
    assert cfg.add_only and cfg.dedup and cfg.prune_threshold == 3


async def test_a_redundant_add_is_merged_by_de_dup() -> None:
    env = SimulatedEnvironment(replace(QUIET, p_redundant=1.0))
    k = env.train[0].meta["items"][0]
    book = Playbook()
    book.add("r", rule_text(k, env.rules[k]))
    model = SimulatedModel(env)
    ctx = {"book": book, "ledger": None, "add_only": True, "max_ops": 3, "key": "m",
           "reflections": [Reflection(insights=[rule_text(k, env.rules[k])])]}
    answer = await model.complete([{"role": "user", "content": ""}], role="mutator", context=ctx)
    (op,) = json.loads(answer)["operations"]
    assert op["op"] == "ADD" and op["content"] != rule_text(k, env.rules[k])
    assert rule_of(op["content"]) == (k, env.rules[k])  # the same rule in other words
    for dedup, kept in [(True, 1), (False, 2)]:
        start = Playbook()
        start.add("r", rule_text(k, env.rules[k]))
        reflector = ScriptedBackend([json.dumps({"summary": "", "credit": {}, "insights": ["x"]})])
        opt = Optimizer(env, Models(model, reflector, ScriptedBackend([json.dumps({"operations": [op]})])),
                        OptimizerConfig(add_only=True, dedup=dedup, batch_size=8, signal_traces=8), start)
        record = await opt.step()
        assert len(opt.book) == kept and record["deduped"] == 2 - kept


def test_momentum_decays_and_sums_votes() -> None:
    ledger = Ledger(beta=0.5)
    ledger.accumulate([("x", 1.0), ("x", 1.0), ("y", -1.0)])
    ledger.accumulate([("y", 1.0)])
    assert ledger.momentum == {"x": 1.0, "y": 0.5}
    for _ in range(5):
        ledger.accumulate([])
    assert ledger.momentum == {}  # faded below 0.05
    assert "signal momentum" in Ledger().render()
    assert Ledger.from_dict({**ledger.to_dict(), "momentum": {"x": 2.0}}).momentum == {"x": 2.0}


@pytest.mark.parametrize("support, expected", [(0.0, "UPDATE"), (1.5, None), (-1.5, "UPDATE")])
async def test_the_mutator_follows_the_momentum(support: float, expected: str | None) -> None:
    env = SimulatedEnvironment(replace(QUIET, state_margin=2.0))
    k = env.train[0].meta["items"][0]
    book = Playbook()
    held = book.add("r", rule_text(k, wrong(env, k)))
    proposal = rule_text(k, env.rules[k])
    ledger = Ledger()
    ledger.momentum = {held.content: support, proposal: 2.5}  # the proposal leads by 2.5 - support
    ctx = {"book": book, "ledger": ledger, "add_only": False, "max_ops": 3, "key": "m",
           "reflections": [Reflection(insights=[proposal])]}
    ops = json.loads(await SimulatedModel(env).complete([{"role": "user", "content": ""}], role="mutator",
                                                        context=ctx))["operations"]
    assert [op["op"] for op in ops] == ([expected] if expected else [])
    no_state = json.loads(await SimulatedModel(env).complete(
        [{"role": "user", "content": ""}], role="mutator", context={**ctx, "ledger": None}))["operations"]
    assert [op["op"] for op in no_state] == ["UPDATE"]


def test_drifting_rules_are_a_function_of_the_iteration() -> None:
    env = SimulatedEnvironment(replace(QUIET, drift=0.3))
    start = dict(env.rules)
    env.advance(5)
    at5 = dict(env.rules)
    assert at5 != start
    assert all(t.answer == {k: at5[k] for k in t.meta["items"]} for t in env.tasks.values())
    env.advance(2)
    env.advance(5)
    assert env.rules == at5
    env.advance(0)
    assert env.rules == start
    still = SimulatedEnvironment(QUIET)
    still.advance(9)
    assert still.rules == start


async def test_the_optimizer_moves_a_drifting_world_and_resumes_in_it() -> None:
    sim = replace(QUIET, drift=0.2, noise=0.05)
    cfg = OptimizerConfig(iterations=6, optimizer_state=True, group_size=2)

    def fresh() -> Optimizer:
        env = SimulatedEnvironment(sim)
        model = SimulatedModel(env)
        return Optimizer(env, Models(model, model, model), cfg)

    straight = fresh()
    await straight.run()
    assert straight.env._at == 5  # advanced at each step
    half = fresh()  # stops after 3 steps; a fresh optimiser in a fresh world resumes from there
    half.cfg = replace(cfg, iterations=3)
    await half.run()
    resumed = fresh()
    resumed.restore(json.loads(json.dumps(half.checkpoint())))
    await resumed.run()
    assert resumed.checkpoint()["book"] == straight.checkpoint()["book"]
    assert [h["val_success"] for h in resumed.history] == [h["val_success"] for h in straight.history]
