"""``latentwire bench mopd``: GRPO, OPD with informative teachers and MOPD in one harness.

On the tinyworld ``sort`` task (length 6) with the shipped tiny student
(`latentwire.training.mopd.student`, pre-trained on the task and on the peer re-prompt format
until its greedy success lies in a band where on-policy training has something to learn),
measured in this process:

1. **peer check**: does the teacher (the initial student, re-prompted) with a correct solution
   in its context really score correct tokens higher? Mean log-probability per token of the gold
   answers and of corrupted answers, with and without a success in context.
2. **teacher signal** (`latentwire.training.mopd.analysis`): groups of rollouts of the initial
   student on held-out questions, scored by the teacher under every context mode (none = OPD,
   positive, contrastive, random peer, unrelated prompt, privileged = told the gold answer, the
   contrastive prompt without its failure, and the per-token lower of the two) and by the separate
   OPD teacher without context. Per mode over the rollouts it covers (``coverage``), and every
   mode on ONE matched subset (the rollouts that every mode gives a context: at least one other
   success and one failure in the group) with bootstrap intervals over prompts: AUROC of the
   teacher's score against the verifier, and the mean per-token advantage of successful and of
   failed rollouts. The failure effect: the contrastive prompt minus the same prompt without its
   failed peer, for successes and failures.
3. **training**: each method (`METHODS`) for the same steps, prompts and rollouts per step, for
   ``seeds`` seeds (`latentwire.training.mopd.job.compare`); greedy success on held-out questions
   (other questions than training's) over steps; final success and its change from the start
   with 95 % bootstrap intervals over seeds (`benchmarks._stats`), and paired MOPD - OPD
   differences.

Run::

    latentwire bench mopd --json bench-results/mopd.json     # full run (figures: docs/mopd.md)
    latentwire bench mopd --quick                            # smoke run (under a minute)
    latentwire bench mopd --seeds 5 --steps 60               # see --help for every option

The JSON's ``summary`` has ``final_success`` per method as ``{mean, ci95}``, ``initial_success``
likewise, ``change`` (final minus initial per seed), ``teacher_auroc_matched`` per mode on the
matched subset (``{value, ci95}``), ``teacher_auroc`` per mode on its own coverage, and
``opd_teacher`` naming the teacher of each OPD method; the PNG of success over steps lands next
to the JSON (or in ``--out``).
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._report import bench_parser, progress, report_header, run_report
from ._stats import bootstrap, figure

#: The failure's sign reversed was the better of the two contrastive changes on the development
#: seeds (docs/mopd.md); ``mopd_contrastive_lower_only`` stays a preset and a signal mode.
METHODS = ("grpo", "opd_separate", "opd_privileged", "mopd_positive", "mopd_contrastive",
           "mopd_contrastive_reversed")
OPD_METHODS = ("opd_separate", "opd_privileged")
MOPD_METHODS = tuple(m for m in METHODS if m.startswith("mopd"))
SIGNAL_MODES = ("none", "positive", "contrastive", "random_peer", "unrelated", "privileged",
                "contrastive_success_only", "contrastive_lower_only", "contrastive_reversed")
#: The separate OPD teacher without context, scored beside the self-teacher's modes.
SEPARATE_ROW = "none_separate"


@dataclass
class MopdBenchConfig:
    """Sizes of one benchmark run (``quick`` shrinks them)."""

    seeds: int = 5
    steps: int = 80
    group_size: int = 8
    prompts_per_step: int = 8
    eval_n: int = 128
    eval_every: int = 10
    signal_prompts: int = 64
    check_n: int = 128
    lr: float = 3e-4
    temperature: float = 1.0
    loss: str = "sampled_rkl"
    resamples: int = 1000
    #: torch threads while it runs: the tiny model is fastest on one, and more contend on shared cores
    threads: int = 1
    quick: bool = False
    methods: tuple[str, ...] = METHODS

    @classmethod
    def quick_run(cls) -> MopdBenchConfig:
        """A smoke-sized run: few seeds, steps and rollouts, to check the whole path runs."""
        return cls(seeds=2, steps=2, group_size=6, prompts_per_step=3, eval_n=24, eval_every=2,
                   signal_prompts=12, check_n=32, resamples=200, quick=True)


def _parse(argv: list[str], quick: bool) -> tuple[MopdBenchConfig, str | None]:
    cfg = MopdBenchConfig.quick_run() if quick else MopdBenchConfig()
    parser = bench_parser("mopd", "GRPO vs OPD vs MOPD on tinyworld sort")
    for name, value in asdict(cfg).items():
        if name in ("quick", "methods"):
            continue
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--out", default=None, help="keep the training runs here (default: a temporary folder)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="the methods to train (default: all)")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    cfg.methods = tuple(args.pop("methods"))
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


def _groups_of(indices: list[int], group_size: int) -> list[list[int]]:
    """The indices bundled by prompt (a bootstrap over prompts resamples these bundles)."""
    bundles: dict[int, list[int]] = {}
    for i in indices:
        bundles.setdefault(i // group_size, []).append(i)
    return list(bundles.values())


def _by_prompt(statistic: Any, indices: list[int], group_size: int, cfg: MopdBenchConfig) -> dict[str, Any]:
    """``statistic(rollout indices)`` with its bootstrap interval over prompts, as `figure` writes it."""
    import numpy as np

    bundles = _groups_of(indices, group_size)

    def over(picked: np.ndarray) -> float | None:
        return statistic([i for b in picked for i in bundles[b]])

    return figure(*bootstrap(over, len(bundles), resamples=cfg.resamples))


def signal(model: Any, tokenizer: Any, separate: Any, problems: list[tuple[str, str]],
           cfg: MopdBenchConfig) -> dict[str, Any]:
    """Teacher signal of the initial student (its own EMA teacher at step 0) per context mode, on
    each mode's coverage and on the matched subset, and of the separate teacher without context."""
    import torch
    from latentwire.training.mopd.analysis import matched_subset, mode_figures, score_modes, teacher_signal
    from latentwire.training.mopd.peers import PeerConfig
    from latentwire.training.mopd.rollouts import SamplingConfig, encode_prompt, sample_groups
    from latentwire.training.mopd.verifiers import TinyworldVerifier

    torch.manual_seed(1234)
    questions = [q for q, _ in problems]
    golds = [g for _, g in problems]
    n = cfg.group_size
    rollouts = sample_groups(model, tokenizer, [encode_prompt(tokenizer, q) for q in questions], n,
                             SamplingConfig(temperature=cfg.temperature, max_new_tokens=12))
    verify = TinyworldVerifier()
    rewards = [verify(t, golds[i // n]).reward for i, t in enumerate(rollouts.texts)]
    scores = score_modes(model, tokenizer, questions, rollouts, rewards, SIGNAL_MODES, PeerConfig(), golds,
                         temperature=cfg.temperature)
    rows = teacher_signal(model, tokenizer, questions, rollouts, rewards, SIGNAL_MODES, PeerConfig(),
                          scores=scores)
    separate_scores = score_modes(separate, tokenizer, questions, rollouts, rewards, ("none",), PeerConfig(),
                                  temperature=cfg.temperature)["none"]
    separate_scores.mode = SEPARATE_ROW
    scores[SEPARATE_ROW] = separate_scores
    rows += teacher_signal(separate, tokenizer, questions, rollouts, rewards, (SEPARATE_ROW,), PeerConfig(),
                           scores={SEPARATE_ROW: separate_scores})
    matched = matched_subset(scores)
    matched_rows = []
    for mode, mode_scores in scores.items():
        row = {"mode": mode}
        for key in ("auroc", "token_advantage_success", "token_advantage_failure"):
            row[key] = _by_prompt(lambda idx, key=key, s=mode_scores: mode_figures(s, rewards, idx)[key],
                                  matched, n, cfg)
        matched_rows.append(row)
    # The failure's effect: the contrastive prompt minus the same successes without the failure.
    full, alone = scores["contrastive"].teacher, scores["contrastive_success_only"].teacher
    effect = {}
    for label, success in (("success", True), ("failure", False)):
        picked = [i for i in matched if (rewards[i] >= 1.0) == success]
        effect[label] = _by_prompt(lambda idx: _mean([full[i] - alone[i] for i in idx]), picked, n, cfg)
        effect[label]["n"] = len(picked)
    auroc_gap = _by_prompt(lambda idx: _diff(mode_figures(scores["contrastive"], rewards, idx)["auroc"],
                                             mode_figures(scores["positive"], rewards, idx)["auroc"]),
                           matched, n, cfg)
    return {"rollouts": len(rewards), "success_rate": statistics.fmean(rewards), "rows": rows,
            "matched": {"n": len(matched), "prompts": len(_groups_of(matched, n)),
                        "successes": sum(rewards[i] >= 1.0 for i in matched), "rows": matched_rows,
                        "failure_effect": effect, "contrastive_minus_positive_auroc": auroc_gap}}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _over_seeds(values: list[float], cfg: MopdBenchConfig) -> dict[str, Any]:
    """Mean over seeds with its bootstrap interval (resampling seeds), as ``{mean, ci95}``."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    mean, ci = bootstrap(lambda idx: float(data[idx].mean()), len(data), resamples=cfg.resamples)
    return {"mean": round(float(mean), 4), "ci95": ci, "per_seed": list(values)}


def _teacher_names(meta: dict[str, Any]) -> dict[str, str]:
    separate = (f"separate: {meta.get('path')} (the student's recipe, {meta.get('steps')} steps; "
                f"greedy success {meta.get('plain_success')} on its {meta.get('eval_n')} questions)")
    privileged = "privileged: the EMA student with the gold answer in its context as a correct solution"
    return {"opd_separate": separate, "opd_privileged": privileged}


def summarize(training: dict[str, Any], signal_result: dict[str, Any], teacher_meta: dict[str, Any],
              cfg: MopdBenchConfig) -> dict[str, Any]:
    """The headline numbers: final success and change per method over seeds, matched AUROC, directions."""
    methods = training["methods"]
    initial = methods[next(iter(methods))]["initial_success"]  # one student, one eval set per seed
    final = {name: _over_seeds(m["final_success"], cfg) for name, m in methods.items()}
    change = {name: _over_seeds([f - i for f, i in zip(m["final_success"], m["initial_success"])], cfg)
              for name, m in methods.items()}
    directions = {}
    for mopd in (m for m in MOPD_METHODS if m in methods):
        for opd in (o for o in OPD_METHODS if o in methods):
            directions[f"{mopd} - {opd}"] = _over_seeds(
                [a - b for a, b in zip(methods[mopd]["final_success"], methods[opd]["final_success"])], cfg)
    matched = signal_result["matched"]
    return {
        "ok": True,  # every run completed; the goals are reported, not failed
        "final_success": final,
        "initial_success": _over_seeds(initial, cfg),
        "change": change,
        "ranking": sorted(final, key=lambda k: -final[k]["mean"]),
        "mopd_minus_opd": directions,
        "teacher_auroc_matched": {row["mode"]: row["auroc"] for row in matched["rows"]},
        "matched_subset": {k: matched[k] for k in ("n", "prompts", "successes")},
        "contrastive_minus_positive_auroc_matched": matched["contrastive_minus_positive_auroc"],
        "teacher_auroc": {row["mode"]: row["auroc"] for row in signal_result["rows"]},
        "coverage": {row["mode"]: row["coverage"] for row in signal_result["rows"]},
        "opd_teacher": {k: v for k, v in _teacher_names(teacher_meta).items() if k in methods},
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ci(item: dict[str, Any], key: str = "mean") -> str:
    ci = item.get("ci95")
    interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[-]"
    return f"{_fmt(item.get(key))} {interval}"


def render(report: dict[str, Any]) -> str:
    """The human-readable tables of a report."""
    from latentwire.training.mopd.analysis import format_table

    s, cfg, check = report["summary"], report["config"], report["peer_check"]
    header = (f"latentwire bench mopd ({'quick' if cfg['quick'] else 'full'}): tinyworld sort-6, "
              f"{cfg['seeds']} seed(s), {cfg['steps']} steps x {cfg['prompts_per_step']} prompts x "
              f"{cfg['group_size']} rollouts, lr {cfg['lr']}, eval on {cfg['eval_n']} held-out questions "
              f"(greedy); intervals: 95 % bootstrap over seeds")
    lines = [header, "", f"{'method':<30}{'final success [95% CI]':>26}{'change from start [95% CI]':>30}"]
    for name in s["ranking"]:
        lines.append(f"{name:<30}{_ci(s['final_success'][name]):>26}{_ci(s['change'][name]):>30}")
    lines.append(f"{'(initial student)':<30}{_ci(s['initial_success']):>26}")
    for name, text in s["opd_teacher"].items():
        lines.append(f"  {name} teacher: {text}")
    if s["mopd_minus_opd"]:
        lines += ["", "paired differences of final success (MOPD - OPD, same seeds and eval questions):"]
        lines += [f"  {k:<44}{_ci(v):>26}" for k, v in s["mopd_minus_opd"].items()]
    sig = report["signal"]
    matched = sig["matched"]
    lines += ["", (f"teacher signal: initial student as teacher (and the separate teacher, {SEPARATE_ROW}), "
                   f"{sig['rollouts']} rollouts of {sig['rollouts'] // cfg['group_size']} held-out prompts "
                   f"(sampled success {sig['success_rate']:.2f}); score = mean teacher log-prob per token"),
              "each mode on the rollouts it covers:", format_table(sig["rows"]), "",
              (f"every mode on one matched subset ({matched['n']} rollouts of {matched['prompts']} prompts, "
               f"{matched['successes']} successes); 95 % bootstrap over prompts:"),
              f"{'context mode':<26}{'AUROC':>24}{'token adv. (successes)':>26}{'token adv. (failures)':>26}"]
    for row in matched["rows"]:
        lines.append(f"{row['mode']:<26}{_ci(row['auroc'], 'value'):>24}"
                     f"{_ci(row['token_advantage_success'], 'value'):>26}"
                     f"{_ci(row['token_advantage_failure'], 'value'):>26}")
    gap = matched["contrastive_minus_positive_auroc"]
    lines.append(f"contrastive - positive AUROC on the matched subset: {_ci(gap, 'value')}")
    lines += ["", "failure effect (teacher score with the failed peer minus the same successes without it):"]
    for label, item in matched["failure_effect"].items():
        lines.append(f"  {label + ' rollouts':<24}{_ci(item, 'value'):>26}  (n={item['n']})")
    lines += ["", f"{'peer check (mean log-prob per token)':<40}{'no context':>12}{'success in context':>20}"]
    for label, key in (("gold answers", "gold"), ("corrupted answers", "wrong")):
        lines.append(f"  {label:<38}{check[key + '_no_context']:>12.3f}{check[key + '_success_in_context']:>20.3f}")
    lines.append(f"  {'corrupted, itself marked as failed':<38}{check['wrong_itself_marked_failed']:>12.3f}")
    return "\n".join(lines)


def _measure(cfg: MopdBenchConfig, out: str | None, json_path: str | None) -> dict[str, Any]:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per checkpoint load/save would bury the tables
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _measure_with(cfg, out, json_path)
    finally:
        torch.set_num_threads(threads)  # the caller's setting again (tests run benchmarks in-process)


def _measure_with(cfg: MopdBenchConfig, out: str | None, json_path: str | None) -> dict[str, Any]:
    import torch
    from latentwire.training.mopd.job import MopdConfig, compare
    from latentwire.training.mopd.student import SHIPPED_STUDENT, SHIPPED_TEACHER, load_student
    from latentwire.tinyworld.tasks import make_task

    started = time.time()
    model, tokenizer, meta = load_student(SHIPPED_STUDENT)
    separate, _, teacher_meta = load_student(SHIPPED_TEACHER)
    teacher_meta = {"path": str(SHIPPED_TEACHER.relative_to(SHIPPED_TEACHER.parents[3])), **teacher_meta}
    task = make_task(meta.get("task", "sort"), meta.get("length", 6))
    held_out = [(ep.prompt(ep.receiver.name), ep.answer) for ep in task.episodes(cfg.check_n, seed=777)]
    check = peer_check(model, tokenizer, held_out)
    progress("bench mopd: teacher signal")
    signal_result = signal(model, tokenizer, separate, held_out[:cfg.signal_prompts], cfg)
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="lw-bench-mopd-"))
    try:
        base = MopdConfig(task=task.name, length=meta.get("length", 6), steps=cfg.steps, group_size=cfg.group_size,
                          prompts_per_step=cfg.prompts_per_step, eval_n=cfg.eval_n, eval_every=cfg.eval_every,
                          checkpoint_every=0, lr=cfg.lr, temperature=cfg.temperature, loss=cfg.loss, resume=False,
                          progress=False, out_dir=str(folder / "{name}"))
        training = compare(base, cfg.methods, seeds=tuple(range(cfg.seeds)), announce=progress)
        png = folder / "compare" / "success.png"
        report = {**report_header("mopd", started), "config": asdict(cfg),
                  "student": {"path": str(SHIPPED_STUDENT), **meta}, "teacher": teacher_meta,
                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "summary": summarize(training, signal_result, teacher_meta, cfg), "peer_check": check,
                  "signal": signal_result,
                  "training": {name: {k: m[k] for k in ("final_success", "initial_success", "histories")}
                               for name, m in training["methods"].items()}}
        if json_path:
            target = Path(json_path).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)
            report["png"] = str(target)
        elif out:
            report["png"] = str(png)
    finally:
        if not out:
            shutil.rmtree(folder, ignore_errors=True)
    return report


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the MOPD benchmark, print its tables, write JSON (and the PNG beside it) if asked.

    Returns 0 when every run completed (goals not reached are reported, not failed), 2 on bad options.
    """
    holder: dict[str, Any] = {}

    def parse() -> MopdBenchConfig:
        cfg, holder["out"] = _parse(list(argv or []), quick)
        return cfg

    return run_report("mopd", json_path, parse, lambda cfg: _measure(cfg, holder["out"], json_path), render)


if __name__ == "__main__":
    sys.exit(run(argv=sys.argv[1:]))
