"""Family adapters: what latentwire needs to know about each VLM class, chosen by ``model_type``.

    >>> from latentwire.agents.families import adapter_for
    >>> adapter = adapter_for(model)                    # or a config
    >>> prompt = adapter.build_prompt(tokenizer, "What did the sender see?", n_slots=4)
    >>> inputs = adapter.inject(model, prompt.tensor(), vectors, gate=gate)   # vectors (1, 4, D)
    >>> logits = model(**inputs).logits

A family module holds only facts (`facts.FamilyFacts` lists them); the prompt layout, the blank
image, the rendered message, the merge and realignment are shared (`prompt`, `blank`, `picture`,
`merge`, `realign`), and
`base.FamilyAdapter` applies them to the facts. A family is one module plus one `register` line
below.
Supported ``model_type``s: qwen2_vl, qwen2_5_vl, qwen3_vl, gemma3, llava, smolvlm, idefics3.
"""

from __future__ import annotations

from typing import Any

from latentwire.errors import ConfigError

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
    "register",
    "supported_model_types",
]

#: ``model_type`` -> adapter class.
ADAPTERS: dict[str, type[FamilyAdapter]] = {}


def register(adapter: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Serve every ``model_type`` of ``adapter`` (its `FamilyAdapter.model_types`) with it.

    Refuses an adapter without ``family`` or ``model_types`` and a ``model_type`` another adapter
    already serves. Returns the class, so it also works as a class decorator.
    """
    if not adapter.family or not adapter.model_types:
        raise ConfigError(f"{adapter.__name__} must set family and model_types before it is registered")
    taken = {mt: ADAPTERS[mt].__name__ for mt in adapter.model_types
             if ADAPTERS.get(mt, adapter) is not adapter}
    if taken:
        raise ConfigError(f"cannot register {adapter.__name__}: model_type(s) already served by "
                          + ", ".join(f"{mt!r} ({name})" for mt, name in taken.items()))
    ADAPTERS.update(dict.fromkeys(adapter.model_types, adapter))
    return adapter


register(Qwen2VLAdapter)
register(Qwen2_5_VLAdapter)
register(Qwen3VLAdapter)
register(Gemma3Adapter)
register(LlavaAdapter)
register(SmolVLMAdapter)


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
