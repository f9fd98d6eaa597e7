"""The merge: vectors into a prompt's image slots, the way transformers' llava does it, for every family.

``modeling_llava.py`` (``get_placeholder_mask`` then ``masked_scatter``): embed the ids with
``model.get_input_embeddings()`` (so Gemma's sqrt(d) scale, which lives in its embedding module,
is included), mark the ``image_token_id`` positions, check that the number of slots equals the
number of vectors (quoting both), cast to the embeddings' device and dtype, scatter.
``mode="add"`` adds ``gate * vectors`` onto the embeddings of a blank image instead, so a zero
gate reads exactly as a blank image.

What differs per family is asked of its adapter: the positions an ``inputs_embeds`` forward
needs (`FamilyFacts.positions`, Qwen's M-RoPE) and the final kwargs
(`FamilyFacts.finish_kwargs`, Gemma 3's token types and masks, Qwen3-VL's deepstack).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from latentwire.errors import ConfigError

from ..errors import ImageSlotMismatch
from .blank import blank_features
from .inputs import InjectedInputs
from .prompt import images_in

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .facts import FamilyFacts

__all__ = ["inject"]


def _check_vectors(adapter: FamilyFacts, visual_embeds: torch.Tensor, n_slots: int, width: int) -> None:
    """Refuse vectors that do not fill the slots one to one, quoting both numbers."""
    batched = visual_embeds.dim() == 3  # (B, n, D), else (N, D)
    n_vectors = visual_embeds.shape[0] * visual_embeds.shape[1] if batched else visual_embeds.shape[0]
    if n_vectors != n_slots:
        detail = ("the prompt has no room for these image vectors" if n_slots < n_vectors
                  else "too few vectors for the prompt's image slots")
        raise ImageSlotMismatch(n_slots, n_vectors, detail)
    if visual_embeds.shape[-1] != width:
        raise ConfigError(f"visual embeddings have width {visual_embeds.shape[-1]}, "
                          f"the {adapter.family} model's hidden size is {width}")


def inject(adapter: FamilyFacts, model: PreTrainedModel, input_ids: torch.Tensor,
           visual_embeds: torch.Tensor | None = None, *, attention_mask: torch.Tensor | None = None,
           gate: float | torch.Tensor | None = None,
           mode: Literal["add", "replace"] = "add") -> InjectedInputs:
    """Forward kwargs with ``visual_embeds`` at the image slots of ``input_ids (B, T)``.

    ``visual_embeds``: ``(B, n, D)`` (the same n slots in every row) or ``(N, D)`` (all slots of
    all rows, in order, as transformers takes image features).
    ``mode="add"``: slots get ``blank + gate * visual_embeds`` (``gate`` defaults to 1 and
    broadcasts against ``visual_embeds``, e.g. ``(B, 1, 1)``); ``visual_embeds=None`` gives the
    blank image itself. ``mode="replace"``: slots get ``visual_embeds`` (no gate).
    Raises `ImageSlotMismatch` quoting both numbers when the slots and vectors differ.
    """
    if input_ids.dim() != 2:
        raise ConfigError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    mask = adapter.image_mask(input_ids)  # (B, T)
    n_slots = int(mask.sum())
    layer = model.get_input_embeddings()
    # Some checkpoints put the image token past the embedding table (Gemma 3 guards the same way).
    ids = input_ids.masked_fill(mask, 0) if adapter.image_token_id >= layer.num_embeddings else input_ids
    embeds = layer(ids)  # (B, T, D)
    if n_slots == 0:
        n_vectors = 0 if visual_embeds is None else visual_embeds.numel() // visual_embeds.shape[-1]
        raise ImageSlotMismatch(0, n_vectors, "the prompt has no image slots; lay them out with "
                                "build_prompt")
    if visual_embeds is not None:
        _check_vectors(adapter, visual_embeds, n_slots, embeds.shape[-1])
        visual_embeds = visual_embeds.to(embeds.device, embeds.dtype)
    images = images_in(adapter, input_ids)  # slots per image, per row
    if mode == "replace":
        if visual_embeds is None or gate is not None:
            raise ConfigError("mode='replace' takes visual_embeds and no gate; use mode='add' to gate "
                              "vectors onto the blank image")
        visual, extras = visual_embeds.reshape(-1, embeds.shape[-1]), None  # (N, D)
    elif mode == "add":
        blank, extras = blank_features(adapter, model, [s for row in images for s in row])  # (N, D)
        blank = blank.to(embeds.device, embeds.dtype)
        if visual_embeds is None:
            visual = blank
        else:
            gate = 1.0 if gate is None else gate
            if isinstance(gate, torch.Tensor):
                gate = gate.to(embeds.device, embeds.dtype)
            delta = gate * visual_embeds  # (B, n, D) or (N, D)
            visual = blank + delta.reshape(-1, embeds.shape[-1])  # (N, D)
    else:
        raise ConfigError(f"mode must be 'add' or 'replace', got {mode!r}")
    merged = embeds.masked_scatter(mask.unsqueeze(-1), visual)  # (B, T, D)
    kwargs: dict[str, Any] = {"inputs_embeds": merged, "attention_mask": attention_mask}
    positions, deltas = adapter.positions(model, input_ids, attention_mask, images)
    if positions is not None:
        kwargs["position_ids"] = positions
    kwargs = adapter.finish_kwargs(kwargs, input_ids=input_ids, text_embeds=embeds, visual=visual,
                                   extras=extras)
    return InjectedInputs(inputs_embeds=merged, attention_mask=attention_mask, image_mask=mask,
                          kwargs=kwargs, position_ids=positions, rope_deltas=deltas)
