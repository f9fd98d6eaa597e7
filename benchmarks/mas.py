"""``latentwire bench mas``: latent against text messages between tinyworld VLM agents, on the same exchanges.

For every message length it measures (the lengths the codecs were trained on, by default all of
them) and every ordered (sender, receiver) pair of families, on one stream of episodes:

* the receiver's exact match and per-character accuracy in five modes: ``latent`` (the sender's
  latent through the shared space), ``text_oracle`` (the receiver reads the gold message),
  ``text_sent`` (the receiver reads what the sender actually generated), ``none`` (no message:
  a blank image) and ``shuffled`` (another episode's latent: the control that shows the
  information really travels);
* the end-to-end wall-clock of ``--timed`` of those same episodes for one pair, each exchange run
  alone (batch 1) and interleaved: text (the sender writes its message token by token, the
  receiver reads it and answers) against latent (the sender reads and encodes, the receiver
  decodes and answers); both answers stop at the same rule (``<eos>`` or length + 4 tokens), and
  each timed exchange is scored too.

The headline is ``matched_speedup``: the speedup at the longest length (``matched_length``) where
latent exact match is at least 0.95 x text exact match (the oracle row) over all pairs; null when
no length qualifies. Every figure comes with a 95 % bootstrap interval over episodes (paired
across modes and pairs). Pairs whose encoder and decoder were trained against each other are
co-trained (``*``); every other pair never met in training.

Codecs come from the shipped space (`latentwire.tinyworld.space`, made by ``latentwire train
ship``), or ``--space DIR`` (a ``train ship`` or ``train space-maps`` output; ``--hub`` is its
deprecated old name), or ``--codecs DIR...`` (the anchored scheme). ``--stream test`` (the
default) is the stream no training job, map fit or design choice used: its figures are written
under ``summary``. ``--stream dev`` is for comparing recipes: its figures go under
``dev_summary``, never under the final name. ``--compare-space DIR`` runs the same episodes
through a space of the other codec variant (label-free or weakly supervised, as each space's
``space.json`` records) and writes each variant's summary under its name, beside their paired
difference. ``--quick`` runs the same path on three families, two lengths and a few episodes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._report import BenchError, bench_parser, existing_folder, progress, report_header, run_report
from ._stats import bootstrap, figure

ONE_SENDER_TASKS = ("secret", "reverse", "sort")
MODES = ("latent", "text_oracle", "text_sent", "none", "shuffled")
MATCH = 0.95  # latent exact >= MATCH x text exact: the length counts as matched


class _Deprecated(argparse.Action):
    """Store like ``--space``, after a warning on stderr naming the new option (for ``--hub``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        progress(f"{option_string} is deprecated, use --{self.dest}")
        setattr(namespace, self.dest, values)


def _parse(argv: list[str], quick: bool) -> argparse.Namespace:
    from latentwire.tinyworld.tasks import STREAMS

    parser = bench_parser("mas", __doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--space", metavar="DIR",
                        help="a shared-space folder (train ship / train space-maps); "
                             "default: the shipped one")
    # The old name of --space, kept working for scripts written before the rename; not in --help.
    source.add_argument("--hub", dest="space", action=_Deprecated, help=argparse.SUPPRESS)
    source.add_argument("--codecs", nargs="+", metavar="DIR",
                        type=existing_folder("a `latentwire train codec --out` folder"),
                        help="codec folders already in one space (train codec --anchor-to): "
                             "the anchored scheme")
    parser.add_argument("--stream", choices=list(STREAMS), default="test",
                        help="episode stream: test (final figures, the default) or dev (tuning)")
    parser.add_argument("--families", nargs="+", metavar="FAMILY", help="a subset of the space's families")
    parser.add_argument("--tasks", nargs="+", default=["secret"], choices=ONE_SENDER_TASKS)
    parser.add_argument("--n", type=int, default=8 if quick else 128,
                        help="episodes per pair, task and length")
    parser.add_argument("--lengths", nargs="+", type=int,
                        help="message lengths (default: every trained length)")
    parser.add_argument("--timed", type=int, default=4 if quick else 32,
                        help="episodes per length timed one by one (batch 1) for the timed pair")
    parser.add_argument("--timed-pair", nargs=2, metavar=("SENDER", "RECEIVER"),
                        help="the pair to time (default: the first pair never trained together)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="episodes per forward pass of the accuracy runs")
    parser.add_argument("--compare-space", metavar="DIR",
                        help="a space of the other codec variant (label-free or weakly supervised, as "
                             "its space.json records): the same episodes through it, each variant's summary "
                             "under its name and their difference")
    parser.add_argument("--png", help="plot file (default: next to --json)")
    args = parser.parse_args(argv)
    args.quick = quick
    for name in ("n", "timed", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.timed > args.n:
        parser.error(f"--timed {args.timed} exceeds --n {args.n}: timed episodes are scored episodes")
    from latentwire.tinyworld.space import load_space

    # A missing or foreign space, a family it lacks, a length it was not trained on: one line, exit 2,
    # before any model loads. `_parties` takes the checked space from here.
    args.checked_space = None if args.codecs else load_space(
        args.space, families=args.families or (), lengths=args.lengths or ())
    if args.compare_space is not None:
        if args.codecs:
            parser.error("--compare-space compares two spaces; it does not apply to --codecs")
        other = load_space(args.compare_space, families=args.families or (), lengths=args.lengths or ())
        if not args.families and sorted(other.families) != sorted(args.checked_space.families):
            parser.error(f"--compare-space {args.compare_space} has the families "
                         f"{', '.join(other.families)}, the space measured "
                         f"{', '.join(args.checked_space.families)}; pass --families to compare the ones "
                         "both have")
    return args


# ---- who talks to whom ------------------------------------------------------------------------


def _parties(args: argparse.Namespace) -> tuple[dict[str, Any], str, list[int] | None]:
    """``(party per family, scheme, trained lengths or None)``: each party a `ModelBundle` with the
    families its encoder and decoder were trained against (``encoder_partner``/``decoder_partner``)."""
    from latentwire.agents.bundle import ModelBundle
    from latentwire.tinyworld.space import training_partners
    from latentwire.training.pairs import codec_run, load_model

    lengths: list[int] | None = None
    if args.codecs:
        folders = [Path(c) for c in args.codecs]
        scheme = "anchored: codecs trained against frozen ones in the shared space"
    else:
        space = args.checked_space
        lengths = space.lengths
        folders = [space.folder / f for f in space.families if not args.families or f in args.families]
        where = "shipped" if space.shipped else str(space.folder)
        scheme = f"{where}: each family aligned alone, joined by shared-space maps"
    parties = {}
    for folder in folders:
        codec, run = codec_run(folder)
        model, tokenizer = load_model(run["model"])
        party = ModelBundle(model, tokenizer, codec.eval(), latent_steps=int(run.get("latent_steps", 1)))
        # Whose decoder this encoder, and whose encoder this decoder, were trained against: a codec
        # trained alone, its own; anchored, the anchor's; a shared-space decoder, the reference's encoder.
        family = codec.config.family
        party.encoder_partner, party.decoder_partner = training_partners(run, family)
        parties[family] = party
    if args.families:
        missing = sorted(set(args.families) - set(parties))
        if missing:
            raise BenchError(f"--families {' '.join(missing)}: no codec for them among {', '.join(parties)}")
    if args.quick and not args.families:
        keep = sorted(parties, key=lambda f: (parties[f].decoder_partner != f, f))[:3]  # the reference first
        parties = {f: parties[f] for f in keep}
    if len(parties) < 2:
        raise BenchError(f"{len(parties)} aligned families; the benchmark needs two or more")
    if any(p.decoder_partner != f for f, p in parties.items()):
        scheme += "; decoders anchored to the reference encoder"
    return parties, scheme, lengths


def _trained_together(parties: dict[str, Any], sender: str, receiver: str) -> bool:
    """Whether the sender's encoder and the receiver's decoder were trained against each other:
    a codec trained alone with itself; an anchored codec with the family it was anchored to
    (both directions); a shared-space decoder with the reference's encoder."""
    return parties[sender].encoder_partner == receiver or parties[receiver].decoder_partner == sender


# ---- accuracy -----------------------------------------------------------------------------------


def _generate(party: Any, texts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """``party``'s greedy replies to ``texts`` as text (blank image at its slots)."""
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        out += party.answer(texts[start:start + batch_size], max_new_tokens=max_new_tokens)
    return out


def _accuracy(parties: dict[str, Any], episodes: list[Any], limit: int, batch_size: int) -> dict[str, Any]:
    """Per ordered pair and mode, the per-episode ``(exact, char)`` scores, as arrays ``(n,)``."""
    import torch

    from latentwire.tinyworld.tasks import score
    from latentwire.training.pairs import derangement

    gold = [ep.answer for ep in episodes]
    sender_name, receiver_name = episodes[0].senders[0].name, episodes[0].receiver.name
    sender_prompts = [ep.prompt(sender_name) for ep in episodes]
    student = [ep.prompt(receiver_name, mode="latent") for ep in episodes]
    oracle = [ep.prompt(receiver_name) for ep in episodes]
    order = torch.tensor(derangement(len(episodes), len(episodes)))  # whose latent each episode gets

    def scored(predicted: list[str]) -> tuple[np.ndarray, np.ndarray]:
        s = [score(p, g) for p, g in zip(predicted, gold)]
        return np.array([x.exact for x in s]), np.array([x.char for x in s])

    spoken, sent = {}, {}
    for family, party in parties.items():
        spoken[family] = torch.cat([party.speak(sender_prompts[i:i + batch_size])
                                    for i in range(0, len(episodes), batch_size)])  # (n, K, D)
        limit_sent = len(episodes[0].messages[sender_name]) + 4
        sent[family] = _generate(party, sender_prompts, limit_sent, batch_size)
    rows: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for r_family, receiver in parties.items():
        progress(f"  receiver {r_family}")
        alone = {"text_oracle": scored(_generate(receiver, oracle, limit, batch_size)),
                 "none": scored(_generate(receiver, student, limit, batch_size))}
        for s_family in parties:
            tokens = spoken[s_family]
            latent, shuffled = [], []
            for i in range(0, len(episodes), batch_size):
                chunk = student[i:i + batch_size]
                latent += receiver.answer(chunk, tokens=tokens[i:i + batch_size], max_new_tokens=limit)
                shuffled += receiver.answer(chunk, tokens=tokens[order[i:i + batch_size]],
                                            max_new_tokens=limit)
            reading = [ep.prompt(receiver_name, messages={sender_name: m})
                       for ep, m in zip(episodes, sent[s_family])]
            rows[(s_family, r_family)] = {"latent": scored(latent), "shuffled": scored(shuffled),
                                          "text_sent": scored(_generate(receiver, reading, limit,
                                                                        batch_size)),
                                          **alone}
    return rows


# ---- wall-clock ----------------------------------------------------------------------------------


def _timed(sender: Any, receiver: Any, episodes: list[Any], limit: int) -> dict[str, Any]:
    """Each episode's exchange alone (batch 1), text and latent interleaved: seconds and scores."""
    import torch

    from latentwire.tinyworld.tasks import score

    sender_name, receiver_name = episodes[0].senders[0].name, episodes[0].receiver.name
    message_limit = len(episodes[0].messages[sender_name]) + 4

    def text_exchange(ep: Any) -> str:
        written = sender.answer([ep.prompt(sender_name)], max_new_tokens=message_limit)[0]
        reading = ep.prompt(receiver_name, messages={sender_name: written})
        return receiver.answer([reading], max_new_tokens=limit)[0]

    def latent_exchange(ep: Any) -> str:
        tokens = sender.speak([ep.prompt(sender_name)])
        student = ep.prompt(receiver_name, mode="latent")
        return receiver.answer([student], tokens=tokens, max_new_tokens=limit)[0]

    out: dict[str, Any] = {"text_s": [], "latent_s": [], "text_exact": [], "latent_exact": []}
    with torch.no_grad():
        text_exchange(episodes[0])  # warm-up
        latent_exchange(episodes[0])
        for ep in episodes:
            for mode, run in (("text", text_exchange), ("latent", latent_exchange)):
                began = time.perf_counter()
                answer = run(ep)
                out[f"{mode}_s"].append(time.perf_counter() - began)
                out[f"{mode}_exact"].append(score(answer, ep.answer).exact)
    return {k: np.array(v) for k, v in out.items()}


# ---- figures -----------------------------------------------------------------------------------


def _stack(rows: dict[tuple[str, str], Any], pairs: list[tuple[str, str]], mode: str,
           metric: int) -> np.ndarray:
    """``(pairs, n)`` scores of ``mode`` (metric 0: exact, 1: per character)."""
    return np.stack([rows[p][mode][metric] for p in pairs]) if pairs else np.zeros((0, 0))


def _mean_over(a: np.ndarray, idx: np.ndarray) -> float | None:
    return float(a[:, idx].mean()) if a.size else None


def _ratio(a: np.ndarray, b: np.ndarray):
    def stat(idx: np.ndarray) -> float | None:
        top, bottom = _mean_over(a, idx), _mean_over(b, idx)
        return None if top is None or not bottom else top / bottom
    return stat


def _figures(rows: dict[tuple[str, str], Any], cotrained: set[tuple[str, str]]) -> dict[str, Any]:
    """Means with intervals over one block of episodes: per mode, per pair kind, and the ratios."""
    pairs = sorted(rows)
    seen = [p for p in pairs if p in cotrained]
    unseen = [p for p in pairs if p not in cotrained]
    n = next(iter(rows.values()))["latent"][0].shape[0]
    out: dict[str, Any] = {}
    for metric, suffix in ((0, "exact"), (1, "char")):
        for mode in MODES:
            a = _stack(rows, pairs, mode, metric)
            out[f"{mode}_{suffix}"] = figure(*bootstrap(lambda i, a=a: _mean_over(a, i), n))
        for kind, group in (("cotrained", seen), ("unseen", unseen)):
            a = _stack(rows, group, "latent", metric)
            out[f"{kind}_{suffix}"] = figure(*bootstrap(lambda i, a=a: _mean_over(a, i), n))
        out[f"latent_over_text_{suffix}"] = figure(*bootstrap(
            _ratio(_stack(rows, pairs, "latent", metric), _stack(rows, pairs, "text_oracle", metric)), n))
        out[f"unseen_over_cotrained_{suffix}"] = figure(*bootstrap(
            _ratio(_stack(rows, unseen, "latent", metric), _stack(rows, seen, "latent", metric)), n))
    return out


def _speedup(timed: dict[str, np.ndarray]) -> dict[str, Any]:
    n = len(timed["text_s"])

    def ratio(idx: np.ndarray) -> float:
        return float(np.median(timed["text_s"][idx]) / np.median(timed["latent_s"][idx]))

    return {"text_ms": round(float(np.median(timed["text_s"])) * 1e3, 3),
            "latent_ms": round(float(np.median(timed["latent_s"])) * 1e3, 3),
            "speedup": figure(*bootstrap(ratio, n)), "timed_episodes": n,
            "timed_text_exact": round(float(timed["text_exact"].mean()), 4),
            "timed_latent_exact": round(float(timed["latent_exact"].mean()), 4)}


def _every_length(blocks: dict[int, dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Per pair and mode, every length's episodes side by side (one row of scores per pair)."""
    return {pair: {mode: tuple(np.concatenate([b["rows"][pair][mode][m] for b in blocks.values()])
                               for m in (0, 1)) for mode in MODES}
            for pair in next(iter(blocks.values()))["rows"]}


def _summary(blocks: dict[int, dict[str, Any]], cotrained: set[tuple[str, str]], families: list[str],
             timed_pair: tuple[str, str]) -> dict[str, Any]:
    per_length = []
    for length, block in sorted(blocks.items()):
        row = {"length": length, **_figures(block["rows"], cotrained), **_speedup(block["timed"])}
        latent, text = row["latent_exact"]["value"], row["text_oracle_exact"]["value"]
        row["matched"] = bool(text and latent is not None and latent >= MATCH * text)
        per_length.append(row)
    matched = [r for r in per_length if r["matched"]]
    overall = _figures(_every_length(blocks), cotrained)
    keys = ("latent_over_text_exact", "latent_over_text_char", "unseen_over_cotrained_exact",
            "unseen_over_cotrained_char", "latent_exact", "latent_char", "text_oracle_exact",
            "text_sent_exact",
            "none_exact", "none_char", "shuffled_exact", "shuffled_char", "cotrained_exact", "unseen_exact")
    return {
        "families": families, "per_length": per_length,
        "matched_length": matched[-1]["length"] if matched else None,
        "matched_speedup": matched[-1]["speedup"] if matched else None,
        "timed_pair": list(timed_pair),
        **{k: overall[k] for k in keys},
        "chance_char": round(1 / 26, 4),
        "match_rule": f"latent exact >= {MATCH} x text_oracle exact, mean over all pairs",
        "ok": True,  # the run completed; the goals are reported, not enforced
    }


# ---- the run -------------------------------------------------------------------------------------


def _variant_key(space: Any) -> str | None:
    """``"weakly_supervised"`` or ``"label_free"``: the codec variant a space's manifest records
    (`latentwire train ship`); None for a space that records none."""
    variant = (space.manifest.get("variant") or "") if space is not None else ""
    if variant.startswith("weakly supervised"):
        return "weakly_supervised"
    if variant.startswith("label-free"):
        return "label_free"
    return None


def _measure(args: argparse.Namespace, json_path: str | None) -> dict[str, Any]:
    from latentwire.tinyworld.space import load_space

    started = time.time()
    report, summary, blocks = _measure_space(args)
    variants = {}
    if (key := _variant_key(args.checked_space)) is not None:
        variants[key] = dict(summary)  # the main summary's keys, without the variant blocks added below
    if args.compare_space:
        args.checked_space = load_space(args.compare_space, families=report["families"],
                                        lengths=report["lengths"])
        key = _variant_key(args.checked_space)
        if key is None or key in variants:
            raise BenchError(f"--compare-space {args.compare_space} records the variant "
                             f"{args.checked_space.manifest.get('variant')!r}; compare a space of the other "
                             "variant (label-free or weakly supervised) than the one measured")
        progress(f"the same episodes through {args.compare_space} ({key.replace('_', '-')})")
        args.timed_pair = summary["timed_pair"]  # the same exchanges timed in both
        other, variants[key], other_blocks = _measure_space(args)
        report["compare_pairs"] = other["pairs"]
        summary["label_free_minus_weakly_supervised"] = _variant_gap(
            blocks if key == "weakly_supervised" else other_blocks,
            other_blocks if key == "weakly_supervised" else blocks)
    summary.update(variants)
    report = {**report_header("mas", started), **report}
    if args.stream == "test":
        report["summary"] = summary
    else:  # never under the final name: the development stream is where recipes were tuned
        report["dev_summary"] = summary
        report["summary"] = {"ok": True, "stream": "dev", "final": False,
                             "note": "development-stream figures are in dev_summary; "
                                     "final figures need --stream test"}
    png = Path(args.png) if args.png else (Path(json_path).with_suffix(".png") if json_path else None)
    if png is not None:
        _plot(report, summary, png)
        report["png"] = str(png)
    return report


def _variant_gap(label_free: dict[int, Any], weakly: dict[int, Any]) -> dict[str, Any]:
    """Label-free minus weakly supervised latent accuracy over every pair and length, paired on the
    same episodes (both variants read the same stream), with its bootstrap interval."""
    free, weak = _every_length(label_free), _every_length(weakly)
    pairs = sorted(free)
    out = {}
    for metric, suffix in ((0, "exact"), (1, "char")):
        a, b = _stack(free, pairs, "latent", metric), _stack(weak, pairs, "latent", metric)
        out[suffix] = figure(*bootstrap(lambda i, a=a, b=b: _mean_over(a, i) - _mean_over(b, i), a.shape[1]))
    return out


def _measure_space(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[int, Any]]:
    """``(report fields, summary, per-length blocks)`` of the space in ``args.checked_space``
    (or ``args.codecs``) on ``args.stream``."""
    from latentwire.tinyworld.tasks import STREAMS, make_task

    parties, scheme, trained = _parties(args)
    lengths = args.lengths or trained or [8]
    if args.quick and not args.lengths:
        lengths = lengths[:2]
    families = list(parties)
    cotrained = {(s, r) for s in families for r in families if _trained_together(parties, s, r)}
    unseen = [(s, r) for s in families for r in families if (s, r) not in cotrained]
    timed_pair = tuple(args.timed_pair) if args.timed_pair else (unseen or sorted(cotrained))[0]
    if any(f not in parties for f in timed_pair):
        raise BenchError(f"--timed-pair {' '.join(timed_pair)}: not among the families {', '.join(families)}")
    seed = STREAMS[args.stream]
    blocks: dict[int, dict[str, Any]] = {}
    for length in lengths:
        rows: dict[tuple[str, str], Any] = {}
        for task in args.tasks:
            episodes = make_task(task, length).episodes(args.n, seed=seed)
            progress(f"accuracy: {task}, length {length}, {len(families) ** 2} pairs x {args.n} episodes")
            for pair, modes in _accuracy(parties, episodes, length + 4, args.batch_size).items():
                rows[pair] = modes if pair not in rows else {
                    m: tuple(np.concatenate([rows[pair][m][k], modes[m][k]]) for k in (0, 1)) for m in MODES}
        progress(f"timing: {timed_pair[0]} -> {timed_pair[1]}, length {length}, {args.timed} exchanges")
        episodes = make_task(args.tasks[0], length).episodes(args.timed, seed=seed)
        blocks[length] = {"rows": rows, "timed": _timed(parties[timed_pair[0]], parties[timed_pair[1]],
                                                        episodes, length + 4)}
    summary = _summary(blocks, cotrained, families, timed_pair)
    pairs = [{"length": length, "sender": s, "receiver": r, "cotrained": (s, r) in cotrained,
              **{f"{m}_{k}": round(float(block["rows"][(s, r)][m][i].mean()), 4)
                 for m in MODES for i, k in ((0, "exact"), (1, "char"))}}
             for length, block in blocks.items() for s, r in sorted(block["rows"])]
    report = {"quick": args.quick, "stream": args.stream, "stream_seed": seed,
              "scheme": scheme, "families": families, "tasks": args.tasks, "n": args.n, "lengths": lengths,
              "trained_lengths": trained, "pairs": pairs}
    summary.update(stream=args.stream, scheme=scheme)
    return report, summary, blocks


def _plot(report: dict[str, Any], summary: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["per_length"]
    lengths = [r["length"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in (("latent_exact", "latent (all pairs)"),
                       ("unseen_exact", "latent, never trained together"),
                       ("cotrained_exact", "latent, co-trained"),
                       ("text_oracle_exact", "text (gold message)"),
                       ("text_sent_exact", "text (as sent)"), ("none_exact", "no message")):
        values = [r[key]["value"] for r in rows]
        lows = [v - (r[key]["ci95"] or [v, v])[0] if v is not None else 0 for v, r in zip(values, rows)]
        highs = [(r[key]["ci95"] or [v, v])[1] - v if v is not None else 0 for v, r in zip(values, rows)]
        left.errorbar(lengths, [v if v is not None else float("nan") for v in values], yerr=[lows, highs],
                      marker="o", capsize=3, label=label)
    left.set_xscale("log", base=2)
    left.set_xlabel("message length (characters = tokens)")
    left.set_ylabel("receiver exact match (95% CI)")
    left.set_title(f"accuracy, {report['stream']} stream, {report['n']} episodes per pair")
    left.legend(fontsize=7)
    right.plot(lengths, [r["text_ms"] for r in rows], "o-", label="text")
    right.plot(lengths, [r["latent_ms"] for r in rows], "o-", label="latent")
    right.set_xscale("log", base=2)
    right.set_xlabel("message length (tokens)")
    right.set_ylabel("end-to-end ms per exchange (median, batch 1)")
    right.set_title("{} -> {}, the same exchanges, scored".format(*summary["timed_pair"]))
    right.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _fmt(f: dict[str, Any] | None, spec: str = ".2f") -> str:
    if not f or f["value"] is None:
        return "n/a"
    ci = f["ci95"]
    return f"{f['value']:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def _render(report: dict[str, Any]) -> str:
    final = report["stream"] == "test"
    s = report["summary"] if final else report["dev_summary"]
    title = "test stream" if final else "DEVELOPMENT stream (where recipes were tuned): not final figures"
    quick = "  [quick]" if report["quick"] else ""
    lines = [f"latentwire bench mas  ({title}; {report['scheme']}){quick}",
             "", f"{'len':>4} {'sender':11} {'receiver':12} {'latent':>11} {'text gold':>11} "
                 f"{'text sent':>11} "
                 f"{'none':>11} {'shuffled':>11}"]
    for r in report["pairs"]:
        cells = " ".join(f"{r[f'{m}_exact']:>4.2f}/{r[f'{m}_char']:<6.2f}" for m in MODES)
        receiver = r["receiver"] + ("*" if r["cotrained"] else " ")
        lines.append(f"{r['length']:>4} {r['sender']:11} {receiver:12} {cells}")
    lines += ["", "exact/per-character accuracy; * = encoder and decoder trained together", "",
              "per length (mean over pairs, 95% bootstrap CI over episodes; timing: {} -> {}, batch 1, "
              "median)".format(*s["timed_pair"]),
              f"{'len':>4} {'latent exact':>20} {'text exact':>20} {'unseen/co-trained':>20} "
              f"{'text ms':>8} {'latent ms':>9} {'speedup':>20} matched"]
    for r in s["per_length"]:
        lines.append(f"{r['length']:>4} {_fmt(r['latent_exact']):>20} {_fmt(r['text_oracle_exact']):>20} "
                     f"{_fmt(r['unseen_over_cotrained_exact']):>20} {r['text_ms']:>8.1f} "
                     f"{r['latent_ms']:>9.1f} "
                     f"{_fmt(r['speedup']):>20} {'yes' if r['matched'] else 'no'}")
    lines += ["", f"matched_speedup {_fmt(s['matched_speedup'])} at matched_length {s['matched_length']} "
                  f"({s['match_rule']})",
              f"latent_over_text_exact {_fmt(s['latent_over_text_exact'])}, "
              f"unseen_over_cotrained_exact {_fmt(s['unseen_over_cotrained_exact'])}, "
              f"no message {_fmt(s['none_exact'])}, shuffled {_fmt(s['shuffled_exact'])}"]
    return "\n".join(lines)


def run(json_path: str | None, quick: bool, argv: list[str]) -> int:
    """Entry point of ``latentwire bench mas``."""
    return run_report("mas", json_path, lambda: _parse(argv, quick), lambda a: _measure(a, json_path),
                      _render, requires="torch")
