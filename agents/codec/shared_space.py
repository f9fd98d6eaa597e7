"""Shared-space maps: maps between a family's codec space and the shared space.

The shared space is the one latent space every aligned family maps into (the reference family's
codec space); latents on the bus live in it. On the wire it is still called ``"hub"``
(`SHARED_SPACE`), the value agents already send.

Each family is trained alone, then fitted once with two maps to and from a reference family's
space on shared anchors: O(N) jobs, not O(N^2) pairs. A map acts on a whole latent, all K tokens
at once (K*D -> K*D): two codecs trained apart put the same content in different token positions,
which a per-token map could not re-order. Each map is affine (ridge regression, closed form,
fitted here), plus, where the codec's ``shared_hidden`` > 0, a residual MLP trained on what the affine
part leaves (a training job: `latentwire.training.shared_space.fit_maps`). Two codecs trained apart are
not affine functions of each other, so the MLP pays (docs/benchmarks.md, "Codec alignment").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CodecConfig


@dataclass
class SharedSpaceFit:
    """How well the fitted shared-space maps reproduce their targets (mean squared error per value).

    ``heldout`` has per direction fitted (``to_shared``, ``from_shared``) the error on the report
    anchors (never fitted or chosen on) relative to the targets' variance, of the affine part alone
    (``affine``) and of the whole map (``map``), the residual MLP's step kept (``step``, 0 without
    one) and, with an MLP, its error on the stop anchors that chose that step (``stop``).
    """

    to_shared_mse: float
    from_shared_mse: float | None  # None: not fitted (the identity; the decoder reads the shared space)
    num_samples: int
    heldout: dict[str, dict[str, float]] | None = None


def ridge_affine(x: Tensor, y: Tensor, ridge: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Closed-form ridge regression ``y ~ x @ W + b`` over rows: returns W (Din, Dout), b (Dout).

    ``ridge`` is relative to the per-row covariance, so it means the same at any number of rows;
    the bias is not penalised (the data are centred first). Solved in float64.
    """
    x64, y64 = x.detach().double(), y.detach().double()  # (N, Din), (N, Dout)
    mx, my = x64.mean(0), y64.mean(0)
    xc, yc = x64 - mx, y64 - my
    N, Din = xc.shape
    gram = xc.T @ xc / N + ridge * torch.eye(Din, dtype=torch.float64, device=xc.device)  # (Din, Din)
    W = torch.linalg.solve(gram, xc.T @ yc / N)  # (Din, Dout)
    return W, my - mx @ W


class ResidualMLP(nn.Module):
    """``x (..., F) -> (..., F)``: an MLP on standardised inputs whose output starts at exactly 0
    (its last layer is zero), scaled per value; the standardisation is fitted with it."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("in_mean", torch.zeros(features))
        self.register_buffer("in_scale", torch.ones(features))
        self.register_buffer("out_scale", torch.ones(features))
        self.down = nn.Linear(features, hidden)
        self.up = nn.Linear(hidden, features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def core(self, x: Tensor) -> Tensor:
        """The unscaled output on raw inputs (what training fits to standardised targets)."""
        return self.up(F.gelu(self.down((x - self.in_mean) / self.in_scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.core(x) * self.out_scale


class TokenMap(nn.Linear):
    """A map of a block of K tokens ``(..., K, D) -> (..., K, D)`` that mixes across tokens: an
    ``nn.Linear`` on the flattened ``K * D`` values, plus a `ResidualMLP` when ``hidden`` > 0."""

    def __init__(self, num_tokens: int, width: int, hidden: int = 0) -> None:
        super().__init__(num_tokens * width, num_tokens * width)
        self.block = (num_tokens, width)
        self.residual = ResidualMLP(num_tokens * width, hidden) if hidden else None

    @torch.no_grad()
    def reset_identity(self) -> None:
        """The identity map (a residual MLP, if any, adds exactly 0)."""
        self.weight.copy_(torch.eye(self.weight.size(0)))
        self.bias.zero_()
        if self.residual is not None:
            nn.init.zeros_(self.residual.up.weight)
            nn.init.zeros_(self.residual.up.bias)

    def affine(self, flat: Tensor) -> Tensor:
        """The affine part alone, on flattened latents ``(..., K * D)``."""
        return super().forward(flat)

    def flat(self, flat: Tensor) -> Tensor:
        """The whole map on flattened latents ``(..., K * D)``."""
        out = self.affine(flat)
        return out + self.residual(flat) if self.residual is not None else out

    def forward(self, tokens: Tensor) -> Tensor:
        lead = tokens.shape[:-2]
        return self.flat(tokens.reshape(*lead, -1)).reshape(*lead, *self.block)


class SharedSpaceMaps(nn.Module):
    """Maps family codec space <-> shared space (K*D -> K*D), the identity until fitted: affine,
    plus a residual MLP each where ``config.shared_hidden`` > 0."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.to_shared = TokenMap(config.num_tokens, config.width, config.shared_hidden)
        self.from_shared = TokenMap(config.num_tokens, config.width, config.shared_hidden)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Make both maps the identity (a family that is its own reference)."""
        self.to_shared.reset_identity()
        self.from_shared.reset_identity()

    def fit(self, family_tokens: Tensor, reference_tokens: Tensor, ridge: float = 1e-3, *,
            from_shared: bool = True) -> SharedSpaceFit:
        """Fit the affine part of the maps on paired latents (N, K, D) (family latent i ~
        reference latent i, the same anchor) by ridge regression; any residual MLP is reset to add
        nothing (training it is a job: `latentwire.training.shared_space.fit_maps`).
        ``from_shared=False`` fits only the map to the shared space and makes the other the identity."""
        if not from_shared:
            self.from_shared.reset_identity()
        directions = [(self.to_shared, family_tokens, reference_tokens)]
        if from_shared:
            directions.append((self.from_shared, reference_tokens, family_tokens))
        with torch.no_grad():
            for linear, x, y in directions:
                W, b = ridge_affine(x.flatten(1), y.flatten(1), ridge)
                linear.weight.copy_(W.T)  # nn.Linear keeps (Dout, Din)
                linear.bias.copy_(b)
                if linear.residual is not None:
                    nn.init.zeros_(linear.residual.up.weight)
                    nn.init.zeros_(linear.residual.up.bias)
        return self.measure(family_tokens, reference_tokens, from_shared=from_shared)

    def measure(self, family_tokens: Tensor, reference_tokens: Tensor, *, from_shared: bool = True,
                heldout: dict[str, dict[str, float]] | None = None) -> SharedSpaceFit:
        """How well the maps reproduce paired latents (N, K, D): a `SharedSpaceFit` (``heldout`` passed on)."""
        with torch.no_grad():
            to_mse = F.mse_loss(self.to_shared(family_tokens), reference_tokens).item()
            from_mse = F.mse_loss(self.from_shared(reference_tokens), family_tokens).item() if from_shared else None
        return SharedSpaceFit(to_shared_mse=to_mse, from_shared_mse=from_mse, num_samples=family_tokens.size(0),
                      heldout=heldout or None)
