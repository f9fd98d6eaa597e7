"""Training jobs. Needs the ``models`` extra.

`tinyworld` (tiny real-class VLMs, tokenizer, tasks, the text pre-training job and shipped
checkpoints) and `align` (codec alignment for one family by self-distillation). MOPD (with OPD
and GRPO baselines) and hub-map fitting across families are not built yet.
"""
