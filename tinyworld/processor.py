"""`TinyProcessor`: expands image markers into each family's placeholder block, like the real processors.

A real VLM processor takes text with one image marker per image (``<image>``, Gemma's
``<start_of_image>``, Qwen's ``<|vision_start|><|image_pad|><|vision_end|>``) and replaces it with
the family's full block of placeholder tokens, sized from the image. tinyworld has no pictures:
the images are the latent "visual slots", so the size comes from ``image_slots`` instead. The
layout itself is the family adapter's (`FamilyAdapter.image_block`), so the processor and
`FamilyAdapter.build_prompt` can never disagree.

    >>> processor = TinyProcessor(model.config)
    >>> batch = processor(["<image>What was the secret?"], return_tensors="pt")
    >>> model(**batch, **adapter.blank_pixel_forward_inputs(model, batch["input_ids"]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .tokenizer import IMAGE_ID, PAD_ID, TinyTokenizer

__all__ = ["TinyProcessor"]


class TinyProcessor:
    """Tokenizes text and expands each ``<image>`` marker into the family's image block.

    ``config``: the model's config (picks the family adapter). ``image_slots``: slots per image
    for families whose images can have any size (Qwen); fixed-size families use their own.
    """

    def __init__(self, config: Any, tokenizer: TinyTokenizer | None = None,
                 image_slots: int | None = None) -> None:
        from latentwire.agents.families import adapter_for

        self.adapter = adapter_for(config)
        self.tokenizer = tokenizer or TinyTokenizer()
        self.image_slots = image_slots or self.adapter.default_slots()
        self.adapter.image_slots(self.image_slots)  # refuse a size this family's images cannot have now

    def expand(self, ids: Sequence[int]) -> list[int]:
        """``ids`` with every ``<image>`` marker replaced by a full image block."""
        from latentwire.agents.families.prompt import encode_pieces

        out: list[int] = []
        for i in ids:
            if i != IMAGE_ID:
                out.append(i)
                continue
            out += encode_pieces(self.tokenizer, self.adapter.image_block(self.tokenizer, self.image_slots))
        return out

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True,
                 return_tensors: str | None = None) -> dict[str, Any]:
        """``input_ids`` and ``attention_mask`` (right-padded), plus the token types the real
        processor returns for the family (``mm_token_type_ids`` for Qwen, ``token_type_ids`` for
        Gemma 3), for one text or a batch."""
        texts = [text] if isinstance(text, str) else list(text)
        rows = [self.expand(self.tokenizer.encode(t, add_special_tokens)) for t in texts]
        width = max(map(len, rows))
        ids = [r + [PAD_ID] * (width - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        import torch

        out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        out.update(self.adapter.token_type_inputs(out["input_ids"]))
        if return_tensors == "pt":
            return out
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r}: only None and 'pt' are supported")
        lists = {k: v.tolist() for k, v in out.items()}
        return lists if not isinstance(text, str) else {k: v[0] for k, v in lists.items()}
