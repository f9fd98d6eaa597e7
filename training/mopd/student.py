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

The job runs on the training loop (`loop.TrainLoop`; constant learning rate, AdamW, clipping,
``metrics.jsonl``); an evaluation in the band ends the run as finished. The shipped checkpoint
(``checkpoints/sort_student``: tinyworld ``sort`` with length 6) was made with the first of::

    # CPU
    python -m latentwire.training.mopd.student --out training/mopd/checkpoints/sort_student
    # one GPU: the same command (accelerate picks the device); several processes:
    accelerate launch -m latentwire.training.mopd.student --out runs/mopd/student

It is an ordinary transformers folder (``config.json`` + ``model.safetensors``) plus the
tinyworld tokenizer file, ``mopd_student.json`` (task, templates, pre-training record) and
``pretrain_metrics.jsonl`` (one line per evaluation), loaded with `load_student`
(``LlamaForCausalLM.from_pretrained``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latentwire.tinyworld.tasks import TASKS

from ..loop import LoopResult, TrainConfig, TrainJob, TrainLoop, config_parser, default
from .peers import PeerTemplates, render_context
from .rollouts import SamplingConfig, completion_logprobs, encode_prompt, generate

__all__ = ["SHIPPED_STUDENT", "SHIPPED_TEACHER", "StudentConfig", "build_student", "corrupt", "load_student",
           "main", "pretrain_student", "success_rate"]

SHIPPED_STUDENT = Path(__file__).parent / "checkpoints" / "sort_student"
#: The stronger OPD teacher: the student's recipe trained longer (its ``mopd_student.json`` has the record).
SHIPPED_TEACHER = Path(__file__).parent / "checkpoints" / "sort_teacher"
META_FILE = "mopd_student.json"


@dataclass
class StudentConfig(TrainConfig):
    """Architecture and pre-training of the tiny student (see the module docstring); each field's
    help says what it does, the training fields are `TrainConfig`'s."""

    out_dir: str = default("out_dir", "runs/mopd/student")
    steps: int = default("steps", 3000)
    min_lr_ratio: float = default("min_lr_ratio", 1.0)
    adam_beta2: float = default("adam_beta2", 0.999)
    eval_every: int = default("eval_every", 50)
    checkpoint_every: int = default("checkpoint_every", 0)
    task: str = field(default="sort", metadata={"help": "tinyworld task", "choices": list(TASKS)})
    length: int = field(default=6, metadata={"help": "secret length of the task"})
    hidden_size: int = field(default=128, metadata={"help": "width of the Llama student"})
    layers: int = field(default=2, metadata={"help": "its layers"})
    heads: int = field(default=4, metadata={"help": "its attention heads"})
    min_steps: int = field(default=300, metadata={"help": "steps before the success band may stop the run"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    eval_n: int = field(default=128, metadata={"help": "held-out plain questions of each evaluation"})
    target_low: float = field(default=0.3, metadata={"help": "lower end of the plain success that stops the run"})
    target_high: float = field(default=0.5, metadata={"help": "upper end of that band"})
    plain_fraction: float = field(default=0.25, metadata={"help": "share of plain questions (the rest carry peers)"})
    templates: PeerTemplates = field(default_factory=PeerTemplates, metadata={"help": argparse.SUPPRESS})

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


class _StudentJob(TrainJob):
    """Teacher-forced answers to plain and peer-context questions; stops in the success band."""

    name = "pretrain student"
    checkpoint_name = "student checkpoint"

    def __init__(self, config: StudentConfig) -> None:
        from latentwire.tinyworld.tasks import make_task
        from latentwire.tinyworld.tokenizer import TinyTokenizer

        from .verifiers import TinyworldVerifier

        self.config, self.tokenizer = config, TinyTokenizer()
        self.module = build_student(config)
        self.task = make_task(config.task, config.length)
        self.verifier = TinyworldVerifier()
        held_out = self.task.episodes(config.eval_n, seed=10_000 + config.seed)
        self.eval_problems = [(ep.prompt(ep.receiver.name), ep.answer) for ep in held_out]
        self.rng = random.Random(config.seed)  # one stream over the steps (its state is checkpointed)
        self.history: list[dict[str, Any]] = []
        self.loss = float("nan")
        self.began = time.perf_counter()

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.module.parameters())}]  # decay on every parameter

    def step(self, step: int, model: Any) -> tuple[Any, dict[str, float]]:
        from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID

        config, rng, tokenizer = self.config, self.rng, self.tokenizer
        episodes = [self.task.episode(seed=config.seed, index=rng.randrange(1 << 40)) for _ in range(config.batch_size)]
        prompts = [encode_prompt(tokenizer, _example(ep.prompt(ep.receiver.name), ep.answer, rng, config))
                   for ep in episodes]
        answers = [tokenizer.encode(ep.answer, add_special_tokens=False) + [EOS_ID] for ep in episodes]
        logp, mask, _ = completion_logprobs(model, prompts, answers, PAD_ID)
        loss = -(logp.sum() / mask.sum())
        self.loss = loss.item()
        return loss, {}

    def evaluate(self, step: int) -> dict[str, Any]:
        success = success_rate(self.module, self.tokenizer, self.eval_problems, self.verifier)
        self.history.append({"step": step, "loss": round(self.loss, 4), "plain_success": round(success, 4),
                             "elapsed_s": round(time.perf_counter() - self.began, 1)})
        config = self.config
        self.stop = step >= config.min_steps and config.target_low <= success <= config.target_high
        return {"plain_success": round(success, 4)}

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "history": self.history}

    def load_state(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.history = list(state["history"])

    def save(self, out: Path, result: LoopResult) -> None:
        config = self.config
        self.module.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        # The pre-training record, one line per evaluation (metrics.jsonl has every step too).
        (out / "pretrain_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
        success = self.history[-1]["plain_success"] if self.history else 0.0
        meta = {"task": config.task, "length": config.length, "templates": asdict(config.templates),
                "config": {k: v for k, v in asdict(config).items() if k != "templates"},
                "steps": result.step, "plain_success": success, "eval_n": config.eval_n,
                "seconds": result.train_seconds}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def pretrain_student(config: StudentConfig) -> Path:
    """Pre-train the student as described in the module docstring; return its folder."""
    loop = TrainLoop(config)
    loop.run(_StudentJob(config), config.out_dir)
    return Path(config.out_dir)


def main(argv: list[str] | None = None) -> Path:
    """CLI: pre-train a student (one ``--flag`` per `StudentConfig` field but the templates)."""
    parser = config_parser(StudentConfig, "python -m latentwire.training.mopd.student",
                           "Pre-train the tiny MOPD student on a tinyworld task and the peer re-prompt format.")
    folder = pretrain_student(StudentConfig(**vars(parser.parse_args(argv))))
    print(folder, (folder / META_FILE).read_text())
    return folder


if __name__ == "__main__":
    main()
