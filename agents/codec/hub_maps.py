"""Hub maps: maps between a family's codec space and the shared hub space.

Each family is trained alone, then fitted once with two maps to and from a reference family's
space on shared anchors: O(N) jobs, not O(N^2) pairs. A map acts on a whole latent, all K tokens
at once (K*D -> K*D): two codecs trained apart put the same content in different token positions,
which a per-token map could not re-order. Each map is affine (ridge regression, closed form),
plus, where the codec's ``hub_hidden`` > 0, a residual MLP trained on what the affine part leaves
(two codecs trained apart are not affine functions of each other: on tinyworld a 2048-wide MLP
cut the held-out error of llava -> gemma3 latents from 0.41 of their variance to 0.18, and raised
pairs of families never trained together from 0.45 to 0.61 of characters; docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CodecConfig


@dataclass
class HubFit:
    """How well the fitted hub maps reproduce their targets (mean squared error per value).

    With residual MLPs, ``heldout`` has per direction (``to_hub``, ``from_hub``) the error on the
    held-out anchors relative to the targets' variance, of the affine part alone (``affine``) and
    of the whole map (``map``), and the training step kept (``step``).
    """

    to_hub_mse: float
    from_hub_mse: float | None  # None: not fitted (the identity; the decoder reads the hub space)
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

    def forward(self, tokens: Tensor) -> Tensor:
        lead = tokens.shape[:-2]
        flat = tokens.reshape(*lead, -1)
        out = super().forward(flat)
        if self.residual is not None:
            out = out + self.residual(flat)
        return out.reshape(*lead, *self.block)


def _relative(prediction: Tensor, target: Tensor) -> float:
    """Squared error relative to the target's variance (0 = exact, 1 = as good as its mean)."""
    return float(((prediction - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum().clamp_min(1e-12))


def fit_residual(token_map: TokenMap, x: Tensor, y: Tensor, *, steps: int = 3000, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 256, holdout: float = 0.1,
                 eval_every: int = 100, seed: int = 0) -> dict[str, float]:
    """Train ``token_map``'s residual MLP on what its (already fitted) affine part leaves of
    ``y (N, F)`` from ``x (N, F)``; the last ``holdout`` share of rows is held out and the MLP of
    the best held-out step is kept (early stopping; step 0 = the MLP adds nothing). Deterministic
    for a ``seed``. Returns the held-out relative errors (``affine``, ``map``) and the ``step``."""
    mlp = token_map.residual
    if mlp is None:
        raise ValueError("this map has no residual MLP (hub_hidden = 0)")
    n_held = max(1, int(round(x.shape[0] * holdout)))
    if x.shape[0] - n_held < 2:
        raise ValueError(f"{x.shape[0]} anchors are too few to train and hold out a residual map")
    with torch.no_grad():
        affine = F.linear(x, token_map.weight, token_map.bias)  # (N, F)
        residual = y - affine
        train_x, held_x = x[:-n_held], x[-n_held:]
        train_r = residual[:-n_held]
        mlp.in_mean.copy_(train_x.mean(0))
        mlp.in_scale.copy_(train_x.std(0).clamp_min(1e-6))
        mlp.out_scale.copy_(train_r.std(0).clamp_min(1e-6))
        target = train_r / mlp.out_scale  # (n, F), standardised
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mlp.down.reset_parameters()
        nn.init.zeros_(mlp.up.weight)
        nn.init.zeros_(mlp.up.bias)

    def held_error() -> float:
        with torch.no_grad():
            return _relative(affine[-n_held:] + mlp(held_x), y[-n_held:])

    def snapshot() -> dict[str, Tensor]:
        return {k: v.clone() for k, v in mlp.state_dict().items()}

    generator = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    best = (held_error(), 0, snapshot())
    affine_error = best[0]
    with torch.enable_grad():
        for step in range(1, steps + 1):
            rows = torch.randint(0, train_x.shape[0], (batch_size,), generator=generator).to(x.device)
            loss = F.mse_loss(mlp.core(train_x[rows]), target[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % eval_every == 0 or step == steps:
                error = held_error()
                if error < best[0]:
                    best = (error, step, snapshot())
    mlp.load_state_dict(best[2])
    return {"affine": round(affine_error, 5), "map": round(best[0], 5), "step": best[1]}


class HubMaps(nn.Module):
    """Maps family codec space <-> hub space (K*D -> K*D), the identity until fitted: affine,
    plus a residual MLP each where ``config.hub_hidden`` > 0."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.to_hub = TokenMap(config.num_tokens, config.width, config.hub_hidden)
        self.from_hub = TokenMap(config.num_tokens, config.width, config.hub_hidden)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Make both maps the identity (a family that is its own reference)."""
        self.to_hub.reset_identity()
        self.from_hub.reset_identity()

    def fit(self, family_tokens: Tensor, reference_tokens: Tensor, ridge: float = 1e-3, *,
            residual_steps: int = 3000, seed: int = 0, from_hub: bool = True) -> HubFit:
        """Fit the maps on paired latents (N, K, D) (family latent i ~ reference latent i, the
        same anchor): the affine part by ridge regression on all of them, then any residual MLP
        (`fit_residual`, ``residual_steps`` steps, early-stopped on held-out anchors).
        ``from_hub=False`` fits only the map to the hub and makes the other the identity."""
        heldout = {}
        if not from_hub:
            self.from_hub.reset_identity()
        directions = [("to_hub", self.to_hub, family_tokens, reference_tokens)]
        if from_hub:
            directions.append(("from_hub", self.from_hub, reference_tokens, family_tokens))
        for name, linear, x, y in directions:
            with torch.no_grad():
                W, b = ridge_affine(x.flatten(1), y.flatten(1), ridge)
                linear.weight.copy_(W.T)  # nn.Linear keeps (Dout, Din)
                linear.bias.copy_(b)
            if linear.residual is not None:
                heldout[name] = fit_residual(linear, x.flatten(1), y.flatten(1), steps=residual_steps,
                                             seed=seed)
        with torch.no_grad():
            to_mse = F.mse_loss(self.to_hub(family_tokens), reference_tokens).item()
            from_mse = F.mse_loss(self.from_hub(reference_tokens), family_tokens).item() if from_hub else None
        return HubFit(to_hub_mse=to_mse, from_hub_mse=from_mse, num_samples=family_tokens.size(0),
                      heldout=heldout or None)
