"""The training loop every job runs on (`latentwire.training.loop`), with a toy job: resume,
non-finite steps, refused checkpoints, evaluation modes, several updates per step, early stop
and the flags made from a config's fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from latentwire.errors import ConfigError  # noqa: E402
from latentwire.training.loop import TrainConfig, TrainJob, TrainLoop, config_parser, default  # noqa: E402


@dataclass
class ToyConfig(TrainConfig):
    """A regression with dropout (so the global RNG matters) on batches drawn from (seed, step)."""

    steps: int = default("steps", 8)
    log_every: int = default("log_every", 1)
    eval_every: int = default("eval_every", 0)
    checkpoint_every: int = default("checkpoint_every", 3)
    progress: bool = default("progress", False)
    width: int = field(default=4, metadata={"help": "input width"})
    kind: str = field(default="plain", metadata={"help": "what the toy does", "choices": ["plain", "nan"]})


class ToyJob(TrainJob):
    name = "toy"

    def __init__(self, config: ToyConfig, nan_at: int | None = None, updates: int = 1,
                 crash_at: int | None = None) -> None:
        torch.manual_seed(config.seed)
        self.module = torch.nn.Sequential(torch.nn.Linear(config.width, 8), torch.nn.Dropout(0.5),
                                          torch.nn.Linear(8, 1))
        self.config, self.nan_at, self.updates, self.crash_at = config, nan_at, updates, crash_at
        self.modes: list[bool] = []
        self.evals = self.yielded = 0

    def step(self, step, model):
        if step == self.crash_at:
            raise KeyboardInterrupt("killed")
        g = torch.Generator().manual_seed(1000 * self.config.seed + step)
        x = torch.randn(16, self.config.width, generator=g)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        if step == self.nan_at:
            loss = loss * float("nan")
        if self.updates == 1:
            return loss, {"x_mean": float(x.mean())}
        return self._several(loss, model, x)

    def _several(self, loss, model, x):
        for update in range(self.updates):
            self.yielded += 1
            yield (loss if update == 0 else ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()), {}

    def evaluate(self, step):
        self.modes = [m.training for m in self.module.modules()]
        self.evals += 1
        return {"evaluated": step}

    def state(self):
        return {"evals": self.evals}

    def load_state(self, state):
        self.evals = state["evals"]

    def save(self, out, result):
        if out is not None:
            torch.save(self.module.state_dict(), out / "toy.pt")


def _weights(out: Path) -> dict:
    return torch.load(out / "toy.pt", weights_only=True)


def test_a_killed_run_resumes_to_the_same_weights_and_history(tmp_path):
    whole = TrainLoop(ToyConfig()).run(ToyJob(ToyConfig()), tmp_path / "whole")
    assert whole.step == 8 and whole.finished
    assert not list((tmp_path / "whole").glob("checkpoint-*"))  # finished: the product only

    with pytest.raises(KeyboardInterrupt):  # killed in step 7, after the step-6 checkpoint
        TrainLoop(ToyConfig()).run(ToyJob(ToyConfig(), crash_at=6), tmp_path / "cut")
    cut = tmp_path / "cut"
    assert (cut / "latest").read_text().strip() == "checkpoint-6" and not (cut / "checkpoint-3").exists()
    assert json.loads((cut / "checkpoint-6" / "loop_state.json").read_text())["step"] == 6
    config = ToyConfig(resume=True, steps=8)
    TrainLoop(config).run(ToyJob(config), cut)
    a, b = _weights(tmp_path / "whole"), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)  # dropout's RNG came back with the checkpoint
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8, 8]  # the log lines, then the final evaluation



def test_a_stopped_run_keeps_a_checkpoint_that_only_the_same_settings_resume(tmp_path):
    from latentwire.agents.errors import CheckpointError

    first = ToyConfig(max_seconds=0)
    result = TrainLoop(first).run(ToyJob(first), tmp_path / "run")
    assert not result.finished and result.step == 1  # the time budget ran out after one step
    assert (tmp_path / "run" / "latest").read_text().strip() == "checkpoint-1"
    bad = ToyConfig(resume=True, lr=0.1)
    with pytest.raises(ConfigError, match=r"other settings \(lr\)"):
        TrainLoop(bad).run(ToyJob(bad), tmp_path / "run")
    (tmp_path / "run" / "checkpoint-1" / "model.safetensors").write_bytes(b"not safetensors")
    again = ToyConfig(resume=True)
    with pytest.raises(CheckpointError, match="cannot load checkpoint from .*checkpoint-1"):
        TrainLoop(again).run(ToyJob(again), tmp_path / "run")


def test_a_checkpoint_from_before_a_field_existed_resumes_at_that_fields_default(tmp_path):
    first = ToyConfig(max_seconds=0)
    TrainLoop(first).run(ToyJob(first), tmp_path / "run")
    state_file = tmp_path / "run" / "checkpoint-1" / "loop_state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["kind"]  # as if written before the field was added
    state_file.write_text(json.dumps(state))
    changed = ToyConfig(resume=True, kind="nan")
    with pytest.raises(ConfigError, match=r"other settings \(kind\)"):
        TrainLoop(changed).run(ToyJob(changed), tmp_path / "run")
    again = ToyConfig(resume=True)
    assert TrainLoop(again).run(ToyJob(again), tmp_path / "run").finished


def test_non_finite_losses_skip_the_update_and_are_counted(tmp_path):
    config = ToyConfig(steps=3, checkpoint_every=0)
    job = ToyJob(config, nan_at=1)
    result = TrainLoop(config).run(job, tmp_path / "nan")
    assert result.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in job.module.parameters())
    lines = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in lines if "loss" in r] == [0, 1, 1]


def test_evaluation_runs_in_eval_mode_and_restores_every_mode(tmp_path):
    config = ToyConfig(steps=4, eval_every=2, checkpoint_every=0)
    job = ToyJob(config)
    job.module[1].eval()  # a module the job keeps in eval mode stays so
    result = TrainLoop(config).run(job, None)
    assert job.modes == [False, False, False, False] and job.evals == 2  # at step 2 and at the end
    assert [m.training for m in job.module.modules()] == [True, True, False, True]
    assert result.eval == {"evaluated": 4}


def test_a_step_may_make_several_updates_and_a_job_may_stop(tmp_path):
    config = ToyConfig(steps=6, eval_every=2, checkpoint_every=0)
    job = ToyJob(config, updates=3)
    evaluate = job.evaluate

    def stop_at_four(step):
        job.stop = step >= 4
        return evaluate(step)

    job.evaluate = stop_at_four
    result = TrainLoop(config).run(job, tmp_path / "stop")
    assert result.step == 4 and result.finished and job.yielded == 4 * 3
    assert not list((tmp_path / "stop").glob("checkpoint-*"))


def test_flags_come_from_the_fields_with_help_defaults_choices_and_old_names(capsys):
    parser = config_parser(ToyConfig, "toy", "A toy job.")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert "input width (default: 4)" in " ".join(shown.split())
    assert "{plain,nan}" in shown and "{no,bf16,fp16}" in shown
    config = ToyConfig(**vars(parser.parse_args(["--out", "o", "--save-every", "5", "--kind", "nan",
                                                  "--mixed-precision", "bf16", "--resume"])))
    assert (config.out_dir, config.checkpoint_every, config.kind, config.mixed_precision, config.resume) == (
        "o", 5, "nan", "bf16", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "other"])
    assert "invalid choice: 'other'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="steps must be >= 1, got 0"):
        ToyConfig(steps=0)
