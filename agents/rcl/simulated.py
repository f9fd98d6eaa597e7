"""A deterministic simulated world for measuring the optimiser itself (everything here is SIMULATED).

Hidden rules map triggers to actions (``k03 -> a2``). A task lists 1..``max_steps`` triggers
(drawn Zipf-like, so some rules are rare) and passes when every action is right. With ``drift``
the rules change while the optimiser runs (`SimulatedEnvironment.advance`). Playbook entries
that state a rule (``When you see k03, use a2.``, or the same in other words) are what the
simulated models read.

`SimulatedModel` plays every role as an `LLMBackend`, reading the structured ``context`` the
optimiser passes beside the prompt, and answering in the same JSON/text formats a real model
must, so parsing and validation run for real. Every primitive acts through a mechanism that can
fail; each probability is a `SimConfig` field:

* **actor**: for each trigger it weighs the entries stating a rule for it by their counters
  (weight ``exp(trust * (helpful - harmful))``, so wrong credit misleads it), follows the one it
  picks unless it overlooks it (``p_ignore``) or distrusts it (net-negative counters: followed
  with probability ``exp(trust * net)``), and guesses without guidance; each step then fails
  with probability ``noise`` (execution noise). In an annotated (credit-assignment) run it cites
  the entries it used and flags missing guidance; that run replays the same choices as the plain
  run, but cites another entry of the playbook than the one it used with probability
  ``p_miscite`` (an unfaithful self-report, which credits and blames the wrong entry).
* **reflector**: from a contrastive group (a passing run beside failing ones) it reads each
  item's right action off the passing run, but misreads an item with probability
  ``1 - p_contrast`` (it takes a failing run's action, or another wrong one), and then credits
  and proposes by what it read. From failures alone it picks a suspect (a trigger without
  guidance, else an entry that was used; without citations it assumes every matching entry was
  used) and proposes a rule that is right with probability ``p_correct``. With citations, a
  failure where the actor flagged guidance as missing that the playbook has is put down to
  overlooked guidance (no edit). With **auxiliary losses** it must name the failure type and
  root cause, and that analysis finds the step that really went wrong with probability
  ``p_diagnose`` (it then blames that step's entries, or proposes a rule for that step's
  trigger); it calls a failure execution noise (no edit) when every entry it suspects is
  proven (helpful >= 2, never harmful), which wrong counters can make it do wrongly.
* **state**: keeps the newest root causes as the open hypotheses (it does not reason about them).
* **mutator**: turns proposed rules into ADD (ADD-only mode, or no entry for that trigger) or
  UPDATE operations (of the trigger's most distrusted entry). In ADD-only mode it re-adds, in
  other words, a rule the playbook already states with probability ``p_redundant`` (what the
  curator's de-dup is for). With the **optimiser state** it follows the ledger's signal
  momentum: for a trigger it writes the action whose contents the momentum favours most (the
  playbook's rule on a tie, then the proposal), leaves the playbook alone when that is what it
  already says, and replaces a rule only when the replacement's momentum leads the rule's by
  ``state_margin`` (one fresh proposal against a rule nobody has supported for a while), so
  a rule that keeps earning support survives a stray blame, and a rule that went wrong stays
  until the evidence against it has built up.

Every answer is malformed with probability ``p_malformed`` (not JSON, or an unknown entry id).
Randomness comes from ``random.Random(f"{seed}:{role}:{key}")`` with the optimiser's key, so a run
is reproducible and a resumed run replays exactly.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from .backends import LLMBackend, estimate_tokens
from .envs import Environment, Outcome, Task, Trajectory
from .playbook import Entry, Playbook, content_key
from .state import Ledger

_RULE = re.compile(r"\b(k\d+)\b.*?\b(a\d+)\b")
_PAIR = re.compile(r"\b(k\d+)=(a\d+)")
# The same rule in other words (a curator that re-adds a rule rarely repeats it verbatim).
WORDINGS = ("When you see {k}, use {a}.", "For {k}, the right action is {a}.", "{k} calls for {a}.",
            "On {k}: answer {a}.")


@functools.lru_cache(maxsize=4096)  # the actor reads every entry of the playbook for every item
def rule_of(content: str) -> tuple[str, str] | None:
    """The (trigger, action) a playbook content states, if any."""
    m = _RULE.search(content)
    return (m.group(1), m.group(2)) if m else None


def rule_text(trigger: str, action: str, wording: int = 0) -> str:
    """The playbook content stating a rule (``wording`` picks one of `WORDINGS`)."""
    return WORDINGS[wording].format(k=trigger, a=action)


@dataclass(frozen=True)
class SimConfig:
    """The simulated world and its models (all probabilities per step, item or proposal)."""

    n_rules: int = 12
    n_actions: int = 4
    n_train: int = 60
    n_val: int = 40
    n_test: int = 40  # held out, drawn after train and val (so they do not change with it)
    max_steps: int = 3
    zipf: float = 1.0  # trigger frequency ~ 1 / rank**zipf: a larger value makes rare rules rarer
    drift: float = 0.0  # each optimiser step, each hidden rule changes with this probability
    noise: float = 0.05  # execution noise: a step fails at random
    p_ignore: float = 0.1  # the actor overlooks applicable guidance
    trust: float = 0.5  # how strongly the actor weighs entries by their counters (0: not at all)
    p_miscite: float = 0.1  # an annotated run cites another entry than the one it used
    p_correct: float = 0.6  # a rule proposed from failures alone is right
    p_contrast: float = 0.9  # the reflector reads an item of a contrastive group right
    p_diagnose: float = 0.6  # with auxiliary losses, the root-cause analysis finds the failed step
    p_redundant: float = 0.3  # in ADD-only mode, the mutator re-adds a rule the playbook states
    state_margin: float = 2.0  # with the ledger: the momentum lead a replacement needs over the rule
    p_malformed: float = 0.05  # a reflector/mutator answer is malformed
    seed: int = 0


class SimulatedEnvironment(Environment):
    """Tasks governed by hidden rules, optionally drifting (SIMULATED)."""

    name = "simulated-rules"
    simulated = True
    instructions = "Answer 'kNN=aM' for each item, separated by ';'."

    def __init__(self, cfg: SimConfig = SimConfig()) -> None:
        self.cfg = cfg
        rng = random.Random(f"world:{cfg.seed}")
        self.rules = {f"k{i:02d}": f"a{rng.randrange(cfg.n_actions)}" for i in range(cfg.n_rules)}
        self._initial, self._at = dict(self.rules), 0  # the rules at iteration 0; the iteration now
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

    def advance(self, iteration: int) -> None:
        """The rules at ``iteration``: from the initial ones, step by step, each rule changing
        with probability ``drift`` per step (draws keyed by seed, step and rule: deterministic)."""
        if self.cfg.drift <= 0 or iteration == self._at:
            return
        if iteration < self._at:
            self.rules.update(self._initial)
            self._at = 0
        while self._at < iteration:
            self._at += 1
            for k, action in sorted(self.rules.items()):
                rng = random.Random(f"drift:{self.cfg.seed}:{self._at}:{k}")
                if rng.random() < self.cfg.drift:
                    self.rules[k] = rng.choice([f"a{j}" for j in range(self.cfg.n_actions)
                                                if f"a{j}" != action])
        for task in self.tasks.values():  # the answers follow the rules
            task.answer.update({k: self.rules[k] for k in task.answer})

    def semantic_key(self, content: str) -> object:
        """The rule a content states (its wording does not matter), else its normalised text."""
        return rule_of(content) or content_key(content)

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

    def _other_action(self, action: str | None, rng: random.Random) -> str:
        return rng.choice([f"a{j}" for j in range(self.cfg.n_actions) if f"a{j}" != action])

    # -- actor

    def _trusted(self, e: Entry) -> float:
        # exp(trust * net), clipped: counters in the hundreds must not overflow
        return math.exp(max(-30.0, min(30.0, -self.cfg.trust * e.net_harm)))

    def _act(self, task: Task, book: Playbook, annotate: bool, rng: random.Random) -> str:
        cfg, parts = self.cfg, []
        for k in task.meta["items"]:
            entries = _entries_for(book, k)
            used = rng.choices(entries, [self._trusted(e) for e in entries])[0] if entries else None
            if used is not None and rng.random() >= (1 - cfg.p_ignore) * min(1.0, self._trusted(used)):
                used = None  # overlooked, or distrusted for its record
            action = rule_of(used.content)[1] if used else f"a{rng.randrange(cfg.n_actions)}"
            if rng.random() < cfg.noise:
                action = self._other_action(action, rng)
            cited = used
            if annotate and used is not None and len(book) > 1 and rng.random() < cfg.p_miscite:
                cited = rng.choice([e for e in book.entries.values() if e is not used])
            note = (f" [{cited.id}]" if cited else f" MISSING: rule for {k}") if annotate else ""
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
            ftype, cause = (self._contrast(passing[0], group, items, book, out, rng) if passing
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
                  out: dict[str, Any], rng: random.Random) -> tuple[str, str]:
        right = dict(_PAIR.findall(good.response))  # a pass: every action in it is right
        for k in items:  # ... as long as the reflector reads it right
            if rng.random() >= self.cfg.p_contrast:
                seen = [a for t in group if not t.success
                        if (a := dict(_PAIR.findall(t.response)).get(k)) and a != right.get(k)]
                right[k] = rng.choice(seen) if seen else self._other_action(right.get(k), rng)
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
        else:
            unguided = [k for k in items if not _entries_for(book, k)]
            suspects = [e.id for k in items for e in _entries_for(book, k)]
            overlooked = []
        if aux and rng.random() < self.cfg.p_diagnose:  # the root-cause analysis finds the failed step
            got = dict(_PAIR.findall(trace.response))
            failed = [k for k in items if got.get(k) != self.env.rules[k]]
            if failed:
                k = rng.choice(failed)
                if k in overlooked:
                    return "ignored_guidance", f"the actor overlooked existing guidance for {k}"
                unguided = [k] if not _entries_for(book, k) else []
                suspects = [i for i in suspects if (r := rule_of(book.entries[i].content)) and r[0] == k]
                overlooked = []
        if overlooked and not unguided:  # the run failed without using guidance it had: no edit
            return "ignored_guidance", f"the actor overlooked existing guidance for {overlooked}"
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

    @staticmethod
    def _support(ledger: Ledger | None) -> dict[tuple[str, str], float] | None:
        """The ledger's signal momentum per (trigger, action), whatever the wording; None without one."""
        if ledger is None:
            return None
        support: dict[tuple[str, str], float] = {}
        for content, m in ledger.momentum.items():
            if (rule := rule_of(content)) is not None:
                support[rule] = support.get(rule, 0.0) + m
        return support

    def _mutate(self, ctx: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
        book: Playbook = ctx["book"]
        support = self._support(ctx["ledger"])
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
                stated = {rule_of(e.content)[1] for e in entries}
                if support is not None:  # follow the momentum; a tie: the playbook's rule, then the proposal
                    candidates = stated | {action} | {a for t, a in support if t == k}
                    action = max(sorted(candidates), key=lambda a: (support.get((k, a), 0.0), a in stated,
                                                                    a == rule[1]))
                if action in stated:
                    if ctx["add_only"] and rng.random() < self.cfg.p_redundant:
                        ops.append({"op": "ADD", "section": "rules",
                                    "content": rule_text(k, action, rng.randrange(1, len(WORDINGS)))})
                    continue
                if support is not None and stated:
                    held = max(support.get((k, a), 0.0) for a in stated)
                    if support.get((k, action), 0.0) - held < self.cfg.state_margin:
                        continue  # not enough evidence yet to replace what the playbook says
                if ctx["add_only"] or not entries:
                    ops.append({"op": "ADD", "section": "rules", "content": rule_text(k, action)})
                else:
                    worst = max(entries, key=lambda e: e.net_harm)  # the first of equals
                    ops.append({"op": "UPDATE", "entry_id": worst.id, "content": rule_text(k, action)})
        return ops[:ctx["max_ops"]]
