"""GPU-ready check: one speak/listen round at the real sizes of Qwen2.5-VL-3B and Gemma-3-4B.

Builds each model from its real architecture (random init, bf16, no weights downloaded: the
sizes below are those of the published configs), then times one latent round trip: the sender
runs a prompt and ``--steps`` latent thinking steps and its codec encodes them; the receiver
decodes the latent at its image slots and answers ``--new-tokens`` tokens greedily. Prints time
and peak GPU memory per stage. Meant for a lent GPU machine; it does not run in CI::

    python scripts/gpu_check.py                      # both families, cuda
    python scripts/gpu_check.py --device cpu --layers 1 --families qwen2_5_vl   # code-path smoke
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

# The published configs' sizes (Qwen/Qwen2.5-VL-3B-Instruct, google/gemma-3-4b-it).
REAL: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "text_config": {
            "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
            "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
            "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0,
                                "mrope_section": [16, 24, 24]},
        },
        "vision_config": {
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        },
    },
    "gemma3": {
        "image_token_id": 262144, "boi_token_index": 255999, "eoi_token_index": 256000,
        "mm_tokens_per_image": 256,
        "text_config": {
            "vocab_size": 262208, "hidden_size": 2560, "intermediate_size": 10240,
            "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 1024,
        },
        "vision_config": {
            "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
            "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
        },
    },
}


def build(family: str, layers: int | None, device: str, dtype: torch.dtype) -> Any:
    """The real-size model of ``family`` (random init) on ``device``; ``layers`` shrinks depth."""
    import copy

    from transformers import AutoConfig, AutoModelForImageTextToText

    spec = copy.deepcopy(REAL[family])
    if layers is not None:
        spec["text_config"]["num_hidden_layers"] = layers
        key = "depth" if "depth" in spec["vision_config"] else "num_hidden_layers"
        spec["vision_config"][key] = layers
        if "fullatt_block_indexes" in spec["vision_config"]:
            spec["vision_config"]["fullatt_block_indexes"] = [layers - 1]
    config = AutoConfig.for_model(family, **spec)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return model.eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, fn: Any) -> tuple[Any, float, float]:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return out, seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--families", nargs="+", default=list(REAL), choices=list(REAL))
    parser.add_argument("--layers", type=int, default=None, help="shrink every tower to this depth")
    parser.add_argument("--steps", type=int, default=8, help="latent thinking steps")
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here; run on a GPU machine or pass --device cpu --layers 1")
        return 2

    from latentwire.agents.codec import CodecConfig, UniversalVisualCodec
    from latentwire.agents.families import adapter_for
    from latentwire.agents.latent_io import listen, speak
    from latentwire.tinyworld.tokenizer import TinyTokenizer

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    tokenizer = TinyTokenizer()  # byte ids are valid in every real vocabulary; image ids come from the config
    rows = []
    models = {}
    for family in args.families:
        (model, seconds, peak) = _timed(args.device, lambda f=family: build(f, args.layers, args.device, dtype))
        adapter = adapter_for(model)
        codec = UniversalVisualCodec(CodecConfig(family=family, hidden_size=adapter.hidden_size(model),
                                                 image_slots=adapter.default_slots(), width=256,
                                                 num_tokens=16)).to(args.device)
        models[family] = (model, adapter, codec)
        params = sum(p.numel() for p in model.parameters()) / 1e9
        rows.append({"family": family, "stage": "build", "params_b": round(params, 3),
                     "seconds": round(seconds, 3), "peak_gib": peak and round(peak, 2)})
    families = list(models)
    for i, sender in enumerate(families):
        receiver = families[(i + 1) % len(families)]
        s_model, s_adapter, s_codec = models[sender]
        r_model, r_adapter, r_codec = models[receiver]
        prompt = s_adapter.build_prompt(tokenizer, "The secret is 4721. Think about it.",
                                        s_adapter.default_slots())
        with torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            speech, seconds, peak = _timed(args.device, lambda: speak(
                s_model, s_adapter, s_codec, [prompt], steps=args.steps))
            rows.append({"family": sender, "stage": f"speak ({args.steps} steps)",
                         "seconds": round(seconds, 3), "peak_gib": peak and round(peak, 2)})
            question = r_adapter.build_prompt(tokenizer, "What is the secret?", r_adapter.default_slots())
            answer, seconds, peak = _timed(args.device, lambda: listen(
                r_model, r_adapter, r_codec, [question], received=[speech.latents],
                max_new_tokens=args.new_tokens))
            rows.append({"family": receiver, "stage": f"listen ({args.new_tokens} tokens) from {sender}",
                         "seconds": round(seconds, 3), "peak_gib": peak and round(peak, 2),
                         "answer_tokens": len(answer[0])})
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
