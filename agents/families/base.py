"""`FamilyAdapter`: the facts latentwire needs about one VLM family, and the door to the shared code.

An adapter answers, for one transformers VLM class, what the listen/speak paths need to know:
which token is the image placeholder and how many slots an image has, how the real processor
wraps an image block, how its pixels are laid out and normalised, where the language model sits,
and the family's real quirks (Qwen's M-RoPE grids, Gemma 3's token types and masks, Qwen3-VL's
deepstack features). It states *facts*; the mechanics live once, in shared modules:

- `prompt`: the prompt layout (`build_prompt`, `image_slots`, `images_in`);
- `blank`: the blank image through the real vision tower (cached per model);
- `merge`: the llava-style merge (`inject`: mask, count check quoting both numbers, cast, scatter);
- `realign`: hidden state -> input embedding for latent steps (`realign`, `embedding_scale`).

The methods below that call those modules are the adapter's front door (``adapter.inject(...)``),
so callers hold one object per family. A new family is one module: a subclass that sets the
class facts and overrides the hooks marked "family fact", plus one `register` line in
`latentwire.agents.families`.

Errors (defined in `latentwire.agents.errors`, both `latentwire.errors.ConfigError`s):
`UnsupportedFamily` (the config's model_type has no adapter; the message lists the supported
ones) and `ImageSlotMismatch` (placeholder slots != vectors, or a slot count an image cannot have).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from ..errors import ImageSlotMismatch, UnsupportedFamily
from . import blank, cache, merge, prompt, realign
from .merge import InjectedInputs
from .prompt import Prompt
from .realign import EmbeddingScale

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "EmbeddingScale",
    "FamilyAdapter",
    "ImageSlotMismatch",
    "InjectedInputs",
    "Prompt",
    "UnsupportedFamily",
]

# The image processors' normalisations (mean, std per RGB channel).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)


@dataclass
class FamilyAdapter:
    """The facts of one family, bound to a config; subclasses set them.

    Get one with `latentwire.agents.families.adapter_for(model_or_config)`. ``self.config`` is
    the top-level VLM config; methods that need weights take the model, which must be built from
    that config.

    Class facts: `family`, `model_types`, `image_mean`/`image_std`, `language_model_attr`,
    `token_types`, `image_feature_config`. Family-fact hooks: `slots_per_image` (required),
    `default_slots`, `image_block`, `blank_pixel_inputs`, and for real quirks `image_features`,
    `blank_extras`/`join_extras`, `positions`, `position_ids_after`, `finish_kwargs`.
    """

    config: PretrainedConfig
    #: Canonical family name (a Hugging Face ``model_type``).
    family: ClassVar[str] = ""
    #: Every ``model_type`` this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: The family image processor's normalisation (used to make the blank image).
    image_mean: ClassVar[tuple[float, float, float]] = OPENAI_CLIP_MEAN
    image_std: ClassVar[tuple[float, float, float]] = OPENAI_CLIP_STD
    #: Where the hidden states are read: the decoder at ``model.model.<this>`` (no vision tower,
    #: no LM head).
    language_model_attr: ClassVar[str] = "language_model"
    #: The token-type kwarg the family's processor returns next to ``input_ids`` (1 at image
    #: tokens) and its dtype, or None.
    token_types: ClassVar[tuple[str, torch.dtype] | None] = None
    #: Config attributes passed by name to ``get_image_features`` (LLaVA's feature layer).
    image_feature_config: ClassVar[tuple[str, ...]] = ()

    # ---- facts read from the config ---------------------------------------------------------

    @property
    def image_token_id(self) -> int:
        """Id of the image-placeholder token (one per visual slot)."""
        cfg = self.config
        value = getattr(cfg, "image_token_id", None)
        return int(value if value is not None else cfg.image_token_index)

    @property
    def vision_config(self) -> PretrainedConfig:
        """The vision tower's config."""
        return self.config.vision_config

    def hidden_size(self, model: PreTrainedModel | None = None) -> int:
        """Width of the language model's embeddings and hidden states (``model`` is optional)."""
        config = model.config if model is not None else self.config
        return int(config.get_text_config().hidden_size)

    def language_model(self, model: PreTrainedModel) -> torch.nn.Module:
        """The decoder-only language model inside ``model`` (no vision tower, no LM head)."""
        return getattr(model.model, self.language_model_attr)

    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of the image-placeholder positions, same shape as ``input_ids``."""
        return input_ids == self.image_token_id

    def token_type_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token-type kwargs the family's real processor returns next to ``input_ids``
        (`token_types`: Gemma 3 ``token_type_ids``, Qwen ``mm_token_type_ids``, others none)."""
        if self.token_types is None:
            return {}
        name, dtype = self.token_types
        return {name: self.image_mask(input_ids).to(dtype)}  # (B, T): 1 = image

    # ---- family-fact hooks ------------------------------------------------------------------

    def slots_per_image(self) -> int | None:
        """Visual slots one image fills, or None where any count can be laid out (Qwen's grids).

        family fact.
        """
        raise NotImplementedError(f"{type(self).__name__} must define slots_per_image")

    def default_slots(self) -> int:
        """Slots of one image at the family's native layout (Qwen: a 2x2 merged grid, 4 slots)."""
        return self.slots_per_image() or 4

    def image_block(self, tokenizer: Any, n_slots: int) -> list[int | str]:
        """Pieces of one image block of ``n_slots`` placeholders, as the real processor expands it.

        Ints are token ids; strings are text the tokenizer encodes (Gemma's ``"\\n\\n"``).
        family fact; the default is LLaVA's bare run of placeholders.
        """
        return [self.image_token_id] * n_slots

    def blank_pixel_inputs(self, image_slots: Sequence[int], device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Pixel kwargs (``pixel_values`` and any grid sizes) for blank images of these slot counts.

        family fact: the pixel layout of the vision tower; the default is one square image each,
        ``(I, 3, S, S)``.
        """
        return {"pixel_values": blank.square_images(self, len(image_slots), device, dtype)}

    def image_features(self, model: PreTrainedModel, pixel_inputs: dict[str, torch.Tensor]) -> Any:
        """The model's ``get_image_features`` output (``pooler_output`` = projected embeddings),
        with the `image_feature_config` attributes passed by name."""
        named = {name: getattr(self.config, name) for name in self.image_feature_config}
        return model.model.get_image_features(**pixel_inputs, **named, return_dict=True)

    def blank_extras(self, image_outputs: Any) -> Any:
        """family fact: anything besides the projected embeddings a blank image feeds (Qwen3 deepstack)."""
        return None

    def join_extras(self, extras: list[Any]) -> Any:
        """family fact: concatenate `blank_extras` of several images."""
        return None

    def positions(self, model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  images: list[list[int]]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """family fact: explicit position ids (and rope deltas) for an ``inputs_embeds`` forward.

        None: the model's own positions (0..T-1) are already right.
        """
        return None, None

    def finish_kwargs(self, kwargs: dict[str, Any], *, input_ids: torch.Tensor, text_embeds: torch.Tensor,
                      visual: torch.Tensor, extras: Any) -> dict[str, Any]:
        """family fact: the final forward kwargs (Gemma adds token types; Qwen3 hands the merge to
        the model with its deepstack features). ``text_embeds (B, T, D)`` are the embeddings before
        the merge, ``visual (N, D)`` the merged slot vectors, ``extras`` the blank image's extras.
        """
        return kwargs

    def position_ids_after(self, inputs: InjectedInputs, cache_length: int,
                           n_new: int) -> torch.Tensor | None:
        """Position ids for ``n_new`` tokens fed after ``cache_length`` cached ones (latent steps).

        None where the model's default (``cache_length + arange``) is right; Qwen adds its rope deltas.
        """
        return None

    # ---- the front door: shared mechanics, applied to these facts ----------------------------

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
