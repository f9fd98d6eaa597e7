"""The one training loop every job runs on: a job supplies its loss, its evaluation, its state
and its final save; the loop does the rest.

What the loop owns, once for every job:

* the `Accelerator` (CPU, one GPU, ``accelerate launch`` for several processes; ``mixed_precision``);
* AdamW and the learning-rate schedule (linear warm-up, cosine decay to ``min_lr_ratio``; the
  rate is a pure function of the step, so a resumed run follows the same curve);
* one update per loss: non-finite losses and gradient norms skip the update (every process
  together) and are counted, gradients are clipped to ``grad_clip``;
* a tqdm bar and ``metrics.jsonl`` (one line per ``log_every`` steps with the window's mean of
  each metric, ``skipped_steps``, ``lr`` and ``elapsed_s``; one line per evaluation);
* evaluation every ``eval_every`` steps and at the end, on the main process, without gradients and
  in eval mode, each module's mode restored afterwards (nanoGPT's ``estimate_loss``);
* checkpoints every ``checkpoint_every`` steps: ``accelerator.save_state`` (model, optimiser, every
  process's RNG state, objects the job registers; FSDP and DeepSpeed shard it their way) plus
  ``loop_state.json`` (step, skipped steps, config, the job's own JSON state), written to a scratch
  folder and renamed to ``checkpoint-<step>``, then a ``latest`` pointer; a crash at any moment
  leaves the previous checkpoint whole. ``resume`` continues from the latest complete one.

A job is a `TrainJob`: ``module`` (what trains), ``step(step, model)`` returning ``(loss,
metrics)`` (or an iterator of them for several updates per step), and optionally ``evaluate``,
``state``/``load_state``, ``checkpointed`` and ``save``. Its config extends `TrainConfig`, whose
fields (like every job field) carry their help in ``metadata``; `config_parser` turns a config
class into ``--flags`` with `transformers.HfArgumentParser` (help, default, choices from
``Literal`` types or ``choices`` metadata, ``aliases`` for older flag names).

Determinism: jobs draw their batches as a pure function of (seed, process, step), and the loop
restores every RNG state from the checkpoint, so a resumed run ends where an uninterrupted one
does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["CHECKPOINT_PREFIX", "LoopResult", "TrainConfig", "TrainJob", "TrainLoop", "config_parser",
           "default", "json_object", "latest_checkpoint", "save_checkpoint", "warmup_cosine", "write_jsonl"]

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "loop_state.json"
#: Settings that may differ between a run and its resume without changing what it computes.
RESUME_FREE = frozenset({"out_dir", "steps", "resume", "progress", "log_every", "eval_every",
                         "checkpoint_every", "max_seconds"})


@dataclass
class TrainConfig:
    """What every training job is configured with; each job's config extends it (and may change a
    default with `default`). The field help is the ``--flag`` help."""

    out_dir: str = field(default="runs/train", metadata={
        "help": "output folder (a job may fill in {family} or {name})", "aliases": ["--out"]})
    steps: int = field(default=1000, metadata={"help": "optimiser steps in all (a resumed run continues up to it)"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW)"})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "learning rate at the last step, relative to lr: cosine decay to it (1: constant)"})
    warmup_steps: int = field(default=0, metadata={"help": "steps of linear warm-up from 0 to lr"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on norms and biases)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0: no clipping)"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and of every batch"})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={
        "help": "accelerate's mixed precision (bf16 where the device supports it)"})
    log_every: int = field(default=10, metadata={"help": "steps per metrics.jsonl line (means over them)"})
    eval_every: int = field(default=100, metadata={"help": "steps between evaluations (0: only at the end)"})
    checkpoint_every: int = field(default=100, metadata={
        "help": "steps between resumable checkpoints (0: none)", "aliases": ["--save-every"]})
    resume: bool = field(default=False, metadata={
        "help": "continue from the latest complete checkpoint in out_dir when there is one"})
    max_seconds: float | None = field(default=None, metadata={
        "help": "stop after this many seconds of training (a checkpoint is written, so it can resume)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        from latentwire.errors import ConfigError

        for name in ("steps", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "grad_clip", "weight_decay", "lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based)."""
        return self.lr * warmup_cosine(step, self.steps, self.warmup_steps, self.min_lr_ratio)


def default(name: str, value: Any) -> Any:
    """`TrainConfig`'s field ``name`` with another default (the same help): for a job's config,
    e.g. ``steps: int = default("steps", 1500)``."""
    base = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    return field(default=value, metadata=base.metadata)


def json_object(value: dict[str, Any] | str | None, name: str) -> dict[str, Any]:
    """A dict field's value: as given, or parsed from the JSON text a ``--flag`` gives (such fields
    are typed ``dict[str, Any] | str | None``, which `HfArgumentParser` reads as a string)."""
    from latentwire.errors import ConfigError

    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            value = None  # not JSON: refused below
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a JSON object, e.g. '{{\"key\": 1}}'")
    return dict(value or {})


def warmup_cosine(step: int, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def write_jsonl(handle: Any, record: dict[str, Any]) -> None:
    """Append one metrics record (no-op without a handle: non-main processes write nothing)."""
    if handle is not None:
        handle.write(json.dumps(record) + "\n")
        handle.flush()  # so a run can be followed (and a crash leaves its history)


def config_parser(config_cls: type, prog: str, description: str) -> Any:
    """A `transformers.HfArgumentParser` with one ``--flag`` per field of the dataclass
    ``config_cls``: help from the field's ``metadata["help"]``, its default, choices from a
    ``Literal`` type or ``metadata["choices"]``, older names from ``metadata["aliases"]``.
    ``config_cls(**vars(parser.parse_args(argv)))`` is the config."""
    from transformers import HfArgumentParser

    return HfArgumentParser(config_cls, prog=prog, description=description)


class TrainJob:
    """What a job supplies to `TrainLoop.run`; everything else is the loop's.

    Set ``module`` (the `torch.nn.Module` whose trainable parameters the optimiser updates; the
    loop prepares it with accelerate) and implement `step`. The other hooks have defaults.
    """

    module: Any
    #: progress-bar label
    name: str = "train"
    #: how errors name this job's checkpoints ("cannot load <checkpoint_name> from ...")
    checkpoint_name: str = "checkpoint"
    #: metrics shown on the progress bar
    progress_keys: tuple[str, ...] = ("loss",)
    #: evaluate before the first step of a fresh run (a baseline for the curve)
    eval_at_start: bool = False
    #: keep a checkpoint of the finished run (so a later run with more steps continues it);
    #: otherwise a finished run removes its checkpoints and its own files are the product
    keep_final_checkpoint: bool = False
    #: config fields besides `RESUME_FREE` that may change between a run and its resume
    resume_free: frozenset[str] = frozenset()
    #: set by `evaluate` to end the run there, finished (a target reached)
    stop: bool = False

    def param_groups(self) -> list[dict[str, Any]] | None:
        """AdamW parameter groups; None: the trainable parameters of ``module``, weight decay on
        matrices only (not on norms and biases, as in nanoGPT)."""
        return None

    def step(self, step: int, model: Any) -> tuple[Any, dict[str, float]] | Iterator[tuple[Any, dict[str, float]]]:
        """The loss of training step ``step`` (0-based) and metrics to log (floats), computed with
        ``model`` (``module`` as prepared by accelerate: use it for the forward pass that trains).
        A job that makes several updates per step (MOPD's epochs on one batch) yields them."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def evaluate(self, step: int) -> dict[str, Any]:
        """Fields of the evaluation record after ``step`` steps (run on the main process, without
        gradients, in eval mode); {}: nothing to record."""
        return {}

    def state(self) -> dict[str, Any]:
        """The job's own JSON state saved with each checkpoint (counters, histories, shapes)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state` from a checkpoint (before the loop loads the tensors: refuse a
        checkpoint that cannot be this job's here)."""

    def checkpointed(self) -> list[Any]:
        """More objects with ``state_dict``/``load_state_dict`` to checkpoint (an EMA teacher)."""
        return []

    def save(self, out: Path | None, result: LoopResult) -> None:
        """Write the product into ``out`` (main process only, after the final evaluation)."""


@dataclass
class LoopResult:
    """How a run ended: the last ``step``, ``skipped_steps`` (non-finite), ``train_seconds``
    (without the final evaluation), the last evaluation record, ``processes`` and ``finished``
    (False when ``max_seconds`` stopped it)."""

    step: int
    skipped_steps: int
    train_seconds: float
    eval: dict[str, Any]
    processes: int
    finished: bool


# ---- checkpoints -----------------------------------------------------------------------------


def latest_checkpoint(out: Path) -> Path | None:
    """The latest complete checkpoint folder in ``out`` (the ``latest`` pointer, or the highest
    step when a crash came between the rename and the pointer), or None."""
    out = Path(out)
    pointer = out / "latest"
    if pointer.is_file():
        folder = out / pointer.read_text().strip()
        if (folder / STATE_FILE).is_file():
            return folder
    complete = [p for p in out.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file()
                and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return max(complete, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), default=None)


def save_checkpoint(out: Path, step: int, accelerator: Any, state: dict[str, Any]) -> Path:
    """Write ``out/checkpoint-<step>`` (every process calls it): ``accelerator.save_state`` into a
    scratch folder, ``loop_state.json`` beside it, a rename into place, then ``latest`` (an atomic
    rename); older checkpoints go. A crash at any moment leaves the previous checkpoint usable."""
    final = out / f"{CHECKPOINT_PREFIX}{step}"
    scratch = out / f".{final.name}.tmp"  # one name for every process
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(scratch, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(scratch))
    accelerator.wait_for_everyone()
    if main:
        (scratch / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(scratch, final)
        pointer = out / ".latest.tmp"
        pointer.write_text(final.name + "\n")
        os.replace(pointer, out / "latest")
        for old in out.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _remove_checkpoints(out: Path) -> None:
    for old in out.glob(f"{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True)
    (out / "latest").unlink(missing_ok=True)


def _open_metrics(out: Path, start: int) -> Any:
    """``out/metrics.jsonl`` to append to: a fresh run starts it empty, a resumed one keeps the
    lines up to its ``start`` (what a crashed run logged after its checkpoint goes)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.jsonl"
    kept = []
    if start and path.is_file():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start]
    path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def _jsonable(value: Any) -> Any:
    """Config values as JSON reads them back (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


# ---- the loop --------------------------------------------------------------------------------


class TrainLoop:
    """The training loop (module docstring). Build it first: its ``accelerator`` gives the job its
    device and process; then ``run`` a `TrainJob`.

    ``device_placement=False`` leaves the job's module where it is (a small fit on the caller's
    tensors).
    """

    def __init__(self, config: TrainConfig, *, device_placement: bool = True) -> None:
        import torch
        from accelerate import Accelerator

        self.config = config
        # accelerate picks gloo for several processes on a machine without a GPU only when told it
        # runs on CPU (`accelerate launch --multi_gpu --num_processes 2` there starts CPU processes).
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision,
                                       cpu=several and not torch.cuda.is_available(),
                                       device_placement=device_placement)

    # -- pieces

    def _optimizer(self, job: TrainJob) -> Any:
        import torch

        groups = job.param_groups()
        if groups is None:
            params = [p for p in job.module.parameters() if p.requires_grad]
            groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.config.weight_decay},
                      {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.config.lr, weight_decay=self.config.weight_decay,
                                 betas=(self.config.adam_beta1, self.config.adam_beta2))

    def _resume(self, job: TrainJob, out: Path) -> tuple[int, int, int | None]:
        """Load the latest checkpoint in ``out``: ``(step, skipped steps, last eval step)``."""
        from latentwire.agents.errors import CheckpointError
        from latentwire.errors import ConfigError

        folder = latest_checkpoint(out)
        if folder is None:
            if self.accelerator.is_main_process:
                logging.getLogger(__name__).info("resume: no checkpoint in %s; starting afresh", out)
            return -1, 0, None
        try:
            state = json.loads((folder / STATE_FILE).read_text())
            step, skipped, saved = int(state["step"]), int(state["skipped_steps"]), state["config"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(str(folder), f"{type(exc).__name__}: {exc}", what=job.checkpoint_name) from exc
        job.load_state(state.get("job", {}))
        free = RESUME_FREE | job.resume_free
        mine = _jsonable(dataclasses.asdict(self.config))
        # A field the checkpoint does not record was added later: at its default it computes what
        # the old run computed, so only a non-default value counts as a change.
        defaults = {f.name: _jsonable(f.default) for f in dataclasses.fields(self.config)
                    if f.default is not dataclasses.MISSING}
        changed = sorted(k for k, v in mine.items() if k not in free
                         and (saved[k] != v if k in saved else k not in defaults or defaults[k] != v))
        if changed:
            raise ConfigError(f"{folder} was written by a run with other settings ({', '.join(changed)}); "
                              "use another out_dir or --no-resume")
        try:
            self.accelerator.load_state(str(folder))
        except Exception as exc:  # torch, safetensors and accelerate raise a dozen kinds: name it once
            raise CheckpointError(str(folder), f"{type(exc).__name__}: {exc}".splitlines()[0],
                                  what=job.checkpoint_name) from exc
        return step, skipped, state.get("last_eval_step")

    def _evaluate(self, job: TrainJob, model: Any, step: int) -> dict[str, Any]:
        """``job.evaluate(step)`` without gradients in eval mode; every module's mode restored."""
        import torch

        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                return job.evaluate(step)
        finally:
            for m, training in modes:
                m.training = training

    # -- the run

    def run(self, job: TrainJob, out: str | os.PathLike[str] | None, *, start: int = 0) -> LoopResult:
        """Train ``job`` from ``start`` (or its checkpoint, with ``config.resume``) to
        ``config.steps``; files go to ``out`` (None: no files, no checkpoints). Returns the
        `LoopResult` on every process; the job's ``save`` has run on the main one."""
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        main = accelerator.is_main_process
        out = Path(out) if out is not None else None
        optimizer = self._optimizer(job)
        model, optimizer = accelerator.prepare(job.module, optimizer)
        trained = [p for p in model.parameters() if p.requires_grad]  # clipped in the module's order
        for obj in job.checkpointed():
            accelerator.register_for_checkpointing(obj)

        skipped, last_eval_step = 0, None
        if out is not None and config.resume:
            step, skipped, last_eval_step = self._resume(job, out)
            start = step if step >= 0 else start
        metrics = _open_metrics(out, start) if out is not None and main else None

        began = time.perf_counter()
        last_eval: dict[str, Any] = {}
        rows: list[dict[str, float]] = []

        def evaluate(step: int) -> None:
            nonlocal last_eval, last_eval_step
            last_eval_step = step
            if main:
                last_eval = self._evaluate(job, model, step)
                if last_eval:
                    write_jsonl(metrics, {"step": step, **last_eval,
                                          "elapsed_s": round(time.perf_counter() - began, 2)})

        def state(step: int) -> dict[str, Any]:
            return {"step": step, "skipped_steps": skipped, "last_eval_step": last_eval_step,
                    "config": _jsonable(dataclasses.asdict(config)), "job": job.state()}

        bar = tqdm(range(start, config.steps), initial=start, total=config.steps, mininterval=1.0,
                   disable=not (main and config.progress), desc=job.name)
        done, finished = start, True
        try:
            if job.eval_at_start and start == 0:
                evaluate(0)
            for step in bar:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr_at(step)
                record = None
                for loss, parts in self._updates(job, step, model):
                    skipped += not self._update(loss, optimizer, trained)
                    record = {"loss": loss.item(), **parts}
                if record is not None:
                    rows.append(record)
                done = step + 1
                elapsed = time.perf_counter() - began
                if done % config.log_every == 0 or done == config.steps:
                    self._log(rows, metrics, bar, job, done, skipped, optimizer, elapsed)
                out_of_time = config.max_seconds is not None and elapsed >= config.max_seconds
                if config.eval_every and done % config.eval_every == 0 and done < config.steps \
                        and not out_of_time:
                    evaluate(done)
                    if self._stopped(job):
                        break
                if out is not None and config.checkpoint_every and done % config.checkpoint_every == 0 \
                        and done < config.steps:
                    save_checkpoint(out, done, accelerator, state(done))
                if out_of_time:
                    finished = done >= config.steps
                    break
            if rows:  # stopped early (a target, the time budget): log the open window too
                self._log(rows, metrics, bar, job, done, skipped, optimizer, time.perf_counter() - began)
            accelerator.wait_for_everyone()
            train_seconds = time.perf_counter() - began
            if last_eval_step != done:
                evaluate(done)
            if out is not None:
                # Finished: the job's files are the product, unless it keeps a checkpoint to go on
                # from; stopped early: a checkpoint where it stopped, so it resumes exactly there.
                if (job.keep_final_checkpoint if finished else config.checkpoint_every > 0):
                    save_checkpoint(out, done, accelerator, state(done))
                elif finished and main:
                    _remove_checkpoints(out)
            result = LoopResult(step=done, skipped_steps=skipped, train_seconds=round(train_seconds, 1),
                                eval=last_eval, processes=accelerator.num_processes, finished=finished)
            if main:
                job.save(out, result)
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        accelerator.wait_for_everyone()
        return result

    def _stopped(self, job: TrainJob) -> bool:
        """Whether the job asked to stop; the main process decides (it evaluates), all follow."""
        flag = [bool(job.stop)]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(flag)
        return flag[0]

    def _updates(self, job: TrainJob, step: int, model: Any) -> Iterator[tuple[Any, dict[str, float]]]:
        """Each ``(loss, metrics)`` of ``job.step``, computed with gradients on and under
        accelerate's autocast (a no-op without mixed precision)."""
        result = self._computing(job.step, step, model)
        if isinstance(result, tuple):
            yield result
            return
        while (item := self._computing(next, result, None)) is not None:
            yield item

    def _computing(self, fn: Any, *args: Any) -> Any:
        import torch

        with torch.enable_grad(), self.accelerator.autocast():
            return fn(*args)

    def _update(self, loss: Any, optimizer: Any, params: list[Any]) -> bool:
        """One optimiser update from ``loss``; False (and no update) when the loss or the gradient
        norm is not finite on some process: every process skips together, so replicas stay equal."""
        import torch

        accelerator, config = self.accelerator, self.config
        optimizer.zero_grad(set_to_none=True)
        finite = torch.isfinite(loss.detach()).float()
        if not bool(accelerator.reduce(finite, reduction="min") > 0):
            return False
        accelerator.backward(loss)
        norm = accelerator.clip_grad_norm_(params, config.grad_clip) if config.grad_clip else None
        if norm is not None and not math.isfinite(float(norm)):
            return False
        optimizer.step()
        return True

    def _log(self, rows: list[dict[str, float]], metrics: Any, bar: Any, job: TrainJob, done: int,
             skipped: int, optimizer: Any, elapsed: float) -> None:
        """One metrics line: each metric's mean over the window (finite losses only, when any)."""
        if not rows or not self.accelerator.is_main_process:
            rows.clear()
            return
        finite = [r for r in rows if math.isfinite(r["loss"])] or rows
        mean = {k: round(sum(r[k] for r in finite) / len(finite), 5) for k in finite[0]}
        rows.clear()
        bar.set_postfix({k: f"{mean[k]:.3f}" for k in job.progress_keys if k in mean})
        write_jsonl(metrics, {"step": done, **mean, "skipped_steps": skipped,
                              "lr": round(optimizer.param_groups[0]["lr"], 7), "elapsed_s": round(elapsed, 2)})

