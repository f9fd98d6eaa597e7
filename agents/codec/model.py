"""`UniversalVisualCodec`: one family's encoder, decoder and shared-space maps, speaking `Latent`s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from latentwire import Latent

from ..errors import CodecError, MessageTooLong, ShapeMismatch, SpaceMismatch
from . import checkpoint
from .config import SHARED_SPACE, CodecConfig
from .layers import DecoderOutput, FamilyDecoder, FamilyEncoder
from .shared_space import SharedSpaceFit, SharedSpaceMaps


class UniversalVisualCodec(nn.Module):
    """One family's codec: encoder, decoder and shared-space maps, with load/save.

    >>> codec = UniversalVisualCodec(CodecConfig(family="gemma3", hidden_size=128))
    >>> latent = codec.encode(torch.randn(5, 128))        # 5 latent steps -> Latent (8, 64), shared space
    >>> codec.decode([latent, latent]).embeddings.shape   # two latents read together
    torch.Size([1, 16, 128])
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = FamilyEncoder(config)
        self.decoder = FamilyDecoder(config)
        self.shared = SharedSpaceMaps(config)
        self.apply(self._init_weights)
        self.shared.reset_identity()  # the init above would overwrite the identity
        self.decoder.reset_gate()  # and the message gate's closed bias

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # nanoGPT's init: small normal weights and zero biases keep the residual stream near the
        # queries at the start; LayerNorms keep torch's ones/zeros.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of parameters (encoder, decoder and shared-space maps)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def _param(self) -> Tensor:
        return self.decoder.queries  # any parameter: where and in which dtype the codec lives

    # --- speaking

    def encode_tokens(self, latent_steps: Tensor, mask: Tensor | None = None, *,
                      to_shared: bool = True) -> Tensor:
        """Latent steps (B, m, H) or (m, H) -> universal tokens (B, K, D), differentiable.

        ``mask`` (B, m) or (m,) is True at real steps and False at padding. With ``to_shared`` the
        tokens are mapped into the shared space, otherwise they stay in the family's codec space.
        """
        H = self.config.hidden_size
        steps = torch.as_tensor(latent_steps)
        given = tuple(steps.shape)  # reported as the caller passed it, before batching
        if steps.ndim == 2:
            steps = steps[None]  # (1, m, H)
            mask = None if mask is None else torch.as_tensor(mask)[None]  # (1, m)
        if steps.ndim != 3 or steps.size(-1) != H or steps.size(1) == 0:
            raise ShapeMismatch(f"latent steps for family {self.config.family!r}", given,
                                f"(B, m, {H}) or (m, {H}) with m >= 1 (hidden size {H})")
        if mask is not None:
            mask = torch.as_tensor(mask, device=steps.device).bool()
            if tuple(mask.shape) != tuple(steps.shape[:2]):
                raise ShapeMismatch("padding mask", tuple(mask.shape),
                                    f"{tuple(steps.shape[:2])}, the (B, m) of the steps")
            if not bool(mask.any(1).all()):
                raise CodecError(f"rows {mask.any(1).logical_not().nonzero().flatten().tolist()} of the "
                                 "padding mask have no real step; every latent needs at least one")
            mask = mask.to(self._param.device)
        longest = steps.size(1) if mask is None else int(mask.sum(1).max())
        if self.config.max_steps and longest > self.config.max_steps:
            raise MessageTooLong(self.config.family, longest, self.config.max_steps)
        tokens = self.encoder(steps.to(self._param), mask)  # (B, K, D)
        return self.shared.to_shared(tokens) if to_shared else tokens

    @torch.no_grad()
    def encode(self, latent_steps: Tensor, mask: Tensor | None = None, *,
               space: str = SHARED_SPACE) -> Latent:
        """Latent steps -> a `Latent` for the bus: (K, D) for (m, H) steps, (B, K, D) for a batch.

        ``space`` is the shared space (`SHARED_SPACE`, the default: any aligned family can read
        it) or this family's own codec space. Detached; train through `encode_tokens`.
        """
        if space not in (SHARED_SPACE, self.config.space):
            raise SpaceMismatch(space, (SHARED_SPACE, self.config.space), encoding=True)
        single = torch.as_tensor(latent_steps).ndim == 2
        tokens = self.encode_tokens(latent_steps, mask, to_shared=space == SHARED_SPACE)  # (B, K, D)
        return Latent(tokens[0] if single else tokens, space=space, family=self.config.family)

    # --- listening

    def decode(self, latents: Latent | Sequence[Latent] | Tensor, *, space: str = SHARED_SPACE,
               mask: Tensor | None = None) -> DecoderOutput:
        """Received latents -> k visual embeddings (B, k, H) and the gate, all latents read together.

        ``latents``: one `Latent` or a list of them, each (K_i, D) or (B, K_i, D), numpy or torch,
        in the shared space or this family's codec space (each is checked: another space raises
        `SpaceMismatch`); their tokens are concatenated to (B, sum K_i, D). A bare tensor
        (B, N, D) or (N, D) is taken to be in ``space``, with an optional key ``mask`` (B, N).
        """
        if isinstance(latents, Tensor):
            tokens = self._family_tokens(latents, space, None, "token tensor")  # (B, N, D)
        else:
            if isinstance(latents, Latent):
                latents = [latents]
            if not latents:
                raise CodecError("no latents to decode; with nothing received, use the blank image as is")
            parts = []
            for i, latent in enumerate(latents):
                if not isinstance(latent, Latent):
                    raise CodecError(f"latents[{i}] is a {type(latent).__name__}, not a latentwire.Latent")
                tokens = latent.torch()
                parts.append(self._family_tokens(tokens, latent.space, latent.family, f"latents[{i}]"))
            batch = {p.size(0) for p in parts}
            if len(batch) > 1:
                raise ShapeMismatch("the latents' batch sizes", tuple(p.size(0) for p in parts),
                                    "one batch size B shared by every latent decoded together")
            tokens = torch.cat(parts, dim=1)  # (B, sum K_i, D)
        if mask is not None:
            mask = torch.as_tensor(mask).bool().to(tokens.device)
            if tuple(mask.shape) != tuple(tokens.shape[:2]):
                raise ShapeMismatch("token mask", tuple(mask.shape),
                                    f"{tuple(tokens.shape[:2])}, the (B, N) of the tokens")
        return self.decoder(tokens, mask)

    def forward(self, latent_steps: Tensor, mask: Tensor | None = None, *, noise: float = 0.0,
                generator: torch.Generator | None = None) -> DecoderOutput:
        """Encode then decode in the family's own space (training a codec; the shared-space maps stay out).

        ``noise`` > 0 adds Gaussian noise to the tokens before decoding, ``noise`` times each
        token entry's spread over the batch: the decoder learns to read latents that arrive a
        little off (through lossy shared-space maps), the encoder to keep its message apart from others
        (on tinyworld, at 0.3, it did not pay: docs/benchmarks.md).
        """
        tokens = self.encode_tokens(latent_steps, mask, to_shared=False)  # (B, K, D)
        if noise > 0 and tokens.shape[0] > 1:
            spread = tokens.detach().std(dim=0, keepdim=True)  # (1, K, D)
            draw = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=tokens.dtype)
            tokens = tokens + noise * spread * draw
        return self.decoder(tokens)

    def _check_space(self, space: str | None, family: str | None) -> None:
        if space not in (SHARED_SPACE, self.config.space):
            raise SpaceMismatch(space, (SHARED_SPACE, self.config.space), family)

    def _family_tokens(self, tokens: Tensor, space: str | None, family: str | None, what: str) -> Tensor:
        """Check one received block of tokens and bring it to (B, K, D) in this family's space."""
        self._check_space(space, family)
        D = self.config.width
        if tokens.ndim not in (2, 3) or tokens.size(-1) != D or tokens.size(-2) == 0:
            sender = f" from family {family!r}" if family else ""
            raise ShapeMismatch(f"{what}{sender}", tuple(tokens.shape),
                                f"(K, {D}) or (B, K, {D}): universal tokens of width {D} "
                                f"(codec of family {self.config.family!r})")
        if tokens.ndim == 2:
            tokens = tokens[None]  # (1, K, D)
        tokens = tokens.to(self._param)
        if space != SHARED_SPACE:
            return tokens
        if tokens.size(1) != self.config.num_tokens:  # the shared-space maps read whole latents of K tokens
            sender = f" from family {family!r}" if family else ""
            raise ShapeMismatch(f"{what}{sender}", tuple(tokens.shape),
                                f"(B, {self.config.num_tokens}, {D}): shared-space latents of "
                                f"{self.config.num_tokens} tokens, the shared space's K")
        return self.shared.from_shared(tokens)

    # --- alignment

    def fit_shared_maps(self, family_tokens: Tensor, reference_tokens: Tensor, ridge: float = 1e-3, *,
                        from_shared: bool = True) -> SharedSpaceFit:
        """Fit the affine maps to and from the shared space on paired anchor tokens by ridge
        regression (residual MLPs, where ``config.shared_hidden`` > 0, are trained by the training job
        `latentwire.training.shared_space.fit_maps`, which calls this first).

        ``family_tokens``: this family's tokens (``encode_tokens(..., to_shared=False)``) on an
        anchor set; ``reference_tokens``: the reference family's tokens on the same anchors.
        Both (N, K, D), the same shape; use more anchors than K * D values per latent.
        ``from_shared=False``: only the map to the shared space (this codec's decoder reads the
        shared space as is).
        """
        K, D = self.config.num_tokens, self.config.width
        x, y = torch.as_tensor(family_tokens), torch.as_tensor(reference_tokens)
        if x.shape != y.shape or tuple(x.shape[1:]) != (K, D):
            raise ShapeMismatch("family tokens vs reference tokens", tuple(x.shape),
                                f"the reference tokens' shape {tuple(y.shape)}, both (N, {K}, {D})")
        return self.shared.fit(x.to(self._param), y.to(self._param), ridge, from_shared=from_shared)

    # --- load / save

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write config.json and model.safetensors (shared-space maps included) into ``folder``;
        return it.

        One folder per family; several family folders under one Hub repo load with ``subfolder``.
        """
        folder = Path(folder)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        checkpoint.write(folder, self.config, tensors)
        return folder

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], *, subfolder: str | None = None,
                        revision: str | None = None, token: str | None = None,
                        device: str | torch.device | None = None) -> UniversalVisualCodec:
        """Load a codec from a local folder, or from a Hugging Face Hub repo id when no such folder exists.

        Every tensor's name and shape is checked against config.json before anything is loaded;
        a missing, unexpected or misshapen tensor, a corrupt file or a bad config raises
        `CheckpointError` naming it.
        """
        folder = checkpoint.resolve_folder(source, subfolder, revision, token)
        codec = cls(checkpoint.read_config(folder))
        codec.load_checked(checkpoint.read_tensors(folder), str(folder))
        return codec.to(device) if device is not None else codec

    def load_checked(self, tensors: dict[str, Tensor], source: str = "state dict") -> None:
        """Load ``tensors`` after checking every name and shape; on any mismatch load nothing.
        Tensor names of checkpoints saved before the rename of the shared space (``hub.*``) are
        mapped to today's first."""
        tensors = checkpoint.renamed_legacy(tensors)
        expected = self.state_dict()
        checkpoint.check_tensors(expected, tensors, source)
        self.load_state_dict({name: tensors[name].to(t) for name, t in expected.items()}, strict=True)
