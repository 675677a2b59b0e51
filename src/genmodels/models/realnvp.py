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

Conditional flow (``n_labels = K > 0``): a learned label embedding e(y) is concatenated to every
conditioner's input, ``s, t = NN([x_a, e(y)])``, so ``log p(x | y) = log N(f_y(x); 0, I) + log |det
∂f_y/∂x|`` exactly; without a label, ``log p(x) = logsumexp_y (log π_y + log p(x | y))`` with the
training proportions π, and the bijection is the most frequent label's (for the latent figures).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from typing import Literal

import torch
from pydantic import Field, StrictBool
from torch import Tensor, nn

from genmodels.models.base import (
    Float,
    Int,
    ModelSpec,
    Standardize,
    as_number,
    check_config_type,
    check_labels,
    check_points,
    check_sample_count,
    register,
    settings,
    standard_normal_log_prob,
)
from genmodels.models.layers import MLP

__all__ = ["ActNorm", "AffineCoupling", "RealNVP", "RealNVPModelConfig", "standard_normal_log_prob"]

Pair = tuple[Tensor, Tensor]  # points and log |det| (N,), or a label table and labels


@settings
class RealNVPModelConfig:
    """RealNVP architecture (Dinh et al. 2017): ``n_coupling_layers`` couplings, each conditioner an MLP
    of ``n_hidden`` layers of ``hidden_units``; log-scales soft-clamped to ±``scale_clamp``; ``actnorm``
    (Kingma & Dhariwal 2018) before every coupling; ``n_labels`` > 0 (set by a run from
    ``data.condition``): conditioned on a label embedded in ``label_embed_dim`` values."""

    n_coupling_layers: Int = Field(14, ge=1)
    n_hidden: Int = Field(2, ge=0)
    hidden_units: Int = Field(128, ge=1)
    activation: Literal["relu", "silu", "tanh", "gelu"] = "relu"
    scale_clamp: Float = Field(3.0, gt=0)
    actnorm: StrictBool = False
    n_labels: Int = Field(0, ge=0)
    label_embed_dim: Int = Field(8, ge=1)


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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self._known_initialized and x.shape[0] > 1:
            if not bool(self.initialized):
                with torch.no_grad():
                    std = x.std(0).clamp_min(1e-6)
                    self.log_scale.copy_(-torch.log(std))
                    self.bias.copy_(-x.mean(0) / std)
                    self.initialized.fill_(True)
            self._known_initialized = True
        return x * torch.exp(self.log_scale) + self.bias, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return (z - self.bias) * torch.exp(-self.log_scale), -self.log_scale.sum().expand(z.shape[0])


class AffineCoupling(nn.Module):
    """Affine coupling layer (Dinh et al. 2017, eqs. 4-6); ``parity`` 0 transforms the last ``D - D//2``
    coordinates, 1 the first ``D//2``; ``s = c * tanh(raw / c)``, c = ``scale_clamp``. ``forward`` and
    ``inverse``: ``(N, D)`` -> ``(N, D)`` and ``log |det J| (N,)`` in nats; their ``context``, where given,
    is a label embedding table ``(K, context_dim)`` and the labels ``(N,)``."""

    def __init__(
        self,
        dim: int,
        parity: int,
        *,
        n_hidden: int,
        hidden_units: int,
        activation: str = "relu",
        scale_clamp: float = 3.0,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        first, second = list(range(dim // 2)), list(range(dim // 2, dim))
        cond, trans = (first, second) if parity == 0 else (second, first)
        self.register_buffer("cond_index", torch.tensor(cond, dtype=torch.long), persistent=False)
        self.register_buffer("trans_index", torch.tensor(trans, dtype=torch.long), persistent=False)
        self.n_trans, self.scale_clamp = len(trans), scale_clamp
        width = dict(n_hidden=n_hidden, hidden_units=hidden_units, activation=activation)
        self.net = MLP(len(cond) + context_dim, 2 * len(trans), **width, zero_last=True)

    def shift_and_log_scale(self, x_cond: Tensor, context: Pair | None = None) -> Pair:
        """The affine parameters ``t, s`` (each ``(N, n_trans)``) computed from the kept half (and the
        label context: the first layer on ``[x_cond, e(y)]``, whose e(y) part is a per-label bias table
        gathered per point, the same function as concatenating e(y) at one pass over the points)."""
        if context is None:
            out = self.net(x_cond)
        else:
            (table, label), first, n = context, self.net[0], x_cond.shape[-1]
            bias = nn.functional.embedding(label, torch.addmm(first.bias, table, first.weight[:, n:].t()))
            out = torch.addmm(bias.to(x_cond.dtype), x_cond, first.weight[:, :n].t())
            for layer in list(self.net)[1:]:
                out = layer(out)
        # Under bfloat16 autocast the conditioner's products are bfloat16; the bijection keeps x's dtype.
        shift, raw = out.to(x_cond.dtype).split(self.n_trans, dim=-1)
        return shift, self.scale_clamp * torch.tanh(raw / self.scale_clamp)

    def forward(self, x: Tensor, context: Pair | None = None, inverse: bool = False) -> Pair:
        x_cond, x_trans = x.index_select(-1, self.cond_index), x.index_select(-1, self.trans_index)
        shift, log_scale = self.shift_and_log_scale(x_cond, context)
        if inverse:
            y_trans, log_det = (x_trans - shift) * torch.exp(-log_scale), -log_scale.sum(-1)
        else:
            y_trans, log_det = x_trans * torch.exp(log_scale) + shift, log_scale.sum(-1)
        return x.index_copy(-1, self.trans_index, y_trans), log_det

    def inverse(self, y: Tensor, context: Pair | None = None) -> Pair:
        return self.forward(y, context, inverse=True)


class RealNVP(nn.Module):
    """RealNVP flow ``x -> z`` on ``D >= 2``-dimensional data with a standard normal base (arguments as
    :class:`RealNVPModelConfig`); :meth:`set_standardization` fixes the first bijection. A conditional
    flow's methods take a ``label`` (an int or ``(N,)`` indices)."""

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
        n_labels: int = 0,
        label_embed_dim: int = 8,
    ) -> None:
        super().__init__()
        sizes = dict(
            dim=dim, n_coupling_layers=n_coupling_layers, n_hidden=n_hidden, hidden_units=hidden_units
        )
        for (name, value), least in zip(sizes.items(), (2, 1, 0, 1), strict=True):
            if as_number(value) is None or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        if not 0 < (as_number(scale_clamp, whole=False) or 0) < math.inf:
            raise ValueError(f"scale_clamp must be a finite number > 0, got {scale_clamp!r}")
        self.dim, self.n_labels = dim, n_labels
        self.standardize = Standardize(dim)
        if n_labels:
            self.label_embedding = nn.Embedding(n_labels, label_embed_dim)
            self.register_buffer("label_proportions", torch.full((n_labels,), 1.0 / n_labels))
        net = dict(
            n_hidden=n_hidden, hidden_units=hidden_units, activation=activation, scale_clamp=scale_clamp
        )
        layers: list[nn.Module] = []
        for i in range(n_coupling_layers):
            coupling = AffineCoupling(dim, i % 2, **net, context_dim=label_embed_dim if n_labels else 0)
            layers += [ActNorm(dim), coupling] if actnorm else [coupling]  # ActNorm draws no random numbers
        self.layers = nn.ModuleList(layers)

    @classmethod
    def from_config(cls, config: RealNVPModelConfig, dim: int) -> RealNVP:
        """Build from a :class:`RealNVPModelConfig` for ``dim``-dimensional data."""
        check_config_type(config, RealNVPModelConfig)
        return cls(dim, **dataclasses.asdict(config))

    def set_standardization(self, mean: Tensor, std: Tensor) -> None:
        """Use ``mean (D,)`` and ``std (D,)`` of the training data for the fixed first bijection."""
        self.standardize.set_statistics(mean, std)

    def _bijections(self) -> list[nn.Module]:
        return [self.standardize, *self.layers]

    def _check_points(self, x: Tensor, name: str) -> None:
        check_points(x, self.dim, self.standardize.mean.dtype, name, model="flow")

    def _context(self, label: object, n: int) -> Pair | None:
        """The embedding table ``(K, label_embed_dim)`` and labels ``(n,)`` (default: the most frequent)."""
        if self.n_labels and label is None:
            label = int(self.label_proportions.argmax())
        label = check_labels(label, n, self.n_labels, self.standardize.mean.device)
        return None if label is None else (self.label_embedding.weight, label)

    def _through(self, bijection: nn.Module, x: Tensor, context: Pair | None, inverse: bool) -> Pair:
        step = bijection.inverse if inverse else bijection
        return step(x, context) if isinstance(bijection, AffineCoupling) else step(x)

    def forward(self, x: Tensor, label: object = None) -> Pair:
        """Map data to latent: ``x (N, D) -> z = f_y(x) (N, D)`` and ``log |det ∂f_y/∂x| (N,)`` in nats."""
        self._check_points(x, "x")
        context = self._context(label, x.shape[0])
        log_det = x.new_zeros(x.shape[0])
        for bijection in self._bijections():
            x, ld = self._through(bijection, x, context, False)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor, label: object = None) -> Tensor:
        """Map latent to data: ``z (N, D) -> x = f_y⁻¹(z) (N, D)`` in the data's units."""
        self._check_points(z, "z")
        context = self._context(label, z.shape[0])
        for bijection in reversed(self._bijections()):
            z, _ = self._through(bijection, z, context, True)
        return z

    def log_prob(self, x: Tensor, label: object = None) -> Tensor:
        """Exact log-density ``log p(x)`` (``log p(x | label)`` given one) of ``x (N, D)``: ``(N,)`` in
        nats, in the data's own units. A conditional flow without a label gives the marginal
        ``logsumexp_y (log π_y + log p(x | y))`` (K passes)."""
        if self.n_labels and label is None:
            per_label = [self.log_prob(x, y) for y in range(self.n_labels)]
            return torch.logsumexp(torch.stack(per_label, 1) + self.label_proportions.log(), 1)
        z, log_det = self.forward(x, label)
        return standard_normal_log_prob(z) + log_det

    def loss(self, x: Tensor, label: object = None) -> Tensor:
        """Training loss: mean negative log-likelihood of the batch ``x (N, D)`` (given ``label``), nats."""
        self._check_points(x, "x")
        if x.shape[0] == 0:
            raise ValueError("the loss needs at least one point, got an empty batch")
        return -self.log_prob(x, label).mean()

    @torch.no_grad()
    def held_out_metrics(self, x: Tensor, label: object = None) -> dict[str, float]:
        """``{"test_nll": mean -log p(x)}`` (given ``label``) in nats per point, for ``x (N, D)``."""
        return {"test_nll": float(-self.log_prob(x, label).mean())}

    @torch.no_grad()
    def sample(self, n: int, *, label: object = None, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples ``x = f_y⁻¹(z)``, ``z ~ N(0, I)``: ``(n, D)`` in the data's units; a
        conditional flow without ``label`` draws the labels in the training proportions (after z)."""
        n = check_sample_count(n, self.dim)
        device = self.standardize.mean.device
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=self.standardize.mean.dtype)
        if self.n_labels and label is None and n:
            label = torch.multinomial(self.label_proportions, n, replacement=True, generator=generator)
        return self.inverse(z, 0 if self.n_labels and label is None else label)

    @torch.no_grad()
    def trajectory(self, x: Tensor, label: object = None) -> Iterator[Tensor]:
        """Yield ``x`` after each bijection (standardisation first, the latent last), each ``(N, D)``."""
        context = self._context(label, x.shape[0])
        for bijection in self._bijections():
            x, _ = self._through(bijection, x, context, False)
            yield x


def _parameter_count(config: RealNVPModelConfig, dim: int) -> int:
    """Weights of the flow ``config`` builds for ``dim``-dimensional data (its conditioner MLPs)."""
    half, context = -(-dim // 2), config.label_embed_dim if config.n_labels else 0
    widths = [half + context] + [config.hidden_units] * config.n_hidden + [2 * half]
    layers = sum(a * b + b for a, b in itertools.pairwise(widths))
    return config.n_coupling_layers * layers + config.n_labels * config.label_embed_dim


SPEC = register(
    ModelSpec(
        name="realnvp",
        title="RealNVP",
        model_class=RealNVP,
        config_class=RealNVPModelConfig,
        training_defaults={"epochs": 500, "batch_size": 2048, "seed": 42, "validation_fraction": 0.05},
        parameter_count=_parameter_count,
        size_keys=("n_coupling_layers", "n_hidden", "hidden_units"),
        likelihoods={"exact": lambda model, x, generator, label=None: -model.log_prob(x, label)},
        loss_label="loss [nats]",
        figures=("latent", "warped_grid", "density"),
        recommended_steps=1000,
        loss_figure={
            "series": "train_nll",
            "ylabel": "negative log-likelihood [nats]",
            "title": "RealNVP: NLL per epoch (train: mean over the epoch's batches; held-out: averaged weights)",
        },
    )
)
