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

# The digest a fitted artefact records of its sources; tinyworld.space checks shipped files with it.
from latentwire.tinyworld.space import file_sha256

__all__ = ["as_if_created", "file_sha256", "replaced_folder"]


def as_if_created(path: str | os.PathLike[str]) -> None:
    """Give a scratch file or folder from `tempfile` (created 0600 / 0700, private) the
    permissions a plain ``open``/``mkdir`` would have given it under the process umask, so an
    artefact renamed into place is as readable as any other file the user writes."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)


@contextlib.contextmanager
def replaced_folder(final: Path) -> Iterator[Path]:
    """Yield a scratch folder beside ``final`` to write into; when the block ends normally it
    takes ``final``'s place (any old one removed), when it raises it is removed. A reader never
    sees a half-written ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    as_if_created(scratch)
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already when it was moved into place

