"""Hub maps: affine maps between a family's codec space and the shared hub space.

Each family is trained alone, then fitted once with two affine maps to and from a reference
family's space on shared anchors (ridge regression, closed form): O(N) jobs, not O(N^2) pairs.
A map acts on a whole latent, all K tokens at once (K*D -> K*D): two codecs trained apart put the
same content in different token positions, which a per-token map could not re-order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CodecConfig


@dataclass
class HubFit:
    """How well the fitted hub maps reproduce their targets (mean squared error per value)."""

    to_hub_mse: float
    from_hub_mse: float
    num_samples: int


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


class TokenMap(nn.Linear):
    """An affine map of a block of K tokens ``(..., K, D) -> (..., K, D)`` that mixes across
    tokens (an ``nn.Linear`` on the flattened ``K * D`` values)."""

    def __init__(self, num_tokens: int, width: int) -> None:
        super().__init__(num_tokens * width, num_tokens * width)
        self.block = (num_tokens, width)

    def forward(self, tokens: Tensor) -> Tensor:
        lead = tokens.shape[:-2]
        return super().forward(tokens.reshape(*lead, -1)).reshape(*lead, *self.block)


class HubMaps(nn.Module):
    """Affine maps family codec space <-> hub space (K*D -> K*D), the identity until fitted."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.to_hub = TokenMap(config.num_tokens, config.width)
        self.from_hub = TokenMap(config.num_tokens, config.width)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Make both maps the identity (a family that is its own reference)."""
        with torch.no_grad():
            for linear in (self.to_hub, self.from_hub):
                linear.weight.copy_(torch.eye(linear.weight.size(0)))
                linear.bias.zero_()

    def fit(self, family_tokens: Tensor, reference_tokens: Tensor, ridge: float = 1e-3) -> HubFit:
        """Fit both maps by ridge regression on paired latents (N, K, D) (family latent i ~
        reference latent i, the same anchor)."""
        with torch.no_grad():
            for linear, x, y in ((self.to_hub, family_tokens, reference_tokens),
                                 (self.from_hub, reference_tokens, family_tokens)):
                W, b = ridge_affine(x.flatten(1), y.flatten(1), ridge)
                linear.weight.copy_(W.T)  # nn.Linear keeps (Dout, Din)
                linear.bias.copy_(b)
            to_mse = F.mse_loss(self.to_hub(family_tokens), reference_tokens).item()
            from_mse = F.mse_loss(self.from_hub(reference_tokens), family_tokens).item()
        return HubFit(to_hub_mse=to_mse, from_hub_mse=from_mse, num_samples=family_tokens.size(0))
