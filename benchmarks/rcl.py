"""``latentwire bench rcl``: the RCL optimiser's primitives, measured on the SIMULATED environment.

Configurations (all the same optimiser, `latentwire.agents.rcl.optimizer`): **no learning**
(the baseline: the empty playbook), **ACE-like**, **GEPA-like**, **RCL** (plain: batched
reflection of one signal trace, ADD/UPDATE/DELETE, counters, pruning), **RCL + one primitive**
for each primitive, **RCL + two primitives** where one acts through the other (credit+aux,
credit+state), **RCL + all** and (with ``--ablations``) **all but one**.

For each, as means over seeds: final validation success, best validation success, held-out
test success of the best playbook (the one validation picked), iterations to reach 90 % of the
run's best, and LLM calls spent by the optimiser (monitoring validation and test left out).
Each primitive's effect is a paired difference over seeds (mean ± standard error; the same
seed is the same world), at each value of a sweep over one setting of the simulated world
(``--vary noise`` by default; also ``p_ignore``, ``p_correct``, ``zipf``). Every figure is
measured in this run, on the simulated world (hidden rules, simulated actor/reflector/mutator),
and labelled so.

Run::

    latentwire bench rcl --json bench-results/rcl.json            # full: a few minutes on 2 cores
    latentwire bench rcl --quick                                  # under a minute
    latentwire bench rcl --vary p_ignore --values 0 0.2 0.4 --seeds 8 --iterations 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from latentwire.agents.rcl.optimizer import Models, Optimizer, OptimizerConfig, ace_like, gepa_like
from latentwire.agents.rcl.simulated import SimConfig, SimulatedEnvironment, SimulatedModel

from ._report import bench_parser

PRIMITIVES: dict[str, dict[str, Any]] = {
    "batch": {"signal_traces": 4},
    "grouped": {"group_size": 4},
    "credit": {"credit_assignment": True},
    "aux": {"aux_losses": True},
    "replay": {"replay_ratio": 0.5},
    "state": {"optimizer_state": True},
    "curriculum": {"sampling": "curriculum"},
}
# Primitives that act through another one: credit assignment feeds the counters that auxiliary
# losses need to call a failure noise, and makes the blame the ledger remembers more accurate.
PAIRS: dict[str, dict[str, Any]] = {
    "credit+aux": {**PRIMITIVES["credit"], **PRIMITIVES["aux"]},
    "credit+state": {**PRIMITIVES["credit"], **PRIMITIVES["state"]},
}
LABEL = "simulated environment (hidden rules; simulated actor, reflector and mutator)"


def configurations(ablations: bool = False) -> dict[str, OptimizerConfig]:
    """Name -> optimiser config of every benchmarked configuration (iterations/seed set per run);
    ``ablations`` adds "all but one primitive" for each primitive in "all" (curriculum is not)."""
    configs = {"no_learning": OptimizerConfig(max_ops=0, counters=False, prune_threshold=None),
               "ace_like": ace_like(), "gepa_like": gepa_like(), "rcl": OptimizerConfig()}
    configs |= {f"rcl+{name}": OptimizerConfig(**opts) for name, opts in {**PRIMITIVES, **PAIRS}.items()}
    in_all = {name: opts for name, opts in PRIMITIVES.items() if name != "curriculum"}
    configs["rcl+all"] = OptimizerConfig(**{k: v for opts in in_all.values() for k, v in opts.items()})
    if ablations:  # leave one out of "all": a primitive's effect beside the others
        for left_out in in_all:
            configs[f"rcl+all-{left_out}"] = OptimizerConfig(**{
                k: v for name, opts in in_all.items() if name != left_out for k, v in opts.items()})
    return configs


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
            "iters_to_90": _to_90(curve), "llm_calls": opt.history[-1]["llm_calls"], "entries": len(opt.book),
            "curve": curve}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    configs = configurations(args.ablations)
    results: dict[str, dict[str, Any]] = {}
    for value in args.values:
        for name, base in configs.items():
            runs = []
            for seed in range(args.seeds):
                cfg = replace(base, iterations=args.iterations, seed=seed, batch_size=args.batch_size)
                sim = replace(SimConfig(seed=seed, p_correct=args.p_correct), **{args.vary: value})
                runs.append(await _one(cfg, sim))
            entry: dict[str, Any] = {}
            for key in ("final_val", "best_val", "best_test", "iters_to_90", "llm_calls", "entries"):
                entry[key] = statistics.fmean(r[key] for r in runs)
            entry["final_val_sd"] = statistics.pstdev(r["final_val"] for r in runs)
            entry["best_test_sd"] = statistics.pstdev(r["best_test"] for r in runs)
            entry["mean_curve"] = [statistics.fmean(r["curve"][i] for r in runs)
                                   for i in range(args.iterations)]
            entry["per_seed"] = {k: [r[k] for r in runs] for k in ("final_val", "best_test")}
            results.setdefault(name, {})[str(value)] = entry
    first = str(args.values[0])
    summary = {name: {k: v for k, v in by_value[first].items() if k != "mean_curve"}
               | {args.vary: args.values[0]}
               for name, by_value in results.items()}

    def paired(better: str, base: str, metric: str) -> dict[str, dict[str, float]]:
        """Mean and standard error of per-seed differences (the same seed is the same world)."""
        out = {}
        for v in args.values:
            diffs = [a - b for a, b in zip(results[better][str(v)]["per_seed"][metric],
                                           results[base][str(v)]["per_seed"][metric])]
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
            out[str(v)] = {"mean": statistics.fmean(diffs), "se": se}
        return out

    effects = {metric: {p: paired(f"rcl+{p}", "rcl", metric) for p in [*PRIMITIVES, "all"]}
               for metric in ("final_val", "best_test")}
    # The second primitive's effect once the first is on.
    effects["best_test_pairs"] = {f"{pair.split('+')[1]} given {pair.split('+')[0]}":
                                  paired(f"rcl+{pair}", f"rcl+{pair.split('+')[0]}",
                                         "best_test") for pair in PAIRS}
    if args.ablations:  # what leaving each primitive out of "all" costs (all minus all-but-X)
        effects["best_test_in_all"] = {name.removeprefix("rcl+all-"): paired("rcl+all", name, "best_test")
                                       for name in results if name.startswith("rcl+all-")}
    return {"environment": LABEL, "simulated": True, "seeds": args.seeds, "iterations": args.iterations,
            "batch_size": args.batch_size, "sim_defaults": asdict(SimConfig(p_correct=args.p_correct)),
            "sweep": {"param": args.vary, "values": args.values},
            "summary": summary, "effect_vs_rcl": effects, "results": results}


def render(report: dict[str, Any]) -> str:
    """The human-readable table."""
    param, values = report["sweep"]["param"], report["sweep"]["values"]
    out = [f"RCL optimiser on the {report['environment']}",
           f"{report['seeds']} seeds x {report['iterations']} iterations, batch {report['batch_size']}; "
           f"table at {param}={values[0]} (other settings: SimConfig defaults, p_correct "
           f"{report['sim_defaults']['p_correct']})", "",
           f"{'configuration':<16}{'final val':>14}{'best val':>10}{'test(best)':>15}{'it->90%':>9}"
           f"{'LLM calls':>11}{'vs none':>9}"]
    none = report["summary"]["no_learning"]["final_val"]
    for name, s in report["summary"].items():
        ratio = f"{s['final_val'] / none:.2f}x" if none else "-"
        out.append(f"{name:<16}{s['final_val']:>8.3f}±{s['final_val_sd']:.2f}{s['best_val']:>10.3f}"
                   f"{s['best_test']:>9.3f}±{s['best_test_sd']:.2f}{s['iters_to_90']:>9.1f}"
                   f"{s['llm_calls']:>11.0f}{ratio:>9}")
    titles = {"final_val": "final validation success (RCL+X minus RCL)",
              "best_test": "held-out test success of the best playbook (RCL+X minus RCL)",
              "best_test_pairs": "held-out test success of the best playbook (RCL+A+B minus RCL+A)",
              "best_test_in_all": "held-out test success of the best playbook (all minus all-but-X)"}
    out += ["", "Effects below: mean ± standard error of the per-seed difference (same seed, same world)."]
    for metric, title in titles.items():
        if metric not in report["effect_vs_rcl"]:
            continue
        out += ["", f"effect of each primitive on {title}, by {param}:",
                f"{'primitive':<20}" + "".join(f"{f'{param}={v}':>16}" for v in values)]
        for p, by_value in report["effect_vs_rcl"][metric].items():
            out.append(f"{p:<20}" + "".join(f"{by_value[str(v)]['mean']:>+10.3f}±{by_value[str(v)]['se']:.3f}"
                                            for v in values))
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    """Learning curves at the first sweep value, and effects (held-out test) across the sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    param, values = report["sweep"]["param"], report["sweep"]["values"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.get_cmap("tab20").colors  # 12 configurations: tab10 would repeat colours
    for n, (name, by_value) in enumerate(report["results"].items()):
        curve = by_value[str(values[0])]["mean_curve"]
        axes[0].plot(range(1, len(curve) + 1), curve, label=name,
                     color=colours[n * 20 // len(report["results"])],
                     lw=2.5 if name in ("rcl", "rcl+all") else 1.2,
                     ls="--" if name.endswith("_like") else "-")
    axes[0].set(xlabel="iteration", ylabel="validation success (mean over seeds)",
                title=f"SIMULATED env, {param}={values[0]}")
    axes[0].legend(fontsize=7, ncol=3, loc="upper left")
    effects = report["effect_vs_rcl"]["best_test"]
    width = 0.8 / len(values)
    names = list(effects)
    for j, v in enumerate(values):
        axes[1].bar([i + j * width for i in range(len(names))],
                    [effects[p][str(v)]["mean"] for p in names], width,
                    yerr=[effects[p][str(v)]["se"] for p in names], capsize=2, label=f"{param}={v}")
    axes[1].set_xticks([i + width * (len(values) - 1) / 2 for i in range(len(names))], names, rotation=30)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set(ylabel="test success of best playbook: RCL+X minus RCL",
                title="effect of each primitive (SIMULATED)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SWEEP_DEFAULTS = {"noise": [0.05, 0.15, 0.3], "p_ignore": [0.0, 0.1, 0.3], "p_correct": [0.3, 0.6, 0.9],
                  "zipf": [0.0, 1.0, 2.0]}


def _parse(argv: list[str], quick: bool) -> argparse.Namespace:
    parser = bench_parser("rcl", __doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2 if quick else 10)
    parser.add_argument("--iterations", type=int, default=15 if quick else 40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--p-correct", type=float, default=0.6,
                        help="simulated reflector accuracy from failures alone")
    parser.add_argument("--vary", choices=sorted(SWEEP_DEFAULTS), default="noise",
                        help="the simulated-world setting swept (default: execution noise)")
    parser.add_argument("--values", type=float, nargs="+", default=None,
                        help="its values; the first is the table's (default: 3 values, 1 with --quick)")
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=not quick,
                        help="also run 'all but one primitive' for each (default: on, off with --quick)")
    parser.add_argument("--png", default=None, help="learning-curve PNG (default: next to --json)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.iterations < 1:
        parser.error("--seeds and --iterations must be >= 1")
    if args.values is None:
        args.values = SWEEP_DEFAULTS[args.vary][:1 if quick else None]
        if quick and args.vary == "noise":
            args.values = [0.05]
    return args


def run(json_path: str | None = None, quick: bool = False, argv: list[str] | None = None) -> int:
    """Run the benchmark, print its table, write JSON (and a PNG) if ``json_path`` is given."""
    try:
        args = _parse(list(argv or []), quick)
    except SystemExit as exc:
        return int(exc.code or 0)
    start = time.perf_counter()
    report = asyncio.run(_main(args))
    report["wall_s"] = time.perf_counter() - start
    print(render(report))
    png = Path(args.png) if args.png else (Path(json_path).with_suffix(".png") if json_path else None)
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {path}")
    if png:
        try:
            plot(report, png)
            print(f"wrote {png}")
        except ImportError:
            print("(no PNG: pip install 'latentwire[plot]')", file=sys.stderr)
    return 0
