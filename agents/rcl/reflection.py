"""The prompts of the three roles (actor, reflector, mutator) and the reflector's answer.

The prompts of the state model (which keeps the ledger's open hypotheses) are here too.
The reflector turns signal traces and the current playbook into a `Reflection`: credit per entry
(helpful / harmful), insights (the update direction), and, with auxiliary losses on, a failure
type, a root cause and coverage gaps, which are then required: an answer without them is
rejected like malformed output. The mutator turns reflections (and the optimiser ledger) into
operations (`latentwire.agents.rcl.operations`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ._json import extract_json
from .envs import Environment, Task, Trajectory
from .playbook import Playbook

FAILURE_TYPES = ("missing_guidance", "wrong_guidance", "ignored_guidance", "execution_noise", "other")
AUX_FIELDS = ("failure_type", "root_cause", "coverage_gaps")
_CITE = re.compile(r"\[(e-\d+)\]")
_MISSING = re.compile(r"MISSING:\s*([^\n;]+)")


@dataclass
class Reflection:
    """The reflector's update signal for one trace or a batch of them."""

    summary: str = ""
    credit: dict[str, str] = field(default_factory=dict)  # entry id -> "helpful" | "harmful"
    insights: list[str] = field(default_factory=list)
    failure_type: str | None = None
    root_cause: str | None = None
    coverage_gaps: list[str] = field(default_factory=list)


def parse_reflection(text: str, *, require_aux: bool) -> tuple[Reflection | None, str]:
    """A `Reflection` from a model answer, or None and the reason it was rejected."""
    try:
        data = extract_json(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(data, dict):
        return None, "a reflection must be a JSON object"
    credit = data.get("credit") or {}
    insights = data.get("insights") or []
    if not isinstance(credit, dict) or not all(v in ("helpful", "harmful") for v in credit.values()):
        return None, "credit must map entry ids to 'helpful' or 'harmful'"
    if not isinstance(insights, list) or not all(isinstance(i, str) for i in insights):
        return None, "insights must be a list of strings"
    if require_aux:
        missing = [k for k in AUX_FIELDS if not data.get(k)]
        if missing:
            return None, f"auxiliary fields missing: {', '.join(missing)}"
        if data["failure_type"] not in FAILURE_TYPES:
            return None, f"failure_type {data['failure_type']!r} not one of {FAILURE_TYPES}"
    gaps = data.get("coverage_gaps") or []
    return Reflection(str(data.get("summary", "")), {str(k): v for k, v in credit.items()},
                      insights, data.get("failure_type"), data.get("root_cause"),
                      [str(g) for g in gaps] if isinstance(gaps, list) else [str(gaps)]), ""


def read_citations(answer: str) -> tuple[list[str], list[str]]:
    """Entry ids cited as ``[e-0001]`` and guidance flagged as ``MISSING: ...`` in an actor answer."""
    return list(dict.fromkeys(_CITE.findall(answer))), [m.strip() for m in _MISSING.findall(answer)]


# -- prompts (the structured ``context`` beside each is what simulated models read)

def actor_messages(env: Environment, task: Task, book: Playbook, *, annotate: bool,
                   perturb_seed: str = "") -> list[dict[str, str]]:
    """The actor's prompt: the playbook, the task; with ``annotate`` (credit assignment) the
    playbook is perturbed (entries shuffled) and the actor must cite and flag gaps."""
    rendered = book.render_for_actor()
    if annotate:
        lines = rendered.splitlines()
        random.Random(perturb_seed).shuffle(lines)
        rendered = "\n".join(line for line in lines if not line.startswith("## "))
    system = f"You solve tasks. Use this playbook of learned guidance:\n{rendered}\n{env.instructions}"
    if annotate:
        system += ("\nFor each step, cite the playbook entries you used as [e-NNNN]; where the "
                   "playbook gave no guidance, write 'MISSING: <what guidance was missing>'.")
    return [{"role": "system", "content": system}, {"role": "user", "content": task.prompt}]


def render_trace(trace: Trajectory) -> str:
    """A trace as the reflector reads it (the annotated run beside the plain one, if any)."""
    out = [f"task {trace.task_id} (run {trace.run}): {'PASS' if trace.success else 'FAIL'} "
           f"score={trace.score:.2f}", f"prompt: {trace.prompt}", f"answer: {trace.response}",
           f"feedback: {trace.feedback}"]
    if trace.annotated is not None:
        out += [f"annotated run: {trace.annotated}", f"cited: {trace.cited}; missing: {trace.missing}"]
    return "\n".join(out)


def reflector_messages(groups: list[list[Trajectory]], book: Playbook, *, aux: bool) -> list[dict[str, str]]:
    """The reflector's prompt: the playbook with counters, then each signal group of traces."""
    assessed = {i for g in groups for t in g for i in (t.cited or [])}
    ask = ('Answer JSON: {"summary": str, "credit": {entry_id: "helpful"|"harmful"}, '
           '"insights": [str]')
    if aux:
        ask += (f', "failure_type": one of {list(FAILURE_TYPES)}, "root_cause": str, '
                '"coverage_gaps": [str]')
    ask += "}. Insights say what guidance would have made the failed runs pass."
    body = "\n\n".join(f"=== group {i} ({len(g)} runs of one task)\n" + "\n---\n".join(map(render_trace, g))
                       for i, g in enumerate(groups))
    return [{"role": "system",
             "content": "You analyse agent runs and assign credit to playbook entries. " + ask},
            {"role": "user", "content": f"Playbook (* = assessed this round):\n"
                                        f"{book.render_for_optimizer(assessed)}\n\n{body}"}]


def mutator_messages(book: Playbook, reflections: list[Reflection], ledger: str | None, *,
                     add_only: bool, max_ops: int) -> list[dict[str, str]]:
    """The mutator's prompt: playbook, reflections, and (with optimiser state) the ledger."""
    kinds = "ADD" if add_only else "ADD, UPDATE or DELETE"
    system = (f"You edit a playbook. Answer JSON: {{\"operations\": [...]}} with at most {max_ops} "
              f"operations of kind {kinds}: {{\"op\": \"ADD\", \"section\": str, \"content\": str}}, "
              "{\"op\": \"UPDATE\", \"entry_id\": str, \"content\": str}, {\"op\": \"DELETE\", "
              "\"entry_id\": str}. Keep entries short, specific and non-redundant.")
    refl = "\n".join(f"- {r.summary} | insights: {r.insights} | failure: {r.failure_type} | "
                     f"cause: {r.root_cause} | gaps: {r.coverage_gaps}" for r in reflections)
    user = f"Playbook:\n{book.render_for_optimizer()}\n\nReflections:\n{refl}"
    if ledger is not None:
        user += (f"\n\nOptimiser ledger (past changes, their effects, open hypotheses, signal "
                 f"momentum):\n{ledger}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]



def state_messages(ledger: str, reflections: list[Reflection]) -> list[dict[str, str]]:
    """The state model's prompt: the ledger and this step's reflections; it keeps the hypotheses."""
    refl = "\n".join(f"- {r.summary} | cause: {r.root_cause} | gaps: {r.coverage_gaps}" for r in reflections)
    system = ("You keep an optimiser's open hypotheses about why an agent fails. Answer JSON: "
              '{"hypotheses": [str]}: the hypotheses still open after this step\'s evidence, most '
              "important first, at most 10.")
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Ledger:\n{ledger}\n\nThis step's reflections:\n{refl}"}]


def parse_hypotheses(text: str) -> tuple[list[str] | None, str]:
    """The state model's hypotheses, or None and the reason the answer was rejected."""
    try:
        data = extract_json(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    hypotheses = data.get("hypotheses") if isinstance(data, dict) else None
    if not isinstance(hypotheses, list) or not all(isinstance(h, str) for h in hypotheses):
        return None, 'expected {"hypotheses": [str, ...]}'
    return hypotheses, ""
