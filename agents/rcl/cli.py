"""``latentwire rcl train --config FILE``: run the RCL optimiser from a JSON or TOML config.

Example config (TOML; JSON has the same shape)::

    preset = "rcl"                    # rcl | ace | gepa
    out_dir = "runs/rcl-sim"
    [environment]
    kind = "simulated"                # simulated | rewardbench2 | appworld
    sim = { noise = 0.1, seed = 0 }   # SimConfig fields (simulated only); path = "..." otherwise
    [optimizer]                       # OptimizerConfig fields
    iterations = 30
    group_size = 4
    credit_assignment = true
    [models.actor]
    kind = "simulated"                # simulated | openai | transformers
    [models.reflector]
    kind = "openai"
    base_url = "http://127.0.0.1:8000/v1"
    model = "Qwen/Qwen2.5-7B-Instruct"
    [models.mutator]
    kind = "simulated"
    p_correct = 0.4                   # a weaker simulated model for this role
    [models.state]                    # optional: keeps the ledger's hypotheses (optimizer_state)
    kind = "simulated"

Writes into ``out_dir``: ``metrics.jsonl`` (one record per iteration), ``checkpoint.json``
(after every iteration; ``--resume`` continues from it), ``learning_curve.png``,
``best_playbook.json`` and ``best_playbook.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .backends import LLMBackend, OpenAIBackend, TransformersBackend
from .envs import Environment, load_appworld, load_rewardbench2
from .errors import RCLConfigError
from .optimizer import ROLES, Models, Optimizer, OptimizerConfig, ace_like, gepa_like
from .simulated import SimConfig, SimulatedEnvironment, SimulatedModel

PRESETS = {"rcl": OptimizerConfig, "ace": ace_like, "gepa": gepa_like}


class BackendSpec(BaseModel):
    """One role's model."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["simulated", "openai", "transformers"] = "simulated"
    base_url: str | None = None  # openai
    model: str | None = None  # openai, transformers
    api_key_env: str | None = None  # openai: name of the environment variable holding the key
    timeout: float = 60.0
    retries: int = 2
    max_concurrency: int = 4
    temperature: float = 0.7
    max_tokens: int = 1024
    p_correct: float | None = None  # simulated: this role's accuracy (strong/weak allocation)


class EnvSpec(BaseModel):
    """The environment."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["simulated", "rewardbench2", "appworld"] = "simulated"
    path: str | None = None
    sim: dict[str, Any] = {}
    val_fraction: float = 0.3
    seed: int = 0


class ModelsSpec(BaseModel):
    """A model per role."""

    model_config = ConfigDict(extra="forbid")
    actor: BackendSpec = BackendSpec()
    reflector: BackendSpec = BackendSpec()
    mutator: BackendSpec = BackendSpec()
    state: BackendSpec | None = None  # keeps the ledger's hypotheses (optimizer_state); None: no model


class TrainConfig(BaseModel):
    """The whole ``rcl train`` config."""

    model_config = ConfigDict(extra="forbid")
    preset: Literal["rcl", "ace", "gepa"] = "rcl"
    out_dir: str = "runs/rcl"
    environment: EnvSpec = EnvSpec()
    optimizer: dict[str, Any] = {}
    models: ModelsSpec = ModelsSpec()

    def optimizer_config(self) -> OptimizerConfig:
        """The preset with this config's overrides; unknown or bad fields raise RCLConfigError."""
        known = {f.name for f in dataclasses.fields(OptimizerConfig)}
        unknown = sorted(set(self.optimizer) - known)
        if unknown:
            raise RCLConfigError(f"optimizer: unknown field(s) {unknown}; known: {sorted(known)}")
        try:
            return PRESETS[self.preset](**self.optimizer)
        except (ValueError, TypeError) as exc:
            raise RCLConfigError(f"optimizer: {exc}") from None


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a JSON or TOML config; RCLConfigError names the file and field."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as exc:
        raise RCLConfigError(f"{path}: {exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RCLConfigError(f"{path}: does not parse: {exc}") from None
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RCLConfigError(f"{path}: {errors}") from None


def build_environment(spec: EnvSpec) -> Environment:
    """The environment a config names."""
    if spec.kind == "simulated":
        try:
            return SimulatedEnvironment(SimConfig(**spec.sim))
        except TypeError as exc:
            raise RCLConfigError(f"environment.sim: {exc}") from None
    if spec.path is None:
        raise RCLConfigError(f"environment.path is required for kind={spec.kind!r}")
    if spec.kind == "rewardbench2":
        return load_rewardbench2(spec.path, val_fraction=spec.val_fraction, seed=spec.seed)
    return load_appworld(spec.path)


def build_backend(spec: BackendSpec, env: Environment, role: str) -> LLMBackend:
    """The backend a role's spec names."""
    if spec.kind == "simulated":
        if not isinstance(env, SimulatedEnvironment):
            raise RCLConfigError(f"models.{role}: a simulated model needs the simulated environment")
        cfg = env.cfg if spec.p_correct is None else dataclasses.replace(env.cfg, p_correct=spec.p_correct)
        return SimulatedModel(env, cfg, label=role)
    if not spec.model:
        raise RCLConfigError(f"models.{role}.model is required for kind={spec.kind!r}")
    if spec.kind == "openai":
        if not spec.base_url:
            raise RCLConfigError(f"models.{role}.base_url is required for kind='openai'")
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        return OpenAIBackend(spec.base_url, spec.model, api_key=key, timeout=spec.timeout,
                             retries=spec.retries,
                             max_concurrency=spec.max_concurrency, temperature=spec.temperature,
                             max_tokens=spec.max_tokens)
    return TransformersBackend(spec.model, max_new_tokens=spec.max_tokens, temperature=spec.temperature)


def plot_curve(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Batch and validation success per iteration, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["iteration"] for h in history], [h["batch_success"] for h in history], label="batch",
            alpha=0.5)
    val = [(h["iteration"], h["val_success"]) for h in history if "val_success" in h]
    ax.plot(*zip(*val), label="validation", lw=2)
    ax.set(xlabel="iteration", ylabel="success rate", ylim=(0, 1), title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def train(cfg: TrainConfig, out_dir: Path, *, resume: bool = False, progress: bool = True) -> Optimizer:
    """Run ``cfg``, writing every output into ``out_dir``; returns the optimiser."""
    from tqdm import tqdm

    env = build_environment(cfg.environment)
    opt_cfg = cfg.optimizer_config()
    roles = {role: spec for role in ROLES if (spec := getattr(cfg.models, role)) is not None}
    backends = {role: build_backend(spec, env, role) for role, spec in roles.items()}
    opt = Optimizer(env, Models(**backends), opt_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.json"
    if resume:
        if not ckpt.is_file():
            raise RCLConfigError(f"--resume: no checkpoint at {ckpt}")
        opt.restore(json.loads(ckpt.read_text()))
    mode = "a" if resume else "w"
    try:
        with open(out_dir / "metrics.jsonl", mode) as metrics, \
                tqdm(total=opt_cfg.iterations, initial=opt.iteration, desc=f"rcl {env.label}",
                     disable=not progress) as bar:
            def on_step(record: dict[str, Any]) -> None:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()  # a run can be followed, and a crash keeps its history
                tmp = ckpt.with_suffix(".tmp")
                tmp.write_text(json.dumps(opt.checkpoint()))
                tmp.replace(ckpt)  # a crash mid-write leaves the previous checkpoint
                bar.set_postfix(val=record.get("val_success"), entries=record["entries"])
                bar.update()

            best = await opt.run(on_step)
    finally:
        for b in {id(b): b for b in backends.values()}.values():
            await b.aclose()
    best.save(out_dir / "best_playbook.json")
    (out_dir / "best_playbook.md").write_text(
        best.to_markdown(f"Best playbook: {env.label}, validation success {opt.best_val:.3f}"))
    if opt.history:
        plot_curve(opt.history, out_dir / "learning_curve.png", f"RCL ({cfg.preset}) on {env.label}")
    return opt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``latentwire rcl``."""
    parser = argparse.ArgumentParser(prog="latentwire rcl", description="Reflective context learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="run the optimiser from a config file")
    tr.add_argument("--config", required=True, help="JSON or TOML config (see `latentwire.agents.rcl.cli`)")
    tr.add_argument("--out", default=None, help="output folder (default: the config's out_dir)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.json")
    tr.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        out = Path(args.out or cfg.out_dir)
        opt = asyncio.run(train(cfg, out, resume=args.resume, progress=not args.no_progress))
    except RCLConfigError as exc:
        print(f"latentwire rcl: {exc}", file=sys.stderr)
        return 2
    print(f"best validation success {opt.best_val:.3f} ({len(opt.best)} entries); outputs in {out}")
    return 0
