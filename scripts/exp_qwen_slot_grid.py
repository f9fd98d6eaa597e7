"""Experiment: does the M-RoPE grid of Qwen's image slots decide whether a tinyworld Qwen reads the
order of a screen? Pre-trains qwen2_vl with the shipped base recipe (2000 steps, screens, seed 0)
with its 16 slots laid out another way, then reads screens (docs/benchmarks.md has the results).

    python scripts/exp_qwen_slot_grid.py row OUT     # 1 x 16: a line of text as a wide image
    python scripts/exp_qwen_slot_grid.py time OUT    # 16 x 1 x 1: one slot per temporal step

The shipped checkpoint is the 4 x 4 control. The layout is swapped by assigning
`QwenAdapter.grid_thw` in this process only (our own adapter, not a library's method).
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    from latentwire.agents.families import qwen
    from latentwire.training.evaluate import evaluate
    from latentwire.training.pretrain import PretrainConfig, pretrain
    from latentwire.tinyworld.checkpoints import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=["row", "time"])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()

    def grid_thw(self, n_slots: int) -> tuple[int, int, int]:
        m = int(self.vision_config.spatial_merge_size)
        return (1, m, n_slots * m) if args.layout == "row" else (n_slots, m, m)

    qwen.QwenAdapter.grid_thw = grid_thw
    pretrain(PretrainConfig(family="qwen2_vl", out_dir=args.out, steps=args.steps, seed=0, lengths=[8],
                            screen_share=0.3, eval_every=0, resume=True, progress=False))
    model, tokenizer = load_checkpoint(args.out)
    result = evaluate(model, tokenizer, ["secret", "reverse", "sort"], length=8, n=64)
    print(json.dumps({task: {k: v for k, v in scores.items() if k.startswith(("screen", "read"))}
                      for task, scores in result.items()}))


if __name__ == "__main__":
    main()
