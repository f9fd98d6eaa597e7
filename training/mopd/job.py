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
every ``eval_every`` steps and at the end. The job runs on the training loop (`loop.TrainLoop`):
a checkpoint (accelerate's state of the student and optimiser, the EMA teacher, the eval history
and config) is written every ``checkpoint_every`` steps and when the run ends; a run started
again on the same ``out_dir`` resumes from it (``resume``, on by default) and, as every step draws
its problems and samples from ``(seed, step, process)``, reaches the same result as an
uninterrupted run. A checkpoint of a run with other settings is refused.

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

import json
import os
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from latentwire.errors import ConfigError
from latentwire.tinyworld.tasks import TASKS

from ..loop import LoopResult, TrainConfig, TrainJob, TrainLoop, config_parser, default, json_object
from .losses import DIVERGENCES
from .peers import CONTEXT_MODES, PeerConfig, PeerTemplates
from .student import SHIPPED_TEACHER
from .teacher import TEACHER_KINDS
from .verifiers import VERIFIERS

__all__ = ["METHODS", "METHOD_PRESETS", "MopdConfig", "compare", "load_config", "main", "plot_success", "train"]

Method = Literal["mopd", "opd", "grpo", "sft"]
METHODS: tuple[str, ...] = get_args(Method)
LOSSES = ("sampled_rkl", *DIVERGENCES)
#: Named method settings for comparisons (the benchmark's names).
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"method": "grpo"},
    "sft": {"method": "sft"},
    # OPD with the EMA self-teacher: a control only (no context, so its advantage is exactly 0).
    "opd": {"method": "opd", "context": "none"},
    # OPD with informative teachers: a stronger separately trained model, or the student told the answer.
    "opd_separate": {"method": "opd", "context": "none", "teacher": "separate",
                     "teacher_path": str(SHIPPED_TEACHER)},
    "opd_privileged": {"method": "opd", "context": "privileged"},
    "mopd_positive": {"method": "mopd", "context": "positive"},
    "mopd_contrastive": {"method": "mopd", "context": "contrastive"},
    "mopd_contrastive_lower_only": {"method": "mopd", "context": "contrastive",
                                    "failure_signal": "lower_only"},
    "mopd_contrastive_reversed": {"method": "mopd", "context": "contrastive", "failure_signal": "reversed"},
    "mopd_random_peer": {"method": "mopd", "context": "random_peer"},
    "mopd_unrelated": {"method": "mopd", "context": "unrelated"},
}
#: How the failed peers of a contrastive context reach the teacher's score (`MopdConfig.failure_signal`).
FAILURE_SIGNALS = ("context", "lower_only", "reversed")
#: Config-file keys of older versions and the fields they are now.
RENAMED = {"save_every": "checkpoint_every"}


@dataclass
class MopdConfig(TrainConfig):
    """Everything a MOPD / OPD / GRPO / SFT run needs; `train` takes one (module docstring). Each
    field's help says what it does (``latentwire train mopd --help``); the training fields are
    `TrainConfig`'s. Peer settings as `PeerConfig`; templates as `PeerTemplates`."""

    out_dir: str = default("out_dir", "runs/mopd/{name}")
    steps: int = default("steps", 40)
    lr: float = default("lr", 3e-4)
    min_lr_ratio: float = default("min_lr_ratio", 1.0)
    weight_decay: float = default("weight_decay", 0.0)
    adam_beta2: float = default("adam_beta2", 0.999)
    log_every: int = default("log_every", 1)
    eval_every: int = default("eval_every", 10)
    checkpoint_every: int = default("checkpoint_every", 10)
    resume: bool = default("resume", True)
    method: Method = field(default="mopd", metadata={
        "help": "mopd: teacher with peer contexts; opd: teacher with the plain question; grpo: verifier "
                "reward only; sft: likelihood of the verified successes"})
    context: str = field(default="contrastive", metadata={
        "help": "peer context of the mopd teacher", "choices": list(CONTEXT_MODES)})
    failure_signal: str = field(default="context", metadata={
        "help": "contrastive only. context: the teacher reads the prompt with the failed peer as is; "
                "lower_only: per token the lower of its log-probabilities with and without the failed peer "
                "(a failure may only lower a token's score); reversed: the failed peer's effect on each "
                "token with its sign flipped (2 x without - with)", "choices": list(FAILURE_SIGNALS)})
    methods: list[str] = field(default_factory=list, metadata={
        "help": "run each of these presets in out_dir/<name> and compare them", "choices": list(METHOD_PRESETS)})
    student: str = field(default="", metadata={"help": "student model folder (empty: the shipped tinyworld student)"})
    teacher: str = field(default="ema", metadata={
        "help": "ema: the student averaged at teacher_rate per step; frozen: the initial student; "
                "separate: teacher_path", "choices": list(TEACHER_KINDS)})
    teacher_rate: float = field(default=0.05, metadata={"help": "share of the student mixed into the EMA teacher per update"})
    teacher_path: str = field(default="", metadata={"help": "model folder of a separate teacher"})
    verifier: str = field(default="tinyworld", metadata={"help": "what scores a rollout", "choices": list(VERIFIERS)})
    # dict | str | None: HfArgumentParser reads it as a string (JSON), __post_init__ parses it.
    verifier_options: dict[str, Any] | str | None = field(default_factory=dict, metadata={
        "help": "options of the verifier (a JSON object)"})
    task: str = field(default="sort", metadata={"help": "tinyworld task of the problems (without data)",
                                                "choices": list(TASKS)})
    length: int = field(default=6, metadata={"help": "secret length of those problems"})
    data: str = field(default="", metadata={"help": "problems file: JSONL of {\"prompt\", \"gold\"} per line"})
    eval_data: str = field(default="", metadata={
        "help": "held-out problems file (none: the first eval_n of data, or held-out tinyworld episodes)"})
    group_size: int = field(default=8, metadata={"help": "rollouts sampled per problem"})
    prompts_per_step: int = field(default=8, metadata={"help": "problems per step"})
    n_positive: int = field(default=2, metadata={"help": "successful peers in a context"})
    n_negative: int = field(default=1, metadata={"help": "failed peers in a contrastive context"})
    require_negative: bool = field(default=False, metadata={
        "help": "mask rollouts whose contrastive context has no failed peer"})
    exclude_identical: bool = field(default=False, metadata={"help": "never show a peer identical to the rollout"})
    context_template: str = field(default=PeerTemplates.context, metadata={"help": "template of the peer context"})
    positive_template: str = field(default=PeerTemplates.positive, metadata={"help": "template of a successful peer"})
    negative_template: str = field(default=PeerTemplates.negative, metadata={"help": "template of a failed peer"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of the rollouts (1: off)"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling of the rollouts (0: off)"})
    max_new_tokens: int = field(default=12, metadata={"help": "longest rollout and eval answer"})
    max_prompt_tokens: int = field(default=512, metadata={"help": "prompts are cut to their last tokens beyond it"})
    loss: str = field(default="sampled_rkl", metadata={
        "help": "sampled_rkl: the sampled-token reverse KL in clipped policy-gradient form; or a full/top-k "
                "divergence to the teacher", "choices": list(LOSSES)})
    loss_top_k: int = field(default=0, metadata={"help": "top-k of the divergences (0: the whole vocabulary)"})
    jsd_beta: float = field(default=0.5, metadata={"help": "mixing weight of jsd"})
    clip_eps: float = field(default=0.2, metadata={"help": "ratio clipping of the policy-gradient losses"})
    advantage_clip: float = field(default=0.0, metadata={"help": "bound of the sampled-token advantages (0: none)"})
    centre_advantage: bool = field(default=False, metadata={"help": "centre the sampled-token advantages"})
    epochs_per_batch: int = field(default=1, metadata={"help": "optimiser updates on each step's rollouts"})
    eval_n: int = field(default=128, metadata={"help": "held-out problems of each evaluation"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.methods = list(self.methods)
        for name in self.methods:
            if name not in METHOD_PRESETS:
                raise ConfigError(f"unknown method preset {name!r} in methods; "
                                  f"choose from {', '.join(METHOD_PRESETS)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.context not in CONTEXT_MODES:
            raise ConfigError(f"unknown context mode {self.context!r}; choose one of {', '.join(CONTEXT_MODES)}")
        if self.method == "mopd" and self.context in ("none", "privileged"):
            raise ConfigError(f"method 'mopd' with context {self.context!r} is OPD (no peers): "
                              "set method to 'opd' or pick a peer context")
        if self.failure_signal not in FAILURE_SIGNALS:
            raise ConfigError(f"unknown failure_signal {self.failure_signal!r}; choose one of "
                              f"{', '.join(FAILURE_SIGNALS)}")
        if self.failure_signal != "context" and not (self.method == "mopd" and self.context == "contrastive"):
            raise ConfigError(f"failure_signal {self.failure_signal!r} needs method 'mopd' with context "
                              f"'contrastive' (only that context shows failed peers)")
        if self.failure_signal != "context" and self.loss != "sampled_rkl":
            raise ConfigError(f"failure_signal {self.failure_signal!r} works on the sampled tokens: "
                              f"set loss to 'sampled_rkl' (got {self.loss!r})")
        if self.teacher not in TEACHER_KINDS:
            raise ConfigError(f"unknown teacher {self.teacher!r}; choose one of {', '.join(TEACHER_KINDS)}")
        if self.teacher == "separate" and not self.teacher_path:
            raise ConfigError("teacher 'separate' needs teacher_path (a model folder)")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        self.verifier_options = json_object(self.verifier_options, "verifier_options")
        from .verifiers import make_verifier

        make_verifier(self.verifier, **self.verifier_options)  # missing / unknown verifier fails now
        for name in ("group_size", "prompts_per_step", "eval_n", "epochs_per_batch", "max_new_tokens"):
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
        """The method's display name: ``grpo``, ``opd``, ``opd_privileged``, ``opd_separate``,
        ``mopd_contrastive``, ``mopd_contrastive_lower_only``, ..."""
        if self.method == "mopd":
            suffix = "" if self.failure_signal == "context" else f"_{self.failure_signal}"
            return f"mopd_{self.context}{suffix}"
        if self.method == "opd":
            return "opd" + ("_privileged" if self.context == "privileged" else "") + (
                "_separate" if self.teacher == "separate" else "")
        return self.method

    def peer_config(self) -> PeerConfig:
        """The peer-context settings of this run: its context for mopd and for opd with context
        ``privileged`` (the teacher is told the gold answer), else mode ``none``."""
        templates = PeerTemplates(context=self.context_template, positive=self.positive_template,
                                  negative=self.negative_template)
        privileged = self.method == "opd" and self.context == "privileged"
        mode = self.context if self.method == "mopd" or privileged else "none"
        return PeerConfig(mode=mode, n_positive=self.n_positive,
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
            if config.failure_signal != "context":
                # Same successes without the failure; where no failure was shown both prompts are one.
                plain = [s if s is not None else t for s, t in zip(contexts.success_only, texts)]
                p_prompts = [encode_prompt(tokenizer, t, config.max_prompt_tokens) for t in plain]
                p_logp = completion_logprobs(teacher.model, p_prompts, completions, pad,
                                             config.temperature)[0]
                # lower_only: a failure may only lower a token; reversed: what it raises is lowered instead.
                if config.failure_signal == "lower_only":
                    t_logp = torch.minimum(t_logp, p_logp)
                else:
                    t_logp = 2 * p_logp - t_logp
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


class _MopdJob(TrainJob):
    """One on-policy step per training step (sample, verify, build contexts, then
    ``epochs_per_batch`` updates, the teacher following each), evaluation, history and report."""

    checkpoint_name = "MOPD checkpoint"
    progress_keys = ("reward", "loss")
    eval_at_start = True
    keep_final_checkpoint = True  # a later run with more steps goes on from the finished one
    resume_free = frozenset({"methods"})

    def __init__(self, config: MopdConfig, student: Any, tokenizer: Any, teacher: Any, device: Any,
                 process: int) -> None:
        from .peers import build_contexts  # noqa: F401  (fail at start, not at the first step)
        from .rollouts import SamplingConfig
        from .verifiers import make_verifier

        self.config, self.module, self.tokenizer, self.teacher = config, student, tokenizer, teacher
        self.device, self.process = device, process
        self.name = f"mopd {config.name}"
        self.verify = make_verifier(config.verifier, **config.verifier_options)
        self.problems = _Problems(config)
        self.peers = config.peer_config()
        self.sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                                       max_new_tokens=config.max_new_tokens,
                                       max_prompt_tokens=config.max_prompt_tokens)
        self.history: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {}

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.module.parameters())}]  # decay (if any) on every parameter

    def checkpointed(self) -> list[Any]:
        return [self.teacher.model] if self.config.teacher == "ema" else []  # the others are rebuilt as they were

    def step(self, step: int, model: Any) -> Any:
        import torch

        from .peers import build_contexts
        from .rollouts import encode_prompt, sample_groups

        config, tokenizer, raw = self.config, self.tokenizer, self.module
        # Everything random in a step comes from (seed, step, process): a resumed run repeats it.
        rng = random.Random(f"mopd|{config.seed}|{step}|{self.process}")
        torch.manual_seed(rng.randrange(1 << 62))
        drawn = self.problems.draw(config.prompts_per_step, rng)
        questions = [q for q, _ in drawn]
        prompts = [encode_prompt(tokenizer, q, config.max_prompt_tokens) for q in questions]
        rollouts = sample_groups(raw, tokenizer, prompts, config.group_size, self.sampling)
        golds = [g for _, g in drawn for _ in range(config.group_size)]
        rewards = torch.tensor([self.verify(text, gold).reward for text, gold in zip(rollouts.texts, golds)],
                               device=self.device)
        contexts = build_contexts(questions, rollouts.texts, rewards.tolist(), config.group_size, self.peers,
                                  rng, golds=[g for _, g in drawn])
        reward = rewards.mean().item()
        for _ in range(config.epochs_per_batch):
            loss, parts = _step_loss(config, model, self.teacher, tokenizer, questions, rollouts, rewards, contexts,
                                     self.device)
            yield loss, {"reward": reward, **parts}
            self.teacher.update(raw)  # after the loop's update

    def evaluate(self, step: int) -> dict[str, Any]:
        from .student import success_rate

        success = success_rate(self.module, self.tokenizer, self.problems.eval, self.verify,
                               max_new_tokens=self.config.max_new_tokens)
        self.history.append({"step": step, "success": round(success, 4)})
        return {"eval_success": round(success, 4)}

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))

    def save(self, out: Path, result: LoopResult) -> None:
        config, history = self.config, self.history
        self.module.save_pretrained(out / "student", safe_serialization=True)
        self.tokenizer.save_pretrained(out / "student")
        self.report = {"name": config.name, "config": asdict(config), "history": history,
                       "initial_success": history[0]["success"], "final_success": history[-1]["success"],
                       "eval_n": len(self.problems.eval), "processes": result.processes,
                       "seconds": result.train_seconds}
        (out / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
        plot_success({config.name: [history]}, out / "success.png")


def train(config: MopdConfig) -> dict[str, Any]:
    """Run one method (or, with ``methods``, each preset via `compare`); return the report (empty
    on processes other than the main one)."""
    if config.methods:
        return compare(config, config.methods)
    from .teacher import Teacher

    loop = TrainLoop(config)
    device = loop.accelerator.device
    student, tokenizer, separate = _load_models(config)
    student.to(device)
    teacher = Teacher(config.teacher, student, config.teacher_rate, separate)
    teacher.model.to(device)
    job = _MopdJob(config, student, tokenizer, teacher, device, loop.accelerator.process_index)
    loop.run(job, config.out_dir.format(name=config.name, method=config.method))
    return job.report


def compare(config: MopdConfig, names: tuple[str, ...] | list[str],
            seeds: tuple[int, ...] | None = None,
            announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run each method preset in ``names`` (for each of ``seeds``) with otherwise the same settings.

    Runs go to ``<out_dir>/<name>/seed<seed>``; the combined ``report.json`` and ``success.png``
    (mean success over steps per method, shaded min-max over seeds) go to ``out_dir``. Seeds
    run one after another, every method within a seed (the runs are independent, so the order
    changes no figure; a comparison cut short has whole seeds). ``announce`` gets a line per run.
    """
    seeds = tuple(seeds) if seeds else (config.seed,)
    root = Path(config.out_dir.format(name="compare", method="compare"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for seed in seeds:
        for name in names:
            run_config = replace(config, methods=[], seed=seed, out_dir=str(root / name / f"seed{seed}"),
                                 **METHOD_PRESETS[name])
            runs[name].append(train(run_config))
            if announce:
                announce(f"{name} seed {seed}: success {runs[name][-1]['initial_success']} -> "
                         f"{runs[name][-1]['final_success']} ({runs[name][-1]['seconds']} s)")
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
    values = {RENAMED.get(k, k): v for k, v in values.items()}
    known = {f.name for f in fields(MopdConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config {file}: unknown field(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return values


def _parser() -> Any:
    """One ``--flag`` per `MopdConfig` field (help, default, choices) and ``--config FILE``."""
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
