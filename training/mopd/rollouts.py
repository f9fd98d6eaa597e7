"""Rollouts: groups of n sampled completions per prompt, with the student's log-probabilities.

Works with any transformers model that has ``generate`` and a causal-LM forward returning
``logits`` (a ``*ForCausalLM``, or one of our VLM families driven by text only), and any
tokenizer with ``apply_chat_template`` (Hugging Face tokenizers and the tinyworld one).

Prompts are chat-rendered (`encode_prompt`), left-padded for generation, and the completions are
cut at the first end token. The policy is ``softmax(logits / temperature)``: the kept
``old_logprobs`` are the log-probabilities of the sampled tokens under that policy, computed by
`completion_logprobs` (the same function the losses use), so the importance ratio of an
un-updated student is exactly 1. ``top_p`` / ``top_k`` truncate the behaviour policy; the ratio
ignores that truncation (as in common GRPO/OPD code), so keep them off for exact corrections.

Sequences for scoring are laid out as ``prompt + completion`` right-padded, and the logits at
position ``len(prompt) - 1 + j`` predict completion token ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latentwire.errors import ConfigError

__all__ = ["RolloutBatch", "SamplingConfig", "completion_logprobs", "encode_prompt", "generate", "sample_groups"]


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled: ``temperature`` (0 = greedy), nucleus ``top_p``, ``top_k``
    (0 = off), at most ``max_new_tokens`` per completion, prompts cut to ``max_prompt_tokens``
    (from the left: the end of the prompt, where the question is asked, is kept)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16
    max_prompt_tokens: int = 512

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.max_prompt_tokens < 1:
            raise ConfigError("max_new_tokens and max_prompt_tokens must be >= 1")


@dataclass
class RolloutBatch:
    """``len(prompts) * group_size`` rollouts, group by group (rollout ``g * n + j`` answers prompt g).

    ``prompt_ids``: one token list per *prompt*; ``completion_ids``: one per rollout (ending with
    the end token when the model produced it); ``texts``: decoded completions without special
    tokens; ``old_logprobs`` ``(R, A)`` and ``mask`` ``(R, A)``: log-probabilities of the sampled
    tokens under the sampling policy, and which of the A columns are real tokens.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    group_size: int
    old_logprobs: Any
    mask: Any

    def rollout_prompt_ids(self) -> list[list[int]]:
        """The prompt ids of every rollout (each prompt repeated ``group_size`` times)."""
        return [p for p in self.prompt_ids for _ in range(self.group_size)]


def encode_prompt(tokenizer: Any, text: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of ``text`` as a user turn, ending where the assistant's answer begins."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                        add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some HF tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    ids = list(ids)
    return ids[-max_tokens:] if max_tokens else ids


def _pad(rows: Sequence[Sequence[int]], pad_id: int, left: bool, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], n: int,
             sampling: SamplingConfig) -> list[list[int]]:
    """``n`` completions per prompt (group by group), each cut after its first end token."""
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids, attention = _pad(prompts, pad, left=True, device=_device(model))
    greedy = sampling.temperature == 0
    kwargs: dict[str, Any] = {"do_sample": not greedy, "max_new_tokens": sampling.max_new_tokens,
                              "num_return_sequences": n, "eos_token_id": eos, "pad_token_id": pad}
    if not greedy:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=attention, **kwargs)
    finally:
        model.train(was_training)
    completions = []
    for row in out[:, ids.shape[1]:].tolist():
        cut = row.index(eos) + 1 if eos in row else len(row)
        completions.append([t for t in row[:cut] if t != pad or t == eos])
    return completions


def completion_logprobs(model: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                        pad_id: int, temperature: float = 1.0,
                        return_logits: bool = False) -> tuple[Any, Any, Any | None]:
    """Log-probabilities ``(R, A)`` of each completion's tokens after its prompt, their mask
    ``(R, A)``, and (``return_logits``) the tempered log-softmax over the vocabulary ``(R, A, V)``.

    Differentiable when called with gradients enabled (the student's new log-probabilities).
    An empty completion gets an all-False mask row.
    """
    import torch
    import torch.nn.functional as F

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    device = _device(model)
    ids, attention = _pad([list(p) + list(c) for p, c in zip(prompts, completions)], pad_id, left=False,
                          device=device)
    width = max(1, max(map(len, completions)))
    pos = torch.tensor([[len(p) - 1 + min(j, max(0, len(c) - 1)) for j in range(width)]
                        for p, c in zip(prompts, completions)], device=device)  # (R, A)
    mask = torch.tensor([[j < len(c) for j in range(width)] for c in completions], device=device)
    target = torch.tensor([[c[j] if j < len(c) else pad_id for j in range(width)] for c in completions],
                          device=device)  # (R, A)
    logits = model(input_ids=ids, attention_mask=attention).logits  # (R, T, V)
    logits = logits.gather(1, pos[:, :, None].expand(-1, -1, logits.shape[-1])).float()  # (R, A, V)
    logp_all = F.log_softmax(logits / (temperature or 1.0), dim=-1)
    logp = logp_all.gather(-1, target[:, :, None]).squeeze(-1) * mask  # (R, A)
    return logp, mask, (logp_all if return_logits else None)


def sample_groups(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], group_size: int,
                  sampling: SamplingConfig) -> RolloutBatch:
    """Sample ``group_size`` completions per prompt and keep their log-probabilities."""
    import torch

    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    prompts = [list(p)[-sampling.max_prompt_tokens:] for p in prompts]
    completions = generate(model, tokenizer, prompts, group_size, sampling)
    repeated = [p for p in prompts for _ in range(group_size)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            old, mask, _ = completion_logprobs(model, repeated, completions, pad, sampling.temperature)
    finally:
        model.train(was_training)
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    return RolloutBatch(prompt_ids=prompts, completion_ids=completions, texts=texts, group_size=group_size,
                        old_logprobs=old, mask=mask)
