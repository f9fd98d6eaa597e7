"""Gemma 3: fixed-size images wrapped in begin/end-of-image tokens, bidirectional image attention.

The facts and quirks:

- Each image is ``mm_tokens_per_image`` slots (the SigLIP patches average-pooled), laid out as the
  processor does: ``"\\n\\n" <start_of_image> <image_soft_token> x n <end_of_image> "\\n\\n"``.
- Image tokens attend to each other bidirectionally; the model does that when given
  ``token_type_ids`` (1 at image tokens), so both the pixel path and `inject` pass them.
- The input embeddings include a sqrt(hidden_size) scale inside the embedding module, so the
  shared code always calls ``get_input_embeddings()`` rather than reading its weight.
- SigLIP normalisation (mean = std = 0.5).
- Prompt masks are built here when the prompt fits the sliding window: transformers builds the
  sliding layers' mask (sliding AND (causal OR image block)) through ``torch.vmap``, which is
  slow on CPU, while inside the window it equals the full layers' mask (same logits; what it
  saves: docs/benchmarks.md, `latentwire bench mas`, "Wall-clock").
"""

from __future__ import annotations

from typing import Any

import torch

from .base import FamilyAdapter
from .facts import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

__all__ = ["Gemma3Adapter"]


class Gemma3Adapter(FamilyAdapter):
    """Gemma 3 (``Gemma3ForConditionalGeneration``)."""

    family = "gemma3"
    model_types = ("gemma3",)
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    token_types = ("token_type_ids", torch.long)

    def slots_per_image(self) -> int:
        return int(self.config.mm_tokens_per_image)

    def image_block(self, tokenizer: Any, n_slots: int) -> list[int | str]:
        cfg = self.config
        image = [self.image_token_id] * n_slots
        return ["\n\n", int(cfg.boi_token_index), *image, int(cfg.eoi_token_index), "\n\n"]

    def finish_kwargs(self, kwargs, *, input_ids, text_embeds, visual, extras):
        types = self.token_type_inputs(input_ids)
        masks = self._prompt_masks(kwargs, types["token_type_ids"])
        return {**kwargs, **types, **({"attention_mask": masks} if masks is not None else {})}

    def _prompt_masks(self, kwargs: dict[str, Any], token_types: torch.Tensor) -> dict[str, Any] | None:
        """The per-layer-type masks of a prompt forward (no cache), or None to let the model build
        them: where the prompt is longer than the sliding window, or this transformers lacks the
        pieces. Inside the window the sliding overlay masks nothing, so both layer types share the
        full layers' mask (causal OR bidirectional within each image), which transformers builds
        without vmap."""
        text_config = self.config.get_text_config()
        window = getattr(text_config, "sliding_window", None)
        if window is not None and token_types.shape[1] > window:
            return None
        try:
            from transformers.masking_utils import create_causal_mask
        except ImportError:  # pragma: no cover - older transformers: the model's own masks
            return None
        is_image = token_types == 1  # (B, T)
        starts = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:, :-1]
        blocks = torch.where(is_image, starts.long().cumsum(dim=1) - 1, -1)  # image block id, -1 = text
        try:
            full = create_causal_mask(config=text_config, inputs_embeds=kwargs["inputs_embeds"],
                                      attention_mask=kwargs.get("attention_mask"), cache=None,
                                      position_ids=kwargs.get("position_ids"), block_sequence_ids=blocks)
        except TypeError:  # pragma: no cover - a transformers without block_sequence_ids
            return None
        return {"full_attention": full, "sliding_attention": full}
