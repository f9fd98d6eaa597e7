"""Realignment: a last-layer hidden state back into input-embedding space, for a latent step.

A latent thinking step feeds the model's last hidden state back in as the next input embedding.
The two spaces differ, so the state goes through a ridge map from output to input embeddings
(`realignment`, ``W_out @ W_a ~= W_in``, as LatentMAS does) and is rescaled to the typical
text-embedding norm (`embedding_scale`). Both are computed from frozen weights and cached per
model (`latentwire.agents.families.cache`). Nothing here is family-specific: the embeddings are
always read by calling the embedding layer, so a scale a family keeps inside it (Gemma's
sqrt(d)) is included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .blank import blank_image_embeddings
from .cache import model_cache

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .facts import FamilyFacts

__all__ = ["EmbeddingScale", "embedding_scale", "input_embedding_matrix", "realign", "realignment"]


@dataclass(frozen=True)
class EmbeddingScale:
    """Typical L2 norms of a model's input embeddings.

    ``text``: median norm of the token embeddings (as the embedding layer returns them, so
    Gemma's sqrt(d) scale is included). ``image``: mean norm of the blank-image embeddings that
    the vision tower + projector produce. Codecs match ``image``; latent steps are rescaled to
    ``text``.
    """

    text: float
    image: float


@torch.no_grad()
def input_embedding_matrix(model: PreTrainedModel) -> torch.Tensor:
    """Every token's input embedding as the embedding layer returns it, ``(V, D)``.

    Calling the layer (not reading ``.weight``) keeps Gemma's sqrt(d) scale, which lives in
    its embedding module's forward.
    """
    layer = model.get_input_embeddings()
    return layer(torch.arange(layer.num_embeddings, device=layer.weight.device))  # (V, D)


@torch.no_grad()
def embedding_scale(adapter: FamilyFacts, model: PreTrainedModel) -> EmbeddingScale:
    """Typical norms of ``model``'s text and (blank) image input embeddings; cached."""
    cache = model_cache(model)
    if "scale" not in cache:
        text = input_embedding_matrix(model).float().norm(dim=-1).median().item()
        blank = blank_image_embeddings(adapter, model, adapter.default_slots())  # (n, D)
        image = blank.float().norm(dim=-1).mean().item()
        cache["scale"] = EmbeddingScale(text=text, image=image)
    return cache["scale"]


@torch.no_grad()
def realignment(model: PreTrainedModel, ridge: float = 1e-4) -> torch.Tensor:
    """The ``(D, D)`` map from last-layer hidden states to input embeddings; cached.

    Ridge regression that sends each output-embedding row to the matching input embedding
    (``W_out @ W_a ~= W_in``): a hidden state that would emit token t maps near t's input
    embedding. ``ridge`` is relative to the mean diagonal of the Gram matrix.
    """
    cache = model_cache(model)
    key = ("realign", ridge)
    if key not in cache:
        w_in = input_embedding_matrix(model).float()  # (V, D)
        w_out = model.get_output_embeddings().weight.float()  # (V, D)
        # A solve in fp32 even inside a caller's bf16 autocast (which would cast the products).
        with torch.autocast(w_out.device.type, enabled=False):
            gram = w_out.T @ w_out  # (D, D)
            lam = ridge * gram.diagonal().mean()
            eye = torch.eye(gram.shape[0], device=gram.device)
            cache[key] = torch.linalg.solve(gram + lam * eye, w_out.T @ w_in)  # (D, D)
    return cache[key]


def realign(adapter: FamilyFacts, model: PreTrainedModel, last_hidden: torch.Tensor) -> torch.Tensor:
    """Map last-layer hidden states ``(..., D)`` into input-embedding space for a latent step.

    Applies `realignment`, then rescales each vector to the typical text-embedding norm, so a
    fed-back step looks like a token embedding to the first layer. Differentiable in
    ``last_hidden``; keeps its dtype and device.
    """
    w_a = realignment(model).to(last_hidden.device)
    aligned = last_hidden.float() @ w_a  # (..., D)
    target = embedding_scale(adapter, model).text
    aligned = aligned * (target / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))
    return aligned.to(last_hidden.dtype)
