"""``latentwire train mopd``: MOPD, OPD, GRPO and SFT in one on-policy harness.

Each step, for ``prompts_per_step`` problems: sample ``group_size`` completions from the student
(`rollouts`), verify them (`verifiers`), then

* ``mopd``: re-prompt the teacher with peer contexts from the group (`peers`, mode ``context``)
  and train the student on its own tokens towards that teacher (``loss``: the sampled-token
  reverse KL in clipped policy-gradient form, or a full/top-k ``forward_kl`` / ``reverse_kl`` /
  ``jsd``); rollouts without a context are masked and the fraction is logged;
* ``opd``: the same with the teacher prompted by the plain question (no peers);
* ``grpo``: group-normalised verifier advantage, clipped ratio;
* ``sft``: negative log-likelihood of the verified successes.

The teacher (`teacher`) is an EMA copy of the student by default. Evaluation (greedy answers
to ``eval_n`` held-out plain questions, mean verifier reward = success rate) runs at step 0,
every ``eval_every`` steps and at the end. A checkpoint (student, teacher and optimiser as
safetensors, step and config as JSON, written to a temporary folder and renamed into place)
is saved every ``save_every`` steps; a run started again on the same ``out_dir`` resumes from it
and, as every step draws its problems and samples from ``(seed, step, process)``, reaches the
same result as an uninterrupted run.

Output folder: ``metrics.jsonl`` (one line per step; eval lines carry ``eval_success``),
``report.json`` (config, success history, final success, seconds), ``success.png`` and the
final student as a transformers folder in ``student/``. With ``methods`` (preset names, see
`METHOD_PRESETS`) the job runs each method in ``out_dir/<name>`` and writes one combined
``report.json`` + ``success.png`` comparing them.

Commands::

    # CPU (the shipped tinyworld student, sort task; about a minute)
    latentwire train mopd --config training/mopd/configs/tinyworld_sort.json
    latentwire train mopd --method opd --steps 40 --out-dir runs/mopd/opd
    # compare methods in one go
    latentwire train mopd --methods grpo opd mopd_positive mopd_contrastive --steps 40
    # one GPU: the same command (accelerate picks the device); several GPUs:
    accelerate launch -m latentwire.training.mopd.job --config my.json
    # several processes on a CPU-only machine (gloo; the job tells accelerate it runs on CPU)
    accelerate launch --multi_gpu --num_processes 2 -m latentwire.training.mopd.job --steps 10

A config file is JSON or TOML with `MopdConfig` field names; flags given on the command line
win over it. Unknown fields, modes, losses or verifiers, contexts that need peers with
``group_size`` 1, and a missing verifier fail at start with a message naming the field.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from latentwire.errors import ConfigError

from .._jobs import config_parser, warmup_cosine, write_jsonl
from .losses import DIVERGENCES
from .peers import CONTEXT_MODES, PeerConfig, PeerTemplates
from .teacher import TEACHER_KINDS

__all__ = ["METHODS", "METHOD_PRESETS", "MopdConfig", "compare", "load_config", "main", "plot_success", "train"]

METHODS = ("mopd", "opd", "grpo", "sft")
LOSSES = ("sampled_rkl", *DIVERGENCES)
#: Named method settings for comparisons (the benchmark's names).
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"method": "grpo"},
    "sft": {"method": "sft"},
    "opd": {"method": "opd", "context": "none"},
    "mopd_positive": {"method": "mopd", "context": "positive"},
    "mopd_contrastive": {"method": "mopd", "context": "contrastive"},
    "mopd_random_peer": {"method": "mopd", "context": "random_peer"},
    "mopd_unrelated": {"method": "mopd", "context": "unrelated"},
}
# Fields that may change between a crash and its resume without changing the result.
_RESUME_FREE = {"steps", "progress", "resume", "eval_every", "save_every", "methods", "out_dir"}


@dataclass
class MopdConfig:
    """Everything a MOPD / OPD / GRPO / SFT run needs; `train` takes one (module docstring).

    Problems: tinyworld ``task`` / ``length`` questions, or ``data`` (JSONL, one
    ``{"prompt", "gold"}`` per line; ``eval_data`` likewise, else held-out tinyworld episodes).
    ``advantage_clip`` / ``centre_advantage``: bound / centre the sampled-token advantages
    (`losses.sampled_reverse_kl`). ``student``: a model folder (empty = the shipped tinyworld
    student). ``teacher``: ``ema``
    (``teacher_rate`` of the student mixed in per step), ``frozen`` or ``separate``
    (``teacher_path``). Peer settings as `PeerConfig`; templates as `PeerTemplates`.
    """

    method: str = "mopd"
    context: str = "contrastive"
    methods: tuple[str, ...] = ()
    student: str = ""
    teacher: str = "ema"
    teacher_rate: float = 0.05
    teacher_path: str = ""
    verifier: str = "tinyworld"
    verifier_options: dict = field(default_factory=dict)
    task: str = "sort"
    length: int = 6
    data: str = ""
    eval_data: str = ""
    group_size: int = 8
    prompts_per_step: int = 8
    n_positive: int = 2
    n_negative: int = 1
    require_negative: bool = False
    exclude_identical: bool = False
    context_template: str = PeerTemplates.context
    positive_template: str = PeerTemplates.positive
    negative_template: str = PeerTemplates.negative
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 12
    max_prompt_tokens: int = 512
    loss: str = "sampled_rkl"
    loss_top_k: int = 0
    jsd_beta: float = 0.5
    clip_eps: float = 0.2
    advantage_clip: float = 0.0
    centre_advantage: bool = False
    epochs_per_batch: int = 1
    steps: int = 40
    lr: float = 3e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 1.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 10
    eval_n: int = 128
    save_every: int = 10
    resume: bool = True
    seed: int = 0
    out_dir: str = "runs/mopd/{name}"
    progress: bool = True

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        for name in self.methods:
            if name not in METHOD_PRESETS:
                raise ConfigError(f"unknown method preset {name!r} in methods; "
                                  f"choose from {', '.join(METHOD_PRESETS)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.context not in CONTEXT_MODES:
            raise ConfigError(f"unknown context mode {self.context!r}; choose one of {', '.join(CONTEXT_MODES)}")
        if self.method == "mopd" and self.context == "none":
            raise ConfigError("method 'mopd' with context 'none' is OPD: "
                              "set method to 'opd' or pick a peer context")
        if self.teacher not in TEACHER_KINDS:
            raise ConfigError(f"unknown teacher {self.teacher!r}; choose one of {', '.join(TEACHER_KINDS)}")
        if self.teacher == "separate" and not self.teacher_path:
            raise ConfigError("teacher 'separate' needs teacher_path (a model folder)")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        from .verifiers import make_verifier

        make_verifier(self.verifier, **self.verifier_options)  # missing / unknown verifier fails now
        for name in ("group_size", "prompts_per_step", "steps", "eval_n", "epochs_per_batch", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.peer_config()  # checks n_positive / n_negative and the templates
        if self.method == "grpo" and self.group_size < 2:
            raise ConfigError("method 'grpo' needs group_size >= 2 (advantages are normalised within a group)")
        if self.method == "mopd" and self.group_size < 2 and self.context != "unrelated":
            raise ConfigError(f"context {self.context!r} needs peers from the same group: group_size must be "
                              f">= 2, got {self.group_size}")
        if self.data and not Path(self.data).is_file():
            raise ConfigError(f"data file {self.data!r} does not exist")
        if not self.data:
            from latentwire.tinyworld.tasks import make_task

            make_task(self.task, self.length)

    @property
    def name(self) -> str:
        """The method's display name: ``grpo``, ``opd``, ``mopd_contrastive``, ..."""
        return f"mopd_{self.context}" if self.method == "mopd" else self.method

    def peer_config(self) -> PeerConfig:
        """The peer-context settings of this run (mode ``none`` for every method but mopd)."""
        templates = PeerTemplates(context=self.context_template, positive=self.positive_template,
                                  negative=self.negative_template)
        return PeerConfig(mode=self.context if self.method == "mopd" else "none", n_positive=self.n_positive,
                          n_negative=self.n_negative, require_negative=self.require_negative,
                          exclude_identical=self.exclude_identical, templates=templates)


# ---- problems --------------------------------------------------------------------------------


def _read_jsonl(path: str) -> list[tuple[str, Any]]:
    problems = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problems.append((str(row["prompt"]), row["gold"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{number}: expected a JSON object with 'prompt' and 'gold' ({exc})") from exc
    if not problems:
        raise ConfigError(f"{path} holds no problems")
    return problems


class _Problems:
    """Training problems drawn per step, and the held-out evaluation set."""

    def __init__(self, config: MopdConfig) -> None:
        self.config = config
        self.train_rows = _read_jsonl(config.data) if config.data else None
        if config.eval_data:
            self.eval = _read_jsonl(config.eval_data)[:config.eval_n]
        elif config.data:
            self.eval = self.train_rows[:config.eval_n]
        else:
            self.eval = self._tinyworld(config.eval_n, seed=config.seed + 100_003, rng=None)

    def _tinyworld(self, n: int, seed: int, rng: random.Random | None) -> list[tuple[str, Any]]:
        from latentwire.tinyworld.tasks import make_task

        task = make_task(self.config.task, self.config.length)
        episodes = ([task.episode(seed=seed, index=rng.randrange(1 << 40)) for _ in range(n)] if rng
                    else task.episodes(n, seed=seed))
        return [(ep.prompt(ep.receiver.name), ep.answer) for ep in episodes]

    def draw(self, n: int, rng: random.Random) -> list[tuple[str, Any]]:
        """``n`` training problems."""
        if self.train_rows is not None:
            return [rng.choice(self.train_rows) for _ in range(n)]
        return self._tinyworld(n, seed=self.config.seed, rng=rng)


# ---- checkpoints -----------------------------------------------------------------------------


def _save_checkpoint(out: Path, step: int, config: MopdConfig, student: Any, teacher: Any, optimizer: Any,
                     history: list[dict[str, Any]]) -> None:
    """Write ``out/checkpoint`` atomically: a temporary folder, then renames."""
    from safetensors.torch import save_file, save_model

    tmp, final, old = out / ".checkpoint.tmp", out / "checkpoint", out / ".checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(student, str(tmp / "student.safetensors"))
    save_model(teacher.model, str(tmp / "teacher.safetensors"))
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.detach().cpu().contiguous()
               for index, slots in state["state"].items() for key, value in slots.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {"step": step, "config": asdict(config), "param_groups": state["param_groups"], "history": history}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _checkpoint_folder(out: Path) -> Path | None:
    """The latest complete checkpoint (``.checkpoint.old`` when a crash hit between the renames)."""
    for name in ("checkpoint", ".checkpoint.old"):
        if (out / name / "state.json").is_file():
            return out / name
    return None


def _load_checkpoint(folder: Path, config: MopdConfig, student: Any, teacher: Any,
                     optimizer: Any) -> tuple[int, list]:
    """Restore student, teacher and optimiser; ``(step, eval history)``. Refuses another run's checkpoint."""
    from latentwire.agents.errors import CheckpointError
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    try:
        meta = json.loads((folder / "state.json").read_text())
        saved = meta["config"]
        changed = sorted(k for k, v in asdict(config).items()
                         if k not in _RESUME_FREE and json.loads(json.dumps(v)) != saved.get(k))
        if changed:
            raise ConfigError(f"{folder} was written by a run with other settings ({', '.join(changed)}); "
                              "use another out_dir or --no-resume")
        load_model(student, str(folder / "student.safetensors"))
        load_model(teacher.model, str(folder / "teacher.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
    except (OSError, KeyError, json.JSONDecodeError, SafetensorError, RuntimeError) as exc:
        raise CheckpointError(str(folder), f"{type(exc).__name__}: {exc}", what="MOPD checkpoint") from exc
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    return int(meta["step"]), list(meta.get("history", []))


# ---- one step --------------------------------------------------------------------------------


def _step_loss(config: MopdConfig, model: Any, teacher: Any, tokenizer: Any, questions: list[str], rollouts: Any,
               rewards: Any, contexts: Any, device: Any) -> tuple[Any, dict[str, float]]:
    """The configured method's loss for one batch of rollouts, and its logged parts."""
    import torch

    from . import losses
    from .rollouts import completion_logprobs, encode_prompt

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = rollouts.rollout_prompt_ids()
    completions = rollouts.completion_ids
    mask = rollouts.mask
    want_logits = config.method in ("mopd", "opd") and config.loss != "sampled_rkl"
    new, _, s_logits = completion_logprobs(model, prompts, completions, pad, config.temperature, want_logits)
    parts: dict[str, float] = {}
    if config.method == "grpo":
        loss = losses.grpo_loss(new, rollouts.old_logprobs, rewards, rollouts.group_size, mask, config.clip_eps)
    elif config.method == "sft":
        keep = mask * (rewards >= 1.0).to(device)[:, None]
        loss = losses.sft_loss(new, keep)
    else:
        has = torch.tensor(contexts.mask, device=device)
        keep = mask * has[:, None]
        # A masked rollout still needs some teacher prompt to keep the batch rectangular: its question.
        texts = [t if t is not None else questions[i // rollouts.group_size] for i, t in enumerate(contexts.texts)]
        t_prompts = [encode_prompt(tokenizer, t, config.max_prompt_tokens) for t in texts]
        with torch.no_grad():
            t_logp, _, t_logits = completion_logprobs(teacher.model, t_prompts, completions, pad,
                                                      config.temperature, want_logits)
        if config.loss == "sampled_rkl":
            loss = losses.sampled_reverse_kl(new, rollouts.old_logprobs, t_logp, keep, config.clip_eps,
                                             config.advantage_clip, config.centre_advantage)
        else:
            loss = losses.divergence(s_logits, t_logits, keep, config.loss, config.loss_top_k, config.jsd_beta)
        parts["teacher_advantage"] = losses.masked_mean(t_logp - rollouts.old_logprobs, keep).item()
        parts["masked_fraction"] = contexts.masked_fraction
    parts["ratio"] = losses.masked_mean(torch.exp(new.detach() - rollouts.old_logprobs), mask).item()
    return loss, parts


# ---- the job ---------------------------------------------------------------------------------


def _load_models(config: MopdConfig) -> tuple[Any, Any, Any]:
    """``(student, tokenizer, separate teacher model or None)``."""
    from .student import SHIPPED_STUDENT, load_student

    student, tokenizer, _ = load_student(config.student or SHIPPED_STUDENT)
    separate = load_student(config.teacher_path)[0] if config.teacher == "separate" else None
    return student, tokenizer, separate


def train(config: MopdConfig) -> dict[str, Any]:
    """Run one method (or, with ``methods``, each preset via `compare`); return the report."""
    if config.methods:
        return compare(config, config.methods)
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from .peers import build_contexts
    from .rollouts import SamplingConfig, encode_prompt, sample_groups
    from .student import success_rate
    from .teacher import Teacher
    from .verifiers import make_verifier

    # accelerate picks gloo for several processes on a machine without a GPU only when told it
    # runs on CPU (`accelerate launch --multi_gpu --num_processes 2` there starts CPU processes).
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=several and not torch.cuda.is_available())
    main = accelerator.is_main_process
    out = Path(config.out_dir.format(name=config.name, method=config.method))
    student, tokenizer, separate = _load_models(config)
    student.to(accelerator.device)
    teacher = Teacher(config.teacher, student, config.teacher_rate, separate)
    teacher.model.to(accelerator.device)
    verify = make_verifier(config.verifier, **config.verifier_options)
    problems = _Problems(config)
    peers = config.peer_config()
    sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                              max_new_tokens=config.max_new_tokens, max_prompt_tokens=config.max_prompt_tokens)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    start, history = 0, []
    folder = _checkpoint_folder(out) if config.resume else None
    if folder is not None:
        start, history = _load_checkpoint(folder, config, student, teacher, optimizer)
    model, optimizer = accelerator.prepare(student, optimizer)
    raw = accelerator.unwrap_model(model)

    def evaluate(step: int) -> None:
        if main:
            success = success_rate(raw, tokenizer, problems.eval, verify, max_new_tokens=config.max_new_tokens)
            history.append({"step": step, "success": round(success, 4)})
            write_jsonl(metrics, {"step": step, "eval_success": round(success, 4),
                                  "elapsed_s": round(time.perf_counter() - began, 2)})

    if main:
        out.mkdir(parents=True, exist_ok=True)
        kept = []
        if start and (out / "metrics.jsonl").is_file():  # drop what the crashed run logged after its checkpoint
            kept = [line for line in (out / "metrics.jsonl").read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start]
        (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    metrics = (out / "metrics.jsonl").open("a") if main else None
    began = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, mininterval=1.0,
               disable=not (main and config.progress), desc=f"mopd {config.name}")
    try:
        if start == 0:
            evaluate(0)
        for step in bar:
            for group in optimizer.param_groups:
                factor = warmup_cosine(step, config.steps, config.warmup_steps, config.min_lr_ratio)
                group["lr"] = config.lr * factor
            # Everything random in a step comes from (seed, step, process): a resumed run repeats it.
            rng = random.Random(f"mopd|{config.seed}|{step}|{accelerator.process_index}")
            torch.manual_seed(rng.randrange(1 << 62))
            drawn = problems.draw(config.prompts_per_step, rng)
            questions = [q for q, _ in drawn]
            prompts = [encode_prompt(tokenizer, q, config.max_prompt_tokens) for q in questions]
            rollouts = sample_groups(raw, tokenizer, prompts, config.group_size, sampling)
            golds = [g for _, g in drawn for _ in range(config.group_size)]
            rewards = torch.tensor([verify(text, gold).reward for text, gold in zip(rollouts.texts, golds)],
                                   device=accelerator.device)
            contexts = build_contexts(questions, rollouts.texts, rewards.tolist(), config.group_size, peers, rng)
            for _ in range(config.epochs_per_batch):
                loss, parts = _step_loss(config, model, teacher, tokenizer, questions, rollouts, rewards, contexts,
                                         accelerator.device)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if config.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                teacher.update(raw)
            done = step + 1
            record = {"step": done, "loss": round(loss.item(), 5), "reward": round(rewards.mean().item(), 4),
                      **{k: round(v, 5) for k, v in parts.items()},
                      "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(time.perf_counter() - began, 2)}
            write_jsonl(metrics, record)
            bar.set_postfix(reward=f"{record['reward']:.2f}", loss=f"{record['loss']:.3f}")
            if config.eval_every and done % config.eval_every == 0 and done < config.steps:
                evaluate(done)
            if main and config.save_every and done % config.save_every == 0 and done < config.steps:
                _save_checkpoint(out, done, config, raw, teacher, optimizer, history)
            accelerator.wait_for_everyone()
        if not history or history[-1]["step"] != config.steps:
            evaluate(config.steps)
        report: dict[str, Any] = {}
        if main:
            _save_checkpoint(out, config.steps, config, raw, teacher, optimizer, history)
            raw.save_pretrained(out / "student", safe_serialization=True)
            tokenizer.save_pretrained(out / "student")
            report = {"name": config.name, "config": asdict(config), "history": history,
                      "initial_success": history[0]["success"], "final_success": history[-1]["success"],
                      "eval_n": len(problems.eval), "processes": accelerator.num_processes,
                      "seconds": round(time.perf_counter() - began, 1)}
            (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            plot_success({config.name: [history]}, out / "success.png")
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    accelerator.wait_for_everyone()
    return report


def compare(config: MopdConfig, names: tuple[str, ...] | list[str],
            seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Run each method preset in ``names`` (for each of ``seeds``) with otherwise the same settings.

    Runs go to ``<out_dir>/<name>/seed<seed>``; the combined ``report.json`` and ``success.png``
    (mean success over steps per method, shaded min-max over seeds) go to ``out_dir``.
    """
    seeds = tuple(seeds) if seeds else (config.seed,)
    root = Path(config.out_dir.format(name="compare", method="compare"))
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for seed in seeds:
            run_config = replace(config, methods=(), seed=seed, out_dir=str(root / name / f"seed{seed}"),
                                 **METHOD_PRESETS[name])
            runs.setdefault(name, []).append(train(run_config))
    report = {"methods": {name: {"final_success": [r["final_success"] for r in rs],
                                 "initial_success": [r["initial_success"] for r in rs],
                                 "histories": [r["history"] for r in rs]} for name, rs in runs.items()},
              "seeds": list(seeds), "config": asdict(config)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_success({name: [r["history"] for r in rs] for name, rs in runs.items()}, root / "success.png")
    return report


def plot_success(histories: dict[str, list[list[dict[str, Any]]]], path: Path) -> Path:
    """PNG of eval success over steps: one line per method (mean over runs), min-max band over runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for name, runs in histories.items():
        steps = [h["step"] for h in runs[0]]
        values = [[h["success"] for h in run] for run in runs]
        columns = list(zip(*values))
        mean = [sum(c) / len(c) for c in columns]
        axes.plot(steps, mean, marker="o", markersize=3, label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            axes.fill_between(steps, [min(c) for c in columns], [max(c) for c in columns], alpha=0.15)
    axes.set_xlabel("training step")
    axes.set_ylabel("success rate (greedy, held-out)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ---- command line ----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Field values from a JSON or TOML config file; unknown fields are an error naming them."""
    import tomllib

    file = Path(path)
    try:
        text = file.read_text()
        values = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config {file}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config {file} must hold an object of MopdConfig fields")
    known = {f.name for f in fields(MopdConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config {file}: unknown field(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = config_parser(MopdConfig, "latentwire train mopd", "MOPD with OPD, GRPO and SFT baselines.")
    parser.add_argument("--config", help="JSON or TOML file of MopdConfig fields (flags win over it)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any] | int:
    """CLI entry: ``--config FILE`` and/or flags into a `MopdConfig`, run `train`, print the result.

    A bad config file or setting prints one line naming it and returns exit status 2.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.config:
            parser.set_defaults(**load_config(args.config))
            args = parser.parse_args(argv)
        values = vars(args)
        values.pop("config")
        config = MopdConfig(**values)
    except ConfigError as exc:
        print(f"latentwire train mopd: {exc}", file=sys.stderr)
        return 2
    report = train(config)
    if not report:  # not the main process: it writes and prints nothing
        return report
    if "methods" in report:
        summary = {name: m["final_success"] for name, m in report["methods"].items()}
    else:
        summary = {report.get("name"): report.get("final_success")}
    print(json.dumps({"final_success": summary}))
    return report


if __name__ == "__main__":
    main()
