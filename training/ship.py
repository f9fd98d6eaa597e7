"""Build the shipped tinyworld artefacts from one recorded recipe: models, codecs, shared space.

``latentwire train ship --out runs/ship`` runs every stage of `RECIPE` in order, each into its own
folder under ``--out``; a stage whose output is complete is skipped, and a stage cut short resumes
from its last checkpoint, so the same command continues a build that was stopped. Stages:

1. ``models/base/<family>``: pre-training from scratch on the five tasks at length 8, part of the
   receiver examples shown as screens (`pretrain.recipe`'s base stage);
2. ``models/long/<family>`` (when the recipe has a ``long`` stage): the same model trained further
   on longer messages (one length per batch), so that text messages of every benchmarked length
   are real baselines; the shipped recipe has none (docs/benchmarks.md: what it cost at length 8);
3. ``anchors/codec.jsonl`` and ``anchors/maps.jsonl``: secret-task anchors at the codec lengths;
4. ``codecs/<family>``: each family's codec alone (`align`: self-distillation with the picture
   term, the weakly supervised variant);
5. ``decoders/<family>``: every non-reference family's decoder trained to read the reference's
   encoder (``--anchor-to --decoder-only``);
6. ``space/<family>``: shared-space maps of every encoder into the reference space (ridge + a
   residual MLP), the decoders of stage 5 reading the shared space directly;
7. ``tuned/decoders/<family>`` and ``tuned/encoders/<family>`` (where the recipe's ``tune`` names
   them): every non-reference family's decoder trained further to read the reference's encoder
   (``train codec --init space/<family> --anchor-to space/<reference> --decoder-only``), then its
   encoder and its map into the shared space tuned end to end through the reference's frozen decoder
   and model (``--encoder-only``), label-free: the teacher is the reference reading the message as
   text. One job per family and half, O(N);
8. ``ship/``: what the package ships: ``checkpoints/<family>`` (the long models) and
   ``space/<family>`` (codec + maps, weights in ``recipe["ship_dtype"]``), with ``space.json`` (the
   recipe, the trained lengths, the file sizes and the digest of every file).

``--from-space DIR`` starts from a finished space instead (stages 1-6: the shipped one, or a build's
``ship/space``) and runs only the tune and the packaging: how a tune stage is added to a shipped
space without re-training what it starts from (the other families' files stay byte-identical).

``--install`` copies ``ship/`` into the package (``tinyworld/checkpoints`` and ``tinyworld/space``),
which is how the shipped files are made. ``--scale 0.01`` runs the same stages with a hundredth
of the steps and anchors (the reproduction test); its artefacts are not fit to ship.

Every seed here is below `STREAMS`' development and test seeds, so no stage sees an episode of
either stream.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from latentwire.errors import ConfigError
from latentwire.tinyworld.models import FAMILIES
from latentwire.tinyworld.space import MANIFEST
from latentwire.tinyworld.tasks import STREAMS

from ._jobs import file_sha256

__all__ = ["RECIPE", "build", "build_from_space", "check_recipe", "install", "main"]

#: The recorded recipe of the shipped artefacts. Changing it changes what `build` makes.
RECIPE: dict[str, Any] = {
    "name": "tinyworld-shared-space",
    "version": 1,
    "families": list(FAMILIES),
    "reference": "gemma3",
    "base": {"steps": 2000, "seed": 0, "lengths": [8], "screen_share": 0.3},
    # Further training on longer messages (e.g. {"steps": 600, "seed": 1, "lengths": [8, 16],
    # "length_per_batch": True}); None: the base models ship (docs/benchmarks.md says why).
    "long": None,
    "anchors": {"task": "secret", "lengths": [8], "codec_n": 20000, "codec_seed": 100,
                "maps_n": 60000, "maps_seed": 200},
    # The reference codec trains longer: its decoder and space are what every family is read through.
    "codec": {"steps": 2000, "reference_steps": 3000, "seed": 0, "latent_steps": 1, "image_slots": 16,
              "num_tokens": 8, "width": 64,
              "continuation": 20, "eval_n": 64},
    "decoder": {"steps": 1000, "seed": 0},
    "maps": {"ridge": 1e-4, "hidden": 1024, "residual_steps": 15000},
    # Stage 7 (None: the space ships as fitted): each non-reference family's decoder trained further
    # against the reference encoder, and (``encoder``, where set) its encoder and map tuned end to end
    # through the reference decoder and model, label-free. Each on its own tinyworld anchors
    # (``n_anchors`` of ``seed``, held-out ones of ``seed`` + 1).
    "tune": {"decoder": {"steps": 3000, "lr": 1e-3, "warmup_steps": 100, "seed": 300, "n_anchors": 20000},
             "encoder": {"steps": 4000, "lr": 3e-4, "warmup_steps": 200, "seed": 300, "n_anchors": 20000,
                         "picture_weight": 0.0, "latent_weight": 5.0}},
    "ship_dtype": "float16",
}


def _seeds(recipe: dict[str, Any]) -> list[int]:
    a = recipe["anchors"]
    return [recipe["base"]["seed"], a["codec_seed"], a["codec_seed"] + 1, a["maps_seed"],
            recipe["codec"]["seed"],
            recipe["decoder"]["seed"]] + ([recipe["long"]["seed"]] if recipe["long"] else []) + (
           [t[h]["seed"] + i for t in [recipe.get("tune") or {}] for h in ("decoder", "encoder") if t.get(h)
            for i in (0, 1)])


def check_recipe(recipe: dict[str, Any]) -> None:
    """Refuse a recipe that would train on the development or test stream, or names unknown families."""
    unknown = [f for f in recipe["families"] if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"recipe names unknown families {unknown}; tinyworld has {', '.join(FAMILIES)}")
    if recipe["reference"] not in recipe["families"]:
        raise ConfigError(f"the reference {recipe['reference']!r} is not among the recipe's families")
    lowest = min(STREAMS.values())
    if any(seed >= lowest for seed in _seeds(recipe)):
        raise ConfigError(f"recipe seeds must stay below {lowest}: the development and test streams "
                          "start there")


def _scaled(n: int, scale: float, floor: int = 2) -> int:
    return max(floor, round(n * scale))


def _done(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def _pretrain_stages(recipe: dict[str, Any], out: Path, family: str, scale: float, progress: bool) -> Path:
    from .pretrain import PretrainConfig, pretrain

    base, long = out / "models" / "base" / family, out / "models" / "long" / family
    b, lg = recipe["base"], recipe["long"]
    base_steps = _scaled(b["steps"], scale)
    if not _done(base, "tinyworld.json"):
        pretrain(PretrainConfig(family=family, out_dir=str(base), steps=base_steps, seed=b["seed"],
                                lengths=b["lengths"], screen_share=b["screen_share"], eval_every=0,
                                eval_n=_scaled(32, scale, 4), resume=True, progress=progress))
    if not lg:
        _length_eval(base, b["lengths"], _scaled(32, scale, 4))
        return base
    if not _done(long, "tinyworld.json"):
        pretrain(PretrainConfig(family=family, out_dir=str(long), resume_from=str(base),
                                steps=base_steps + _scaled(lg["steps"], scale), seed=lg["seed"],
                                lengths=lg["lengths"], length_per_batch=lg["length_per_batch"],
                                screen_share=b["screen_share"], eval_every=0, eval_n=_scaled(32, scale, 4),
                                resume=True, progress=progress))
    _length_eval(long, lg["lengths"], _scaled(32, scale, 4))
    return long


def _length_eval(folder: Path, lengths: list[int], n: int) -> None:
    """``lengths_eval.json``: the text-mode eval of every task at every length (the model's ceiling)."""
    target = folder / "lengths_eval.json"
    if target.is_file():
        return
    from latentwire.tinyworld.checkpoints import load_checkpoint

    from .evaluate import evaluate

    model, tokenizer = load_checkpoint(folder)
    result = {str(n_chars): evaluate(model, tokenizer, ["secret", "reverse", "sort"], length=n_chars, n=n)
              for n_chars in lengths}
    target.write_text(json.dumps(result, indent=2) + "\n")


def _anchor_file(path: Path, task: str, lengths: list[int], n: int, seed: int, eval_n: int) -> Path:
    """``n`` training anchors (lengths mixed, shuffled) then ``eval_n`` held-out ones of another
    seed: the layout `align` splits (the last ``eval_n`` lines are its evaluation)."""
    from .anchors import tinyworld_anchors, write_anchors

    if path.is_file():
        return path
    train = [a for length in lengths
             for a in tinyworld_anchors(task, n // len(lengths), length=length, seed=seed)]
    random.Random(f"ship|{seed}").shuffle(train)
    held = [a for length in lengths
            for a in tinyworld_anchors(task, max(1, eval_n // len(lengths)), length=length, seed=seed + 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    write_anchors(train + held, scratch)
    os.replace(scratch, path)  # whole or absent: two builds on two cores may race to write it
    return path


def _codec(recipe: dict[str, Any], out: Path, model: Path, anchors: Path, scale: float, progress: bool,
           anchor_to: Path | None = None) -> Path:
    from .align import AlignConfig, align

    c = recipe["codec"]
    if anchor_to is None:
        reference = out.name == recipe["reference"]
        steps, seed = _scaled(c["reference_steps"] if reference else c["steps"], scale), c["seed"]
    else:
        steps, seed = _scaled(recipe["decoder"]["steps"], scale), recipe["decoder"]["seed"]
    if not _done(out, "align.json"):
        align(AlignConfig(model=str(model), anchors=str(anchors), out_dir=str(out), steps=steps, seed=seed,
                          latent_steps=c["latent_steps"], image_slots=c["image_slots"],
                          num_tokens=c["num_tokens"],
                          width=c["width"], continuation=c["continuation"],
                          eval_n=min(c["eval_n"], _scaled(c["eval_n"], scale, 4)),
                          anchor_to=None if anchor_to is None else str(anchor_to),
                          decoder_only=anchor_to is not None, eval_every=0, resume=True, progress=progress,
                          # absent: align's default, the picture term on (weakly supervised); 0: label-free
                          picture_weight=c.get("picture_weight")))
    return out


def _record(out: Path, wanted: dict[str, Any]) -> None:
    """Write what ``out`` is built with (``recipe.json``), refusing a folder built with something else."""
    recorded = out / "recipe.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != wanted:
        raise ConfigError(f"{out} was built with another recipe or scale (or from another space: "
                          f"{recorded}); use a new --out")
    recorded.write_text(json.dumps(wanted, indent=2) + "\n")


def _check_only(only: list[str] | None, families: list[str]) -> None:
    unknown = sorted(set(only or ()) - set(families))
    if unknown:
        raise ConfigError(f"--only {' '.join(unknown)}: not in the recipe's families ({', '.join(families)})")


def _tune(recipe: dict[str, Any], out: Path, init: Path, space: Path, family: str, half: str, scale: float,
          progress: bool) -> Path:
    """``out``: the codec in ``init`` (``family``'s, with its maps) with one ``half`` tuned against the
    reference's frozen codec in ``space`` (stage 7): ``"decoder"`` reads the reference's encoder,
    ``"encoder"`` (and its map into the shared space) speaks through the reference's decoder and model."""
    from .align import AlignConfig, align

    t, c = recipe["tune"][half], recipe["codec"]
    if not _done(out, "align.json"):
        steps = _scaled(t["steps"], scale)
        align(AlignConfig(model=_fit_model(space / family), init=str(init),
                          anchor_to=str(space / recipe["reference"]),
                          encoder_only=half == "encoder", decoder_only=half == "decoder",
                          n_anchors=_scaled(t["n_anchors"], scale, 8), seed=t["seed"], steps=steps,
                          lr=t["lr"], warmup_steps=min(t["warmup_steps"], steps // 2),
                          picture_weight=t.get("picture_weight"),
                          latent_weight=t.get("latent_weight", 0.0), continuation=c["continuation"],
                          eval_n=min(c["eval_n"], _scaled(c["eval_n"], scale, 4)), out_dir=str(out),
                          eval_every=0, resume=True, progress=progress))
    return out


def _fit_model(folder: Path) -> str:
    """The model a space family folder runs with (its fit record's ``model``)."""
    from latentwire.tinyworld.space import read_fit_record

    record = read_fit_record(folder) or {}
    return str(record.get("model", folder.name))


def _tune_stage(recipe: dict[str, Any], out: Path, space: Path, scale: float, progress: bool,
                log: Any, began: float, only: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """Stage 7 for every non-reference family (``only``: these): its decoder, then its encoder, each
    where the recipe tunes it, the second starting from the first; ``{family: {half: folder}}`` in
    that order (the last folder holds the whole tuned codec)."""
    halves = [h for h in ("decoder", "encoder") if (recipe.get("tune") or {}).get(h)]
    tuned: dict[str, dict[str, Path]] = {}
    for family in recipe["families"]:
        if family == recipe["reference"] or (only is not None and family not in only) or not halves:
            continue
        init, tuned[family] = space / family, {}
        for half in halves:
            log(f"[{time.perf_counter() - began:7.0f}s] tune {family}'s {half} against {recipe['reference']}")
            init = tuned[family][half] = _tune(recipe, out / "tuned" / f"{half}s" / family, init, space,
                                               family, half, scale, progress)
    return tuned


def build(out: str | os.PathLike[str], *, recipe: dict[str, Any] | None = None, scale: float = 1.0,
          only: list[str] | None = None, progress: bool = True, log: Any = print) -> Path | None:
    """Run every stage of ``recipe`` (default `RECIPE`) under ``out``; return ``out/ship``.

    Complete stages are skipped; ``scale`` multiplies every step and anchor count (tests).
    ``only``: run just the stages of these families (their models, own codecs, and decoders once the
    reference codec is done) and return None; builds on several cores run one such process per core
    first, then one without ``only`` for the rest."""
    recipe = copy.deepcopy(RECIPE if recipe is None else recipe)
    check_recipe(recipe)
    if not 0 < scale <= 1:
        raise ConfigError(f"scale must be in (0, 1], got {scale}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _record(out, {"recipe": recipe, "scale": scale})
    began = time.perf_counter()
    families, reference = recipe["families"], recipe["reference"]
    _check_only(only, families)
    mine = [f for f in families if only is None or f in only]
    models = {}
    for family in mine:
        log(f"[{time.perf_counter() - began:7.0f}s] models: {family}")
        models[family] = _pretrain_stages(recipe, out, family, scale, progress)
    a, c = recipe["anchors"], recipe["codec"]
    codec_anchors = _anchor_file(out / "anchors" / "codec.jsonl", a["task"], a["lengths"],
                                 _scaled(a["codec_n"], scale, 8),
                                 a["codec_seed"], min(c["eval_n"], _scaled(c["eval_n"], scale, 4)))
    maps_anchors = _anchor_file(out / "anchors" / "maps.jsonl", a["task"], a["lengths"],
                                _scaled(a["maps_n"], scale, 8),
                                a["maps_seed"], 0) if a["maps_n"] else None
    codecs = {}
    for family in [f for f in [reference] + families if f in mine]:
        if family not in codecs:
            log(f"[{time.perf_counter() - began:7.0f}s] codec: {family}")
            codecs[family] = _codec(recipe, out / "codecs" / family, models[family], codec_anchors, scale,
                                    progress)
    decoders = {}
    for family in families:
        if only is not None and (family not in mine or not _done(out / "codecs" / reference, "align.json")):
            continue  # a partial run trains the decoders it can: its families', once the reference is done
        if family != reference:
            log(f"[{time.perf_counter() - began:7.0f}s] decoder reading {reference}: {family}")
            decoders[family] = _codec(recipe, out / "decoders" / family, models[family], codec_anchors, scale,
                                      progress, anchor_to=out / "codecs" / reference)
    if only is not None:
        return None
    log(f"[{time.perf_counter() - began:7.0f}s] shared-space maps")
    from .shared_space import fit_shared_maps

    m = recipe["maps"]
    fit_shared_maps([str(codecs[f]) for f in families], reference=reference, anchors=str(maps_anchors),
                    out=str(out / "space"), ridge=m["ridge"], hidden=m["hidden"],
                    residual_steps=_scaled(m["residual_steps"], scale),
                    decoders={f: str(p) for f, p in decoders.items()})
    tuned = _tune_stage(recipe, out, out / "space", scale, progress, log, began)
    ship = _package(recipe, out, models, scale, out / "space", tuned)
    log(f"[{time.perf_counter() - began:7.0f}s] shipped files in {ship}")
    return ship


def build_from_space(out: str | os.PathLike[str], space: str | os.PathLike[str], *,
                     recipe: dict[str, Any] | None = None, scale: float = 1.0, progress: bool = True,
                     log: Any = print, only: list[str] | None = None) -> Path | None:
    """Run the stages after the maps (the tune, the packaging) on a finished ``space`` (a `load_space`
    folder with its manifest: the shipped one, or a build's ``ship/space``) whose recorded recipe
    is ``recipe`` (default `RECIPE`) up to the maps, at ``scale``; return ``out/ship``. Its
    checkpoints are the ones beside it (``<space>/../checkpoints/<family>``). ``only``: tune just these
    families and return None (one process per core, then one without ``only`` packages)."""
    from latentwire.tinyworld.space import load_space

    recipe = copy.deepcopy(RECIPE if recipe is None else recipe)
    check_recipe(recipe)
    checked = load_space(space, families=recipe["families"])
    made_with = checked.manifest.get("recipe")
    earlier = {k: v for k, v in recipe.items() if k != "tune"}
    if made_with is None or {k: v for k, v in made_with.items() if k != "tune"} != earlier:
        raise ConfigError(f"{checked.folder} was not built with this recipe's stages before the tune (its "
                          f"{MANIFEST} records {'no recipe' if made_with is None else 'another'}); build it "
                          "with `latentwire train ship --out DIR`")
    if made_with.get("tune"):
        raise ConfigError(f"{checked.folder} is already tuned; start from the space it was tuned from")
    if checked.manifest.get("scale") != scale:
        raise ConfigError(f"{checked.folder} was built at scale {checked.manifest.get('scale')}, not "
                          f"{scale}; start from a space built at the scale of this run")
    _check_only(only, recipe["families"])
    models = {f: checked.folder.parent / "checkpoints" / f for f in recipe["families"]}
    missing = [str(m) for m in models.values() if not (m / "model.safetensors").is_file()]
    if missing:
        raise ConfigError(f"no checkpoint beside the space: {', '.join(missing)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _record(out, {"recipe": recipe, "scale": scale, "from_space": str(checked.folder)})
    began = time.perf_counter()
    tuned = _tune_stage(recipe, out, checked.folder, scale, progress, log, began, only)
    if only is not None:
        return None
    ship = _package(recipe, out, models, scale, checked.folder, tuned)
    log(f"[{time.perf_counter() - began:7.0f}s] shipped files in {ship}")
    return ship


def _package(recipe: dict[str, Any], out: Path, models: dict[str, Path], scale: float, space: Path,
             tuned: dict[str, dict[str, Path]]) -> Path:
    """``out/ship``: the long models as checkpoints, the codecs of ``space`` (a family's last
    ``tuned`` one where there is one) in the ship dtype with their fit records naming the family (the
    shipped checkpoint) as their model and each tune; ``space.json`` last."""
    import torch
    from safetensors.torch import load_file, save_file

    from latentwire.tinyworld.space import FIT_FILE

    ship = out / "ship"
    shutil.rmtree(ship, ignore_errors=True)
    dtype = getattr(torch, recipe["ship_dtype"])
    for family, folder in models.items():
        target = ship / "checkpoints" / family
        target.mkdir(parents=True)
        for name in ("config.json", "generation_config.json", "model.safetensors", "tinyworld_tokenizer.json",
                     "tinyworld.json", "lengths_eval.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, target / name)
    for family in recipe["families"]:
        source, target = space / family, ship / "space" / family
        target.mkdir(parents=True)
        halves = tuned.get(family, {})
        last = (list(halves.values()) or [source])[-1]  # weights and config of the family's last job
        weights = load_file(str(last / "model.safetensors"))
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
                  str(target / "model.safetensors"))
        shutil.copy2(last / "config.json", target / "config.json")
        fit = json.loads((source / FIT_FILE).read_text())
        fit["model"] = family  # the shipped checkpoint of the family, wherever the package lives
        fit.pop("decoder", None)  # a build folder that does not ship
        for half, folder in halves.items():
            run = json.loads((folder / "align.json").read_text())
            fit.setdefault("tune", {})[half] = {"steps": run["step"], "eval": run["eval"],
                                                "scheme": run["scheme"],
                                                "train_seconds": run["train_seconds"]}
            if half == "encoder":  # whose decoder it speaks to now (bench mas: who was trained with whom)
                fit["encoder_tuned_to"] = recipe["reference"]
        (target / FIT_FILE).write_text(json.dumps(fit, indent=2, sort_keys=True) + "\n")
    files = sorted(p for p in ship.rglob("*") if p.is_file())
    manifest = {
        "format": "latentwire-tinyworld-space", "format_version": 1, "recipe": recipe, "scale": scale,
        "reference": recipe["reference"], "families": recipe["families"],
        "lengths": recipe["anchors"]["lengths"], "task": recipe["anchors"]["task"],
        "variant": _variant(recipe, tuned),
        "files": {str(p.relative_to(ship)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                  for p in files},
    }
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    text = json.dumps(manifest, indent=2) + "\n"
    (ship / "space" / MANIFEST).write_text(text)  # `--space ship/space` is checked like the shipped one
    (ship / MANIFEST).write_text(text)
    return ship


def _variant(recipe: dict[str, Any], tuned: dict[str, dict[str, Path]]) -> str:
    """The codec variant ``space.json`` records (`bench mas` files each variant's figures under it)."""
    halves = {half for done in tuned.values() for half in done}
    return (("label-free (no picture term)" if recipe["codec"].get("picture_weight") == 0
             else "weakly supervised (picture term on)")
            + ("; decoders trained further" if "decoder" in halves else "")
            + ("; encoders tuned label-free through the reference" if "encoder" in halves else ""))


def install(ship: str | os.PathLike[str]) -> Path:
    """Copy a built ``ship`` folder into the package's tinyworld folder (checkpoints + space)."""
    from latentwire.tinyworld import checkpoints
    from latentwire.tinyworld.space import SHIPPED_SPACE

    ship = Path(ship)
    if not (ship / MANIFEST).is_file():
        raise ConfigError(f"{ship} has no space.json: not a finished `train ship` output")
    for family_dir in (ship / "checkpoints").iterdir():
        target = checkpoints.SHIPPED_DIR / family_dir.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(family_dir, target)
    shutil.rmtree(SHIPPED_SPACE, ignore_errors=True)
    shutil.copytree(ship / "space", SHIPPED_SPACE)
    return SHIPPED_SPACE


def main(argv: list[str] | None = None) -> int:
    """``latentwire train ship``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="latentwire train ship", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="build folder (a stopped build continues from it)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every step and anchor count (0.01: a quick check of the recipe)")
    parser.add_argument("--only", nargs="+", metavar="FAMILY",
                        help="run only these families' own stages (models, own codec); one process per core")
    parser.add_argument("--from-space", metavar="DIR",
                        help="start from this finished space (stages 1-6 of the recipe: e.g. the shipped "
                             "one, tinyworld/space) and run only the tune and the packaging")
    parser.add_argument("--install", action="store_true", help="copy the result into the package")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    if args.from_space is not None:
        if args.scale != 1.0:
            parser.error("--from-space runs the stages after the maps at full scale; drop --scale")
        ship = build_from_space(args.out, args.from_space, progress=args.progress, only=args.only)
    else:
        ship = build(args.out, scale=args.scale, only=args.only, progress=args.progress)
    if ship is not None and args.install:
        print(f"installed in {install(ship)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
