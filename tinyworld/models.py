"""Tiny VLMs built from the real transformers classes, for tinyworld.

Every family is the genuine ``*ForConditionalGeneration`` class at a tiny size (2 text layers,
width 64, a one- or two-layer vision tower on 28-32 px images), random-initialised from a seed.
They build in well under a second on a CPU, so tests and tinyworld training never download
weights. The token ids come from `latentwire.tinyworld.tokenizer`, so the byte-level
`TinyTokenizer` drives all of them.

    >>> from latentwire.tinyworld.models import build_model
    >>> model = build_model("gemma3", seed=0)

Sizes are set through the config constructors (FACTS: gemma3 derives ``layer_types`` from the
layer count at init), and a tiny ``vision_config`` is always passed: the defaults are full-size
towers (CLIP-L ~300M parameters, SigLIP ~93M).
"""

from __future__ import annotations

import copy
from typing import Any

from . import tokenizer as tok

__all__ = ["FAMILIES", "build_model", "tiny_config", "tinyworld_models"]

_HIDDEN = 64  # text width
_HEADS, _KV_HEADS, _HEAD_DIM = 4, 2, 16  # 4 x 16 = 64
# mrope halves of the head dim split over (temporal, height, width): sums to head_dim / 2 = 8.
_MROPE_SECTION = [2, 3, 3]

_TEXT_COMMON: dict[str, Any] = {
    "vocab_size": tok.VOCAB_SIZE,
    "hidden_size": _HIDDEN,
    "intermediate_size": 2 * _HIDDEN,
    "num_hidden_layers": 2,
    "num_attention_heads": _HEADS,
    "num_key_value_heads": _KV_HEADS,
    "head_dim": _HEAD_DIM,
    "max_position_embeddings": 1024,
    "pad_token_id": tok.PAD_ID,
    "bos_token_id": tok.BOS_ID,
    "eos_token_id": tok.EOS_ID,
}
_QWEN_IDS: dict[str, Any] = {
    "image_token_id": tok.IMAGE_ID,
    "video_token_id": tok.VIDEO_ID,
    "vision_start_token_id": tok.IMAGE_START_ID,
    "vision_end_token_id": tok.IMAGE_END_ID,
}
_QWEN_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _MROPE_SECTION}

# One row per family: the config constructor arguments at tiny size (data; adding a family to
# tinyworld is one row). Everything not set here keeps the transformers default (activations,
# norms, rope types), so the model is the real architecture.
_TINY: dict[str, dict[str, Any]] = {
    "qwen2_vl": {
        **_QWEN_IDS,
        "text_config": {**_TEXT_COMMON, "rope_parameters": _QWEN_ROPE},
        # 14 px patches, 2x2 merge: a 28x28 image is one visual token.
        "vision_config": {"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2,
                          "hidden_size": _HIDDEN},
    },
    "qwen2_5_vl": {
        **_QWEN_IDS,
        "text_config": {**_TEXT_COMMON, "rope_parameters": _QWEN_ROPE},
        "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                          "out_hidden_size": _HIDDEN, "window_size": 56, "fullatt_block_indexes": [1]},
    },
    "qwen3_vl": {
        **_QWEN_IDS,
        # Qwen3-VL interleaves the mrope sections; same sum rule.
        "text_config": {**_TEXT_COMMON, "rope_parameters": {**_QWEN_ROPE, "mrope_interleaved": True}},
        # 16 px patches; deepstack taps vision layer 0 into the first decoder layer.
        "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                          "out_hidden_size": _HIDDEN, "num_position_embeddings": 16,
                          "deepstack_visual_indexes": [0]},
    },
    "gemma3": {
        "image_token_id": tok.IMAGE_ID,
        "boi_token_index": tok.IMAGE_START_ID,
        "eoi_token_index": tok.IMAGE_END_ID,
        # 32 px / 8 px patches = 4x4 patches, average-pooled to 2x2 = 4 tokens per image.
        "mm_tokens_per_image": 4,
        "text_config": {**_TEXT_COMMON, "sliding_window": 64, "query_pre_attn_scalar": _HEAD_DIM},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    },
    "llava": {
        "image_token_id": tok.IMAGE_ID,
        "text_config": {**_TEXT_COMMON, "model_type": "llama"},
        # 32 px / 8 px = 16 patch tokens (CLS dropped by the "default" strategy); layer -2 is read.
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
                          "patch_size": 8, "projection_dim": 32},
    },
    "smolvlm": {
        "image_token_id": tok.IMAGE_ID,
        "pad_token_id": tok.PAD_ID,
        # 32 px / 8 px = 16 patches, pixel-shuffled by 2 into 4 tokens per image.
        "scale_factor": 2,
        "text_config": {**_TEXT_COMMON, "model_type": "llama"},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    },
}

#: The families tinyworld builds, by Hugging Face ``model_type``: the rows of the tiny-size table.
FAMILIES: tuple[str, ...] = tuple(_TINY)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; nested ``text_config``/``vision_config`` dicts merge key by key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_config(family: str, **overrides: Any):
    """The transformers config of a tiny ``family`` model (one of `FAMILIES`).

    ``overrides`` are config constructor arguments; ``text_config``/``vision_config`` dicts are
    merged into the tiny ones key by key, e.g. ``tiny_config("llava", text_config={"num_hidden_layers": 4})``.
    """
    from transformers import AutoConfig

    if family not in _TINY:
        from latentwire.errors import ConfigError

        raise ConfigError(f"tinyworld has no family {family!r}; supported: {', '.join(FAMILIES)}")
    return AutoConfig.for_model(family, **_merge(_TINY[family], overrides))


def build_model(family: str, seed: int = 0, **overrides: Any):
    """A random-initialised tiny ``family`` model (the real ``*ForConditionalGeneration``), in eval mode.

    The same ``family``, ``seed`` and ``overrides`` give the same weights on any machine.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    config = tiny_config(family, **overrides)
    # Seed a private generator state: building a model must not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
        _init_zero_projector(model)
    return model.eval()


def _init_zero_projector(model) -> None:
    """Give Gemma 3's image projection a small random init instead of transformers' zeros.

    Zeros suit fine-tuning from a pretrained tower, but here every image (the blank one too) would
    embed to exactly 0 until trained, unlike a real checkpoint and unlike the other families.
    """
    import torch

    projector = getattr(getattr(model, "model", None), "multi_modal_projector", None)
    weight = getattr(projector, "mm_input_projection_weight", None)
    if weight is not None and not weight.any():
        std = model.config.get_text_config().initializer_range
        with torch.no_grad():
            weight.normal_(0.0, std)


def tinyworld_models(seed: int = 0) -> Any:
    """A `latentwire.agents.pipeline` model source of untrained tinyworld models: one per family,
    shared by that family's agents (``run_pipeline(config, episodes, models=tinyworld_models())``)."""
    from latentwire.agents.bundle import ModelBundle

    from .tokenizer import TinyTokenizer

    cache: dict[str, Any] = {}

    def load(spec: Any) -> Any:
        if spec.family not in cache:
            cache[spec.family] = ModelBundle(build_model(spec.family, seed=seed), TinyTokenizer())
        return cache[spec.family]

    return load
