"""Codec checkpoints: a folder with config.json and model.safetensors (no pickle), local or Hub.

Reading checks everything before anything is loaded, the way nanoGPT's `from_pretrained` maps
names and shapes explicitly: a partial or silent load is never possible.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import CodecCheckpointError as CheckpointError, CodecError
from .config import CodecConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CODEC_TYPE = "latentwire-universal-visual-codec"  # marks config.json, so a foreign folder is refused
FORMAT_VERSION = 1

# Names folders saved before the shared space was renamed from "hub" still use; mapped on load.
LEGACY_CONFIG_KEYS = {"hub_hidden": "shared_hidden"}
LEGACY_TENSOR_PREFIXES = {"hub.to_hub.": "shared.to_shared.", "hub.from_hub.": "shared.from_shared."}


def write(folder: Path, config: CodecConfig, tensors: dict[str, Tensor]) -> None:
    """Write both files under temporary names, then rename: a failed save leaves no half checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    header = {"codec_type": CODEC_TYPE, "format_version": FORMAT_VERSION, **config.to_dict()}
    tmp_weights, tmp_config = folder / f".{WEIGHTS_NAME}.tmp", folder / f".{CONFIG_NAME}.tmp"
    try:
        save_file(tensors, tmp_weights, metadata={"format": "pt"})  # "pt": what transformers expects
        tmp_config.write_text(json.dumps(header, indent=2) + "\n")
        os.replace(tmp_weights, folder / WEIGHTS_NAME)
        os.replace(tmp_config, folder / CONFIG_NAME)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_config.unlink(missing_ok=True)


def read_config(folder: Path) -> CodecConfig:
    """The `CodecConfig` in ``folder``/config.json, or `CheckpointError` saying what is wrong."""
    where = str(folder)
    try:
        raw: Any = json.loads((folder / CONFIG_NAME).read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(where, f"no {CONFIG_NAME} in the folder") from exc
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(where, f"{CONFIG_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.pop("codec_type", None) != CODEC_TYPE:
        raise CheckpointError(where, f"{CONFIG_NAME} is not a latentwire codec config "
                                     f"(codec_type is not {CODEC_TYPE!r})")
    if (version := raw.pop("format_version", None)) != FORMAT_VERSION:
        raise CheckpointError(where, f"{CONFIG_NAME} has format_version {version!r}; "
                                     f"this latentwire reads {FORMAT_VERSION}")
    for old, new in LEGACY_CONFIG_KEYS.items():
        if old in raw and new not in raw:
            raw[new] = raw.pop(old)
    try:
        return CodecConfig.from_dict(raw)
    except (CodecError, TypeError) as exc:
        raise CheckpointError(where, f"bad {CONFIG_NAME}: {exc}") from exc


def read_tensors(folder: Path) -> dict[str, Tensor]:
    """The tensors in ``folder``/model.safetensors, or `CheckpointError` for a missing or corrupt file."""
    try:
        return load_file(folder / WEIGHTS_NAME)
    except FileNotFoundError as exc:
        raise CheckpointError(str(folder), f"no {WEIGHTS_NAME} in the folder") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(str(folder), f"{WEIGHTS_NAME} is corrupt or unreadable: {exc}") from exc


def renamed_legacy(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` with the state-dict names of older checkpoints (``hub.to_hub.*``) mapped to
    today's (``shared.to_shared.*``); every other name is kept as is."""
    def current(name: str) -> str:
        for old, new in LEGACY_TENSOR_PREFIXES.items():
            if name.startswith(old):
                return new + name[len(old):]
        return name

    return {current(name): t for name, t in tensors.items()}


def check_tensors(expected: dict[str, Tensor], tensors: dict[str, Tensor], source: str) -> None:
    """Raise `CheckpointError` naming every missing, unexpected, misshapen or non-float tensor."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{name}: checkpoint {tuple(tensors[name].shape)} vs config {tuple(t.shape)}"
             for name, t in expected.items() if name in tensors and tensors[name].shape != t.shape]
    # Casting an integer tensor into a float parameter would "work" and mean nothing.
    not_float = [f"{name}: {tensors[name].dtype}" for name in expected
                 if name in tensors and not tensors[name].is_floating_point()]
    problems = [f"{label} {', '.join(items)}" for label, items in (
        ("missing tensors:", missing), ("unexpected tensors:", unexpected),
        ("wrong shapes:", wrong), ("non-float tensors:", not_float)) if items]
    if problems:
        raise CheckpointError(source, "; ".join(problems))


def resolve_folder(source: str | os.PathLike[str], subfolder: str | None = None,
                   revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as is; anything else is taken as a Hugging Face Hub repo id and downloaded."""
    path = Path(source)
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise CheckpointError(str(path), f"no subfolder {subfolder!r}")
        return folder
    if path.exists():
        raise CheckpointError(str(path), f"is a file; expected a folder with {CONFIG_NAME} "
                                         f"and {WEIGHTS_NAME}")
    from huggingface_hub import snapshot_download  # only here: a local load needs no Hub client
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = str(source)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise CheckpointError(repo_id, "no such local folder, and not a Hugging Face Hub repo id") from exc
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        root = snapshot_download(repo_id, revision=revision, token=token,
                                 allow_patterns=[prefix + CONFIG_NAME, prefix + WEIGHTS_NAME])
    except Exception as exc:  # network, auth, not found: one thing to the caller, chained for detail
        raise CheckpointError(repo_id, "not a local folder, and the Hugging Face Hub download failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
    return Path(root) / prefix if prefix else Path(root)
