"""The playbook: the learned object of RCL, an itemised context with counters and history.

Entries have short ids (``e-0001``), a section, content and helpful/harmful counters. The
playbook renders itself for the actor (sections and bullets, counters once judged) and for the
reflector and mutator (ids, counters, which entries were assessed this round). Adding refuses
duplicates (content hash after normalising case and spaces), oversize entries and anything
beyond the size budget; `Playbook.prune` drops entries whose ``harmful - helpful`` reached a
threshold; `Playbook.dedup` merges entries that state the same guidance in other words (what
counts as the same is the caller's key). Every `Playbook.commit` snapshots a version;
`Playbook.diff` compares two of them. JSON save/load checks every field and names what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import PlaybookError

FORMAT = "latentwire.rcl.playbook/1"


@dataclass
class Entry:
    """One playbook item: ``id`` is short and stable, ``section`` groups items for the actor."""

    id: str
    section: str
    content: str
    helpful: int = 0
    harmful: int = 0

    @property
    def net_harm(self) -> int:
        """``harmful - helpful``: what pruning compares against its threshold."""
        return self.harmful - self.helpful


@dataclass(frozen=True)
class PlaybookDiff:
    """What changed between two versions: ids added, removed, and changed (old, new content)."""

    added: tuple[Entry, ...]
    removed: tuple[Entry, ...]
    changed: tuple[tuple[Entry, Entry], ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def render(self) -> str:
        """A unified-diff-like text, one line per entry."""
        lines = [f"+ [{e.id}] ({e.section}) {e.content}" for e in self.added]
        lines += [f"- [{e.id}] ({e.section}) {e.content}" for e in self.removed]
        lines += [f"~ [{new.id}] {old.content!r} -> {new.content!r}" for old, new in self.changed]
        return "\n".join(lines) or "(no change)"


def content_key(content: str) -> str:
    """The dedup key of a content: sha1 of the lower-cased, whitespace-collapsed text."""
    normal = re.sub(r"\s+", " ", content.strip().lower())
    return hashlib.sha1(normal.encode()).hexdigest()[:16]


@dataclass
class Playbook:
    """An itemised context with a size budget, counters and version history.

    ``max_entries`` and ``max_chars`` (total content) bound its size; ``max_entry_chars``
    bounds one entry. ``version`` counts commits; ``history`` holds each committed version's
    entries (as dicts) and note.
    """

    entries: dict[str, Entry] = field(default_factory=dict)
    max_entries: int = 64
    max_chars: int = 8000
    max_entry_chars: int = 400
    version: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1

    # -- edits (each raises PlaybookError with the reason; operations.py turns it into a rejection)

    def add(self, section: str, content: str) -> Entry:
        """Add an entry; refuses empty, oversize, duplicate, or over-budget content."""
        section, content = section.strip() or "general", content.strip()
        self._check_content(content)
        key = content_key(content)
        for e in self.entries.values():
            if content_key(e.content) == key:
                raise PlaybookError(f"duplicate of entry {e.id}")
        if len(self.entries) >= self.max_entries:
            raise PlaybookError(f"budget: the playbook already has max_entries={self.max_entries}")
        if self.chars + len(content) > self.max_chars:
            raise PlaybookError(f"budget: {self.chars}+{len(content)} chars exceeds "
                                f"max_chars={self.max_chars}")
        entry = Entry(f"e-{self.next_id:04d}", section, content)
        self.next_id += 1
        self.entries[entry.id] = entry
        return entry

    def update(self, entry_id: str, content: str) -> Entry:
        """Replace an entry's content (counters reset: they judged the old content)."""
        entry = self.get(entry_id)
        content = content.strip()
        self._check_content(content)
        key = content_key(content)
        for e in self.entries.values():
            if e.id != entry_id and content_key(e.content) == key:
                raise PlaybookError(f"duplicate of entry {e.id}")
        if self.chars - len(entry.content) + len(content) > self.max_chars:
            raise PlaybookError(f"budget: the update would exceed max_chars={self.max_chars}")
        entry.content, entry.helpful, entry.harmful = content, 0, 0
        return entry

    def delete(self, entry_id: str) -> Entry:
        """Remove an entry."""
        return self.entries.pop(self.get(entry_id).id)

    def get(self, entry_id: str) -> Entry:
        """The entry with this id; PlaybookError names the unknown id."""
        try:
            return self.entries[entry_id]
        except KeyError:
            raise PlaybookError(f"no entry {entry_id!r}") from None

    def _check_content(self, content: str) -> None:
        if not content:
            raise PlaybookError("empty content")
        if len(content) > self.max_entry_chars:
            raise PlaybookError(f"oversize: {len(content)} chars > max_entry_chars={self.max_entry_chars}")

    @property
    def chars(self) -> int:
        """Total characters of content (what ``max_chars`` bounds)."""
        return sum(len(e.content) for e in self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def credit(self, entry_id: str, *, helpful: bool) -> None:
        """Count one helpful or harmful judgement of an entry (unknown ids are ignored: the
        entry may have been deleted since the trace was made)."""
        entry = self.entries.get(entry_id)
        if entry is not None:
            if helpful:
                entry.helpful += 1
            else:
                entry.harmful += 1

    def prune(self, threshold: int) -> list[Entry]:
        """Delete entries with ``harmful - helpful >= threshold``; returns them."""
        gone = [e for e in self.entries.values() if e.net_harm >= threshold]
        for e in gone:
            del self.entries[e.id]
        return gone

    def dedup(self, key: Callable[[str], object]) -> list[Entry]:
        """Merge entries whose contents have the same ``key`` (the same guidance in other words).

        Of each group the entry with the lowest ``harmful - helpful`` stays (the oldest on a tie)
        and takes the others' counters, as their judgements were of the same guidance; returns
        the entries removed.
        """
        groups: dict[object, list[Entry]] = {}
        for e in self.entries.values():  # insertion order: oldest first
            groups.setdefault(key(e.content), []).append(e)
        gone = []
        for group in groups.values():
            keep = min(group, key=lambda e: e.net_harm)  # min keeps the first (oldest) of equals
            for e in group:
                if e is not keep:
                    keep.helpful, keep.harmful = keep.helpful + e.helpful, keep.harmful + e.harmful
                    gone.append(self.entries.pop(e.id))
        return gone

    # -- renderings

    def render_for_actor(self) -> str:
        """Sections as headings, entries as bullets tagged with their ids (so the actor can cite
        them) and, once judged, their counters (so it can weigh conflicting entries, as ACE's
        generator sees its bullets' counts)."""
        if not self.entries:
            return "(the playbook is empty)"
        out = []
        for section, entries in self._by_section().items():
            out.append(f"## {section}")
            out += [f"- [{e.id}] {e.content}" + (f" (helpful {e.helpful}, harmful {e.harmful})"
                                                 if e.helpful or e.harmful else "") for e in entries]
        return "\n".join(out)

    def render_for_optimizer(self, assessed: Iterable[str] = ()) -> str:
        """One line per entry with id, counters, and ``*`` on those assessed this round."""
        assessed = set(assessed)
        if not self.entries:
            return "(the playbook is empty)"
        return "\n".join(
            f"{'*' if e.id in assessed else ' '} [{e.id}] ({e.section}) helpful={e.helpful} "
            f"harmful={e.harmful}: {e.content}" for e in self.entries.values())

    def to_markdown(self, title: str = "Playbook") -> str:
        """A Markdown page: sections, bullets with ids and counters."""
        out = [f"# {title} (version {self.version}, {len(self)} entries)", ""]
        for section, entries in self._by_section().items():
            out += [f"## {section}", ""]
            out += [f"- **{e.id}** {e.content} _(helpful {e.helpful}, harmful {e.harmful})_" for e in entries]
            out.append("")
        return "\n".join(out)

    def _by_section(self) -> dict[str, list[Entry]]:
        groups: dict[str, list[Entry]] = {}
        for e in self.entries.values():
            groups.setdefault(e.section, []).append(e)
        return groups

    # -- versions

    def commit(self, note: str = "") -> int:
        """Snapshot the entries as a new version; returns its number."""
        self.version += 1
        self.history.append({"version": self.version, "note": note,
                             "entries": [asdict(e) for e in self.entries.values()]})
        return self.version

    def at_version(self, version: int) -> dict[str, Entry]:
        """The entries of a committed version."""
        for snap in self.history:
            if snap["version"] == version:
                return {d["id"]: Entry(**d) for d in snap["entries"]}
        raise PlaybookError(f"no version {version}; committed: {[s['version'] for s in self.history]}")

    def diff(self, old: int, new: int | None = None) -> PlaybookDiff:
        """Changes from version ``old`` to ``new`` (default: the current entries)."""
        a = self.at_version(old)
        b = self.entries if new is None else self.at_version(new)
        return PlaybookDiff(
            added=tuple(e for i, e in b.items() if i not in a),
            removed=tuple(e for i, e in a.items() if i not in b),
            changed=tuple((a[i], e) for i, e in b.items() if i in a and a[i].content != e.content))

    # -- persistence

    def to_dict(self, *, history: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (``history=False`` leaves the version history out)."""
        return {"format": FORMAT, "version": self.version, "next_id": self.next_id,
                "max_entries": self.max_entries, "max_chars": self.max_chars,
                "max_entry_chars": self.max_entry_chars,
                "entries": [asdict(e) for e in self.entries.values()],
                "history": self.history if history else []}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "playbook") -> Playbook:
        """Rebuild from `to_dict` output; PlaybookError names the bad field."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PlaybookError(f"{source}: not a playbook (expected format {FORMAT!r})")
        try:
            entries = {}
            for i, d in enumerate(data["entries"]):
                if not isinstance(d, dict) or set(d) != {"id", "section", "content", "helpful", "harmful"}:
                    raise PlaybookError(f"{source}: entries[{i}] must have id, section, content, "
                                        f"helpful, harmful; got {d!r}")
                entries[d["id"]] = Entry(str(d["id"]), str(d["section"]), str(d["content"]),
                                         int(d["helpful"]), int(d["harmful"]))
            book = cls(entries, int(data["max_entries"]), int(data["max_chars"]),
                       int(data["max_entry_chars"]), int(data["version"]), list(data["history"]),
                       int(data["next_id"]))
        except KeyError as exc:
            raise PlaybookError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise PlaybookError(f"{source}: bad value: {exc}") from None
        return book

    def save(self, path: str | Path) -> None:
        """Write JSON (to a temporary file first, so a crash never leaves half a playbook)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Playbook:
        """Read a playbook saved with `save`; PlaybookError says what is wrong with the file."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise PlaybookError(f"{path}: not JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))

    def copy(self) -> Playbook:
        """A deep copy."""
        return Playbook.from_dict(json.loads(json.dumps(self.to_dict())))
