"""Neural network building blocks: MLPs, residual MLP blocks and the sinusoidal timestep embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "ResidualBlock", "sinusoidal_embedding"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Sequential):
    """A multi-layer perceptron ``in_features -> [hidden_units] * n_hidden -> out_features``.

    Args:
        in_features: input width.
        out_features: output width.
        n_hidden: number of hidden layers (0 gives a single linear map).
        hidden_units: width of each hidden layer.
        activation: one of :data:`ACTIVATIONS`.
        zero_last: initialise the last layer to zero, so the network starts as the constant 0.

    Shapes: ``(*, in_features) -> (*, out_features)``.
    """

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
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        if zero_last:
            last = layers[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)


class ResidualBlock(nn.Module):
    """``h + W2 act(W1 act(LayerNorm(h)) + time_projection)``: a pre-norm residual MLP block with a
    conditioning input added between its two layers.

    Shapes: ``h (N, width)``, ``cond (G, cond_dim)`` -> ``(N, width)``, where G divides N and row g of
    ``cond`` conditions the g-th run of N / G consecutive rows of ``h`` (G = N: one row each; G = 1:
    all rows). Sharing a condition projects it G times instead of N. ``extra (N, width)``, where given,
    is added beside the projection (a per-row conditioning already projected, e.g. a label's); it is
    folded into the first layer's bias, so that it costs one pass over the rows, not two.

    Raises:
        ValueError: G does not divide N.
    """

    def __init__(self, width: int, cond_dim: int, *, activation: str = "silu") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, width)
        self.cond = nn.Linear(cond_dim, width)
        self.linear2 = nn.Linear(width, width)
        self.act = ACTIVATIONS[activation]()

    def forward(self, h: torch.Tensor, cond: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        a = self.act(self.norm(h))
        (n, width), groups = h.shape, cond.shape[0]
        if n % groups:
            raise ValueError(f"cond has {groups} rows, which does not divide the {n} rows of h")
        if extra is None:
            u = (self.linear1(a).view(groups, n // groups, width) + self.cond(cond).unsqueeze(1)).view(
                n, width
            )
        else:
            bias = (self.cond(cond) + self.linear1.bias).unsqueeze(1) + extra.view(groups, n // groups, width)
            u = torch.addmm(bias.view(n, width), a, self.linear1.weight.t())
        return h + self.linear2(self.act(u))


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in Vaswani et al. 2017 sec. 3.5.

    Args:
        timesteps: ``(N,)`` timesteps.
        dim: embedding width; an odd width gets a trailing zero column.

    Returns:
        ``(N, dim)``: ``[sin(t f_k), cos(t f_k)]`` with frequencies ``f_k`` geometric from 1 to 1/max_period.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / max(half, 1)
    )
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
