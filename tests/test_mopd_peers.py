"""Peer contexts: own rollout never shown, masking, successes and failures picked as configured."""

from __future__ import annotations

import random

import pytest
from latentwire.errors import ConfigError
from latentwire.training.mopd.peers import PeerConfig, PeerTemplates, build_contexts, render_context

T = PeerTemplates()
QUESTIONS = ["question one?", "question two?"]
# Two groups of 6; texts distinct and none a substring of another or of the templates.
TEXTS = [f"#{g}{j}#" for g in range(2) for j in range(6)]
REWARDS = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0,   # group 0: three successes, three failures
           0.0, 0.0, 0.0, 0.0, 0.0, 1.0]   # group 1: one success


def contexts(mode: str, texts=TEXTS, rewards=REWARDS, seed: int = 0, golds=None, **options):
    return build_contexts(QUESTIONS, texts, rewards, 6, PeerConfig(mode=mode, **options), random.Random(seed),
                          golds=golds)


@pytest.mark.parametrize("mode", ["positive", "contrastive", "random_peer", "unrelated"])
@pytest.mark.parametrize("seed", range(5))
def test_own_text_is_never_in_the_context(mode: str, seed: int) -> None:
    built = contexts(mode, seed=seed)
    for i, (text, shown) in enumerate(zip(built.texts, built.peers)):
        assert i not in shown
        if text is not None:
            assert TEXTS[i] not in text


def test_identical_peer_text_is_dropped_when_configured() -> None:
    texts = ["same"] * 6 + [f"#{j}#" for j in range(6)]
    rewards = [1.0] * 6 + [0.0] * 6
    kept = contexts("positive", texts=texts, rewards=rewards)
    assert all(t is not None and "same" in t for t in kept.texts[:6])  # other samples, same string
    excluded = contexts("positive", texts=texts, rewards=rewards, exclude_identical=True)
    assert excluded.texts[:6] == [None] * 6


def test_rollouts_without_context_are_masked() -> None:
    built = contexts("positive")
    # Group 1's only success (rollout 11) has no successful peer; the others see rollout 11.
    assert built.mask == [True] * 11 + [False]
    assert built.masked_fraction == pytest.approx(1 / 12)
    failures_only = contexts("positive", rewards=[0.0] * 12)
    assert failures_only.mask == [False] * 12 and failures_only.masked_fraction == 1.0
    assert contexts("none").mask == [True] * 12  # OPD: never masked


def test_contrastive_picks_successes_and_failures_as_configured() -> None:
    built = contexts("contrastive", n_positive=2, n_negative=1)
    for i in range(6):  # group 0: enough of both
        shown = built.peers[i]
        good = [k for k in shown if REWARDS[k] == 1.0]
        bad = [k for k in shown if REWARDS[k] == 0.0]
        assert len(good) == 2 and len(bad) == 1
        assert all(k // 6 == 0 for k in shown)
        text = built.texts[i]
        for k in good:
            assert T.positive.format(solution=TEXTS[k]) in text
        assert T.negative.format(solution=TEXTS[bad[0]]) in text
        assert text.startswith(QUESTIONS[0])
    # Group 1: one success, so failures see it plus one failure; the success itself gets no context.
    assert built.texts[11] is None
    for i in range(6, 11):
        assert sorted(REWARDS[k] for k in built.peers[i]) == [0.0, 1.0]


def test_contrastive_can_require_a_failure() -> None:
    all_good = [1.0] * 12
    assert all(t is not None for t in contexts("contrastive", rewards=all_good).texts)
    assert contexts("contrastive", rewards=all_good, require_negative=True).texts == [None] * 12


def test_random_peer_and_unrelated_controls() -> None:
    random_peer = contexts("random_peer")
    assert all(len(p) == 1 and p[0] // 6 == i // 6 for i, p in enumerate(random_peer.peers))
    # A failed random peer is still written as a success: that is the control.
    for text, shown in zip(random_peer.texts, random_peer.peers):
        assert text == render_context(QUESTIONS[shown[0] // 6], [TEXTS[shown[0]]], [])
    unrelated = contexts("unrelated")
    for i, shown in enumerate(unrelated.peers):
        assert len(shown) == 1 and shown[0] // 6 != i // 6 and REWARDS[shown[0]] == 1.0


def test_none_mode_is_the_plain_question() -> None:
    assert contexts("none").texts == [QUESTIONS[0]] * 6 + [QUESTIONS[1]] * 6


def test_privileged_context_is_the_gold_answer_as_a_correct_solution() -> None:
    golds = ["abc", "xyz"]
    built = contexts("privileged", golds=golds)
    assert built.mask == [True] * 12  # never masked: the answer is always there
    for i, text in enumerate(built.texts):
        assert text == render_context(QUESTIONS[i // 6], [golds[i // 6]], [])
        assert TEXTS[i] not in text
    assert all(shown == () for shown in built.peers)
    with pytest.raises(ValueError, match="'privileged' needs one gold answer per question"):
        contexts("privileged")
    with pytest.raises(ValueError, match="2 questions, 1 golds"):
        contexts("privileged", golds=["abc"])


def test_contrastive_keeps_the_same_successes_without_the_failure() -> None:
    built = contexts("contrastive")
    for i, (text, alone, shown) in enumerate(zip(built.texts, built.success_only, built.peers)):
        good = [TEXTS[k] for k in shown if REWARDS[k] == 1.0]
        if text is None or len(good) == len(shown):  # masked, or no failure shown
            assert alone is None
        else:
            assert alone == render_context(QUESTIONS[i // 6], good, [])
            assert text.startswith(alone)
    assert contexts("positive").success_only == [None] * 12


def test_bad_peer_settings() -> None:
    with pytest.raises(ConfigError, match="unknown context mode 'peers'"):
        PeerConfig(mode="peers")
    with pytest.raises(ConfigError, match="n_negative"):
        PeerConfig(mode="contrastive", n_negative=0)
    with pytest.raises(ConfigError, match=r"\{solution\}"):
        PeerTemplates(positive="good one")
    with pytest.raises(ValueError, match="group size"):
        build_contexts(QUESTIONS, TEXTS[:5], REWARDS[:5], 6, PeerConfig(), random.Random(0))
