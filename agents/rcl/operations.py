"""The mutator's edits: ADD / UPDATE / DELETE operations, parsed and applied one by one.

A model answer is parsed into operations; each operation is validated and applied on its own, and
a bad one (unknown kind, missing field, unknown entry id, duplicate, oversize, over budget, an
UPDATE or DELETE in ADD-only mode, more than ``max_ops``) becomes a `Rejection` with a reason that
is logged. Nothing here raises on bad model output: a run never crashes on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from ._json import extract_json
from .errors import PlaybookError
from .playbook import Playbook

log = logging.getLogger("latentwire.rcl.operations")

Kind = Literal["ADD", "UPDATE", "DELETE"]
KINDS = ("ADD", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Operation:
    """One edit: ADD needs ``section`` and ``content``; UPDATE ``entry_id`` and ``content``;
    DELETE ``entry_id``. ``reason`` is the mutator's justification (kept in the ledger)."""

    kind: Kind
    entry_id: str = ""
    section: str = ""
    content: str = ""
    reason: str = ""

    def describe(self) -> str:
        """A one-line summary for logs and the ledger."""
        target = self.entry_id or self.section
        return f"{self.kind} {target}: {self.content[:80]!r}" if self.content else f"{self.kind} {target}"


@dataclass(frozen=True)
class Rejection:
    """An operation (or raw item) that was not applied, and why."""

    item: Any
    reason: str


@dataclass
class ApplyResult:
    """What `apply_operations` did: operations applied (with the entry id they touched) and rejected."""

    applied: list[tuple[Operation, str]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def parse_operations(text: str) -> tuple[list[Operation], list[Rejection]]:
    """Operations from a model answer: ``{"operations": [...]}`` or a bare list.

    Items that are not valid operations are returned as rejections (with reasons), never raised.
    """
    try:
        data = extract_json(text)
    except ValueError as exc:
        return [], [Rejection(text[:200], f"not JSON: {exc}")]
    if isinstance(data, dict):
        data = data.get("operations")
    if not isinstance(data, list):
        return [], [Rejection(text[:200], "expected a list of operations or {\"operations\": [...]}")]
    ops, rejected = [], []
    for item in data:
        op, reason = _to_operation(item)
        if op is None:
            rejected.append(Rejection(item, reason))
        else:
            ops.append(op)
    return ops, rejected


def _to_operation(item: Any) -> tuple[Operation | None, str]:
    if not isinstance(item, dict):
        return None, f"an operation must be a JSON object, not {type(item).__name__}"
    kind = str(item.get("op", item.get("type", ""))).upper()
    if kind not in KINDS:
        return None, f"unknown operation {kind!r} (allowed: {', '.join(KINDS)})"
    fields = {k: item.get(k) for k in ("entry_id", "section", "content", "reason")}
    if not all(v is None or isinstance(v, str) for v in fields.values()):
        return None, "entry_id, section, content and reason must be strings"
    op = Operation(kind, **{k: v or "" for k, v in fields.items()})  # type: ignore[arg-type]
    if kind in ("UPDATE", "DELETE") and not op.entry_id:
        return None, f"{kind} needs entry_id"
    if kind in ("ADD", "UPDATE") and not op.content.strip():
        return None, f"{kind} needs content"
    return op, ""


def apply_operations(book: Playbook, ops: list[Operation], *, max_ops: int = 3,
                     add_only: bool = False) -> ApplyResult:
    """Apply ``ops`` in order, each validated on its own; at most ``max_ops`` are applied.

    Rejections are logged at INFO with their reason and returned.
    """
    result = ApplyResult()
    for op in ops:
        if len(result.applied) >= max_ops:
            reason = f"over the limit of {max_ops} operations per step"
        elif add_only and op.kind != "ADD":
            reason = f"{op.kind} refused: the optimiser is in ADD-only mode"
        else:
            try:
                if op.kind == "ADD":
                    entry_id = book.add(op.section, op.content).id
                elif op.kind == "UPDATE":
                    entry_id = book.update(op.entry_id, op.content).id
                else:
                    entry_id = book.delete(op.entry_id).id
            except PlaybookError as exc:
                reason = str(exc)
            else:
                result.applied.append((op, entry_id))
                continue
        result.rejected.append(Rejection(op, reason))
    for r in result.rejected:
        log.info("rejected %s: %s", r.item.describe() if isinstance(r.item, Operation) else r.item, r.reason)
    return result
