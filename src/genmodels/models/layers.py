"""Neural network building blocks: MLPs, residual MLP blocks and the sinusoidal timestep embedding."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import linear, silu

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
    """``h + W2 silu(W1 silu(LayerNorm(h)) + b1 + C c)``: a pre-norm residual MLP block whose first
    layer's bias is shifted by a projection ``C c`` of a conditioning input ``c``.

    Shapes: ``h (N, width)``, ``cond (G, cond_dim)`` -> ``(N, width)``, where G divides N and row g of
    ``cond`` conditions the g-th run of N / G consecutive rows of ``h`` (G = N: one row each; G = 1:
    all rows). Sharing a condition projects it G times instead of N. A sampler that visits known
    conditions can compute :meth:`first_bias` once for all of them and pass it as ``bias`` instead
    of ``cond``. Without autograd (``torch.no_grad``, ``inference_mode``) the activations are computed
    in place, which saves allocations that cost about as much as the products at small widths.

    Raises:
        ValueError: G does not divide N.
    """

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, width)
        self.cond = nn.Linear(cond_dim, width)
        self.linear2 = nn.Linear(width, width)

    def first_bias(self, cond: torch.Tensor) -> torch.Tensor:
        """``b1 + C c``, the first layer's bias under each condition: ``cond (G, cond_dim)`` -> ``(G, width)``."""
        return self.linear1.bias + self.cond(cond)

    def forward(
        self, h: torch.Tensor, cond: torch.Tensor | None = None, *, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if bias is None:
            bias = self.first_bias(cond)
        inplace = not torch.is_grad_enabled()
        u = silu(self.norm(h), inplace=inplace)
        (n, width), groups = h.shape, bias.shape[0]
        if groups == 1:
            u = torch.addmm(bias[0], u, self.linear1.weight.t())
        elif n % groups:
            raise ValueError(f"cond has {groups} rows, which does not divide the {n} rows of h")
        else:
            u = (linear(u, self.linear1.weight).view(groups, n // groups, width) + bias.unsqueeze(1)).view(
                n, width
            )
        return self.linear2(silu(u, inplace=inplace)).add_(h)  # into the new output: one allocation less


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
