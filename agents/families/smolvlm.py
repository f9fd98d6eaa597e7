"""SmolVLM and Idefics3: pixel-shuffled SigLIP features, the language model at ``model.model.text_model``.

The facts:

- Each image is ``(image_size / patch_size)^2 / scale_factor^2`` slots (the connector's pixel
  shuffle), laid out as the processor does for an unsplit image:
  ``<fake_token_around_image> <global-img> <image> x n <fake_token_around_image>``. The two
  wrapper tokens are not in the config; they are looked up in the tokenizer by name.
- The language model is ``model.model.text_model`` (not ``language_model``).
- ``pixel_values`` are ``(batch, images, 3, S, S)``. All-zero images count as padding there,
  which is why the blank image is black *before* normalisation (-1 after), never 0.
- SigLIP normalisation (mean = std = 0.5).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import FamilyAdapter
from .facts import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

__all__ = ["SmolVLMAdapter"]


class SmolVLMAdapter(FamilyAdapter):
    """SmolVLM (``SmolVLMForConditionalGeneration``) and Idefics3 (``Idefics3ForConditionalGeneration``)."""

    family = "smolvlm"
    model_types = ("smolvlm", "idefics3")
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    language_model_attr = "text_model"
    fake_image_token = "<fake_token_around_image>"
    global_image_token = "<global-img>"

    def slots_per_image(self) -> int:
        vc = self.vision_config
        return (int(vc.image_size) // int(vc.patch_size)) ** 2 // int(self.config.scale_factor) ** 2

    def image_block(self, tokenizer: Any, n_slots: int) -> list[int | str]:
        fake = int(tokenizer.convert_tokens_to_ids(self.fake_image_token))
        global_img = int(tokenizer.convert_tokens_to_ids(self.global_image_token))
        return [fake, global_img, *[self.image_token_id] * n_slots, fake]

    def square_pixel_inputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": images.unsqueeze(0)}  # (1, I, 3, S, S): one batch row holds every image
