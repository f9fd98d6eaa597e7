"""Losses of MOPD, OPD, GRPO and SFT, token-level over the student's own completions.

Shapes: ``R`` rollouts, ``A`` completion positions, ``V`` vocabulary. ``mask`` ``(R, A)`` is 1 at
real completion tokens of rollouts that take part (a masked rollout has an all-zero row).
Every loss is a mean over the unmasked tokens of the batch (each token weighs the same, as in
DAPO/Dr. GRPO, so long completions are not down-weighted), and is exactly 0 - still attached to
the graph - when nothing is unmasked, so a distributed step never hangs on a missing gradient.

* `sampled_reverse_kl`: the OPD/MOPD loss on the sampled token. Per token the reverse-KL
  estimate is ``log pi_S(y_t) - log pi_T(y_t)``; its policy-gradient form uses the advantage
  ``A_t = log pi_T(y_t) - log pi_old(y_t)`` (no gradient through it) in a PPO-clipped surrogate
  with the importance ratio ``pi_S / pi_old``.
* `divergence`: full-vocabulary or top-k ``forward_kl`` KL(T||S), ``reverse_kl`` KL(S||T), or
  ``jsd`` (generalised JSD with weight ``beta`` on the teacher: ``beta KL(T||M) + (1-beta) KL(S||M)``,
  ``M = beta T + (1-beta) S``). With ``top_k`` the two distributions are restricted to the
  student's top-k tokens at each position plus one tail bucket holding the rest of the mass.
* `grpo_loss`: the group-normalised verifier advantage ``(r - mean_g) / (std_g + eps)``
  (population std of the group) in the same clipped surrogate.
* `sft_loss`: negative log-likelihood of the completions with weight 1 (verified successes).
"""

from __future__ import annotations

from typing import Any

from latentwire.errors import ConfigError

__all__ = ["DIVERGENCES", "clipped_surrogate", "divergence", "group_advantages", "grpo_loss", "masked_mean",
           "sampled_reverse_kl", "sft_loss"]

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def masked_mean(values: Any, mask: Any) -> Any:
    """Mean of ``values`` over the positions where ``mask`` is nonzero (0 when there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def clipped_surrogate(new_logp: Any, old_logp: Any, advantages: Any, mask: Any, clip_eps: float) -> Any:
    """PPO-clipped policy-gradient loss ``-mean(min(rho A, clip(rho, 1-eps, 1+eps) A))``,
    ``rho = exp(new - old)``."""
    import torch

    ratio = torch.exp(new_logp - old_logp.detach())
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    return -masked_mean(surrogate, mask)


def sampled_reverse_kl(new_logp: Any, old_logp: Any, teacher_logp: Any, mask: Any, clip_eps: float = 0.2,
                       advantage_clip: float = 0.0, centre: bool = False) -> Any:
    """OPD/MOPD loss: reverse KL on the sampled tokens in clipped policy-gradient form (module docstring).

    ``advantage_clip`` > 0 bounds each token's advantage to ``[-c, c]``; ``centre`` subtracts the
    mean advantage over the unmasked tokens (a constant baseline: the expected gradient is
    unchanged, its variance and the systematic push-down of sampled tokens are not).
    """
    advantages = (teacher_logp - old_logp).detach()
    if advantage_clip:
        advantages = advantages.clamp(-advantage_clip, advantage_clip)
    if centre:
        advantages = advantages - masked_mean(advantages, mask)
    return clipped_surrogate(new_logp, old_logp, advantages, mask, clip_eps)


def _restrict_top_k(student: Any, teacher: Any, k: int) -> tuple[Any, Any]:
    """Both log-distributions over the student's top-k tokens plus a tail bucket ``(R, A, k + 1)``."""
    import torch

    index = student.topk(k, dim=-1).indices
    parts = []
    for logp in (student, teacher):
        top = logp.gather(-1, index)
        tail = torch.log((1 - top.exp().sum(-1, keepdim=True)).clamp_min(1e-12))
        parts.append(torch.cat([top, tail], dim=-1))
    return parts[0], parts[1]


def divergence(student_logp: Any, teacher_logp: Any, mask: Any, kind: str = "reverse_kl", top_k: int = 0,
               beta: float = 0.5) -> Any:
    """Token-level divergence between log-distributions ``(R, A, V)``, averaged over ``mask``."""
    import torch

    if kind not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
    teacher_logp = teacher_logp.detach()
    if top_k:
        student_logp, teacher_logp = _restrict_top_k(student_logp, teacher_logp, top_k)
    p_s, p_t = student_logp.exp(), teacher_logp.exp()
    if kind == "forward_kl":
        per_token = (p_t * (teacher_logp - student_logp)).sum(-1)
    elif kind == "reverse_kl":
        per_token = (p_s * (student_logp - teacher_logp)).sum(-1)
    else:
        if not 0 < beta < 1:
            raise ConfigError(f"jsd beta must be in (0, 1), got {beta}")
        log_m = torch.log((beta * p_t + (1 - beta) * p_s).clamp_min(1e-30))
        per_token = (beta * (p_t * (teacher_logp - log_m)).sum(-1)
                     + (1 - beta) * (p_s * (student_logp - log_m)).sum(-1))
    return masked_mean(per_token, mask)


def group_advantages(rewards: Any, group_size: int, eps: float = 1e-6) -> Any:
    """``(r - group mean) / (group std + eps)`` per rollout ``(R,)``; rollouts laid out group by group."""
    groups = rewards.float().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    return (centred / (groups.std(dim=1, unbiased=False, keepdim=True) + eps)).view(-1)


def grpo_loss(new_logp: Any, old_logp: Any, rewards: Any, group_size: int, mask: Any, clip_eps: float = 0.2) -> Any:
    """GRPO: the group-normalised verifier advantage of each rollout on all its tokens, clipped ratio."""
    advantages = group_advantages(rewards, group_size).to(new_logp.device)[:, None].expand_as(new_logp)
    return clipped_surrogate(new_logp, old_logp, advantages, mask, clip_eps)


def sft_loss(new_logp: Any, mask: Any) -> Any:
    """Negative log-likelihood of the unmasked tokens (mask out the rollouts that failed verification)."""
    return -masked_mean(new_logp, mask)
