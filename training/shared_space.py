"""``latentwire train space-maps``: join separately aligned codecs through one reference space.

Each family's codec is trained alone (``latentwire train codec``), in its own codec space. This
job fits, per family, the two maps to and from the reference family's space (affine by ridge
regression, closed form, `UniversalVisualCodec.fit_shared_maps`) on a shared anchor set: the family
and the reference each think on every anchor's sender prompt, their codecs encode it, and the
maps send one family's latent of an anchor onto the reference's latent of the same anchor. Any
two fitted families then talk through the shared space without ever having been trained together:
N jobs for N families, not N^2 pairs.

It is incremental: the output folder holds one sub-folder per family (the codec with its maps,
``config.json`` + ``model.safetensors``, and ``shared_fit.json``: reference, ridge, the model and
latent steps to run it with, anchor-set and source-codec digests, fit errors). A family whose folder already matches (same reference, ridge,
anchors and source codec) is left alone, byte for byte; adding a family computes only its maps.

    latentwire train space-maps --codec runs/codec/gemma3 runs/codec/qwen2_5_vl runs/codec/llava \\
        --reference gemma3 --anchors anchors.jsonl --out runs/space

Each codec folder's ``align.json`` names the model it was trained with (``config.model``) and its
``latent_steps``; ``--model FAMILY=SPEC`` overrides the model.

The anchors are split three ways (`split_rows`): the maps are fitted on the first 80 %, the next
10 % (stop rows) only pick the step a residual MLP keeps, and the errors the printout and
``shared_fit.json`` give (``heldout``: the affine part alone and the whole map) are measured on the
last 10 % (report rows), which nothing was fitted or chosen on.

``--hidden N`` adds a residual MLP (N wide) to each affine map, trained on what the affine part
leaves (`fit_maps`, `fit_residual`: a small job on the training loop, `loop.TrainLoop`, without
checkpoints). Two codecs
trained apart are not affine functions of each other, so this needs many anchors (tens of
thousands: they cost only a forward pass each) and pays: see docs/benchmarks.md.

``--decoder FAMILY=DIR`` gives a family the decoder of a codec trained with ``train codec
--anchor-to`` the reference codec (one more job per family, still O(N)): that decoder learned to
read the reference encoder's latents, i.e. the shared space, so the family's map from the shared
space is the identity and only its encoder is mapped. This is the default recipe; why, and how it
compares with the others, is in docs/benchmarks.md:

    latentwire train codec --model llava --anchor-to runs/codec/gemma3 --decoder-only --out runs/anchored/llava
    latentwire train space-maps --codec runs/codec/gemma3 runs/codec/llava --reference gemma3 \\
        --anchors anchors.jsonl --hidden 2048 --decoder llava=runs/anchored/llava --out runs/space
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentwire.errors import ConfigError

from ._jobs import file_sha256, replaced_folder
from .loop import TrainConfig, TrainJob, TrainLoop, default
from .pairs import FIT_FILE, MODEL_HELP, check_model_spec, read_fit_record

__all__ = ["FitResult", "ResidualFitConfig", "fit_maps", "fit_residual", "fit_shared_maps", "main"]



@dataclass
class FitResult:
    """What happened to one family: ``fitted`` (new maps written), ``kept`` (already up to date)
    or ``reference`` (identity maps)."""

    family: str
    status: str
    to_shared_mse: float | None = None
    from_shared_mse: float | None = None
    heldout: dict[str, dict[str, float]] | None = None


#: Record keys present only when the feature is used, so space folders fitted without it stay up to date.
OPTIONAL_KEYS = ("shared_hidden", "residual_steps", "decoder_sha256")


# ---- the residual MLPs: a small job on the training loop -------------------------------------


@dataclass
class ResidualFitConfig(TrainConfig):
    """How `fit_residual` trains a map's residual MLP: constant ``lr``, plain AdamW, no clipping,
    no files; evaluated on the stop rows every ``eval_every`` steps and at the end."""

    steps: int = default("steps", 3000)
    lr: float = default("lr", 1e-3)
    min_lr_ratio: float = default("min_lr_ratio", 1.0)
    weight_decay: float = default("weight_decay", 1e-4)
    adam_beta2: float = default("adam_beta2", 0.999)
    grad_clip: float = default("grad_clip", 0.0)
    checkpoint_every: int = default("checkpoint_every", 0)
    progress: bool = default("progress", False)
    batch_size: int = field(default=256, metadata={"help": "anchor rows per step"})
    stop_share: float = field(default=0.1, metadata={
        "help": "share of the rows (just before the report rows) that picks the step kept; never fitted"})
    report_share: float = field(default=0.1, metadata={
        "help": "share of the rows (the last ones) the reported errors are measured on; nothing is "
                "fitted or chosen on them"})


def split_rows(n: int, stop_share: float = 0.1, report_share: float = 0.1) -> tuple[slice, slice, slice]:
    """Three disjoint row ranges of an anchor set: ``fit`` (the ridge and the MLP are fitted on it),
    ``stop`` (early stopping picks the MLP's step on it) and ``report`` (the errors a fit record
    gives are measured on it, and nothing else). The last rows are held out; anchors are drawn at
    random, so the order carries no information."""
    if not (0 < stop_share < 1 and 0 < report_share < 1 and stop_share + report_share < 1):
        raise ConfigError(f"stop_share and report_share must be in (0, 1) with a sum below 1, "
                          f"got {stop_share} and {report_share}")
    n_report = max(1, int(round(n * report_share)))
    n_stop = max(1, int(round(n * stop_share)))
    n_fit = n - n_stop - n_report
    if n_fit < 2:
        raise ConfigError(f"{n} anchors are too few to fit a map and hold out rows to stop and to report on; "
                          "make more anchors (latentwire train anchors --n)")
    return slice(0, n_fit), slice(n_fit, n_fit + n_stop), slice(n_fit + n_stop, n)


def _relative(prediction: Any, target: Any) -> float:
    """Squared error relative to the target's variance (0 = exact, 1 = as good as its mean)."""
    return float(((prediction - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum().clamp_min(1e-12))


class _ResidualJob(TrainJob):
    """The residual MLP of a `TokenMap` fitted to what its affine part leaves on the fit rows; keeps
    the MLP of the best evaluation on the stop rows (step 0: the MLP adds nothing)."""

    name = "residual map"

    def __init__(self, token_map: Any, x: Any, y: Any, config: ResidualFitConfig) -> None:
        import torch
        from torch import nn

        mlp = token_map.residual
        if mlp is None:
            raise ValueError("this map has no residual MLP (shared_hidden = 0)")
        fit, stop, _ = split_rows(x.shape[0], config.stop_share, config.report_share)
        self.module, self.config, self.token_map = mlp, config, token_map
        with torch.no_grad():
            self.train_x, self.stop_x, self.stop_y = x[fit], x[stop], y[stop]
            train_r = y[fit] - token_map.affine(self.train_x)
            mlp.in_mean.copy_(self.train_x.mean(0))
            mlp.in_scale.copy_(self.train_x.std(0).clamp_min(1e-6))
            mlp.out_scale.copy_(train_r.std(0).clamp_min(1e-6))
            self.target = train_r / mlp.out_scale  # (n, F), standardised
            with torch.random.fork_rng(devices=[]):  # deterministic per seed, the caller's RNG untouched
                torch.manual_seed(config.seed)
                mlp.down.reset_parameters()
            nn.init.zeros_(mlp.up.weight)
            nn.init.zeros_(mlp.up.bias)
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.best = (self.stop_error(), 0, self.snapshot())

    def stop_error(self) -> float:
        """The whole map's relative error on the stop rows."""
        import torch

        with torch.no_grad():
            return _relative(self.token_map.flat(self.stop_x), self.stop_y)

    def snapshot(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self.module.state_dict().items()}

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.module.parameters())}]  # decay on every parameter

    def step(self, step: int, model: Any) -> tuple[Any, dict[str, float]]:
        import torch
        import torch.nn.functional as F

        rows = torch.randint(0, self.train_x.shape[0], (self.config.batch_size,),
                             generator=self.generator).to(self.train_x.device)
        return F.mse_loss(model.core(self.train_x[rows]), self.target[rows]), {}

    def evaluate(self, step: int) -> dict[str, Any]:
        error = self.stop_error()
        if error < self.best[0]:
            self.best = (error, step, self.snapshot())
        return {"stop_error": error}


def report_errors(token_map: Any, x: Any, y: Any,
                  config: ResidualFitConfig | None = None) -> dict[str, float]:
    """A fitted map's relative errors on the report rows of ``x``/``y`` (N, F): of its affine part
    alone (``affine``) and of the whole map (``map``; the same without a residual MLP)."""
    import torch

    config = config or ResidualFitConfig()
    _, _, report = split_rows(x.shape[0], config.stop_share, config.report_share)
    with torch.no_grad():
        xr, yr = x[report], y[report]
        return {"affine": round(_relative(token_map.affine(xr), yr), 5),
                "map": round(_relative(token_map.flat(xr), yr), 5)}


def fit_residual(token_map: Any, x: Any, y: Any, config: ResidualFitConfig | None = None) -> dict[str, float]:
    """Train ``token_map``'s residual MLP on what its (already fitted) affine part leaves of
    ``y (N, F)`` from ``x (N, F)`` on the fit rows (`split_rows`), keeping the MLP of the best step
    on the stop rows (early stopping; step 0 = the MLP adds nothing). Deterministic for
    ``config.seed``. Returns the errors on the report rows (`report_errors`), the error on the stop
    rows (``stop``) and the ``step`` kept."""
    config = config or ResidualFitConfig()
    job = _ResidualJob(token_map, x, y, config)
    TrainLoop(config, device_placement=False).run(job, None)
    job.module.load_state_dict(job.best[2])
    return {**report_errors(token_map, x, y, config), "stop": round(job.best[0], 5), "step": job.best[1]}


def fit_maps(codec: Any, family_tokens: Any, reference_tokens: Any, ridge: float = 1e-3, *,
             residual_steps: int = 3000, seed: int = 0, from_shared: bool = True) -> Any:
    """Fit ``codec``'s shared-space maps on paired anchor tokens (N, K, D), three ways split
    (`split_rows`): the affine parts by ridge regression on the fit rows
    (`UniversalVisualCodec.fit_shared_maps`), then, where ``config.shared_hidden`` > 0, each map's
    residual MLP (`fit_residual`, ``residual_steps`` steps on the fit rows, the step kept chosen on
    the stop rows). Returns the `SharedSpaceFit` (its mean squared errors on the fit rows), with the
    errors on the report rows in ``heldout``."""
    import torch

    config = ResidualFitConfig(steps=residual_steps, seed=seed)
    n = torch.as_tensor(family_tokens).shape[0]
    fit_rows, _, _ = split_rows(n, config.stop_share, config.report_share)
    codec.fit_shared_maps(family_tokens[fit_rows], reference_tokens[fit_rows], ridge, from_shared=from_shared)
    maps = codec.shared
    like = maps.to_shared.weight
    x, y = torch.as_tensor(family_tokens).to(like), torch.as_tensor(reference_tokens).to(like)
    directions = [("to_shared", maps.to_shared, x, y)] + ([("from_shared", maps.from_shared, y, x)] if from_shared else [])
    heldout = {}
    for name, token_map, a, b in directions:
        a, b = a.flatten(1), b.flatten(1)
        heldout[name] = (fit_residual(token_map, a, b, config) if token_map.residual is not None
                         else {**report_errors(token_map, a, b, config), "step": 0})
    return maps.measure(x[fit_rows], y[fit_rows], from_shared=from_shared, heldout=heldout)


# ---- the job ---------------------------------------------------------------------------------


def _shared_decoder(folder: Path, family: str, reference: str, reference_digest: str) -> Any:
    """The codec of an anchored run whose decoder reads the shared space: trained by ``train codec
    --anchor-to`` the reference codec (its ``align.json`` says so), for ``family``."""
    from latentwire.agents.codec import UniversalVisualCodec

    meta_file = folder / "align.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    scheme = meta.get("scheme", "no align.json")
    if scheme not in (f"anchored to {reference}", f"anchored to {reference} (decoder only)"):
        raise ConfigError(f"--decoder {family}={folder}: a shared-space decoder must come from `train codec --anchor-to` "
                          f"the reference ({reference}) codec; this run is {scheme!r}")
    if meta.get("anchor_sha256", reference_digest) != reference_digest:
        raise ConfigError(f"--decoder {family}={folder} was anchored to another {reference} codec than the "
                          "reference codec given here")
    codec = UniversalVisualCodec.from_pretrained(folder)
    if codec.config.family != family:
        raise ConfigError(f"--decoder {family}={folder} is a codec of {codec.config.family}")
    return codec


def _with_hidden(codec: Any, hidden: int) -> Any:
    """``codec`` with residual shared-space MLPs of width ``hidden`` (0: affine maps only); the encoder,
    decoder and affine maps carry over, any old residual MLPs do not (they are refitted)."""
    from dataclasses import replace

    from latentwire.agents.codec import UniversalVisualCodec

    if codec.config.shared_hidden == hidden:
        return codec
    rebuilt = UniversalVisualCodec(replace(codec.config, shared_hidden=hidden))
    missing, unexpected = rebuilt.load_state_dict(
        {k: v for k, v in codec.state_dict().items() if ".residual." not in k}, strict=False)
    if unexpected or any(".residual." not in k for k in missing):  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"rebuilding the codec changed more than its shared-space maps: {missing} {unexpected}")
    return rebuilt


def _source(folder: Path, models: dict[str, str], hidden: int) -> tuple[Any, str, int]:
    """``(codec, model spec, latent_steps)`` of a codec folder made by ``train codec``, its shared-space
    maps sized for ``hidden``."""
    from .pairs import codec_run

    codec, config = codec_run(folder)
    codec = _with_hidden(codec, hidden)
    spec = models.get(codec.config.family) or config.get("model")
    if spec is None:
        raise ConfigError(f"{folder}: no align.json naming its model; pass --model "
                          f"{codec.config.family}=SPEC")
    return codec, spec, int(config.get("latent_steps", 8))


def _write_atomically(folder: Path, codec: Any, fit: dict[str, Any]) -> None:
    """Write codec + fit record in a scratch folder, then move it over the old one."""
    with replaced_folder(folder) as scratch:
        codec.save_pretrained(scratch)
        (scratch / FIT_FILE).write_text(json.dumps(fit, indent=2, sort_keys=True) + "\n")


def fit_shared_maps(codecs: list[str | os.PathLike[str]], *, reference: str, anchors: str | os.PathLike[str],
                 out: str | os.PathLike[str], ridge: float = 1e-3, models: dict[str, str] | None = None,
                 batch_size: int = 64, hidden: int = 0, residual_steps: int = 3000,
                 decoders: dict[str, str | os.PathLike[str]] | None = None) -> list[FitResult]:
    """Fit (or keep) the shared-space maps of every codec against ``reference`` (a family name among
    them); write ``out/<family>/``. Returns what happened per family, reference first.

    ``hidden`` > 0 adds a residual MLP of that width to each affine map, trained ``residual_steps``
    steps on the anchors' fit rows (the stop rows pick the step kept; errors are reported on the
    report rows: `split_rows`).

    ``decoders``: per family, an anchored codec folder (``train codec --anchor-to`` the reference
    codec) whose decoder reads the shared space directly; that family keeps its own encoder (and map
    to the shared space) and takes this decoder with an identity map from the shared space."""
    import torch

    from latentwire.agents.bundle import ModelBundle

    from .anchors import read_anchors
    from .pairs import load_model

    if ridge <= 0:
        raise ConfigError(f"ridge must be > 0, got {ridge}")
    if hidden < 0 or residual_steps < 1:
        raise ConfigError(f"hidden must be >= 0 and residual_steps >= 1, got {hidden} and {residual_steps}")
    anchor_file = Path(anchors)
    anchor_set = read_anchors(anchor_file)
    anchors_digest = file_sha256(anchor_file)
    sources: dict[str, tuple[Path, Any, str, int]] = {}
    for folder in map(Path, codecs):
        codec, spec, steps = _source(folder, models or {}, hidden)
        family = codec.config.family
        if family in sources:
            raise ConfigError(f"two codecs of family {family!r}: {sources[family][0]} and {folder}")
        sources[family] = (folder, codec, spec, steps)
    if reference not in sources:
        raise ConfigError(f"reference family {reference!r} is not among the codecs ({', '.join(sources)}); "
                          f"give --reference one of those, or add a {reference} codec folder to --codec")
    ref_codec = sources[reference][1]
    for family, (folder, codec, _, _) in sources.items():
        shape = (codec.config.num_tokens, codec.config.width)
        if shape != (ref_codec.config.num_tokens, ref_codec.config.width):
            raise ConfigError(f"{folder}: latents of {shape[0]} x {shape[1]}, the reference {reference!r} has "
                              f"{ref_codec.config.num_tokens} x {ref_codec.config.width}; the shared space needs one shape")

    out = Path(out)
    ref_source = file_sha256(sources[reference][0] / "model.safetensors")
    shared_decoders: dict[str, tuple[Path, Any]] = {}
    for family, folder in (decoders or {}).items():
        if family not in sources or family == reference:
            raise ConfigError(f"--decoder {family}: a family among the codecs other than the reference "
                              f"({', '.join(f for f in sources if f != reference) or 'none'})")
        shared_decoders[family] = (Path(folder), _shared_decoder(Path(folder), family, reference, ref_source))

    def record(family: str) -> dict[str, Any]:
        # What a family's maps depend on; the reference's identity maps do not depend on the ridge.
        # model and latent_steps travel along, so a space-maps folder alone is enough to run the family.
        values = {"reference": reference, "anchors_sha256": anchors_digest, "anchors": len(anchor_set),
                  "reference_codec_sha256": ref_source, "model": sources[family][2],
                  "latent_steps": sources[family][3],
                  "source_codec_sha256": file_sha256(sources[family][0] / "model.safetensors")}
        if family == reference:
            return values
        # shared_hidden only when used, so affine space folders fitted before it existed stay up to date.
        residual = {"shared_hidden": hidden, "residual_steps": residual_steps} if hidden else {}
        decoder = ({"decoder_sha256": file_sha256(shared_decoders[family][0] / "model.safetensors")}
                   if family in shared_decoders else {})
        # The rows each part of the fit saw: a folder fitted before the three-way split is refitted.
        shares = ResidualFitConfig()
        splits = {"splits": {"fit": round(1 - shares.stop_share - shares.report_share, 6),
                             "stop": shares.stop_share, "report": shares.report_share}}
        return {**values, "ridge": ridge, **splits, **residual, **decoder}

    def up_to_date(family: str) -> bool:
        saved, wanted = read_fit_record(out / family), record(family)
        if saved is None:
            return False
        return all(saved.get(k) == wanted.get(k) for k in {*wanted, *OPTIONAL_KEYS})

    def tokens(family: str) -> Any:
        folder, codec, spec, steps = sources[family]
        model, tokenizer = load_model(spec)
        party = ModelBundle(model, tokenizer, codec, latent_steps=steps)
        with torch.no_grad():
            return torch.cat([party.speak([a.sender for a in anchor_set[i:i + batch_size]], to_shared=False)
                              for i in range(0, len(anchor_set), batch_size)])  # (N, K, D)

    results: list[FitResult] = []
    todo = [f for f in sources if not up_to_date(f)]
    if reference in todo:
        ref_codec.shared.reset_identity()
        _write_atomically(out / reference, ref_codec, {**record(reference), "role": "reference"})
        results.append(FitResult(reference, "reference"))
    else:
        results.append(FitResult(reference, "kept"))
    targets = [f for f in todo if f != reference]
    reference_tokens = tokens(reference) if targets else None
    for family in sources:
        if family == reference:
            continue
        if family not in targets:
            results.append(FitResult(family, "kept"))
            continue
        codec = sources[family][1]
        extra = {}
        if family in shared_decoders:
            folder, anchored = shared_decoders[family]
            try:
                codec.decoder.load_state_dict(anchored.decoder.state_dict())
            except RuntimeError as error:
                raise ConfigError(f"--decoder {family}={folder}: its decoder does not fit the {family} codec "
                                  f"({str(error).splitlines()[0]})") from None
            extra = {"decoder": str(folder), "decoder_anchored_to": reference}
        fit = fit_maps(codec, tokens(family), reference_tokens, ridge=ridge, residual_steps=residual_steps,
                       from_shared=family not in shared_decoders)
        _write_atomically(out / family, codec, {**record(family), **extra, "role": "family", "heldout": fit.heldout,
                                                "to_shared_mse": fit.to_shared_mse, "from_shared_mse": fit.from_shared_mse})
        results.append(FitResult(family, "fitted", fit.to_shared_mse, fit.from_shared_mse, fit.heldout))
    return results


def main(argv: list[str] | None = None) -> int:
    """``latentwire train space-maps``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="latentwire train space-maps", description=__doc__.splitlines()[0])
    parser.add_argument("--codec", nargs="+", required=True, metavar="DIR", help="codec folders (train codec)")
    parser.add_argument("--reference", required=True, help="the family whose codec space is the shared space")
    parser.add_argument("--anchors", required=True, help="anchor file shared by every family (JSONL)")
    parser.add_argument("--out", required=True, help="output folder, one sub-folder per family")
    parser.add_argument("--ridge", type=float, default=1e-3, help="ridge regulariser (relative)")
    parser.add_argument("--hidden", type=int, default=0,
                        help="width of a residual MLP on each affine map (0: affine maps only)")
    parser.add_argument("--residual-steps", type=int, default=3000, help="training steps of each residual MLP")
    parser.add_argument("--model", action="append", default=[], metavar="FAMILY=SPEC",
                        help=f"model to load for a family (default: its align.json); SPEC: {MODEL_HELP}")
    parser.add_argument("--decoder", action="append", default=[], metavar="FAMILY=DIR",
                        help="take this family's decoder from a codec trained with --anchor-to the reference")
    args = parser.parse_args(argv)

    def pairs(flag: str, items: list[str]) -> dict[str, str]:
        out = {}
        for item in items:
            family, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--{flag} takes FAMILY=VALUE, got {item!r}")
            out[family] = value
        return out

    models = pairs("model", args.model)
    for spec in models.values():
        check_model_spec(spec)  # a typo fails now, not after the reference folder is written
    for r in fit_shared_maps(args.codec, reference=args.reference, anchors=args.anchors, out=args.out,
                          ridge=args.ridge, models=models, hidden=args.hidden,
                          residual_steps=args.residual_steps, decoders=pairs("decoder", args.decoder)):
        from_shared = "anchored decoder" if r.from_shared_mse is None else f"from-shared {r.from_shared_mse:.4g}"
        errors = "" if r.to_shared_mse is None else f" (to-shared mse {r.to_shared_mse:.4g}, {from_shared})"
        held = "".join(f"; report rows {name}: affine {h['affine']:.3g}"
                       + (f" -> with MLP {h['map']:.3g} (step {h['step']})" if "stop" in h else "")
                       for name, h in (r.heldout or {}).items())
        print(f"{r.family}: {r.status}{errors}{held}")
    return 0
