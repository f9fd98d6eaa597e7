"""A shipped tinyworld checkpoint as a folder that standard Hugging Face servers load.

    python scripts/tinyworld_hf_folder.py llava /tmp/tw-llava
    python -m transformers.cli.transformers serve /tmp/tw-llava --device cpu --port 8000

tinyworld's own tokenizer (`latentwire.tinyworld.tokenizer.TinyTokenizer`) is a small Python
class that `AutoTokenizer` cannot load. This script writes the same byte-level vocabulary as a
standard ``tokenizer.json`` (built with the `tokenizers` library: ids 0-255 are the UTF-8 bytes,
256.. the special tokens, the rest of the padded vocabulary as unused specials), a
``tokenizer_config.json`` with tinyworld's chat layout as a Jinja template, and links the
checkpoint's config, generation config and weights beside them (the shipped folder is never
written to).

A server loads a VLM checkpoint with its processor (``AutoProcessor``), so the folder also gets the
family's standard processor configs. tinyworld has no pictures (its images are latent slots), so
these only have to load; requests are text. Only llava is supported: its processor
(``LlavaProcessor`` + ``CLIPImageProcessor``) needs two small configs, sized from the checkpoint's
vision config. `tests/test_rcl_server.py` builds a folder at test time and serves it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# tinyworld's chat layout (TinyTokenizer.apply_chat_template) as a standard Jinja template; content
# may be a string or a list of {"type": "text", "text": ...} parts, as OpenAI-style servers pass it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors")
FAMILIES = ("llava",)  # the families whose standard processor this script can describe


def processor_configs(config: dict) -> dict[str, dict]:
    """File name -> content of the standard llava processor configs for a checkpoint's config."""
    vision = config["vision_config"]
    size = vision["image_size"]
    return {
        "preprocessor_config.json": {
            "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
            "crop_size": {"height": size, "width": size}, "do_resize": True, "do_center_crop": True,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True},
        "processor_config.json": {
            "processor_class": "LlavaProcessor", "patch_size": vision["patch_size"],
            "vision_feature_select_strategy": config["vision_feature_select_strategy"],
            "image_token": "<image>", "num_additional_image_tokens": 1},
    }


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """tinyworld's byte-level vocabulary as a `PreTrainedTokenizerFast` (same ids as TinyTokenizer)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from latentwire.tinyworld.tokenizer import N_BYTES, SPECIAL_TOKENS, VOCAB_SIZE

    # ByteLevel pre-tokenisation maps each byte to one printable character; a BPE without merges
    # over those 256 characters is then exactly "one token per byte, id = byte value".
    vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    unused = [f"<unused{i}>" for i in range(N_BYTES + len(SPECIAL_TOKENS), VOCAB_SIZE)]
    core.add_special_tokens([AddedToken(t, special=True, normalized=False)
                             for t in (*SPECIAL_TOKENS, *unused)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", chat_template=CHAT_TEMPLATE)
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids == list(range(N_BYTES, N_BYTES + len(SPECIAL_TOKENS))), f"special ids moved: {ids}"
    assert len(tok) == VOCAB_SIZE, f"vocabulary has {len(tok)} tokens, the checkpoints {VOCAB_SIZE}"
    return tok


def write_folder(family: str, out: str | Path, *, copy: bool = False) -> Path:
    """Write the servable folder of the shipped ``family`` checkpoint to ``out`` (made if needed);
    the checkpoint's files are symlinked (``copy=True``: copied). Returns ``out``."""
    from latentwire.tinyworld.checkpoints import SHIPPED_DIR

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: this script writes the standard processor of "
                         f"{', '.join(FAMILIES)} only")
    source = SHIPPED_DIR / family
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        target = out / name
        target.unlink(missing_ok=True)
        if copy:
            shutil.copyfile(source / name, target)
        else:
            target.symlink_to((source / name).resolve())
    config = json.loads((source / "config.json").read_text())
    for name, content in processor_configs(config).items():
        (out / name).write_text(json.dumps(content, indent=1) + "\n")
    build_tokenizer().save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: family and output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES, help="a shipped tinyworld family")
    parser.add_argument("out", help="the folder to write")
    parser.add_argument("--copy", action="store_true", help="copy the weights instead of linking them")
    args = parser.parse_args(argv)
    out = write_folder(args.family, args.out, copy=args.copy)
    print(json.dumps({"folder": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
