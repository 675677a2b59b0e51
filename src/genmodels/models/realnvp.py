"""RealNVP: a normalizing flow of affine coupling layers (Dinh, Sohl-Dickstein & Bengio 2017).

The flow ``f`` maps data ``x`` (in the data's own units) to a latent ``z = f(x)`` with a standard normal
base density. The first bijection is a fixed standardisation (the training data's mean and standard
deviation), so every log-density is in the data's own units. By the change of variables (Dinh et al.
2017, eq. 3)::

    log p(x) = log N(f(x); 0, I) + log |det ∂f/∂x|

Each coupling (eqs. 4-6) keeps one half ``x_a`` of the coordinates and maps the other half
``x_b -> x_b * exp(s(x_a)) + t(x_a)``, with ``log |det| = sum(s(x_a))``; consecutive couplings swap the
halves. The log-scale ``s`` is soft-clamped by ``c * tanh(s / c)`` so training cannot overflow, and the
conditioner's last layer starts at zero, so a new flow is the identity (after standardisation).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Literal

import torch
from pydantic import Field, StrictBool
from torch import nn

from genmodels.models.base import (
    Float,
    Int,
    ModelSpec,
    Standardize,
    check_config_type,
    check_points,
    check_sample_count,
    register,
    settings,
    standard_normal_log_prob,
    whole_number,
)
from genmodels.models.layers import MLP

__all__ = [
    "Standardize",
    "ActNorm",
    "AffineCoupling",
    "RealNVP",
    "check_points",
    "standard_normal_log_prob",
    "whole_number",
]


@settings
class RealNVPModelConfig:
    """RealNVP architecture (Dinh et al. 2017): ``n_coupling_layers`` couplings, each conditioner an MLP
    of ``n_hidden`` layers of ``hidden_units``; log-scales soft-clamped to ±``scale_clamp``; ``actnorm``
    (Kingma & Dhariwal 2018) before every coupling."""

    n_coupling_layers: Int = Field(14, ge=1)
    n_hidden: Int = Field(2, ge=0)
    hidden_units: Int = Field(128, ge=1)
    activation: Literal["relu", "silu", "tanh", "gelu"] = "relu"
    scale_clamp: Float = Field(3.0, gt=0)
    actnorm: StrictBool = False


class ActNorm(nn.Module):
    """``x -> x * exp(log_scale) + bias`` (Kingma & Dhariwal 2018, sec. 3.1), initialised to whiten its
    first training batch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        # True once the buffer is known to be True (reading it waits for the device).
        self._known_initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - torch's signature
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self._known_initialized and x.shape[0] > 1:
            if not bool(self.initialized):
                with torch.no_grad():
                    std = x.std(0).clamp_min(1e-6)
                    self.log_scale.copy_(-torch.log(std))
                    self.bias.copy_(-x.mean(0) / std)
                    self.initialized.fill_(True)
            self._known_initialized = True
        return x * torch.exp(self.log_scale) + self.bias, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (z - self.bias) * torch.exp(-self.log_scale), -self.log_scale.sum().expand(z.shape[0])


class AffineCoupling(nn.Module):
    """Affine coupling layer (Dinh et al. 2017, eqs. 4-6); ``parity`` 0 transforms the last ``D - D//2``
    coordinates, 1 the first ``D//2``; ``s = c * tanh(raw / c)``, c = ``scale_clamp``. ``forward`` and
    ``inverse``: ``(N, D)`` -> ``(N, D)`` and ``log |det J| (N,)`` in nats."""

    def __init__(
        self,
        dim: int,
        parity: int,
        *,
        n_hidden: int,
        hidden_units: int,
        activation: str = "relu",
        scale_clamp: float = 3.0,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling layer needs at least 2 dimensions, got {dim}")
        first = list(range(dim // 2))
        second = list(range(dim // 2, dim))
        cond, trans = (first, second) if parity == 0 else (second, first)
        self.register_buffer("cond_index", torch.tensor(cond, dtype=torch.long), persistent=False)
        self.register_buffer("trans_index", torch.tensor(trans, dtype=torch.long), persistent=False)
        self.n_trans = len(trans)
        self.scale_clamp = scale_clamp
        self.net = MLP(
            len(cond),
            2 * len(trans),
            n_hidden=n_hidden,
            hidden_units=hidden_units,
            activation=activation,
            zero_last=True,
        )

    def shift_and_log_scale(self, x_cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine parameters ``t, s`` (each ``(N, n_trans)``) from the kept half, in its dtype."""
        shift, raw = self.net(x_cond).to(x_cond.dtype).split(self.n_trans, dim=-1)
        return shift, self.scale_clamp * torch.tanh(raw / self.scale_clamp)

    def _transform(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x_cond = x.index_select(-1, self.cond_index)
        x_trans = x.index_select(-1, self.trans_index)
        shift, log_scale = self.shift_and_log_scale(x_cond)
        if inverse:
            y_trans, log_det = (x_trans - shift) * torch.exp(-log_scale), -log_scale.sum(-1)
        else:
            y_trans, log_det = x_trans * torch.exp(log_scale) + shift, log_scale.sum(-1)
        y = x.index_copy(-1, self.trans_index, y_trans)
        return y, log_det

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(y, inverse=True)


class RealNVP(nn.Module):
    """RealNVP flow ``x -> z`` on ``D >= 2``-dimensional data with a standard normal base (arguments as
    :class:`RealNVPModelConfig`); :meth:`set_standardization` fixes the first bijection."""

    def __init__(
        self,
        dim: int,
        *,
        n_coupling_layers: int = 14,
        n_hidden: int = 2,
        hidden_units: int = 128,
        activation: str = "relu",
        scale_clamp: float = 3.0,
        actnorm: bool = False,
    ) -> None:
        super().__init__()
        if whole_number(dim) is None or dim < 2:
            raise ValueError(f"RealNVP needs data of at least 2 dimensions (a whole number), got {dim!r}")
        if not (isinstance(scale_clamp, numbers.Real) and math.isfinite(scale_clamp) and scale_clamp > 0):
            raise ValueError(f"scale_clamp must be a finite number > 0, got {scale_clamp!r}")
        for name, value, least in (
            ("n_coupling_layers", n_coupling_layers, 1),
            ("n_hidden", n_hidden, 0),
            ("hidden_units", hidden_units, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        self.dim = dim
        self.standardize = Standardize(dim)
        layers: list[nn.Module] = []
        for i in range(n_coupling_layers):
            if actnorm:
                layers.append(ActNorm(dim))
            layers.append(
                AffineCoupling(
                    dim,
                    i % 2,
                    n_hidden=n_hidden,
                    hidden_units=hidden_units,
                    activation=activation,
                    scale_clamp=scale_clamp,
                )
            )
        self.layers = nn.ModuleList(layers)

    @classmethod
    def from_config(cls, config: RealNVPModelConfig, dim: int) -> RealNVP:
        """Build from a :class:`RealNVPModelConfig` for ``dim``-dimensional data."""
        check_config_type(config, RealNVPModelConfig)
        return cls(
            dim,
            n_coupling_layers=config.n_coupling_layers,
            n_hidden=config.n_hidden,
            hidden_units=config.hidden_units,
            activation=config.activation,
            scale_clamp=config.scale_clamp,
            actnorm=config.actnorm,
        )

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Use ``mean (D,)`` and ``std (D,)`` of the training data for the fixed first bijection."""
        self.standardize.set_statistics(mean, std)

    def _bijections(self) -> list[nn.Module]:
        return [self.standardize, *self.layers]

    def _check_points(self, x: torch.Tensor, name: str) -> None:
        check_points(x, self.dim, self.standardize.mean.dtype, name, model="flow")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to latent: ``x (N, D) -> z = f(x) (N, D)`` and ``log |det ∂f/∂x| (N,)`` in nats."""
        self._check_points(x, "x")
        log_det = x.new_zeros(x.shape[0])
        for bijection in self._bijections():
            x, ld = bijection(x)
            log_det = log_det + ld
        return x, log_det

    def log_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """``log |det ∂f/∂x|`` at ``x (N, D)``: ``(N,)`` in nats."""
        return self.forward(x)[1]

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent to data: ``z (N, D) -> x = f⁻¹(z) (N, D)`` in the data's units."""
        self._check_points(z, "z")
        for bijection in reversed(self._bijections()):
            z, _ = bijection.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density ``log p(x)`` of ``x (N, D)``: ``(N,)`` in nats, in the data's own units."""
        z, log_det = self.forward(x)
        return standard_normal_log_prob(z) + log_det

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Training loss: mean negative log-likelihood of the batch ``x (N, D)`` in nats per sample."""
        self._check_points(x, "x")
        if x.shape[0] == 0:
            raise ValueError("the loss needs at least one point, got an empty batch")
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def held_out_metrics(self, x: torch.Tensor) -> dict[str, float]:
        """``{"test_nll": mean -log p(x)}`` in nats per point, for ``x (N, D)``."""
        return {"test_nll": float(-self.log_prob(x).mean())}

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples ``x = f⁻¹(z)``, ``z ~ N(0, I)``: ``(n, D)`` in the data's units."""
        n = check_sample_count(n, self.dim)
        device = self.standardize.mean.device
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=self.standardize.mean.dtype)
        return self.inverse(z)

    @torch.no_grad()
    def trajectory(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield ``x`` after each bijection (standardisation first, the latent last), each ``(N, D)``."""
        for bijection in self._bijections():
            x, _ = bijection(x)
            yield x


def _parameter_count(config: RealNVPModelConfig, dim: int) -> int:
    """Weights of the flow ``config`` builds for ``dim``-dimensional data (its conditioner MLPs)."""
    half = -(-dim // 2)
    widths = [half] + [config.hidden_units] * config.n_hidden + [2 * half]
    return config.n_coupling_layers * sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


SPEC = register(
    ModelSpec(
        name="realnvp",
        title="RealNVP",
        model_class=RealNVP,
        config_class=RealNVPModelConfig,
        training_defaults={"epochs": 500, "batch_size": 2048, "seed": 42},
        parameter_count=_parameter_count,
        size_keys=("n_coupling_layers", "n_hidden", "hidden_units"),
        likelihoods={"exact": lambda model, x, generator: -model.log_prob(x)},
        loss_label="loss [nats]",
        figures=("latent", "warped_grid", "density"),
        loss_figure={
            "series": "train_nll",
            "ylabel": "negative log-likelihood [nats]",
            "title": "RealNVP: NLL per epoch (train: mean over the epoch's batches; held-out: averaged weights)",
        },
    )
)
