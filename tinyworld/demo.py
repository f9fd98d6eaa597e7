"""``latentwire demo``: VLM agents of two families solve a tinyworld task, in latent and text mode.

A sender (Gemma 3 by default) sees a secret; a receiver of another family (Qwen2.5-VL) must
answer with it. Both are tinyworld models pre-trained to write and read these messages as text
(shipped checkpoints). The same pipeline runs twice over the bus, changing only
``PipelineConfig.mode``:

* **text**: the sender generates its message as text, the receiver reads it in its prompt;
* **latent**: the sender's latent thinking steps are encoded by its codec into a shared-space
  `Latent`, the receiver's codec decodes it into its image slots.

The codecs here are untrained (their gate is exactly zero, so a latent reads as a blank image)
until the codec-alignment job trains them; the demo says so and reports what each mode gets.
"""

from __future__ import annotations

from typing import Any

from latentwire.agents.bundle import ModelBundle
from latentwire.agents.pipeline import Episode, PipelineConfig, default_codec, run_pipeline
from latentwire.agents.vlm_agent import Role
from latentwire.errors import ConfigError

from .tasks import TASKS, make_task

# The pre-training format (tinyworld/tasks.py): observation lines, then one
# "sender: message" line per message received, then the question; no system text.
TINYWORLD_ROLE = Role("tinyworld", "", "{observation}\n{received}\n{question}")


def _episodes(task_name: str, n: int, length: int) -> tuple[list[Episode], list[str]]:
    """The task's episodes as pipeline episodes, and the agent names in speaking order."""
    task = make_task(task_name, length=length)
    episodes, names = [], []
    for index, ep in enumerate(task.episodes(n, seed=1234)):
        names = [a.name for a in ep.agents]
        # Senders get their whole prompt (observation and "message?") as their observation;
        # the final agent its observation lines and its question.
        observations = {a.name: ep.prompt(a.name, messages={}, mode="latent") for a in ep.senders}
        final = ep.receiver
        observations[final.name] = final.observation
        episodes.append(Episode(observations=observations, question=ep.ask(final.name),
                                answer=ep.answer, id=f"{task_name}-{index}"))
    return episodes, names


def _loader(families: dict[str, str]) -> Any:
    from .checkpoints import load_pretrained

    cache: dict[str, ModelBundle] = {}

    def load(spec: Any) -> ModelBundle:
        family = families[spec.name]
        if family not in cache:
            model, tokenizer = load_pretrained(family)
            cache[family] = ModelBundle(model, tokenizer, default_codec(model))
        return cache[family]

    return load


async def run_vlm_demo(url: str | None = None, *, task: str = "secret", episodes: int = 8,
                       length: int = 8, families: tuple[str, str] = ("gemma3", "qwen2_5_vl"),
                       latent_steps: int | None = None) -> int:
    """Run the demo; print both modes' answers, accuracy and wall-clock. Returns the exit status."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    batch, names = _episodes(task, episodes, length)
    senders, final = names[:-1], names[-1]
    # The first family speaks (every sender), the second answers.
    by_agent = {name: families[0] for name in senders} | {final: families[1]}
    agents = [(name, by_agent[name], "tinyworld") for name in names]
    topology = "sequential" if len(names) == 2 or task == "pipeline" else "hierarchical"
    where = url or "inproc:// (embedded hub, no server)"
    print(f"latentwire demo: tinyworld task {task!r} (length {length}), {len(batch)} episodes on {where}")
    print("agents: " + ", ".join(f"{n} ({by_agent[n]})" for n in names) + f"; topology {topology}")
    load = _loader(by_agent)
    results = {}
    for mode in ("text", "latent"):
        config = PipelineConfig(agents=agents, mode=mode, topology=topology, latent_steps=latent_steps,
                                max_new_tokens=length + 8, roles={"tinyworld": TINYWORLD_ROLE})
        results[mode] = await run_pipeline(config, batch, models=load, url=url)
    print(f"\n{'episode':<12} {'expected':<12} {'text mode':<14} {'latent mode':<14}")
    for i, ep in enumerate(batch):
        text, latent = results["text"].episodes[i], results["latent"].episodes[i]
        print(f"{ep.id:<12} {ep.answer!s:<12} {_mark(text)}{text.answer[:12]:<13} "
              f"{_mark(latent)}{latent.answer[:12]:<13}")
    print()
    for mode, result in results.items():
        messages = [m for e in result.episodes for m in e.messages]
        kinds = sorted({m.kind for m in messages})
        print(f"{mode:>6} mode: accuracy {result.accuracy:.0%}, {result.mean_seconds * 1000:.0f} ms per "
              f"episode, {result.message_bytes / max(len(batch), 1):.0f} B on the bus per episode "
              f"({'/'.join(kinds)} messages), {result.seconds:.1f} s in all")
    print("note: the codecs are untrained (gate 0: a latent reads as a blank image) until the "
          "codec-alignment job trains them, so latent-mode accuracy is not yet meaningful.")
    return 0


def _mark(result: Any) -> str:
    return "+" if result.correct else "-"
