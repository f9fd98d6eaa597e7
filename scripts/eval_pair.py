"""Experiment helper: one sender codec folder talking to one receiver codec folder, on held-out
tinyworld secret anchors (a seed below the development and test streams), for choosing a recipe
without touching either stream (docs/benchmarks.md, "Stage 7").

    python scripts/eval_pair.py SENDER_DIR RECEIVER_DIR [--n 256] [--seed 302] [--length 8]

Each folder is a codec with its maps: a family folder of a shared space, or a `train codec` output
(its model is the one its record names). Prints the receiver's exact match and per-character
accuracy reading the latent, the text message and no message.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    from latentwire.agents.bundle import ModelBundle
    from latentwire.training.anchors import tinyworld_anchors
    from latentwire.training.pairs import codec_run, evaluate_pair, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sender")
    parser.add_argument("receiver")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=302)
    parser.add_argument("--length", type=int, default=8)
    args = parser.parse_args()

    def party(folder: str) -> ModelBundle:
        codec, run = codec_run(folder)
        model, tokenizer = load_model(run.get("model", codec.config.family))
        steps = int(run.get("latent_steps", 1))
        return ModelBundle(model.eval(), tokenizer, codec.eval(), latent_steps=steps)

    anchors = tinyworld_anchors("secret", args.n, length=args.length, seed=args.seed)
    result = evaluate_pair(party(args.sender), party(args.receiver), anchors, shuffled=False)
    print(json.dumps({"sender": args.sender, "receiver": args.receiver, "n": args.n, "seed": args.seed,
                      **result}))


if __name__ == "__main__":
    main()
