"""The Universal Visual Codec: a family's latent steps <-> universal tokens <-> visual embeddings.

One codec per model family; read the modules in this order:

- `config`: `CodecConfig`, the sizes (family hidden size H, K universal tokens of width D,
  k image slots).
- `layers`: `FamilyEncoder`, a Perceiver-style resampler (K-S learned queries plus S statistics
  tokens, the mean/std of the steps, cross-attend over the sender's m latent steps:
  (B, m, H) -> (B, K, D)); `FamilyDecoder`, k learned image queries over the universal tokens
  of every received latent, concatenated ((B, sum K_i, D) -> (B, k, H)), plus a gate: by
  default a scalar tanh(g), g = 0 at init, so an untrained codec adds nothing to the blank image
  (``CodecConfig.gate="message"``: the paper's gate, a sigmoid of an MLP of the received tokens,
  biased closed).
- `shared_space`: `SharedSpaceMaps`, affine maps between the family's codec space and the shared
  space (identity at init, fitted by ridge regression on anchor tokens).
- `model`: `UniversalVisualCodec`, the three bundled: `encode` -> `latentwire.Latent`,
  `decode`, `fit_shared_maps`, `save_pretrained` / `from_pretrained`.
- `checkpoint`: config.json + model.safetensors, local or on the Hugging Face Hub, checked by
  name and shape before anything is loaded.

Spaces: the encoder writes and the decoder reads the family's own codec space
(``config.space``); latents on the bus live in the shared space (`SHARED_SPACE`, ``"hub"`` on
the wire). A latent in any other space is refused with `SpaceMismatch`, never mis-decoded.
Needs the ``models`` extra (torch, safetensors).
"""

from .config import SHARED_SPACE, CodecConfig
from .layers import DecoderOutput, FamilyDecoder, FamilyEncoder
from .model import UniversalVisualCodec
from .shared_space import SharedSpaceFit, SharedSpaceMaps, ridge_affine

__all__ = [
    "SHARED_SPACE",
    "CodecConfig",
    "DecoderOutput",
    "FamilyDecoder",
    "FamilyEncoder",
    "SharedSpaceFit",
    "SharedSpaceMaps",
    "UniversalVisualCodec",
    "ridge_affine",
]
