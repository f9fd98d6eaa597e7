"""`FamilyAdapter`: everything latentwire does with a VLM, written once for all families.

A family adapter answers, for one transformers VLM class, the questions the listen/speak paths
ask: where the image placeholders go in a prompt and how many visual slots an image has, what a
blank image embeds to, how to merge latent-derived vectors at those slots, which position ids
the language model needs, and how to turn a last-layer hidden state back into an input
embedding. The *mechanics* live here; a family module (`qwen`, `gemma3`, `llava`, `smolvlm`)
overrides only the small hooks marked "family fact" below.

The merge is the one transformers' llava does (`modeling_llava.py`, ``get_placeholder_mask`` then
``masked_scatter``): embed the ids with ``model.get_input_embeddings()``, mark the
``image_token_id`` positions, check that the number of slots equals the number of vectors
(quoting both), cast to the embeddings' device and dtype, scatter. ``mode="add"`` adds
``gate * vectors`` onto the embeddings of a blank image instead, so a zero gate reads exactly as
a blank image.

Errors (defined in `latentwire.agents.errors`, both `latentwire.errors.ConfigError`s):
`UnsupportedFamily` (the config's model_type has no adapter; the message lists the supported
ones) and `ImageSlotMismatch` (placeholder slots != vectors, or a slot count an image cannot have).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from latentwire.errors import ConfigError

from ..errors import ImageSlotMismatch, UnsupportedFamily

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "EmbeddingScale",
    "FamilyAdapter",
    "ImageSlotMismatch",
    "InjectedInputs",
    "Prompt",
    "UnsupportedFamily",
]

# Raw pixel value of the blank image, before the family's normalisation: black, as a real
# processor would produce from an all-black picture. (Not the normalised 0.0: SmolVLM treats an
# all-zero pixel tensor as a padding image and drops it.)
BLANK_PIXEL = 0.0
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)

# Stands for the image block while a chat template renders; split out before tokenising, so it
# never reaches a tokenizer. Plain ASCII that no template trims or escapes.
_IMAGE_SENTINEL = "<<latentwire:image>>"


@dataclass(frozen=True)
class Prompt:
    """Token ids of one prompt with its image-placeholder slots laid out by the family.

    ``input_ids``: the ids (no padding). ``n_slots``: image-placeholder positions in them.
    ``image_slots``: slots per image block, in order (sums to ``n_slots``).
    """

    input_ids: list[int]
    n_slots: int
    image_slots: list[int]

    def tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``input_ids`` as a ``(1, T)`` long tensor."""
        return torch.tensor([self.input_ids], dtype=torch.long, device=device)  # (1, T)


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


@dataclass
class InjectedInputs(Mapping[str, Any]):
    """What `FamilyAdapter.inject` prepared; a mapping of forward kwargs, so ``model(**inputs)`` works.

    Fields (B = batch, T = sequence length, D = hidden size):

    - ``inputs_embeds`` ``(B, T, D)``: the language model's layer-0 input, with the visual
      vectors at the image slots.
    - ``attention_mask`` ``(B, T)``: ones where not given.
    - ``image_mask`` ``(B, T)`` bool: the image-placeholder positions.
    - ``position_ids``: Qwen's multimodal rope positions ``(3, B, T)``; None where the model
      infers positions itself.
    - ``rope_deltas`` ``(B, 1)``: Qwen only; continue with `FamilyAdapter.position_ids_after`.
    - ``kwargs``: the exact forward kwargs (normally ``inputs_embeds``, ``attention_mask`` and
      any positions / token types the family needs).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    image_mask: torch.Tensor
    kwargs: dict[str, Any]
    position_ids: torch.Tensor | None = None
    rope_deltas: torch.Tensor | None = None

    def __getitem__(self, key: str) -> Any:
        return self.kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kwargs)

    def __len__(self) -> int:
        return len(self.kwargs)


# Per model (weakly held, so a dropped model frees its entries): cached constants computed from
# frozen weights: blank-image embeddings, the realignment matrix, embedding scales.
_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _cache_of(model: torch.nn.Module) -> dict[Any, Any]:
    return _CACHE.setdefault(model, {})


@dataclass
class FamilyAdapter:
    """The shared behaviour of every family; subclasses hold only the facts that differ.

    Get one with `latentwire.agents.families.adapter_for(model_or_config)`. An adapter is bound
    to a config (``self.config``, the top-level VLM config); methods that need weights take the
    model, which must be built from that config.

    Family facts a subclass sets or overrides: `family`, `model_types`, `image_mean`/`image_std`,
    `slots_per_image`, `image_block`, `blank_pixel_inputs`, `_image_features`,
    `_language_model`, `_positions`, `token_type_inputs`, `_finish_kwargs`, `position_ids_after`.
    """

    config: PretrainedConfig
    #: Canonical family name (a Hugging Face ``model_type``).
    family: ClassVar[str] = ""
    #: Every ``model_type`` this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: The family image processor's normalisation (used to make the blank image).
    image_mean: ClassVar[tuple[float, float, float]] = OPENAI_CLIP_MEAN
    image_std: ClassVar[tuple[float, float, float]] = OPENAI_CLIP_STD

    # ---- config facts -------------------------------------------------------------------

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
        return self._language_model(model)

    def _language_model(self, model: PreTrainedModel) -> torch.nn.Module:
        # family fact: SmolVLM keeps it at model.model.text_model
        return model.model.language_model

    def slots_per_image(self) -> int | None:
        """Visual slots one image fills, or None where any count can be laid out (Qwen's grids).

        family fact.
        """
        raise NotImplementedError(f"{type(self).__name__} must define slots_per_image")

    # ---- prompt layout ------------------------------------------------------------------

    def image_slots(self, n_slots: int) -> list[int]:
        """Split ``n_slots`` into images: slots per image block, in order.

        A fixed-size family needs a multiple of `slots_per_image` (each image is a whole number of
        tokens); a flexible one (Qwen) puts them all in one image.
        """
        per_image = self.slots_per_image()
        if n_slots < 1 or (per_image is not None and n_slots % per_image):
            unit = f"a multiple of {per_image}: {self.family} images have {per_image} slots each" \
                if per_image else "at least 1"
            raise ImageSlotMismatch(n_slots, per_image or 1, message=f"cannot lay out {n_slots} image slots; "
                                    f"the count must be {unit}")
        if per_image is None:
            return [n_slots]
        return [per_image] * (n_slots // per_image)

    def default_slots(self) -> int:
        """Slots of one image at the family's native layout (Qwen: a 2x2 merged grid, 4 slots)."""
        return self.slots_per_image() or 4

    def image_block(self, tokenizer: Any, n_slots: int) -> list[int | str]:
        """Pieces of one image block of ``n_slots`` placeholders, as the real processor expands it.

        Ints are token ids; strings are text the tokenizer encodes (Gemma's ``"\\n\\n"``).
        family fact; the default is LLaVA's bare run of placeholders.
        """
        return [self.image_token_id] * n_slots

    def build_prompt(self, tokenizer: Any, text: str, n_slots: int | None = None, *, role: str = "user",
                     system: str | None = None, image_first: bool = True,
                     add_generation_prompt: bool = True) -> Prompt:
        """Token ids for ``text`` in one chat turn, with ``n_slots`` image placeholders laid out.

        ``tokenizer`` is the tinyworld `TinyTokenizer` or a Hugging Face tokenizer (a processor
        works too: its ``.tokenizer`` is used). Where it has a chat template, the turn is rendered
        with it (``system`` becomes a system message); the image block(s) go at the start of the
        turn's content (``image_first``) or at its end. ``n_slots`` defaults to `default_slots`.
        """
        # A processor may own the chat template while its tokenizer encodes.
        owner, tokenizer = tokenizer, getattr(tokenizer, "tokenizer", tokenizer)
        templater = next((o for o in (owner, tokenizer) if getattr(o, "chat_template", None)), None)
        n_slots = self.default_slots() if n_slots is None else n_slots
        images = self.image_slots(n_slots)
        content = _IMAGE_SENTINEL + text if image_first else text + _IMAGE_SENTINEL
        if templater is not None:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": role, "content": content}]
            rendered = templater.apply_chat_template(messages, tokenize=False,
                                                     add_generation_prompt=add_generation_prompt)
        else:
            # No template: bos (if the tokenizer has one), the system text, then the content.
            bos = getattr(tokenizer, "bos_token", None) or ""
            rendered = bos + (system + "\n" if system else "") + content
        if rendered.count(_IMAGE_SENTINEL) != 1:
            raise ConfigError("the chat template dropped or repeated the message content; "
                              "cannot place the image slots")
        before, after = rendered.split(_IMAGE_SENTINEL)
        pieces: list[int | str] = [before]
        for slots in images:
            pieces += self.image_block(tokenizer, slots)
        pieces.append(after)
        ids: list[int] = []
        for piece in pieces:
            ids += [piece] if isinstance(piece, int) else tokenizer.encode(piece, add_special_tokens=False)
        return Prompt(input_ids=ids, n_slots=n_slots, image_slots=images)

    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of the image-placeholder positions, same shape as ``input_ids``."""
        return input_ids == self.image_token_id

    def images_in(self, input_ids: torch.Tensor) -> list[list[int]]:
        """Per row of ``input_ids (B, T)``: slots of each image, in order (for blank images, grids).

        A family with a fixed image size splits each run of placeholders into whole images; a
        flexible one (Qwen) reads each run as one image. Raises `ImageSlotMismatch` for a run an
        image cannot fill.
        """
        mask = self.image_mask(input_ids)
        per_image = self.slots_per_image()
        rows = []
        for row in mask.view(-1, mask.shape[-1]).tolist():
            runs, n = [], 0
            for flag in row + [False]:
                if flag:
                    n += 1
                elif n:
                    runs.append(n)
                    n = 0
            rows.append([s for run in runs for s in (self.image_slots(run) if per_image else [run])])
        return rows

    # ---- blank image --------------------------------------------------------------------

    def blank_pixel_inputs(self, image_slots: Sequence[int], device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Pixel kwargs (``pixel_values`` and any grid sizes) for blank images of these slot counts.

        family fact: the pixel layout of each vision tower.
        """
        raise NotImplementedError(f"{type(self).__name__} must define blank_pixel_inputs")

    def _blank_channels(self, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
        """The blank pixel per channel after normalisation, ``(3,)``."""
        mean = torch.tensor(self.image_mean, device=device, dtype=torch.float32)
        std = torch.tensor(self.image_std, device=device, dtype=torch.float32)
        return ((BLANK_PIXEL - mean) / std).to(dtype)

    def _square_images(self, n_images: int, device: torch.device | str | None,
                       dtype: torch.dtype) -> torch.Tensor:
        """``n_images`` blank square images at the vision tower's size, ``(N, 3, S, S)``."""
        size = int(self.vision_config.image_size)
        pixel = self._blank_channels(device, dtype).view(1, 3, 1, 1)  # (1, 3, 1, 1)
        return pixel.expand(n_images, 3, size, size).contiguous()  # (N, 3, S, S)

    def _image_features(self, model: PreTrainedModel, pixel_inputs: dict[str, torch.Tensor]) -> Any:
        """The model's ``get_image_features`` output (``pooler_output`` = projected embeddings).

        family fact where the call needs more arguments (LLaVA's feature layer).
        """
        return model.model.get_image_features(**pixel_inputs, return_dict=True)

    def blank_pixel_forward_inputs(self, model: PreTrainedModel, input_ids: torch.Tensor) -> dict[str, Any]:
        """Kwargs for the real pixel path on ``input_ids``: blank images at every image block.

        ``model(input_ids=input_ids, **adapter.blank_pixel_forward_inputs(model, input_ids))`` is
        the model reading blank images through its own processor-style inputs (what a zero gate
        must reproduce). Includes the family's token types (Gemma, Qwen).
        """
        slots = [s for row in self.images_in(input_ids) for s in row]
        pixels = self.blank_pixel_inputs(slots, device=input_ids.device, dtype=model.dtype)
        return {**pixels, **self.token_type_inputs(input_ids)}

    def token_type_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token-type kwargs the family's real processor returns next to ``input_ids`` (family fact).

        Gemma 3: ``token_type_ids``; Qwen: ``mm_token_type_ids``; others: none.
        """
        return {}

    @torch.no_grad()
    def blank_image_embeddings(self, model: PreTrainedModel, n_slots: int) -> torch.Tensor:
        """Embeddings of a blank image with ``n_slots`` slots, ``(n_slots, D)``.

        Computed once through the real vision tower and projector, then cached per model (the
        towers are frozen in latentwire; call `clear_cache` after changing their weights). A slot
        count that spans several images (fixed-size families) tiles whole images.
        """
        return self._blank_features(model, self.image_slots(n_slots))[0]

    def _blank_features(self, model: PreTrainedModel, image_slots: Sequence[int]) -> tuple[torch.Tensor, Any]:
        """Blank-image embeddings ``(sum(image_slots), D)`` for these images, and the family's extras."""
        cache = _cache_of(model)
        key = ("blank", tuple(image_slots), str(model.device), model.dtype)
        if key not in cache:
            # One blank image per distinct size, reused: real towers at 3B scale are not cheap.
            per_size = {}
            for slots in sorted(set(image_slots)):
                inputs = self.blank_pixel_inputs([slots], device=model.device, dtype=model.dtype)
                with torch.no_grad():
                    out = self._image_features(model, inputs)
                per_size[slots] = (_flat_features(out.pooler_output, self.hidden_size(model)),
                                   self._blank_extras(out))
            embeds = torch.cat([per_size[s][0] for s in image_slots])  # (N, D)
            extras = self._join_extras([per_size[s][1] for s in image_slots])
            if embeds.shape[0] != sum(image_slots):
                raise ImageSlotMismatch(sum(image_slots), embeds.shape[0],
                                        f"the {self.family} vision tower's output does not fit the layout")
            cache[key] = (embeds, extras)
        return cache[key]

    def _blank_extras(self, image_outputs: Any) -> Any:
        """family fact: anything besides the projected embeddings a blank image feeds (Qwen3 deepstack)."""
        return None

    def _join_extras(self, extras: list[Any]) -> Any:
        """family fact: concatenate `_blank_extras` of several images."""
        return None

    def clear_cache(self, model: PreTrainedModel) -> None:
        """Forget cached blank embeddings, realignment and scales of ``model`` (after weight changes)."""
        _CACHE.pop(model, None)

    # ---- merge --------------------------------------------------------------------------

    def inject(self, model: PreTrainedModel, input_ids: torch.Tensor,
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
        mask = self.image_mask(input_ids)  # (B, T)
        n_slots = int(mask.sum())
        layer = model.get_input_embeddings()
        # Some checkpoints put the image token past the embedding table (Gemma 3 guards the same way).
        ids = input_ids.masked_fill(mask, 0) if self.image_token_id >= layer.num_embeddings else input_ids
        embeds = layer(ids)  # (B, T, D)
        if n_slots == 0:
            n_vectors = 0 if visual_embeds is None else visual_embeds.numel() // visual_embeds.shape[-1]
            raise ImageSlotMismatch(0, n_vectors, "the prompt has no image slots; lay them out with "
                                    "build_prompt")
        batched = visual_embeds is not None and visual_embeds.dim() == 3
        if visual_embeds is not None:
            n_vectors = visual_embeds.shape[0] * visual_embeds.shape[1] if batched else visual_embeds.shape[0]
            if n_vectors != n_slots:
                detail = ("the prompt has no room for these image vectors" if n_slots < n_vectors
                          else "too few vectors for the prompt's image slots")
                raise ImageSlotMismatch(n_slots, n_vectors, detail)
            if visual_embeds.shape[-1] != embeds.shape[-1]:
                raise ConfigError(f"visual embeddings have width {visual_embeds.shape[-1]}, "
                                  f"the {self.family} model's hidden size is {embeds.shape[-1]}")
            visual_embeds = visual_embeds.to(embeds.device, embeds.dtype)
        images = self.images_in(input_ids)  # slots per image, per row
        if mode == "replace":
            if visual_embeds is None or gate is not None:
                raise ConfigError("mode='replace' takes visual_embeds and no gate; use mode='add' to gate "
                                  "vectors onto the blank image")
            visual, extras = visual_embeds.reshape(-1, embeds.shape[-1]), None  # (N, D)
        elif mode == "add":
            blank, extras = self._blank_features(model, [s for row in images for s in row])  # (N, D)
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
        positions, deltas = self._positions(model, input_ids, attention_mask, images)
        if positions is not None:
            kwargs["position_ids"] = positions
        kwargs = self._finish_kwargs(kwargs, input_ids=input_ids, text_embeds=embeds, visual=visual,
                                     extras=extras)
        return InjectedInputs(inputs_embeds=merged, attention_mask=attention_mask, image_mask=mask,
                              kwargs=kwargs, position_ids=positions, rope_deltas=deltas)

    def _positions(self, model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   images: list[list[int]]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """family fact: explicit position ids (and rope deltas) for an ``inputs_embeds`` forward.

        None: the model's own positions (0..T-1) are already right.
        """
        return None, None

    def _finish_kwargs(self, kwargs: dict[str, Any], *, input_ids: torch.Tensor, text_embeds: torch.Tensor,
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

    # ---- scales and realignment ---------------------------------------------------------

    @torch.no_grad()
    def _input_embedding_matrix(self, model: PreTrainedModel) -> torch.Tensor:
        """Every token's input embedding as the embedding layer returns it, ``(V, D)``.

        Calling the layer (not reading ``.weight``) keeps Gemma's sqrt(d) scale, which lives in
        its embedding module's forward.
        """
        layer = model.get_input_embeddings()
        return layer(torch.arange(layer.num_embeddings, device=layer.weight.device))  # (V, D)

    @torch.no_grad()
    def embedding_scale(self, model: PreTrainedModel) -> EmbeddingScale:
        """Typical norms of ``model``'s text and (blank) image input embeddings; cached."""
        cache = _cache_of(model)
        if "scale" not in cache:
            text = self._input_embedding_matrix(model).float().norm(dim=-1).median().item()
            blank = self.blank_image_embeddings(model, self.default_slots())  # (n, D)
            image = blank.float().norm(dim=-1).mean().item()
            cache["scale"] = EmbeddingScale(text=text, image=image)
        return cache["scale"]

    @torch.no_grad()
    def realignment(self, model: PreTrainedModel, ridge: float = 1e-4) -> torch.Tensor:
        """The ``(D, D)`` map from last-layer hidden states to input embeddings; cached.

        Ridge regression that sends each output-embedding row to the matching input embedding
        (``W_out @ W_a ~= W_in``, as LatentMAS does): a hidden state that would emit token t maps
        near t's input embedding. ``ridge`` is relative to the mean diagonal of the Gram matrix.
        """
        cache = _cache_of(model)
        key = ("realign", ridge)
        if key not in cache:
            w_in = self._input_embedding_matrix(model).float()  # (V, D)
            w_out = model.get_output_embeddings().weight.float()  # (V, D)
            # A solve in fp32 even inside a caller's bf16 autocast (which would cast the products).
            with torch.autocast(w_out.device.type, enabled=False):
                gram = w_out.T @ w_out  # (D, D)
                lam = ridge * gram.diagonal().mean()
                eye = torch.eye(gram.shape[0], device=gram.device)
                cache[key] = torch.linalg.solve(gram + lam * eye, w_out.T @ w_in)  # (D, D)
        return cache[key]

    def realign(self, model: PreTrainedModel, last_hidden: torch.Tensor) -> torch.Tensor:
        """Map last-layer hidden states ``(..., D)`` into input-embedding space for a latent step.

        Applies `realignment`, then rescales each vector to the typical text-embedding norm, so a
        fed-back step looks like a token embedding to the first layer. Differentiable in
        ``last_hidden``; keeps its dtype and device.
        """
        w_a = self.realignment(model).to(last_hidden.device)
        aligned = last_hidden.float() @ w_a  # (..., D)
        target = self.embedding_scale(model).text
        aligned = aligned * (target / aligned.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        return aligned.to(last_hidden.dtype)


def _flat_features(pooler_output: Any, hidden_size: int) -> torch.Tensor:
    """Projected image features as ``(N, D)``, whether a tensor or a per-image tuple/list."""
    if isinstance(pooler_output, (list, tuple)):
        return torch.cat([f.reshape(-1, hidden_size) for f in pooler_output])  # (N, D)
    return pooler_output.reshape(-1, hidden_size)  # (N, D)


def near_square(n: int) -> tuple[int, int]:
    """``(h, w)`` with ``h * w == n`` and h the largest divisor of n not above sqrt(n)."""
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return h, n // h
