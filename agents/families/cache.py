"""Constants computed once per model from its frozen weights: blank-image embeddings, the
realignment matrix, embedding scales.

Held weakly per model object, so a dropped model frees its entries. The towers and embeddings are
frozen in latentwire; after changing a model's weights call `clear_cache`.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

__all__ = ["clear_cache", "model_cache"]

_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


def model_cache(model: torch.nn.Module) -> dict[Any, Any]:
    """The cache dict of ``model`` (created empty on first use)."""
    return _CACHE.setdefault(model, {})


def clear_cache(model: torch.nn.Module) -> None:
    """Forget everything cached for ``model``."""
    _CACHE.pop(model, None)
