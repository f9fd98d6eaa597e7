"""``latentwire bench rcl``: where each RCL primitive helps and hurts, on the SIMULATED environment.

Configurations (all the same optimiser, `latentwire.agents.rcl.optimizer`): **no learning**
(the empty playbook), **ACE-like** (with and without its curator's refine step: pruning and
de-dup), **GEPA-like**, **RCL** (plain: batched reflection of one
signal trace, ADD/UPDATE/DELETE, counters, pruning), **RCL + one primitive** for each primitive,
**RCL + two primitives** where one acts through the other (`PAIRS`), **RCL + all** and **all but
one** (``--ablations``, on by default). Each runs in every **regime** of the simulated world
(`REGIMES`: execution noise, a careless actor, reflector strength, long-tailed tasks, drifting
rules), with the same seeds (the same seed is the same world and the same first draws in every
configuration).

A primitive's effect is the paired difference RCL+X minus RCL over seeds, on the held-out test
success of the playbook validation picked, with a 95 % t interval (``summary.effects[primitive]
[regime] = {"mean", "ci95", "n_seeds", "excludes_zero"}``); the final validation success gets the
same (``summary.effects_final_val``), and so does the test success of the last playbook
(``summary.effects_final_test``: what matters when the world drifts and the best playbook of
the past no longer fits). An interval that contains 0 means the difference is not
distinguishable from none at this many seeds. ``--json FILE`` writes the report and, beside it,
one PNG: primitives x regimes, each effect with its interval. Every figure is measured in this
run, on the simulated world (hidden rules, simulated actor/reflector/mutator), and labelled so.

Run::

    latentwire bench rcl --json bench-results/rcl.json --workers 2    # full (figures: docs/rcl.md)
    latentwire bench rcl --quick                                      # smoke run
    latentwire bench rcl --regimes base drift --seeds 20 --set n_test=100
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig, ace_like, gepa_like
from latentwire.agents.rcl.simulated import SimConfig, SimulatedEnvironment, SimulatedModel

from ._report import bench_parser, write_report

PRIMITIVES: dict[str, dict[str, Any]] = {
    "batch": {"signal_traces": 4},
    "grouped": {"group_size": 4},
    "credit": {"credit_assignment": True},
    "aux": {"aux_losses": True},
    "replay": {"replay_ratio": 0.5},
    "state": {"optimizer_state": True},
    "curriculum": {"sampling": "curriculum"},
}
# Primitives that act through another one: citations make the counters that auxiliary losses
# read (proven entries); citations and contrastive groups are where the momentum the optimiser
# state follows gets its votes for the rules that work.
PAIRS: dict[str, dict[str, Any]] = {
    "credit+aux": {**PRIMITIVES["credit"], **PRIMITIVES["aux"]},
    "credit+state": {**PRIMITIVES["credit"], **PRIMITIVES["state"]},
    "grouped+state": {**PRIMITIVES["grouped"], **PRIMITIVES["state"]},
}
# Named settings of the simulated world (SimConfig overrides); "base" is the defaults.
REGIMES: dict[str, dict[str, Any]] = {
    "base": {},
    "noisy": {"noise": 0.2},
    "careless_actor": {"p_ignore": 0.3},
    "weak_reflector": {"p_correct": 0.4, "p_contrast": 0.7, "p_diagnose": 0.3},
    "strong_reflector": {"p_correct": 0.9, "p_contrast": 1.0, "p_diagnose": 0.9},
    "long_tail": {"zipf": 2.0},
    "drift": {"drift": 0.02},
}
QUICK_REGIMES = ("base", "drift")
# The bench's world: the SimConfig defaults with a larger held-out test set (200 tasks: actor
# calls only, and the test estimate of each run is then not the largest source of noise).
BENCH_SIM = {"n_test": 200}
LABEL = "simulated environment (hidden rules; simulated actor, reflector and mutator)"
METRICS = ("final_val", "best_val", "best_test", "final_test", "iters_to_90", "llm_calls", "entries")
# Two-sided 95 % quantiles of Student's t by degrees of freedom (beyond 30: a series in 1/df).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


def configurations(ablations: bool = False) -> dict[str, OptimizerConfig]:
    """Name -> optimiser config of every benchmarked configuration (iterations/seed set per run);
    ``ablations`` adds "all but one primitive" for each primitive in "all" (curriculum is not)."""
    configs = {"no_learning": OptimizerConfig(max_ops=0, counters=False, prune_threshold=None),
               "ace_like": ace_like(), "ace_like-refine": ace_like(dedup=False, prune_threshold=None),
               "gepa_like": gepa_like(), "rcl": OptimizerConfig()}
    configs |= {f"rcl+{name}": OptimizerConfig(**opts) for name, opts in {**PRIMITIVES, **PAIRS}.items()}
    in_all = {name: opts for name, opts in PRIMITIVES.items() if name != "curriculum"}
    configs["rcl+all"] = OptimizerConfig(**{k: v for opts in in_all.values() for k, v in opts.items()})
    if ablations:  # leave one out of "all": a primitive's effect beside the others
        for left_out in in_all:
            configs[f"rcl+all-{left_out}"] = OptimizerConfig(**{
                k: v for name, opts in in_all.items() if name != left_out for k, v in opts.items()})
    return configs


def t95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"a t interval needs df >= 1, got {df}")
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.37 / df


def paired_effect(treated: list[float], base: list[float]) -> dict[str, Any]:
    """Mean of the per-seed differences ``treated - base`` with its 95 % t interval (None with
    one seed); ``excludes_zero`` is False when the difference is inside its interval."""
    diffs = [a - b for a, b in zip(treated, base, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "ci95": None, "n_seeds": len(diffs), "excludes_zero": False}
    half = t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    lo, hi = mean - half, mean + half
    return {"mean": mean, "ci95": [lo, hi], "n_seeds": len(diffs), "excludes_zero": lo > 0 or hi < 0}


def _to_90(curve: list[float]) -> int:
    """First iteration (1-based) whose validation success reaches 90 % of the curve's best."""
    best = max(curve)
    return next(i + 1 for i, v in enumerate(curve) if v >= 0.9 * best)


async def _one(cfg: OptimizerConfig, sim: SimConfig) -> dict[str, Any]:
    env = SimulatedEnvironment(sim)
    model = SimulatedModel(env)
    opt = Optimizer(env, Models(model, model, model), cfg)
    best = await opt.run()
    curve = [h["val_success"] for h in opt.history]
    return {"final_val": curve[-1], "best_val": max(curve), "best_test": await opt.test(best),
            "final_test": await opt.test(opt.book), "iters_to_90": _to_90(curve),
            "llm_calls": opt.history[-1]["llm_calls"], "entries": len(opt.book), "curve": curve}


def _run(job: tuple[OptimizerConfig, SimConfig]) -> dict[str, Any]:
    """One optimiser run (a top-level function, so a worker process can run it)."""
    return asyncio.run(_one(*job))


def _measure(args: argparse.Namespace, configs: dict[str, OptimizerConfig],
             sim: SimConfig) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """config -> regime -> one result per seed."""
    keys, jobs = [], []
    for regime in args.regimes:
        for name, base in configs.items():
            for seed in range(args.seeds):
                keys.append((name, regime))
                jobs.append((replace(base, iterations=args.iterations, seed=seed, batch_size=args.batch_size),
                             replace(sim, seed=seed, **REGIMES[regime])))
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(_run, jobs, chunksize=4))
    else:
        runs = [_run(job) for job in jobs]
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (name, regime), run in zip(keys, runs, strict=True):
        out.setdefault(name, {}).setdefault(regime, []).append(run)
    return out


def _main(args: argparse.Namespace) -> dict[str, Any]:
    configs = configurations(args.ablations)
    sim = replace(SimConfig(), **{**BENCH_SIM, **args.set})
    measured = _measure(args, configs, sim)
    results: dict[str, dict[str, Any]] = {}
    table: dict[str, dict[str, Any]] = {}
    for name, by_regime in measured.items():
        for regime, runs in by_regime.items():
            entry: dict[str, Any] = {k: statistics.fmean(r[k] for r in runs) for k in METRICS}
            entry["final_val_sd"] = statistics.pstdev(r["final_val"] for r in runs)
            entry["best_test_sd"] = statistics.pstdev(r["best_test"] for r in runs)
            table.setdefault(name, {})[regime] = dict(entry)
            entry["mean_curve"] = [statistics.fmean(r["curve"][i] for r in runs)
                                   for i in range(args.iterations)]
            entry["per_seed"] = {k: [r[k] for r in runs] for k in ("final_val", "best_test", "final_test")}
            results.setdefault(name, {})[regime] = entry

    def effects(metric: str, contrasts: dict[str, tuple[str, str]]) -> dict[str, dict[str, Any]]:
        return {label: {regime: paired_effect(results[treated][regime]["per_seed"][metric],
                                              results[base][regime]["per_seed"][metric])
                        for regime in args.regimes}
                for label, (treated, base) in contrasts.items()}

    contrasts = {p: (f"rcl+{p}", "rcl") for p in PRIMITIVES}
    # The second primitive's effect once the first is on ("aux given credit": credit+aux - credit).
    contrasts |= {f"{b} given {a}": (f"rcl+{a}+{b}", f"rcl+{a}") for a, b in (p.split("+") for p in PAIRS)}
    contrasts["all"] = ("rcl+all", "rcl")
    contrasts["ACE refine"] = ("ace_like", "ace_like-refine")  # its curator's pruning and de-dup
    summary = {"metric": "best_test", "effects": effects("best_test", contrasts),
               "effects_final_test": effects("final_test", contrasts),
               "effects_final_val": effects("final_val", contrasts), "configurations": table}
    if args.ablations:  # what leaving each primitive out of "all" costs (all minus all-but-X)
        summary["effects_in_all"] = effects("best_test", {
            name.removeprefix("rcl+all-"): ("rcl+all", name)
            for name in results if name.startswith("rcl+all-")})
    return {"environment": LABEL, "simulated": True, "seeds": args.seeds, "iterations": args.iterations,
            "batch_size": args.batch_size, "workers": args.workers, "sim_defaults": asdict(sim),
            "regimes": {r: REGIMES[r] for r in args.regimes},
            "configs": {name: asdict(cfg) for name, cfg in configs.items()},
            "summary": summary, "results": results}


def _settings(overrides: dict[str, Any], sep: str) -> str:
    return sep.join(f"{k}={v}" for k, v in overrides.items()) or "defaults"


def _cell(e: dict[str, Any]) -> str:
    if e["ci95"] is None:
        return f"{e['mean']:+.2f}"
    lo, hi = e["ci95"]
    return f"{e['mean']:+.2f} [{lo:+.2f},{hi:+.2f}]{'*' if e['excludes_zero'] else ' '}"


def render(report: dict[str, Any]) -> str:
    """The human-readable tables."""
    regimes = list(report["regimes"])
    s = report["summary"]
    first = regimes[0]
    settings = "; ".join(f"{r} ({_settings(report['regimes'][r], ', ')})" for r in regimes)
    out = [f"RCL optimiser on the {report['environment']}",
           (f"{report['seeds']} seeds x {report['iterations']} iterations, batch {report['batch_size']}; "
            f"regimes: {settings}"), "", f"at {first}:",
           (f"{'configuration':<18}{'final val':>14}{'best val':>10}{'test(best)':>15}{'test(last)':>11}"
            f"{'it->90%':>9}{'LLM calls':>11}{'vs none':>9}")]
    none = s["configurations"]["no_learning"][first]["final_val"]
    for name, by_regime in s["configurations"].items():
        c = by_regime[first]
        ratio = f"{c['final_val'] / none:.2f}x" if none else "-"
        out.append(f"{name:<18}{c['final_val']:>8.3f}±{c['final_val_sd']:.2f}{c['best_val']:>10.3f}"
                   f"{c['best_test']:>9.3f}±{c['best_test_sd']:.2f}{c['final_test']:>11.3f}"
                   f"{c['iters_to_90']:>9.1f}"
                   f"{c['llm_calls']:>11.0f}{ratio:>9}")
    out += ["", "held-out test success of the best playbook (mean over seeds), by regime:",
            f"{'configuration':<18}" + "".join(f"{r:>18}" for r in regimes)]
    for name, by_regime in s["configurations"].items():
        out.append(f"{name:<18}" + "".join(f"{by_regime[r]['best_test']:>18.3f}" for r in regimes))
    titles = {"effects": "held-out test success of the best playbook",
              "effects_final_test": "held-out test success of the last playbook",
              "effects_in_all": "held-out test success of the best playbook, all minus all-but-X"}
    out += ["", ("Effects: mean of the per-seed differences (RCL+X minus RCL; same seed, same world) "
                 "[95 % t interval]; * = the interval excludes 0, otherwise the difference is inside "
                 "its interval.")]
    for key, title in titles.items():
        if key not in s:
            continue
        out += ["", f"effect on {title}, by regime:",
                f"{'primitive':<20}" + "".join(f"{r:>23}" for r in regimes)]
        for p, by_regime in s[key].items():
            out.append(f"{p:<20}" + "".join(f"{_cell(by_regime[r]):>23}" for r in regimes))
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    """One figure: a column per regime; each primitive's effect with its 95 % interval (RCL+X
    minus RCL; with ablations, a second row: all minus all-but-X)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes, s = list(report["regimes"]), report["summary"]
    rows = [("effects", "RCL+X minus RCL")] + ([("effects_in_all", "all minus all-but-X")]
                                              if "effects_in_all" in s else [])
    heights = [len(s[key]) for key, _ in rows]
    fig, axes = plt.subplots(len(rows), len(regimes), squeeze=False, sharex=True,
                             figsize=(2.5 * len(regimes) + 1.8, 0.36 * sum(heights) + 1.6 * len(rows) + 0.6),
                             gridspec_kw={"height_ratios": heights})
    for row, (key, what) in enumerate(rows):
        names = list(s[key])
        for col, regime in enumerate(regimes):
            ax = axes[row][col]
            for y, name in enumerate(names):
                e = s[key][name][regime]
                lo, hi = e["ci95"] or (e["mean"], e["mean"])
                colour = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "0.55"
                ax.errorbar(e["mean"], y, xerr=[[e["mean"] - lo], [hi - e["mean"]]], fmt="o", color=colour,
                            capsize=3, ms=4.5)
            ax.axvline(0, color="k", lw=0.8)
            ax.grid(axis="x", alpha=0.3)
            ax.set_ylim(len(names) - 0.5, -0.5)
            ax.set_yticks(range(len(names)), names if col == 0 else [""] * len(names), fontsize=8)
            if row == 0:
                ax.set_title(f"{regime}\n{_settings(report['regimes'][regime], chr(10))}", fontsize=8)
        axes[row][0].set_ylabel(what, fontsize=9)
    fig.supxlabel("effect on held-out test success of the best playbook (paired over seeds); "
                  "green/red: the 95 % interval excludes 0, grey: it does not", fontsize=9)
    fig.suptitle(f"RCL primitives by regime, SIMULATED environment ({report['seeds']} seeds x "
                 f"{report['iterations']} iterations; mean and 95 % t interval of the paired differences)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sim_override(text: str) -> tuple[str, Any]:
    known = {f.name: f.type for f in fields(SimConfig)}
    key, sep, value = text.partition("=")
    if not sep or key not in known or key == "seed":
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY a SimConfig field "
                                         f"({', '.join(k for k in known if k != 'seed')})")
    try:
        return key, (int(value) if known[key] == "int" else float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {key} takes a {known[key]}") from None


def _parse(argv: list[str], quick: bool) -> argparse.Namespace:
    parser = bench_parser("rcl", __doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3 if quick else 20)
    parser.add_argument("--iterations", type=int, default=12 if quick else 40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=None,
                        help=f"the simulated-world regimes run (default: all; {' '.join(QUICK_REGIMES)} "
                             "with --quick)")
    parser.add_argument("--set", type=_sim_override, action="append", default=[], metavar="KEY=VALUE",
                        help="a SimConfig default for every regime (a regime's own settings win), "
                             "e.g. --set n_test=100")
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=not quick,
                        help="also run 'all but one primitive' for each (default: on, off with --quick)")
    parser.add_argument("--workers", type=int, default=1, help="processes running the optimiser runs")
    parser.add_argument("--png", default=None, help="the figure's path (default: next to --json)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.iterations < 1 or args.workers < 1:
        parser.error("--seeds, --iterations and --workers must be >= 1")
    args.regimes = list(dict.fromkeys(args.regimes or (QUICK_REGIMES if quick else REGIMES)))
    args.set = dict(args.set)
    return args


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the benchmark, print its tables, write JSON (and the PNG beside it) if ``json_path`` is given."""
    try:
        args = _parse(list(argv or []), quick)
    except SystemExit as exc:
        return int(exc.code or 0)
    start = time.perf_counter()
    report = _main(args)
    report["wall_s"] = time.perf_counter() - start
    print(render(report))
    png = Path(args.png) if args.png else (Path(json_path).with_suffix(".png") if json_path else None)
    write_report(json_path, report)
    if png:
        try:
            plot(report, png)
            print(f"wrote {png}")
        except ImportError:
            print("(no PNG: pip install 'latentwire[plot]')", file=sys.stderr)
    return 0
