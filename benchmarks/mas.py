"""``latentwire bench mas``: latent messages against text messages between tinyworld VLM agents.

Two measurements, each with its baseline in the same run:

* **Accuracy per ordered pair of families and task**: the receiver's exact match (and
  per-character accuracy) reading the sender's latent through the shared space (`pairs.evaluate_pair`),
  beside the same receiver reading the message as text, with no message, and with a shuffled
  latent (another episode's: the control that shows the information really travels). Codecs come
  from ``--space DIR`` (the output of ``latentwire train space-maps``: one folder per family, each
  aligned alone, joined only through its shared-space maps; ``--hub`` is its deprecated old
  name), or from ``--codecs DIR...`` (codecs trained with ``train codec --anchor-to`` into one
  family's space: the anchored scheme). Pairs whose encoder and decoder were trained against each other (a family with itself in the reference
  scheme; a family with the one it was anchored to) are the co-trained ceiling, every other pair
  was never trained together.
* **End-to-end wall-clock** of one sender -> receiver exchange, latent vs text, for message
  lengths 8 to 128 tokens, with equal budgets: in text mode the sender generates the message
  token by token (``length`` tokens) and the receiver reads it in its prompt; in latent mode the
  sender reads, thinks ``latent_steps`` steps and encodes, the receiver decodes at its slots;
  both receivers then generate the same ``answer_tokens`` tokens. Interleaved repeats, medians.

Writes a table, the JSON (top-level ``summary``: ``latent_over_text_accuracy``,
``speedup_latent_vs_text`` at 32 tokens, ``no_message_accuracy``, ``shuffled_accuracy``,
``chance_accuracy``, ``unseen_over_cotrained_accuracy``) and a PNG next to the JSON.
``--quick`` makes its own small codecs (a few training steps) so the whole path runs in a minute;
its accuracies mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ._report import bench_parser, progress, report_header, run_report

ONE_SENDER_TASKS = ("secret", "reverse", "sort")


class _Deprecated(argparse.Action):
    """Store like ``--space``, after a warning on stderr naming the new option (for ``--hub``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        progress(f"{option_string} is deprecated, use --{self.dest}")
        setattr(namespace, self.dest, values)


def _parse(argv: list[str], quick: bool) -> argparse.Namespace:
    parser = bench_parser("mas", __doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--space", metavar="DIR",
                        help="space-maps output folder (one codec folder per family): the reference scheme")
    # The old name of --space, kept working for scripts written before the rename; not in --help.
    source.add_argument("--hub", dest="space", action=_Deprecated, help=argparse.SUPPRESS)
    source.add_argument("--codecs", nargs="+", metavar="DIR",
                        help="codec folders already in one space (train codec --anchor-to): the anchored scheme")
    parser.add_argument("--tasks", nargs="+", default=list(ONE_SENDER_TASKS), choices=ONE_SENDER_TASKS)
    parser.add_argument("--n", type=int, default=8 if quick else 64, help="episodes per task and pair")
    parser.add_argument("--lengths", nargs="+", type=int, default=[8, 32] if quick else [8, 16, 32, 64, 128])
    parser.add_argument("--repeats", type=int, default=2 if quick else 5, help="timing repeats (median)")
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--png", help="plot file (default: next to --json)")
    args = parser.parse_args(argv)
    args.quick = quick
    if args.space is None and args.codecs is None and not quick:
        parser.error("--space DIR or --codecs DIR... is required (latentwire train space-maps ...), or use --quick")
    return args


def _quick_space(folder: Path) -> Path:
    """Three families, each aligned for a few steps and joined by shared-space maps: the whole path, fast."""
    from latentwire.training.align import AlignConfig, align
    from latentwire.training.anchors import tinyworld_anchors, write_anchors
    from latentwire.training.shared_space import fit_shared_maps

    codecs = []
    for family in ("gemma3", "llava", "smolvlm"):
        progress(f"quick: aligning {family} for 4 steps")
        codecs.append(align(AlignConfig(model=family, steps=4, batch_size=4, latent_steps=2, n_anchors=16,
                                        eval_every=0, eval_n=2, num_tokens=4, width=16, progress=False,
                                        checkpoint_every=0, out_dir=str(folder / "codec" / family))))
    anchors = write_anchors(tinyworld_anchors("secret", 48, seed=7), folder / "anchors.jsonl")
    fit_shared_maps(codecs, reference="gemma3", anchors=anchors, out=folder / "space")
    return folder / "space"


def _parties(folders: list[Path]) -> dict[str, Any]:
    """A party per codec folder: a space-maps family folder (``shared_fit.json``, or ``hub_fit.json``
    from before the rename) or a ``train codec`` output (``align.json``), each naming the model and
    latent steps it runs with."""
    from latentwire.agents.bundle import ModelBundle
    from latentwire.training.pairs import codec_run, load_model

    parties = {}
    for folder in folders:
        codec, run = codec_run(folder)
        model, tokenizer = load_model(run["model"])
        party = ModelBundle(model, tokenizer, codec, latent_steps=int(run["latent_steps"]))
        # Whose decoder this encoder, and whose encoder this decoder, were trained against: a codec
        # trained alone, its own; anchored, the anchor's; a shared-space decoder, the reference's encoder
        # (and the encoder's own decoder is gone).
        family = codec.config.family
        scheme = run.get("scheme", "")  # "anchored to X", "anchored to X (decoder only)"
        anchored = scheme.split()[2] if scheme.startswith("anchored to ") else None
        untrained_encoder = run.get("decoder_anchored_to") or run.get("decoder_only")
        party.encoder_partner = None if untrained_encoder else (anchored or family)
        party.decoder_partner = run.get("decoder_anchored_to") or anchored or family
        parties[family] = party
    if len(parties) < 2:
        from ._report import BenchError

        raise BenchError(f"{len(parties)} aligned families in {', '.join(map(str, folders)) or 'nothing'}; "
                         "the benchmark needs two or more")
    return parties


def _trained_together(parties: dict[str, Any], sender: str, receiver: str) -> bool:
    """Whether the sender's encoder and the receiver's decoder were trained against each other:
    a codec trained alone with itself; an anchored codec with the family it was anchored to
    (both directions); a shared-space decoder with the reference's encoder."""
    return parties[sender].encoder_partner == receiver or parties[receiver].decoder_partner == sender


def _accuracy(parties: dict[str, Any], tasks: list[str], n: int) -> list[dict[str, Any]]:
    from latentwire.training.anchors import tinyworld_anchors
    from latentwire.training.pairs import evaluate_pair

    rows = []
    for task in tasks:
        anchors = tinyworld_anchors(task, n, seed=1_000_003)  # the evaluation stream, never trained on
        for sender_family, sender in parties.items():
            for receiver_family, receiver in parties.items():
                progress(f"accuracy: {task} {sender_family} -> {receiver_family}")
                result = evaluate_pair(sender, receiver, anchors)
                rows.append({"task": task, "sender": sender_family, "receiver": receiver_family,
                             "cotrained": _trained_together(parties, sender_family, receiver_family), **{
                                 f"{mode}_{metric}": result[mode][metric]
                                 for mode in result for metric in ("exact", "char")}})
    return rows


def _timings(sender: Any, receiver: Any, lengths: list[int], repeats: int, answer_tokens: int) -> list[dict]:
    """Median seconds of one exchange per mode and message length (batch 1, interleaved)."""
    import random

    import torch

    from latentwire.agents.latent_io import listen

    def text_exchange(message: str) -> int:
        prompt = sender.prompts([f"saw: {message}\nmessage?"])
        sent = listen(sender.model, sender.adapter, None, prompt, max_new_tokens=len(message),
                      pad_id=sender.pad_id)[0]  # the sender writes its message: `length` tokens
        text = sender.tokenizer.decode(sent, skip_special_tokens=True)
        receiver.answer([f"sender: {text}\nsecret?"], max_new_tokens=answer_tokens)
        return len(sent)

    def latent_exchange(message: str) -> None:
        tokens = sender.speak([f"saw: {message}\nmessage?"])
        receiver.answer(["secret?"], tokens=tokens, max_new_tokens=answer_tokens)

    rng = random.Random(0)
    rows = []
    with torch.no_grad():
        for length in lengths:
            message = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))
            generated = text_exchange(message)  # warm-up; greedy, so every run writes as many tokens
            latent_exchange(message)
            seconds: dict[str, list[float]] = {"text": [], "latent": []}
            for _ in range(repeats):
                for mode, run in (("text", text_exchange), ("latent", latent_exchange)):
                    began = time.perf_counter()
                    run(message)
                    seconds[mode].append(time.perf_counter() - began)
            text_s, latent_s = statistics.median(seconds["text"]), statistics.median(seconds["latent"])
            rows.append({"length": length, "text_s": round(text_s, 5), "latent_s": round(latent_s, 5),
                         "speedup": round(text_s / latent_s, 3), "text_tokens_generated": generated,
                         "latent_tokens_generated": 0, "answer_tokens": answer_tokens,
                         "latent_steps": sender.latent_steps})
    return rows


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _summary(rows: list[dict[str, Any]], timings: list[dict[str, Any]]) -> dict[str, Any]:
    latent = _mean([r["latent_exact"] for r in rows])
    text = _mean([r["text_exact"] for r in rows])
    unseen = _mean([r["latent_exact"] for r in rows if not r["cotrained"]])
    cotrained = _mean([r["latent_exact"] for r in rows if r["cotrained"]])
    unseen_char = _mean([r["latent_char"] for r in rows if not r["cotrained"]])
    cotrained_char = _mean([r["latent_char"] for r in rows if r["cotrained"]])
    at32 = next((t for t in timings if t["length"] == 32), timings[-1] if timings else None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 4) if a is not None and b else None

    return {
        "latent_over_text_accuracy": ratio(latent, text),
        "latent_over_text_char_accuracy": ratio(_mean([r["latent_char"] for r in rows]),
                                                _mean([r["text_char"] for r in rows])),
        "latent_accuracy": latent, "text_accuracy": text,
        "no_message_accuracy": _mean([r["none_exact"] for r in rows]),
        "shuffled_accuracy": _mean([r["shuffled_exact"] for r in rows]),
        "no_message_char_accuracy": _mean([r["none_char"] for r in rows]),
        "shuffled_char_accuracy": _mean([r["shuffled_char"] for r in rows]),
        "chance_accuracy": round((1 / 26) ** 8, 12), "chance_char_accuracy": round(1 / 26, 4),
        "unseen_over_cotrained_accuracy": ratio(unseen, cotrained),
        "unseen_over_cotrained_char_accuracy": ratio(unseen_char, cotrained_char),
        "speedup_latent_vs_text": at32 and at32["speedup"],
        "speedup_at_length": at32 and at32["length"],
        "goals": {"latent_over_text_accuracy": 0.95, "speedup_latent_vs_text": 3.0,
                  "unseen_over_cotrained_accuracy": 0.9},
        "ok": True,  # the run completed; the goals are reported, not enforced
    }


def _plot(report: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, timings = report["pairs"], report["timings"]
    pairs = sorted({(r["sender"], r["receiver"]) for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.2
    for i, mode in enumerate(("latent", "text", "none", "shuffled")):
        values = [statistics.fmean(r[f"{mode}_char"] for r in rows if (r["sender"], r["receiver"]) == p)
                  for p in pairs]
        left.bar([j + i * width for j in range(len(pairs))], values, width, label=mode)
    left.set_xticks([j + 1.5 * width for j in range(len(pairs))], [f"{s}\n->{r}" for s, r in pairs],
                    fontsize=7)
    left.set_ylabel("receiver per-character accuracy (mean over tasks)")
    left.set_title("accuracy per ordered pair")
    left.legend(fontsize=8)
    lengths = [t["length"] for t in timings]
    right.plot(lengths, [t["text_s"] * 1e3 for t in timings], "o-", label="text")
    right.plot(lengths, [t["latent_s"] * 1e3 for t in timings], "o-", label="latent")
    right.set_xscale("log", base=2)
    right.set_xlabel("message length (tokens)")
    right.set_ylabel("end-to-end ms (median)")
    right.set_title("one exchange, batch 1")
    right.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _measure(args: argparse.Namespace, json_path: str | None) -> dict[str, Any]:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="latentwire-mas-") as scratch:
        if args.codecs:
            folders, scheme = [Path(c) for c in args.codecs], "anchored: codecs trained against frozen ones in the shared space"
        else:
            from latentwire.training.pairs import read_fit_record

            space = Path(args.space) if args.space else _quick_space(Path(scratch))
            folders = sorted(p for p in space.iterdir() if read_fit_record(p) is not None)
            scheme = None
        parties = _parties(folders)
        if scheme is None:
            hidden = max(p.codec.config.shared_hidden for p in parties.values())
            maps = f"affine + {hidden}-wide residual MLP" if hidden else "affine, ridge"
            scheme = f"reference: each family aligned alone, joined by shared-space maps ({maps})"
            if any(p.decoder_partner != f for f, p in parties.items()):
                scheme += "; decoders anchored to the reference encoder"
        rows = _accuracy(parties, args.tasks, args.n)
        families = list(parties)
        progress(f"timing: {families[0]} -> {families[1]}")
        timings = _timings(parties[families[0]], parties[families[1]], args.lengths, args.repeats,
                           args.answer_tokens)
    report = {**report_header("mas", started), "quick": args.quick, "families": families,
              "tasks": args.tasks, "n": args.n, "pairs": rows, "timings": timings,
              "summary": {**_summary(rows, timings), "scheme": scheme}}
    png = Path(args.png) if args.png else (Path(json_path).with_suffix(".png") if json_path else None)
    if png is not None:
        _plot(report, png)
        report["png"] = str(png)
    return report


def _render(report: dict[str, Any]) -> str:
    lines = [f"latentwire bench mas  ({'quick: untrained codecs, accuracies mean nothing' if report['quick'] else 'tinyworld'})",
             "", f"{'task':8} {'sender':12} {'receiver':12} {'latent':>13} {'text':>13} {'none':>13} {'shuffled':>13}"]
    for r in report["pairs"]:
        cells = " ".join(f"{r[f'{m}_exact']:>5.2f}/{r[f'{m}_char']:<6.2f}" for m in ("latent", "text", "none", "shuffled"))
        mark = "*" if r["cotrained"] else " "
        lines.append(f"{r['task']:8} {r['sender']:12} {r['receiver'] + mark:12} {cells}")
    timed = report["timings"][0] if report["timings"] else {}
    lines += ["", "exact/per-character accuracy; * = encoder and decoder trained together", "",
              f"one exchange {report['families'][0]} -> {report['families'][1]}, batch 1, median; the sender "
              f"thinks {timed.get('latent_steps')} latent step(s), both answer {timed.get('answer_tokens')} tokens",
              f"{'length':>6} {'text ms':>9} {'latent ms':>10} {'speedup':>8} {'text tokens':>12}"]
    for t in report["timings"]:
        lines.append(f"{t['length']:>6} {t['text_s'] * 1e3:>9.1f} {t['latent_s'] * 1e3:>10.1f} "
                     f"{t['speedup']:>7.2f}x {t['text_tokens_generated']:>12}")
    s = report["summary"]
    lines += ["", "summary: " + ", ".join(f"{k}={s[k]}" for k in (
        "latent_over_text_accuracy", "latent_over_text_char_accuracy", "speedup_latent_vs_text",
        "no_message_accuracy", "shuffled_accuracy", "chance_accuracy", "unseen_over_cotrained_accuracy",
        "unseen_over_cotrained_char_accuracy"))]
    return "\n".join(lines)


def run(json_path: str | None, quick: bool, argv: list[str]) -> int:
    """Entry point of ``latentwire bench mas``."""
    return run_report("mas", json_path, lambda: _parse(argv, quick), lambda a: _measure(a, json_path),
                      _render, requires="torch")
