"""LLM backends: one async ``complete`` for every model the optimiser talks to.

* `OpenAIBackend`: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp
  server, Ollama, OpenAI) over httpx, with a timeout per call, retries with backoff on
  timeouts, connection errors, 429 and 5xx, a concurrency limit (``asyncio.Semaphore``) and
  token accounting from the answer's ``usage`` (or an estimate of 4 characters per token).
* `TransformersBackend`: a local chat model via transformers ``from_pretrained``; generation
  runs in a worker thread so the event loop never blocks.
* `ScriptedBackend`: answers from a list or a function, for tests.

Every backend counts its calls and tokens in `Usage`; ``context`` is the structured form of
the prompt, which only simulated models read (see `latentwire.agents.rcl.simulated`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BackendError

log = logging.getLogger("latentwire.rcl.backends")

ChatMessages = list[dict[str, str]]


@dataclass
class Usage:
    """What a backend spent: calls, failed calls (after retries), retries, tokens."""

    calls: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one successful call."""
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def as_dict(self) -> dict[str, int]:
        """For metrics and checkpoints."""
        return asdict(self)


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) where the model reports none."""
    return max(1, len(text) // 4)


class LLMBackend:
    """Base class: ``await backend.complete(messages, role=..., context=...) -> str``."""

    name = "backend"

    def __init__(self) -> None:
        self.usage = Usage()

    async def complete(self, messages: ChatMessages, *, role: str = "",
                       context: dict[str, Any] | None = None) -> str:
        """The model's answer to chat ``messages``; raises `BackendError` when it fails for good."""
        raise NotImplementedError(f"{type(self).__name__} must implement complete()")

    async def aclose(self) -> None:
        """Release connections or models."""

    async def __aenter__(self) -> LLMBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ScriptedBackend(LLMBackend):
    """Answers from a list (in order, then the last one again) or from ``fn(messages, role, context)``."""

    name = "scripted"

    def __init__(self, answers: Sequence[str] | Callable[..., str]) -> None:
        super().__init__()
        self._answers = answers
        self.prompts: list[tuple[str, ChatMessages]] = []  # what each call was asked, for tests

    async def complete(self, messages: ChatMessages, *, role: str = "",
                       context: dict[str, Any] | None = None) -> str:
        self.prompts.append((role, messages))
        if callable(self._answers):
            text = self._answers(messages, role, context)
        else:
            text = self._answers[min(len(self.prompts) - 1, len(self._answers) - 1)]
        self.usage.add(sum(estimate_tokens(m["content"]) for m in messages), estimate_tokens(text))
        return text


class OpenAIBackend(LLMBackend):
    """A model behind an OpenAI-compatible HTTP endpoint.

    ``base_url`` is the API root (e.g. ``http://127.0.0.1:8000/v1``); ``timeout`` bounds each
    attempt; ``retries`` more attempts follow a timeout, connection error, 429 or 5xx, after
    ``backoff * 2**attempt`` seconds (with jitter); at most ``max_concurrency`` calls run at once.
    """

    name = "openai"
    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 2, backoff: float = 0.5, max_concurrency: int = 4,
                 temperature: float = 0.7, max_tokens: int = 1024) -> None:
        import httpx  # the models extra

        super().__init__()
        if max_concurrency < 1 or retries < 0 or timeout <= 0:
            raise ValueError("OpenAIBackend needs max_concurrency >= 1, retries >= 0, timeout > 0")
        self.model, self.retries, self.backoff = model, retries, backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._httpx = httpx

    async def complete(self, messages: ChatMessages, *, role: str = "",
                       context: dict[str, Any] | None = None) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.usage.retries += 1
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
            try:
                async with self._limit:
                    response = await self._client.post("/chat/completions", json=body)
            except self._httpx.TimeoutException:
                last = f"timed out after {self._client.timeout.read}s"
                continue
            except self._httpx.TransportError as exc:
                last = f"connection failed: {exc!r}"
                continue
            if response.status_code in self.RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                self.usage.failures += 1
                raise BackendError(self.name, f"HTTP {response.status_code}: {response.text[:200]}")
            return self._read(response, messages)
        self.usage.failures += 1
        raise BackendError(self.name, f"{last} (after {self.retries + 1} attempts)")

    def _read(self, response: Any, messages: ChatMessages) -> str:
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.usage.failures += 1
            raise BackendError(self.name, f"answer is not a chat completion ({exc!r}): "
                                          f"{response.text[:200]!r}") from None
        usage = data.get("usage") or {}
        prompt_estimate = sum(estimate_tokens(m["content"]) for m in messages)
        self.usage.add(int(usage.get("prompt_tokens") or prompt_estimate),
                       int(usage.get("completion_tokens") or estimate_tokens(text)))
        return text

    async def aclose(self) -> None:
        await self._client.aclose()


class TransformersBackend(LLMBackend):
    """A local chat model loaded with transformers ``from_pretrained`` (greedy or sampled).

    Calls are serialised (one model, one generate at a time) and run in a worker thread.
    """

    name = "transformers"

    def __init__(self, model: str, *, max_new_tokens: int = 512, temperature: float = 0.0,
                 device: str | None = None, model_obj: Any = None, tokenizer: Any = None) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = model
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        self.model = model_obj or AutoModelForCausalLM.from_pretrained(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self._lock = asyncio.Lock()
        self._torch = torch

    def _generate(self, messages: ChatMessages) -> tuple[str, int, int]:
        tok = self.tokenizer
        try:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            special = False  # the template wrote the special tokens itself
        except (ValueError, AttributeError):  # a base model without a chat template: role-tagged text
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
            special = True
        ids = tok(text, return_tensors="pt", add_special_tokens=special)["input_ids"].to(self.device)
        sample = self.temperature > 0
        with self._torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                      temperature=self.temperature if sample else None,
                                      pad_token_id=tok.pad_token_id or tok.eos_token_id)
        new = out[0, ids.shape[1]:]
        return tok.decode(new, skip_special_tokens=True), int(ids.shape[1]), int(new.shape[0])

    async def complete(self, messages: ChatMessages, *, role: str = "",
                       context: dict[str, Any] | None = None) -> str:
        async with self._lock:
            try:
                text, n_in, n_out = await asyncio.to_thread(self._generate, messages)
            except Exception as exc:  # a model failure is a backend failure, with its cause
                self.usage.failures += 1
                raise BackendError(f"{self.name}:{self.model_name}", repr(exc)) from exc
        self.usage.add(n_in, n_out)
        return text
