"""Family adapters: what latentwire needs to know about each VLM class, chosen by ``model_type``.

    >>> from latentwire.agents.families import adapter_for
    >>> adapter = adapter_for(model)                    # or a config
    >>> prompt = adapter.build_prompt(tokenizer, "What did the sender see?", n_slots=4)
    >>> inputs = adapter.inject(model, prompt.tensor(), vectors, gate=gate)   # vectors (1, 4, D)
    >>> logits = model(**inputs).logits

Shared behaviour lives in `base.FamilyAdapter`; each family module holds only what differs.
Supported ``model_type``s: qwen2_vl, qwen2_5_vl, qwen3_vl, gemma3, llava, smolvlm, idefics3.
"""

from __future__ import annotations

from typing import Any

from .base import EmbeddingScale, FamilyAdapter, ImageSlotMismatch, InjectedInputs, Prompt, UnsupportedFamily
from .gemma3 import Gemma3Adapter
from .llava import LlavaAdapter
from .qwen import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter
from .smolvlm import SmolVLMAdapter

__all__ = [
    "ADAPTERS",
    "EmbeddingScale",
    "FamilyAdapter",
    "ImageSlotMismatch",
    "InjectedInputs",
    "Prompt",
    "UnsupportedFamily",
    "adapter_for",
    "supported_model_types",
]

_CLASSES: tuple[type[FamilyAdapter], ...] = (
    Qwen2VLAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter, Gemma3Adapter, LlavaAdapter, SmolVLMAdapter)
#: ``model_type`` -> adapter class.
ADAPTERS: dict[str, type[FamilyAdapter]] = {mt: cls for cls in _CLASSES for mt in cls.model_types}


def supported_model_types() -> list[str]:
    """Every ``model_type`` with an adapter, in a stable order."""
    return list(ADAPTERS)


def adapter_for(model_or_config: Any) -> FamilyAdapter:
    """The family adapter for a transformers VLM or its config (chosen by ``config.model_type``).

    Raises `UnsupportedFamily` (a `latentwire.errors.ConfigError`) listing the supported
    ``model_type``s for anything else.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise UnsupportedFamily(model_type, supported_model_types())
    return cls(config)
