"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: flexible image grids and multimodal rotary positions.

The facts and quirks:

- An image is a grid of ``(t, h, w)`` patches merged ``m x m`` into ``h*w / m^2`` slots, so any
  slot count fits one image: n slots become a near-square grid of ``(1, a*m, b*m)`` patches with
  ``a*b = n``. The block is ``<|vision_start|>`` + n x ``<|image_pad|>`` + ``<|vision_end|>``.
- Rotary positions are 3-D (temporal, height, width) over image tokens (M-RoPE). The model
  computes them from ``input_ids`` + ``mm_token_type_ids`` + ``image_grid_thw``; with
  ``inputs_embeds`` and no ids it would fall back to stale cached deltas or plain 1-D positions.
  So `inject` computes them with the model's own ``get_rope_index`` and passes ``position_ids``,
  and `position_ids_after` continues them (text positions + rope deltas) for latent steps.
- Qwen3-VL also adds "deepstack" features of the image (from intermediate vision layers) to the
  hidden states at the image positions inside the first decoder layers. The top-level forward only
  accepts those through ``mm_encoder_outputs``, so for Qwen3-VL the merged slot vectors and the
  blank image's deepstack features are handed to the model's own merge (same positions, same
  vectors as the shared merge computed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .base import FamilyAdapter
from .facts import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD
from .inputs import InjectedInputs

__all__ = ["Qwen2VLAdapter", "Qwen2_5_VLAdapter", "Qwen3VLAdapter"]


class QwenAdapter(FamilyAdapter):
    """Shared by the Qwen VL families: grid layout and M-RoPE positions."""

    # What the real processor returns: 1 at image tokens, so the model can build M-RoPE.
    token_types = ("mm_token_type_ids", torch.int)

    def slots_per_image(self) -> None:
        return None  # any count: the grid adapts

    def default_slots(self) -> int:
        return 4  # a 2x2 merged grid: the smallest image real Qwen processors emit (56x56 px)

    def image_block(self, tokenizer: Any, n_slots: int) -> list[int | str]:
        cfg = self.config
        image = [self.image_token_id] * n_slots
        return [int(cfg.vision_start_token_id), *image, int(cfg.vision_end_token_id)]

    def grid_thw(self, n_slots: int) -> tuple[int, int, int]:
        """Patch grid ``(t, h, w)`` of a one-frame image with ``n_slots`` merged tokens."""
        m = int(self.vision_config.spatial_merge_size)
        a, b = near_square(n_slots)
        return 1, a * m, b * m

    def blank_pixel_inputs(self, image_slots: Sequence[int], device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        vc = self.vision_config
        grids = [self.grid_thw(s) for s in image_slots]
        grids = torch.tensor(grids, dtype=torch.long, device=device)  # (I, 3)
        n_patches = int(grids.prod(-1).sum())
        # The processor flattens each patch channel-major as (C, temporal, p, p); a blank image is
        # constant per channel, so every patch row is the same vector.
        per_patch = int(vc.temporal_patch_size) * int(vc.patch_size) ** 2
        row = self.blank_channels(device, dtype).repeat_interleave(per_patch)  # (C * tp * p * p,)
        return {"pixel_values": row.expand(n_patches, -1).contiguous(), "image_grid_thw": grids}

    def picture_size(self, n_slots: int) -> tuple[int, int]:
        _, h, w = self.grid_thw(n_slots)
        patch = int(self.vision_config.patch_size)
        return h * patch, w * patch  # the grid's pixels: the processor keeps this size as it is

    def picture_pixel_inputs(self, images, image_slots, device=None, dtype=torch.float32):
        # The real processor patchifies (temporal frames, channel-major patches, merge order);
        # transformers' own does it, sized from the vision config, so the layout is exactly theirs.
        from transformers import Qwen2VLImageProcessorPil

        vc = self.vision_config
        processor = Qwen2VLImageProcessorPil(
            do_resize=False, patch_size=int(vc.patch_size), temporal_patch_size=int(vc.temporal_patch_size),
            merge_size=int(vc.spatial_merge_size), image_mean=list(self.image_mean),
            image_std=list(self.image_std))
        out = processor(images=list(images), return_tensors="pt")
        grids = out["image_grid_thw"].to(device)  # (I, 3)
        expected = [self.grid_thw(s) for s in image_slots]
        if grids.tolist() != [list(g) for g in expected]:
            raise ValueError(f"pictures of grids {grids.tolist()} for slot counts {list(image_slots)} "
                             f"(grids {expected}): each picture must be at its picture_size")
        return {"pixel_values": out["pixel_values"].to(device=device, dtype=dtype), "image_grid_thw": grids}

    def positions(self, model, input_ids, attention_mask, images):
        grids = torch.tensor([self.grid_thw(s) for row in images for s in row], dtype=torch.long,
                             device=input_ids.device)  # (I, 3)
        positions, deltas = model.model.get_rope_index(
            input_ids, **self.token_type_inputs(input_ids), image_grid_thw=grids,
            attention_mask=attention_mask)  # (3, B, T), (B, 1)
        # The model's own forward caches the deltas the same way; generate() and cached forwards
        # without position_ids then continue from the right place.
        model.model.rope_deltas = deltas
        return positions, deltas

    def position_ids_after(self, inputs: InjectedInputs, cache_length: int, n_new: int) -> torch.Tensor:
        deltas = inputs.rope_deltas  # (B, 1)
        # A left-padded row's positions count only its real tokens (get_rope_index takes the
        # attention mask), so its next position is cache_length minus its padding.
        mask = inputs.attention_mask
        pads = (mask.shape[1] - mask.sum(dim=1, keepdim=True)).to(deltas.device)  # (B, 1)
        text = torch.arange(cache_length, cache_length + n_new, device=deltas.device)  # (n,)
        return (text.view(1, -1) - pads + deltas).unsqueeze(0).expand(3, -1, -1)  # (3, B, n)


class Qwen2VLAdapter(QwenAdapter):
    """Qwen2-VL (``Qwen2VLForConditionalGeneration``)."""

    family = "qwen2_vl"
    model_types = ("qwen2_vl",)


class Qwen2_5_VLAdapter(QwenAdapter):
    """Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``)."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class Qwen3VLAdapter(QwenAdapter):
    """Qwen3-VL (``Qwen3VLForConditionalGeneration``): SigLIP-2 normalisation and deepstack features."""

    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD

    def blank_extras(self, image_outputs: Any) -> list[torch.Tensor]:
        # Per tapped vision layer, this image's features (n, D). Recent transformers give each
        # layer as a tuple of per-image tensors, earlier 5.x releases as one tensor.
        return [layer if isinstance(layer, torch.Tensor) else torch.cat(layer)
                for layer in image_outputs.deepstack_features]

    def join_extras(self, extras: list[Any]) -> list[torch.Tensor]:
        return [torch.cat(layer) for layer in zip(*extras)]  # per layer (N, D)

    def finish_kwargs(self, kwargs, *, input_ids, text_embeds, visual, extras):
        if extras is None:  # replace mode: no blank image underneath, so no deepstack either
            return kwargs
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        image = BaseModelOutputWithDeepstackFeatures(
            pooler_output=(visual,),
            deepstack_features=[(layer.to(visual.device, visual.dtype),) for layer in extras])
        # The model finds the slots in the un-merged embeddings (rows equal to the placeholder's
        # embedding), scatters `visual` there and adds the deepstack features after early layers.
        return {**kwargs, "inputs_embeds": text_embeds, "mm_encoder_outputs": {"image": image}}


def near_square(n: int) -> tuple[int, int]:
    """``(h, w)`` with ``h * w == n`` and h the largest divisor of n not above sqrt(n)."""
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return h, n // h
