"""`VLMAgent`: a vision-language model on the bus that speaks latents or text.

A `VLMAgent` wraps one `ModelBundle`: a family model with its adapter, its Universal Visual Codec
and a tokenizer.
It plays a `Role` (planner, critic, refiner, judger, solver: a system text and a prompt template,
data not code) and speaks in one of two `MODES`:

- ``"latent"``: it runs `latent_io.speak` and publishes a shared-space `Latent`;
- ``"text"``: it generates text with `latent_io.listen` and publishes the text (text MAS).

Whatever it *receives* it reads the same way in both modes: received texts are placed in its
prompt, received latents are decoded by its codec into its image slots. The mode only decides
what it says. A ``final`` agent (judger/solver) always answers in text, read with `listen`.

How an agent is driven, per episode (the ``lw-episode`` header groups messages)::

    driver --observe--> agent          direct Control("observe", {episode, observation, question})
    sender --latent/text--> topics     remembered, with sender, in a bounded memory
    agent speaks when it has its observation and has heard from every sender in ``wait_for``
    agent --latent/text/answer--> publish_to   (header lw-episode)

A request (``bus.request(agent, "observation")``) makes it speak at once with what it has
received for that episode; the reply is what it said. Model calls are blocking CPU/GPU work:
they run in a worker thread (``asyncio``'s default executor or the one given), never on the
event loop, and calls on one model object are serialised by a per-model lock, so several
agents may share a model.

Fair comparisons: prompts, the EOS stop rule and token budgets are the same in both modes; the
prompt keeps its image slots in text mode too (a blank image), so only the channel differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

from latentwire import Agent, Control, Latent, Message, on_direct

from .bundle import ModelBundle
from .codec import UniversalVisualCodec
from .errors import AgentConfigError
from .families import FamilyAdapter, Prompt
from .latent_io import listen, speak

__all__ = [
    "EPISODE_HEADER",
    "ERROR",
    "MODES",
    "OBSERVE",
    "ROLES",
    "AgentConfigError",
    "Received",
    "Role",
    "Utterance",
    "VLMAgent",
    "model_lock",
    "resolve_role",
]

log = logging.getLogger("latentwire.vlm_agent")

#: Header naming the episode a message belongs to (messages without it belong to episode "").
EPISODE_HEADER = "lw-episode"
#: Control kind that hands an agent its observation (args: episode, observation, question).
OBSERVE = "observe"
#: Control kind an agent publishes when it failed to speak (args: agent, episode, error).
ERROR = "error"
#: How an agent speaks: a shared-space latent, or generated text.
MODES: tuple[str, ...] = ("latent", "text")

# The user turn of every role unless a role brings its own: what was received (text mode),
# the agent's own observation, then the question (final agents). Empty parts leave no blank line.
DEFAULT_TEMPLATE = "{received}\n{observation}\n{question}"


@dataclass(frozen=True)
class Role:
    """What an agent is asked to do: a system text and a user-turn template.

    ``template`` takes ``{observation}``, ``{question}`` and ``{received}`` (the texts the
    agent received, one ``sender: text`` line each; empty in latent mode, where they arrive
    through the image slots). Lines left empty are dropped.
    """

    name: str
    system: str
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        try:
            self.render("o", "q", [("s", "t")])
        except (KeyError, IndexError, ValueError) as exc:
            raise AgentConfigError("Role.template", self.template, "a str.format template with only "
                                   "{observation}, {question} and {received}") from exc

    def render(self, observation: str = "", question: str = "",
               received: Sequence[tuple[str, str]] = ()) -> str:
        """The user turn for this role."""
        heard = "\n".join(f"{sender}: {text}" for sender, text in received)
        text = self.template.format(observation=observation, question=question, received=heard)
        return "\n".join(line for line in text.splitlines() if line.strip())


#: The built-in roles, by name. Pass ``roles=`` to `VLMAgent` (or `PipelineConfig`) for more.
ROLES: dict[str, Role] = {role.name: role for role in (
    Role("planner", "You are the planner. Read your observation and think out a plan that lets "
                    "the next agent answer."),
    Role("critic", "You are the critic. Check what you received against your observation and "
                   "point out what is wrong or missing."),
    Role("refiner", "You are the refiner. Improve what you received using your observation."),
    Role("judger", "You are the judger. Use every message you received and your observation to "
                   "answer the question. Reply with the answer only."),
    Role("solver", "You are the solver. Answer the question using what you received. Reply with "
                   "the answer only."),
)}


def resolve_role(role: str | Role, roles: Mapping[str, Role] | None = None, *,
                 field: str = "role") -> Role:
    """The `Role` called ``role`` (from ``roles``, then `ROLES`), or raise `AgentConfigError`."""
    if isinstance(role, Role):
        return role
    known = {**ROLES, **(roles or {})}
    if role not in known:
        raise AgentConfigError(field, role, ", ".join(known))
    return known[role]


@dataclass(frozen=True)
class Received:
    """One message an agent received: who sent it, on which topic, for which episode, and its body."""

    sender: str
    topic: str
    episode: str
    text: str | None = None
    latent: Latent | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def kind(self) -> str:
        """``"latent"`` or ``"text"``."""
        return "latent" if self.latent is not None else "text"


@dataclass(frozen=True)
class Utterance:
    """One thing an agent said: a message (latent or text) or a final ``"answer"``.

    ``seconds`` is the model time (in the worker thread, lock wait excluded); ``nbytes`` the
    payload bytes on the wire (the latent's tensor bytes or the text's UTF-8).
    """

    episode: str
    kind: str
    text: str | None
    latent: Latent | None
    seconds: float
    nbytes: int


# One lock per model object: a model is not safe to run from two threads at once (shared KV
# caches, adapter caches), and several agents may wrap the same model.
_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.Lock:
    """The lock that serialises calls on ``model`` (one per model object, process-wide)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


@dataclass
class _Episode:
    observation: str | None = None
    question: str = ""
    spoken: bool = False


class VLMAgent(Agent):
    """An `Agent` wrapping a VLM that speaks latents (``mode="latent"``) or text (``"text"``).

    Arguments:

    - ``name``: agent id on the bus. ``model``: a transformers VLM of a supported family, or a
      `ModelBundle` (then without ``tokenizer`` and ``codec``: the bundle has them).
      ``tokenizer``: its tokenizer or processor (tinyworld's `TinyTokenizer` works).
    - ``role``: a `Role` or the name of one (`ROLES`, plus ``roles``).
    - ``mode``: one of `MODES`: how a non-final agent speaks.
    - ``codec``: the family's `UniversalVisualCodec`; needed to speak latents and to read
      received latents. Its ``image_slots`` sets the prompt's slot count (else the adapter's
      default), in both modes.
    - ``topics``: topic filters it listens on. ``wait_for``: senders it must hear from in an
      episode before it speaks. ``publish_to``: the topic it publishes what it says (or its answer).
    - ``final``: answer the episode's question in text instead of passing a message on.
    - ``latent_steps``: m thinking steps per latent message; default: the bundle's (the m the
      codec was trained with, its config's ``latent_steps``; a codec reads other m badly; else 4).
      ``max_new_tokens``: answer budget.
      ``message_tokens``: budget of a text-mode message (default ``max_new_tokens``).
    - ``memory_size``: received messages (and episodes) remembered; older ones are forgotten.
    - ``executor``: where model calls run (default: asyncio's default thread pool).
    """

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any = None,
        *,
        role: str | Role = "planner",
        mode: str = "latent",
        codec: UniversalVisualCodec | None = None,
        topics: Sequence[str] = (),
        wait_for: Sequence[str] = (),
        publish_to: str | None = None,
        final: bool = False,
        latent_steps: int | None = None,
        max_new_tokens: int = 16,
        message_tokens: int | None = None,
        memory_size: int = 64,
        roles: Mapping[str, Role] | None = None,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(name)
        if mode not in MODES:
            raise AgentConfigError("mode", mode, ", ".join(MODES))
        self.role = resolve_role(role, roles)
        for field_name, value in (("max_new_tokens", max_new_tokens), ("memory_size", memory_size)):
            _check_positive(field_name, value)
        if message_tokens is not None:
            _check_positive("message_tokens", message_tokens)
        #: The model this agent runs, with its tokenizer, adapter, codec, latent steps and ids.
        self.bundle = _bundle(model, tokenizer, codec, latent_steps)
        self.mode = mode
        self.final = final
        if mode == "latent" and not final and self.codec is None:
            raise AgentConfigError("codec", None, f"a UniversalVisualCodec for {self.family}: "
                                   f"agent {name!r} speaks latents (mode='latent')")
        self.topics = tuple(topics)
        self.wait_for = tuple(wait_for)
        self.publish_to = publish_to or f"agents/{name}"
        self.max_new_tokens = max_new_tokens
        self.message_tokens = message_tokens or max_new_tokens
        #: Received messages, oldest first, at most ``memory_size``.
        self.memory: deque[Received] = deque(maxlen=memory_size)
        #: What this agent said, oldest first, at most ``memory_size``.
        self.utterances: deque[Utterance] = deque(maxlen=memory_size)
        self._episodes: OrderedDict[str, _Episode] = OrderedDict()
        self._memory_size = memory_size
        self._executor = executor

    @property
    def family(self) -> str:
        """The model's family (its adapter's canonical ``model_type``)."""
        return self.bundle.family

    @property
    def model(self) -> Any:
        """The transformers model (``bundle.model``)."""
        return self.bundle.model

    @property
    def tokenizer(self) -> Any:
        """Its tokenizer or processor (``bundle.tokenizer``)."""
        return self.bundle.tokenizer

    @property
    def adapter(self) -> FamilyAdapter:
        """Its family adapter (``bundle.adapter``)."""
        return self.bundle.adapter

    @property
    def codec(self) -> UniversalVisualCodec | None:
        """Its codec (``bundle.codec``)."""
        return self.bundle.codec

    @property
    def latent_steps(self) -> int:
        """m thinking steps per latent message (``bundle.latent_steps``)."""
        return self.bundle.latent_steps

    def __repr__(self) -> str:
        return (f"<VLMAgent {self.id!r} {self.family} role={self.role.name} mode={self.mode}"
                f"{' final' if self.final else ''}>")

    # ---- memory ---------------------------------------------------------------------------

    def received_for(self, episode: str) -> list[Received]:
        """What the agent received in ``episode``: ``wait_for`` senders first (in that order), then
        any other senders in arrival order."""
        items = [r for r in self.memory if r.episode == episode]
        rank = {sender: i for i, sender in enumerate(self.wait_for)}
        return sorted(items, key=lambda r: (rank.get(r.sender, len(rank)), r.at))

    def has_spoken(self, episode: str) -> bool:
        """Whether the agent already spoke (or answered) in ``episode``."""
        state = self._episodes.get(episode)
        return bool(state and state.spoken)

    def _episode(self, episode: str) -> _Episode:
        state = self._episodes.get(episode)
        if state is None:
            state = self._episodes[episode] = _Episode()
            while len(self._episodes) > self._memory_size:
                self._episodes.popitem(last=False)  # bounded: forget the oldest episode
        return state

    def _remember(self, msg: Message) -> None:
        if msg.text is None and msg.latent is None:
            return
        self.memory.append(Received(sender=msg.sender, topic=msg.topic, text=msg.text, latent=msg.latent,
                                    episode=msg.headers.get(EPISODE_HEADER, "")))

    # ---- the model, off the event loop ------------------------------------------------------

    def prompt(self, observation: str = "", question: str = "",
               received: Sequence[Received] = ()) -> Prompt:
        """The token ids the agent reads: its role's turn with the received texts, and image slots."""
        texts = [(r.sender, r.text) for r in received if r.text is not None]
        user = self.role.render(observation, question, texts)
        return self.bundle.prompts([user], system=self.role.system)[0]

    async def respond(self, observation: str = "", question: str = "",
                      received: Sequence[Received] = ()) -> Latent | str:
        """What the agent says after reading ``observation``, ``question`` and ``received``.

        A final agent returns its text answer; otherwise a shared-space `Latent` (latent mode) or
        generated text (text mode). Runs the model in a worker thread; the event loop stays free.
        """
        utterance = await self._respond("", observation, question, received)
        return utterance.latent if utterance.latent is not None else utterance.text or ""

    async def _respond(self, episode: str, observation: str, question: str,
                       received: Sequence[Received]) -> Utterance:
        b = self.bundle
        prompt = self.prompt(observation, question, received)
        latents = [r.latent for r in received if r.latent is not None]
        if latents and b.codec is None:
            raise AgentConfigError("codec", None, f"a UniversalVisualCodec for {self.family}: agent "
                                   f"{self.id!r} received latents from "
                                   f"{sorted({r.sender for r in received if r.latent is not None})}")
        if self.final or self.mode == "text":
            budget = self.max_new_tokens if self.final else self.message_tokens
            kind = "answer" if self.final else "text"
            (ids,), seconds = await self._call(
                listen, b.model, b.adapter, b.codec if latents else None, [prompt],
                received=[latents] if latents else None, max_new_tokens=budget,
                pad_id=b.pad_id, eos_id=b.eos_id)
            text = b.tokenizer.decode(ids, skip_special_tokens=True)
            return Utterance(episode, kind, text, None, seconds, len(text.encode()))
        speech, seconds = await self._call(speak, b.model, b.adapter, b.codec, [prompt], b.latent_steps,
                                           pad_id=b.pad_id, received=[latents] if latents else None)
        latent = speech.latents[0]
        return Utterance(episode, "latent", None, latent, seconds, latent.nbytes)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """Run ``fn`` in the executor under the model's lock; return its result and model seconds."""
        lock = model_lock(self.model)

        def locked() -> tuple[Any, float]:
            with lock:
                start = time.perf_counter()
                return fn(*args, **kwargs), time.perf_counter() - start

        return await asyncio.get_running_loop().run_in_executor(self._executor, locked)

    # ---- bus -----------------------------------------------------------------------------

    def topic_handlers(self) -> list:
        # The topics come from configuration, not from @on decorators.
        return [(tuple(self.topics), self._on_topic)] if self.topics else []

    async def _on_topic(self, msg: Message) -> None:
        if msg.sender == self.id:
            return  # our own message, seen through a broad filter
        if msg.control is not None:
            log.debug("%s: ignoring control %r from %s", self.id, msg.control.kind, msg.sender)
            return
        self._remember(msg)
        await self._maybe_speak(msg.headers.get(EPISODE_HEADER, ""))

    @on_direct
    async def direct(self, msg: Message) -> Latent | str | None:
        """Direct traffic: an ``observe`` control starts an episode here; a request makes the
        agent speak at once with what it received in that episode (the request's text is a final
        agent's question, any other agent's observation; the reply is what it says); any other
        text or latent is remembered as received."""
        episode = msg.headers.get(EPISODE_HEADER, "")
        if msg.control is not None and msg.control.kind == OBSERVE:
            args = msg.control.args
            episode = str(args.get("episode", episode))
            state = self._episode(episode)
            state.observation = str(args.get("observation", ""))
            state.question = str(args.get("question", ""))
            await self._maybe_speak(episode)
            return None
        if msg.is_request:
            if msg.latent is not None:
                self._remember(msg)
            # The request's text is what the agent is asked now: a final agent's question, any
            # other agent's observation; the episode's observe control may have given the rest.
            state = self._episodes.get(episode) or _Episode()
            observation, question = state.observation or "", state.question
            if self.final:
                question = msg.text or question
            else:
                observation = msg.text or observation
            said = await self._respond(episode, observation, question, self.received_for(episode))
            self.utterances.append(said)
            return said.latent if said.latent is not None else said.text or ""
        if msg.control is not None:
            log.debug("%s: ignoring direct control %r from %s", self.id, msg.control.kind, msg.sender)
            return None
        self._remember(msg)
        await self._maybe_speak(episode)
        return None

    def _ready(self, episode: str) -> bool:
        state = self._episodes.get(episode)
        if state is None or state.spoken or state.observation is None:
            return False
        heard = {r.sender for r in self.memory if r.episode == episode}
        return all(sender in heard for sender in self.wait_for)

    async def _maybe_speak(self, episode: str) -> None:
        if not self._ready(episode):
            return
        state = self._episode(episode)
        state.spoken = True  # before the first await: one trigger per episode, whichever handler
        try:
            said = await self._respond(episode, state.observation or "", state.question,
                                       self.received_for(episode))
        except Exception as exc:
            # Tell whoever watches the output topic at once, instead of leaving it to time out.
            with contextlib.suppress(Exception):
                await self.bus.publish(self.publish_to, control=Control(kind=ERROR, args={
                    "agent": self.id, "episode": episode, "error": f"{type(exc).__name__}: {exc}"}),
                    headers={EPISODE_HEADER: episode})
            raise
        self.utterances.append(said)
        headers = {EPISODE_HEADER: episode, "lw-kind": said.kind, "lw-role": self.role.name}
        if said.latent is not None:
            await self.bus.publish(self.publish_to, latent=said.latent, headers=headers)
        else:
            await self.bus.publish(self.publish_to, said.text or "", headers=headers)


def _bundle(model: Any, tokenizer: Any, codec: UniversalVisualCodec | None,
            latent_steps: int | None) -> ModelBundle:
    """The agent's bundle: ``model`` itself when it is one (``latent_steps`` overriding its own),
    else built from the parts."""
    if isinstance(model, ModelBundle):
        for field_name, value in (("tokenizer", tokenizer), ("codec", codec)):
            if value is not None:
                raise AgentConfigError(field_name, type(value).__name__,
                                       "None when the model is a ModelBundle (the bundle has its own)")
        return model if latent_steps is None else replace(model, latent_steps=latent_steps)
    if tokenizer is None:
        raise AgentConfigError("tokenizer", None, "the model's tokenizer or processor")
    return ModelBundle(model, tokenizer, codec, latent_steps)


def _check_positive(field_name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AgentConfigError(field_name, value, "a positive integer")
