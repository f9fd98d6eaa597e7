"""The tiny MOPD student: pre-training writes a loadable folder; bad folders are refused."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("torch")

from latentwire.agents.errors import CheckpointError
from latentwire.training.mopd.student import StudentConfig, corrupt, load_student, pretrain_student


def test_pretrain_writes_a_loadable_student(tmp_path: Path) -> None:
    config = StudentConfig(hidden_size=32, heads=2, steps=2, batch_size=4, eval_every=1, eval_n=4,
                           min_steps=99, out_dir=str(tmp_path / "student"), progress=False)
    folder = pretrain_student(config)
    model, tokenizer, meta = load_student(folder)
    assert model.config.hidden_size == 32 and tokenizer.vocab_size == model.config.vocab_size
    assert meta["steps"] == 2 and meta["task"] == "sort" and 0.0 <= meta["plain_success"] <= 1.0
    assert meta["templates"]["negative"].endswith("{solution}")
    assert len((folder / "pretrain_metrics.jsonl").read_text().splitlines()) == 2


def test_bad_student_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        load_student(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot load MOPD student"):
        load_student(tmp_path)


def test_corrupt_never_returns_the_answer() -> None:
    rng = random.Random(0)
    for _ in range(200):
        assert corrupt("abcdef", rng) != "abcdef"
        assert corrupt("a", rng) != "a"
