"""Training jobs. Needs the ``models`` extra.

- `pretrain`: teaches a tinyworld family to read and write the tasks as text
  (``latentwire train tinyworld``); `evaluate`: its text-mode read / write / end-to-end accuracy.
- `anchors`, `align` (``latentwire train codec``: a family's codec by self-distillation),
  `shared_space` (``latentwire train space-maps``: the maps that join families in the shared space),
  `pairs` (the inference path between any two families, for evaluation).
- `mopd`: multi-rollout on-policy distillation with OPD, GRPO and SFT baselines.

This floor imports the SDK, `latentwire.agents` and `latentwire.tinyworld`; nothing below
imports it.
"""
