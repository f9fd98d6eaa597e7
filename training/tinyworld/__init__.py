"""tinyworld: the real transformers VLM classes at tiny sizes, a byte-level tokenizer and processor.

- `models`: `tiny_config(family, **overrides)`, `build_model(family, seed)`.
- `tokenizer`: `TinyTokenizer` (256 bytes + special tokens, shared by every family).
- `processor`: `TinyProcessor`, which places image placeholders the way each family's real
  processor does.

Importing the package is light; `models` imports transformers (and torch) only when called.
"""
