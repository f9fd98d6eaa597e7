"""The shipped, trained tinyworld shared space: every family's codec and maps, ready to talk.

    >>> from latentwire.tinyworld.space import load_space
    >>> space = load_space()                       # shipped: tinyworld/space/, no training
    >>> space.families, space.lengths
    (['qwen2_vl', ..., 'smolvlm'], [8, 16])
    >>> codec, latent_steps = space.codec("llava")

A space folder holds one sub-folder per family (``config.json``, ``model.safetensors``: the codec
with its shared-space maps; ``shared_fit.json``: how it was fitted and which model it runs with)
and ``space.json``: the format marker, the recipe it was built with (`latentwire train ship`), the
message lengths its codecs were trained on, and the sha256 of every file, the tinyworld
checkpoints' weights included. `load_space` checks all of that before any model runs, so a space
built for other checkpoints (another tinyworld version), a family it lacks or a message length it
was never trained on is one clear `SpaceError` naming what is missing and how to make it.

Folders of ``latentwire train space-maps`` (no ``space.json``) load too; they record no trained
lengths, so only the family check applies to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentwire.errors import ConfigError

from .checkpoints import SHIPPED_DIR

__all__ = ["FIT_FILE", "LEGACY_FIT_FILE", "MANIFEST", "SHIPPED_SPACE", "Space", "SpaceError", "file_sha256",
           "load_space", "read_fit_record", "training_partners"]

#: Where the shipped space lives inside the package.
SHIPPED_SPACE = Path(__file__).resolve().parent / "space"
MANIFEST = "space.json"
FIT_FILE = "shared_fit.json"
# Folders fitted before the shared space was renamed from "hub" hold this file, with these keys.
LEGACY_FIT_FILE = "hub_fit.json"
LEGACY_FIT_KEYS = {"hub_hidden": "shared_hidden", "to_hub_mse": "to_shared_mse",
                   "from_hub_mse": "from_shared_mse"}
FORMAT = "latentwire-tinyworld-space"
HOW_TO_MAKE = "build one with `latentwire train ship --out DIR` (or `train space-maps`) and pass --space DIR"


class SpaceError(ConfigError):
    """A shared-space folder that cannot serve the request: missing, of other checkpoints, without a
    family, or untrained for a message length. The message names what is missing and how to make it."""


@dataclass
class Space:
    """A checked shared-space folder: its families, trained lengths and manifest."""

    folder: Path
    families: list[str]
    lengths: list[int] | None  # None: not recorded (a `train space-maps` folder)
    manifest: dict[str, Any] = field(default_factory=dict)

    def record(self, family: str) -> dict[str, Any]:
        """The fit record of ``family`` (how it was fitted; its ``model`` and ``latent_steps``)."""
        self.require([family])
        return read_fit_record(self.folder / family) or {}

    def codec(self, family: str, *, device: Any = None) -> tuple[Any, int]:
        """``(codec, latent_steps)`` of ``family``: its encoder, maps and decoder, in float32."""
        from latentwire.agents.codec import UniversalVisualCodec

        record = self.record(family)
        codec = UniversalVisualCodec.from_pretrained(self.folder / family, device=device)
        return codec.eval(), int(record.get("latent_steps", 1))

    def require(self, families: Iterable[str] = (), lengths: Iterable[int] = ()) -> None:
        """Raise `SpaceError` unless every family is here and every length was trained."""
        missing = [f for f in families if f not in self.families]
        if missing:
            raise SpaceError(f"the shared space {self.folder} has no codec for {', '.join(missing)} (it has "
                             f"{', '.join(self.families)}); {HOW_TO_MAKE} with those families")
        if self.lengths is not None:
            untrained = sorted({int(n) for n in lengths} - set(self.lengths))
            if untrained:
                raise SpaceError(f"the codecs in {self.folder} were trained on messages of "
                                 f"{', '.join(map(str, self.lengths))} characters, "
                                 f"not {', '.join(map(str, untrained))}; "
                                 "use one of those lengths, or build a space whose recipe trains that length "
                                 "(`latentwire train ship --out DIR`) and pass --space DIR")

    @property
    def shipped(self) -> bool:
        """Whether this is the space shipped with the package."""
        return self.folder.resolve() == SHIPPED_SPACE


def read_fit_record(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The fit record `train space-maps` wrote in a family folder (``shared_fit.json``, or
    ``hub_fit.json`` written before the rename, its keys mapped to today's), or None if the
    folder has neither."""
    folder = Path(folder)
    if (folder / FIT_FILE).is_file():
        return json.loads((folder / FIT_FILE).read_text())
    if not (folder / LEGACY_FIT_FILE).is_file():
        return None
    record = json.loads((folder / LEGACY_FIT_FILE).read_text())
    return {LEGACY_FIT_KEYS.get(key, key): value for key, value in record.items()}


def training_partners(record: dict[str, Any], family: str) -> tuple[str | None, str]:
    """``(encoder partner, decoder partner)`` of ``family``'s codec from its record (a fit record, or a
    ``train codec`` run config with its ``scheme``): whose decoder its encoder was trained against
    (None: nobody's) and whose encoder its decoder was trained to read. A codec trained alone, its own;
    an anchored one, the anchor's; a shared-space decoder, the reference's encoder; an encoder tuned
    through the reference's decoder (`train ship`'s tune), the reference."""
    kind = record.get("scheme", "")  # "anchored to X", "anchored to X (decoder only)"
    anchored = kind.split()[2] if kind.startswith("anchored to ") else None
    untrained_encoder = record.get("decoder_anchored_to") or record.get("decoder_only")
    encoder = record.get("encoder_tuned_to") or (None if untrained_encoder else (anchored or family))
    return encoder, record.get("decoder_anchored_to") or anchored or family


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks: what an artefact records of its sources and
    what `load_space` checks them against."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_space(folder: str | os.PathLike[str] | None = None, *, families: Iterable[str] = (),
               lengths: Iterable[int] = ()) -> Space:
    """The space in ``folder`` (default: the shipped one), checked for ``families`` and ``lengths``.

    Raises `SpaceError` when the folder is missing, is not a space, was built for other tinyworld
    checkpoints than the ones installed, or lacks a family or a trained length."""
    path = SHIPPED_SPACE if folder is None else Path(folder)
    if not path.is_dir():
        if folder is None:
            raise SpaceError(f"this installation ships no trained tinyworld space ({SHIPPED_SPACE} is "
                             f"missing); {HOW_TO_MAKE}")
        raise SpaceError(f"no shared-space folder {path}; {HOW_TO_MAKE}")
    members = sorted(p.name for p in path.iterdir()
                     if p.is_dir() and ((p / FIT_FILE).is_file() or (p / LEGACY_FIT_FILE).is_file()))
    manifest: dict[str, Any] = {}
    trained: list[int] | None = None
    if (path / MANIFEST).is_file():
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise SpaceError(f"{path / MANIFEST} is not a tinyworld space manifest; {HOW_TO_MAKE}")
        trained = [int(n) for n in manifest.get("lengths", [])]
        _check_checkpoints(path, manifest)
    if not members:
        raise SpaceError(f"{path} holds no family codecs (no {FIT_FILE} in any sub-folder); {HOW_TO_MAKE}")
    space = Space(path, members, trained, manifest)
    space.require(families, lengths)
    return space


def _check_checkpoints(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a space whose codecs were fitted to other tinyworld weights than the installed ones
    (the digests recorded at build time against the shipped checkpoints')."""
    for name, entry in manifest.get("files", {}).items():
        parts = Path(name).parts
        if len(parts) != 3 or parts[0] != "checkpoints" or parts[2] != "model.safetensors":
            continue
        installed = SHIPPED_DIR / parts[1] / "model.safetensors"
        if not installed.is_file() or file_sha256(installed) != entry["sha256"]:
            raise SpaceError(f"the shared space {path} was built for other tinyworld {parts[1]} weights "
                             f"than the installed {installed} (another tinyworld version); rebuild it for "
                             "these with `latentwire train ship --out DIR`, or reinstall the package whose "
                             "space it is")
