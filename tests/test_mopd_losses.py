"""Each MOPD/OPD/GRPO/SFT loss against a value computed by hand on a tiny example."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from latentwire.errors import ConfigError
from latentwire.training.mopd import losses
from latentwire.training.mopd.analysis import auroc, rank_average, spearman


def log(*p: float) -> torch.Tensor:
    return torch.log(torch.tensor(p, dtype=torch.float64))


def test_sampled_reverse_kl_is_the_teacher_advantage_in_policy_gradient_form() -> None:
    old = log(0.5, 0.2, 0.3)[None]                 # (1, 3): third token is padding
    teacher = log(0.25, 0.8, 0.9)[None]
    mask = torch.tensor([[1, 1, 0]])
    new = old.clone().requires_grad_(True)
    loss = losses.sampled_reverse_kl(new, old, teacher, mask, clip_eps=0.2)
    a1, a2 = math.log(0.25 / 0.5), math.log(0.8 / 0.2)
    assert loss.item() == pytest.approx(-(a1 + a2) / 2)
    loss.backward()
    assert new.grad.tolist()[0] == pytest.approx([-a1 / 2, -a2 / 2, 0.0])


def test_advantage_clip_and_centring() -> None:
    old = log(0.5, 0.2)[None]
    teacher = old + torch.tensor([[-5.0, 1.0]], dtype=torch.float64)  # advantages -5 and +1
    mask = torch.ones(1, 2)
    clipped = losses.sampled_reverse_kl(old.clone(), old, teacher, mask, advantage_clip=2.0)
    assert clipped.item() == pytest.approx(-(-2.0 + 1.0) / 2)
    new = old.clone().requires_grad_(True)
    centred = losses.sampled_reverse_kl(new, old, teacher, mask, centre=True)
    assert centred.item() == pytest.approx(0.0)  # mean advantage removed
    centred.backward()
    assert new.grad.tolist()[0] == pytest.approx([3.0 / 2, -3.0 / 2])  # -(A - mean) / N


def test_clipped_ratio() -> None:
    old = log(0.2, 0.2)[None]
    new = old + torch.log(torch.tensor([[1.5, 0.5]], dtype=torch.float64))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    loss = losses.clipped_surrogate(new, old, adv, torch.ones(1, 2), clip_eps=0.2)
    # min(1.5, 1.2) * 1 and min(0.5, 0.8) * 1
    assert loss.item() == pytest.approx(-(1.2 + 0.5) / 2)


P_S, P_T = (0.5, 0.5), (0.9, 0.1)


def full(kind: str, **kw) -> float:
    s, t = log(*P_S)[None, None], log(*P_T)[None, None]  # (1, 1, 2)
    return losses.divergence(s, t, torch.ones(1, 1), kind, **kw).item()


def test_full_vocabulary_divergences() -> None:
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    # mixture M = (0.7, 0.3)
    jsd = 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)) + \
        0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3))
    assert full("forward_kl") == pytest.approx(forward)
    assert full("reverse_kl") == pytest.approx(reverse)
    assert full("jsd", beta=0.5) == pytest.approx(jsd)
    m9 = (0.9 * 0.9 + 0.1 * 0.5, 0.9 * 0.1 + 0.1 * 0.5)  # beta 0.9 leans the mixture to the teacher
    jsd9 = 0.9 * sum(t * math.log(t / x) for t, x in zip(P_T, m9)) + 0.1 * sum(s * math.log(s / x) for s, x in zip(P_S, m9))
    assert full("jsd", beta=0.9) == pytest.approx(jsd9)


def test_top_k_divergence_keeps_a_tail_bucket() -> None:
    s, t = log(0.6, 0.3, 0.1)[None, None], log(0.2, 0.3, 0.5)[None, None]
    mask = torch.ones(1, 1)
    # Student's top-1 is token 0: distributions (0.6, 0.4) and (0.2, 0.8).
    forward = 0.2 * math.log(0.2 / 0.6) + 0.8 * math.log(0.8 / 0.4)
    reverse = 0.6 * math.log(0.6 / 0.2) + 0.4 * math.log(0.4 / 0.8)
    assert losses.divergence(s, t, mask, "forward_kl", top_k=1).item() == pytest.approx(forward, abs=1e-9)
    assert losses.divergence(s, t, mask, "reverse_kl", top_k=1).item() == pytest.approx(reverse, abs=1e-9)
    # k = V leaves an empty tail and equals the full divergence.
    assert losses.divergence(s, t, mask, "forward_kl", top_k=3).item() == pytest.approx(
        losses.divergence(s, t, mask, "forward_kl").item(), abs=1e-9)


def test_divergence_ignores_masked_positions_and_rejects_unknown_kinds() -> None:
    s = torch.stack([log(*P_S), log(0.1, 0.9)])[None]   # (1, 2, 2)
    t = torch.stack([log(*P_T), log(0.9, 0.1)])[None]
    assert losses.divergence(s, t, torch.tensor([[1, 0]]), "forward_kl").item() == pytest.approx(full("forward_kl"))
    with pytest.raises(ConfigError, match="unknown divergence 'kl'"):
        losses.divergence(s, t, torch.ones(1, 2), "kl")


def test_grpo_group_normalised_advantages() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    std = math.sqrt(0.25 * 0.75)
    assert losses.group_advantages(rewards, 4).tolist() == pytest.approx([0.75 / std] + [-0.25 / std] * 3, rel=1e-5)
    old = torch.zeros(4, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 0]])  # the success has two tokens
    loss = losses.grpo_loss(old.clone(), old, rewards, 4, mask)
    assert loss.item() == pytest.approx(-(2 * 0.75 / std - 3 * 0.25 / std) / 5, rel=1e-5)


def test_sft_and_all_masked_losses() -> None:
    logp = log(0.5, 0.25)[None].requires_grad_(True)
    assert losses.sft_loss(logp, torch.tensor([[1, 1]])).item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    empty = losses.sampled_reverse_kl(logp, logp.detach(), logp.detach(), torch.zeros(1, 2))
    assert empty.item() == 0.0 and empty.requires_grad  # still on the graph: DDP gets its gradients


def test_auroc_and_spearman_by_hand() -> None:
    assert rank_average([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    # Positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, tie, 0.4>0.1) -> 3.5 / 4.
    assert auroc([0.9, 0.4, 0.4, 0.1], [True, True, False, False]) == pytest.approx(0.875)
    assert auroc([1.0, 2.0], [True, True]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
