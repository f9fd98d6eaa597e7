"""Synthetic tinyworld tasks: the answer needs what only a sender saw.

Every task builds deterministic `Episode`s from ``(seed, index)``: which agents take part, what
each one observed (only it), the text message each sender sends in TEXT mode, the question the
final receiver is asked, and the gold answer. Secrets are strings over a small alphabet
(lowercase letters by default), one byte = one `TinyTokenizer` token, so a secret of ``length``
characters is a message of ``length`` tokens (8 to `MAX_LENGTH`).

============  ==============================  ===================================================
task          agents (speaking order)         the receiver must output
============  ==============================  ===================================================
``secret``    sender -> receiver              the secret the sender saw
``reverse``   sender -> receiver              the secret reversed
``sort``      sender -> receiver              the secret's characters sorted
``merge``     left, right -> receiver         left half + right half (each sender saw one half)
``pipeline``  planner -> critic -> judger     the planner's secret transformed by the rule only
                                              the critic saw (``copy``, ``reverse`` or ``sort``)
============  ==============================  ===================================================

A sender's text message is what it saw (a critic relays ``"<rule> <planner's message>"``), so
the receiver does the work and, in latent mode, the latent must carry the secret.

    >>> task = make_task("reverse", length=8)
    >>> ep = task.episode(seed=0, index=0)
    >>> print(ep.prompt("receiver"))          # text mode: the sender's message is in the prompt
    sender: khzoycui
    reversed?
    >>> ep.answer
    'iucyozhk'
    >>> task.score("iucyozhk", ep.answer)
    Score(exact=1.0, char=1.0)

Prompts are plain text; a family adapter lays them out with image slots
(``adapter.build_prompt(tokenizer, ep.prompt(name), n_slots)``). In latent mode
(``ep.prompt(name, mode="latent")``) the message lines are left out: the messages arrive
through the image slots instead.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from latentwire.errors import ConfigError

__all__ = [
    "AgentSpec",
    "Episode",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "RULES",
    "SENDER_ASK",
    "STREAMS",
    "Score",
    "TASKS",
    "Task",
    "make_task",
    "mean_score",
    "score",
]

MIN_LENGTH, MAX_LENGTH = 1, 128
#: Episode streams (seeds) that no training job, map fit or anchor file draws from. ``dev``: where
#: recipes are compared and tuned; ``test``: the final figures only (``bench mas --stream test``).
#: Training seeds stay below both (`latentwire.training.ship.check_recipe`).
STREAMS: dict[str, int] = {"dev": 1_000_003, "test": 2_000_003}
DEFAULT_ALPHABET = string.ascii_lowercase
#: Rules a pipeline critic can see, and what each does to the secret.
RULES: dict[str, Callable[[str], str]] = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
}
SENDER_ASK = "message?"  # what every sender is asked: its reply is its text message

Mode = Literal["text", "latent"]


@dataclass(frozen=True)
class Score:
    """``exact``: 1.0 when the prediction equals the gold answer, else 0.0 (a mean over a batch).

    ``char``: matching characters position by position over the longer of the two strings, so a
    missing or an extra character costs as much as a wrong one.
    """

    exact: float
    char: float


def score(prediction: str, gold: str) -> Score:
    """`Score` of one prediction against its gold answer (surrounding whitespace ignored)."""
    prediction, gold = prediction.strip(), gold.strip()
    width = max(len(prediction), len(gold))
    if width == 0:
        return Score(1.0, 1.0)
    same = sum(p == g for p, g in zip(prediction, gold))
    return Score(float(prediction == gold), same / width)


def mean_score(predictions: Sequence[str], golds: Sequence[str]) -> Score:
    """Mean `Score` over a batch (``predictions`` and ``golds`` in the same order)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    if not golds:
        raise ValueError("no predictions to score")
    scores = [score(p, g) for p, g in zip(predictions, golds)]
    return Score(sum(s.exact for s in scores) / len(scores), sum(s.char for s in scores) / len(scores))


@dataclass(frozen=True)
class AgentSpec:
    """One agent of an episode.

    ``name``: how it is addressed (and how its message is labelled in a text prompt).
    ``role``: its pipeline role (``planner``, ``critic``, ``judger``).
    ``observation``: the text only this agent saw ("" if none).
    ``listens_to``: the agents whose messages it receives, in order.
    ``message``: its text message in TEXT mode; None for the final receiver, which answers.
    """

    name: str
    role: str
    observation: str
    listens_to: tuple[str, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class Episode:
    """One deterministic instance of a task: the agents, the receiver's question and the answer.

    ``agents`` are in speaking order; the last one is the receiver that answers ``question``
    with ``answer``. Build prompts with `prompt`; `examples` gives the text-mode training pairs.
    """

    task: str
    length: int
    seed: int
    index: int
    agents: tuple[AgentSpec, ...]
    question: str
    answer: str
    _by_name: dict[str, AgentSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {a.name: a for a in self.agents})

    @property
    def senders(self) -> tuple[AgentSpec, ...]:
        """Every agent that sends a message (all but the receiver), in speaking order."""
        return self.agents[:-1]

    @property
    def receiver(self) -> AgentSpec:
        """The agent that answers the question."""
        return self.agents[-1]

    @property
    def observations(self) -> dict[str, str]:
        """Agent name -> what it alone observed."""
        return {a.name: a.observation for a in self.agents}

    @property
    def messages(self) -> dict[str, str]:
        """Sender name -> its gold text message (what it sends in TEXT mode)."""
        return {a.name: a.message for a in self.senders if a.message is not None}

    def agent(self, name: str) -> AgentSpec:
        """The agent called ``name``; `KeyError` naming the episode's agents otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.task} episodes have no agent {name!r}; agents: "
                           f"{', '.join(self._by_name)}") from None

    def ask(self, name: str) -> str:
        """The last prompt line for agent ``name``: the question for the receiver, else `SENDER_ASK`."""
        return self.question if name == self.receiver.name else SENDER_ASK

    def target(self, name: str) -> str:
        """What agent ``name`` should reply in TEXT mode: its message, or the answer for the receiver."""
        agent = self.agent(name)
        return self.answer if agent is self.receiver else str(agent.message)

    def prompt(self, name: str, messages: Mapping[str, str] | None = None, mode: Mode = "text") -> str:
        """The prompt text of agent ``name``: its observation, what it received, its question.

        TEXT mode writes one ``"<sender>: <message>"`` line per agent it listens to, from
        ``messages`` (default: the gold messages; pass what the senders actually generated for
        an end-to-end run). LATENT mode leaves those lines out: the messages come in through the
        image slots. Lines are joined by newlines.
        """
        if mode not in ("text", "latent"):
            raise ConfigError(f"mode must be 'text' or 'latent', got {mode!r}")
        agent = self.agent(name)
        sent = self.messages if messages is None else messages
        lines = [agent.observation] if agent.observation else []
        if mode == "text":
            for source in agent.listens_to:
                if source not in sent:
                    raise KeyError(f"no message from {source!r} for {name!r}; got {sorted(sent)}")
                lines.append(f"{source}: {sent[source]}")
        lines.append(self.ask(name))
        return "\n".join(lines)

    def examples(self) -> list[tuple[str, str]]:
        """TEXT-mode ``(prompt, target)`` pairs of every agent that writes: senders write their
        message from their observation (and what they received), the receiver its answer."""
        return [(self.prompt(a.name), self.target(a.name)) for a in self.agents]


@dataclass(frozen=True)
class Task:
    """A task family: builds `Episode`s of a given secret ``length`` over ``alphabet``.

    Subclasses set `name` and `question` and implement `_build`. Episodes are a pure function of
    ``(name, length, alphabet, seed, index)``, the same on every machine and Python run.
    """

    length: int = 8
    alphabet: str = DEFAULT_ALPHABET

    name: ClassVar[str] = ""
    question: ClassVar[str] = ""
    min_length: ClassVar[int] = MIN_LENGTH

    def __post_init__(self) -> None:
        if not (self.min_length <= self.length <= MAX_LENGTH):
            raise ConfigError(f"task {self.name!r}: length must be in [{self.min_length}, {MAX_LENGTH}], "
                              f"got {self.length}")
        if len(set(self.alphabet)) < 2 or any(c in self.alphabet for c in " \n:") \
                or not self.alphabet.isascii():
            raise ConfigError(f"alphabet must be at least 2 distinct ASCII characters without space, "
                              f"newline or ':' (they frame prompts), got {self.alphabet!r}")

    def episode(self, seed: int = 0, index: int = 0) -> Episode:
        """Episode ``index`` of the stream ``seed`` (deterministic)."""
        # A str seed is hashed with SHA-512 by `random`, so it is stable across runs and machines
        # (unlike hash()); every field that changes the episode is in it.
        rng = random.Random(f"tinyworld|{self.name}|{self.length}|{self.alphabet}|{seed}|{index}")
        agents, answer = self._build(rng)
        return Episode(self.name, self.length, seed, index, agents, self.question, answer)

    def episodes(self, n: int, seed: int = 0, start: int = 0) -> list[Episode]:
        """Episodes ``start .. start + n - 1`` of the stream ``seed``."""
        return [self.episode(seed, i) for i in range(start, start + n)]

    def secret(self, rng: random.Random, length: int | None = None) -> str:
        """A uniform random string over the alphabet."""
        return "".join(rng.choice(self.alphabet) for _ in range(length or self.length))

    @staticmethod
    def score(prediction: str, gold: str) -> Score:
        """Exact match and per-character accuracy (see `score`)."""
        return score(prediction, gold)

    def _build(self, rng: random.Random) -> tuple[tuple[AgentSpec, ...], str]:
        raise NotImplementedError


def _saw(text: str) -> str:
    return f"saw: {text}"


@dataclass(frozen=True)
class _OneSender(Task):
    """A sender sees a secret and sends it; the receiver answers ``_answer(secret)``."""

    def _answer(self, secret: str) -> str:
        raise NotImplementedError

    def _build(self, rng):
        secret = self.secret(rng)
        agents = (AgentSpec("sender", "planner", _saw(secret), message=secret),
                  AgentSpec("receiver", "judger", "", listens_to=("sender",)))
        return agents, self._answer(secret)


@dataclass(frozen=True)
class SecretTask(_OneSender):
    """The receiver reproduces the secret only the sender saw."""

    name: ClassVar[str] = "secret"
    question: ClassVar[str] = "secret?"

    def _answer(self, secret):
        return secret


@dataclass(frozen=True)
class ReverseTask(_OneSender):
    """The receiver outputs the sender's secret reversed."""

    name: ClassVar[str] = "reverse"
    question: ClassVar[str] = "reversed?"

    def _answer(self, secret):
        return secret[::-1]


@dataclass(frozen=True)
class SortTask(_OneSender):
    """The receiver outputs the characters of the sender's secret in sorted order."""

    name: ClassVar[str] = "sort"
    question: ClassVar[str] = "sorted?"

    def _answer(self, secret):
        return "".join(sorted(secret))


@dataclass(frozen=True)
class MergeTask(Task):
    """Two senders each see one half of the secret; the receiver outputs left half + right half.

    ``length`` is the whole secret; the left sender holds ``length // 2`` characters.
    """

    name: ClassVar[str] = "merge"
    question: ClassVar[str] = "joined?"
    min_length: ClassVar[int] = 2

    def _build(self, rng):
        secret = self.secret(rng)
        left, right = secret[: self.length // 2], secret[self.length // 2:]
        agents = (AgentSpec("left", "planner", _saw(left), message=left),
                  AgentSpec("right", "planner", _saw(right), message=right),
                  AgentSpec("receiver", "judger", "", listens_to=("left", "right")))
        return agents, secret


@dataclass(frozen=True)
class PipelineTask(Task):
    """Planner -> critic -> judger: the planner sees the secret, the critic a rule (`RULES`).

    The critic relays ``"<rule> <planner's message>"``; the judger outputs the secret with the
    rule applied. Neither the planner nor the judger ever sees the rule, and only the planner
    sees the secret.
    """

    name: ClassVar[str] = "pipeline"
    question: ClassVar[str] = "result?"

    def _build(self, rng):
        secret = self.secret(rng)
        rule = rng.choice(sorted(RULES))
        agents = (AgentSpec("planner", "planner", _saw(secret), message=secret),
                  AgentSpec("critic", "critic", f"rule: {rule}", listens_to=("planner",),
                            message=f"{rule} {secret}"),
                  AgentSpec("judger", "judger", "", listens_to=("critic",)))
        return agents, RULES[rule](secret)


#: Task name -> class.
TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    SecretTask, ReverseTask, SortTask, MergeTask, PipelineTask)}


def make_task(name: str, length: int = 8, alphabet: str = DEFAULT_ALPHABET) -> Task:
    """The task called ``name`` (one of `TASKS`) with secrets of ``length`` characters.

    Raises `latentwire.errors.ConfigError` listing the supported tasks for an unknown name, and
    for a length outside ``[1, 128]`` (``[2, 128]`` for merge).
    """
    cls = TASKS.get(name)
    if cls is None:
        raise ConfigError(f"unknown tinyworld task {name!r}; supported: {', '.join(TASKS)}")
    return cls(length=length, alphabet=alphabet)
