"""Pre-trained tinyworld checkpoints: shipped in the package, or trained once and cached.

    >>> from latentwire.tinyworld.checkpoints import load_pretrained
    >>> model, tokenizer = load_pretrained("gemma3")      # shipped: no training, no download

A checkpoint is a folder: ``config.json`` + ``model.safetensors`` (transformers'
``save_pretrained``; no pickle anywhere), ``tinyworld_tokenizer.json`` and ``tinyworld.json``
(format marker, family, step, the run config, task mix and text-mode eval). ``tinyworld.json``
is written last, so a folder without it is an unfinished save.

`load_pretrained` looks for the family in this order: the checkpoint shipped with the package
(``tinyworld/checkpoints/<family>/``) and the user cache (``$LATENTWIRE_CACHE/tinyworld/
<family>``, default ``~/.cache/latentwire/tinyworld/<family>``). Training one on first use is
the training package's job (`latentwire.training.pretrain.load_or_train`), so this floor never
imports training. A checkpoint that is present but broken is an error, never retrained silently.

`load_checkpoint` checks everything a folder needs before returning a model: files present,
format marker, family, a readable safetensors file, and every tensor the architecture expects
(transformers alone would randomly initialise a missing tensor with only a warning).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latentwire.agents.errors import CheckpointError as _CheckpointError

from .models import FAMILIES, _merge
from .tokenizer import TinyTokenizer

__all__ = [
    "CheckpointError",
    "SHIPPED_DIR",
    "cache_dir",
    "load_checkpoint",
    "load_pretrained",
    "merge_overrides",
    "read_meta",
    "save_checkpoint",
    "shipped_path",
]

#: Where the shipped checkpoints live inside the package (one folder per family).
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
META_NAME = "tinyworld.json"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tinyworld_tokenizer.json"
FORMAT = "latentwire-tinyworld"
FORMAT_VERSION = 1
REQUIRED = (CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME, META_NAME)


class CheckpointError(_CheckpointError):
    """A tinyworld checkpoint folder that is missing, incomplete, corrupt or of another family.

    ``source``: the folder; ``reason``: what is wrong. Nothing is returned half-loaded.
    """

    def __init__(self, source: str | Path, reason: str) -> None:
        super().__init__(str(source), reason, what="tinyworld checkpoint")


def merge_overrides(*overrides: dict[str, Any]) -> dict[str, Any]:
    """`tiny_config` override dicts merged left to right (nested config dicts key by key)."""
    out: dict[str, Any] = {}
    for o in overrides:
        out = _merge(out, o)
    return out


def shipped_path(family: str) -> Path:
    """The folder of ``family``'s shipped checkpoint (it may not exist)."""
    return SHIPPED_DIR / family


def cache_dir() -> Path:
    """``$LATENTWIRE_CACHE/tinyworld`` (default ``~/.cache/latentwire/tinyworld``)."""
    root = os.environ.get("LATENTWIRE_CACHE") or Path.home() / ".cache" / "latentwire"
    return Path(root) / "tinyworld"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (we check and report ourselves)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def save_checkpoint(model: Any, folder: str | Path, meta: dict[str, Any], *, dtype: str = "float32") -> Path:
    """Write ``model`` (``save_pretrained``), the tokenizer and ``tinyworld.json`` into ``folder``.

    ``meta`` (JSON-serialisable: step, config, eval, ...) is stored with the format marker and the
    family. ``dtype`` is the stored precision of the weights (loading always gives float32
    unless asked otherwise). ``tinyworld.json`` goes last, so it marks a complete save.
    """
    import copy

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_NAME).unlink(missing_ok=True)  # an interrupted overwrite must not look complete
    to_save = model if dtype == "float32" else copy.deepcopy(model).to(getattr(torch, dtype))
    with _quiet():
        to_save.save_pretrained(folder)
    TinyTokenizer().save_pretrained(folder)
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": model.config.model_type, **meta}
    tmp = folder / f".{META_NAME}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / META_NAME)
    return folder


def read_meta(folder: str | Path) -> dict[str, Any]:
    """``tinyworld.json`` of a checkpoint folder, checked for the format marker."""
    path = Path(folder) / META_NAME
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(folder, f"no {META_NAME} (not a tinyworld checkpoint, or an unfinished save)") \
            from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(folder, f"{META_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(folder, f"{META_NAME} is not a tinyworld checkpoint record "
                                      f"(format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(folder, f"{META_NAME} has format_version {meta.get('format_version')!r}; "
                                      f"this latentwire reads {FORMAT_VERSION}")
    return meta


def load_checkpoint(folder: str | Path, *, family: str | None = None, dtype: Any = None,
                    device: Any = None) -> tuple[Any, TinyTokenizer]:
    """``(model, tokenizer)`` from a checkpoint folder, in eval mode; checked in full first.

    ``family``: refuse a checkpoint of another family. ``dtype``: default float32.
    Raises `CheckpointError` naming the folder and what is wrong (a missing file, bad JSON, a
    corrupt safetensors file, missing/unexpected/mis-shaped tensors, another vocabulary).
    """
    import torch
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig, AutoModelForImageTextToText

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "no such folder")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(folder, f"missing {', '.join(missing)}")
    meta = read_meta(folder)
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(folder, f"bad {CONFIG_NAME}: {exc}") from exc
    if config.model_type != meta.get("family"):
        raise CheckpointError(folder, f"{CONFIG_NAME} is a {config.model_type!r} model but {META_NAME} "
                                      f"says {meta.get('family')!r}")
    if family is not None and config.model_type != family:
        raise CheckpointError(folder, f"it holds a {config.model_type!r} model, not {family!r}")
    try:
        with safe_open(folder / WEIGHTS_NAME, framework="pt") as f:
            list(f.keys())
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(folder, f"{WEIGHTS_NAME} is corrupt: {exc}") from exc
    try:
        with _quiet():
            model, info = AutoModelForImageTextToText.from_pretrained(
                folder, dtype=dtype or torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(folder, f"{WEIGHTS_NAME} does not load: {exc}") from exc
    problems = []
    for key, what in (("missing_keys", "missing tensors"), ("unexpected_keys", "unexpected tensors"),
                      ("mismatched_keys", "tensors of the wrong shape"), ("error_msgs", "errors")):
        found = sorted(str(k) for k in info.get(key) or ())
        if found:
            more = f" (+{len(found) - 5} more)" if len(found) > 5 else ""
            problems.append(f"{what}: {', '.join(found[:5])}{more}")
    if problems:
        raise CheckpointError(folder, "; ".join(problems))
    try:
        tokenizer = TinyTokenizer.from_pretrained(folder)
    except ValueError as exc:
        raise CheckpointError(folder, str(exc)) from exc
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def load_pretrained(family: str, *, device: Any = None) -> tuple[Any, TinyTokenizer]:
    """``(model, tokenizer)`` of ``family``'s pre-trained tinyworld model, in eval mode.

    The shipped checkpoint if the package has one, else the cached one (under `cache_dir`).
    Raises `latentwire.errors.ConfigError` for an unknown family and `CheckpointError` for a
    broken checkpoint or none at all (naming the command that trains and caches one;
    `latentwire.training.pretrain.load_or_train` does it from code).
    """
    from latentwire.errors import ConfigError

    if family not in FAMILIES:
        raise ConfigError(f"tinyworld has no family {family!r}; supported: {', '.join(FAMILIES)}")
    shipped = shipped_path(family)
    if shipped.is_dir() and any(shipped.iterdir()):
        return load_checkpoint(shipped, family=family, device=device)
    cached = cache_dir() / family
    if cached.is_dir():
        return load_checkpoint(cached, family=family, device=device)
    raise CheckpointError(cached, f"no shipped checkpoint for {family!r} at {shipped} and none cached; "
                                  f"train one with: latentwire train tinyworld --family {family} --out-dir {cached}")
