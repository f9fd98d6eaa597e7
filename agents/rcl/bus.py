"""RCL on the bus: a learner agent turns other agents' trajectories into playbook versions.

* Workers publish each finished run as JSON text on ``rcl/trajectories/<agent id>``
  (`publish_trajectory`).
* `LearnerAgent` collects them (bounded queue: a learner that falls behind holds publishers
  back), runs `Optimizer.learn` on every ``batch`` of them, commits a version and publishes the
  playbook JSON on ``rcl/playbook`` (header ``rcl-version``).
* `PlaybookFollower` keeps the newest version received; a worker calls `PlaybookFollower.adopt`
  between tasks, so a task never sees its playbook change half-way. `WorkerAgent` is a ready
  worker: it runs tasks of an environment with an actor backend, adopting versions between tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics

import latentwire

from .backends import LLMBackend
from .envs import Environment, Task, Trajectory
from .errors import EnvironmentDataError, PlaybookError
from .optimizer import Optimizer, run_actor
from .playbook import Playbook

log = logging.getLogger("latentwire.rcl.bus")

TRAJECTORY_TOPIC = "rcl/trajectories"
PLAYBOOK_TOPIC = "rcl/playbook"
VERSION_HEADER = "rcl-version"


async def publish_trajectory(bus: latentwire.Bus, traj: Trajectory) -> None:
    """Publish one trajectory for the learner."""
    await bus.publish(f"{TRAJECTORY_TOPIC}/{bus.agent}", json.dumps(traj.to_dict()))


async def _cancel_background(agent: latentwire.Agent) -> None:
    """`Agent.on_stop` of agents with one background task in ``_task``: cancel and await it."""
    task = agent._task  # type: ignore[attr-defined]
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LearnerAgent(latentwire.Agent):
    """Collects trajectories, learns every ``batch`` of them, publishes each new playbook version."""

    name = "rcl-learner"

    def __init__(self, optimizer: Optimizer, *, batch: int = 8, queue_size: int = 256,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.optimizer, self.batch = optimizer, batch
        self._queue: asyncio.Queue[Trajectory] = asyncio.Queue(queue_size)
        self._task: asyncio.Task | None = None
        self.steps = 0
        self.published: list[int] = []  # versions published, in order

    @latentwire.on(f"{TRAJECTORY_TOPIC}/#")
    async def collect(self, msg: latentwire.Message) -> None:
        """Queue a published trajectory (a malformed one is logged and dropped)."""
        try:
            traj = Trajectory.from_dict(json.loads(msg.text or ""))
        except (json.JSONDecodeError, EnvironmentDataError) as exc:
            log.warning("%s: dropping a bad trajectory from %s: %s", self.id, msg.sender, exc)
            return
        await self._queue.put(traj)

    async def on_start(self) -> None:
        await self._publish()
        self._task = asyncio.create_task(self._learn_loop(), name=f"latentwire[{self.id}].learn")

    on_stop = _cancel_background

    async def _learn_loop(self) -> None:
        opt = self.optimizer
        while True:
            trajs = [await self._queue.get() for _ in range(self.batch)]
            success = statistics.fmean(t.success for t in trajs)
            try:
                result = await opt.learn(opt.book, trajs, f"bus:{self.steps}", success)
                self.steps += 1
                if result.applied or result.pruned:
                    edits = "; ".join(op.describe() for op, _ in result.applied)
                    opt.book.commit(f"bus step {self.steps}: {edits}")
                    await self._publish()
            except latentwire.LatentwireError as exc:  # a bus or RCL failure costs one batch, not the learner
                log.exception("%s: learning step %d failed: %s", self.id, self.steps, exc)

    async def _publish(self) -> None:
        book = self.optimizer.book
        await self.bus.publish(PLAYBOOK_TOPIC, json.dumps(book.to_dict(history=False)),
                               headers={VERSION_HEADER: str(book.version)})
        self.published.append(book.version)


class PlaybookFollower:
    """The newest playbook version seen on the bus; `adopt` switches to it (between tasks)."""

    def __init__(self, book: Playbook | None = None) -> None:
        self.book = book or Playbook()
        self._pending: Playbook | None = None
        self.adopted: list[int] = []

    def offer(self, msg: latentwire.Message) -> None:
        """Keep a published version if it is newer than what we have (bad ones are logged)."""
        try:
            book = Playbook.from_dict(json.loads(msg.text or ""), source=f"playbook from {msg.sender}")
        except (json.JSONDecodeError, PlaybookError) as exc:
            log.warning("ignoring a bad playbook: %s", exc)
            return
        newest = self._pending or self.book
        # Before the first adoption any version counts (the learner may start at version 0, like us).
        if book.version > newest.version or not self.adopted and self._pending is None:
            self._pending = book

    def adopt(self) -> Playbook:
        """Switch to the newest version received (if any); returns the playbook to use."""
        if self._pending is not None:
            self.book, self._pending = self._pending, None
            self.adopted.append(self.book.version)
        return self.book


class WorkerAgent(latentwire.Agent):
    """Runs ``tasks`` one by one with ``actor``, adopting playbook versions between tasks, and
    publishes every trajectory. ``done`` is set after the last task; ``results`` holds the
    (playbook version, success) of each task."""

    def __init__(self, name: str, env: Environment, actor: LLMBackend, tasks: list[Task], *,
                 annotate: bool = False, pause: float = 0.0) -> None:
        super().__init__(name)
        self.env, self.actor, self.tasks = env, actor, tasks
        self.annotate, self.pause = annotate, pause
        self.follower = PlaybookFollower()
        self.results: list[tuple[int, bool]] = []
        self.done = asyncio.Event()
        self._task: asyncio.Task | None = None

    @latentwire.on(PLAYBOOK_TOPIC)
    async def new_version(self, msg: latentwire.Message) -> None:
        """Note a new playbook version (adopted before the next task)."""
        self.follower.offer(msg)

    async def on_start(self) -> None:
        self._task = asyncio.create_task(self._work(), name=f"latentwire[{self.id}].work")

    on_stop = _cancel_background

    async def _work(self) -> None:
        for n, task in enumerate(self.tasks):
            book = self.follower.adopt()
            traj = await run_actor(self.env, self.actor, book, task, f"{self.id}:{n}", annotate=self.annotate)
            self.results.append((book.version, traj.success))
            await publish_trajectory(self.bus, traj)
            await asyncio.sleep(self.pause)  # let the learner and the playbook topic run
        self.done.set()
