"""A deterministic simulated world for measuring the optimiser itself (everything here is SIMULATED).

Hidden rules map triggers to actions (``k03 -> a2``). A task lists 1..``max_steps`` triggers
(drawn Zipf-like, so some rules are rare) and passes when every action is right. Playbook entries
that state a rule (``When you see k03, use a2.``) are what the simulated models read.

`SimulatedModel` plays every role as an `LLMBackend`, reading the structured ``context`` the
optimiser passes beside the prompt, and answering in the same JSON/text formats a real model
must, so parsing and validation run for real:

* **actor**: follows the entry for each trigger, except that it overlooks applicable guidance
  with probability ``p_ignore`` and guesses when no entry applies; each step then fails with
  probability ``noise`` (execution noise). In an annotated (credit-assignment) run it cites the
  entries it used and flags missing guidance; that run replays the same choices as the plain run
  (a faithful self-report; a real model's citations are noisier).
* **reflector**: from a contrastive group (a passing run beside failing ones) it reads the right
  actions off the passing run. From failures alone it picks a suspect (a trigger without
  guidance, else an entry that was used; without citations it assumes every matching entry was
  used) and proposes a rule that is right with probability ``p_correct``. With citations, a
  failure where the actor flagged guidance as missing that the playbook has is put down to
  overlooked guidance (no edit). With auxiliary losses
  it must classify the failure, and calls it execution noise (no edit) when every entry used is
  proven (helpful >= 2, never harmful) and no guidance was missing.
* **state**: keeps the newest root causes as the open hypotheses (it does not reason about them).
* **mutator**: turns proposed rules into ADD (ADD-only mode, or no entry for that trigger) or
  UPDATE operations; with the ledger it avoids contents already refuted.

Every answer is malformed with probability ``p_malformed`` (not JSON, or an unknown entry id).
Randomness comes from ``random.Random(f"{seed}:{role}:{key}")`` with the optimiser's key, so a run
is reproducible and a resumed run replays exactly.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from .backends import LLMBackend, estimate_tokens
from .envs import Environment, Outcome, Task, Trajectory
from .playbook import Entry, Playbook

_RULE = re.compile(r"\b(k\d+)\b.*?\b(a\d+)\b")
_PAIR = re.compile(r"\b(k\d+)=(a\d+)")


def rule_of(content: str) -> tuple[str, str] | None:
    """The (trigger, action) a playbook content states, if any."""
    m = _RULE.search(content)
    return (m.group(1), m.group(2)) if m else None


def rule_text(trigger: str, action: str) -> str:
    """The playbook content stating a rule."""
    return f"When you see {trigger}, use {action}."


@dataclass(frozen=True)
class SimConfig:
    """The simulated world and its models (all probabilities per step or per proposal)."""

    n_rules: int = 12
    n_actions: int = 4
    n_train: int = 60
    n_val: int = 40
    n_test: int = 40  # held out, drawn after train and val (so they do not change with it)
    max_steps: int = 3
    zipf: float = 1.0  # trigger frequency ~ 1 / rank**zipf: a larger value makes rare rules rarer
    noise: float = 0.05  # execution noise: a step fails at random
    p_ignore: float = 0.1  # the actor overlooks applicable guidance
    p_correct: float = 0.6  # a rule proposed from failures alone is right
    p_malformed: float = 0.05  # a reflector/mutator answer is malformed
    seed: int = 0


class SimulatedEnvironment(Environment):
    """Tasks governed by hidden rules (SIMULATED)."""

    name = "simulated-rules"
    simulated = True
    instructions = "Answer 'kNN=aM' for each item, separated by ';'."

    def __init__(self, cfg: SimConfig = SimConfig()) -> None:
        self.cfg = cfg
        rng = random.Random(f"world:{cfg.seed}")
        self.rules = {f"k{i:02d}": f"a{rng.randrange(cfg.n_actions)}" for i in range(cfg.n_rules)}
        triggers = list(self.rules)
        weights = [1 / (rank + 1) ** cfg.zipf for rank in range(cfg.n_rules)]
        tasks = []
        for i in range(cfg.n_train + cfg.n_val + cfg.n_test):
            n = rng.randint(1, cfg.max_steps)
            items: list[str] = []
            while len(items) < n:
                k = rng.choices(triggers, weights)[0]
                if k not in items:
                    items.append(k)
            tasks.append(Task(f"t{i:03d}", f"Handle items: {', '.join(items)}.",
                              answer={k: self.rules[k] for k in items},
                              meta={"items": items, "difficulty": n}))
        n = cfg.n_train + cfg.n_val
        super().__init__(tasks[:cfg.n_train], tasks[cfg.n_train:n], tasks[n:])

    def verify(self, task: Task, response: str) -> Outcome:
        got = dict(_PAIR.findall(response))
        right = sum(got.get(k) == a for k, a in task.answer.items())
        n = len(task.answer)
        return Outcome(right == n, right / n, f"{right}/{n} items handled correctly")


def _entries_for(book: Playbook, trigger: str) -> list[Entry]:
    return [e for e in book.entries.values() if (r := rule_of(e.content)) and r[0] == trigger]


class SimulatedModel(LLMBackend):
    """Plays actor, reflector and mutator in the simulated world (see the module docstring)."""

    name = "simulated"

    def __init__(self, env: SimulatedEnvironment, cfg: SimConfig | None = None, *,
                 label: str = "sim") -> None:
        super().__init__()
        self.env, self.cfg, self.label = env, cfg or env.cfg, label

    async def complete(self, messages: list[dict[str, str]], *, role: str = "",
                       context: dict[str, Any] | None = None) -> str:
        if context is None:
            raise ValueError("the simulated model needs the structured context of its prompt")
        rng = random.Random(f"{self.cfg.seed}:{role}:{context['key']}")
        if role == "actor":
            text = self._act(context["task"], context["book"], context["annotate"], rng)
        elif rng.random() < self.cfg.p_malformed:
            text = rng.choice(["Sure! Here is what I think went wrong: the agent was confused.",
                               json.dumps({"operations": [{"op": "DELETE", "entry_id": "e-9999"},
                                                          {"op": "REWRITE", "content": "x"}]}),
                               '{"summary": "truncated", "credit": {'])
        elif role == "reflector":
            text = json.dumps(self._reflect(context["groups"], context["book"], context["aux"], rng))
        elif role == "mutator":
            text = json.dumps({"operations": self._mutate(context, rng)})
        elif role == "state":  # keeps the newest root causes first, then the older hypotheses
            causes = [r.root_cause for r in context["reflections"] if r.root_cause]
            kept = list(dict.fromkeys([*causes, *context["ledger"].hypotheses]))[:10]
            text = json.dumps({"hypotheses": kept})
        else:
            raise ValueError(f"unknown role {role!r} (actor, reflector, mutator, state)")
        self.usage.add(sum(estimate_tokens(m["content"]) for m in messages), estimate_tokens(text))
        return text

    # -- actor

    def _act(self, task: Task, book: Playbook, annotate: bool, rng: random.Random) -> str:
        cfg, parts = self.cfg, []
        for k in task.meta["items"]:
            entries = _entries_for(book, k)
            used = rng.choice(entries) if entries else None
            if used is not None and rng.random() < cfg.p_ignore:
                used = None
            action = rule_of(used.content)[1] if used else f"a{rng.randrange(cfg.n_actions)}"
            if rng.random() < cfg.noise:
                action = rng.choice([f"a{j}" for j in range(cfg.n_actions) if f"a{j}" != action])
            note = (f" [{used.id}]" if used else f" MISSING: rule for {k}") if annotate else ""
            parts.append(f"{k}={action}{note}")
        return "; ".join(parts)

    # -- reflector

    def _guess(self, trigger: str, rng: random.Random, avoid: str | None = None) -> str:
        truth = self.env.rules[trigger]
        if rng.random() < self.cfg.p_correct and truth != avoid:
            return truth
        wrong = [f"a{j}" for j in range(self.cfg.n_actions) if f"a{j}" not in (truth, avoid)]
        return rng.choice(wrong)

    def _reflect(self, groups: list[list[Trajectory]], book: Playbook, aux: bool,
                 rng: random.Random) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": "", "credit": {}, "insights": [], "failure_type": None,
                               "root_cause": None, "coverage_gaps": []}
        for group in groups:
            items = self.env.tasks[group[0].task_id].meta["items"]
            passing = [t for t in group if t.success]
            ftype, cause = (self._contrast(passing[0], group, items, book, out) if passing
                            else self._blame(group[0], items, book, aux, out, rng))
            out["failure_type"] = out["failure_type"] or ftype
            out["root_cause"] = out["root_cause"] or cause
            out["summary"] += f"{group[0].task_id}: {ftype}. "
        if aux and not out["failure_type"]:
            out["failure_type"], out["root_cause"] = "other", "no failure in these runs"
        if aux and not out["coverage_gaps"]:
            out["coverage_gaps"] = ["none found"]
        if not aux:
            for key in ("failure_type", "root_cause", "coverage_gaps"):
                del out[key]
        return out

    def _contrast(self, good: Trajectory, group: list[Trajectory], items: list[str], book: Playbook,
                  out: dict[str, Any]) -> tuple[str, str]:
        right = dict(_PAIR.findall(good.response))  # a pass: every action in it is right
        used = good.cited if good.cited is not None else [e.id for k in items for e in _entries_for(book, k)]
        for i in used:
            rule = rule_of(book.entries[i].content) if i in book.entries else None
            if rule and right.get(rule[0]) == rule[1]:
                out["credit"][i] = "helpful"
        gaps = []
        for k in items:
            entries = _entries_for(book, k)
            for e in entries:
                if rule_of(e.content)[1] != right[k]:
                    out["credit"][e.id] = "harmful"
            if not any(rule_of(e.content)[1] == right[k] for e in entries):
                out["insights"].append(rule_text(k, right[k]))
                gaps.append(k)
        out["coverage_gaps"] += [f"no rule for {k}" for k in gaps]
        if gaps:
            return "missing_guidance", f"the passing run shows the right action for {', '.join(gaps)}"
        return "execution_noise", "the same playbook passed in another run of this task"

    def _blame(self, trace: Trajectory, items: list[str], book: Playbook, aux: bool,
               out: dict[str, Any], rng: random.Random) -> tuple[str, str]:
        if trace.cited is not None:  # credit assignment: what the actor really used and lacked
            flagged = [k for k in items if any(k in m for m in trace.missing or [])]
            unguided = [k for k in flagged if not _entries_for(book, k)]
            suspects = [i for i in trace.cited if i in book.entries]
            overlooked = [k for k in flagged if k not in unguided]
            if overlooked and not unguided:  # the run failed without using guidance it had: no edit
                return "ignored_guidance", f"the actor overlooked existing guidance for {overlooked}"
        else:
            unguided = [k for k in items if not _entries_for(book, k)]
            suspects = [e.id for k in items for e in _entries_for(book, k)]
        if unguided:
            k = rng.choice(unguided)
            out["insights"].append(rule_text(k, self._guess(k, rng)))
            out["coverage_gaps"].append(f"no rule for {k}")
            return "missing_guidance", f"no guidance for {k}"
        if not suspects:
            return "other", "nothing to blame"
        if aux and all(book.entries[i].helpful >= 2 and book.entries[i].harmful == 0 for i in suspects):
            return "execution_noise", "every entry used has proven helpful"
        culprit = book.entries[rng.choice(suspects)]
        k, action = rule_of(culprit.content)
        out["credit"][culprit.id] = "harmful"
        out["insights"].append(rule_text(k, self._guess(k, rng, avoid=action)))
        return "wrong_guidance", f"entry {culprit.id} gives the wrong action for {k}"

    # -- mutator

    def _mutate(self, ctx: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
        book: Playbook = ctx["book"]
        refuted = {rule_of(c) for c in (ctx["ledger"].refuted if ctx["ledger"] is not None else [])}
        ops: list[dict[str, str]] = []
        seen: set[str] = set()
        for refl in ctx["reflections"]:
            for insight in refl.insights:
                rule = rule_of(insight)
                if rule is None or rule[0] in seen:
                    continue
                k, action = rule
                seen.add(k)
                entries = _entries_for(book, k)
                if (k, action) in refuted:  # the ledger says this failed before: try another action
                    others = [f"a{j}" for j in range(self.cfg.n_actions) if (k, f"a{j}") not in refuted
                              and not any(rule_of(e.content)[1] == f"a{j}" for e in entries)]
                    if not others:
                        continue
                    action = rng.choice(others)
                if any(rule_of(e.content)[1] == action for e in entries):
                    continue
                if ctx["add_only"] or not entries:
                    ops.append({"op": "ADD", "section": "rules", "content": rule_text(k, action)})
                else:
                    ops.append({"op": "UPDATE", "entry_id": entries[0].id, "content": rule_text(k, action)})
        return ops[:ctx["max_ops"]]
