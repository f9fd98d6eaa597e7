"""``latentwire demo``: VLM agents of two families solve a tinyworld task, in latent and text mode.

A sender (LLaVA by default) sees a secret; a receiver of another family (SmolVLM) must
answer with it. Both are tinyworld models pre-trained to write and read these messages as text
(shipped checkpoints). The same pipeline runs twice over the bus, changing only
``PipelineConfig.mode``:

* **text**: the sender generates its message as text, the receiver reads it in its prompt;
* **latent**: the sender's latent thinking steps are encoded by its codec into a shared-space
  `Latent`, the receiver's codec decodes it into its image slots.

The codecs are the shipped trained shared space (`space`, made by ``latentwire train ship``), or
the one in ``space=DIR``. The default pair was never trained together: the sender's encoder
reaches the receiver's decoder only through the shared-space maps. Beside both modes the demo runs
the no-message control (the receiver with a blank image), so the latent's contribution shows.
"""

from __future__ import annotations

from typing import Any

from latentwire.agents.bundle import ModelBundle
from latentwire.agents.pipeline import Episode, PipelineConfig, default_codec, run_pipeline
from latentwire.agents.vlm_agent import Role
from latentwire.errors import ConfigError

from .space import training_partners
from .tasks import TASKS, make_task, score

# The pre-training format (tinyworld/tasks.py): observation lines, then one
# "sender: message" line per message received, then the question; no system text.
TINYWORLD_ROLE = Role("tinyworld", "", "{observation}\n{received}\n{question}")
EPISODE_SEED = 1234  # the demo's episodes (neither the development nor the test stream)


def _episodes(task_name: str, n: int, length: int) -> tuple[list[Episode], list[str]]:
    """The task's episodes as pipeline episodes, and the agent names in speaking order."""
    task = make_task(task_name, length=length)
    episodes, names = [], []
    for index, ep in enumerate(task.episodes(n, seed=EPISODE_SEED)):
        names = [a.name for a in ep.agents]
        # Senders get their whole prompt (observation and "message?") as their observation;
        # the final agent its observation lines and its question.
        observations = {a.name: ep.prompt(a.name, messages={}, mode="latent") for a in ep.senders}
        final = ep.receiver
        observations[final.name] = final.observation
        episodes.append(Episode(observations=observations, question=ep.ask(final.name),
                                answer=ep.answer, id=f"{task_name}-{index}"))
    return episodes, names


#: The default pair: never trained together, the best such pair on the development stream
#: (docs/benchmarks.md has every pair).
DEFAULT_FAMILIES = ("llava", "smolvlm")


def _loader(families: dict[str, str], space: Any) -> Any:
    from .checkpoints import load_pretrained

    cache: dict[str, ModelBundle] = {}

    def load(spec: Any) -> ModelBundle:
        family = families[spec.name]
        if family not in cache:
            model, tokenizer = load_pretrained(family)
            if space is None:
                cache[family] = ModelBundle(model, tokenizer, default_codec(model))
            else:
                codec, steps = space.codec(family)
                cache[family] = ModelBundle(model, tokenizer, codec, latent_steps=steps)
        return cache[family]

    return load


def _scores(answers: list[str], golds: list[str]) -> tuple[float, float]:
    scored = [score(a, g) for a, g in zip(answers, golds)]
    return (sum(s.exact for s in scored) / len(scored), sum(s.char for s in scored) / len(scored))


def _no_message(load: Any, final: str, task_name: str, n: int, length: int) -> list[str]:
    """The receiver's answers with a blank image and no text message: the control."""
    from types import SimpleNamespace

    bundle = load(SimpleNamespace(name=final))  # the loader reads only the agent's name
    episodes = make_task(task_name, length=length).episodes(n, seed=EPISODE_SEED)
    prompts = [ep.prompt(ep.receiver.name, mode="latent") for ep in episodes]
    return bundle.answer(prompts, max_new_tokens=length + 8)


async def run_vlm_demo(url: str | None = None, *, task: str = "secret", episodes: int = 8,
                       length: int = 8, families: tuple[str, str] = DEFAULT_FAMILIES,
                       latent_steps: int | None = None, space: str | None = None,
                       untrained: bool = False) -> int:
    """Run the demo; print both modes' answers, accuracy and wall-clock. Returns the exit status.

    ``space``: a shared-space folder (default: the shipped one); ``untrained``: fresh codecs instead
    (zero gate: a latent reads as a blank image), the state before any alignment job."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    shared = None
    if not untrained:
        from .space import load_space

        shared = load_space(space, families=families, lengths=[length])  # before any model loads
    batch, names = _episodes(task, episodes, length)
    senders, final = names[:-1], names[-1]
    # The first family speaks (every sender), the second answers.
    by_agent = {name: families[0] for name in senders} | {final: families[1]}
    agents = [(name, by_agent[name], "tinyworld") for name in names]
    topology = "sequential" if len(names) == 2 or task == "pipeline" else "hierarchical"
    where = url or "inproc:// (embedded hub, no server)"
    print(f"latentwire demo: tinyworld task {task!r} (length {length}), {len(batch)} episodes on {where}")
    print("agents: " + ", ".join(f"{n} ({by_agent[n]})" for n in names) + f"; topology {topology}")
    if shared is None:
        print("codecs: untrained (gate 0: a latent reads as a blank image)")
    else:
        where = "shipped" if shared.shipped else str(shared.folder)
        print(f"codecs: {where} shared space (reference {shared.manifest.get('reference', '?')}, trained on "
              f"messages of {', '.join(map(str, shared.lengths or ['?']))} characters); "
              f"{families[0]} -> {families[1]} {_kinship(shared, families)}")
    load = _loader(by_agent, shared)
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
    golds = [str(ep.answer) for ep in batch]
    for mode, result in results.items():
        messages = [m for e in result.episodes for m in e.messages]
        kinds = sorted({m.kind for m in messages})
        exact, chars = _scores([e.answer for e in result.episodes], golds)
        print(f"{mode:>10} mode: {result.mean_seconds * 1000:.0f} ms per episode, "
              f"{result.message_bytes / max(len(batch), 1):.0f} B on the bus per episode "
              f"({'/'.join(kinds)} messages); {exact:.0%} exact, {chars:.0%} of characters")
    if len(senders) == 1:
        exact, chars = _scores(_no_message(load, final, task, episodes, length), golds)
        print(f"{'no message':>10} (control, blank image): {exact:.0%} exact, {chars:.0%} of characters")
    return 0


def _kinship(space: Any, families: tuple[str, str]) -> str:
    sender, receiver = families
    speaks, _ = training_partners(space.record(sender), sender)
    _, reads = training_partners(space.record(receiver), receiver)
    together = speaks == receiver or reads == sender  # as `bench mas` counts co-trained pairs
    return "(co-trained pair)" if together else "(never trained together: they meet only in the shared space)"


def _mark(result: Any) -> str:
    return "+" if result.correct else "-"
