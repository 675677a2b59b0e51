"""DDPM: a denoising diffusion probabilistic model (Ho, Jain & Abbeel 2020) in the β² notation of
:mod:`genmodels.models.schedule`.

A network predicts the posterior mean μ_θ(x_i, i) of the reverse step (eq. 1 of Ho et al.)::

    p_θ(x_{i-1} | x_i) = N(μ_θ(x_i, i), σ²_i I),   σ²_i = σ̃²_i or β²_i  (no noise at i = 1)

either directly (``parameterisation="mean"``) or through a noise prediction ε_θ (``"eps"``), which gives
μ_θ = (x_i - β²_i / sqrt(1 - ᾱ_i²) · ε_θ) / α_i (eq. 11). Training draws i uniformly from 1..L and
minimises a weighted squared error between μ_θ and the true posterior mean μ̃_i:

* ``weighting="simple"`` (sec. 3.4, eq. 14): weight (α_i sqrt(1 - ᾱ_i²) / β²_i)², which is the plain
  squared error of the noise prediction, ``|ε - ε_θ|²``;
* ``weighting="bound"``: the variational bound's 1/(2σ²_i) (eq. 5), so the loss is the bound's
  per-step KL terms (with the decoder variance σ²_1 = β²_1 at i = 1).

Both are averaged over the data dimensions. The model standardises the data with fixed statistics; the
bound it reports is in the data's own units (nats per sample).

Conditional model (``n_labels = K > 0``): a learned embedding of the label y (index K: the null token,
"no label") is added to the time embedding's MLP output, so every block's conditioning sees both.
Training replaces a point's label by the null token with probability ``p_uncond``, so one network
predicts both ε_θ(x_i, i, y) and ε_θ(x_i, i, ∅). Sampling with classifier-free guidance (Ho & Salimans
2022, eq. 6 written with the scale w of the common convention) uses ε̂ = ε̂_∅ + w (ε̂_y - ε̂_∅): w = 1 is
plain conditional sampling, w = 0 unconditional, w > 1 sharper classes.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn
from torch.utils.hooks import RemovableHandle

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
)
from genmodels.models.layers import ResidualBlock, sinusoidal_embedding
from genmodels.models.schedule import (
    NoiseSchedule,
    ancestral_step,
    ddim_step,
    schedule_problem,
    schedule_warning,
)

__all__ = ["DenoisingNetwork", "DDPM", "X0_BOUND_MARGIN", "ddim_timesteps"]

# x̂₀ is clipped to this multiple of the data's largest |standardised coordinate| (docs/ddpm-sampling.md).
X0_BOUND_MARGIN = 1.5


@settings
class DDPMModelConfig:
    """DDPM (Ho et al. 2020) in the β² notation: L = ``diffusion_steps``, β² linear from ``beta2_start``
    to ``beta2_end``; ``input_embed_dim`` is a random Fourier embedding of x_i (0: none);
    ``parameterisation``, ``weighting``: see the module docstring; ``reverse_variance``: σ²_i = σ̃²_i
    (``"posterior"``) or β²_i; ``points_per_timestep``: training points sharing one timestep draw
    (training only); ``clip_x0``: clip the samplers' x̂₀ (docs/ddpm-sampling.md); ``n_labels`` > 0 (set
    by a run from ``data.condition``): conditioned on a label, dropped to the null token for a share
    ``p_uncond`` of the training points (training only)."""

    diffusion_steps: Int = Field(2500, ge=1)
    beta2_start: Float = Field(1e-4, gt=0, lt=1)
    beta2_end: Float = Field(0.02, gt=0, lt=1)
    time_embed_dim: Int = Field(32, ge=2)
    hidden_units: Int = Field(64, ge=1)
    n_blocks: Int = Field(4, ge=1)
    input_embed_dim: Int = Field(0, ge=0)
    parameterisation: Literal["eps", "mean"] = "eps"
    weighting: Literal["simple", "bound"] = "simple"
    reverse_variance: Literal["posterior", "beta"] = "posterior"
    points_per_timestep: Int = Field(8, ge=1)
    clip_x0: bool = True
    n_labels: Int = Field(0, ge=0)
    p_uncond: Float = Field(0.1, ge=0, le=1)

    @field_validator("beta2_end")
    @classmethod
    def _schedule_fits_float32(cls, end: float, info: ValidationInfo) -> float:
        if {"diffusion_steps", "beta2_start"} <= info.data.keys():
            problem = schedule_problem(info.data["diffusion_steps"], info.data["beta2_start"], end)
            if problem is not None:
                raise ValueError(problem)
        return end

    def concerns(self) -> list[str]:
        """What a run warns about in valid settings: a schedule that leaves x_L far from N(0, I)."""
        concern = schedule_warning(self.diffusion_steps, self.beta2_start, self.beta2_end)
        return [] if concern is None else [f"model.beta2_start/beta2_end: {concern}"]


def _input_features(x: torch.Tensor, fourier: torch.Tensor | None) -> torch.Tensor:
    """``x (N, D)`` and its Fourier features at frequencies ``fourier (D, F)`` if any: ``(N, D + 2F)``."""
    if fourier is None:
        return x
    proj = 2 * math.pi * x @ fourier
    return torch.cat([x, torch.sin(proj), torch.cos(proj)], dim=-1)


class DenoisingNetwork(nn.Module):
    """Residual MLP ``(x_i, i) -> ε_θ or μ_θ``, conditioned on a sinusoidal timestep embedding (a buffer
    for i = 0..L). ``x (N, D)``, ``timestep (G,)`` -> ``(N, D)``, G dividing N: row g is the timestep
    of the g-th run of N / G consecutive points. With ``n_labels`` = K > 0 also ``label (N,)`` in 0..K
    (K, or None: the null token): its embedding is added beside the time embedding's, each block's
    projection of it a (K + 1)-row table gathered per point (by linearity), folded into the block's bias."""

    def __init__(
        self,
        dim: int,
        steps: int,
        *,
        hidden_units: int,
        n_blocks: int,
        time_embed_dim: int,
        input_embed_dim: int = 0,
        input_embed_scale: float = 1.0,
        n_labels: int = 0,
    ) -> None:
        super().__init__()
        self.n_labels = n_labels
        self.register_buffer(
            "time_table", sinusoidal_embedding(torch.arange(steps + 1), time_embed_dim), persistent=False
        )
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, hidden_units), nn.SiLU(), nn.Linear(hidden_units, hidden_units)
        )
        if input_embed_dim:
            self.register_buffer("fourier", torch.randn(dim, input_embed_dim // 2) * input_embed_scale)
        else:
            self.fourier = None
        self.input = nn.Linear(dim + 2 * (input_embed_dim // 2), hidden_units)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_units, hidden_units) for _ in range(n_blocks))
        self.out_norm = nn.LayerNorm(hidden_units)
        self.output = nn.Linear(hidden_units, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        if n_labels:
            self.label_embedding = nn.Embedding(n_labels + 1, hidden_units)

    def conditioning(self, embedding: torch.Tensor) -> torch.Tensor:
        """Every block's first-layer bias for ``embedding (G, E)``: ``(G, n_blocks, hidden_units)``."""
        cond = self.time_mlp(embedding)
        return torch.stack([block.first_bias(cond) for block in self.blocks], dim=1)

    def label_table(self) -> torch.Tensor | None:
        """Every block's projection of every label's embedding, ``(K + 1, n_blocks * hidden_units)``;
        None for a network without labels."""
        if not self.n_labels:
            return None
        return torch.cat([self.label_embedding.weight @ block.cond.weight.T for block in self.blocks], 1)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        label: torch.Tensor | None = None,
        *,
        conditioning: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x (N, D)``, ``timestep (G,)`` -> ``(N, D)``; a precomputed :meth:`conditioning` may be passed."""
        if conditioning is None:
            conditioning = self.conditioning(self.time_table[timestep])
        h = self.input(_input_features(x, self.fourier))
        table, width = self.label_table(), h.shape[1]
        if table is not None and label is None:  # unconditional: the null token for every point
            label = torch.full((x.shape[0],), self.n_labels, dtype=torch.long, device=x.device)
        parts = [None] * len(self.blocks) if table is None else table.split(width, dim=1)
        for block, bias, part in zip(self.blocks, conditioning.unbind(1), parts, strict=True):
            # One gather per block: its gradient is a small table's.
            extra = None if part is None else nn.functional.embedding(label, part).to(h.dtype)
            h = block(h, bias=bias, extra=extra)
        # x's dtype out, also under bfloat16 autocast: the diffusion arithmetic keeps its precision.
        u = torch.nn.functional.silu(self.out_norm(h), inplace=not torch.is_grad_enabled())
        return self.output(u).to(x.dtype)


def ddim_timesteps(diffusion_steps: int, steps: int, spacing: str = "quadratic") -> list[int]:
    """The decreasing timesteps L = i_0 > ... > i_{S-1} = 1 of a strided sampler with ``steps`` = S:
    evenly spaced (``"linear"``) or 1 + (L - 1)(1 - u)² for u evenly in [0, 1] (``"quadratic"``, dense
    near the data); the last ones at least S - 1, ..., 1, so S = L gives all of L, ..., 1."""
    if steps < 1 or spacing not in ("quadratic", "linear"):
        raise ValueError(f"steps must be >= 1 and spacing 'quadratic' or 'linear', got {steps}, {spacing!r}")
    u = torch.linspace(0, 1, steps, dtype=torch.float64)
    shape = (1 - u) ** 2 if spacing == "quadratic" else 1 - u
    grid = (1 + (diffusion_steps - 1) * shape).round().long()
    grid = torch.maximum(grid, torch.arange(steps, 0, -1).clamp_max(diffusion_steps))
    return grid.unique_consecutive().tolist()


class DDPM(nn.Module):
    """Denoising diffusion model on ``D``-dimensional data with L = ``steps`` and a ``network``
    ``(x_i (N, D), timestep) -> (N, D)`` (one timestep per run of ``points_per_timestep`` points, see
    :meth:`loss`). ``clip_x0``: the samplers clip x̂₀ to :meth:`sample_x0_bound`, learnt by :meth:`loss`.
    ``n_labels`` = K > 0: conditioned on K labels, ``network`` taking ``label (N,)`` in 0..K (K: the
    null token) as a third argument; :meth:`loss` drops a share ``p_uncond`` of the labels to it."""

    def __init__(
        self,
        dim: int,
        *,
        steps: int,
        beta2_start: float,
        beta2_end: float,
        network: nn.Module,
        parameterisation: str = "eps",
        weighting: str = "simple",
        reverse_variance: str = "posterior",
        points_per_timestep: int = 1,
        clip_x0: bool = True,
        n_labels: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        super().__init__()
        if as_number(points_per_timestep) is None or points_per_timestep < 1:
            raise ValueError(f"points_per_timestep must be an integer >= 1, got {points_per_timestep!r}")
        if reverse_variance not in ("posterior", "beta"):
            raise ValueError(f"reverse_variance must be 'posterior' or 'beta', got {reverse_variance!r}")
        if parameterisation not in ("eps", "mean"):
            raise ValueError(f"parameterisation must be 'eps' or 'mean', got {parameterisation!r}")
        if weighting not in ("simple", "bound"):
            raise ValueError(f"weighting must be 'simple' or 'bound', got {weighting!r}")
        self.dim, self.n_labels, self.p_uncond, self.diffusion_steps = dim, n_labels, p_uncond, steps
        if n_labels:
            self.register_buffer("label_proportions", torch.full((n_labels,), 1.0 / n_labels))
        self.parameterisation, self.weighting, self.clip_x0 = parameterisation, weighting, clip_x0
        self.points_per_timestep = points_per_timestep
        self.standardize = Standardize(dim)
        # The largest |coordinate| (D,) of the standardised points the loss has trained on; 0: none yet.
        self.register_buffer("x0_max_abs", torch.zeros(dim))
        self._register_load_state_dict_pre_hook(_default_x0_max_abs)
        self.schedule = NoiseSchedule(steps, beta2_start, beta2_end)
        self.network = network
        # Reverse variances σ²_i (Ho et al. 2020, sec. 3.2): σ̃²_i or β²_i; the decoder's σ²_1 = β²_1.
        self.reverse_variance_kind = reverse_variance
        variance = (
            self.schedule.posterior_variance if reverse_variance == "posterior" else self.schedule.beta2
        ).clone()
        variance[1] = self.schedule.beta2[1]
        self.register_buffer("reverse_variance", variance)
        # An OrderedDict, as torch keeps its module hooks: RemovableHandle holds a weak reference to it.
        self._reverse_step_hooks: OrderedDict[int, Callable] = OrderedDict()

    def register_reverse_step_hook(self, hook: Callable) -> RemovableHandle:
        """Call ``hook(x_i (n, D) standardised, timestep (1,))`` before every reverse step of
        :meth:`sample`; returns a handle whose ``remove()`` unregisters it."""
        if not callable(hook):
            raise TypeError(f"hook must be callable as hook(x_i, timestep), got {type(hook).__name__}")
        handle = RemovableHandle(self._reverse_step_hooks)
        self._reverse_step_hooks[handle.id] = hook
        return handle

    @classmethod
    def from_config(cls, config, dim: int) -> DDPM:  # noqa: ANN001 - DDPMModelConfig
        """Build from a :class:`DDPMModelConfig` for ``dim``-dimensional data."""
        check_config_type(config, DDPMModelConfig)
        if as_number(dim) is None or dim < 1:
            raise ValueError(f"dim (the data dimension) must be a whole number >= 1, got {dim!r}")
        values = dataclasses.asdict(config)
        steps = values.pop("diffusion_steps")
        net = {k: values.pop(k) for k in ("hidden_units", "n_blocks", "time_embed_dim", "input_embed_dim")}
        network = DenoisingNetwork(dim, steps, **net, n_labels=config.n_labels)
        return cls(dim, steps=steps, network=network, **values)

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Diffuse ``(x - mean) / std`` with the training data's ``mean (D,)`` and ``std (D,)``."""
        self.standardize.set_statistics(mean, std)

    # -- the forward process ------------------------------------------------------------------------
    def forward_diffuse(
        self, x0: torch.Tensor, timestep: int | torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw standardised ``x_i ~ q(x_i | x_0)``, ``x0 (N, D)`` in data units, ``timestep`` int or (N,)."""
        z0, _ = self.standardize(x0)
        if isinstance(timestep, int):
            timestep = torch.full((x0.shape[0],), timestep, dtype=torch.long, device=x0.device)
        return self.schedule.q_sample(z0, timestep, generator=generator)

    # -- the reverse process ------------------------------------------------------------------------
    def _network(
        self, xi: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None, **given: torch.Tensor
    ) -> torch.Tensor:
        """The network's output at ``xi (N, D)``; ``label (N,)`` in 0..K reaches a conditional one
        (None: the null token, the unconditional prediction)."""
        if self.n_labels:
            return self.network(xi, timestep, label, **given)
        return self.network(xi, timestep, **given)

    def posterior_mean_prediction(
        self, xi: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """μ_θ(x_i, i[, y]) for standardised ``xi (N, D)``, ``timestep (N,)`` in 1..L, ``label (N,)``."""
        return self._mean_from_output(xi, self._network(xi, timestep, label), timestep)

    def _eps_prediction(self, xi: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None = None):
        """ε_θ(x_i, i[, y]), shaped as :meth:`posterior_mean_prediction`."""
        return self._eps_from_output(xi, self._network(xi, timestep, label), timestep)

    # μ_θ and ε_θ from the network's output ``out (N, D)``, with one ``timestep (N,)`` per point.
    def _mean_from_output(self, xi: torch.Tensor, out: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.schedule.mean_from_eps(xi, out, timestep) if self.parameterisation == "eps" else out

    def _eps_from_output(self, xi: torch.Tensor, out: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return out if self.parameterisation == "eps" else self.schedule.eps_from_mean(xi, out, timestep)

    def mean_weight(self, timestep: torch.Tensor) -> torch.Tensor:
        """Weight ``w_i (N,)`` of ``|μ̃_i - μ_θ|²`` in the training loss (see the module docstring)."""
        s = self.schedule
        if self.weighting == "bound":
            return 1.0 / (2.0 * self.reverse_variance[timestep])
        return (s.alpha[timestep] * s.sigma_bar[timestep] / s.beta2[timestep]) ** 2

    def _check_points(self, x0: torch.Tensor) -> None:
        check_points(x0, self.dim, self.standardize.mean.dtype, "x0")

    def loss(self, x0: torch.Tensor, label: object = None, rows: slice | None = None) -> torch.Tensor:
        """Weighted MSE between μ_θ and μ̃ at i ~ U{1..L}, averaged over points and dimensions: a scalar.

        ``x0 (N, D)`` in data units; one timestep is drawn per run of ``points_per_timestep`` (or the gcd
        with N) consecutive points, each still uniform. ``rows``: the loss of ``x0[rows]`` alone, with the
        timesteps and noise drawn for all N points (one slice of a batch per process). A conditional
        model's ``label (N,)`` (None: all null) is dropped to the null token with probability ``p_uncond``.
        """
        self._check_points(x0)
        z0, _ = self.standardize(x0)
        n = z0.shape[0]
        if n == 0:
            raise ValueError("the loss needs at least one point, got an empty batch")
        if self.training:
            self.x0_max_abs.copy_(torch.maximum(self.x0_max_abs, z0.detach().abs().amax(0)))
        share = math.gcd(n, self.points_per_timestep)
        shared = torch.randint(1, self.diffusion_steps + 1, (n // share,), device=z0.device)
        timestep = shared.repeat_interleave(share) if share > 1 else shared
        noise = torch.randn_like(z0)
        label = check_labels(label, n, self.n_labels, z0.device)
        if self.n_labels:
            null = torch.full((n,), self.n_labels, dtype=torch.long, device=z0.device)
            dropped = torch.rand(n, device=z0.device) < self.p_uncond
            label = null if label is None else torch.where(dropped, null, label)
        if rows is not None:
            start, stop, _ = rows.indices(n)
            aligned = start % share == 0 and stop % share == 0  # whole runs: one timestep per run
            shared = shared[start // share : stop // share] if aligned else timestep[rows]
            z0, timestep, noise = z0[rows], timestep[rows], noise[rows]
            label = None if label is None else label[rows]
        xi = self.schedule.q_sample(z0, timestep, noise)
        out = self._network(xi, shared, label)
        if self.parameterisation == "eps" and self.weighting == "simple":
            # Identical to the weighted mean error, computed without the large weights' rounding.
            return (out - noise).pow(2).mean()
        target = self.schedule.posterior_mean(z0, xi, timestep)
        error = (self._mean_from_output(xi, out, timestep) - target).pow(2).mean(-1)
        return (self.mean_weight(timestep) * error).mean()

    # -- likelihood bound ---------------------------------------------------------------------------
    def _bound_terms(
        self,
        z0: torch.Tensor,
        timestep: torch.Tensor,
        generator: torch.Generator | None = None,
        label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-point bound term at ``timestep (N,)``: KL L_{i-1} for i >= 2, -log p(x_0 | x_1) for i = 1."""
        xi = self.schedule.q_sample(z0, timestep, generator=generator)
        mean = self.posterior_mean_prediction(xi, timestep, label)
        var = self.reverse_variance[timestep]
        sq = (mean - self.schedule.posterior_mean(z0, xi, timestep)).pow(2).sum(-1)
        # KL(N(μ̃, σ̃²I) || N(μ_θ, σ²I)); the variance part vanishes when σ² = σ̃².
        ratio = self.schedule.posterior_variance[timestep].clamp_min(1e-30) / var
        kl = sq / (2 * var) + 0.5 * self.dim * (ratio - 1 - torch.log(ratio))
        decoder = 0.5 * ((z0 - mean).pow(2).sum(-1) / var + self.dim * torch.log(2 * math.pi * var))
        return torch.where(timestep == 1, decoder, kl)

    def _prior_term(self, z0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_L | x_0) || N(0, I)) per point, in nats."""
        ab = self.schedule.alpha_bar[-1]
        var = 1 - ab**2
        return 0.5 * (ab**2 * z0.pow(2) + var - 1 - torch.log(var)).sum(-1)

    @torch.no_grad()
    def nll_bound(
        self, x0: torch.Tensor, *, label: object = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Variational upper bound on ``-log p(x0)`` (Ho et al. 2020, eq. 5), all L steps summed; given
        labels, on ``-log p(x0 | label)`` (without, a conditional model's unconditional prediction).

        ``x0 (N, D)`` in data units -> ``(N,)`` nats in data units. The decoder p(x_0 | x_1) is
        N(μ_θ(x_1, 1), β²_1 I); each term uses one draw x_i ~ q(x_i | x_0) from ``generator``.
        """
        self._check_points(x0)
        z0, log_det = self.standardize(x0)
        label = check_labels(label, x0.shape[0], self.n_labels, z0.device)
        total = self._prior_term(z0)
        for i in range(1, self.diffusion_steps + 1):
            timestep = torch.full((1,), i, dtype=torch.long, device=z0.device)  # broadcast over points
            total = total + self._bound_terms(z0, timestep, generator, label)
        return total - log_det

    @torch.no_grad()
    def held_out_metrics(self, x: torch.Tensor, label: object = None) -> dict[str, float]:
        """``{"test_nll_bound": mean of the bound's stratified estimate, "test_nll_bound_se": its standard
        error}`` in nats per point, ``x (N, D)`` (given ``label``); the same draws at every call, so that
        successive calls differ by what the model learned, not by the draws."""
        generator = torch.Generator(device=x.device).manual_seed(0)
        estimate = self.nll_bound_estimate(x, label=label, generator=generator).double()
        se = float(estimate.std() / len(estimate) ** 0.5) if len(estimate) > 1 else float("nan")
        return {"test_nll_bound": float(estimate.mean()), "test_nll_bound_se": se}

    @torch.no_grad()
    def nll_bound_estimate(
        self,
        x0: torch.Tensor,
        *,
        label: object = None,
        strata: int = 32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Unbiased estimate of :meth:`nll_bound`, ``(N,)`` nats: prior and decoder terms exact, the KL
        terms stratified (one random i in each of ``strata`` ranges of 2..L, weighted by its length)."""
        self._check_points(x0)
        if x0.shape[0] == 0:
            return x0.new_zeros(0)
        z0, log_det = self.standardize(x0)
        n, device = z0.shape[0], z0.device
        label = check_labels(label, n, self.n_labels, device)
        ones = torch.ones(n, dtype=torch.long, device=device)
        total = self._prior_term(z0) + self._bound_terms(z0, ones, generator, label)
        edges = torch.linspace(2, self.diffusion_steps + 1, min(strata, self.diffusion_steps - 1) + 1).long()
        for low, high in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            if high > low:
                timestep = torch.randint(low, high, (n,), generator=generator, device=device)
                total = total + (high - low) * self._bound_terms(z0, timestep, generator, label)
        return total - log_det

    # -- sampling -----------------------------------------------------------------------------------
    def guided_output(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        label: torch.Tensor | None,
        guidance_scale: float,
        network: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    ) -> torch.Tensor:
        """The network's output with classifier-free guidance (Ho & Salimans 2022): out_∅ + w (out_y -
        out_∅) for ``x (N, D)``, ``label (N,)`` and w = ``guidance_scale``; ``network(x, label)`` evaluates
        the network at ``timestep`` (``label`` None: the null token). ε and μ_θ are affine in each
        other at fixed x_i and i, so guiding the output guides ε̂ for both parameterisations. w = 1
        (or no label) is one plain pass, w = 0 one unconditional pass, any other w one pass on
        ``[x, x]`` with ``[y, ∅]``."""
        if label is None or guidance_scale == 1:
            return network(x, label)
        if guidance_scale == 0:
            return network(x, None)
        null = torch.full_like(label, self.n_labels)
        conditional, unconditional = network(torch.cat([x, x]), torch.cat([label, null])).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def sample_x0_bound(self) -> torch.Tensor | None:
        """The bound ``(D,)`` on |x̂₀| (standardised) the samplers clip to: :data:`X0_BOUND_MARGIN` times
        :attr:`x0_max_abs`; None with ``clip_x0`` off or before the model has seen training data."""
        if not self.clip_x0 or not bool((self.x0_max_abs > 0).all()):
            return None
        return X0_BOUND_MARGIN * self.x0_max_abs

    def _network_steps(
        self, timesteps: list[int], label: torch.Tensor | None = None, guidance_scale: float = 1.0
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """``(x_i, k) -> ε̂`` at the k-th of ``timesteps`` (hooks first; conditioning computed once),
        guided towards ``label`` at ``guidance_scale`` (:meth:`guided_output`)."""
        net, device = self.network, self.schedule.beta2.device
        t_all = torch.tensor(timesteps, device=device)
        cond = net.conditioning(net.time_table[t_all]) if isinstance(net, DenoisingNetwork) else None

        def eps(x: torch.Tensor, k: int) -> torch.Tensor:
            timestep = t_all[k : k + 1]  # one timestep shared by all points, (1,)
            for hook in self._reverse_step_hooks.values():
                hook(x, timestep)
            given = {} if cond is None else {"conditioning": cond[k : k + 1]}
            out = self.guided_output(x, timestep, label, guidance_scale,
                                     lambda x, y: self._network(x, timestep, y, **given))  # fmt: skip
            return self._eps_from_output(x, out, timestep)

        return eps

    def _check_sampler_options(
        self, steps: object, eta: object, order: object, guidance_scale: object
    ) -> tuple[int | None, float, float]:
        """:meth:`sample`'s ``steps``, ``eta`` and ``guidance_scale`` as numbers (ValueError if invalid)."""
        whole, eta_value = as_number(steps), as_number(eta, whole=False)
        scale = as_number(guidance_scale, whole=False)
        if scale is None or not 0 <= scale < math.inf:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if steps is not None and (whole is None or not 1 <= whole <= self.diffusion_steps):
            raise ValueError(f"steps must be a whole number in 1..{self.diffusion_steps}, got {steps!r}")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        if eta_value is None or not 0.0 <= eta_value <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        return whole, eta_value, scale

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        label: object = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        eta: float = 1.0,
        spacing: str = "quadratic",
        order: int = 2,
        return_trajectory: bool = False,
    ) -> torch.Tensor:
        """Draw ``n`` samples ``(n, D)`` in data units (``return_trajectory``: ``(S + 1, n, D)``, x_L first).

        ``steps`` None or L: :func:`ancestral_step` through all L steps; ``steps < L``: :func:`ddim_step`
        (Song et al. 2021) with noise scale ``eta`` on :func:`ddim_timesteps` with ``spacing``, and with
        ``order`` 2 DPM-Solver++(2M)'s second-order multistep x̂₀ (``ddim_step``'s ``last``). A
        conditional model draws from p(x | ``label``) (an int or ``(n,)``) with classifier-free guidance
        of scale ``guidance_scale`` (:meth:`guided_output`); without a label, from p(x).
        """
        n = check_sample_count(n, self.dim, getattr(getattr(self.network, "input", None), "out_features", 0))
        label = check_labels(label, n, self.n_labels, self.schedule.beta2.device)
        whole, eta_value, scale = self._check_sampler_options(steps, eta, order, guidance_scale)
        full = steps is None or whole == self.diffusion_steps
        if full and (eta_value != 1.0 or spacing != "quadratic"):
            warnings.warn(
                f"eta={eta_value:g}, spacing={spacing!r}: these set the strided DDIM sampler, but all "
                f"{self.diffusion_steps} steps run the ancestral sampler, which they do not change; pass "
                f"steps below {self.diffusion_steps} to use it",
                stacklevel=2,
            )
        timesteps = ddim_timesteps(self.diffusion_steps, self.diffusion_steps if full else whole, spacing)
        device, dtype, bound = self.schedule.beta2.device, self.standardize.mean.dtype, self.sample_x0_bound()
        x = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        trajectory, eps, last = [x], self._network_steps(timesteps, label, scale), None
        for k, (i, prev) in enumerate(zip(timesteps, [*timesteps[1:], 0], strict=True)):
            noisy = prev > 0 and (full or eta_value > 0)
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype) if noisy else None
            if full:
                x = ancestral_step(
                    self.schedule, x, eps(x, k), i, noise, variance=self.reverse_variance[i], x0_bound=bound
                )
            else:
                x, x0 = ddim_step(
                    self.schedule, x, eps(x, k), i, prev, eta_value, noise, x0_bound=bound, last=last
                )
                last = (x0, i) if order == 2 else None
            if return_trajectory:
                trajectory.append(x)
        if return_trajectory:
            return torch.stack([self.standardize.inverse(t)[0] for t in trajectory])
        return self.standardize.inverse(x)[0]


def _default_x0_max_abs(state: dict, prefix: str, *args: object) -> None:
    """Load a checkpoint written before ``x0_max_abs`` existed with zeros: its samplers clip nothing."""
    key = prefix + "x0_max_abs"
    if key not in state and prefix + "standardize.mean" in state:
        state[key] = torch.zeros_like(state[prefix + "standardize.mean"])


def _parameter_count(config: DDPMModelConfig, dim: int) -> int:
    """Weights of the denoising network ``config`` builds for ``dim``-dimensional data."""
    h = config.hidden_units

    def linear(a: int, b: int) -> int:
        return a * b + b

    time = linear(config.time_embed_dim, h) + linear(h, h)
    blocks = config.n_blocks * (3 * linear(h, h) + 2 * h)  # two layers, the conditioning, the LayerNorm
    labels = (config.n_labels + 1) * h if config.n_labels else 0
    return time + linear(dim + config.input_embed_dim, h) + blocks + 2 * h + linear(h, dim) + labels


def _bound_nll(model: DDPM, x: torch.Tensor, generator: torch.Generator | None, label: object = None):
    """:meth:`DDPM.nll_bound` ``(N,)`` nats, in the registry's likelihood signature."""
    return model.nll_bound(x, label=label, generator=generator)


def _ode_nll(
    model: DDPM, x: torch.Tensor, generator: torch.Generator | None, label: object = None
) -> torch.Tensor:
    """The probability-flow ODE's ``-log p(x)`` ``(N,)`` in nats; given labels, ``-log p(x | y)`` with the
    network held at each label in turn (a forward pre-hook adds it to the network's calls)."""
    from genmodels.models.flow_ode import probability_flow_nll

    label = check_labels(label, x.shape[0], model.n_labels, x.device)
    if label is None:
        return probability_flow_nll(model, x)
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for y in label.unique().tolist():

        def with_label(module: nn.Module, args: tuple, y: int = y) -> tuple | None:
            if len(args) <= 2:  # a call without a label: add label y for every point
                return (*args, torch.full_like(args[1][:1], y).expand(args[0].shape[0]))

        handle = model.network.register_forward_pre_hook(with_label)
        try:
            out[label == y] = probability_flow_nll(model, x[label == y]).to(out.dtype)
        finally:
            handle.remove()
    return out


SPEC = register(
    ModelSpec(
        name="ddpm",
        title="DDPM",
        model_class=DDPM,
        config_class=DDPMModelConfig,
        training_defaults={
            "epochs": 1000,
            "batch_size": 4096,
            "seed": 689,
            "eval_every": 50,
            "checkpoint_every": 100,
        },
        parameter_count=_parameter_count,
        size_keys=("n_blocks", "hidden_units"),
        likelihoods={
            "bound": _bound_nll,
            "ode": _ode_nll,
        },
        loss_label="training loss (weighted MSE)",
        recommended_steps=3000,
        sample_options={
            "steps": "sampling_steps",
            "eta": "eta",
            "spacing": "ddim_spacing",
            "order": "ddim_order",
            "guidance_scale": "guidance_scale",
        },
        figures=("reverse_process", "vector_fields", "forward_process"),
        loss_figure={
            "series": "weighted_mse",
            "ylabel": "weighted MSE",
            "title": "DDPM: training loss per epoch (weighted MSE of the posterior mean)",
        },
    )
)
