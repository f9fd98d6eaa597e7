"""Speaking and listening in latents: the two model-side paths every VLM agent runs.

**Speaking** (`speak`): the sender runs its prompt (its image slots carry any latents it has
received, else a blank image), then takes ``m`` latent thinking steps: the last-layer hidden
state, realigned into input-embedding space (`FamilyAdapter.realign`), is fed back as the next
input embedding through the KV cache. The message is the sender's reasoning (`reason`): the
realigned last-layer states of its prompt (what it read, padding masked out) followed by those
``m`` steps (what it thought); the sender's codec encodes them into K universal tokens in the shared
space: a `Latent`. (The steps alone carry little, which is why the prompt's states go too:
docs/architecture.md, "Speaking and listening".)

**Listening** (`listen`): the receiver's codec decodes every received latent together into k
visual embeddings and a gate; they are added onto a blank image's embeddings at the prompt's
image slots (``inputs_embeds``), and the model answers (greedy decoding with the KV cache).

Both paths go through the family adapter, so they work the same for every supported family;
Qwen's multimodal rotary positions are carried through the extra steps by
`FamilyAdapter.position_ids_after`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from latentwire import Latent

from .codec import SHARED_SPACE, UniversalVisualCodec
from .families import FamilyAdapter, InjectedInputs, Prompt


@dataclass
class Speech:
    """What `speak` produced.

    ``steps`` ``(B, m, D)``: the realigned latent thinking steps (input-embedding space).
    ``latents``: one shared-space `Latent` (K, width) per prompt, from the sender's codec.
    """

    steps: torch.Tensor
    latents: list[Latent]


def prompt_batch(prompts: Sequence[Prompt], pad_id: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts into ``(B, T)`` ids and attention mask, so every row ends at T-1
    (``pad_id``: `ModelBundle.pad_id`; the mask keeps padding out of attention)."""
    width = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)  # (B, T)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p.input_ids):] = torch.tensor(p.input_ids, device=device)
        mask[row, width - len(p.input_ids):] = 1
    return ids, mask


@functools.lru_cache(maxsize=None)
def _cache_kwarg(model_class: type) -> str:
    """The name under which ``model_class.forward`` takes the KV cache: ``cache`` in recent
    transformers 5.x, ``past_key_values`` before it (both are in use on real machines)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _cache_of(outputs: Any) -> Any:
    """The KV cache a forward returned, under either name (see `_cache_kwarg`)."""
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values


def _step_kwargs(model: Any, adapter: FamilyAdapter, inputs: InjectedInputs, embeds: torch.Tensor,
                 attention_mask: torch.Tensor, cache: Any, cache_length: int) -> dict[str, Any]:
    """Forward kwargs for feeding ``embeds (B, n, D)`` after ``cache_length`` cached positions."""
    kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": attention_mask,
                              _cache_kwarg(type(model)): cache, "use_cache": True}
    positions = adapter.position_ids_after(inputs, cache_length, embeds.shape[1])
    if positions is not None:
        kwargs["position_ids"] = positions
    return kwargs


def _last_hidden(outputs: Any) -> torch.Tensor:
    return outputs.hidden_states[-1][:, -1:, :]  # (B, 1, D)


def think(model: Any, adapter: FamilyAdapter, inputs: InjectedInputs, steps: int) -> torch.Tensor:
    """Run the prompt, then ``steps`` latent thinking steps; return them ``(B, steps, D)``.

    Differentiable (no ``no_grad`` here), so alignment training can reach the codec through it.
    """
    return reason(model, adapter, inputs, steps, with_prompt=False)[0]


def reason(model: Any, adapter: FamilyAdapter, inputs: InjectedInputs, steps: int, *,
           with_prompt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The sender's reasoning: ``(vectors (B, T + steps, D), mask (B, T + steps))``.

    The prompt's realigned last-layer states (mask False at padding) followed by ``steps`` latent
    thinking steps; ``with_prompt=False`` gives the steps alone ``(B, steps, D)``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = model(**inputs.kwargs, use_cache=True, output_hidden_states=True)
    read = adapter.realign(model, out.hidden_states[-1]) if with_prompt else None  # (B, T, D)
    read_mask = inputs.attention_mask.bool() if with_prompt else None
    cache, attention = _cache_of(out), inputs.attention_mask
    length = inputs.inputs_embeds.shape[1]
    vectors = []
    for i in range(steps):
        step = adapter.realign(model, _last_hidden(out))  # (B, 1, D)
        vectors.append(step)
        if i == steps - 1:
            break  # the last step is part of the message; no need to run it
        attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=1)  # (B, T+i+1)
        out = model(**_step_kwargs(model, adapter, inputs, step, attention, cache, length + i),
                    output_hidden_states=True)
        cache = _cache_of(out)
    thought = torch.cat(vectors, dim=1)  # (B, steps, D)
    thought_mask = torch.ones(thought.shape[:2], dtype=torch.bool, device=thought.device)
    if read is None:
        return thought, thought_mask
    return torch.cat([read, thought], dim=1), torch.cat([read_mask, thought_mask], dim=1)


def _inject_received(model: Any, adapter: FamilyAdapter, codec: UniversalVisualCodec | None,
                     ids: torch.Tensor, attention: torch.Tensor,
                     received: Sequence[Sequence[Latent]] | None) -> InjectedInputs:
    """Inputs with each row's received latents decoded at its image slots (blank if none)."""
    if not received or not any(received):
        return adapter.inject(model, ids, attention_mask=attention)
    if codec is None:
        raise ValueError("received latents need a codec to decode them")
    if len(received) != ids.shape[0]:
        raise ValueError(f"received latents for {len(received)} prompts, but there are {ids.shape[0]}")
    if len({len(r) for r in received}) != 1:
        raise ValueError("every prompt of a batch must have received the same number of latents")
    # Decode all latents of a row together: (B, sum K_i, width) -> k visual embeddings.
    per_sender = [torch.stack([r[j].torch() for r in received]) for j in range(len(received[0]))]
    batch = [Latent(t, space=received[0][j].space, family=received[0][j].family)
             for j, t in enumerate(per_sender)]
    decoded = codec.decode(batch)
    return adapter.inject(model, ids, decoded.embeddings, attention_mask=attention,
                          gate=decoded.gate)


def speak(model: Any, adapter: FamilyAdapter, codec: UniversalVisualCodec, prompts: Sequence[Prompt],
          steps: int, *, pad_id: int = 0, received: Sequence[Sequence[Latent]] | None = None) -> Speech:
    """Turn prompts (and what each prompt's agent received) into shared-space latents, batched."""
    device = model.get_input_embeddings().weight.device
    ids, attention = prompt_batch(prompts, pad_id, device)
    with torch.no_grad():
        inputs = _inject_received(model, adapter, codec, ids, attention, received)
        vectors, mask = reason(model, adapter, inputs, steps)  # (B, T + m, D)
        tokens = codec.encode_tokens(vectors.float(), mask)  # (B, K, width), shared space
    latents = [Latent(t.detach().cpu().contiguous(), space=SHARED_SPACE, family=codec.config.family)
               for t in tokens]
    return Speech(steps=vectors[:, -steps:], latents=latents)


@torch.no_grad()
def listen(model: Any, adapter: FamilyAdapter, codec: UniversalVisualCodec | None,
           prompts: Sequence[Prompt], *, received: Sequence[Sequence[Latent]] | None = None,
           max_new_tokens: int = 16, pad_id: int = 0, eos_id: int | None = None,
           visual_embeds: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy answers (token ids, without the prompt) to prompts, reading received latents
    through the image slots. Stops a row at ``eos_id`` (kept out of the answer).

    ``visual_embeds`` ``(B, n, D)``: vectors to add to the blank image at the slots instead of
    decoded latents (what a picture would put there; tinyworld's screens, controls).
    """
    device = model.get_input_embeddings().weight.device
    ids, attention = prompt_batch(prompts, pad_id, device)
    if visual_embeds is not None:
        if received:
            raise ValueError("pass received latents or visual_embeds, not both")
        inputs = adapter.inject(model, ids, visual_embeds, attention_mask=attention)
    else:
        inputs = _inject_received(model, adapter, codec, ids, attention, received)
    out = model(**inputs.kwargs, use_cache=True)
    cache, length = _cache_of(out), ids.shape[1]
    embed = model.get_input_embeddings()
    answers: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for i in range(max_new_tokens):
        token = out.logits[:, -1, :].argmax(dim=-1)  # (B,)
        for row in range(len(prompts)):
            if not done[row]:
                if eos_id is not None and int(token[row]) == eos_id:
                    done[row] = True
                else:
                    answers[row].append(int(token[row]))
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=1)
        step = embed(token.unsqueeze(1))  # (B, 1, D)
        out = model(**_step_kwargs(model, adapter, inputs, step, attention, cache, length + i))
        cache = _cache_of(out)
    return answers
