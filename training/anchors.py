"""Anchor sets: the texts a codec is aligned on and shared-space maps are fitted on.

An anchor is one message and the three prompts around it:

* ``sender``: what the speaking model reads before it thinks (its latent steps are encoded);
* ``teacher``: the listener's prompt with the message written in it as TEXT;
* ``student``: the same prompt without the message: it arrives as a latent at the image slots;
* ``message``: the message text itself; ``answer`` (optional): a reference reply, used only to
  score evaluations; training is label-free (it distils the teacher's own replies).

Anchor files are JSON Lines, one object with those fields per line (`read_anchors` checks them and
names the line of the first problem). Two ways to make one:

* `tinyworld_anchors`: episodes of the tinyworld tasks (the sender's observation, the receiver's
  text- and latent-mode prompts);
* `anchors_from_texts`: any local text or JSONL files (one message per line, or a field of each
  JSON object) put into prompt templates (settings).

Command line::

    latentwire train anchors --tinyworld secret --n 2000 --out anchors.jsonl
    latentwire train anchors --from notes.txt more.jsonl --field text --out anchors.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from latentwire.errors import ConfigError

from ._jobs import as_if_created

__all__ = ["Anchor", "AnchorError", "anchors_from_texts", "main", "read_anchors", "tinyworld_anchors",
           "write_anchors"]

FIELDS = ("sender", "teacher", "student", "message")

# Templates of `anchors_from_texts` ({message} is replaced); settings of the command.
SENDER_TEMPLATE = "Read this and remember it:\n{message}"
TEACHER_TEMPLATE = "message: {message}\nRepeat the message."
STUDENT_TEMPLATE = "Repeat the message."


class AnchorError(ConfigError):
    """An anchor file or text that cannot be used (empty, malformed, a missing field)."""


@dataclass(frozen=True)
class Anchor:
    """One alignment example (see the module docstring)."""

    sender: str
    teacher: str
    student: str
    message: str
    answer: str | None = None
    task: str | None = None

    def to_json(self) -> str:
        """One JSON Lines line (without the newline); absent optional fields are left out."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, ensure_ascii=False)


def tinyworld_anchors(task: str, n: int, *, length: int = 8, seed: int = 0, start: int = 0) -> list[Anchor]:
    """``n`` anchors from the tinyworld ``task`` (one-sender tasks), episodes ``start..start+n-1``
    of stream ``seed``."""
    from latentwire.tinyworld.screen import screen_text
    from latentwire.tinyworld.tasks import make_task

    if n < 1:
        raise AnchorError(f"n must be >= 1, got {n}")
    out = []
    for ep in make_task(task, length).episodes(n, seed=seed, start=start):
        if len(ep.senders) != 1:
            raise AnchorError(f"tinyworld task {task!r} has {len(ep.senders)} senders; anchors need one")
        receiver = ep.receiver.name
        out.append(Anchor(sender=ep.prompt(ep.senders[0].name), teacher=ep.prompt(receiver),
                          student=ep.prompt(receiver, mode="latent"), message=screen_text(ep, receiver),
                          answer=ep.answer, task=task))
    return out


def _texts(paths: Sequence[str | os.PathLike[str]], field: str) -> Iterator[tuple[str, int, str]]:
    """``(path, line number, message)`` of every non-empty line (``.jsonl``: its ``field``)."""
    for path in map(Path, paths):
        if not path.is_file():
            raise AnchorError(f"{path}: no such file")
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                if path.suffix == ".jsonl":
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise AnchorError(f"{path}:{number}: not JSON ({exc.msg})") from None
                    if not isinstance(record, dict) or not isinstance(record.get(field), str):
                        raise AnchorError(f"{path}:{number}: needs a string field {field!r}")
                    line = record[field].strip()
                yield str(path), number, line


def anchors_from_texts(paths: Sequence[str | os.PathLike[str]], *, field: str = "text",
                       sender: str = SENDER_TEMPLATE, teacher: str = TEACHER_TEMPLATE,
                       student: str = STUDENT_TEMPLATE, max_chars: int | None = None) -> list[Anchor]:
    """Anchors from local text files (one message per line) or JSONL files (``field`` of each
    object), through the prompt templates (``{message}`` is replaced). Duplicates are dropped;
    messages longer than ``max_chars`` are refused with their place."""
    for name, template in (("sender", sender), ("teacher", teacher)):
        if "{message}" not in template:
            raise AnchorError(f"the {name} template must contain {{message}}, got {template!r}")
    seen: set[str] = set()
    out = []
    for path, number, message in _texts(paths, field):
        if max_chars is not None and len(message) > max_chars:
            raise AnchorError(f"{path}:{number}: message of {len(message)} characters, limit {max_chars}")
        if message in seen:
            continue
        seen.add(message)
        out.append(Anchor(sender=sender.format(message=message), teacher=teacher.format(message=message),
                          student=student.format(message=message), message=message))
    if not out:
        raise AnchorError(f"no messages in {', '.join(map(str, paths))}")
    return out


def write_anchors(anchors: Iterable[Anchor], path: str | os.PathLike[str]) -> Path:
    """Write anchors as JSON Lines, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        as_if_created(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for anchor in anchors:
                handle.write(anchor.to_json() + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_anchors(path: str | os.PathLike[str]) -> list[Anchor]:
    """Read and check an anchor file; `AnchorError` names the file and line of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise AnchorError(f"anchor file {path} does not exist")
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AnchorError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise AnchorError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            missing = [f for f in FIELDS if not isinstance(record.get(f), str) or not record[f]]
            if missing:
                raise AnchorError(f"{path}:{number}: missing or empty field(s) {', '.join(missing)}")
            unknown = set(record) - {*FIELDS, "answer", "task"}
            if unknown:
                raise AnchorError(f"{path}:{number}: unknown field(s) {', '.join(sorted(unknown))}")
            out.append(Anchor(**record))
    if not out:
        raise AnchorError(f"anchor file {path} is empty")
    return out


def main(argv: list[str] | None = None) -> int:
    """``latentwire train anchors``: build an anchor file from tinyworld or local texts."""
    parser = argparse.ArgumentParser(prog="latentwire train anchors", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tinyworld", metavar="TASK", help="a one-sender tinyworld task, e.g. secret")
    source.add_argument("--from", dest="paths", nargs="+", metavar="FILE", help="text or .jsonl files")
    parser.add_argument("--out", required=True, help="anchor file to write (JSON Lines)")
    parser.add_argument("--n", type=int, default=2000, help="tinyworld: number of anchors")
    parser.add_argument("--length", type=int, default=8, help="tinyworld: message length")
    parser.add_argument("--seed", type=int, default=0, help="tinyworld: episode stream")
    parser.add_argument("--field", default="text", help=".jsonl: the field holding the message")
    parser.add_argument("--sender-template", default=SENDER_TEMPLATE)
    parser.add_argument("--teacher-template", default=TEACHER_TEMPLATE)
    parser.add_argument("--student-template", default=STUDENT_TEMPLATE)
    parser.add_argument("--max-chars", type=int, default=None, help="refuse longer messages")
    args = parser.parse_args(argv)
    if args.tinyworld:
        anchors = tinyworld_anchors(args.tinyworld, args.n, length=args.length, seed=args.seed)
    else:
        anchors = anchors_from_texts(args.paths, field=args.field, sender=args.sender_template,
                                     teacher=args.teacher_template, student=args.student_template,
                                     max_chars=args.max_chars)
    print(f"{len(anchors)} anchors -> {write_anchors(anchors, args.out)}")
    return 0
