"""LLaVA: a CLIP tower read at one layer, a bare run of ``<image>`` placeholders.

The facts:

- Each image is ``(image_size / patch_size)^2`` slots (plus one when the feature strategy is
  ``"full"``, which keeps CLS), with no wrapper tokens (the shared default block).
- The image features come from ``config.vision_feature_layer`` with
  ``config.vision_feature_select_strategy``, passed to ``get_image_features``.
- CLIP normalisation and one square image per block (the shared defaults).
"""

from __future__ import annotations

from .base import FamilyAdapter

__all__ = ["LlavaAdapter"]


class LlavaAdapter(FamilyAdapter):
    """LLaVA 1.5 style (``LlavaForConditionalGeneration``)."""

    family = "llava"
    model_types = ("llava",)
    image_feature_config = ("vision_feature_layer", "vision_feature_select_strategy")

    def slots_per_image(self) -> int:
        vc = self.vision_config
        full = self.config.vision_feature_select_strategy == "full"  # "default" drops CLS
        return (int(vc.image_size) // int(vc.patch_size)) ** 2 + int(full)
