"""Failure replay and batch sampling: which tasks the next step runs.

`ReplayBuffer` keeps failed training tasks and mixes them back into batches (``ratio`` of each
batch); a task graduates after ``graduate_after`` consecutive passes and is evicted as stuck
after ``max_attempts`` replays without graduating. `Sampler` draws the fresh part of a batch:
``uniform`` (shuffled epochs), ``curriculum`` (easy tasks first, harder ones admitted as
iterations pass; difficulty is ``Task.meta["difficulty"]``, else prompt length) or ``hard``
(tasks failed most often first).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from .envs import Task

STRATEGIES = ("uniform", "curriculum", "hard")


@dataclass
class _Slot:
    passes: int = 0  # consecutive passes since it entered or last failed
    attempts: int = 0  # replays so far


@dataclass
class ReplayBuffer:
    """Failed tasks waiting to be revisited (bounded by ``capacity``; oldest dropped first)."""

    capacity: int = 64
    ratio: float = 0.5
    graduate_after: int = 2
    max_attempts: int = 6
    slots: dict[str, _Slot] = field(default_factory=dict)
    graduated: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)

    def record(self, task_id: str, success: bool) -> None:
        """Note the outcome of a run of ``task_id`` (replayed or fresh)."""
        slot = self.slots.get(task_id)
        if slot is None:
            if not success:
                self.slots[task_id] = _Slot()
                while len(self.slots) > self.capacity:
                    self.slots.pop(next(iter(self.slots)))
            return
        slot.passes = slot.passes + 1 if success else 0
        if slot.passes >= self.graduate_after:
            del self.slots[task_id]
            self.graduated.append(task_id)

    def draw(self, n: int, rng: random.Random) -> list[str]:
        """Up to ``round(n * ratio)`` task ids to replay (each counts as an attempt)."""
        k = min(len(self.slots), round(n * self.ratio))
        chosen = rng.sample(sorted(self.slots), k)
        for task_id in chosen:
            slot = self.slots[task_id]
            slot.attempts += 1
            if slot.attempts > self.max_attempts:
                del self.slots[task_id]
                self.evicted.append(task_id)
        return chosen

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.slots

    def to_dict(self) -> dict[str, Any]:
        """For checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplayBuffer:
        """Rebuild from `to_dict`."""
        data = dict(data)
        data["slots"] = {k: _Slot(**v) for k, v in data["slots"].items()}
        return cls(**data)


def difficulty(task: Task) -> float:
    """A task's difficulty for the curriculum: ``meta["difficulty"]`` or its prompt length."""
    return float(task.meta.get("difficulty", len(task.prompt)))


@dataclass
class Sampler:
    """Draws the fresh tasks of a batch; ``failures`` counts failures per task for ``hard``."""

    strategy: str = "uniform"
    warmup: int = 10  # curriculum: iterations until every task is admitted
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"sampling strategy {self.strategy!r} not one of {STRATEGIES}")

    def draw(self, tasks: list[Task], n: int, iteration: int, rng: random.Random,
             exclude: set[str] = frozenset()) -> list[Task]:  # type: ignore[assignment]
        """``n`` tasks (fewer if the pool is smaller), none of ``exclude``."""
        pool = [t for t in tasks if t.id not in exclude]
        if self.strategy == "curriculum":
            pool.sort(key=difficulty)
            admitted = max(n, round(len(pool) * min(1.0, (iteration + 1) / self.warmup)))
            pool = pool[:admitted]
        elif self.strategy == "hard":
            rng.shuffle(pool)
            pool.sort(key=lambda t: -self.failures.get(t.id, 0))
            return pool[:n]
        return rng.sample(pool, min(n, len(pool)))

    def record(self, task_id: str, success: bool) -> None:
        """Count a failure (for ``hard``)."""
        if not success:
            self.failures[task_id] = self.failures.get(task_id, 0) + 1
