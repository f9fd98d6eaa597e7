"""`CodecConfig`: the sizes of one family's codec, saved as config.json next to its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import CodecConfigError

# The shared space every aligned family maps into. Its wire value stays "hub" (the name it had
# before the daemon took that word): latents other agents send say space="hub".
SHARED_SPACE = "hub"
#: What a decoder's gate may be computed from (`CodecConfig.gate`).
GATES = ("scalar", "message")


@dataclass
class CodecConfig:
    """Sizes of one family's codec. Saved as config.json next to the weights."""

    family: str              # model family, e.g. "gemma3"; stamped on every Latent it encodes
    hidden_size: int         # H: width of the family's latent steps and of its visual embeddings
    num_tokens: int = 8      # K universal tokens per latent (why 8: docs/architecture.md, the codec)
    width: int = 64          # D: width of a universal token
    image_slots: int = 16    # k visual embeddings one decode produces (the family's slots per message)
    num_heads: int = 4
    num_layers: int = 1      # resampler blocks in the encoder and again in the decoder
    stat_tokens: int = 0     # of the K tokens, how many are pooled statistics: 0, 1 (mean), 2 (+ std)
    mlp_ratio: int = 4
    space: str = ""          # the family's codec space; "" means the family name
    shared_hidden: int = 0      # width of the shared-space maps' residual MLP; 0 = affine maps only
    latent_steps: int = 0    # m latent steps per message the encoder was trained on; 0 = not recorded
    # The most vectors (a sender prompt's tokens and its latent steps) the encoder was trained on:
    # longer reasoning is refused, not read with positions it never saw. 0 = not recorded.
    max_steps: int = 0
    # How much of the decoded embeddings is added to the blank image: "scalar", one learned value
    # (tanh, 0 at init); "message", computed from the received tokens (an MLP and a sigmoid, biased
    # closed at init: the paper's gate). docs/benchmarks.md measures the two.
    gate: str = "scalar"

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise CodecConfigError("family", self.family, "a non-empty family name, e.g. 'gemma3'")
        if not self.space:
            self.space = self.family
        if not isinstance(self.space, str) or self.space == SHARED_SPACE:
            raise CodecConfigError("space", self.space, f"a family codec space name other than {SHARED_SPACE!r}")
        for name in ("hidden_size", "num_tokens", "width", "image_slots", "num_heads", "num_layers",
                     "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CodecConfigError(name, value, "a positive integer")
        if isinstance(self.latent_steps, bool) or not isinstance(self.latent_steps, int) or self.latent_steps < 0:
            raise CodecConfigError("latent_steps", self.latent_steps, "a non-negative integer (0 = not recorded)")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 0:
            raise CodecConfigError("max_steps", self.max_steps, "a non-negative integer (0 = not recorded)")
        if isinstance(self.shared_hidden, bool) or not isinstance(self.shared_hidden, int) or self.shared_hidden < 0:
            raise CodecConfigError("shared_hidden", self.shared_hidden, "a non-negative integer (0 = affine shared-space maps)")
        if self.gate not in GATES:
            raise CodecConfigError("gate", self.gate, f"one of {', '.join(GATES)}")
        if self.width % self.num_heads:
            raise CodecConfigError("num_heads", self.num_heads,
                                   f"must divide width={self.width} (each head gets width/num_heads)")
        if isinstance(self.stat_tokens, bool) or self.stat_tokens not in (0, 1, 2):
            raise CodecConfigError("stat_tokens", self.stat_tokens, "0, 1 (mean) or 2 (mean and std)")
        if self.stat_tokens >= self.num_tokens:
            raise CodecConfigError("stat_tokens", self.stat_tokens,
                                   f"must be below num_tokens={self.num_tokens} (at least one learned query)")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CodecConfig:
        """Build from a dict (e.g. parsed config.json); unknown keys are refused, by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CodecConfigError(unknown[0], values[unknown[0]],
                                   f"not a CodecConfig field; fields: {sorted(known)}")
        for required in ("family", "hidden_size"):
            if required not in values:
                raise CodecConfigError(required, None, "required")
        return cls(**values)

