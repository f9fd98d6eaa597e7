"""tinyworld's "picture of text": a message shown at the image slots, one character per slot.

Real VLMs read text in images (a screenshot, a sign, a page): their language model has learnt to
take information from the image positions. A model pre-trained only on text with a blank image
has not, and a frozen receiver like that cannot be steered through its slots however good the
codec (docs/benchmarks.md has what the first tinyworld checkpoints reached without it). tinyworld
has no pictures, so its "picture" of a text is the text's own token embeddings laid over the
blank image, one character per slot (`SCREEN_SLOTS` slots, the rest blank). Pre-training shows
some receivers their messages this way (`PretrainConfig.screen_share`), as real VLMs saw
screenshots in pre-training; the codec then has to learn to put such pictures at the slots from
another model's latent thoughts, which is the hard part and the one measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .tasks import Episode
from .tokenizer import TinyTokenizer

__all__ = ["SCREEN_SLOTS", "screen_embeddings", "screen_ids", "screen_text"]

#: Slots of a screen image: one character each, so messages up to this many bytes fit.
SCREEN_SLOTS = 16
BLANK = -1  # a slot that shows nothing (the blank image alone)


def screen_text(episode: Episode, name: str) -> str:
    """What agent ``name`` would read as text lines in TEXT mode and not in LATENT mode: the
    messages of the agents it listens to, joined by newlines."""
    agent = episode.agent(name)
    return "\n".join(str(episode.messages[source]) for source in agent.listens_to)


def screen_ids(tokenizer: TinyTokenizer, text: str, n_slots: int = SCREEN_SLOTS) -> list[int]:
    """Token ids of ``text`` laid out over ``n_slots`` slots, `BLANK` after the end.

    Raises ``ValueError`` when the text needs more slots than there are.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) > n_slots:
        raise ValueError(f"a screen of {n_slots} slots cannot show {len(ids)} characters: {text!r}")
    return ids + [BLANK] * (n_slots - len(ids))


def screen_embeddings(model: Any, rows: Sequence[Sequence[int]]) -> Any:
    """``(B, n, D)`` vectors to add to the blank image at the slots (`FamilyAdapter.inject`, add
    mode): the model's input embedding of each shown character, zero at `BLANK` slots."""
    import torch

    embed = model.get_input_embeddings()
    ids = torch.tensor([list(r) for r in rows], device=embed.weight.device)  # (B, n)
    shown = (ids != BLANK).unsqueeze(-1)
    return embed(ids.clamp_min(0)) * shown
