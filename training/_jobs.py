"""How jobs write their artefacts: a finished output folder swapped into place, and the digest a
fitted artefact records of its sources. (The command line, schedule, metrics and checkpoints of
a training run are the loop's: `loop`.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
