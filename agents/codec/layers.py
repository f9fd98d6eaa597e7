"""The encoder and decoder: Perceiver-style resamplers between latent steps, tokens and embeddings.

`FamilyEncoder` (B, m, H) -> (B, K, D); `FamilyDecoder` (B, N, D) -> (B, k, H) + gate. Both are
stacks of `ResamplerBlock`: learned queries cross-attend over a context, then mix and think.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CodecConfig

#: Where an untrained message gate starts: sigmoid(-6) ~ 0.0025, a near-blank image (biased closed).
CLOSED_LOGIT = -6.0


class Attention(nn.Module):
    """Multi-head attention of queries x over a context (self-attention when context is x)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        D = config.width
        self.num_heads = config.num_heads
        self.q = nn.Linear(D, D)
        self.kv = nn.Linear(D, 2 * D)
        self.proj = nn.Linear(D, D)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        S, nh = context.size(1), self.num_heads
        q = self.q(x).view(B, T, nh, D // nh).transpose(1, 2)  # (B, nh, T, hs)
        k, v = self.kv(context).split(D, dim=2)  # (B, S, D) each
        k = k.view(B, S, nh, D // nh).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, nh, D // nh).transpose(1, 2)  # (B, nh, S, hs)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S), True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(y)


class ResamplerBlock(nn.Module):
    """Queries read the context (cross-attention), mix among themselves (self-attention), then an MLP.

    The self-attention is there because slots that can exchange what they read decode better
    (a hard receiver read more of a message with one slot-mixing block than without).
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        D = config.width
        self.ln_q, self.ln_ctx, self.cross = nn.LayerNorm(D), nn.LayerNorm(D), Attention(config)
        self.ln_self, self.self_attn = nn.LayerNorm(D), Attention(config)
        self.ln_mlp = nn.LayerNorm(D)
        hidden = config.mlp_ratio * D
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(), nn.Linear(hidden, D))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.cross(self.ln_q(x), self.ln_ctx(context), mask)
        h = self.ln_self(x)
        x = x + self.self_attn(h, h)
        return x + self.mlp(self.ln_mlp(x))


def position_codes(n: int, width: int) -> Tensor:
    """Sinusoidal codes (n, width) of positions 0..n-1, the same codes `_positions_from_end` gives."""
    return _positions_from_end(torch.ones(1, n, dtype=torch.bool), width)[0].flip(0)


def _positions_from_end(mask: Tensor, width: int) -> Tensor:
    """Sinusoidal encodings (B, m, width) of each valid vector's distance from the last valid one
    (0 = the newest), so left- and right-padded batches and any length get the same codes."""
    after = mask.flip(1).long().cumsum(1).flip(1) - 1  # (B, m): valid vectors after this one
    position = after.clamp_min(0).to(torch.float32)[..., None]  # (B, m, 1)
    rates = torch.exp(torch.arange(0, width, 2, device=mask.device, dtype=torch.float32)
                      * (-math.log(10_000.0) / width))  # (width/2,)
    angles = position * rates  # (B, m, width/2)
    codes = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, m, width)
    return codes[..., :width]


class FamilyEncoder(nn.Module):
    """Latent steps (B, m, H) -> K universal tokens (B, K, D) in the family's codec space."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        H, D, S = config.hidden_size, config.width, config.stat_tokens
        # The steps carry the family's embedding scale (Gemma's includes sqrt(H)); normalising
        # first keeps the codec's inputs at one scale whatever the family.
        self.ln_in = nn.LayerNorm(H)
        self.proj_in = nn.Linear(H, D)
        # Query i starts as the code of position i (counted from the newest vector): each token
        # first reads one place of the sequence, an order the decoder's slot queries, coded the
        # same way, can read back. From random queries a codec could not learn to copy a short
        # message through its K tokens; from these it does (docs/architecture.md, the codec).
        self.queries = nn.Parameter(position_codes(config.num_tokens - S, D))
        self.stats = nn.ModuleList(nn.Linear(D, D) for _ in range(S))  # mean, then std
        self.blocks = nn.ModuleList(ResamplerBlock(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(D)

    def forward(self, steps: Tensor, mask: Tensor | None = None) -> Tensor:
        B, m, _ = steps.shape
        if mask is None:
            mask = torch.ones(B, m, dtype=torch.bool, device=steps.device)
        valid = mask[:, :, None]  # (B, m, 1)
        # where(), not a multiply: padded steps may hold anything, NaN included, and must not leak.
        context = self.proj_in(self.ln_in(torch.where(valid, steps, 0.0)))  # (B, m, D)
        # Where each vector stands: hidden states of rotary-position models carry little absolute
        # position, and without it the resampler sees a bag of vectors (it cannot tell the first
        # character of a message from the last).
        context = torch.where(valid, context + _positions_from_end(mask, context.size(-1)), 0.0)
        count = mask.sum(1, keepdim=True).to(context.dtype)  # (B, 1)
        mean = context.sum(1) / count  # (B, D)
        var = (torch.where(valid, context - mean[:, None, :], 0.0) ** 2).sum(1) / count  # (B, D)
        pooled = [mean, (var + 1e-5).sqrt()]
        stat_tokens = [proj(p)[:, None, :] for proj, p in zip(self.stats, pooled)]  # S x (B, 1, D)
        x = torch.cat([self.queries.expand(B, -1, -1), *stat_tokens], dim=1)  # (B, K, D)
        for block in self.blocks:
            x = block(x, context, mask)
        return self.ln_f(x)


@dataclass
class DecoderOutput:
    """What a family decoder makes of the latents it received."""

    embeddings: Tensor  # (B, k, H): visual embeddings before the gate
    # (): tanh of a learned scalar, exactly 0 for an untrained codec (gate "scalar"); (B, 1, 1): one
    # value per message, near 0 for an untrained codec (gate "message")
    gate: Tensor

    @property
    def gated(self) -> Tensor:
        """(B, k, H): ``gate * embeddings``, what is added to a blank image's embeddings."""
        return self.gate * self.embeddings


class FamilyDecoder(nn.Module):
    """Universal tokens (B, N, D) of all received latents -> k visual embeddings (B, k, H) + gate."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        D = config.width
        self.queries = nn.Parameter(position_codes(config.image_slots, D))  # see FamilyEncoder
        self.blocks = nn.ModuleList(ResamplerBlock(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(D)
        self.out = nn.Linear(D, config.hidden_size)
        self.kind = config.gate
        if self.kind == "scalar":
            # tanh(0) = 0 exactly: an untrained codec reads as a blank image, and training opens the
            # gate only as far as the injected embeddings help (Flamingo's gated cross-attention).
            self.gate = nn.Parameter(torch.zeros(()))
        else:  # "message": the gate is read off the received tokens, so each message sets its own mix
            self.gate_in = nn.LayerNorm(D)
            self.gate_mlp = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, 1))
        self.reset_gate()

    def reset_gate(self) -> None:
        """Close the gate as an untrained codec's: exactly (scalar) or nearly (message, `CLOSED_LOGIT`)."""
        self.set_gate(0.0 if self.kind == "scalar" else CLOSED_LOGIT)

    @torch.no_grad()
    def set_gate(self, raw: float) -> None:
        """Set where the gate starts: the scalar's raw value (the gate is its tanh), or the logit of
        the message gate's last layer (the gate is its sigmoid, before the message moves it)."""
        if self.kind == "scalar":
            self.gate.fill_(raw)
        else:
            self.gate_mlp[-1].bias.fill_(raw)

    @torch.no_grad()
    def resting_gate(self) -> float:
        """The gate for a message that moves it nowhere: tanh of the scalar, or the message gate's
        sigmoid of its last bias."""
        return float(torch.tanh(self.gate) if self.kind == "scalar" else torch.sigmoid(self.gate_mlp[-1].bias))

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> DecoderOutput:
        B = tokens.size(0)
        x = self.queries.expand(B, -1, -1)  # (B, k, D)
        for block in self.blocks:
            x = block(x, tokens, mask)
        embeddings = self.out(self.ln_f(x))  # (B, k, H)
        if self.kind == "scalar":
            return DecoderOutput(embeddings=embeddings, gate=torch.tanh(self.gate))
        valid = (torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device) if mask is None
                 else mask)[:, :, None]  # (B, N, 1)
        pooled = torch.where(valid, tokens, 0.0).sum(1) / valid.sum(1).clamp_min(1)  # (B, D)
        gate = torch.sigmoid(self.gate_mlp(self.gate_in(pooled)))[:, :, None]  # (B, 1, 1)
        return DecoderOutput(embeddings=embeddings, gate=gate)
