"""The blank image: what a picture-free image slot holds, through each family's real vision tower.

In ``"add"`` mode the merge puts received vectors on top of a blank image's embeddings, so a zero
gate reads exactly as a blank image. Those embeddings are computed once per model and slot layout
(through the vision tower and projector, with the family's pixel layout and normalisation
from `FamilyFacts.blank_pixel_inputs`) and cached (`latentwire.agents.families.cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ImageSlotMismatch
from .cache import model_cache
from .prompt import image_slots, images_in

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .facts import FamilyFacts

__all__ = ["blank_features", "blank_image_embeddings", "blank_pixel_forward_inputs", "flat_features"]

def flat_features(pooler_output: Any, hidden_size: int) -> torch.Tensor:
    """Projected image features as ``(N, D)``, whether a tensor or a per-image tuple/list."""
    if isinstance(pooler_output, (list, tuple)):
        return torch.cat([f.reshape(-1, hidden_size) for f in pooler_output])  # (N, D)
    return pooler_output.reshape(-1, hidden_size)  # (N, D)


@torch.no_grad()
def blank_features(adapter: FamilyFacts, model: PreTrainedModel,
                   slots: Sequence[int]) -> tuple[torch.Tensor, Any]:
    """Blank-image embeddings ``(sum(slots), D)`` for images of these slot counts, and the
    family's extras (`FamilyFacts.blank_extras`, e.g. Qwen3's deepstack features); cached."""
    cache = model_cache(model)
    key = ("blank", tuple(slots), str(model.device), model.dtype)
    if key not in cache:
        # One blank image per distinct size, reused: real towers at 3B scale are not cheap.
        per_size = {}
        for size in sorted(set(slots)):
            inputs = adapter.blank_pixel_inputs([size], device=model.device, dtype=model.dtype)
            out = adapter.image_features(model, inputs)
            per_size[size] = (flat_features(out.pooler_output, adapter.hidden_size(model)),
                              adapter.blank_extras(out))
        embeds = torch.cat([per_size[s][0] for s in slots])  # (N, D)
        extras = adapter.join_extras([per_size[s][1] for s in slots])
        if embeds.shape[0] != sum(slots):
            raise ImageSlotMismatch(sum(slots), embeds.shape[0],
                                    f"the {adapter.family} vision tower's output does not fit the layout")
        cache[key] = (embeds, extras)
    return cache[key]


def blank_image_embeddings(adapter: FamilyFacts, model: PreTrainedModel, n_slots: int) -> torch.Tensor:
    """Embeddings of a blank image with ``n_slots`` slots, ``(n_slots, D)``; a slot count that
    spans several images (fixed-size families) tiles whole images."""
    return blank_features(adapter, model, image_slots(adapter, n_slots))[0]


def blank_pixel_forward_inputs(adapter: FamilyFacts, model: PreTrainedModel,
                               input_ids: torch.Tensor) -> dict[str, Any]:
    """Kwargs for the real pixel path on ``input_ids``: blank images at every image block, plus
    the family's token types (what a zero gate must reproduce)."""
    slots = [s for row in images_in(adapter, input_ids) for s in row]
    pixels = adapter.blank_pixel_inputs(slots, device=input_ids.device, dtype=model.dtype)
    return {**pixels, **adapter.token_type_inputs(input_ids)}
