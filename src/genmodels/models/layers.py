"""Neural network building blocks: MLPs, residual MLP blocks and the sinusoidal timestep embedding."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.functional import linear, silu

__all__ = ["ACTIVATIONS", "MLP", "Linear", "ResidualBlock", "sinusoidal_embedding"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}


# A product with this many input features or fewer is written as broadcast arithmetic when compiled.
THIN = 2


class Linear(nn.Linear):
    """``nn.Linear`` (same weights and state dict) whose product, inside ``torch.compile``, is written as
    broadcast multiply-adds where it has at most ``THIN`` input features (an outer product): the compiler
    then fuses it, forward and backward, into the neighbouring elementwise kernels, where a matrix-multiply
    call for a (2048, 1) x (1, 128) product costs as long as a (2048, 128) x (128, 128) one. Eagerly, and
    for more input features, ``F.linear``. (Products with few outputs stay matrix products: written as
    float32 sums inside bfloat16 autocast, they trained RealNVP worse; docs/speed.md.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_in = self.weight.shape[1]
        if not torch.compiler.is_compiling() or n_in > THIN:
            return linear(x, self.weight, self.bias)
        out = sum(x[..., k : k + 1] * self.weight[:, k] for k in range(n_in))  # sum_k x[..., k] w[:, k]
        return out if self.bias is None else out + self.bias


class MLP(nn.Sequential):
    """MLP ``(*, in_features) -> [hidden_units] * n_hidden -> (*, out_features)``, zero-initialised last layer
    if ``zero_last``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        n_hidden: int,
        hidden_units: int,
        activation: str = "relu",
        zero_last: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        widths = [in_features] + [hidden_units] * n_hidden + [out_features]
        act = ACTIVATIONS[activation]
        layers = [m for a, b in itertools.pairwise(widths) for m in (Linear(a, b), act())][:-1]
        super().__init__(*layers)
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)


class ResidualBlock(nn.Module):
    """``h + W2 silu(W1 silu(LayerNorm(h)) + b1 + C c)``, a pre-norm residual block conditioned on ``c``.

    ``h (N, width)``, ``cond (G, cond_dim)`` -> ``(N, width)``, G dividing N: row g of ``cond`` conditions
    the g-th run of N / G rows (or pass :meth:`first_bias` as ``bias``). ``extra (N, width)``, a per-row
    term (a label's projection), is folded into that bias: one pass over the rows. In place without autograd.
    """

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, width)
        self.cond = nn.Linear(cond_dim, width)
        self.linear2 = nn.Linear(width, width)

    def first_bias(self, cond: torch.Tensor) -> torch.Tensor:
        """``b1 + C c``, the first layer's bias per condition: ``cond (G, cond_dim)`` -> ``(G, width)``."""
        return self.linear1.bias + self.cond(cond)

    def forward(
        self,
        h: torch.Tensor,
        cond: torch.Tensor | None = None,
        *,
        bias: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if bias is None:
            bias = self.first_bias(cond)
        inplace = not torch.is_grad_enabled()
        u = silu(self.norm(h), inplace=inplace)
        (n, width), groups = h.shape, bias.shape[0]
        if n % groups:
            raise ValueError(f"cond has {groups} rows, which does not divide the {n} rows of h")
        rows = n // groups
        if extra is not None:
            bias = (bias.unsqueeze(1) + extra.view(groups, rows, width)).view(n, width)
            u = torch.addmm(bias, u, self.linear1.weight.t())
        elif groups == 1:
            u = torch.addmm(bias[0], u, self.linear1.weight.t())
        else:
            u = (linear(u, self.linear1.weight).view(groups, rows, width) + bias.unsqueeze(1)).view(n, width)
        return self.linear2(silu(u, inplace=inplace)).add_(h)  # into the new output: one allocation less


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """``(N, dim)`` embedding ``[sin(t f_k), cos(t f_k)]`` of ``timesteps (N,)`` (Vaswani et al. 2017,
    sec. 3.5), ``f_k`` geometric from 1 to 1/max_period; an odd ``dim`` gets a trailing zero column."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
