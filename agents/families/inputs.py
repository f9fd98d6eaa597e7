"""`InjectedInputs`: the forward kwargs the merge prepares, with what the family hooks continue from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["InjectedInputs"]


@dataclass
class InjectedInputs(Mapping[str, Any]):
    """What `merge.inject` prepared; a mapping of forward kwargs, so ``model(**inputs)`` works.

    Fields (B = batch, T = sequence length, D = hidden size):

    - ``inputs_embeds`` ``(B, T, D)``: the language model's layer-0 input, with the visual
      vectors at the image slots.
    - ``attention_mask`` ``(B, T)``: ones where not given.
    - ``image_mask`` ``(B, T)`` bool: the image-placeholder positions.
    - ``position_ids``: Qwen's multimodal rope positions ``(3, B, T)``; None where the model
      infers positions itself.
    - ``rope_deltas`` ``(B, 1)``: Qwen only; continue with `FamilyFacts.position_ids_after`.
    - ``kwargs``: the exact forward kwargs (normally ``inputs_embeds``, ``attention_mask`` and
      any positions / token types the family needs).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    image_mask: torch.Tensor
    kwargs: dict[str, Any]
    position_ids: torch.Tensor | None = None
    rope_deltas: torch.Tensor | None = None

    def __getitem__(self, key: str) -> Any:
        return self.kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kwargs)

    def __len__(self) -> int:
        return len(self.kwargs)
