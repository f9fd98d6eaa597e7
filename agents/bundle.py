"""`ModelBundle`: one family model with everything that runs with it.

A `VLMAgent`, a pipeline agent, an alignment job and ``latentwire bench mas`` all hold the same
things for a model: the model, its tokenizer (or processor), its family adapter, its codec, how
many latent steps it thinks, its padding and end-of-sequence ids, and the image slots it reads
latents at. This is the one place they are put together and derived.

    >>> bundle = ModelBundle(model, tokenizer, codec)      # adapter, pad/eos ids, slots derived
    >>> tokens = bundle.speak(["saw: 4721\\nmessage?"])      # (B, K, D) shared-space tokens
    >>> bundle.answer(["secret?"], tokens=tokens)           # greedy replies reading them

**Padding** (one rule): the tokenizer's ``pad_token_id``, else its ``eos_token_id`` (what
transformers' ``generate`` pads with), else 0, read from a processor's inner tokenizer. Prompts are
left-padded under an attention mask, so the pad's embedding never reaches a real position; the
pad's *id* still matters, since the image mask is computed from ids: an id that is also the
image placeholder would count padding as image slots. An arbitrary id such as 0 can be (it is
just the first entry of a vocabulary); eos never is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from latentwire import Latent

from .codec import SHARED_SPACE, UniversalVisualCodec
from .errors import AgentConfigError
from .families import FamilyAdapter, Prompt, adapter_for
from .latent_io import listen, prompt_batch, reason

__all__ = ["DEFAULT_LATENT_STEPS", "ModelBundle", "special_ids"]

#: Latent steps of a bundle whose codec does not record what it was trained with.
DEFAULT_LATENT_STEPS = 4


def special_ids(tokenizer: Any) -> tuple[int, int | None]:
    """``(pad_id, eos_id)`` of a tokenizer or processor (the padding rule in the module docs)."""
    inner = getattr(tokenizer, "tokenizer", tokenizer)  # a processor encodes with its tokenizer
    eos = getattr(inner, "eos_token_id", None)
    pad = getattr(inner, "pad_token_id", None)
    pad = pad if pad is not None else eos
    return (0 if pad is None else int(pad)), (None if eos is None else int(eos))


@dataclass(eq=False)
class ModelBundle:
    """A family model with its tokenizer, adapter, codec, latent steps and special ids.

    Given: ``model`` (a transformers VLM of a supported family), ``tokenizer`` (its tokenizer or
    processor; tinyworld's `TinyTokenizer` works), ``codec`` (its `UniversalVisualCodec`; needed
    to speak latents and to read received ones) and ``latent_steps`` (m thinking steps per
    message; default: the m the codec was trained with, its config's ``latent_steps``, else
    `DEFAULT_LATENT_STEPS`).

    Derived: ``adapter`` (`adapter_for(model)`), ``pad_id`` and ``eos_id`` (`special_ids`),
    ``n_slots`` (the codec's ``image_slots``, else the family's default slots) and ``family``.
    Raises `AgentConfigError` for a non-positive ``latent_steps`` or a codec of another width.
    """

    model: Any
    tokenizer: Any
    codec: UniversalVisualCodec | None = None
    latent_steps: int | None = None
    adapter: FamilyAdapter = field(init=False, repr=False)
    pad_id: int = field(init=False, repr=False)
    eos_id: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.adapter = adapter_for(self.model)
        self.pad_id, self.eos_id = special_ids(self.tokenizer)
        if self.latent_steps is None:
            self.latent_steps = (self.codec.config.latent_steps if self.codec is not None else 0) \
                or DEFAULT_LATENT_STEPS
        steps = self.latent_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise AgentConfigError("latent_steps", steps, "a positive integer")
        width = self.adapter.hidden_size(self.model)
        if self.codec is not None and self.codec.config.hidden_size != width:
            raise AgentConfigError("codec", f"CodecConfig(hidden_size={self.codec.config.hidden_size})",
                                   f"a codec of hidden size {width}, the {self.family} model's width")

    @property
    def family(self) -> str:
        """The model's family (its adapter's canonical ``model_type``: ``gemma3``, ``qwen2_5_vl``, ...)."""
        return self.adapter.family

    @property
    def n_slots(self) -> int:
        """Image slots the model reads latents at: the codec's ``image_slots``, else the family's default."""
        return self.codec.config.image_slots if self.codec is not None else self.adapter.default_slots()

    def prompts(self, texts: Sequence[str], *, system: str | None = None) -> list[Prompt]:
        """Chat prompts of ``texts`` with this bundle's image slots laid out."""
        return [self.adapter.build_prompt(self.tokenizer, t, self.n_slots, system=system) for t in texts]

    def think(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """The reasoning after reading ``texts`` (`latent_io.reason` over a blank image: prompt
        states and ``latent_steps`` steps, ``(B, T + m, H)`` in float32, and its mask), without gradient."""
        ids, attention = prompt_batch(self.prompts(texts), self.pad_id, self.model.device)
        with torch.no_grad():
            inputs = self.adapter.inject(self.model, ids, attention_mask=attention)
            vectors, mask = reason(self.model, self.adapter, inputs, self.latent_steps)
            return vectors.float(), mask

    def speak(self, texts: Sequence[str], *, to_shared: bool = True) -> Any:
        """Universal tokens ``(B, K, D)`` of what the model thought on ``texts`` (shared space, or the
        codec's own with ``to_shared=False``)."""
        with torch.no_grad():
            return self.codec.encode_tokens(*self.think(texts), to_shared=to_shared)

    def answer(self, texts: Sequence[str], *, tokens: Any = None, space: str = SHARED_SPACE,
               max_new_tokens: int = 16) -> list[str]:
        """Greedy replies to ``texts``, reading ``tokens (B, K, D)`` (in ``space``) at the image
        slots, or a blank image without them."""
        received = None
        if tokens is not None:
            received = [[Latent(t.detach().cpu(), space=space, family=self.family)] for t in tokens]
        ids = listen(self.model, self.adapter, self.codec, self.prompts(texts), received=received,
                     max_new_tokens=max_new_tokens, pad_id=self.pad_id, eos_id=self.eos_id)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
