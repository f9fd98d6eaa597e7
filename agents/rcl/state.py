"""The optimiser state: a rolling ledger of changes, their observed effects and open hypotheses.

Like momentum in a numeric optimiser, it carries signal across steps: the mutator sees what was
changed, how the batch success moved afterwards, which contents were refuted (deleted, pruned or
updated away as harmful) and which hypotheses the reflector left open, so it does not re-propose
what already failed.
"""

from __future__ import annotations

from collections import deque
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

    def render(self) -> str:
        """What the mutator reads."""
        lines = ["changes:"] + [
            f"- it{c.iteration} {c.kind} {c.entry_id} {c.content[:80]!r}: success {c.before:.2f} -> "
            + ("?" if c.after is None else f"{c.after:.2f} ({c.effect:+.2f})") for c in self.changes]
        lines += ["refuted (do not propose again):"] + [f"- {r}" for r in self.refuted]
        lines += ["open hypotheses:"] + [f"- {h}" for h in self.hypotheses]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """For checkpoints."""
        return {"window": self.window, "changes": [asdict(c) for c in self.changes],
                "refuted": list(self.refuted), "hypotheses": list(self.hypotheses)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        """Rebuild from `to_dict`."""
        return cls(data["window"], deque(Change(**c) for c in data["changes"]), list(data["refuted"]),
                   deque(data["hypotheses"]))
