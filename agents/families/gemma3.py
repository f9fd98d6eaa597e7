"""Gemma 3: fixed-size images wrapped in begin/end-of-image tokens, bidirectional image attention.

What differs from the shared adapter:

- Each image is ``mm_tokens_per_image`` slots (the SigLIP patches average-pooled), laid out as the
  processor does: ``"\\n\\n" <start_of_image> <image_soft_token> x n <end_of_image> "\\n\\n"``.
- Image tokens attend to each other bidirectionally; the model does that when given
  ``token_type_ids`` (1 at image tokens), so both the pixel path and `inject` pass them.
- The input embeddings include a sqrt(hidden_size) scale inside the embedding module, so the
  shared code always calls ``get_input_embeddings()`` rather than reading its weight.
- SigLIP normalisation (mean = std = 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, FamilyAdapter

__all__ = ["Gemma3Adapter"]


class Gemma3Adapter(FamilyAdapter):
    """Gemma 3 (``Gemma3ForConditionalGeneration``)."""

    family = "gemma3"
    model_types = ("gemma3",)
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD

    def slots_per_image(self) -> int:
        return int(self.config.mm_tokens_per_image)

    def image_block(self, tokenizer: Any, n_slots: int) -> list[int | str]:
        cfg = self.config
        image = [self.image_token_id] * n_slots
        return ["\n\n", int(cfg.boi_token_index), *image, int(cfg.eoi_token_index), "\n\n"]

    def blank_pixel_inputs(self, image_slots: Sequence[int], device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {"pixel_values": self._square_images(len(image_slots), device, dtype)}  # (I, 3, S, S)

    def token_type_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"token_type_ids": self.image_mask(input_ids).long()}  # (B, T): 1 = image

    def _finish_kwargs(self, kwargs, *, input_ids, text_embeds, visual, extras):
        return {**kwargs, **self.token_type_inputs(input_ids)}
