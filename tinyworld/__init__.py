"""tinyworld: the real transformers VLM classes at tiny sizes, a byte-level tokenizer and processor.

- `models`: `tiny_config(family, **overrides)`, `build_model(family, seed)`.
- `tokenizer`: `TinyTokenizer` (256 bytes + special tokens, shared by every family).
- `processor`: `TinyProcessor`, which places image placeholders the way each family's real
  processor does.
- `tasks`: synthetic tasks whose answer needs what only a sender saw (`make_task`, `TASKS`:
  secret, reverse, sort, merge, pipeline) and their scorer.
- `screen`: messages shown as a picture at a receiver's image slots.
- `checkpoints`: `load_pretrained(family)` (shipped or cached) and `load_checkpoint(folder)`,
  which refuses a broken folder with `CheckpointError`.
- `demo`: ``latentwire demo``, VLM agents of two families on a tinyworld task.

Pre-training and evaluation are jobs, in `latentwire.training` (`pretrain`, `evaluate`); this
floor imports the SDK and `latentwire.agents` (the family adapters), never training.

Importing the package is light; `models` imports transformers (and torch) only when called.
"""
