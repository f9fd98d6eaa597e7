"""A byte-level tokenizer for tinyworld, shared by every family.

Ids 0-255 are the bytes of the UTF-8 text; the special tokens follow. The vocabulary is padded to
`VOCAB_SIZE` (a multiple of 32) so every tiny config can use the same embedding table size.

The image-related specials carry the names the real processors use, as aliases of one id, so code
written for a real tokenizer (``tokenizer.convert_tokens_to_ids("<|vision_start|>")``) works here
unchanged: ``<|vision_start|>`` (Qwen), ``<start_of_image>`` (Gemma 3) and
``<fake_token_around_image>`` (SmolVLM) are all `IMAGE_START_ID`.

The interface is the small part of a Hugging Face tokenizer that latentwire uses: ``encode``,
``decode``, ``__call__``, ``convert_tokens_to_ids``, ``apply_chat_template`` (rendering to a
string), the ``*_token_id`` attributes, and ``save_pretrained``/``from_pretrained`` (one JSON
file). It has no learned merges, so it needs no files to exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "GLOBAL_IMAGE_ID",
    "IMAGE_END_ID",
    "IMAGE_ID",
    "IMAGE_START_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TinyTokenizer",
    "VIDEO_ID",
    "VOCAB_SIZE",
]

N_BYTES = 256
# Canonical name of each special token, in id order starting at 256. Keep the order: the tiny
# configs and any trained tinyworld checkpoint store these ids.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<image>",  # the image placeholder: one per visual slot
    "<image_start>",  # opens an image block (Qwen vision_start, Gemma boi, SmolVLM fake token)
    "<image_end>",  # closes it (Qwen vision_end, Gemma eoi)
    "<global-img>",  # SmolVLM's tag for the global (unsplit) image
    "<video>",  # Qwen's video placeholder; never emitted, but the config needs a distinct id
)
PAD_ID, BOS_ID, EOS_ID = 256, 257, 258
SYSTEM_ID, USER_ID, ASSISTANT_ID, END_ID = 259, 260, 261, 262
IMAGE_ID, IMAGE_START_ID, IMAGE_END_ID, GLOBAL_IMAGE_ID, VIDEO_ID = 263, 264, 265, 266, 267
# 256 bytes + 12 specials, padded to a multiple of 32 (room for more specials, tidy matmuls).
VOCAB_SIZE = 288

# The names the real processors and tokenizers use for the same roles.
_ALIASES: dict[str, int] = {
    "<|image_pad|>": IMAGE_ID,
    "<image_soft_token>": IMAGE_ID,
    "<|vision_start|>": IMAGE_START_ID,
    "<start_of_image>": IMAGE_START_ID,
    "<fake_token_around_image>": IMAGE_START_ID,
    "<|vision_end|>": IMAGE_END_ID,
    "<end_of_image>": IMAGE_END_ID,
    "<|video_pad|>": VIDEO_ID,
}
_ROLE_IDS = {"system": SYSTEM_ID, "user": USER_ID, "assistant": ASSISTANT_ID}

assert N_BYTES + len(SPECIAL_TOKENS) <= VOCAB_SIZE, "more specials than the padded vocabulary holds"


class TinyTokenizer:
    """Byte-level tokenizer: UTF-8 bytes plus `SPECIAL_TOKENS`, vocabulary size `VOCAB_SIZE`.

    Special tokens written literally in the text (``"<|user|>hi"``) are recognised by ``encode``,
    as in Hugging Face tokenizers; everything else is encoded byte by byte.
    """

    vocab_size = VOCAB_SIZE
    pad_token_id = PAD_ID
    bos_token_id = BOS_ID
    eos_token_id = EOS_ID
    image_token_id = IMAGE_ID
    pad_token, bos_token, eos_token, image_token = "<pad>", "<bos>", "<eos>", "<image>"
    # The chat layout `apply_chat_template` renders; a real tokenizer has a Jinja template here.
    chat_template = "tinyworld: <|role|>content<|end|> per message, then <|assistant|>"

    def __init__(self) -> None:
        self._special_ids = {name: N_BYTES + i for i, name in enumerate(SPECIAL_TOKENS)} | _ALIASES
        # Longest names first, so "<image_start>" is not read as "<image>" + "_start>".
        self._special_names = sorted(self._special_ids, key=len, reverse=True)

    def __len__(self) -> int:
        return VOCAB_SIZE

    def __repr__(self) -> str:
        return f"TinyTokenizer(vocab_size={VOCAB_SIZE})"

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of a special token name (or of a one-byte string); a list for a list."""
        if not isinstance(tokens, str):
            return [self.convert_tokens_to_ids(t) for t in tokens]
        if tokens in self._special_ids:
            return self._special_ids[tokens]
        data = tokens.encode()
        if len(data) != 1:
            raise KeyError(f"{tokens!r} is neither a special token nor a single byte")
        return data[0]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Canonical name of a special id, or the byte as a latin-1 character."""
        if not isinstance(ids, int):
            return [self.convert_ids_to_tokens(i) for i in ids]
        if ids < N_BYTES:
            return bytes([ids]).decode("latin-1")
        return SPECIAL_TOKENS[ids - N_BYTES] if ids - N_BYTES < len(SPECIAL_TOKENS) else f"<unused{ids}>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of ``text``: literal special-token names become their ids, the rest UTF-8 bytes.

        ``add_special_tokens`` prepends ``<bos>``, as Llama/Gemma tokenizers do.
        """
        ids = [BOS_ID] if add_special_tokens else []
        i, start = 0, 0
        while i < len(text):
            if text[i] == "<":
                name = next((n for n in self._special_names if text.startswith(n, i)), None)
                if name is not None:
                    ids.extend(text[start:i].encode())
                    ids.append(self._special_ids[name])
                    i = start = i + len(name)
                    continue
            i += 1
        ids.extend(text[start:].encode())
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; invalid UTF-8 is replaced, specials written by name unless skipped."""
        out, run = [], bytearray()
        for i in (int(i) for i in ids):
            if i < N_BYTES:
                run.append(i)
                continue
            out.append(run.decode(errors="replace"))
            run.clear()
            if not skip_special_tokens:
                out.append(self.convert_ids_to_tokens(i))
        out.append(run.decode(errors="replace"))
        return "".join(out)

    def batch_decode(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        """`decode` for each sequence."""
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True,
                 return_tensors: str | None = None) -> dict[str, Any]:
        """``{"input_ids", "attention_mask"}`` for one text or a batch (right-padded with ``<pad>``)."""
        texts = [text] if isinstance(text, str) else list(text)
        rows = [self.encode(t, add_special_tokens) for t in texts]
        width = max(map(len, rows))
        ids = [r + [PAD_ID] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r}: only None and 'pt' are supported")
        return {"input_ids": ids[0] if isinstance(text, str) else ids,
                "attention_mask": mask[0] if isinstance(text, str) else mask}

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], tokenize: bool = True,
                            add_generation_prompt: bool = False, **_: Any) -> str | list[int]:
        """Render ``[{"role", "content"}]`` as ``<bos><|role|>content<|end|>...`` (+ ``<|assistant|>``).

        Content is a string, or a list of ``{"type": "text", "text": ...}`` parts as HF chat
        messages allow (other part types are skipped: image slots are placed by the family
        adapter, not by the template).
        """
        parts = ["<bos>"]
        for message in messages:
            role = message["role"]
            if role not in _ROLE_IDS:
                raise ValueError(f"unknown role {role!r}; expected one of {sorted(_ROLE_IDS)}")
            content = message["content"]
            if not isinstance(content, str):
                content = "".join(p["text"] for p in content if p.get("type") == "text")
            parts.append(f"<|{role}|>{content}<|end|>")
        if add_generation_prompt:
            parts.append("<|assistant|>")
        text = "".join(parts)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``tinyworld_tokenizer.json`` (enough to check a checkpoint matches this vocabulary)."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        spec = {"type": "tinyworld-bytes", "vocab_size": VOCAB_SIZE, "special_tokens": list(SPECIAL_TOKENS)}
        (path / "tinyworld_tokenizer.json").write_text(json.dumps(spec, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TinyTokenizer:
        """Load a folder written by `save_pretrained`; refuse one with another vocabulary."""
        spec = json.loads((Path(folder) / "tinyworld_tokenizer.json").read_text())
        if spec.get("vocab_size") != VOCAB_SIZE or tuple(spec.get("special_tokens", ())) != SPECIAL_TOKENS:
            raise ValueError(f"{folder}: tokenizer vocabulary {spec.get('vocab_size')} / "
                             f"{spec.get('special_tokens')} does not match this tinyworld "
                             f"({VOCAB_SIZE} / {list(SPECIAL_TOKENS)})")
        return cls()
