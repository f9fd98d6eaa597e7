"""RCL on the bus: three worker agents solve tasks while a learner turns their trajectories into
playbook versions, which the workers adopt between tasks. SIMULATED environment and models
(hidden rules; see latentwire.agents.rcl.simulated), on an embedded hub::

    python examples/rcl_on_bus.py
"""

import asyncio
import statistics

import latentwire
from latentwire.agents.rcl.bus import LearnerAgent, WorkerAgent
from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig
from latentwire.agents.rcl.simulated import SimConfig, SimulatedEnvironment, SimulatedModel

TASKS_PER_WORKER = 40


async def main() -> None:
    env = SimulatedEnvironment(SimConfig(seed=1, noise=0.05))
    model = SimulatedModel(env)  # plays actor, reflector and mutator (SIMULATED)
    cfg = OptimizerConfig(signal_traces=2, credit_assignment=True, aux_losses=True, optimizer_state=True)
    # Every worker runs the same tasks in the same order, so each batch of 6 holds 3 runs of 2 tasks:
    # the learner sees grouped rollouts (contrastive groups when runs disagree).
    learner = LearnerAgent(Optimizer(env, Models(model, model, model), cfg), batch=6)
    workers = [WorkerAgent(f"worker{i}", env, model, env.train[:TASKS_PER_WORKER], annotate=True, pause=0.01)
               for i in range(3)]
    before = statistics.fmean((await learner.optimizer.validate(learner.optimizer.book)).values())
    async with latentwire.Runtime("inproc://").add(learner, *workers):
        await asyncio.wait_for(asyncio.gather(*(w.done.wait() for w in workers)), timeout=60)
    after = statistics.fmean((await learner.optimizer.validate(learner.optimizer.book)).values())

    print(f"environment: {env.label}")
    for w in workers:
        half = len(w.results) // 2
        halves = (w.results[:half], w.results[half:])
        first, second = (statistics.fmean(ok for _, ok in part) for part in halves)
        print(f"{w.id}: {len(w.results)} tasks, adopted versions {w.follower.adopted}, "
              f"success first half {first:.2f}, second half {second:.2f}")
    print(f"learner: {learner.steps} steps, published versions {learner.published}")
    print(f"validation success of the playbook: {before:.2f} before, {after:.2f} after "
          f"({len(learner.optimizer.book)} entries)")
    print(learner.optimizer.book.render_for_actor())


if __name__ == "__main__":
    asyncio.run(main())
