"""Teacher-signal analysis: does the teacher's score of a rollout agree with the verifier?

For every rollout of a batch of groups and every context mode, the teacher is re-prompted with
that mode's peer context (`peers.build_contexts`; the rollout's own text never appears) and
scores the student's sampled tokens. Two scores per rollout:

* ``teacher``: the mean log-probability per token of the completion under the teacher;
* ``advantage``: that minus the student's own mean log-probability (what the sampled-token
  reverse-KL loss pushes along).

Per mode: the AUROC of each score for telling successes (reward >= threshold) from failures
(Mann-Whitney, ties counted half) and the Spearman rank correlation with the reward, over the
rollouts that got a context (``coverage`` says how many did). AUROC 0.5 is chance; a mode whose
teacher follows the verifier scores near 1. Undefined values (one class only, constant input)
are None.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .peers import PeerConfig, build_contexts
from .rollouts import RolloutBatch, completion_logprobs, encode_prompt

__all__ = ["DERIVED_MODES", "ModeScores", "auroc", "format_table", "matched_subset", "mode_figures",
           "rank_average", "score_completions", "score_modes", "spearman", "teacher_signal"]


def rank_average(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values``, ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rank_average(scores)
    rank_sum = sum(r for r, label in zip(ranks, labels) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks); None when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = rank_average(x), rank_average(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def score_completions(model: Any, tokenizer: Any, prompt_texts: Sequence[str], completions: Sequence[Sequence[int]],
                      batch_size: int = 64, temperature: float = 1.0) -> list[float]:
    """Mean log-probability per token of each completion after its prompt text, under ``model``."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(completions), batch_size):
            prompts = [encode_prompt(tokenizer, t) for t in prompt_texts[start:start + batch_size]]
            chunk = completions[start:start + batch_size]
            logp, mask, _ = completion_logprobs(model, prompts, chunk, pad, temperature)
            scores += (logp.sum(1) / mask.sum(1).clamp_min(1)).tolist()
    return scores


#: Modes derived from the contrastive context (same picked peers, scored from its two prompts).
DERIVED_MODES = ("contrastive_success_only", "contrastive_lower_only", "contrastive_reversed")


@dataclass
class ModeScores:
    """One context mode's scores of every rollout of a batch (None where the mode gives no context).

    ``teacher``: mean teacher log-probability per token; ``advantage``: per token, teacher minus
    the student's own (sampling) log-probability, the advantage of the sampled-token loss.
    """

    mode: str
    teacher: list[float | None]
    advantage: list[list[float] | None]

    @property
    def kept(self) -> list[int]:
        """Indices of the rollouts this mode gives a context."""
        return [i for i, t in enumerate(self.teacher) if t is not None]


def _token_logprobs(model: Any, tokenizer: Any, prompt_texts: Sequence[str],
                    completions: Sequence[Sequence[int]], batch_size: int = 64,
                    temperature: float = 1.0) -> list[list[float]]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows: list[list[float]] = []
    with torch.no_grad():
        for start in range(0, len(completions), batch_size):
            prompts = [encode_prompt(tokenizer, t) for t in prompt_texts[start:start + batch_size]]
            chunk = completions[start:start + batch_size]
            logp, _, _ = completion_logprobs(model, prompts, chunk, pad, temperature)
            rows += [logp[r, :len(c)].tolist() for r, c in enumerate(chunk)]
    return rows


def score_modes(teacher: Any, tokenizer: Any, questions: Sequence[str], rollouts: RolloutBatch,
                rewards: Sequence[float], modes: Sequence[str], peers: PeerConfig,
                golds: Sequence[Any] | None = None, seed: int = 0,
                temperature: float = 1.0) -> dict[str, ModeScores]:
    """Every rollout scored by ``teacher`` under each of ``modes`` (`peers.CONTEXT_MODES` or
    `DERIVED_MODES`: ``contrastive_success_only`` is the contrastive prompt without its failed
    peers, only where one was shown; ``contrastive_lower_only`` the per-token lower of the two,
    ``contrastive_reversed`` the failure's effect with its sign flipped: 2 x without - with).
    The contrastive family draws its peers from one seed, so all three see the same successes."""
    own = [rollouts.old_logprobs[i, :len(c)].tolist() for i, c in enumerate(rollouts.completion_ids)]
    cache: dict[str, Any] = {}

    def contexts(mode: str) -> Any:
        if mode not in cache:
            cache[mode] = build_contexts(questions, rollouts.texts, rewards, rollouts.group_size,
                                         replace(peers, mode=mode), random.Random(f"signal|{seed}|{mode}"),
                                         golds=golds)
        return cache[mode]

    def token_scores(texts: Sequence[str | None]) -> list[list[float] | None]:
        kept = [i for i, t in enumerate(texts) if t is not None]
        scored = _token_logprobs(teacher, tokenizer, [texts[i] for i in kept],
                                 [rollouts.completion_ids[i] for i in kept], temperature=temperature)
        out: list[list[float] | None] = [None] * len(texts)
        for i, row in zip(kept, scored):
            out[i] = row
        return out

    per_token: dict[str, list[list[float] | None]] = {}
    for mode in modes:
        if mode == "contrastive_success_only":
            per_token[mode] = token_scores(contexts("contrastive").success_only)
        elif mode in ("contrastive_lower_only", "contrastive_reversed"):
            built = contexts("contrastive")
            full = per_token.get("contrastive") or token_scores(built.texts)
            alone = per_token.get("contrastive_success_only") or token_scores(built.success_only)
            per_token["contrastive"], per_token["contrastive_success_only"] = full, alone

            def combine(x: float, y: float, lower: bool = mode == "contrastive_lower_only") -> float:
                return min(x, y) if lower else 2 * y - x

            per_token[mode] = [f if a is None or f is None else [combine(x, y) for x, y in zip(f, a)]
                               for f, a in zip(full, alone)]
        else:
            per_token[mode] = token_scores(contexts(mode).texts)
    result = {}
    for mode in modes:
        rows = per_token[mode]
        means = [None if r is None else sum(r) / max(1, len(r)) for r in rows]
        advantages = [None if r is None else [t - o for t, o in zip(r, mine)] for r, mine in zip(rows, own)]
        result[mode] = ModeScores(mode, means, advantages)
    return result


def matched_subset(scores: dict[str, ModeScores]) -> list[int]:
    """Indices of the rollouts that every mode in ``scores`` gives a context (scored by all)."""
    sets = [set(s.kept) for s in scores.values()]
    return sorted(set.intersection(*sets)) if sets else []


def mode_figures(scores: ModeScores, rewards: Sequence[float], indices: Sequence[int]) -> dict[str, Any]:
    """AUROC and Spearman of the teacher score and of the mean advantage, and the mean per-token
    advantage of successful and failed rollouts, over ``indices`` (repeats allowed: a resample)."""
    indices = [i for i in indices if scores.teacher[i] is not None]
    labels = [rewards[i] >= 1.0 for i in indices]
    teacher = [scores.teacher[i] for i in indices]
    advantage = [_mean(scores.advantage[i]) for i in indices]

    def tokens(success: bool) -> float | None:
        picked = [i for i, label in zip(indices, labels) if label == success]
        return _mean([a for i in picked for a in scores.advantage[i]])

    return {"n": len(indices), "successes": sum(labels), "auroc": auroc(teacher, labels),
            "spearman": spearman(teacher, [rewards[i] for i in indices]),
            "auroc_advantage": auroc(advantage, labels),
            "spearman_advantage": spearman(advantage, [rewards[i] for i in indices]),
            "token_advantage_success": tokens(True), "token_advantage_failure": tokens(False)}


def teacher_signal(teacher: Any, tokenizer: Any, questions: Sequence[str], rollouts: RolloutBatch,
                   rewards: Sequence[float], modes: Sequence[str], peers: PeerConfig, seed: int = 0,
                   temperature: float = 1.0, golds: Sequence[Any] | None = None,
                   scores: dict[str, ModeScores] | None = None) -> list[dict[str, Any]]:
    """One row per context mode over the rollouts it covers (its own subset): coverage, AUROC and
    Spearman of the teacher and advantage scores (``scores`` from `score_modes`, else scored here)."""
    scores = scores or score_modes(teacher, tokenizer, questions, rollouts, rewards, modes, peers, golds,
                                   seed, temperature)
    rows = []
    for mode in modes:
        kept = scores[mode].kept
        figures = mode_figures(scores[mode], rewards, kept)
        labels = [rewards[i] >= 1.0 for i in kept]
        rows.append({"mode": mode, "coverage": round(len(kept) / max(1, len(rewards)), 4), "n": len(kept),
                     "successes": sum(labels),
                     **{k: _round(figures[k])
                        for k in ("auroc", "spearman", "auroc_advantage", "spearman_advantage")},
                     "mean_teacher_logp_success": _round(_mean([scores[mode].teacher[i] for i, label
                                                                in zip(kept, labels) if label])),
                     "mean_teacher_logp_failure": _round(_mean([scores[mode].teacher[i] for i, label
                                                                in zip(kept, labels) if not label]))})
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The teacher-signal rows as a plain-text table."""
    header = (f"{'context mode':<26}{'coverage':>9}{'n':>6}{'AUROC':>8}{'Spearman':>10}{'AUROC adv':>11}"
              f"{'Spearman adv':>14}")
    lines = [header, "-" * len(header)]

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in rows:
        lines.append(f"{row['mode']:<26}{row['coverage']:>9.2f}{row['n']:>6}{fmt(row['auroc']):>8}"
                     f"{fmt(row['spearman']):>10}{fmt(row['auroc_advantage']):>11}"
                     f"{fmt(row['spearman_advantage']):>14}")
    return "\n".join(lines)
