"""A message rendered as a picture, through each family's real vision tower and projector.

What a VLM sees when a message is shown to it as an image: the weakly supervised codec target
(`latentwire train codec --picture-target rendered`), which exists for any family with a vision
tower, unlike tinyworld's screens. The message is drawn deterministically, black on white with
Pillow's bundled default font at the largest size that fits, wrapped by character (messages are
often not words), onto the pictures one image block of ``n_slots`` takes in the family's layout
(`prompt.image_slots`): one picture at its `FamilyFacts.picture_size` for Qwen's grids; where the
slots span several fixed-size images, one strip cut into that many tiles, left to right, so the
text runs across the images in slot order. The pictures go through the family's pixel layout and
normalisation (`FamilyFacts.picture_pixel_inputs`) and `FamilyFacts.image_features`, which gives
one feature vector per slot; any other count is refused (`ImageSlotMismatch`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..errors import ImageSlotMismatch, MissingVisionTower
from .blank import flat_features
from .prompt import image_slots

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.ImageFont import FreeTypeFont
    from transformers import PreTrainedModel

    from .facts import FamilyFacts

__all__ = ["MIN_FONT_SIZE", "check_picture_path", "message_features", "message_pictures",
           "picture_features", "render_message"]

#: Smallest font size (pixels) a message is drawn at; a message that needs less does not fit.
MIN_FONT_SIZE = 6
_MARGIN = 1  # pixels left white on every side, so no glyph touches a tile's edge


@functools.lru_cache(maxsize=64)
def _font(size: int) -> FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled font: the same glyphs everywhere


def _layout(text: str, size: int, width: int, height: int) -> list[str] | None:
    """``text`` wrapped by character into lines of at most ``width`` px at font ``size``, or None
    when the lines do not fit ``height`` (or one character is wider than ``width``)."""
    font = _font(size)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for char in paragraph:
            if font.getlength(line + char) <= width:
                line += char
            elif line and font.getlength(char) <= width:
                lines.append(line)
                line = char
            else:
                return None
        lines.append(line)
    ascent, descent = font.getmetrics()
    return lines if len(lines) * (ascent + descent) <= height else None


def render_message(text: str, width: int, height: int) -> Image | None:
    """``text`` drawn black on white on a ``width`` x ``height`` RGB picture, at the largest font
    size that fits (found by bisection); None when it does not fit even at `MIN_FONT_SIZE`."""
    from PIL import Image, ImageDraw

    inner_w, inner_h = width - 2 * _MARGIN, height - 2 * _MARGIN
    best, lo, hi = None, MIN_FONT_SIZE, max(inner_h, MIN_FONT_SIZE)
    while lo <= hi:
        size = (lo + hi) // 2
        lines = _layout(text, size, inner_w, inner_h)
        if lines is None:
            hi = size - 1
        else:
            best, lo = (size, lines), size + 1
    if best is None:
        return None
    size, lines = best
    font = _font(size)
    line_height = sum(font.getmetrics())
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        draw.text((_MARGIN, _MARGIN + i * line_height), line, fill="black", font=font)
    return picture


def message_pictures(adapter: FamilyFacts, text: str, n_slots: int) -> list[Image] | None:
    """The pictures showing ``text`` in one image block of ``n_slots`` slots, one per image of
    the family's layout; None when the text does not fit them."""
    sizes = [adapter.picture_size(s) for s in image_slots(adapter, n_slots)]  # (height, width) each
    strip = render_message(text, sum(w for _, w in sizes), max(h for h, _ in sizes))
    if strip is None:
        return None
    pictures, left = [], 0
    for height, width in sizes:
        pictures.append(strip.crop((left, 0, left + width, height)))
        left += width
    return pictures


@torch.no_grad()
def picture_features(adapter: FamilyFacts, model: PreTrainedModel, pictures: Sequence[Sequence[Image]],
                     n_slots: int) -> torch.Tensor:
    """Projected image features ``(B, n_slots, D)`` of ``B`` rows of pictures (each row as
    `message_pictures` gives it), through ``model``'s vision tower and projector in one call."""
    slots = image_slots(adapter, n_slots)
    if any(len(row) != len(slots) for row in pictures):
        raise ValueError(f"each row needs {len(slots)} pictures for {n_slots} {adapter.family} slots; "
                         "make them with message_pictures")
    flat = [picture for row in pictures for picture in row]
    inputs = adapter.picture_pixel_inputs(flat, slots * len(pictures), device=model.device, dtype=model.dtype)
    out = adapter.image_features(model, inputs)
    features = flat_features(out.pooler_output, adapter.hidden_size(model))  # (B * n, D)
    if features.shape[0] != len(pictures) * n_slots:
        raise ImageSlotMismatch(len(pictures) * n_slots, features.shape[0],
                                f"the {adapter.family} vision tower's output does not fit the layout")
    return features.view(len(pictures), n_slots, -1)  # (B, n, D)


def message_features(adapter: FamilyFacts, model: PreTrainedModel, text: str, n_slots: int) -> torch.Tensor:
    """Projected image features ``(n_slots, D)`` of ``text`` rendered as pictures (`message_pictures`).

    Raises `latentwire.errors.ConfigError` when the text does not fit the pictures.
    """
    pictures = message_pictures(adapter, text, n_slots)
    if pictures is None:
        from latentwire.errors import ConfigError

        raise ConfigError(f"a message of {len(text)} characters does not fit the pictures of {n_slots} "
                          f"{adapter.family} image slots at font size {MIN_FONT_SIZE} or more; "
                          "give it more image slots or shorten it")
    return picture_features(adapter, model, [pictures], n_slots)[0]


def check_picture_path(adapter: FamilyFacts, model: PreTrainedModel, n_slots: int) -> None:
    """Refuse, with `MissingVisionTower`, a model whose family cannot give a rendered message's
    features: no vision tower in its config, or a tower and projector that fail on one picture."""
    if getattr(adapter.config, "vision_config", None) is None:
        raise MissingVisionTower(adapter.family, "its config has no vision_config")
    try:
        message_features(adapter, model, "probe", n_slots)
    except (AttributeError, NotImplementedError, RuntimeError, TypeError) as exc:
        raise MissingVisionTower(adapter.family, f"its vision tower and projector failed on a picture "
                                 f"({type(exc).__name__}: {exc})") from exc
