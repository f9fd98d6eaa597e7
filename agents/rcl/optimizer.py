"""The one RCL loop, with every primitive an option of `OptimizerConfig`.

One step: move the environment to this iteration (a drifting world changes here) -> sample a
batch (fresh tasks + failure replay) -> run the actor with the playbook (K rollouts per task; an
annotated credit-assignment run beside each) -> evaluate -> select signal traces (failed groups,
contrastive ones first) -> reflect (batched or per trace; auxiliary fields required if on) ->
update helpful/harmful counters, prune -> add the step's signal to the ledger's momentum ->
mutate (ADD / UPDATE / DELETE, at most ``max_ops``; ADD-only mode) -> apply with validation ->
de-dup (ACE's refine) -> (GEPA-style: accept only if the child beats its parent on the same
mini-batch) -> update the ledger -> validate and keep the best playbook -> commit a version.
`Optimizer.checkpoint` / `Optimizer.restore` hold the whole state; randomness is derived from
``(seed, iteration, task, run)``, so a resumed run is the run that was not interrupted.

ACE-like and GEPA-like baselines are configurations of this code (`ace_like`, `gepa_like`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .backends import LLMBackend, Usage
from .envs import Environment, Task, Trajectory
from .errors import BackendError, RCLConfigError
from .operations import Operation, Rejection, apply_operations, parse_operations
from .playbook import Playbook
from .reflection import (
    Reflection,
    actor_messages,
    mutator_messages,
    parse_hypotheses,
    parse_reflection,
    read_citations,
    reflector_messages,
    state_messages,
)
from .replay import ReplayBuffer, Sampler
from .state import Ledger

log = logging.getLogger("latentwire.rcl.optimizer")


@dataclass(frozen=True)
class OptimizerConfig:
    """Every primitive of the RCL optimiser, each an option (defaults: plain RCL, none on)."""

    iterations: int = 30
    batch_size: int = 8  # tasks per step
    signal_traces: int = 1  # mini-batch: signal groups reflected per step
    batched_reflection: bool = True  # one reflector call for the mini-batch, else one per group
    group_size: int = 1  # grouped rollouts: K runs per task
    prefer_contrastive: bool = True  # signal selection: groups with passes and failures first
    credit_assignment: bool = False  # dual trace: an annotated run cites entries, flags gaps
    aux_losses: bool = False  # reflector must classify failure type, root cause, coverage gaps
    replay_ratio: float = 0.0  # failure replay: share of each batch from the buffer (0 = off)
    replay_graduate_after: int = 2  # consecutive passes that graduate a replayed task
    replay_max_attempts: int = 6  # replays after which a stuck task is evicted
    optimizer_state: bool = False  # ledger of changes/effects/hypotheses/signal momentum shown to the mutator
    ledger_window: int = 20
    momentum: float = 0.8  # the ledger's decay of past signal per step (0: this step's signal only)
    sampling: str = "uniform"  # uniform | curriculum | hard
    curriculum_warmup: int = 10
    max_ops: int = 3  # operations applied per step
    add_only: bool = False  # ACE-style ADD-only deltas
    counters: bool = True  # helpful/harmful counters from reflections and citations
    prune_threshold: int | None = 3  # prune at harmful - helpful >= this (None = never)
    dedup: bool = False  # ACE's refine step: merge entries the environment calls the same guidance
    acceptance: Literal["always", "minibatch"] = "always"  # GEPA: keep a child only if it beats its parent
    selection: Literal["current", "pareto"] = "current"  # GEPA: parent drawn from a Pareto pool
    pool_size: int = 8
    val_every: int = 1
    val_size: int | None = None  # validation tasks used (None = all)
    max_entries: int = 64
    max_chars: int = 8000
    max_entry_chars: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"iterations": self.iterations >= 0, "batch_size": self.batch_size >= 1,
                  "signal_traces": self.signal_traces >= 1, "group_size": self.group_size >= 1,
                  "replay_ratio": 0 <= self.replay_ratio <= 1, "max_ops": self.max_ops >= 0,
                  "val_every": self.val_every >= 1, "momentum": 0 <= self.momentum < 1,
                  "sampling": self.sampling in ("uniform", "curriculum", "hard"),
                  "acceptance": self.acceptance in ("always", "minibatch"),
                  "selection": self.selection in ("current", "pareto")}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"OptimizerConfig: invalid {values}")


def ace_like(**overrides: Any) -> OptimizerConfig:
    """ACE: generator/reflector/curator, ADD-only deltas, helpful/harmful counters, per-trace
    reflection, and the curator's grow-and-refine (pruning by counters, de-dup)."""
    return OptimizerConfig(**{"add_only": True, "batched_reflection": False, "signal_traces": 1,
                              "dedup": True, **overrides})


def gepa_like(**overrides: Any) -> OptimizerConfig:
    """GEPA: whole-prompt edits (more operations a step), mini-batch acceptance, Pareto selection."""
    return OptimizerConfig(**{"acceptance": "minibatch", "selection": "pareto", "max_ops": 6,
                              "counters": False, "prune_threshold": None, **overrides})


ROLES = ("actor", "reflector", "mutator", "state")


@dataclass
class Models:
    """Which backend serves each role (strong/weak allocation); one backend may serve several."""

    actor: LLMBackend
    reflector: LLMBackend
    mutator: LLMBackend
    #: Keeps the ledger's open hypotheses (with optimiser state on); None: the reflections' root
    #: causes are kept as they are, without a model call.
    state: LLMBackend | None = None

    def roles(self) -> dict[str, LLMBackend]:
        """Role -> backend, for the roles that have one."""
        return {r: b for r in ROLES if (b := getattr(self, r)) is not None}

    def usage(self) -> Usage:
        """Calls and tokens summed over the distinct backends."""
        total = Usage()
        for b in {id(b): b for b in self.roles().values()}.values():
            for f in fields(Usage):
                setattr(total, f.name, getattr(total, f.name) + getattr(b.usage, f.name))
        return total


@dataclass
class StepResult:
    """What one learning step did (also the body of a metrics record)."""

    reflections: list[Reflection]
    applied: list[tuple[Operation, str]]
    rejected: list[Rejection]
    pruned: list[str]
    deduped: list[str] = field(default_factory=list)  # entries merged into an equivalent one


async def run_actor(env: Environment, actor: LLMBackend, book: Playbook, task: Task, key: str,
                    run: int = 0, *,
                    annotate: bool = False) -> Trajectory:
    """One actor run of ``task`` with ``book``, verified by ``env`` (plus the annotated
    credit-assignment run if ``annotate``); a backend failure becomes a failed trajectory, never
    an exception."""
    async def ask(annotated: bool) -> str:
        return await actor.complete(actor_messages(env, task, book, annotate=annotated, perturb_seed=key),
                                    role="actor", context={"task": task, "book": book, "annotate": annotated,
                                                           "key": key})
    try:
        response = await ask(False)
    except BackendError as exc:
        return Trajectory(task.id, task.prompt, "", False, 0.0, f"actor failed: {exc}", book.version, run)
    outcome = env.verify(task, response)
    traj = Trajectory(task.id, task.prompt, response, outcome.success, outcome.score, outcome.feedback,
                      book.version, run)
    if annotate:
        try:
            traj.annotated = await ask(True)
            traj.cited, traj.missing = read_citations(traj.annotated)
        except BackendError as exc:
            log.warning("credit-assignment run of %s failed: %s", task.id, exc)
    return traj


class Optimizer:
    """The RCL optimiser over an environment and three role models; see the module docstring."""

    def __init__(self, env: Environment, models: Models, cfg: OptimizerConfig = OptimizerConfig(),
                 book: Playbook | None = None) -> None:
        self.env, self.models, self.cfg = env, models, cfg
        self.book = book or Playbook(max_entries=cfg.max_entries, max_chars=cfg.max_chars,
                                     max_entry_chars=cfg.max_entry_chars)
        self.iteration = 0
        self.best: Playbook = self.book.copy()
        self.best_val: float | None = None
        self.ledger = Ledger(cfg.ledger_window, beta=cfg.momentum) if cfg.optimizer_state else None
        self.replay = (ReplayBuffer(ratio=cfg.replay_ratio, graduate_after=cfg.replay_graduate_after,
                                    max_attempts=cfg.replay_max_attempts) if cfg.replay_ratio > 0 else None)
        self.sampler = Sampler(cfg.sampling, cfg.curriculum_warmup)
        self.pool: list[dict[str, Any]] = []  # Pareto candidates: {"book": dict, "scores": {task: score}}
        self.history: list[dict[str, Any]] = []
        self.rejections: list[str] = []  # reasons, most recent last (bounded)
        self.eval_calls = 0  # actor calls of monitoring validation (not part of the optimiser's cost)

    # -- running the actor

    async def run_task(self, book: Playbook, task: Task, key: str, run: int = 0, *,
                       annotate: bool = False) -> Trajectory:
        """One actor run of ``task`` with this optimiser's environment and actor (`run_actor`)."""
        return await run_actor(self.env, self.models.actor, book, task, key, run, annotate=annotate)

    async def rollouts(self, book: Playbook, tasks: list[Task], key: str) -> list[Trajectory]:
        """``group_size`` runs of each task (annotated when credit assignment is on)."""
        return list(await asyncio.gather(*[
            self.run_task(book, t, f"{key}:{t.id}:{r}", r, annotate=self.cfg.credit_assignment)
            for t in tasks for r in range(self.cfg.group_size)]))

    async def test(self, book: Playbook) -> float:
        """Success of ``book`` on the environment's held-out test tasks (monitoring: not in ``llm_calls``)."""
        if not self.env.test:
            raise ValueError(f"{self.env.label} has no held-out test tasks")
        self.eval_calls += len(self.env.test)
        trajs = await asyncio.gather(*[self.run_task(book, t, f"test:{t.id}") for t in self.env.test])
        return statistics.fmean(t.success for t in trajs)

    async def validate(self, book: Playbook, *, monitoring: bool = True) -> dict[str, float]:
        """Score per validation task (one plain run each, with a fixed key: the same draws every time).

        ``monitoring`` runs only watch the learning curve: their actor calls are counted in
        ``eval_calls`` and left out of the optimiser's ``llm_calls``.
        """
        tasks = self.env.val[:self.cfg.val_size]
        if monitoring:
            self.eval_calls += len(tasks)
        trajs = await asyncio.gather(*[self.run_task(book, t, f"val:{t.id}") for t in tasks])
        return {t.task_id: float(t.success) for t in trajs}

    # -- learning from trajectories

    def select_signal(self, trajs: list[Trajectory], rng: random.Random) -> list[list[Trajectory]]:
        """Failed groups (runs of one task), contrastive ones first if preferred; at most
        ``signal_traces`` of them."""
        groups: dict[str, list[Trajectory]] = {}
        for t in trajs:
            groups.setdefault(t.task_id, []).append(t)
        failed = [g for g in groups.values() if not all(t.success for t in g)]
        rng.shuffle(failed)
        if self.cfg.prefer_contrastive:
            failed.sort(key=lambda g: not any(t.success for t in g))  # stable: contrastive first
        return failed[:self.cfg.signal_traces]

    def _reject(self, where: str, reason: str, *, logged: bool = False) -> Rejection:
        if not logged:
            log.info("%s rejected: %s", where, reason)
        self.rejections = [*self.rejections[-99:], f"{where}: {reason}"]
        return Rejection(where, reason)

    async def learn(self, book: Playbook, trajs: list[Trajectory], key: str, before: float) -> StepResult:
        """Reflect on ``trajs``, update counters, prune and mutate ``book`` in place."""
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:signal:{key}")
        signal = self.select_signal(trajs, rng)
        result = StepResult([], [], [], [])
        votes: list[tuple[str, float]] = []  # this step's signal per content, for the ledger's momentum
        for t in trajs:  # entries cited by passing runs earned their keep
            for i in (t.cited or []) if t.success else []:
                if cfg.counters:
                    book.credit(i, helpful=True)
                if i in book.entries:
                    votes.append((book.entries[i].content, 1.0))
        if not signal or (cfg.max_ops == 0 and not cfg.counters):  # nothing would use a reflection
            if self.ledger is not None:
                self.ledger.accumulate(votes)
            return result
        calls = [signal] if cfg.batched_reflection else [[g] for g in signal]
        for n, groups in enumerate(calls):
            try:
                text = await self.models.reflector.complete(
                    reflector_messages(groups, book, aux=cfg.aux_losses), role="reflector",
                    context={"groups": groups, "book": book, "aux": cfg.aux_losses, "key": f"{key}:{n}"})
            except BackendError as exc:
                result.rejected.append(self._reject("reflector", str(exc)))
                continue
            refl, reason = parse_reflection(text, require_aux=cfg.aux_losses)
            if refl is None:
                result.rejected.append(self._reject("reflection", reason))
                continue
            result.reflections.append(refl)
        for refl in result.reflections:
            votes += [(insight, 1.0) for insight in refl.insights]
            for entry_id, tag in refl.credit.items():
                if cfg.counters:
                    book.credit(entry_id, helpful=tag == "helpful")
                if entry_id in book.entries:
                    votes.append((book.entries[entry_id].content, 1.0 if tag == "helpful" else -1.0))
        if cfg.prune_threshold is not None:
            for e in book.prune(cfg.prune_threshold):
                result.pruned.append(e.id)
                votes.append((e.content, -1.0))
                if self.ledger is not None:
                    self.ledger.refute(e.content)
        if self.ledger is not None:
            self.ledger.accumulate(votes)
            if result.reflections:
                await self._update_hypotheses(result, key)
        if not result.reflections or cfg.max_ops == 0:
            return result
        ledger = self.ledger.render() if self.ledger is not None else None
        try:
            text = await self.models.mutator.complete(
                mutator_messages(book, result.reflections, ledger, add_only=cfg.add_only,
                                 max_ops=cfg.max_ops),
                role="mutator", context={"reflections": result.reflections, "book": book,
                                         "ledger": self.ledger,
                                         "add_only": cfg.add_only, "max_ops": cfg.max_ops, "key": key})
        except BackendError as exc:
            result.rejected.append(self._reject("mutator", str(exc)))
            return result
        ops, bad = parse_operations(text)
        old = {i: e.content for i, e in book.entries.items()}
        applied = apply_operations(book, ops, max_ops=cfg.max_ops, add_only=cfg.add_only)
        result.applied = applied.applied
        result.rejected += [self._reject("operation", r.reason) for r in bad]
        result.rejected += [self._reject("operation", r.reason, logged=True) for r in applied.rejected]
        if cfg.dedup:  # ACE's refine step: the same guidance in other words is kept once
            result.deduped = [e.id for e in book.dedup(self.env.semantic_key)]
        if self.ledger is not None:
            for op, entry_id in applied.applied:
                if op.kind != "ADD":  # what an UPDATE or DELETE replaced was judged wrong
                    self.ledger.refute(old[entry_id])
                self.ledger.record(self.iteration, op.kind, entry_id, op.content or old.get(entry_id, ""),
                                   before)
        return result

    async def _update_hypotheses(self, result: StepResult, key: str) -> None:
        """The state model rewrites the open hypotheses from the ledger and the new reflections;
        without one (or when its answer is rejected) the root causes are appended as they are."""
        assert self.ledger is not None
        if self.models.state is not None:
            try:
                text = await self.models.state.complete(
                    state_messages(self.ledger.render(), result.reflections), role="state",
                    context={"ledger": self.ledger, "reflections": result.reflections, "key": key})
                hypotheses, reason = parse_hypotheses(text)
            except BackendError as exc:
                hypotheses, reason = None, str(exc)
            if hypotheses is not None:
                self.ledger.hypotheses.clear()
                for h in hypotheses:
                    self.ledger.hypothesise(h)
                return
            result.rejected.append(self._reject("state", reason))
        for refl in result.reflections:
            self.ledger.hypothesise(refl.root_cause or "")

    # -- one step and the whole run

    def _batch(self, rng: random.Random) -> list[Task]:
        replayed = self.replay.draw(self.cfg.batch_size, rng) if self.replay is not None else []
        fresh = self.sampler.draw(self.env.train, self.cfg.batch_size - len(replayed), self.iteration, rng,
                                  exclude=set(replayed))
        return [self.env.tasks[i] for i in replayed] + fresh

    def _pareto_parent(self, rng: random.Random) -> Playbook:
        if not self.pool:
            return self.book.copy()
        tasks = list(self.pool[0]["scores"])
        wins = [0] * len(self.pool)
        for task in tasks:
            top = max(c["scores"][task] for c in self.pool)
            for n, c in enumerate(self.pool):
                wins[n] += top > 0 and c["scores"][task] == top
        if not any(wins):
            wins = [1] * len(self.pool)
        return Playbook.from_dict(rng.choices(self.pool, wins)[0]["book"])

    def _add_to_pool(self, book: Playbook, scores: dict[str, float]) -> None:
        self.pool.append({"book": book.to_dict(history=False), "scores": scores})
        if len(self.pool) > self.cfg.pool_size:  # drop the candidate with the lowest mean
            self.pool.remove(min(self.pool, key=lambda c: statistics.fmean(c["scores"].values())))

    async def step(self) -> dict[str, Any]:
        """One iteration; returns its metrics record (also appended to ``history``)."""
        cfg, it = self.cfg, self.iteration
        self.env.advance(it)
        rng = random.Random(f"{cfg.seed}:batch:{it}")
        batch = self._batch(rng)
        parent = self._pareto_parent(rng) if cfg.selection == "pareto" else self.book
        trajs = await self.rollouts(parent, batch, f"{it}")
        success = statistics.fmean(t.success for t in trajs)
        for t in trajs:
            self.sampler.record(t.task_id, t.success)
            if self.replay is not None and t.run == 0:
                self.replay.record(t.task_id, t.success)
        if self.ledger is not None:
            self.ledger.observe(success)
        child = parent.copy() if cfg.acceptance == "minibatch" or parent is not self.book else parent
        result = await self.learn(child, trajs, f"{it}", success)
        accepted = True
        if cfg.acceptance == "minibatch" and result.applied:
            # Same keys as the parent's runs: common random numbers, so only the playbook differs.
            child_trajs = await self.rollouts(child, batch, f"{it}")
            accepted = statistics.fmean(t.success for t in child_trajs) > success
        if accepted and (child is not parent or cfg.selection == "pareto"):
            self.book = child
        if accepted and result.applied:
            self.book.commit(f"iteration {it}: " + "; ".join(op.describe() for op, _ in result.applied))
        record = {"iteration": it, "batch_success": success, "entries": len(self.book),
                  "version": self.book.version, "applied": len(result.applied), "accepted": accepted,
                  "rejected": len(result.rejected), "pruned": len(result.pruned),
                  "deduped": len(result.deduped),
                  "reflections": len(result.reflections)}
        if (it + 1) % cfg.val_every == 0 or it + 1 == cfg.iterations:
            scores = await self.validate(self.book, monitoring=cfg.selection != "pareto")
            val = statistics.fmean(scores.values())
            if cfg.selection == "pareto" and accepted:
                self._add_to_pool(self.book, scores)
            if self.best_val is None or val > self.best_val:
                self.best_val, self.best = val, self.book.copy()
            record["val_success"] = val
        usage = self.models.usage()
        record.update(best_val=self.best_val, llm_calls=usage.calls - self.eval_calls,
                      eval_calls=self.eval_calls,
                      tokens=usage.prompt_tokens + usage.completion_tokens, environment=self.env.label)
        if self.replay is not None:
            record.update(replay_size=len(self.replay.slots), graduated=len(self.replay.graduated),
                          evicted=len(self.replay.evicted))
        self.history.append(record)
        self.iteration += 1
        return record

    async def run(self, on_step: Callable[[dict[str, Any]], None] | None = None) -> Playbook:
        """Run until ``cfg.iterations``; ``on_step`` sees each metrics record. Returns the best playbook."""
        if self.best_val is None and self.iteration == 0:
            self.env.advance(0)
            self.best_val = statistics.fmean((await self.validate(self.book)).values())
        while self.iteration < self.cfg.iterations:
            record = await self.step()
            if on_step is not None:
                on_step(record)
        return self.best

    # -- checkpoints

    def checkpoint(self) -> dict[str, Any]:
        """The whole optimiser state, JSON-ready."""
        return {"config": asdict(self.cfg), "iteration": self.iteration, "book": self.book.to_dict(),
                "best": self.best.to_dict(), "best_val": self.best_val,
                "ledger": self.ledger.to_dict() if self.ledger is not None else None,
                "replay": self.replay.to_dict() if self.replay is not None else None,
                "sampler_failures": dict(self.sampler.failures), "pool": self.pool, "history": self.history,
                "rejections": self.rejections, "eval_calls": self.eval_calls,
                "usage": {role: asdict(b.usage) for role, b in self.models.roles().items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `checkpoint` output; the config must match this optimiser's except
        ``iterations`` (a resumed run may go further). RCLConfigError names the fields that differ."""
        ours = asdict(self.cfg)
        diff = sorted(k for k in state["config"] if k != "iterations" and state["config"][k] != ours.get(k))
        if diff:
            raise RCLConfigError(f"checkpoint was made with another config (fields differ: {diff})")
        self.iteration, self.best_val = state["iteration"], state["best_val"]
        self.book, self.best = Playbook.from_dict(state["book"]), Playbook.from_dict(state["best"])
        self.ledger = Ledger.from_dict(state["ledger"]) if state["ledger"] is not None else None
        self.replay = ReplayBuffer.from_dict(state["replay"]) if state["replay"] is not None else None
        self.sampler.failures = dict(state["sampler_failures"])
        self.pool, self.history, self.rejections = state["pool"], state["history"], state["rejections"]
        self.eval_calls = state["eval_calls"]
        seen: set[int] = set()
        for role, backend in self.models.roles().items():
            if id(backend) not in seen:  # a shared backend's usage is restored once
                backend.usage = Usage(**state["usage"][role])
                seen.add(id(backend))

