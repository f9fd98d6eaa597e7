"""Sender and receiver sides of a latent exchange, and how well a pair communicates.

Each side is a `latentwire.agents.bundle.ModelBundle` (a model of any family with its codec and
latent steps). `evaluate_pair` runs the inference path itself on anchors: the sender reads its
prompt and thinks ``latent_steps`` latent steps, its codec encodes them into the shared space, the
receiver's codec decodes them at its image slots and the receiver answers greedily. Beside it,
the same receiver with the message as TEXT, with no message (blank image), and with a shuffled
latent (another anchor's), the control that shows the information really travels. The alignment
job evaluates a family with itself (sender = receiver); ``latentwire bench mas`` evaluates every
ordered pair of families.
"""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentwire.errors import ConfigError
from latentwire.tinyworld.models import FAMILIES  # light: the family table, no torch
from latentwire.tinyworld.space import FIT_FILE, read_fit_record

from .anchors import Anchor

if TYPE_CHECKING:
    from latentwire.agents.bundle import ModelBundle

__all__ = ["FIT_FILE", "MODEL_HELP", "check_model_spec", "codec_run", "derangement", "evaluate_pair",
           "load_model", "read_fit_record", "teacher_replies"]


# What a model spec (``--model``) may be: the help of every option that takes one.
MODEL_HELP = (f"tinyworld family ({', '.join(FAMILIES)}), tinyworld checkpoint or model folder, "
              "or Hugging Face Hub VLM id (owner/name)")


def check_model_spec(spec: str) -> None:
    """Refuse, without the network, a model spec `load_model` cannot take: not a tinyworld family,
    not an existing path, and not shaped like a Hugging Face Hub id (``owner/name``). A typo such as
    ``gemma33`` fails here with the families listed, not after the Hub's retries."""
    if spec in FAMILIES or Path(spec).exists():
        return  # a folder's own problems are `load_model`'s to name
    if spec.count("/") == 1:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(spec)
        except HFValidationError:
            pass
        else:
            return
    close = difflib.get_close_matches(spec, FAMILIES, n=1)
    raise ConfigError(f"model {spec!r} is not a {MODEL_HELP}"
                      + (f"; did you mean {close[0]!r}?" if close else ""))


def _check_hub_model(spec: str) -> None:
    """Ask the Hub once, without retries, for the config of ``spec`` (a Hub id not in the local
    cache), so that a model that is not there, or a Hub that cannot be reached, fails at once in one
    line rather than after transformers' retries with back-off. A cached model is not asked about:
    it loads without the network."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError)

    from latentwire.agents.errors import CheckpointError

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    try:
        get_hf_file_metadata(hf_hub_url(spec, "config.json"))
    except GatedRepoError:  # before its base class, RepositoryNotFoundError
        raise CheckpointError(spec, "a gated model: accept its terms on its Hugging Face page, then log in "
                                    "(`hf auth login` or HF_TOKEN)", what="model") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"model {spec!r}: no such model on the Hugging Face Hub (a private one needs "
                          "`hf auth login` or HF_TOKEN)") from None
    except EntryNotFoundError:
        raise ConfigError(f"model {spec!r}: the Hub repo has no config.json, so it is no transformers "
                          "model") from None
    except OfflineModeIsEnabled:
        raise CheckpointError(spec, "HF_HUB_OFFLINE is set and the model is not in the local cache; download "
                                    "it once with the network on", what="model") from None
    except Exception as exc:  # the network or the Hub itself: one line, the details chained
        reason = (str(exc).splitlines() or [""])[0]
        raise CheckpointError(spec, f"the Hugging Face Hub did not answer ({type(exc).__name__}: {reason}); "
                                    "check the network (and HF_ENDPOINT), or give a local folder",
                              what="model") from exc


def load_model(spec: str, *, device: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``spec``: a tinyworld family name (its shipped checkpoint), a
    tinyworld checkpoint folder, or a Hugging Face model id or folder (`from_pretrained`).

    Refuses, before any weights load, a spec that can be none of these (`check_model_spec`), a
    Hub id the Hub does not have or cannot be asked about (one request, no retries), a model
    without a visual pathway and a family latentwire has no adapter for (`UnsupportedFamily`).
    """
    from latentwire.agents.errors import AgentConfigError, CheckpointError
    from latentwire.agents.families import adapter_for
    from latentwire.tinyworld import checkpoints

    from .pretrain import load_or_train

    if spec in FAMILIES:
        return load_or_train(spec, device=device)
    if (Path(spec) / "tinyworld.json").is_file():
        return checkpoints.load_checkpoint(spec, device=device)
    check_model_spec(spec)
    if not Path(spec).exists():
        _check_hub_model(spec)
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


def derangement(n: int, key: object) -> list[int]:
    """A fixed permutation of ``range(n)`` without fixed points (for n >= 2), seeded by ``key``:
    which other anchor's latent each anchor gets in the shuffled-latent control."""
    order = list(range(n))
    random.Random(f"shuffle|{key}").shuffle(order)
    return [(i + 1) % n if o == i else o for i, o in enumerate(order)]


def codec_run(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """A codec folder's codec and the record of how to run it: the fit record of a space-maps
    family folder (`read_fit_record`), else the run config in ``align.json`` of a ``train codec``
    output (``{}`` without either; with its ``scheme``, e.g. ``"anchored to gemma3"``). Both name
    the ``model`` and its ``latent_steps``."""
    from latentwire.agents.codec import UniversalVisualCodec

    folder = Path(folder)
    codec = UniversalVisualCodec.from_pretrained(folder)
    if (record := read_fit_record(folder)) is not None:
        return codec, record
    if (folder / "align.json").is_file():
        meta = json.loads((folder / "align.json").read_text())
        return codec, {**meta["config"], **({"scheme": meta["scheme"]} if "scheme" in meta else {})}
    return codec, {}


def teacher_replies(party: ModelBundle, anchors: Sequence[Anchor], *, max_new_tokens: int,
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


def evaluate_pair(sender: ModelBundle, receiver: ModelBundle, anchors: Sequence[Anchor], *,
                  batch_size: int = 64, shuffled: bool = True, space: str | None = None,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """Receiver exact match and per-character accuracy against each anchor's ``answer``.

    ``latent``: the sender's latent through both codecs (in ``space``: the shared space, the default, or the
    family's own codec space when sender and receiver share a codec); ``text``: the message in
    the receiver's prompt; ``none``: no message (blank image); ``shuffled``: another anchor's
    latent (a fixed derangement), which must score near ``none``.
    """
    import torch

    from latentwire.agents.codec import SHARED_SPACE  # here, not at the top: it imports torch
    from latentwire.tinyworld.tasks import mean_score

    space = SHARED_SPACE if space is None else space
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
            tokens = sender.speak([a.sender for a in chunk], to_shared=space == SHARED_SPACE)  # (B, K, D)
            student = [a.student for a in chunk]
            answers["latent"] += receiver.answer(student, tokens=tokens, space=space, max_new_tokens=limit)
            answers["text"] += receiver.answer([a.teacher for a in chunk], max_new_tokens=limit)
            answers["none"] += receiver.answer(student, max_new_tokens=limit)
            if shuffled and len(chunk) > 1:
                order = derangement(len(chunk), f"{seed}|{start}")
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
