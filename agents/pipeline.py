"""Multi-agent pipelines of `VLMAgent`s, in latent or text mode from one switch.

::

    config = PipelineConfig(
        agents=[("planner", "gemma3", "planner"), ("critic", "llava", "critic"),
                ("judger", "qwen2_5_vl", "judger")],
        mode="latent",                 # or "text": the same pipeline as a text MAS
        topology="sequential",         # planner -> critic -> judger; "hierarchical": all -> judger
    )
    episode = Episode({"planner": "secret: 42"}, question="what was the secret?")
    result = await run_pipeline(config, [episode], models=tinyworld_models())  # latentwire.tinyworld.models
    result.answers, result.mean_seconds, result.message_bytes

Topologies (the last agent is always the final one, which answers in text):

- ``"sequential"``: each agent waits for the one before it (A -> B -> C);
- ``"hierarchical"``: every other agent speaks at once, the last waits for all of them.

An `Episode` is generic: an observation text per agent (agents without one observe "") and a
question for the final agent; task generators adapt their tasks to it. Episodes of a batch run
one after another (each waits for its answer), over one `latentwire.Runtime` on ``url``.

Models come from ``models``: a mapping from agent name or family to ``(model, tokenizer)``,
``(model, tokenizer, codec)`` or a `ModelBundle`, or a loader called with each `AgentSpec`
(`latentwire.tinyworld.models.tinyworld_models` builds untrained tinyworld models; pass trained
or ``from_pretrained`` ones the same way). Agents without a codec get a fresh (untrained, zero-gate) one.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import latentwire
from latentwire import Control, LatentwireError, Message, Runtime

from .bundle import ModelBundle
from .codec import CodecConfig, UniversalVisualCodec
from .families import FamilyAdapter, adapter_for, supported_model_types
from .vlm_agent import (
    EPISODE_HEADER,
    ERROR,
    MODES,
    OBSERVE,
    AgentConfigError,
    Received,
    Role,
    VLMAgent,
    resolve_role,
)

__all__ = [
    "TOPOLOGIES",
    "AgentSpec",
    "Episode",
    "EpisodeResult",
    "PipelineConfig",
    "PipelineError",
    "PipelineResult",
    "PipelineTimeout",
    "WireMessage",
    "build_agents",
    "default_codec",
    "run_pipeline",
]

#: How agents are wired: a chain, or workers that all report to the last agent.
TOPOLOGIES: tuple[str, ...] = ("sequential", "hierarchical")


class PipelineError(LatentwireError):
    """Raised when an agent of a pipeline failed in an episode; names the agent and the episode."""

    def __init__(self, message: str, *, episode: str, agent: str | None = None) -> None:
        super().__init__(message)
        self.episode = episode
        self.agent = agent


class PipelineTimeout(PipelineError, TimeoutError):
    """Raised when an episode's answer did not come in time; names the agents that had not spoken."""

    def __init__(self, episode: str, timeout: float, silent: Sequence[str]) -> None:
        super().__init__(f"episode {episode!r}: no answer within episode_timeout={timeout:g} s; "
                         f"agents that had not spoken: {', '.join(silent) or 'none'}", episode=episode)
        self.timeout = timeout
        self.silent = tuple(silent)


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a pipeline: its bus id, model family (a ``model_type``) and role name."""

    name: str
    family: str
    role: str


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that defines a pipeline run; ``mode`` is the one latent/text switch.

    ``agents``: `AgentSpec`s or ``(name, family, role)`` tuples, the final agent last.
    ``latent_steps``: m thinking steps per latent message (None: each agent's codec's own, see
    `VLMAgent`). ``max_new_tokens``: the final answer's
    budget (both modes). ``message_tokens``: a text-mode message's budget (default
    ``max_new_tokens``). ``episode_timeout``: seconds an episode may take. ``memory_size``:
    messages an agent remembers. ``topic_prefix``: topics are ``{prefix}/{run id}/msg/{agent}``
    and ``.../answer``. ``roles``: extra roles by name, on top of `ROLES`.
    """

    agents: Sequence[AgentSpec | tuple[str, str, str]]
    mode: str = "latent"
    topology: str = "sequential"
    latent_steps: int | None = None
    max_new_tokens: int = 16
    message_tokens: int | None = None
    episode_timeout: float = 120.0
    memory_size: int = 64
    topic_prefix: str = "pipeline"
    roles: Mapping[str, Role] = field(default_factory=dict)

    def __post_init__(self) -> None:
        specs = tuple(_spec(i, entry) for i, entry in enumerate(self.agents or ()))
        object.__setattr__(self, "agents", specs)
        if not specs:
            raise AgentConfigError("PipelineConfig.agents", list(self.agents),
                                   "a non-empty list of (name, family, role)")
        if self.mode not in MODES:
            raise AgentConfigError("PipelineConfig.mode", self.mode, ", ".join(MODES))
        if self.topology not in TOPOLOGIES:
            raise AgentConfigError("PipelineConfig.topology", self.topology, ", ".join(TOPOLOGIES))
        if self.topology == "hierarchical" and len(specs) < 2:
            raise AgentConfigError("PipelineConfig.agents", [s.name for s in specs],
                                   "at least two agents for topology='hierarchical' (workers, then the judger)")
        families = supported_model_types()
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            if not spec.name or any(c in spec.name for c in "/+#") or spec.name in seen:
                raise AgentConfigError(f"PipelineConfig.agents[{i}].name", spec.name,
                                       "a unique, non-empty agent id without '/', '+' or '#'")
            seen.add(spec.name)
            if spec.family not in families:
                raise AgentConfigError(f"PipelineConfig.agents[{i}].family", spec.family, ", ".join(families))
            resolve_role(spec.role, self.roles, field=f"PipelineConfig.agents[{i}].role")
        for name in ("latent_steps", "max_new_tokens", "memory_size"):
            if name != "latent_steps" or self.latent_steps is not None:
                _positive_int(f"PipelineConfig.{name}", getattr(self, name))
        if self.message_tokens is not None:
            _positive_int("PipelineConfig.message_tokens", self.message_tokens)
        timeout = self.episode_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
                timeout > 0 and math.isfinite(timeout)):
            raise AgentConfigError("PipelineConfig.episode_timeout", timeout, "a positive number of seconds")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#"):
            raise AgentConfigError("PipelineConfig.topic_prefix", self.topic_prefix,
                                   "a non-empty topic without wildcards")

    @property
    def final(self) -> AgentSpec:
        """The agent that answers (the last one)."""
        return self.agents[-1]

    def senders_of(self, name: str) -> tuple[str, ...]:
        """The agents ``name`` waits for in an episode, per the topology."""
        names = [s.name for s in self.agents]
        index = names.index(name)
        if self.topology == "sequential":
            return (names[index - 1],) if index else ()
        return tuple(names[:-1]) if index == len(names) - 1 else ()

    def with_mode(self, mode: str) -> PipelineConfig:
        """The same pipeline in another mode (everything else unchanged)."""
        return replace(self, mode=mode)


def _spec(index: int, entry: Any) -> AgentSpec:
    if isinstance(entry, AgentSpec):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) == 3 and all(isinstance(x, str) for x in entry):
        return AgentSpec(*entry)
    raise AgentConfigError(f"PipelineConfig.agents[{index}]", entry,
                           "an AgentSpec or a (name, family, role) tuple of strings")


def _positive_int(field_name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AgentConfigError(field_name, value, "a positive integer")


# ---- models ------------------------------------------------------------------------------


ModelSource = Mapping[str, Any] | Callable[[AgentSpec], Any]


def default_codec(model: Any, adapter: FamilyAdapter | None = None, *, seed: int = 0) -> UniversalVisualCodec:
    """A fresh codec for ``model`` (untrained: its zero gate reads as a blank image), seeded."""
    import torch

    adapter = adapter or adapter_for(model)
    config = CodecConfig(family=adapter.family, hidden_size=adapter.hidden_size(model),
                         image_slots=adapter.default_slots())
    with torch.random.fork_rng(devices=[]):  # building must not disturb the caller's RNG
        torch.manual_seed(seed)
        return UniversalVisualCodec(config).eval()


def _bundle_for(spec: AgentSpec, models: ModelSource) -> ModelBundle:
    if callable(models) and not isinstance(models, Mapping):
        value = models(spec)
    elif spec.name in models:
        value = models[spec.name]
    elif spec.family in models:
        value = models[spec.family]
    else:
        raise AgentConfigError("models", sorted(models),
                               f"a key for agent {spec.name!r}: its name or its family {spec.family!r}")
    if isinstance(value, ModelBundle):
        return value
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        return ModelBundle(*value)
    raise AgentConfigError(f"models[{spec.name!r}]", type(value).__name__,
                           "a ModelBundle, (model, tokenizer) or (model, tokenizer, codec)")


def build_agents(config: PipelineConfig, models: ModelSource, *,
                 prefix: str | None = None) -> list[VLMAgent]:
    """The pipeline's `VLMAgent`s, wired per the topology under topic ``prefix``.

    Blocking (models may load here); `run_pipeline` calls it in a worker thread.
    """
    prefix = prefix or config.topic_prefix
    codecs: dict[int, UniversalVisualCodec] = {}  # agents sharing a model share its default codec
    agents = []
    for spec in config.agents:
        bundle = _bundle_for(spec, models)
        if spec.family not in bundle.adapter.model_types:
            raise AgentConfigError(f"models[{spec.name!r}]", bundle.family,
                                   f"a {spec.family} model, as PipelineConfig.agents says")
        if bundle.codec is None:
            codec = codecs.get(id(bundle.model))
            if codec is None:
                codec = codecs[id(bundle.model)] = default_codec(bundle.model, bundle.adapter)
            bundle = replace(bundle, codec=codec)  # a new bundle: the caller's stays as it was
        final = spec is config.final
        senders = config.senders_of(spec.name)
        agents.append(VLMAgent(
            spec.name, bundle, role=resolve_role(spec.role, config.roles), mode=config.mode,
            topics=[f"{prefix}/msg/{s}" for s in senders], wait_for=senders,
            publish_to=f"{prefix}/answer" if final else f"{prefix}/msg/{spec.name}", final=final,
            latent_steps=config.latent_steps, max_new_tokens=config.max_new_tokens,
            message_tokens=config.message_tokens, memory_size=config.memory_size))
    return agents


# ---- episodes and results ----------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    """One task instance: an observation per agent name, the final agent's question, and
    optionally the expected answer (for accuracy) and an id (for your records)."""

    observations: Mapping[str, str] = field(default_factory=dict)
    question: str = ""
    answer: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class WireMessage:
    """A message between agents as the bus carried it; ``nbytes`` is its payload size."""

    sender: str
    topic: str
    kind: str  # "latent" or "text"
    nbytes: int
    space: str | None = None
    family: str | None = None
    shape: tuple[int, ...] | None = None

    @classmethod
    def of(cls, msg: Message) -> WireMessage:
        """Describe a received message."""
        if msg.latent is not None:
            lat = msg.latent
            return cls(msg.sender, msg.topic, "latent", lat.nbytes, lat.space, lat.family, lat.shape)
        return cls(msg.sender, msg.topic, "text", len((msg.text or "").encode()))


@dataclass
class EpisodeResult:
    """What one episode produced.

    ``seconds``: wall-clock from handing out the observations to the answer's arrival.
    ``messages``: the inter-agent messages on the bus. ``received``: per agent, what it read.
    ``model_seconds``: per agent, time in model calls.
    """

    id: str
    answer: str
    expected: str | None
    seconds: float
    messages: list[WireMessage]
    received: dict[str, list[Received]]
    model_seconds: dict[str, float]

    @property
    def message_bytes(self) -> int:
        """Payload bytes the agents sent each other (the answer not included)."""
        return sum(m.nbytes for m in self.messages)

    @property
    def correct(self) -> bool | None:
        """Whether the answer matches the expected one (stripped); None without an expected answer."""
        return None if self.expected is None else self.answer.strip() == self.expected.strip()


@dataclass
class PipelineResult:
    """The episodes of one run, in order, with the run's mode, topology and total wall-clock
    (``seconds``, model loading and connecting included)."""

    mode: str
    topology: str
    episodes: list[EpisodeResult]
    seconds: float

    @property
    def answers(self) -> list[str]:
        """The final answers, one per episode."""
        return [e.answer for e in self.episodes]

    @property
    def accuracy(self) -> float | None:
        """Share of episodes answered correctly, over those with an expected answer (else None)."""
        graded = [e.correct for e in self.episodes if e.correct is not None]
        return sum(graded) / len(graded) if graded else None

    @property
    def mean_seconds(self) -> float:
        """Mean wall-clock per episode."""
        return sum(e.seconds for e in self.episodes) / max(len(self.episodes), 1)

    @property
    def message_bytes(self) -> int:
        """Payload bytes the agents sent each other, over all episodes."""
        return sum(e.message_bytes for e in self.episodes)

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a JSON-ready dict."""
        return {"mode": self.mode, "topology": self.topology, "episodes": len(self.episodes),
                "accuracy": self.accuracy, "mean_seconds": self.mean_seconds,
                "message_bytes": self.message_bytes, "seconds": self.seconds}


# ---- running -----------------------------------------------------------------------------


async def run_pipeline(config: PipelineConfig, episodes: Episode | Sequence[Episode], *,
                       models: ModelSource, url: str | None = None,
                       **connect_options: Any) -> PipelineResult:
    """Run ``episodes`` (one after another) through the pipeline on the bus at ``url``.

    ``url`` defaults to ``$LATENTWIRE_URL`` or ``inproc://``; ``connect_options`` go to every
    connection (e.g. ``tls_ca`` for ``grpcs://``). ``models``: see the module docs. Raises `PipelineError` when an agent fails and `PipelineTimeout` when
    an episode takes longer than ``config.episode_timeout``.
    """
    started = time.perf_counter()
    batch = [episodes] if isinstance(episodes, Episode) else list(episodes)
    names = [s.name for s in config.agents]
    for i, episode in enumerate(batch):
        unknown = sorted(set(episode.observations) - set(names))
        if unknown:
            raise AgentConfigError(f"episodes[{i}].observations", unknown,
                                   f"observations for the pipeline's agents: {', '.join(names)}")
    run_id = uuid.uuid4().hex[:8]
    prefix = f"{config.topic_prefix}/{run_id}"
    agents = await asyncio.to_thread(build_agents, config, models, prefix=prefix)
    results = []
    runtime = Runtime(url, **connect_options).add(*agents)
    driver = latentwire.connect(url, agent=f"{config.topic_prefix.replace('/', '-')}-driver-{run_id}",
                                **connect_options)
    async with runtime, driver as bus, bus.subscribe(f"{prefix}/#") as sub:
        for index, episode in enumerate(batch):
            results.append(await _run_episode(config, agents, bus, sub, prefix, str(index), episode))
    return PipelineResult(config.mode, config.topology, results, time.perf_counter() - started)


async def _run_episode(config: PipelineConfig, agents: list[VLMAgent], bus: latentwire.Bus,
                       sub: latentwire.Subscription, prefix: str, key: str, episode: Episode) -> EpisodeResult:
    """Hand out the observations, then read the bus until the answer of episode ``key`` arrives."""
    started = time.perf_counter()
    final = config.final.name
    for agent in agents:
        args = {"episode": key, "observation": episode.observations.get(agent.id, "")}
        if agent.id == final:
            args["question"] = episode.question
        await bus.send(agent.id, control=Control(kind=OBSERVE, args=args), headers={EPISODE_HEADER: key})
    messages: list[WireMessage] = []
    deadline = started + config.episode_timeout
    while True:
        try:
            msg = await sub.receive(timeout=max(deadline - time.perf_counter(), 0.0))
        except TimeoutError:
            raise PipelineTimeout(key, config.episode_timeout,
                                  [a.id for a in agents if not a.has_spoken(key)]) from None
        if msg.headers.get(EPISODE_HEADER) != key:
            continue  # a straggler of an earlier episode
        if msg.control is not None:
            if msg.control.kind == ERROR:
                agent = str(msg.control.args.get("agent", msg.sender))
                raise PipelineError(f"episode {key!r}: agent {agent!r} failed: "
                                    f"{msg.control.args.get('error')}", episode=key, agent=agent)
            continue
        if msg.topic == f"{prefix}/answer":
            answer = msg.text or ""
            break
        messages.append(WireMessage.of(msg))
    seconds = time.perf_counter() - started
    return EpisodeResult(
        id=episode.id if episode.id is not None else key, answer=answer, expected=episode.answer,
        seconds=seconds, messages=messages,
        received={a.id: a.received_for(key) for a in agents},
        model_seconds={a.id: sum(u.seconds for u in a.utterances if u.episode == key) for a in agents})
