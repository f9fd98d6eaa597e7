"""The optimiser state: a rolling ledger of changes, their observed effects, open hypotheses and
the momentum of the update signals.

It carries signal across steps: the mutator sees what was changed, how the batch success moved
afterwards, which contents were refuted (deleted, pruned or updated away as harmful), which
hypotheses the reflector left open, and the **signal momentum**: every step the per-content
votes (+1 for an insight proposing a content and for an entry judged helpful or cited by a
passing run, -1 for an entry judged harmful or pruned) are added to an exponentially decayed
sum, ``m <- beta * m + votes``, as momentum does for gradients. One noisy reflection moves it
little, so a mutator that follows it is steadier under noisy signals, and slower when the right
answer changes (old votes outweigh new evidence for a while).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Change:
    """One applied operation: when, what, and the batch success before and after it."""

    iteration: int
    kind: str
    entry_id: str
    content: str
    before: float
    after: float | None = None  # filled at the next step

    @property
    def effect(self) -> float | None:
        """Batch success after minus before (None until measured)."""
        return None if self.after is None else self.after - self.before


@dataclass
class Ledger:
    """A bounded record: the last ``window`` changes, refuted contents, open hypotheses."""

    window: int = 20
    changes: deque[Change] = field(default_factory=deque)
    refuted: list[str] = field(default_factory=list)
    hypotheses: deque[str] = field(default_factory=deque)
    beta: float = 0.8  # momentum decay per step: 0 keeps only this step's votes
    momentum: dict[str, float] = field(default_factory=dict)  # content -> decayed sum of votes

    def record(self, iteration: int, kind: str, entry_id: str, content: str, before: float) -> None:
        """Log an applied change (its effect is measured at the next `observe`)."""
        self.changes.append(Change(iteration, kind, entry_id, content, before))
        while len(self.changes) > self.window:
            self.changes.popleft()

    def observe(self, success: float) -> None:
        """Set the after-score of every change that has none yet."""
        for c in self.changes:
            if c.after is None:
                c.after = success

    def refute(self, content: str) -> None:
        """Remember a content judged harmful (kept to the last ``window``)."""
        if content not in self.refuted:
            self.refuted.append(content)
            del self.refuted[:-self.window]

    def hypothesise(self, text: str) -> None:
        """Keep an open hypothesis from a reflection (the last ``window``)."""
        if text and text not in self.hypotheses:
            self.hypotheses.append(text)
            while len(self.hypotheses) > self.window:
                self.hypotheses.popleft()

    def accumulate(self, votes: Iterable[tuple[str, float]]) -> None:
        """One step of momentum: decay every content's sum by ``beta``, then add this step's
        ``(content, vote)`` pairs (+1 for, -1 against). Sums that faded below 0.05 are dropped, and
        at most ``4 * window`` contents are kept (the largest in size)."""
        step: dict[str, float] = {}
        for content, vote in votes:
            step[content] = step.get(content, 0.0) + vote
        merged = {c: self.beta * m for c, m in self.momentum.items()}
        for content, vote in step.items():
            merged[content] = merged.get(content, 0.0) + vote
        kept = sorted((c for c, m in merged.items() if abs(m) >= 0.05), key=lambda c: -abs(merged[c]))
        self.momentum = {c: round(merged[c], 6) for c in kept[:4 * self.window]}

    def render(self) -> str:
        """What the mutator reads."""
        lines = ["changes:"] + [
            f"- it{c.iteration} {c.kind} {c.entry_id} {c.content[:80]!r}: success {c.before:.2f} -> "
            + ("?" if c.after is None else f"{c.after:.2f} ({c.effect:+.2f})") for c in self.changes]
        lines += ["refuted (do not propose again):"] + [f"- {r}" for r in self.refuted]
        lines += ["open hypotheses:"] + [f"- {h}" for h in self.hypotheses]
        lines += ["signal momentum (decayed votes: + for, - against; prefer what it favours):"]
        lines += [f"- {m:+.2f} {c}" for c, m in self.momentum.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """For checkpoints."""
        return {"window": self.window, "changes": [asdict(c) for c in self.changes],
                "refuted": list(self.refuted), "hypotheses": list(self.hypotheses), "beta": self.beta,
                "momentum": dict(self.momentum)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        """Rebuild from `to_dict` (a checkpoint from before momentum existed starts with none)."""
        return cls(data["window"], deque(Change(**c) for c in data["changes"]), list(data["refuted"]),
                   deque(data["hypotheses"]), data.get("beta", 0.8), dict(data.get("momentum", {})))
