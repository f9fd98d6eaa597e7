"""The MOPD job: config checks at start, resume after a crash, config files, rollouts, teacher,
the shipped student's peer use, and (slow) a 2-process accelerate run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from latentwire.agents.errors import CheckpointError
from latentwire.errors import ConfigError
from latentwire.training.mopd import job
from latentwire.training.mopd.job import MopdConfig, main, train
from latentwire.training.mopd.student import SHIPPED_STUDENT

# A few seconds per run: 2 prompts x 4 rollouts per step, 16 eval questions.
TINY = {"prompts_per_step": 2, "group_size": 4, "eval_n": 16, "eval_every": 2, "max_new_tokens": 8,
        "progress": False}


def tiny(tmp_path: Path, **overrides) -> MopdConfig:
    return MopdConfig(**{**TINY, "steps": 4, "checkpoint_every": 2, "out_dir": str(tmp_path / "{name}"), **overrides})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"context": "gossip"}, "unknown context mode 'gossip'; choose one of none, positive, contrastive"),
    ({"method": "ppo"}, "unknown method 'ppo'"),
    ({"context": "contrastive", "group_size": 1}, "context 'contrastive' needs peers from the same group: group_size"),
    ({"method": "grpo", "group_size": 1}, "'grpo' needs group_size >= 2"),
    ({"verifier": ""}, "no verifier configured; set verifier to one of math, multiple_choice, code"),
    ({"verifier": "judge"}, "unknown verifier 'judge'"),
    ({"loss": "kl"}, "unknown loss 'kl'"),
    ({"teacher": "separate"}, "teacher 'separate' needs teacher_path"),
    ({"method": "mopd", "context": "none"}, "is OPD"),
    ({"data": "/nonexistent/problems.jsonl"}, "data file '/nonexistent/problems.jsonl' does not exist"),
    ({"methods": ("grpo", "dpo")}, "unknown method preset 'dpo'"),
    ({"method": "mopd", "context": "privileged"}, "is OPD (no peers): set method to 'opd'"),
    ({"failure_signal": "ignore"}, "unknown failure_signal 'ignore'; choose one of context, lower_only"),
    ({"context": "positive", "failure_signal": "lower_only"},
     "needs method 'mopd' with context 'contrastive'"),
    ({"failure_signal": "lower_only", "loss": "jsd"}, "set loss to 'sampled_rkl'"),
])
def test_bad_config_fails_at_start(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MopdConfig(**overrides)


def test_config_file_unknown_field_and_flags_win(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "grpo", "group_sise": 4}))
    assert main(["--config", str(bad)]) == 2
    assert "unknown field(s) group_sise" in capsys.readouterr().err
    toml = tmp_path / "run.toml"
    toml.write_text('method = "mopd"\ncontext = "bogus"\n')
    assert main(["--config", str(toml)]) == 2
    assert "latentwire train mopd: unknown context mode 'bogus'" in capsys.readouterr().err
    assert main(["--group-size", "1"]) == 2  # the default context is contrastive: it needs peers
    assert "needs peers from the same group" in capsys.readouterr().err
    good = tmp_path / "run.json"
    good.write_text(json.dumps({**TINY, "method": "grpo", "steps": 50, "save_every": 0,
                                "out_dir": str(tmp_path / "runs" / "{name}")}))
    report = main(["--config", str(good), "--steps", "1"])
    assert report["name"] == "grpo" and report["config"]["steps"] == 1
    assert [h["step"] for h in report["history"]] == [0, 1]
    out = tmp_path / "runs" / "grpo"
    assert (out / "success.png").stat().st_size > 0 and (out / "student" / "model.safetensors").is_file()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "reward", "ratio"} <= set(lines[1]) and lines[-1]["eval_success"] == report["final_success"]


def _student_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "student" / "model.safetensors"))


def test_crash_mid_run_resumes_from_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = train(tiny(tmp_path / "a"))
    calls = {"n": 0}
    real_step_loss = job._step_loss

    def crash_at_step_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_step_loss(*args, **kwargs)

    monkeypatch.setattr(job, "_step_loss", crash_at_step_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny(tmp_path / "b"))
    out = tmp_path / "b" / "mopd_contrastive"
    assert json.loads((out / (out / "latest").read_text().strip() / "loop_state.json").read_text())["step"] == 2
    assert not (out / "report.json").exists()
    monkeypatch.setattr(job, "_step_loss", real_step_loss)
    resumed = train(tiny(tmp_path / "b"))
    assert resumed["history"] == reference["history"]
    a, b = _student_weights(tmp_path / "a" / "mopd_contrastive"), _student_weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) == 1  # the crashed run's lines were not kept twice
    with pytest.raises(ConfigError, match="other settings \\(lr\\)"):
        train(tiny(tmp_path / "b", lr=1e-2))


def test_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    train(tiny(tmp_path, steps=2, eval_every=0))
    folder = tmp_path / "mopd_contrastive" / "checkpoint-2"
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load MOPD checkpoint"):
        train(tiny(tmp_path, steps=3, eval_every=0))


@pytest.mark.parametrize("overrides", [
    {"method": "opd", "loss": "forward_kl", "loss_top_k": 8},
    {"method": "mopd", "context": "positive", "loss": "jsd", "teacher": "frozen"},
    {"method": "mopd", "context": "unrelated", "loss": "reverse_kl", "epochs_per_batch": 2},
    {"method": "sft"},
    {"method": "mopd", "context": "random_peer", "teacher": "separate", "teacher_path": str(SHIPPED_STUDENT)},
    {"method": "grpo", "student": str(Path(__file__).parents[1] / "tinyworld/checkpoints/gemma3")},
])
def test_every_method_and_loss_trains(tmp_path: Path, overrides: dict) -> None:
    report = train(tiny(tmp_path, steps=1, checkpoint_every=0, **overrides))
    assert report["final_success"] is not None
    lines = [json.loads(line) for line in (tmp_path / report["name"] / "metrics.jsonl").read_text().splitlines()]
    step = next(line for line in lines if "loss" in line)
    if overrides["method"] in ("mopd", "opd"):
        assert 0.0 <= step["masked_fraction"] <= 1.0


def test_informative_opd_presets_and_their_names() -> None:
    from latentwire.training.mopd.student import SHIPPED_TEACHER

    named = {name: MopdConfig(**preset) for name, preset in job.METHOD_PRESETS.items()}
    assert all(config.name == name for name, config in named.items())
    assert named["opd_privileged"].peer_config().mode == "privileged"
    assert named["opd"].peer_config().mode == "none" and named["opd_separate"].peer_config().mode == "none"
    assert Path(named["opd_separate"].teacher_path) == SHIPPED_TEACHER
    assert (SHIPPED_TEACHER / "model.safetensors").is_file()


@pytest.mark.parametrize("preset", ["opd_privileged", "mopd_contrastive_lower_only"])
def test_informative_opd_and_lower_only_train(tmp_path: Path, preset: str) -> None:
    report = train(tiny(tmp_path, steps=1, checkpoint_every=0, **job.METHOD_PRESETS[preset]))
    lines = [json.loads(line) for line in (tmp_path / preset / "metrics.jsonl").read_text().splitlines()]
    step = next(line for line in lines if "loss" in line)
    assert report["name"] == preset and 0.0 <= step["masked_fraction"] <= 1.0
    if preset == "opd_privileged":  # the gold answer is always there: nothing masked, a nonzero signal
        assert step["masked_fraction"] == 0.0 and step["teacher_advantage"] != 0.0


def test_jsonl_problems_with_the_math_verifier(tmp_path: Path) -> None:
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "gold": a + b}) + "\n" for a in range(3) for b in range(3)))
    report = train(tiny(tmp_path, steps=1, checkpoint_every=0, method="grpo", verifier="math", data=str(data)))
    assert report["eval_n"] == 9
    (tmp_path / "broken.jsonl").write_text('{"prompt": "1+1="}\n')
    with pytest.raises(ConfigError, match="broken.jsonl:1: expected a JSON object with 'prompt' and 'gold'"):
        train(tiny(tmp_path, steps=1, method="grpo", verifier="math", data=str(tmp_path / "broken.jsonl")))


def test_rollouts_keep_logprobs_that_match_a_fresh_forward() -> None:
    from latentwire.training.mopd.rollouts import (
        SamplingConfig,
        completion_logprobs,
        encode_prompt,
        sample_groups,
    )
    from latentwire.training.mopd.student import load_student

    model, tokenizer, _ = load_student()
    torch.manual_seed(0)
    prompts = [encode_prompt(tokenizer, "sender: qwerty\nsorted?"), encode_prompt(tokenizer, "sender: abcabc\nsorted?")]
    batch = sample_groups(model, tokenizer, prompts, 3, SamplingConfig(max_new_tokens=8))
    assert len(batch.completion_ids) == 6 and batch.old_logprobs.shape == batch.mask.shape
    assert batch.rollout_prompt_ids()[3] == prompts[1]
    with torch.no_grad():
        again, mask, _ = completion_logprobs(model, batch.rollout_prompt_ids(), batch.completion_ids,
                                             tokenizer.pad_token_id)
    assert torch.allclose(again, batch.old_logprobs, atol=1e-5) and torch.equal(mask, batch.mask)
    assert all(len(c) <= 8 for c in batch.completion_ids)
    assert (batch.old_logprobs[batch.mask] < 0).all()


def test_rollouts_from_a_vlm_family_driven_by_text() -> None:
    from latentwire.training.mopd.rollouts import SamplingConfig, encode_prompt, sample_groups
    from latentwire.tinyworld.checkpoints import load_pretrained

    model, tokenizer = load_pretrained("qwen2_vl")
    prompts = [encode_prompt(tokenizer, "sender: qwerty\nsorted?"), encode_prompt(tokenizer, "hi?")]  # lengths differ
    batch = sample_groups(model, tokenizer, prompts, 2, SamplingConfig(max_new_tokens=6))
    assert len(batch.texts) == 4 and batch.old_logprobs.shape[0] == 4
    assert (batch.old_logprobs[batch.mask] < 0).all()


def test_ema_teacher_follows_the_student_at_its_rate() -> None:
    from latentwire.training.mopd.teacher import Teacher

    student = torch.nn.Linear(2, 2)
    ema, frozen = Teacher("ema", student, rate=0.25), Teacher("frozen", student)
    before = student.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(4.0)
    ema.update(student)
    frozen.update(student)
    assert torch.allclose(ema.model.weight, before + 1.0)  # a quarter of the way
    assert torch.equal(frozen.model.weight, before)
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ConfigError, match="EMA rate"):
        Teacher("ema", student, rate=1.5)


def test_shipped_student_uses_a_success_in_context() -> None:
    from latentwire.benchmarks.mopd import peer_check
    from latentwire.training.mopd.student import load_student
    from latentwire.tinyworld.tasks import make_task

    model, tokenizer, meta = load_student()
    assert meta["task"] == "sort" and 0.2 <= meta["plain_success"] <= 0.6
    task = make_task(meta["task"], meta["length"])
    check = peer_check(model, tokenizer, [(ep.prompt(ep.receiver.name), ep.answer) for ep in task.episodes(32, seed=9)])
    assert check["gold_success_in_context"] > check["gold_no_context"]
    assert check["wrong_success_in_context"] < check["gold_success_in_context"]


@pytest.mark.slow
def test_two_process_accelerate_run_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --multi_gpu is accelerate's torchrun-style launcher; without a GPU the job runs on CPU + gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "latentwire.training.mopd.job", "--steps", "3", "--save-every", "2", "--eval-every", "0",
               "--prompts-per-step", "2", "--group-size", "4", "--eval-n", "8", "--max-new-tokens", "8",
               "--no-progress", "--out-dir", str(tmp_path / "{name}")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "mopd_contrastive" / "report.json").read_text())
    assert report["processes"] == 2
    assert [h["step"] for h in report["history"]] == [0, 3]
