"""``latentwire bench mopd``: GRPO, OPD, MOPD-positive and MOPD-contrastive in one harness.

On the tinyworld ``sort`` task (length 6) with the shipped tiny student
(`latentwire.training.mopd.student`, pre-trained on the task and on the peer re-prompt format
until its greedy success lies in a band where on-policy training has something to learn),
measured in this process:

1. **peer check**: does the teacher (the initial student, re-prompted) with a correct solution
   in its context really score correct tokens higher? Mean log-probability per token of the gold
   answers and of corrupted answers, with and without a success in context.
2. **teacher signal**: groups of rollouts of the initial student on held-out questions; per
   context mode (none = OPD, positive, contrastive, random peer, unrelated prompt) the AUROC and
   Spearman correlation of the teacher's score of each rollout against its verifier reward
   (`latentwire.training.mopd.analysis`).
3. **training**: each method for the same number of steps, prompts and rollouts per step, for
   several seeds (`latentwire.training.mopd.job.compare`); greedy success on held-out questions
   over steps; final success with its spread over seeds; ratios against OPD and GRPO.

Run::

    latentwire bench mopd --json bench-results/mopd.json     # full run (figures: docs/mopd.md)
    latentwire bench mopd --quick                            # smoke run
    latentwire bench mopd --seeds 5 --steps 60               # see --help for every option

The JSON's ``summary`` has ``final_success`` (mean over seeds) per method (``grpo``, ``opd``,
``mopd_positive``, ``mopd_contrastive``), ``final_success_std``/``_min``/``_max``, and
``teacher_auroc`` per context mode; the PNG of success over steps lands next to the JSON (or in
``--out``).
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._report import bench_parser

METHODS = ("grpo", "opd", "mopd_positive", "mopd_contrastive")
SIGNAL_MODES = ("none", "positive", "contrastive", "random_peer", "unrelated")


@dataclass
class MopdBenchConfig:
    """Sizes of one benchmark run (``quick`` shrinks them)."""

    seeds: int = 3
    steps: int = 40
    group_size: int = 8
    prompts_per_step: int = 8
    eval_n: int = 128
    eval_every: int = 10
    signal_prompts: int = 48
    check_n: int = 128
    lr: float = 3e-4
    temperature: float = 1.0
    loss: str = "sampled_rkl"
    quick: bool = False

    @classmethod
    def quick_run(cls) -> MopdBenchConfig:
        """A smoke-sized run: few seeds, steps and rollouts, to check the whole path runs."""
        return cls(seeds=2, steps=4, group_size=6, prompts_per_step=4, eval_n=48, eval_every=2,
                   signal_prompts=12, check_n=32, quick=True)


def _parse(argv: list[str], quick: bool) -> tuple[MopdBenchConfig, str | None]:
    cfg = MopdBenchConfig.quick_run() if quick else MopdBenchConfig()
    parser = bench_parser("mopd", "GRPO vs OPD vs MOPD on tinyworld sort")
    for name, value in asdict(cfg).items():
        if name == "quick":
            continue
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--out", default=None, help="keep the training runs here (default: a temporary folder)")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    for name, value in args.items():
        if isinstance(value, (int, float)) and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
        setattr(cfg, name, value)
    return cfg, out


def _mean_logp(model: Any, tokenizer: Any, prompts: list[str], answers: list[str]) -> float:
    from latentwire.training.mopd.analysis import score_completions

    ids = [tokenizer.encode(a, add_special_tokens=False) + [tokenizer.eos_token_id] for a in answers]
    return statistics.fmean(score_completions(model, tokenizer, prompts, ids))


def peer_check(model: Any, tokenizer: Any, problems: list[tuple[str, str]], seed: int = 0) -> dict[str, float]:
    """Mean per-token log-probability of gold and corrupted answers, with and without a success
    (the gold answer, as a peer would write it) in the teacher's context."""
    from latentwire.training.mopd.peers import render_context
    from latentwire.training.mopd.student import corrupt

    rng = random.Random(seed)
    questions = [q for q, _ in problems]
    gold = [a for _, a in problems]
    wrong = [corrupt(a, rng) for a in gold]
    with_success = [render_context(q, [a], []) for q, a in problems]
    with_failure = [render_context(q, [], [w]) for q, w in zip(questions, wrong)]
    return {
        "gold_no_context": _mean_logp(model, tokenizer, questions, gold),
        "gold_success_in_context": _mean_logp(model, tokenizer, with_success, gold),
        "wrong_no_context": _mean_logp(model, tokenizer, questions, wrong),
        "wrong_success_in_context": _mean_logp(model, tokenizer, with_success, wrong),
        "wrong_itself_marked_failed": _mean_logp(model, tokenizer, with_failure, wrong),
    }


def signal(model: Any, tokenizer: Any, problems: list[tuple[str, str]], cfg: MopdBenchConfig) -> dict[str, Any]:
    """Teacher-signal rows of the initial student (its own EMA teacher at step 0)."""
    import torch
    from latentwire.training.mopd.analysis import teacher_signal
    from latentwire.training.mopd.peers import PeerConfig
    from latentwire.training.mopd.rollouts import SamplingConfig, encode_prompt, sample_groups
    from latentwire.training.mopd.verifiers import TinyworldVerifier

    torch.manual_seed(1234)
    questions = [q for q, _ in problems]
    rollouts = sample_groups(model, tokenizer, [encode_prompt(tokenizer, q) for q in questions], cfg.group_size,
                             SamplingConfig(temperature=cfg.temperature, max_new_tokens=12))
    verify = TinyworldVerifier()
    rewards = [verify(t, problems[i // cfg.group_size][1]).reward for i, t in enumerate(rollouts.texts)]
    rows = teacher_signal(model, tokenizer, questions, rollouts, rewards, SIGNAL_MODES, PeerConfig(),
                          temperature=cfg.temperature)
    return {"rollouts": len(rewards), "success_rate": statistics.fmean(rewards), "rows": rows}


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values),
            "min": min(values), "max": max(values)}


def summarize(training: dict[str, Any], signal_result: dict[str, Any], check: dict[str, float]) -> dict[str, Any]:
    """The headline numbers: final success per method with its spread, AUROC per mode, goals."""
    spreads = {name: _spread(m["final_success"]) for name, m in training["methods"].items()}
    auroc = {row["mode"]: row["auroc"] for row in signal_result["rows"]}
    contrastive = spreads["mopd_contrastive"]["mean"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "final_success": {k: round(v["mean"], 4) for k, v in spreads.items()},
        "final_success_std": {k: round(v["std"], 4) for k, v in spreads.items()},
        "final_success_min": {k: v["min"] for k, v in spreads.items()},
        "final_success_max": {k: v["max"] for k, v in spreads.items()},
        "initial_success": statistics.fmean(training["methods"]["grpo"]["initial_success"]),
        "teacher_auroc": auroc,
        "teacher_spearman": {row["mode"]: row["spearman"] for row in signal_result["rows"]},
        "contrastive_vs_opd": ratio(contrastive, spreads["opd"]["mean"]),
        "contrastive_vs_grpo": ratio(contrastive, spreads["grpo"]["mean"]),
        "goal_contrastive_ge_opd": contrastive >= spreads["opd"]["mean"],
        "goal_contrastive_ge_grpo": contrastive >= spreads["grpo"]["mean"],
        "goal_mixed_auroc_gt_positive": (auroc.get("contrastive") is not None and auroc.get("positive") is not None
                                         and auroc["contrastive"] > auroc["positive"]),
        "success_in_context_raises_gold": check["gold_success_in_context"] > check["gold_no_context"],
    }


def render(report: dict[str, Any]) -> str:
    """The human-readable tables of a report."""
    from latentwire.training.mopd.analysis import format_table

    s, cfg, check = report["summary"], report["config"], report["peer_check"]
    header = (f"latentwire bench mopd ({'quick' if cfg['quick'] else 'full'}): tinyworld sort-6, "
              f"{cfg['seeds']} seed(s), {cfg['steps']} steps x {cfg['prompts_per_step']} prompts x "
              f"{cfg['group_size']} rollouts, eval on {cfg['eval_n']} held-out questions (greedy)")
    columns = f"{'method':<18}{'final success':>14}{'std':>7}{'min':>7}{'max':>7}{'vs OPD':>8}{'vs GRPO':>9}"
    lines = [header, "", columns]
    final = s["final_success"]
    for name in METHODS:
        mean = final[name]
        vs_opd = mean / final["opd"] if final["opd"] else float("nan")
        vs_grpo = mean / final["grpo"] if final["grpo"] else float("nan")
        lines.append(f"{name:<18}{mean:>14.3f}{s['final_success_std'][name]:>7.3f}"
                     f"{s['final_success_min'][name]:>7.3f}{s['final_success_max'][name]:>7.3f}"
                     f"{vs_opd:>7.2f}x{vs_grpo:>8.2f}x")
    lines.append(f"(initial success {s['initial_success']:.3f})")
    sig = report["signal"]
    lines += ["", (f"teacher signal: initial student as teacher, {sig['rollouts']} rollouts (sampled success "
                   f"{sig['success_rate']:.2f}); score = mean teacher log-prob per token"),
              format_table(sig["rows"]), "",
              f"{'peer check (mean log-prob per token)':<40}{'no context':>12}{'success in context':>20}"]
    for label, key in (("gold answers", "gold"), ("corrupted answers", "wrong")):
        lines.append(f"  {label:<38}{check[key + '_no_context']:>12.3f}{check[key + '_success_in_context']:>20.3f}")
    lines += [f"  {'corrupted, itself marked as failed':<38}{check['wrong_itself_marked_failed']:>12.3f}", ""]
    for goal, text in (("goal_contrastive_ge_opd", "MOPD-contrastive >= OPD"),
                       ("goal_contrastive_ge_grpo", "MOPD-contrastive >= GRPO"),
                       ("goal_mixed_auroc_gt_positive", "contrastive AUROC > positive AUROC"),
                       ("success_in_context_raises_gold", "a success in context raises the gold answer's score")):
        lines.append(f"{text}: {'yes' if s[goal] else 'NO'}")
    return "\n".join(lines)


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the MOPD benchmark, print its tables, write JSON (and the PNG beside it) if asked.

    Returns 0 when every run completed (goals not reached are reported, not failed), 2 on bad options.
    """
    try:
        cfg, out = _parse(list(argv or []), quick)
    except SystemExit as exc:
        return int(exc.code or 0)
    import torch
    from latentwire.training.mopd.job import MopdConfig, compare
    from latentwire.training.mopd.student import SHIPPED_STUDENT, load_student
    from latentwire.tinyworld.tasks import make_task
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per checkpoint load/save would bury the tables
    started = time.time()
    model, tokenizer, meta = load_student(SHIPPED_STUDENT)
    task = make_task(meta.get("task", "sort"), meta.get("length", 6))
    held_out = [(ep.prompt(ep.receiver.name), ep.answer) for ep in task.episodes(cfg.check_n, seed=777)]
    check = peer_check(model, tokenizer, held_out)
    signal_result = signal(model, tokenizer, held_out[:cfg.signal_prompts], cfg)
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="lw-bench-mopd-"))
    try:
        base = MopdConfig(task=task.name, length=meta.get("length", 6), steps=cfg.steps, group_size=cfg.group_size,
                          prompts_per_step=cfg.prompts_per_step, eval_n=cfg.eval_n, eval_every=cfg.eval_every,
                          checkpoint_every=0, lr=cfg.lr, temperature=cfg.temperature, loss=cfg.loss, resume=False,
                          progress=False, out_dir=str(folder / "{name}"))
        training = compare(base, METHODS, seeds=tuple(range(cfg.seeds)))
        png = folder / "compare" / "success.png"
        report = {"benchmark": "mopd", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                  "duration_s": round(time.time() - started, 1),
                  "machine": {"python": platform.python_version(), "torch": torch.__version__,
                              "threads": torch.get_num_threads()},
                  "config": asdict(cfg), "student": {"path": str(SHIPPED_STUDENT), **meta},
                  "summary": summarize(training, signal_result, check), "peer_check": check,
                  "signal": signal_result,
                  "training": {name: {"final_success": m["final_success"], "histories": m["histories"]}
                               for name, m in training["methods"].items()}}
        print(render(report))
        if json_path:
            path = Path(json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, path.with_suffix(".png"))
            report["png"] = str(path.with_suffix(".png"))
            path.write_text(json.dumps(report, indent=2) + "\n")
            print(f"\nwrote {path} and {report['png']}")
        elif out:
            print(f"\nsuccess over steps: {png}")
    finally:
        if not out:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(argv=sys.argv[1:]))
