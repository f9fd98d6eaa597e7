"""Environments: tasks with a verifier and textual feedback, and loaders for local task files.

An `Environment` has train and validation `Task` lists and ``verify(task, response) -> Outcome``.
Loaders read local files only (no downloads):

* `load_rewardbench2`: RewardBench2 rows (JSON list or JSONL; ``id``, ``prompt``, ``chosen``,
  ``rejected``, optional ``subset``). The actor sees the candidates under letters and must name
  the best; the verifier checks the letter of a ``chosen`` answer.
* `load_appworld`: an AppWorld-style tree: ``ROOT/tasks/<task_id>/specs.json`` (``instruction``,
  optional ``supervisor``) and ``ROOT/tasks/<task_id>/ground_truth/answer.json`` (the answer),
  with splits listed in ``ROOT/datasets/<split>.txt``. The verifier compares the actor's final
  ``ANSWER: ...`` line with the answer (case and space insensitive). AppWorld's API execution is
  not reproduced: this is its question-answer part.

The simulated environment, for measuring the optimiser itself, is in
`latentwire.agents.rcl.simulated`.
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import EnvironmentDataError
from .playbook import content_key


@dataclass(frozen=True)
class Task:
    """One task: ``prompt`` is what the actor sees; ``answer`` is for the verifier only."""

    id: str
    prompt: str
    answer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The verifier's result: success, a score in [0, 1], and feedback text for the reflector."""

    success: bool
    score: float
    feedback: str


@dataclass
class Trajectory:
    """One actor run on one task, with its outcome (what the reflector reads).

    ``cited`` and ``missing`` come from the credit-assignment run (entry ids the actor cited,
    guidance it flagged as missing); ``group`` numbers the rollouts of one task in one step.
    """

    task_id: str
    prompt: str
    response: str
    success: bool
    score: float
    feedback: str
    playbook_version: int = 0
    run: int = 0
    cited: list[str] | None = None
    missing: list[str] | None = None
    annotated: str | None = None  # the credit-assignment run's answer, beside the plain one

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (trajectories travel on the bus as JSON text)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Trajectory:
        """Rebuild from `to_dict`; raises EnvironmentDataError naming a missing or bad field."""
        if not isinstance(data, dict):
            raise EnvironmentDataError(f"a trajectory must be a JSON object, not {type(data).__name__}")
        try:
            return cls(**{k: data[k] for k in ("task_id", "prompt", "response", "success", "score",
                                               "feedback")},
                       **{k: data[k] for k in ("playbook_version", "run", "cited", "missing", "annotated")
                          if k in data})
        except KeyError as exc:
            raise EnvironmentDataError(f"a trajectory needs field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise EnvironmentDataError(f"bad trajectory: {exc}") from None


class Environment:
    """Tasks with a verifier: ``train`` (learning), ``val`` (picking the best playbook) and an
    optional held-out ``test``. ``simulated`` is True for synthetic worlds (labelled in outputs)."""

    name = "environment"
    simulated = False
    #: What the actor is told about answering (prepended to the task prompt).
    instructions = ""

    def __init__(self, train: list[Task], val: list[Task], test: list[Task] | None = None) -> None:
        if not train or not val:
            raise EnvironmentDataError(f"{self.name}: needs train and validation tasks "
                                       f"(got {len(train)} and {len(val)})")
        self.train, self.val = train, val
        self.test = test or []  # held out: never seen by the optimiser, nor used to pick the best playbook
        self.tasks = {t.id: t for t in [*train, *val, *self.test]}

    def verify(self, task: Task, response: str) -> Outcome:
        """Judge ``response`` to ``task``."""
        raise NotImplementedError

    def advance(self, iteration: int) -> None:
        """Move the world to optimiser iteration ``iteration`` (called at the start of each step).

        Fixed environments ignore it; a drifting one (the simulated world with ``drift``) changes
        its answers here. It must be a function of ``iteration`` alone, so a resumed run sees the
        world the uninterrupted run saw.
        """

    def semantic_key(self, content: str) -> object:
        """What makes two playbook contents the same guidance (de-dup, `Playbook.dedup`).

        The default is the normalised text, which ADD already refuses to duplicate: deciding that
        two wordings mean the same needs the domain (ACE compares embeddings; see docs/rcl.md).
        """
        return content_key(content)

    @property
    def label(self) -> str:
        """The name, marked "(simulated)" for synthetic environments."""
        return f"{self.name} (simulated)" if self.simulated else self.name


def _split(tasks: list[Task], val_fraction: float, seed: int) -> tuple[list[Task], list[Task]]:
    order = sorted(tasks, key=lambda t: t.id)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    return order[n_val:], order[:n_val]


def _read_rows(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise EnvironmentDataError(f"{path}: cannot read: {exc}") from None
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise EnvironmentDataError(f"{path}: not JSON or JSONL: line {exc.lineno}: {exc.msg}") from None


def final_answer(response: str, pattern: str) -> str | None:
    """The last ``ANSWER: <pattern>`` of a response (the actor may revise itself), or None."""
    found = re.findall(r"ANSWER:\s*" + pattern, response)
    return found[-1] if found else None


class FinalAnswerEnvironment(Environment):
    """An environment whose actor ends with ``ANSWER: ...``; subclasses judge that answer."""

    answer_pattern = r"(.+)"  # what follows "ANSWER:" (one group)

    def verify(self, task: Task, response: str) -> Outcome:
        answer = final_answer(response, self.answer_pattern)
        if answer is None:
            return Outcome(False, 0.0, f"no final line in the form the task asks for ({self.instructions!r})")
        ok, feedback = self.judge(task, answer)
        return Outcome(ok, float(ok), feedback)

    def judge(self, task: Task, answer: str) -> tuple[bool, str]:
        """Whether ``answer`` is right, and feedback saying so."""
        raise NotImplementedError


class RewardBench2Environment(FinalAnswerEnvironment):
    """Pick the best of several candidate answers (RewardBench2 rows)."""

    name = "rewardbench2"
    instructions = "Choose the best response. End with a line 'ANSWER: <letter>'."
    answer_pattern = r"\(?([A-Z])\)?"

    def judge(self, task: Task, answer: str) -> tuple[bool, str]:
        ok = answer in task.answer
        return ok, f"picked {answer}: " + ("a preferred response" if ok else "a rejected response")


def load_rewardbench2(path: str | Path, *, val_fraction: float = 0.3,
                      seed: int = 0) -> RewardBench2Environment:
    """Tasks from a local RewardBench2 file; candidates are shuffled per task with ``seed``."""
    path = Path(path)
    tasks = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise EnvironmentDataError(f"{where}: expected an object")
        for key in ("id", "prompt", "chosen", "rejected"):
            if key not in row:
                raise EnvironmentDataError(f"{where}: missing field {key!r}")
        chosen, rejected = row["chosen"], row["rejected"]
        if isinstance(chosen, str):
            chosen = [chosen]
        if not (isinstance(chosen, list) and isinstance(rejected, list) and chosen and rejected):
            raise EnvironmentDataError(f"{where}: 'chosen' and 'rejected' must be non-empty lists of strings")
        candidates = [(c, True) for c in chosen] + [(r, False) for r in rejected]
        random.Random(f"{seed}:{row['id']}").shuffle(candidates)
        letters = string.ascii_uppercase[:len(candidates)]
        body = "\n\n".join(f"({letter}) {text}" for letter, (text, _) in zip(letters, candidates))
        tasks.append(Task(str(row["id"]), f"{row['prompt']}\n\nCandidates:\n{body}",
                          answer={letter for letter, (_, good) in zip(letters, candidates) if good},
                          meta={"subset": row.get("subset", "")}))
    return RewardBench2Environment(*_split(tasks, val_fraction, seed))


class AppWorldEnvironment(FinalAnswerEnvironment):
    """AppWorld-style question tasks checked against ``ground_truth/answer.json``."""

    name = "appworld"
    instructions = "Work out the answer. End with a line 'ANSWER: <answer>'."

    def judge(self, task: Task, answer: str) -> tuple[bool, str]:
        norm = lambda s: re.sub(r"\s+", " ", str(s).strip().lower())  # noqa: E731
        ok = norm(answer) == norm(task.answer)
        return ok, "answer matches" if ok else f"answer {answer.strip()!r} is wrong"


def load_appworld(root: str | Path, *, train_split: str = "train",
                  val_split: str = "dev") -> AppWorldEnvironment:
    """Tasks from an AppWorld-style tree (see the module docstring for the layout)."""
    root = Path(root)

    def split(name: str) -> list[Task]:
        listing = root / "datasets" / f"{name}.txt"
        if not listing.is_file():
            raise EnvironmentDataError(f"{listing}: split file missing")
        tasks = []
        for task_id in listing.read_text().split():
            folder = root / "tasks" / task_id
            try:
                specs = json.loads((folder / "specs.json").read_text())
                answer = json.loads((folder / "ground_truth" / "answer.json").read_text())
            except OSError as exc:
                raise EnvironmentDataError(f"task {task_id}: {exc}") from None
            except json.JSONDecodeError as exc:
                raise EnvironmentDataError(f"task {task_id}: bad JSON: {exc}") from None
            if not isinstance(specs, dict) or not isinstance(specs.get("instruction"), str):
                raise EnvironmentDataError(f"{folder / 'specs.json'}: needs a string 'instruction'")
            supervisor = specs.get("supervisor")
            prompt = specs["instruction"] + (f"\n(You act for {supervisor}.)" if supervisor else "")
            tasks.append(Task(task_id, prompt, answer=answer))
        return tasks

    return AppWorldEnvironment(split(train_split), split(val_split))
