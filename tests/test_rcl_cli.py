"""``latentwire rcl train``, ``latentwire bench rcl --quick``, the bus example and the task loaders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latentwire.agents.rcl.cli import load_config, main
from latentwire.agents.rcl.envs import load_appworld, load_rewardbench2
from latentwire.agents.rcl.errors import EnvironmentDataError
from latentwire.benchmarks import rcl as bench_rcl

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
preset = "rcl"
[environment]
kind = "simulated"
sim = { noise = 0.1, seed = 2 }
[optimizer]
iterations = ITER
group_size = 2
credit_assignment = true
[models.mutator]
p_correct = 0.4
"""


def test_train_writes_every_output_and_resumes(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace("ITER", "4"))
    out = tmp_path / "out"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert all(r["environment"] == "simulated-rules (simulated)" for r in records)
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "best_playbook.md").read_text()
    assert md.startswith("# Best playbook: simulated-rules (simulated), validation success")
    best = json.loads((out / "best_playbook.json").read_text())
    assert best["format"] == "latentwire.rcl.playbook/1"
    cfg.write_text(CONFIG.replace("ITER", "6"))  # go further from the checkpoint
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--no-progress"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3, 4, 5]
    cfg.write_text(CONFIG.replace("ITER", "8").replace("group_size = 2", "group_size = 3"))
    assert main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--no-progress"]) == 2


@pytest.mark.parametrize("text, suffix, message", [
    ('{"optimizer": {"batchsize": 3}}', ".json", "unknown field(s) ['batchsize']"),
    ('{"optimizer": {"group_size": 0}}', ".json", "invalid group_size=0"),
    ('{"models": {"actor": {"kind": "gpt"}}}', ".json", "models.actor.kind"),
    ('preset = "adam"', ".toml", "preset"),
    ("[environment", ".toml", "does not parse"),
])
def test_bad_configs_name_the_field(tmp_path: Path, text: str, suffix: str, message: str, capsys) -> None:
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_a_remote_model_needs_its_url(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"models": {"reflector": {"kind": "openai", "model": "m"}}}))
    assert load_config(cfg).models.reflector.base_url is None
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 2


def test_bench_quick_reports_every_configuration(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rcl.json"
    assert bench_rcl.run(str(out), quick=True, argv=["--seeds", "2", "--iterations", "4"]) == 0
    report = json.loads(out.read_text())
    assert report["simulated"] is True and "simulated" in report["environment"]
    expected = {"no_learning", "ace_like", "ace_like-refine", "gepa_like", "rcl", "rcl+all",
                *(f"rcl+{p}" for p in [*bench_rcl.PRIMITIVES, *bench_rcl.PAIRS])}
    configs = report["summary"]["configurations"]
    assert set(configs) == expected
    regimes = list(bench_rcl.QUICK_REGIMES)
    for by_regime in configs.values():
        assert list(by_regime) == regimes
        for entry in by_regime.values():
            assert {"final_val", "best_val", "best_test", "iters_to_90", "llm_calls"} <= set(entry)
    assert configs["no_learning"]["base"]["llm_calls"] == 8 * 4  # the actor only, no reflection
    effects = report["summary"]["effects"]
    assert {*bench_rcl.PRIMITIVES, "all"} <= set(effects)
    for by_regime in effects.values():
        for e in by_regime.values():
            assert e["n_seeds"] == 2 and e["ci95"][0] <= e["mean"] <= e["ci95"][1]
            assert e["excludes_zero"] == (e["ci95"][0] > 0 or e["ci95"][1] < 0)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "RCL optimiser on the simulated environment" in capsys.readouterr().out


def test_bench_intervals_and_bad_settings() -> None:
    e = bench_rcl.paired_effect([0.6, 0.7, 0.65], [0.4, 0.4, 0.4])
    assert e["mean"] == pytest.approx(0.25) and e["n_seeds"] == 3 and e["excludes_zero"]
    assert e["ci95"] == pytest.approx([0.25 - 4.303 * 0.05 / 3 ** 0.5, 0.25 + 4.303 * 0.05 / 3 ** 0.5])
    inside = bench_rcl.paired_effect([0.5, 0.7, 0.6], [0.4, 0.4, 0.4])
    assert not inside["excludes_zero"] and inside["ci95"][0] < 0 < inside["ci95"][1]
    assert bench_rcl.paired_effect([0.5], [0.4])["ci95"] is None
    assert bench_rcl.t95(200) == pytest.approx(1.972, abs=1e-3)
    assert bench_rcl.run(None, quick=True, argv=["--set", "bogus=1"]) == 2
    assert bench_rcl.run(None, quick=True, argv=["--set", "n_test=x"]) == 2


def test_bus_example_runs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "rcl_on_bus.py")], cwd=ROOT,
                            capture_output=True, text=True, timeout=90)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "environment: simulated-rules (simulated)" in out
    adopted = re.findall(r"worker\d: 40 tasks, adopted versions \[([\d, ]+)\]", out)
    assert len(adopted) == 3 and all(len(a.split(",")) > 1 for a in adopted)  # versions arrived mid-run
    before, after = map(float, re.search(r"playbook: ([\d.]+) before, ([\d.]+) after", out).groups())
    assert after > before


def test_rewardbench2_loader(tmp_path: Path) -> None:
    path = tmp_path / "rb.jsonl"
    rows = [{"id": f"q{i}", "prompt": "Which is right?", "chosen": ["yes"], "rejected": ["no", "maybe"]}
            for i in range(5)]
    path.write_text("\n".join(map(json.dumps, rows)))
    env = load_rewardbench2(path, val_fraction=0.4)
    assert len(env.train) == 3 and len(env.val) == 2
    task = env.train[0]
    letter = next(iter(task.answer))
    assert f"({letter}) yes" in task.prompt
    assert env.verify(task, f"ANSWER: {letter}").success
    assert not env.verify(task, "I pick the first").success
    path.write_text('{"id": 1, "prompt": "p", "chosen": ["a"]}')
    with pytest.raises(EnvironmentDataError, match="row 0: missing field 'rejected'"):
        load_rewardbench2(path)


def test_appworld_loader(tmp_path: Path) -> None:
    for split, ids in (("train", ["a1", "a2"]), ("dev", ["b1"])):
        (tmp_path / "datasets").mkdir(exist_ok=True)
        (tmp_path / "datasets" / f"{split}.txt").write_text("\n".join(ids))
        for task_id in ids:
            folder = tmp_path / "tasks" / task_id / "ground_truth"
            folder.mkdir(parents=True)
            specs = {"instruction": f"How many songs in {task_id}?", "supervisor": "Joe"}
            (folder.parent / "specs.json").write_text(json.dumps(specs))
            (folder / "answer.json").write_text("12")
    env = load_appworld(tmp_path)
    assert [t.id for t in env.train] == ["a1", "a2"] and "You act for Joe" in env.val[0].prompt
    assert env.verify(env.val[0], "Counting...\nANSWER: 12").success
    (tmp_path / "tasks" / "b1" / "specs.json").write_text("{}")
    with pytest.raises(EnvironmentDataError, match="needs a string 'instruction'"):
        load_appworld(tmp_path)
