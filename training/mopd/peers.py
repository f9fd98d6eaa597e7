"""Peer contexts: what the teacher sees besides the question, built from the rollout's group.

For rollout ``i`` of a group (the n completions sampled for one prompt), the teacher is
re-prompted with the question plus some *other* rollouts of the same group (or, for the
unrelated-prompt control, of another group), each written with a template that says whether it
is a success or a failure. The rollout's own text is never shown: it is excluded by index, and
with ``exclude_identical`` also every peer whose text equals it (an independent sample that
happens to be the same string is otherwise a legitimate peer).

========================  ======================================================================
mode                      context for rollout i (nothing available -> masked: no loss, no score)
========================  ======================================================================
``none``                  the plain question (OPD: the teacher has no peers; never masked)
``positive``              up to ``n_positive`` successful peers (at least one)
``contrastive``           up to ``n_positive`` successes and up to ``n_negative`` failures,
                          failures written with the negative template (at least one success and,
                          when ``require_negative``, at least one failure)
``random_peer``           one peer drawn at random, written as a success whatever its reward
``unrelated``             one success from another prompt's group, written as a success
``privileged``            the gold answer, written as a correct solution (the teacher is told the
                          answer: a supervised signal, not a peer one; needs ``golds``; never
                          masked)
========================  ======================================================================

For ``contrastive`` the success-only prompt with the same picked successes (no failure) is kept
too (`PeerContexts.success_only`): the effect of the failure is the difference between the two.

Which peers are picked is random (seeded by the caller's ``random.Random``), so each rollout
sees a different subset. The templates are settings (`PeerTemplates`); the shipped student was
pre-trained with the defaults, so a teacher re-prompted with other templates reads text it has
never seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from latentwire.errors import ConfigError

__all__ = ["CONTEXT_MODES", "PeerConfig", "PeerContexts", "PeerTemplates", "build_contexts", "render_context"]

CONTEXT_MODES = ("none", "positive", "contrastive", "random_peer", "unrelated", "privileged")


@dataclass(frozen=True)
class PeerTemplates:
    """How a re-prompt is written: ``context`` joins the question and the peer lines (one per
    peer, joined by newlines); ``positive`` / ``negative`` write one peer's solution."""

    context: str = "{question}\n{peers}"
    positive: str = "a correct solution: {solution}"
    negative: str = "a known failed solution, avoid this mistake: {solution}"

    def __post_init__(self) -> None:
        for name, fields in (("context", ("{question}", "{peers}")), ("positive", ("{solution}",)),
                             ("negative", ("{solution}",))):
            for f in fields:
                if f not in getattr(self, name):
                    raise ConfigError(f"peer template {name!r} must contain {f}: {getattr(self, name)!r}")


@dataclass(frozen=True)
class PeerConfig:
    """Which peers a context mode picks (see the module table)."""

    mode: str = "contrastive"
    n_positive: int = 2
    n_negative: int = 1
    require_negative: bool = False
    exclude_identical: bool = False
    templates: PeerTemplates = PeerTemplates()

    def __post_init__(self) -> None:
        if self.mode not in CONTEXT_MODES:
            raise ConfigError(f"unknown context mode {self.mode!r}; choose one of {', '.join(CONTEXT_MODES)}")
        if self.n_positive < 1:
            raise ConfigError(f"n_positive must be >= 1, got {self.n_positive}")
        if self.n_negative < 0 or (self.mode == "contrastive" and self.n_negative < 1):
            raise ConfigError(f"n_negative must be >= 1 for contrastive contexts, got {self.n_negative}")

    @property
    def needs_peers(self) -> bool:
        """True when the mode draws on other rollouts of the same group (group size must be >= 2)."""
        return self.mode in ("positive", "contrastive", "random_peer")


@dataclass
class PeerContexts:
    """The teacher's prompt text per rollout (None where masked) and which peers each one shows."""

    texts: list[str | None]
    peers: list[tuple[int, ...]]  # flat rollout indices shown to each rollout, in shown order
    #: contrastive only: the same prompt without its failed peers (None where masked or no failure shown).
    success_only: list[str | None] = field(default_factory=list)

    @property
    def mask(self) -> list[bool]:
        """True where a rollout has a context (gets a loss and a score)."""
        return [t is not None for t in self.texts]

    @property
    def masked_fraction(self) -> float:
        """Fraction of rollouts without a context."""
        return 1.0 - sum(self.mask) / max(1, len(self.texts))


def render_context(question: str, successes: Sequence[str], failures: Sequence[str],
                   templates: PeerTemplates = PeerTemplates()) -> str:
    """The re-prompt text: ``question`` with ``successes`` then ``failures`` as peer lines.

    The same function writes the pre-training data, so the student learns exactly this format.
    """
    lines = [templates.positive.format(solution=s) for s in successes]
    lines += [templates.negative.format(solution=s) for s in failures]
    if not lines:
        return question
    return templates.context.format(question=question, peers="\n".join(lines))


def build_contexts(questions: Sequence[str], completions: Sequence[str], rewards: Sequence[float],
                   group_size: int, config: PeerConfig, rng: random.Random,
                   success_threshold: float = 1.0, golds: Sequence[object] | None = None) -> PeerContexts:
    """Teacher prompts for every rollout of a batch laid out group by group.

    ``questions`` (and ``golds``, the gold answers, which only mode ``privileged`` reads) have one
    entry per group; ``completions`` / ``rewards`` have ``group_size`` entries per group (rollout
    ``g * group_size + j`` is sample j of question g). A rollout is a success when its reward is
    >= ``success_threshold``.
    """
    if len(completions) != len(questions) * group_size or len(rewards) != len(completions):
        raise ValueError(f"{len(questions)} questions x group size {group_size} != "
                         f"{len(completions)} completions / {len(rewards)} rewards")
    if config.mode == "privileged" and (golds is None or len(golds) != len(questions)):
        raise ValueError(f"context 'privileged' needs one gold answer per question: "
                         f"{len(questions)} questions, {'no' if golds is None else len(golds)} golds")
    success = [r >= success_threshold for r in rewards]
    texts: list[str | None] = []
    shown: list[tuple[int, ...]] = []
    success_only: list[str | None] = []
    for i, own in enumerate(completions):
        group = i // group_size
        question = questions[group]
        success_only.append(None)
        if config.mode in ("none", "privileged"):
            gold = [str(golds[group])] if config.mode == "privileged" else []
            texts.append(render_context(question, gold, [], config.templates))
            shown.append(())
            continue
        if config.mode == "unrelated":
            pool = [k for k in range(len(completions)) if k // group_size != group and success[k]]
        else:
            pool = [k for k in range(group * group_size, (group + 1) * group_size) if k != i]
        if config.exclude_identical:
            pool = [k for k in pool if completions[k] != own]
        good = [k for k in pool if success[k]]
        bad = [k for k in pool if not success[k]]
        picked_good: list[int] = []
        picked_bad: list[int] = []
        if config.mode == "positive":
            picked_good = rng.sample(good, min(config.n_positive, len(good)))
        elif config.mode == "contrastive":
            picked_good = rng.sample(good, min(config.n_positive, len(good)))
            picked_bad = rng.sample(bad, min(config.n_negative, len(bad)))
            if config.require_negative and not picked_bad:
                picked_good = []
        elif pool:  # random_peer (any reward) or unrelated (successes of other groups only)
            picked_good = [rng.choice(pool)]
        if not picked_good:
            texts.append(None)
            shown.append(())
            continue
        good_texts = [completions[k] for k in picked_good]
        bad_texts = [completions[k] for k in picked_bad]
        texts.append(render_context(question, good_texts, bad_texts, config.templates))
        shown.append(tuple(picked_good + picked_bad))
        if picked_bad:
            success_only[-1] = render_context(question, good_texts, [], config.templates)
    return PeerContexts(texts=texts, peers=shown, success_only=success_only)
