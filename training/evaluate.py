"""Text-mode evaluation of a tinyworld model on the tasks: greedy decoding through `listen`.

Three numbers per task, each an exact-match and a per-character accuracy:

- ``read``: the receiver answers from the gold text messages (can it read?).
- ``write``: each sender's generated message against its gold message (can it write?).
- ``e2e``: text MAS end to end: the senders generate their messages in speaking order, each
  reading what the earlier ones actually generated, and the receiver answers from them.
- ``screen``: the receiver answers from the gold messages shown as a picture at its image slots
  (`screen`), the text lines left out (can it read through its vision port?). Tasks whose
  messages do not fit on a screen have no ``screen`` score.

All of them go through `latentwire.agents.latent_io.listen` with ``codec=None`` (a blank image at
the image slots), the path a text-mode agent takes.

    >>> evaluate(model, tokenizer, ["secret", "reverse"], length=8, n=32)
    {'secret': {'read': 1.0, 'read_char': 1.0, 'write': 1.0, ...}, 'reverse': {...}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from latentwire.tinyworld.screen import SCREEN_SLOTS, screen_embeddings, screen_ids, screen_text
from latentwire.tinyworld.tasks import STREAMS, Episode, make_task, mean_score
from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID, TinyTokenizer

__all__ = ["EVAL_SEED", "evaluate", "generate", "read_screens", "run_text_episodes", "summary"]

#: Stream of the evaluation episodes (the development stream); training draws from its own seed, so
#: the two never overlap by construction of the stream (a clash of 8-letter secrets is ~1e-11 per pair).
EVAL_SEED = STREAMS["dev"]


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)  # DDP / accelerate wrappers keep the model in .module


@torch.no_grad()
def generate(model: Any, tokenizer: TinyTokenizer, texts: Sequence[str], *, n_slots: int | None = None,
             max_new_tokens: int = 32, batch_size: int = 64) -> list[str]:
    """Greedy replies of ``model`` to prompt ``texts`` (blank image at ``n_slots`` image slots).

    ``n_slots`` defaults to the family's `default_slots`. Decoding stops at ``<eos>``.
    """
    from latentwire.agents.families import adapter_for
    from latentwire.agents.latent_io import listen

    model = _unwrap(model)
    adapter = adapter_for(model)
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        prompts = [adapter.build_prompt(tokenizer, t, n_slots) for t in texts[start:start + batch_size]]
        ids = listen(model, adapter, None, prompts, max_new_tokens=max_new_tokens, pad_id=PAD_ID,
                     eos_id=EOS_ID)
        out += [tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    return out


@torch.no_grad()
def read_screens(model: Any, tokenizer: TinyTokenizer, texts: Sequence[str], shown: Sequence[str], *,
                 max_new_tokens: int = 32, batch_size: int = 64) -> list[str]:
    """Greedy replies to prompt ``texts``, each with its ``shown`` text as a picture at
    `SCREEN_SLOTS` image slots (`screen`)."""
    from latentwire.agents.families import adapter_for
    from latentwire.agents.latent_io import listen

    model = _unwrap(model)
    adapter = adapter_for(model)
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk = slice(start, start + batch_size)
        prompts = [adapter.build_prompt(tokenizer, t, SCREEN_SLOTS) for t in texts[chunk]]
        pictures = screen_embeddings(model, [screen_ids(tokenizer, t) for t in shown[chunk]])
        ids = listen(model, adapter, None, prompts, max_new_tokens=max_new_tokens, pad_id=PAD_ID,
                     eos_id=EOS_ID, visual_embeds=pictures)
        out += [tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    return out


def run_text_episodes(model: Any, tokenizer: TinyTokenizer, episodes: Sequence[Episode], *,
                      n_slots: int | None = None) -> tuple[list[dict[str, str]], list[str]]:
    """Run episodes in TEXT mode with one model playing every agent.

    Returns, per episode, the messages the senders generated (in speaking order, each sender
    reading what the earlier ones generated) and the receiver's answers. Episodes of one batch
    must come from the same task (same agents).
    """
    if not episodes:
        return [], []
    names = [a.name for a in episodes[0].agents]
    sent: list[dict[str, str]] = [{} for _ in episodes]
    budget = max(len(ep.answer) for ep in episodes) + 8
    for sender in names[:-1]:
        texts = [ep.prompt(sender, messages=m) for ep, m in zip(episodes, sent)]
        limit = max(len(ep.target(sender)) for ep in episodes) + 8
        for m, reply in zip(sent, generate(model, tokenizer, texts, n_slots=n_slots, max_new_tokens=limit)):
            m[sender] = reply
    texts = [ep.prompt(names[-1], messages=m) for ep, m in zip(episodes, sent)]
    return sent, generate(model, tokenizer, texts, n_slots=n_slots, max_new_tokens=budget)


def _was_training(model: Any) -> bool:
    return bool(getattr(model, "training", False))


def evaluate(model: Any, tokenizer: TinyTokenizer, tasks: Sequence[str], *, length: int = 8, n: int = 32,
             seed: int = EVAL_SEED, n_slots: int | None = None) -> dict[str, dict[str, float]]:
    """Text-mode ``read``, ``write`` and ``e2e`` scores (``*_char`` for per-character) per task.

    ``n`` episodes of each task at secret ``length`` from the stream ``seed``. Runs in eval mode
    without gradients and puts the model back in training mode if it was (nanoGPT's
    ``estimate_loss`` pattern).
    """
    was_training = _was_training(model)
    model.eval()
    try:
        results: dict[str, dict[str, float]] = {}
        for name in tasks:
            episodes = make_task(name, length=length).episodes(n, seed=seed)
            row: dict[str, float] = {}
            # read: the receiver from the gold messages.
            receiver = episodes[0].receiver.name
            answers = generate(model, tokenizer, [ep.prompt(receiver) for ep in episodes], n_slots=n_slots,
                               max_new_tokens=max(len(ep.answer) for ep in episodes) + 8)
            _put(row, "read", answers, [ep.answer for ep in episodes])
            shown = [screen_text(ep, receiver) for ep in episodes]
            if all(len(tokenizer.encode(t, add_special_tokens=False)) <= SCREEN_SLOTS for t in shown):
                answers = read_screens(model, tokenizer, [ep.prompt(receiver, mode="latent") for ep in episodes],
                                       shown, max_new_tokens=max(len(ep.answer) for ep in episodes) + 8)
                _put(row, "screen", answers, [ep.answer for ep in episodes])
            # write: every sender from the gold messages it would receive.
            preds, golds = [], []
            for spec in episodes[0].senders:
                texts = [ep.prompt(spec.name) for ep in episodes]
                limit = max(len(ep.target(spec.name)) for ep in episodes) + 8
                preds += generate(model, tokenizer, texts, n_slots=n_slots, max_new_tokens=limit)
                golds += [ep.target(spec.name) for ep in episodes]
            _put(row, "write", preds, golds)
            # e2e: text MAS, each agent reading what the others actually wrote.
            _, answers = run_text_episodes(model, tokenizer, episodes, n_slots=n_slots)
            _put(row, "e2e", answers, [ep.answer for ep in episodes])
            results[name] = row
        return results
    finally:
        if was_training:
            model.train()


def _put(row: dict[str, float], key: str, predictions: Sequence[str], golds: Sequence[str]) -> None:
    s = mean_score(predictions, golds)
    row[key], row[f"{key}_char"] = round(s.exact, 4), round(s.char, 4)


def summary(results: Mapping[str, Mapping[str, float]], key: str = "e2e") -> float:
    """Mean of ``key`` over the tasks of an `evaluate` result."""
    return round(sum(r[key] for r in results.values()) / max(len(results), 1), 4)
