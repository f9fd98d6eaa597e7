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
from dataclasses import replace
from typing import Any

from .peers import PeerConfig, build_contexts
from .rollouts import RolloutBatch, completion_logprobs, encode_prompt

__all__ = ["auroc", "format_table", "rank_average", "score_completions", "spearman", "teacher_signal"]


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


def teacher_signal(teacher: Any, tokenizer: Any, questions: Sequence[str], rollouts: RolloutBatch,
                   rewards: Sequence[float], modes: Sequence[str], peers: PeerConfig, seed: int = 0,
                   temperature: float = 1.0) -> list[dict[str, Any]]:
    """One row per context mode: coverage, AUROC and Spearman of the teacher and advantage scores."""
    own = (rollouts.old_logprobs.sum(1) / rollouts.mask.sum(1).clamp_min(1)).tolist()
    success = [r >= 1.0 for r in rewards]
    rows = []
    for mode in modes:
        contexts = build_contexts(questions, rollouts.texts, rewards, rollouts.group_size,
                                  replace(peers, mode=mode), random.Random(f"signal|{seed}|{mode}"))
        kept = [i for i, text in enumerate(contexts.texts) if text is not None]
        scores = score_completions(teacher, tokenizer, [contexts.texts[i] for i in kept],
                                   [rollouts.completion_ids[i] for i in kept], temperature=temperature)
        labels = [success[i] for i in kept]
        advantage = [s - own[i] for s, i in zip(scores, kept)]
        rows.append({"mode": mode, "coverage": round(len(kept) / max(1, len(rewards)), 4), "n": len(kept),
                     "successes": sum(labels),
                     "auroc": _round(auroc(scores, labels)),
                     "spearman": _round(spearman(scores, [rewards[i] for i in kept])),
                     "auroc_advantage": _round(auroc(advantage, labels)),
                     "spearman_advantage": _round(spearman(advantage, [rewards[i] for i in kept])),
                     "mean_teacher_logp_success": _round(_mean([s for s, l in zip(scores, labels) if l])),
                     "mean_teacher_logp_failure": _round(_mean([s for s, l in zip(scores, labels) if not l]))})
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The teacher-signal rows as a plain-text table."""
    header = (f"{'context mode':<14}{'coverage':>9}{'n':>6}{'AUROC':>8}{'Spearman':>10}{'AUROC adv':>11}"
              f"{'Spearman adv':>14}")
    lines = [header, "-" * len(header)]

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in rows:
        lines.append(f"{row['mode']:<14}{row['coverage']:>9.2f}{row['n']:>6}{fmt(row['auroc']):>8}"
                     f"{fmt(row['spearman']):>10}{fmt(row['auroc_advantage']):>11}"
                     f"{fmt(row['spearman_advantage']):>14}")
    return "\n".join(lines)
