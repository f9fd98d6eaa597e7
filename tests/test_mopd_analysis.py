"""Teacher-signal analysis: every mode scored per rollout, the matched subset, derived contrastive modes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from latentwire.training.mopd.analysis import ModeScores, matched_subset, mode_figures, score_modes
from latentwire.training.mopd.peers import PeerConfig

MODES = ("none", "positive", "contrastive", "random_peer", "unrelated", "privileged",
         "contrastive_success_only", "contrastive_lower_only", "contrastive_reversed")


def test_matched_subset_is_where_every_mode_has_a_context() -> None:
    scores = {"a": ModeScores("a", [1.0, None, 2.0, 3.0], [[0.0]] * 4),
              "b": ModeScores("b", [1.0, 1.0, None, 3.0], [[0.0]] * 4)}
    assert matched_subset(scores) == [0, 3]
    assert matched_subset({}) == []


def test_mode_figures_on_a_resample() -> None:
    scores = ModeScores("m", [-1.0, -3.0, -0.5, None], [[0.5, 0.5], [-1.0], [1.0], None])
    rewards = [1.0, 0.0, 1.0, 0.0]
    figures = mode_figures(scores, rewards, [0, 1, 2, 3])
    assert figures["n"] == 3 and figures["auroc"] == 1.0
    assert figures["token_advantage_success"] == pytest.approx(2 / 3)
    assert figures["token_advantage_failure"] == -1.0
    assert mode_figures(scores, rewards, [1, 1, 0])["n"] == 3  # repeats count (a bootstrap resample)


def test_every_mode_scored_on_the_same_rollouts() -> None:
    from latentwire.training.mopd.rollouts import SamplingConfig, encode_prompt, sample_groups
    from latentwire.training.mopd.student import load_student

    model, tokenizer, _ = load_student()
    torch.manual_seed(0)
    questions = ["sender: qwerty\nsorted?", "sender: abcabc\nsorted?"]
    golds = ["eqrtwy", "aabbcc"]
    rollouts = sample_groups(model, tokenizer, [encode_prompt(tokenizer, q) for q in questions], 4,
                             SamplingConfig(max_new_tokens=8))
    rewards = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # group 1 has one success: it gets no peer context
    scores = score_modes(model, tokenizer, questions, rollouts, rewards, MODES, PeerConfig(), golds)
    assert scores["privileged"].kept == list(range(8))
    # The EMA self-teacher without context is the student: its advantage is exactly 0 (OPD cannot learn).
    assert all(abs(a) < 1e-4 for row in scores["none"].advantage for a in row)
    matched = matched_subset(scores)
    assert matched == sorted(set(scores["contrastive_success_only"].kept) & set(scores["positive"].kept))
    assert 7 not in matched and matched
    for i in scores["contrastive_success_only"].kept:
        lower, full = scores["contrastive_lower_only"].advantage[i], scores["contrastive"].advantage[i]
        alone = scores["contrastive_success_only"].advantage[i]
        assert lower == pytest.approx([min(a, b) for a, b in zip(full, alone)])
        reversed_ = scores["contrastive_reversed"].advantage[i]
        assert reversed_ == pytest.approx([2 * b - a for a, b in zip(full, alone)], abs=1e-5)
