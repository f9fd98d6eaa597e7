"""`FamilyAdapter`: a family's facts with the door to the shared mechanics.

A family module subclasses `FamilyAdapter` and states facts only (`facts.FamilyFacts` lists
them); everything latentwire *does* with a family lives once, in shared modules:

- `prompt`: the prompt layout (`build_prompt`, `image_slots`, `images_in`);
- `blank`: the blank image through the real vision tower (cached per model);
- `picture`: a message rendered as pictures through the real vision tower (the weakly supervised target);
- `merge`: the llava-style merge (`inject`: mask, count check quoting both numbers, cast, scatter);
- `realign`: hidden state -> input embedding for latent steps (`realign`, `embedding_scale`).

The methods here apply those modules to the adapter's facts, so callers hold one object per
family (``adapter.inject(model, ids, vectors)``). A new family is one module plus one `register`
line in `latentwire.agents.families`.

Errors (defined in `latentwire.agents.errors`, both `latentwire.errors.ConfigError`s):
`UnsupportedFamily` (the config's model_type has no adapter; the message lists the supported
ones) and `ImageSlotMismatch` (placeholder slots != vectors, or a slot count an image cannot have).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from ..errors import ImageSlotMismatch, UnsupportedFamily
from . import blank, cache, merge, picture, prompt, realign
from .facts import FamilyFacts
from .inputs import InjectedInputs
from .prompt import Prompt
from .realign import EmbeddingScale

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "EmbeddingScale",
    "FamilyAdapter",
    "ImageSlotMismatch",
    "InjectedInputs",
    "Prompt",
    "UnsupportedFamily",
]


class FamilyAdapter(FamilyFacts):
    """A family's facts (`FamilyFacts`) and the shared mechanics applied to them.

    Get one with `latentwire.agents.families.adapter_for(model_or_config)`.
    """

    def image_slots(self, n_slots: int) -> list[int]:
        """Split ``n_slots`` into images (`prompt.image_slots`)."""
        return prompt.image_slots(self, n_slots)

    def images_in(self, input_ids: torch.Tensor) -> list[list[int]]:
        """Slots of each image per row of ``input_ids`` (`prompt.images_in`)."""
        return prompt.images_in(self, input_ids)

    def build_prompt(self, tokenizer: Any, text: str, n_slots: int | None = None, *, role: str = "user",
                     system: str | None = None, image_first: bool = True,
                     add_generation_prompt: bool = True) -> Prompt:
        """Token ids for ``text`` in one chat turn with ``n_slots`` image slots (`prompt.build_prompt`)."""
        return prompt.build_prompt(self, tokenizer, text, n_slots, role=role, system=system,
                                   image_first=image_first, add_generation_prompt=add_generation_prompt)

    def blank_image_embeddings(self, model: PreTrainedModel, n_slots: int) -> torch.Tensor:
        """Embeddings of a blank image with ``n_slots`` slots, ``(n_slots, D)``; cached
        (`blank.blank_image_embeddings`; call `clear_cache` after changing the tower's weights)."""
        return blank.blank_image_embeddings(self, model, n_slots)

    def blank_pixel_forward_inputs(self, model: PreTrainedModel, input_ids: torch.Tensor) -> dict[str, Any]:
        """Kwargs for the real pixel path on ``input_ids`` with blank images:
        ``model(input_ids=input_ids, **adapter.blank_pixel_forward_inputs(model, input_ids))``."""
        return blank.blank_pixel_forward_inputs(self, model, input_ids)

    def message_features(self, model: PreTrainedModel, text: str, n_slots: int) -> torch.Tensor:
        """Projected image features ``(n_slots, D)`` of ``text`` rendered as pictures, through
        ``model``'s vision tower and projector (`picture.message_features`)."""
        return picture.message_features(self, model, text, n_slots)

    def clear_cache(self, model: PreTrainedModel) -> None:
        """Forget cached blank embeddings, realignment and scales of ``model`` (after weight changes)."""
        cache.clear_cache(model)

    def inject(self, model: PreTrainedModel, input_ids: torch.Tensor,
               visual_embeds: torch.Tensor | None = None, *, attention_mask: torch.Tensor | None = None,
               gate: float | torch.Tensor | None = None,
               mode: Literal["add", "replace"] = "add") -> InjectedInputs:
        """Forward kwargs with ``visual_embeds`` at the image slots of ``input_ids (B, T)``
        (`merge.inject`: ``"add"`` onto the blank image under ``gate``, or ``"replace"``)."""
        return merge.inject(self, model, input_ids, visual_embeds, attention_mask=attention_mask,
                            gate=gate, mode=mode)

    def embedding_scale(self, model: PreTrainedModel) -> EmbeddingScale:
        """Typical norms of ``model``'s text and blank-image input embeddings (`realign.embedding_scale`)."""
        return realign.embedding_scale(self, model)

    def realignment(self, model: PreTrainedModel, ridge: float = 1e-4) -> torch.Tensor:
        """The ``(D, D)`` map from last-layer hidden states to input embeddings (`realign.realignment`)."""
        return realign.realignment(model, ridge)

    def realign(self, model: PreTrainedModel, last_hidden: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states ``(..., D)`` into input-embedding space (`realign.realign`)."""
        return realign.realign(self, model, last_hidden)
