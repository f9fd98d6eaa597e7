"""The tiny MOPD student: a 2-layer Llama on the tinyworld tokenizer, pre-trained on a
verifiable tinyworld task *and* on the re-prompt format with peer solutions.

A real LLM self-teacher uses peers in its context by in-context learning; a tiny model only
learns that if its pre-training shows the format. So the pre-training mixes four kinds of
example, all answered with the gold answer:

* the plain question (what the student is asked at rollout and eval time);
* the question with one or two correct solutions (`render_context`, positive template);
* the question with correct solutions and a failed one (negative template);
* the question with only a failed solution (so "avoid this mistake" carries information).

Failed solutions are the gold answer with one or two corruptions (a swap of neighbours or a
wrong letter), like the student's own mistakes. Pre-training stops at the first evaluation
whose plain greedy success lies in ``[target_low, target_high]`` after ``min_steps`` (so the
student starts where on-policy training has something to learn), or after ``steps``.

The shipped checkpoint (``checkpoints/sort_student``: tinyworld ``sort`` with length 6) was made
with::

    python -m latentwire.training.mopd.student --out training/mopd/checkpoints/sort_student

It is an ordinary transformers folder (``config.json`` + ``model.safetensors``) plus the
tinyworld tokenizer file and ``mopd_student.json`` (task, templates, pre-training record), loaded
with `load_student` (``LlamaForCausalLM.from_pretrained``).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._jobs import config_parser, write_jsonl
from .peers import PeerTemplates, render_context
from .rollouts import SamplingConfig, completion_logprobs, encode_prompt, generate

__all__ = ["SHIPPED_STUDENT", "StudentConfig", "build_student", "corrupt", "load_student", "main",
           "pretrain_student", "success_rate"]

SHIPPED_STUDENT = Path(__file__).parent / "checkpoints" / "sort_student"
META_FILE = "mopd_student.json"


@dataclass
class StudentConfig:
    """Architecture and pre-training of the tiny student (see the module docstring)."""

    task: str = "sort"
    length: int = 6
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    steps: int = 3000
    min_steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    eval_every: int = 50
    eval_n: int = 128
    target_low: float = 0.3
    target_high: float = 0.5
    plain_fraction: float = 0.25
    seed: int = 0
    out: str = "runs/mopd/student"
    progress: bool = True
    templates: PeerTemplates = field(default_factory=PeerTemplates)


def build_student(config: StudentConfig) -> Any:
    """A freshly initialised `LlamaForCausalLM` of the configured size on the tinyworld vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from latentwire.tinyworld.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

    torch.manual_seed(config.seed)
    cfg = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=config.hidden_size,
                      intermediate_size=2 * config.hidden_size, num_hidden_layers=config.layers,
                      num_attention_heads=config.heads, num_key_value_heads=config.heads,
                      max_position_embeddings=512, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                      pad_token_id=PAD_ID, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def load_student(folder: str | Path = SHIPPED_STUDENT) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, meta)`` from a student folder (`pretrain_student` output or any
    causal-LM folder transformers can load; ``meta`` is empty without ``mopd_student.json``)."""
    from latentwire.agents.errors import CheckpointError
    from transformers import AutoModelForCausalLM

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise CheckpointError(str(path), "no config.json (not a model folder)", what="MOPD student")
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(str(path), f"{type(exc).__name__}: {exc}", what="MOPD student") from exc
    if (path / "tinyworld_tokenizer.json").is_file():
        from latentwire.tinyworld.tokenizer import TinyTokenizer

        tokenizer = TinyTokenizer.from_pretrained(path)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
    return model, tokenizer, meta


def corrupt(answer: str, rng: random.Random, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    """``answer`` with one or two mistakes (neighbour swap or wrong letter), never equal to it."""
    chars = list(answer)
    for _ in range(rng.choice((1, 1, 2))):
        i = rng.randrange(len(chars))
        if rng.random() < 0.5 and len(chars) > 1:
            j = min(i + 1, len(chars) - 1) if i < len(chars) - 1 else i - 1
            chars[i], chars[j] = chars[j], chars[i]
        else:
            chars[i] = rng.choice(alphabet)
    wrong = "".join(chars)
    return wrong if wrong != answer else answer[::-1] + rng.choice(alphabet)


def _example(question: str, answer: str, rng: random.Random, config: StudentConfig) -> str:
    """One pre-training prompt text for ``question`` (plain or with peer solutions)."""
    if rng.random() < config.plain_fraction:
        return question
    kind = rng.choice(("positive", "contrastive", "negative"))
    good = [answer] * (rng.choice((1, 2)) if kind != "negative" else 0)
    bad = [corrupt(answer, rng)] if kind != "positive" else []
    return render_context(question, good, bad, config.templates)


def success_rate(model: Any, tokenizer: Any, problems: list[tuple[str, str]], verify: Any,
                 batch_size: int = 128, max_new_tokens: int = 16) -> float:
    """Mean verifier reward of greedy answers to the plain questions ``problems`` ((question, gold))."""
    rewards = []
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [encode_prompt(tokenizer, q) for q, _ in chunk]
        outs = generate(model, tokenizer, prompts, 1, greedy)
        rewards += [verify(tokenizer.decode(o, skip_special_tokens=True), gold).reward
                    for o, (_, gold) in zip(outs, chunk)]
    return sum(rewards) / max(1, len(rewards))


def pretrain_student(config: StudentConfig) -> Path:
    """Pre-train the student as described in the module docstring; return its folder."""
    import torch
    from tqdm.auto import tqdm

    from latentwire.tinyworld.tasks import make_task
    from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID, TinyTokenizer
    from .verifiers import TinyworldVerifier

    tokenizer = TinyTokenizer()
    model = build_student(config)
    task = make_task(config.task, config.length)
    verifier = TinyworldVerifier()
    held_out = task.episodes(config.eval_n, seed=10_000 + config.seed)
    eval_problems = [(ep.prompt(ep.receiver.name), ep.answer) for ep in held_out]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    rng = random.Random(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    began = time.perf_counter()
    success = 0.0
    step = 0
    with (out / "pretrain_metrics.jsonl").open("w") as metrics:
        bar = tqdm(range(config.steps), disable=not config.progress, desc="pretrain student", mininterval=1.0)
        for step in bar:
            episodes = [task.episode(seed=config.seed, index=rng.randrange(1 << 40))
                        for _ in range(config.batch_size)]
            prompts = [encode_prompt(tokenizer, _example(ep.prompt(ep.receiver.name), ep.answer, rng, config))
                       for ep in episodes]
            answers = [tokenizer.encode(ep.answer, add_special_tokens=False) + [EOS_ID] for ep in episodes]
            logp, mask, _ = completion_logprobs(model, prompts, answers, PAD_ID)
            loss = -(logp.sum() / mask.sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if (step + 1) % config.eval_every == 0:
                success = success_rate(model, tokenizer, eval_problems, verifier)
                record = {"step": step + 1, "loss": round(loss.item(), 4), "plain_success": round(success, 4),
                          "elapsed_s": round(time.perf_counter() - began, 1)}
                history.append(record)
                write_jsonl(metrics, record)
                bar.set_postfix(loss=f"{loss.item():.3f}", success=f"{success:.2f}")
                if step + 1 >= config.min_steps and config.target_low <= success <= config.target_high:
                    break
        bar.close()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta = {"task": config.task, "length": config.length, "templates": asdict(config.templates),
            "config": {k: v for k, v in asdict(config).items() if k != "templates"},
            "steps": step + 1, "plain_success": round(success, 4), "eval_n": config.eval_n,
            "seconds": round(time.perf_counter() - began, 1)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> Path:
    """CLI: pre-train a student (one ``--flag`` per `StudentConfig` field but the templates)."""
    parser = config_parser(StudentConfig, "python -m latentwire.training.mopd.student",
                           "Pre-train the tiny MOPD student on a tinyworld task and the peer re-prompt format.")
    args = vars(parser.parse_args(argv))
    args.pop("templates", None)
    folder = pretrain_student(StudentConfig(**args))
    print(folder, (folder / META_FILE).read_text())
    return folder


if __name__ == "__main__":
    main()
