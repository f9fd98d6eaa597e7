"""Sender and receiver sides of a latent exchange, and how well a pair communicates.

A `Party` is one agent model with its codec (any family). `evaluate_pair` runs the inference
path itself on anchors: the sender reads its prompt and thinks ``latent_steps`` latent steps, its
codec encodes them into the hub space, the receiver's codec decodes them at its image slots and
the receiver answers greedily. Beside it, the same receiver with the message as TEXT, with no
message (blank image), and with a shuffled latent (another anchor's), the control that shows
the information really travels. The alignment job evaluates a family with itself
(sender = receiver); ``latentwire bench mas`` evaluates every ordered pair of families.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .anchors import Anchor

__all__ = ["Party", "codec_run", "evaluate_pair", "load_model", "teacher_replies"]


def load_model(spec: str, *, device: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``spec``: a tinyworld family name (its shipped checkpoint), a
    tinyworld checkpoint folder, or a Hugging Face model id or folder (`from_pretrained`).

    Refuses, before any weights load, a model without a visual pathway and a family latentwire
    has no adapter for (`UnsupportedFamily`).
    """
    from latentwire.agents.errors import AgentConfigError, CheckpointError
    from latentwire.agents.families import adapter_for
    from latentwire.tinyworld import checkpoints
    from latentwire.tinyworld.models import FAMILIES

    from .pretrain import load_or_train

    if spec in FAMILIES:
        return load_or_train(spec, device=device)
    if (Path(spec) / "tinyworld.json").is_file():
        return checkpoints.load_checkpoint(spec, device=device)
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise CheckpointError(spec, str(exc), what="model") from exc
    if getattr(config, "vision_config", None) is None:
        raise AgentConfigError("model", spec, f"a vision-language model; {config.model_type} has no visual "
                               "pathway (no vision_config), and latents reach a model through its image slots")
    adapter_for(config)  # UnsupportedFamily, naming the supported ones
    model = AutoModelForImageTextToText.from_pretrained(spec)
    tokenizer = AutoTokenizer.from_pretrained(spec)
    return (model.to(device) if device is not None else model).eval(), tokenizer


def codec_run(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """A codec folder's codec and the record of how to run it: ``hub_fit.json`` of a hub-maps
    family folder, else the run config in ``align.json`` of a ``train codec`` output (``{}``
    without either; with its ``scheme``, e.g. ``"anchored to gemma3"``). Both name the ``model``
    and its ``latent_steps``."""
    import json

    from latentwire.agents.codec import UniversalVisualCodec

    folder = Path(folder)
    codec = UniversalVisualCodec.from_pretrained(folder)
    if (folder / "hub_fit.json").is_file():
        return codec, json.loads((folder / "hub_fit.json").read_text())
    if (folder / "align.json").is_file():
        meta = json.loads((folder / "align.json").read_text())
        return codec, {**meta["config"], **({"scheme": meta["scheme"]} if "scheme" in meta else {})}
    return codec, {}


@dataclass
class Party:
    """One side of an exchange: a frozen model, its tokenizer, its family adapter and its codec.

    ``n_slots``: image slots the receiver reads latents at (the codec's ``image_slots``);
    ``latent_steps``: m, how long the sender thinks before its codec encodes.
    """

    model: Any
    tokenizer: Any
    codec: Any
    latent_steps: int = 8

    def __post_init__(self) -> None:
        from latentwire.agents.families import adapter_for

        self.adapter = adapter_for(self.model)
        self.n_slots = self.codec.config.image_slots

    @property
    def family(self) -> str:
        """The model family (``gemma3``, ``qwen2_5_vl``, ...)."""
        return self.adapter.family

    @property
    def pad_id(self) -> int:
        """Padding id of the tokenizer (its eos where it has no pad)."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return self.eos_id if pad is None else int(pad)

    @property
    def eos_id(self) -> int:
        """End-of-sequence id of the tokenizer."""
        return int(self.tokenizer.eos_token_id)

    def prompts(self, texts: Sequence[str]) -> list[Any]:
        """Chat prompts with this party's image slots laid out."""
        return [self.adapter.build_prompt(self.tokenizer, t, self.n_slots) for t in texts]

    def think(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """The reasoning after reading ``texts`` (`latent_io.reason`: prompt states and ``m``
        latent steps, ``(B, T + m, H)``, and its mask), without gradient."""
        import torch

        from latentwire.agents.latent_io import _prompt_batch, reason

        ids, attention = _prompt_batch(self.prompts(texts), self.pad_id, self.model.device)
        with torch.no_grad():
            inputs = self.adapter.inject(self.model, ids, attention_mask=attention)
            vectors, mask = reason(self.model, self.adapter, inputs, self.latent_steps)
            return vectors.float(), mask

    def speak(self, texts: Sequence[str], *, to_hub: bool = True) -> Any:
        """Universal tokens ``(B, K, D)`` of what the party thought on ``texts``."""
        import torch

        with torch.no_grad():
            return self.codec.encode_tokens(*self.think(texts), to_hub=to_hub)

    def answer(self, texts: Sequence[str], *, tokens: Any = None, space: str = "hub",
               max_new_tokens: int = 16) -> list[str]:
        """Greedy replies to ``texts``, reading ``tokens (B, K, D)`` (in ``space``) at the image
        slots, or a blank image without them."""
        from latentwire import Latent
        from latentwire.agents.latent_io import listen

        received = None
        if tokens is not None:
            received = [[Latent(t.detach().cpu(), space=space, family=self.family)] for t in tokens]
        ids = listen(self.model, self.adapter, self.codec, self.prompts(texts), received=received,
                     max_new_tokens=max_new_tokens, pad_id=self.pad_id, eos_id=self.eos_id)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in ids]


def teacher_replies(party: Party, anchors: Sequence[Anchor], *, max_new_tokens: int,
                    batch_size: int = 64) -> list[list[int]]:
    """The teacher's own greedy reply to each anchor's text-mode prompt, as token ids ending in
    eos when it stopped there: the label-free targets of self-distillation."""
    from latentwire.agents.latent_io import listen

    out: list[list[int]] = []
    for start in range(0, len(anchors), batch_size):
        chunk = anchors[start:start + batch_size]
        rows = listen(party.model, party.adapter, None, party.prompts([a.teacher for a in chunk]),
                      max_new_tokens=max_new_tokens, pad_id=party.pad_id, eos_id=party.eos_id)
        out += [row + [party.eos_id] if len(row) < max_new_tokens else row for row in rows]
    return out


def evaluate_pair(sender: Party, receiver: Party, anchors: Sequence[Anchor], *, batch_size: int = 64,
                  shuffled: bool = True, space: str = "hub", seed: int = 0) -> dict[str, dict[str, float]]:
    """Receiver exact match and per-character accuracy against each anchor's ``answer``.

    ``latent``: the sender's latent through both codecs (in ``space``: ``"hub"``, or the
    family's own codec space when sender and receiver share a codec); ``text``: the message in
    the receiver's prompt; ``none``: no message (blank image); ``shuffled``: another anchor's
    latent (a fixed derangement), which must score near ``none``.
    """
    import torch

    from latentwire.tinyworld.tasks import mean_score

    if any(a.answer is None for a in anchors):
        raise ValueError("evaluation anchors need reference answers")
    answers: dict[str, list[str]] = {"latent": [], "text": [], "none": []}
    if shuffled:
        answers["shuffled"] = []
    was = (sender.codec.training, receiver.codec.training)
    sender.codec.eval()
    receiver.codec.eval()
    try:
        for start in range(0, len(anchors), batch_size):
            chunk = anchors[start:start + batch_size]
            limit = max(len(receiver.tokenizer.encode(a.answer, add_special_tokens=False)) for a in chunk) + 4
            tokens = sender.speak([a.sender for a in chunk], to_hub=space == "hub")  # (B, K, D)
            student = [a.student for a in chunk]
            answers["latent"] += receiver.answer(student, tokens=tokens, space=space, max_new_tokens=limit)
            answers["text"] += receiver.answer([a.teacher for a in chunk], max_new_tokens=limit)
            answers["none"] += receiver.answer(student, max_new_tokens=limit)
            if shuffled and len(chunk) > 1:
                order = list(range(len(chunk)))
                random.Random(f"shuffle|{seed}|{start}").shuffle(order)
                order = [(i + 1) % len(chunk) if o == i else o for i, o in enumerate(order)]  # no fixed point
                answers["shuffled"] += receiver.answer(student, tokens=tokens[torch.tensor(order)],
                                                       space=space, max_new_tokens=limit)
            elif shuffled:
                answers["shuffled"] += receiver.answer(student, max_new_tokens=limit)
    finally:
        sender.codec.train(was[0])
        receiver.codec.train(was[1])
    gold = [a.answer for a in anchors]
    result = {}
    for name, predicted in answers.items():
        s = mean_score(predicted, gold)
        result[name] = {"exact": round(s.exact, 4), "char": round(s.char, 4)}
    return result
