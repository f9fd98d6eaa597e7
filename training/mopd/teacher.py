"""The teacher: an EMA copy of the student, the frozen initial student, or a separate model.

The teacher never trains by gradient and runs under ``no_grad``; it is re-prompted with peer
contexts (`peers`) and scores the student's sampled tokens. ``ema`` mixes ``rate`` of the
student's weights into the copy after every optimiser step (``rate=1`` follows the live student,
``rate=0`` is the frozen initial student); ``frozen`` never changes; ``separate`` loads another
model folder (it must share the student's tokenizer: it scores the same token ids).
"""

from __future__ import annotations

import copy
from typing import Any

from latentwire.errors import ConfigError

__all__ = ["TEACHER_KINDS", "Teacher"]

TEACHER_KINDS = ("ema", "frozen", "separate")


class Teacher:
    """A no-gradient model that scores the student's tokens; `update` follows the student (EMA)."""

    def __init__(self, kind: str, student: Any, rate: float = 0.05, model: Any = None) -> None:
        if kind not in TEACHER_KINDS:
            raise ConfigError(f"unknown teacher {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")
        if not 0 <= rate <= 1:
            raise ConfigError(f"teacher EMA rate must be in [0, 1], got {rate}")
        if kind == "separate" and model is None:
            raise ConfigError("teacher 'separate' needs a model (teacher_path)")
        self.kind, self.rate = kind, rate
        self.model = model if kind == "separate" else copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()

    def update(self, student: Any) -> None:
        """After an optimiser step: ``teacher <- (1 - rate) teacher + rate student`` (EMA only)."""
        import torch

        if self.kind != "ema" or self.rate == 0:
            return
        with torch.no_grad():
            # parameters() lists a tied weight once; state_dict() would lerp it twice.
            for mine, theirs in zip(self.model.parameters(), student.parameters()):
                mine.lerp_(theirs.to(mine.device, mine.dtype), self.rate)

