"""LLaVA: a CLIP tower read at one layer, a bare run of ``<image>`` placeholders.

What differs from the shared adapter:

- Each image is ``(image_size / patch_size)^2`` slots (plus one when the feature strategy is
  ``"full"``, which keeps CLS), with no wrapper tokens.
- The image features come from ``config.vision_feature_layer`` with
  ``config.vision_feature_select_strategy``, passed to ``get_image_features``.
- CLIP normalisation (the shared default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import FamilyAdapter

__all__ = ["LlavaAdapter"]


class LlavaAdapter(FamilyAdapter):
    """LLaVA 1.5 style (``LlavaForConditionalGeneration``)."""

    family = "llava"
    model_types = ("llava",)

    def slots_per_image(self) -> int:
        vc = self.vision_config
        full = self.config.vision_feature_select_strategy == "full"  # "default" drops CLS
        return (int(vc.image_size) // int(vc.patch_size)) ** 2 + int(full)

    def blank_pixel_inputs(self, image_slots: Sequence[int], device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {"pixel_values": self._square_images(len(image_slots), device, dtype)}  # (I, 3, S, S)

    def _image_features(self, model, pixel_inputs):
        cfg = self.config
        return model.model.get_image_features(
            **pixel_inputs, vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy, return_dict=True)
