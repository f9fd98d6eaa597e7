"""Prompt layout: where a family's image-placeholder slots go, written once for every family.

A family states the facts (`FamilyFacts.slots_per_image`, `FamilyFacts.image_block`, the
placeholder id); this module turns them into token ids the way the family's real processor does:
the chat turn rendered with the tokenizer's chat template where it has one, the image block(s)
at the start (or end) of the turn's content. It also reads the layout back: the slots of each
image in a row of ids (`images_in`), which the blank image and Qwen's grids need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from latentwire.errors import ConfigError

from ..errors import ImageSlotMismatch

if TYPE_CHECKING:
    from .facts import FamilyFacts

__all__ = ["Prompt", "build_prompt", "encode_pieces", "image_slots", "images_in"]

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


def image_slots(adapter: FamilyFacts, n_slots: int) -> list[int]:
    """Split ``n_slots`` into images: slots per image block, in order.

    A fixed-size family needs a multiple of its `slots_per_image` (each image is a whole number of
    tokens); a flexible one (Qwen) puts them all in one image. Raises `ImageSlotMismatch` otherwise.
    """
    per_image = adapter.slots_per_image()
    if n_slots < 1 or (per_image is not None and n_slots % per_image):
        unit = f"a multiple of {per_image}: {adapter.family} images have {per_image} slots each" \
            if per_image else "at least 1"
        raise ImageSlotMismatch(n_slots, per_image or 1, message=f"cannot lay out {n_slots} image slots; "
                                f"the count must be {unit}")
    if per_image is None:
        return [n_slots]
    return [per_image] * (n_slots // per_image)


def images_in(adapter: FamilyFacts, input_ids: torch.Tensor) -> list[list[int]]:
    """Per row of ``input_ids (B, T)``: slots of each image, in order (for blank images, grids).

    A family with a fixed image size splits each run of placeholders into whole images; a
    flexible one (Qwen) reads each run as one image. Raises `ImageSlotMismatch` for a run an
    image cannot fill.
    """
    mask = adapter.image_mask(input_ids)
    fixed = adapter.slots_per_image() is not None
    rows = []
    for row in mask.view(-1, mask.shape[-1]).tolist():
        runs, n = [], 0
        for flag in row + [False]:
            if flag:
                n += 1
            elif n:
                runs.append(n)
                n = 0
        rows.append([s for run in runs for s in (image_slots(adapter, run) if fixed else [run])])
    return rows


def encode_pieces(tokenizer: Any, pieces: Sequence[int | str]) -> list[int]:
    """Token ids of layout pieces: ints are ids already, strings are text the tokenizer encodes."""
    ids: list[int] = []
    for piece in pieces:
        ids += [piece] if isinstance(piece, int) else tokenizer.encode(piece, add_special_tokens=False)
    return ids


def build_prompt(adapter: FamilyFacts, tokenizer: Any, text: str, n_slots: int | None = None, *,
                 role: str = "user", system: str | None = None, image_first: bool = True,
                 add_generation_prompt: bool = True) -> Prompt:
    """Token ids for ``text`` in one chat turn, with ``n_slots`` image placeholders laid out.

    ``tokenizer`` is the tinyworld `TinyTokenizer` or a Hugging Face tokenizer (a processor
    works too: its ``.tokenizer`` is used). Where it has a chat template, the turn is rendered
    with it (``system`` becomes a system message); the image block(s) go at the start of the
    turn's content (``image_first``) or at its end. ``n_slots`` defaults to the family's
    `default_slots`.
    """
    # A processor may own the chat template while its tokenizer encodes.
    owner, tokenizer = tokenizer, getattr(tokenizer, "tokenizer", tokenizer)
    templater = next((o for o in (owner, tokenizer) if getattr(o, "chat_template", None)), None)
    n_slots = adapter.default_slots() if n_slots is None else n_slots
    images = image_slots(adapter, n_slots)
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
        pieces += adapter.image_block(tokenizer, slots)
    pieces.append(after)
    return Prompt(input_ids=encode_pieces(tokenizer, pieces), n_slots=n_slots, image_slots=images)
