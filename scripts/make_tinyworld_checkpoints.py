"""Regenerate the shipped tinyworld checkpoints: the one way they are made.

    python scripts/make_tinyworld_checkpoints.py                 # all six families
    python scripts/make_tinyworld_checkpoints.py gemma3 qwen2_5_vl

Each family is pre-trained from scratch with `latentwire.training.pretrain.recipe` (the same recipe the
train-on-first-use fallback of `load_pretrained` uses) into a scratch folder; the four files a
checkpoint needs (config.json, model.safetensors, tinyworld_tokenizer.json, tinyworld.json, plus
transformers' generation_config.json) are copied to
``tinyworld/checkpoints/<family>/``. It prints, per family, the training time, the
text-mode eval at length 8 (recorded in tinyworld.json) and the folder size, then the total.

Each tinyworld.json records its run's ``train_seconds``; the shipped checkpoints' sizes and
scores are in docs/architecture.md (tinyworld) and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Train and install the checkpoints of the given families (default: all)."""
    from latentwire.tinyworld.checkpoints import SHIPPED_DIR, load_checkpoint
    from latentwire.tinyworld.models import FAMILIES
    from latentwire.training.pretrain import pretrain, recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)

    began = time.perf_counter()
    total = 0
    for family in args.families:
        with tempfile.TemporaryDirectory(prefix=f"tinyworld-{family}-") as scratch:
            config = recipe(family, scratch)
            config.progress = args.progress
            t0 = time.perf_counter()
            pretrain(config)
            seconds = time.perf_counter() - t0
            target = SHIPPED_DIR / family
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for name in ("config.json", "generation_config.json", "model.safetensors",
                         "tinyworld_tokenizer.json", "tinyworld.json"):
                if (Path(scratch) / name).exists():
                    shutil.copyfile(Path(scratch) / name, target / name)  # umask perms, not 0600
        load_checkpoint(target, family=family)  # what ships must load
        meta = json.loads((target / "tinyworld.json").read_text())
        size = sum(f.stat().st_size for f in target.iterdir())
        total += size
        evals = ", ".join(f"{task} {r['e2e']:.2f}/{r['read']:.2f}" for task, r in meta["eval"].items())
        print(f"{family}: {seconds:.0f} s ({meta['step']} steps), {size / 1e6:.2f} MB; "
              f"e2e/read exact: {evals}", flush=True)
    print(f"total {total / 1e6:.2f} MB in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
