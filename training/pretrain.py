"""Pre-train a tinyworld model from scratch to READ and WRITE the tinyworld tasks as text.

One model per family learns every agent's part of the tasks (`tasks.TASKS`): a sender turns its
observation into its text message, a receiver turns the text messages in its prompt into the
answer. Prompts carry the family's image-placeholder slots with a BLANK image there (through
`FamilyAdapter.inject`, as `listen` feeds it), so the model learns to work with the slots present;
``screen_share`` of the receiver examples show their messages as a picture at the slots instead
of in the text (`screen`), so the model learns to read through its vision port and a codec can
later put latents there. The loss is teacher-forced cross-entropy on the reply
tokens only (reply + ``<eos>``); AdamW with warm-up and cosine decay; the vision tower and
projector stay frozen (they only ever see the blank image here).

It runs on the training loop (`loop.TrainLoop`: accelerate, AdamW, schedule, progress,
``metrics.jsonl``, checkpoints every ``checkpoint_every`` steps and ``resume``); the job supplies
the loss, the text-mode evaluation and the saved checkpoint. Commands::

    # CPU
    python -m latentwire.training.pretrain --family gemma3 --out-dir runs/tw/gemma3
    # one GPU (accelerate picks it up; bf16 optional)
    python -m latentwire.training.pretrain --family gemma3 --steps 3000 --batch-size 128
    # several GPUs / processes
    accelerate launch -m latentwire.training.pretrain --family gemma3 --steps 3000
    # after a crash: the same command with --resume
    python -m latentwire.training.pretrain --family gemma3 --out-dir runs/tw/gemma3 --resume
    # go on from a finished run: the architecture (and step) come from its folder
    python -m latentwire.training.pretrain --resume-from runs/tw/gemma3 --out-dir runs/tw/g2 --steps 1200

From Python::

    from latentwire.training.pretrain import PretrainConfig, pretrain
    folder = pretrain(PretrainConfig(family="qwen2_5_vl", out_dir="runs/tw/qwen"))

The output folder holds ``config.json`` + ``model.safetensors`` (``save_pretrained``),
``tinyworld_tokenizer.json``, ``tinyworld.json`` (the run config, step, task mix and the final
text-mode eval) and ``metrics.jsonl`` (one line per log step: step, loss, lr, elapsed seconds;
eval lines add the per-task eval and ``eval_exact``, the mean end-to-end exact match).
Load it with `latentwire.tinyworld.checkpoints.load_checkpoint`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from latentwire.tinyworld.models import FAMILIES
from latentwire.tinyworld.screen import BLANK, SCREEN_SLOTS, screen_embeddings, screen_ids, screen_text
from latentwire.tinyworld.tasks import TASKS, Task, make_task
from latentwire.tinyworld.tokenizer import EOS_ID, PAD_ID, TinyTokenizer

from ._jobs import as_if_created
from .loop import LoopResult, TrainConfig, TrainJob, TrainLoop, config_parser, default, json_object

__all__ = ["PretrainConfig", "main", "pretrain", "size_overrides"]

IGNORE = -100  # label of prompt and padding positions: no loss there


@dataclass
class PretrainConfig(TrainConfig):
    """Everything a tinyworld pre-training run needs; `pretrain` takes one. Each field's help says
    what it does (``latentwire train tinyworld --help``); the training fields are `TrainConfig`'s.
    The model size is ignored with ``resume_from``: the checkpoint's architecture wins."""

    out_dir: str = default("out_dir", "runs/tinyworld/{family}")
    warmup_steps: int = default("warmup_steps", 30)
    eval_every: int = default("eval_every", 200)
    checkpoint_every: int = default("checkpoint_every", 500)
    family: str = field(default="gemma3", metadata={"help": "tinyworld family to train", "choices": list(FAMILIES)})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={
        "help": "tasks of the training mix (uniform)", "choices": list(TASKS)})
    lengths: list[int] = field(default_factory=lambda: [8], metadata={"help": "secret lengths, one drawn per example"})
    length_per_batch: bool = field(default=False, metadata={
        "help": "draw one secret length per batch instead of per example: a batch is then padded to its own "
                "length, not to the longest of the mix (about half the compute with lengths 8 to 64)"})
    alphabet: str = field(default="abcdefghijklmnopqrstuvwxyz", metadata={"help": "letters of the secrets"})
    receiver_share: float = field(default=0.6, metadata={
        "help": "share of examples where the model plays the receiver (the rest: senders)"})
    screen_share: float = field(default=0.3, metadata={
        "help": "share of receiver examples (in batches with enough slots) that show the messages as a "
                "picture at the image slots and leave them out of the text"})
    image_slots: list[int] | None = field(default=None, metadata={
        "help": "blank-image slot counts, one drawn per batch (none: the family's default and 16)"})
    hidden_size: int = field(default=128, metadata={"help": "width of the language model"})
    num_layers: int = field(default=2, metadata={"help": "layers of the language model"})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (none: 2 x hidden_size)"})
    # dict | str | None: HfArgumentParser reads it as a string (JSON), __post_init__ parses it.
    model_overrides: dict[str, Any] | str | None = field(default_factory=dict, metadata={
        "help": "more `tiny_config` overrides (a JSON object)"})
    batch_size: int = field(default=32, metadata={"help": "examples per step and process"})
    eval_n: int = field(default=32, metadata={"help": "episodes per task of each evaluation"})
    eval_length: int = field(default=8, metadata={"help": "secret length of the evaluation episodes"})
    save_dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={
        "help": "dtype of the saved weights"})
    resume_from: str | None = field(default=None, metadata={
        "help": "start from a finished pre-training folder: its architecture, weights and step (a fresh "
                "optimiser); `resume` continues a crashed run from its checkpoint instead"})

    def __post_init__(self) -> None:
        from latentwire.errors import ConfigError

        super().__post_init__()
        if self.family not in FAMILIES:
            raise ConfigError(f"tinyworld has no family {self.family!r}; supported: {', '.join(FAMILIES)}")
        self.tasks = list(self.tasks)
        self.lengths = [int(n) for n in self.lengths]
        for name in self.tasks:
            for n in self.lengths:
                make_task(name, n, self.alphabet)  # refuse unknown tasks and bad lengths now
        if self.image_slots is not None:
            self.image_slots = [int(n) for n in self.image_slots]
        self.model_overrides = json_object(self.model_overrides, "model_overrides")
        for name in ("receiver_share", "screen_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.save_dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"save_dtype must be float32, bfloat16 or float16, got {self.save_dtype!r}")
        self.out_dir = self.out_dir.format(family=self.family)


def size_overrides(family: str, hidden_size: int, num_layers: int,
                   intermediate_size: int | None = None) -> dict[str, Any]:
    """`tiny_config` overrides that resize a family's language model (16-wide heads).

    Keeps the head width of the stock tiny configs, so Qwen's M-RoPE sections still fit, and
    resizes the vision output where the family sets it explicitly (Qwen's merger). Gemma 3's
    sliding window is widened to the whole context: with only sliding layers (2 layers are both
    sliding in Gemma 3's pattern) the answer could otherwise not see image slots or a long message.
    """
    heads = max(1, hidden_size // 16)
    text = {"hidden_size": hidden_size, "intermediate_size": intermediate_size or 2 * hidden_size,
            "num_hidden_layers": num_layers, "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2), "head_dim": 16}
    if family == "gemma3":
        text["sliding_window"] = 1024
    out: dict[str, Any] = {"text_config": text}
    if family == "qwen2_vl":
        out["vision_config"] = {"hidden_size": hidden_size}
    elif family in ("qwen2_5_vl", "qwen3_vl"):
        out["vision_config"] = {"out_hidden_size": hidden_size}
    return out


class _Batches:
    """Training batches, a pure function of (seed, process, step) so a resumed run sees new data."""

    def __init__(self, config: PretrainConfig, adapter: Any, tokenizer: TinyTokenizer, process: int) -> None:
        self.config, self.adapter, self.tokenizer, self.process = config, adapter, tokenizer, process
        self.slots = config.image_slots or tuple(sorted({adapter.default_slots(), 16}))
        self._tasks: dict[tuple[str, int], Task] = {}

    def _task(self, name: str, length: int) -> Task:
        key = (name, length)
        if key not in self._tasks:
            self._tasks[key] = make_task(name, length, self.config.alphabet)
        return self._tasks[key]

    def example(self, rng: random.Random, n_slots: int, length: int | None = None) -> tuple[str, str, list[int]]:
        """One ``(prompt text, reply, screen)``: a random task, length (unless given), episode and
        agent; the screen (`screen_ids`) shows the receiver's messages at the slots, or is all blank."""
        cfg = self.config
        task = self._task(rng.choice(cfg.tasks), rng.choice(cfg.lengths) if length is None else length)
        episode = task.episode(seed=cfg.seed, index=rng.randrange(1 << 40))
        agent = episode.receiver if rng.random() < cfg.receiver_share else rng.choice(episode.senders)
        blank = [BLANK] * n_slots
        if agent is episode.receiver and n_slots >= SCREEN_SLOTS and rng.random() < cfg.screen_share:
            shown = screen_text(episode, agent.name)
            if len(self.tokenizer.encode(shown, add_special_tokens=False)) <= n_slots:
                return (episode.prompt(agent.name, mode="latent"), episode.target(agent.name),
                        screen_ids(self.tokenizer, shown, n_slots))
        return episode.prompt(agent.name), episode.target(agent.name), blank

    def __call__(self, step: int, device: Any) -> tuple[Any, Any, Any, list[list[int]] | None]:
        """``(input_ids, attention_mask, labels)``, each ``(B, T)``, right-padded, and the rows'
        screens (None when no row of the batch shows one)."""
        import torch

        rng = random.Random(f"pretrain|{self.config.seed}|{self.process}|{step}")
        n_slots = rng.choice(self.slots)
        # Its own generator, so runs without length_per_batch draw exactly the batches they always did.
        length = (random.Random(f"pretrain-length|{self.config.seed}|{self.process}|{step}").choice(self.config.lengths)
                  if self.config.length_per_batch else None)
        rows, labels, screens = [], [], []
        for _ in range(self.config.batch_size):
            text, reply, screen = self.example(rng, n_slots, length)
            screens.append(screen)
            prompt = self.adapter.build_prompt(self.tokenizer, text, n_slots).input_ids
            answer = self.tokenizer.encode(reply, add_special_tokens=False) + [EOS_ID]
            rows.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)  # (B, T)
        mask = torch.zeros_like(ids)
        target = torch.full_like(ids, IGNORE)
        for i, (row, lab) in enumerate(zip(rows, labels)):
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
            target[i, :len(lab)] = torch.tensor(lab)
        shown = any(i != BLANK for row in screens for i in row)
        return ids.to(device), mask.to(device), target.to(device), screens if shown else None


def _freeze_vision(model: Any, adapter: Any) -> None:
    """Train only the language model and LM head: the vision side only ever sees a blank image."""
    trainable = {id(p) for p in adapter.language_model(model).parameters()}
    trainable |= {id(p) for p in model.get_output_embeddings().parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


class _PretrainJob(TrainJob):
    """Teacher-forced cross-entropy on the replies, the text-mode evaluation and the checkpoint."""

    checkpoint_name = "pre-training checkpoint"

    def __init__(self, config: PretrainConfig, model: Any, adapter: Any, tokenizer: TinyTokenizer,
                 device: Any, process: int) -> None:
        self.config, self.module, self.adapter, self.tokenizer, self.device = config, model, adapter, tokenizer, device
        self.batches = _Batches(config, adapter, tokenizer, process)
        self.name = f"pretrain {config.family}"

    def step(self, step: int, model: Any) -> tuple[Any, dict[str, float]]:
        import torch.nn.functional as F

        raw = self.module
        ids, mask, labels, screens = self.batches(step, self.device)
        pictures = None if screens is None else screen_embeddings(raw, screens)  # (B, n, D)
        inputs = self.adapter.inject(raw, ids, pictures, attention_mask=mask)
        logits = model(**inputs.kwargs).logits[:, :-1]  # (B, T-1, V): position t predicts t+1
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE)
        return loss, {}

    def evaluate(self, step: int) -> dict[str, Any]:
        from .evaluate import evaluate, summary

        config = self.config
        result = evaluate(self.module, self.tokenizer, config.tasks, length=config.eval_length, n=config.eval_n)
        return {"eval_exact": summary(result), "eval": result}

    def save(self, out: Path, result: LoopResult) -> None:
        from latentwire.tinyworld import checkpoints

        config = self.config
        meta = {"step": result.step, "config": asdict(config), "tasks": list(config.tasks),
                "lengths": list(config.lengths), "eval_length": config.eval_length,
                "eval": result.eval.get("eval", {}), "eval_exact": result.eval.get("eval_exact"),
                "train_seconds": result.train_seconds, "processes": result.processes}
        checkpoints.save_checkpoint(self.module, out, meta, dtype=config.save_dtype)


def pretrain(config: PretrainConfig) -> Path:
    """Run the pre-training job described by ``config``; return the checkpoint folder.

    Works on CPU, one GPU or several processes (``accelerate launch``): each process draws its
    own batches; evaluation, metrics and saving happen on the main process.
    """
    import torch

    from latentwire.agents.families import adapter_for
    from latentwire.tinyworld import checkpoints
    from latentwire.tinyworld.models import build_model

    loop = TrainLoop(config)
    torch.manual_seed(config.seed)
    tokenizer = TinyTokenizer()
    start = 0
    if config.resume_from:
        model, _ = checkpoints.load_checkpoint(config.resume_from, family=config.family)
        start = int(checkpoints.read_meta(config.resume_from)["step"])
    else:
        overrides = checkpoints.merge_overrides(
            size_overrides(config.family, config.hidden_size, config.num_layers, config.intermediate_size),
            config.model_overrides)
        model = build_model(config.family, seed=config.seed, **overrides)
    adapter = adapter_for(model)
    _freeze_vision(model, adapter)
    model.train()
    job = _PretrainJob(config, model, adapter, tokenizer, loop.accelerator.device, loop.accelerator.process_index)
    loop.run(job, config.out_dir, start=start)
    return Path(config.out_dir)


# The shipped recipe: the PretrainConfig defaults (width 128, 2 layers, all five tasks at length
# 8, part of the receiver examples shown their messages as a screen) for 2000 steps; where each
# shipped checkpoint stands is in docs/benchmarks.md.
_RECIPE: dict[str, Any] = {"steps": 2000, "eval_every": 0}


def recipe(family: str, out_dir: str | Path) -> PretrainConfig:
    """The `PretrainConfig` the shipped checkpoint of ``family`` is trained with.

    `load_or_train` uses it, and `latentwire train ship` records the same settings as its base
    stage (`tests/test_ship.py` checks they agree), so a cached
    checkpoint is made the same way as a shipped one.
    """
    return PretrainConfig(family=family, out_dir=str(out_dir), progress=False, **_RECIPE)


def load_or_train(family: str, *, device: Any = None, progress: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)``: `latentwire.tinyworld.checkpoints.load_pretrained`, or, when the
    family has neither a shipped nor a cached checkpoint, one trained now with `recipe` and
    cached under `checkpoints.cache_dir` (a few minutes on a CPU). A present but broken
    checkpoint is an error, never retrained silently."""
    import os
    import shutil
    import tempfile

    from latentwire.tinyworld import checkpoints

    cached, shipped = checkpoints.cache_dir() / family, checkpoints.shipped_path(family)
    try:
        return checkpoints.load_pretrained(family, device=device)
    except checkpoints.CheckpointError:
        if cached.exists() or (shipped.is_dir() and any(shipped.iterdir())):
            raise  # present but broken
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Train into a private folder and rename it into place: a concurrent loader never sees a
    # half-written checkpoint, and if two processes race, the first rename wins.
    work = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=cached.parent))
    as_if_created(work)
    try:
        config = recipe(family, work)
        config.progress = progress
        pretrain(config)
        (work / "metrics.jsonl").unlink(missing_ok=True)
        try:
            os.replace(work, cached)
        except OSError:
            if not cached.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return checkpoints.load_checkpoint(cached, family=family, device=device)


def _parser() -> Any:
    """One ``--flag`` per `PretrainConfig` field, with its help, default and choices."""
    return config_parser(PretrainConfig, "python -m latentwire.training.pretrain", "Pre-train a tinyworld model on the text tasks.")


def main(argv: list[str] | None = None) -> Path:
    """CLI entry: parse flags into a `PretrainConfig`, run `pretrain`, print the folder."""
    args = vars(_parser().parse_args(argv))
    folder = pretrain(PretrainConfig(**args))
    print(folder)
    return folder


if __name__ == "__main__":
    main()
