"""tinyworld: the real transformers VLM classes at tiny sizes, a byte-level tokenizer and processor.

- `models`: `tiny_config(family, **overrides)`, `build_model(family, seed)`.
- `tokenizer`: `TinyTokenizer` (256 bytes + special tokens, shared by every family).
- `processor`: `TinyProcessor`, which places image placeholders the way each family's real
  processor does.
- `tasks`: synthetic tasks whose answer needs what only a sender saw (`make_task`, `TASKS`:
  secret, reverse, sort, merge, pipeline) and their scorer.
- `pretrain`: the job that teaches a family to read and write the tasks as text
  (`PretrainConfig`, `pretrain`; ``python -m latentwire.training.tinyworld.pretrain``).
- `evaluate`: text-mode read / write / end-to-end accuracy through `listen`.
- `checkpoints`: `load_pretrained(family)` (shipped, cached, or trained on first use) and
  `load_checkpoint(folder)`, which refuses a broken folder with `CheckpointError`.

Importing the package is light; `models` imports transformers (and torch) only when called.
"""
