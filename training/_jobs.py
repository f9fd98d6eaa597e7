"""What every training job shares: its command line, its learning-rate schedule, its metrics
file, and how it swaps a finished output folder into place."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def replaced_folder(final: Path) -> Iterator[Path]:
    """Yield a scratch folder beside ``final`` to write into; when the block ends normally it
    takes ``final``'s place (any old one removed), when it raises it is removed. A reader never
    sees a half-written ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already when it was moved into place


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (what a fitted artefact records of its sources)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def warmup_cosine(step: int, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def write_jsonl(handle: Any, record: dict[str, Any]) -> None:
    """Append one metrics record (no-op without a handle: non-main processes write nothing)."""
    if handle is not None:
        handle.write(json.dumps(record) + "\n")
        handle.flush()  # so a run can be followed (and a crash leaves its history)


def config_parser(config_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """One ``--flag`` per field of the dataclass ``config_cls`` (tuples take several values,
    dicts JSON). ``out_dir`` keeps its class default, a template the config fills in."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(config_cls, "out_dir") if f.name == "out_dir" else getattr(defaults, f.name)
        kind = str(f.type)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif "tuple" in kind:
            item = int if "int" in kind else str
            parser.add_argument(flag, nargs="+", type=item, default=default)
        elif "dict" in kind:
            parser.add_argument(flag, type=json.loads, default=default, help="JSON object")
        elif "float" in kind:
            parser.add_argument(flag, type=float, default=default)
        elif "int" in kind:
            parser.add_argument(flag, type=int, default=default)
        else:
            parser.add_argument(flag, type=str, default=default)
    return parser
