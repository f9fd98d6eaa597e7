"""`FamilyFacts`: what latentwire needs to know about one VLM family, stated as facts.

For one transformers VLM class: which token is the image placeholder and how many slots an image
has, how the real processor wraps an image block, how its pixels are laid out and normalised,
which token types its processor returns, where the language model (whose hidden states are
read) sits, and the family's real quirks (Qwen's M-RoPE grids, Gemma 3's token types and masks,
Qwen3-VL's deepstack features). Nothing here merges, lays out or realigns: the shared modules
(`prompt`, `blank`, `picture`, `merge`, `realign`) do that from these facts, and `base.FamilyAdapter` is the
door to them. A family module subclasses `FamilyAdapter`, sets the class facts and overrides
the hooks marked "family fact".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PretrainedConfig, PreTrainedModel

    from .inputs import InjectedInputs

__all__ = [
    "BLANK_PIXEL",
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "FamilyFacts",
]

# Raw pixel value of the blank image, before the family's normalisation: black, as a real
# processor would produce from an all-black picture. (Not the normalised 0.0: SmolVLM treats an
# all-zero pixel tensor as a padding image and drops it.)
BLANK_PIXEL = 0.0

# The image processors' normalisations (mean, std per RGB channel).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)


@dataclass
class FamilyFacts:
    """The facts of one family, bound to a config; family adapters set them.

    ``self.config`` is the top-level VLM config; methods that need weights take the model, which
    must be built from that config.

    Class facts: `family`, `model_types`, `image_mean`/`image_std`, `language_model_attr`,
    `token_types`, `image_feature_config`. Family-fact hooks: `slots_per_image` (required),
    `default_slots`, `image_block`, `blank_pixel_inputs`, `square_pixel_inputs`, `picture_size`,
    `picture_pixel_inputs`, and for real quirks `image_features`,
    `blank_extras`/`join_extras`, `positions`, `position_ids_after`, `finish_kwargs`.
    The embedding scale needs no fact: the shared code always calls the embedding layer, so a
    scale a family keeps inside it (Gemma's sqrt(d)) is included, and the hidden states are read
    from the model's own output.
    """

    config: PretrainedConfig
    #: Canonical family name (a Hugging Face ``model_type``).
    family: ClassVar[str] = ""
    #: Every ``model_type`` this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: The family image processor's normalisation (used to make the blank image).
    image_mean: ClassVar[tuple[float, float, float]] = OPENAI_CLIP_MEAN
    image_std: ClassVar[tuple[float, float, float]] = OPENAI_CLIP_STD
    #: Where the decoder sits: ``model.model.<this>`` (`language_model`: no vision tower, no LM head).
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
        return self.square_pixel_inputs(self.square_images(len(image_slots), device, dtype))

    def square_pixel_inputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pixel kwargs for normalised square images ``(I, 3, S, S)`` (blank or pictures).

        family fact: how the tower takes a batch of square images; the default passes them as they are.
        """
        return {"pixel_values": images}

    def picture_size(self, n_slots: int) -> tuple[int, int]:
        """``(height, width)`` in pixels of one picture of ``n_slots`` slots, a size the family's
        processor passes to the tower unresized.

        family fact; the default is the tower's square ``image_size``.
        """
        size = int(self.vision_config.image_size)
        return size, size

    def picture_pixel_inputs(self, images: Sequence[Image], image_slots: Sequence[int],
                             device: torch.device | str | None = None,
                             dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Pixel kwargs for RGB pictures of these slot counts, each at its `picture_size`: rescaled
        to [0, 1] and normalised as the family's image processor does (CLIP's and SigLIP's
        processors do exactly this to an image already at the tower's size).

        family fact; the default lays square images out with `square_pixel_inputs`.
        """
        rows = []
        for image in images:
            rgb = image.convert("RGB")
            raw = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            rows.append(raw.view(rgb.height, rgb.width, 3).permute(2, 0, 1))  # (3, S, S)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        pixels = (torch.stack(rows).float() / 255.0 - mean) / std  # (I, 3, S, S)
        return self.square_pixel_inputs(pixels.to(device=device, dtype=dtype))

    def blank_channels(self, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
        """The blank pixel per channel after the family's normalisation, ``(3,)``."""
        mean = torch.tensor(self.image_mean, device=device, dtype=torch.float32)
        std = torch.tensor(self.image_std, device=device, dtype=torch.float32)
        return ((BLANK_PIXEL - mean) / std).to(dtype)

    def square_images(self, n_images: int, device: torch.device | str | None,
                      dtype: torch.dtype) -> torch.Tensor:
        """``n_images`` blank square images at the vision tower's size, ``(N, 3, S, S)``."""
        size = int(self.vision_config.image_size)
        pixel = self.blank_channels(device, dtype).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        return pixel.expand(n_images, 3, size, size).contiguous()  # (N, 3, S, S)

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
