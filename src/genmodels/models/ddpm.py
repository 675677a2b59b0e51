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

import math
import numbers
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
    check_config_type,
    check_labels,
    check_points,
    check_sample_count,
    register,
    settings,
    whole_number,
)
from genmodels.models.layers import ResidualBlock, sinusoidal_embedding
from genmodels.models.schedule import NoiseSchedule, schedule_problem, schedule_warning

__all__ = ["DenoisingNetwork", "DDPM", "FrozenDenoiser", "ddim_timesteps"]


@settings
class DDPMModelConfig:
    """DDPM (Ho et al. 2020) in the specification's β² notation.

    Attributes:
        diffusion_steps: L, the number of forward noising steps.
        beta2_start: β²_1, the first step's noise variance.
        beta2_end: β²_L, the last step's noise variance (linear in between).
        time_embed_dim: width of the sinusoidal timestep embedding.
        hidden_units: width of the denoising network.
        n_blocks: residual MLP blocks in the denoising network.
        input_embed_dim: width of a random Fourier embedding of the noisy input (0 = the raw input).
            Measured on toy densities, it makes the probability-flow likelihood far worse (its gap to
            the entropy grows by 1-1.7 nats), so the default leaves it off.
        parameterisation: ``"eps"`` predicts the noise and derives the posterior mean from it;
            ``"mean"`` outputs the posterior mean μ_θ directly.
        weighting: ``"simple"`` (Ho et al. 2020, sec. 3.4: equal weight on the noise error at every
            timestep) or ``"bound"`` (the variational bound's 1/(2σ²_i) on the mean error).
        reverse_variance: σ²_i of the reverse steps: ``"posterior"`` (σ̃²_i) or ``"beta"`` (β²_i).
        points_per_timestep: training points that share one timestep draw, so the network embeds and
            projects a batch's timesteps this many times fewer; 1 draws one per point. A batch whose
            size it does not divide shares in runs of their gcd. Training only: a resumed run may
            change it.
        n_labels: categories of the label the model is conditioned on (0: unconditional); a run sets
            it from ``data.condition``.
        p_uncond: share of training points whose label is replaced by the null token (training only).
    """

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
    """The input layer's features of ``x (N, D)``: x, then its Fourier features with the frequencies
    ``fourier (D, F)`` if any, ``(N, D + 2F)``."""
    if fourier is None:
        return x
    proj = 2 * math.pi * x @ fourier
    return torch.cat([x, torch.sin(proj), torch.cos(proj)], dim=-1)


class DenoisingNetwork(nn.Module):
    """Residual MLP ``(x_i, i) -> (D,)`` output (ε_θ or μ_θ), conditioned on a sinusoidal timestep
    embedding of width ``time_embed_dim`` (precomputed for i = 0..L and stored as a buffer).

    Args:
        dim: data dimension D.
        steps: L, the number of timesteps.
        hidden_units: width of the residual stream.
        n_blocks: residual blocks.
        time_embed_dim: width of the timestep embedding.
        input_embed_dim: width of a random Fourier embedding of ``x_i`` appended to it (0: none).
        n_labels: K, labels the network is conditioned on (0: none); its embedding table has K + 1
            rows, the last the null token that ``label=None`` stands for.

    Shapes: ``x (N, D)``, ``timestep (G,)`` int -> ``(N, D)``, where G divides N: row g's timestep is
    that of the g-th run of N / G consecutive points (G = N: one each; G = 1: one for all). The
    timestep's embedding and projections are computed per row of ``timestep``, so sharing timesteps
    saves their cost. ``label (N,)`` in 0..K (K: null) where ``n_labels`` > 0. By linearity each block's
    projection of the label embedding is a (K + 1)-row table gathered per point, so a label costs one
    addition per block instead of a projection per point.
    """

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
        in_features = dim + (2 * (input_embed_dim // 2) if input_embed_dim else 0)
        self.input = nn.Linear(in_features, hidden_units)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_units, hidden_units) for _ in range(n_blocks))
        self.out_norm = nn.LayerNorm(hidden_units)
        self.output = nn.Linear(hidden_units, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        if n_labels:
            self.label_embedding = nn.Embedding(n_labels + 1, hidden_units)

    def label_table(self) -> torch.Tensor | None:
        """Every block's projection of every label's embedding, ``(K + 1, n_blocks, hidden_units)``;
        None for a network without labels."""
        if not self.n_labels:
            return None
        return torch.stack([self.label_embedding.weight @ block.cond.weight.T for block in self.blocks], 1)

    def forward(
        self, x: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.input(_input_features(x, self.fourier))
        cond = self.time_mlp(self.time_table[timestep])
        table = self.label_table()
        if table is not None and label is None:  # unconditional: the null token for every point
            label = torch.full((x.shape[0],), self.n_labels, dtype=torch.long, device=x.device)
        extra = None if table is None else nn.functional.embedding(label, table.flatten(1)).to(h.dtype)
        for j, block in enumerate(self.blocks):
            h = block(h, cond, None if extra is None else extra[:, j * h.shape[1] : (j + 1) * h.shape[1]])
        # x's dtype out, also under bfloat16 autocast: the diffusion arithmetic keeps its precision.
        return self.output(torch.nn.functional.silu(self.out_norm(h))).to(x.dtype)

    @torch.no_grad()
    def frozen(self, timesteps: torch.Tensor) -> FrozenDenoiser:
        """This network, for inference only, at the ``timesteps (S,)`` a sampler visits in turn: see
        :class:`FrozenDenoiser`. Built from the current weights, which it copies."""
        return FrozenDenoiser(self, timesteps)


class FrozenDenoiser:
    """A :class:`DenoisingNetwork` evaluated for inference, where all points of a call share one of the
    ``timesteps (S,)`` given up front: ``denoiser(x, k)`` equals ``network(x, timesteps[k : k + 1])``
    to float rounding, for ``x (N, D)``, returning ``(N, D)``.

    The time embedding, the time MLP and every block's conditioning projection are computed once for
    all S timesteps and folded into the bias of each block's first layer, so a call costs only the
    ``N``-row work: per block a LayerNorm, two SiLUs computed in place and two matrix products, the
    second accumulated into the residual stream (``addmm_``) instead of being added to it. On a
    2-core CPU that is 1.2-1.4x faster than the module's forward (4,096 points, 64 units), whose
    separate element-wise passes cost about as much as its products. The weights are copied when it
    is built, so later training does not change it; no gradients flow through it. It computes in the
    weights' dtype and ignores autocast: for bfloat16, call the network itself.
    """

    def __init__(self, network: DenoisingNetwork, timesteps: torch.Tensor) -> None:
        def norm(layer: nn.LayerNorm) -> tuple:
            return layer.normalized_shape, layer.weight.clone(), layer.bias.clone(), layer.eps

        with torch.no_grad():
            cond = network.time_mlp(network.time_table[timesteps])  # (S, H)
            # (S, blocks, H): linear1's bias plus the block's projection of the timestep's embedding.
            self.first_bias = torch.stack(
                [block.linear1.bias + block.cond(cond) for block in network.blocks], dim=1
            )
            self.blocks = [
                (
                    norm(block.norm),
                    block.linear1.weight.t().contiguous(),
                    block.linear2.weight.t().contiguous(),
                    block.linear2.bias.clone(),
                )
                for block in network.blocks
            ]
            self.fourier = None if network.fourier is None else network.fourier.clone()
            self.label_table = network.label_table()
            self.input = network.input.bias.clone(), network.input.weight.t().contiguous()
            self.out_norm = norm(network.out_norm)
            self.output = network.output.bias.clone(), network.output.weight.t().contiguous()

    def __call__(self, x: torch.Tensor, k: int, label: torch.Tensor | None = None) -> torch.Tensor:
        layer_norm, silu = torch.nn.functional.layer_norm, torch.nn.functional.silu
        with torch.no_grad():
            h = torch.addmm(self.input[0], _input_features(x, self.fourier), self.input[1])
            first_bias = self.first_bias[k]
            if self.label_table is not None and label is None:  # the null token for all points
                first_bias = first_bias + self.label_table[-1]
            elif self.label_table is not None:  # (blocks, N, H): one bias per point
                first_bias = first_bias.unsqueeze(1) + self.label_table[label].transpose(0, 1)
            for j, (norm, weight1, weight2, bias2) in enumerate(self.blocks):
                u = silu(layer_norm(h, *norm), inplace=True)
                u = silu(torch.addmm(first_bias[j], u, weight1), inplace=True)
                h.addmm_(u, weight2).add_(bias2)
            u = silu(layer_norm(h, *self.out_norm), inplace=True)
            return torch.addmm(self.output[0], u, self.output[1])


def ddim_timesteps(diffusion_steps: int, steps: int, spacing: str = "quadratic") -> list[int]:
    """The decreasing timesteps L = i_0 > ... > i_{S-1} = 1 of a strided sampler with ``steps`` = S.

    ``"linear"`` spaces them evenly; ``"quadratic"`` as 1 + (L - 1)(1 - u)² for u evenly spaced in
    [0, 1], so they are dense near the data, where the samples' fine detail is formed. The last ones
    are at least S - 1, ..., 2, 1, so S <= L gives S distinct timesteps; duplicates are kept once.

    Raises:
        ValueError: ``steps < 1`` or an unknown ``spacing``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if spacing not in ("quadratic", "linear"):
        raise ValueError(f"spacing must be 'quadratic' or 'linear', got {spacing!r}")
    u = torch.linspace(0, 1, steps, dtype=torch.float64)
    shape = (1 - u) ** 2 if spacing == "quadratic" else 1 - u
    grid = (1 + (diffusion_steps - 1) * shape).round().long()
    # Where the grid is denser than whole timesteps (its end), keep the last ones at S-1, ..., 2, 1.
    grid = torch.maximum(grid, torch.arange(steps, 0, -1).clamp_max(diffusion_steps))
    return grid.unique_consecutive().tolist()


class DDPM(nn.Module):
    """Denoising diffusion model on ``D``-dimensional data.

    Args:
        dim: data dimension D >= 1.
        steps: L, the number of diffusion steps.
        beta2_start, beta2_end: the linear β² schedule's ends.
        network: the denoising network ``(x_i, i) -> (N, D)``.
        parameterisation: ``"eps"`` or ``"mean"`` (what the network outputs).
        weighting: ``"simple"`` or ``"bound"`` (see the module docstring).
        points_per_timestep: training points that share one timestep draw (see :meth:`loss`). Above 1,
            ``network`` gets one timestep per run of points, ``(G,)`` for ``(N, D)`` inputs, as
            :class:`DenoisingNetwork` accepts; 1 (the default here; :meth:`from_config` uses the
            config's 8) gives any network one timestep per point.
        n_labels: K > 0 for a model conditioned on K labels: ``network`` then takes ``label (N,)`` in
            0..K (K: the null token) as a third argument.
        p_uncond: share of training points whose label :meth:`loss` replaces by the null token.

    Raises:
        ValueError: an unknown option, or ``points_per_timestep`` not an integer >= 1.
    """

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
        n_labels: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        super().__init__()
        if (
            isinstance(points_per_timestep, bool)
            or not isinstance(points_per_timestep, int)
            or points_per_timestep < 1
        ):
            raise ValueError(f"points_per_timestep must be an integer >= 1, got {points_per_timestep!r}")
        if reverse_variance not in ("posterior", "beta"):
            raise ValueError(f"reverse_variance must be 'posterior' or 'beta', got {reverse_variance!r}")
        if parameterisation not in ("eps", "mean"):
            raise ValueError(f"parameterisation must be 'eps' or 'mean', got {parameterisation!r}")
        if weighting not in ("simple", "bound"):
            raise ValueError(f"weighting must be 'simple' or 'bound', got {weighting!r}")
        self.dim, self.n_labels, self.p_uncond = dim, n_labels, p_uncond
        if n_labels:
            self.register_buffer("label_proportions", torch.full((n_labels,), 1.0 / n_labels))
        self.diffusion_steps = steps
        self.parameterisation = parameterisation
        self.weighting = weighting
        self.points_per_timestep = points_per_timestep
        self.standardize = Standardize(dim)
        self.schedule = NoiseSchedule(steps, beta2_start, beta2_end)
        self.network = network
        # Reverse-process variances σ²_i (Ho et al. 2020, sec. 3.2): the posterior's σ̃²_i, or β²_i. The
        # decoder p(x_0 | x_1) of the likelihood bound has σ²_1 = β²_1 either way; sampling adds no
        # noise at i = 1.
        self.reverse_variance_kind = reverse_variance
        if reverse_variance == "posterior":
            variance = self.schedule.posterior_variance.clone()
        else:
            variance = self.schedule.beta2.clone()
        variance[1] = self.schedule.beta2[1]
        self.register_buffer("reverse_variance", variance)
        # An OrderedDict, as torch keeps its module hooks: RemovableHandle holds a weak reference to it.
        self._reverse_step_hooks: OrderedDict[int, Callable[[torch.Tensor, torch.Tensor], None]] = (
            OrderedDict()
        )

    def register_reverse_step_hook(
        self, hook: Callable[[torch.Tensor, torch.Tensor], None]
    ) -> RemovableHandle:
        """Call ``hook(x_i, timestep)`` at every reverse step of :meth:`sample` (ancestral or strided),
        before the network sees x_i: ``x_i (n, D)`` standardised, ``timestep (1,)`` long, the step i
        shared by all n points. Returns a handle whose ``remove()`` unregisters it.

        Raises:
            TypeError: ``hook`` is not callable."""
        if not callable(hook):
            raise TypeError(f"hook must be callable as hook(x_i, timestep), got {type(hook).__name__}")
        handle = RemovableHandle(self._reverse_step_hooks)
        self._reverse_step_hooks[handle.id] = hook
        return handle

    @classmethod
    def from_config(cls, config, dim: int) -> DDPM:  # noqa: ANN001 - DDPMModelConfig
        """Build from a :class:`genmodels.config.DDPMModelConfig`.

        Raises:
            TypeError: ``config`` is not a DDPMModelConfig (a dict: ``DDPMModelConfig(**values)``).
            ValueError: ``dim`` is not a whole number >= 1 (the config checked itself when built).
        """
        check_config_type(config, DDPMModelConfig)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(f"dim (the data dimension) must be a whole number >= 1, got {dim!r}")
        network = DenoisingNetwork(
            dim,
            config.diffusion_steps,
            hidden_units=config.hidden_units,
            n_blocks=config.n_blocks,
            time_embed_dim=config.time_embed_dim,
            input_embed_dim=config.input_embed_dim,
            n_labels=config.n_labels,
        )
        return cls(
            dim,
            steps=config.diffusion_steps,
            beta2_start=config.beta2_start,
            beta2_end=config.beta2_end,
            network=network,
            parameterisation=config.parameterisation,
            weighting=config.weighting,
            reverse_variance=config.reverse_variance,
            points_per_timestep=config.points_per_timestep,
            n_labels=config.n_labels,
            p_uncond=config.p_uncond,
        )

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Diffuse ``(x - mean) / std`` with the training data's ``mean (D,)`` and ``std (D,)``."""
        self.standardize.set_statistics(mean, std)

    # -- the forward process ------------------------------------------------------------------------
    def forward_diffuse(
        self, x0: torch.Tensor, timestep: int | torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``x_i ~ q(x_i | x_0)`` for data ``x0 (N, D)`` in data units; returns standardised ``x_i``.

        ``timestep`` is one int or ``(N,)`` ints in 0..L; i = L gives (almost) N(0, I).
        """
        z0, _ = self.standardize(x0)
        if isinstance(timestep, int):
            timestep = torch.full((x0.shape[0],), timestep, dtype=torch.long, device=x0.device)
        return self.schedule.q_sample(z0, timestep, generator=generator)

    # -- the reverse process ------------------------------------------------------------------------
    def _network(self, xi: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """The network's output at ``xi (N, D)``; ``label (N,)`` in 0..K reaches a conditional one
        (None: the null token, the unconditional prediction)."""
        return self.network(xi, timestep, label) if self.n_labels else self.network(xi, timestep)

    def posterior_mean_prediction(
        self, xi: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """μ_θ(x_i, i[, y]) for standardised ``xi (N, D)``, ``timestep (N,)`` in 1..L, ``label (N,)``."""
        return self._mean_from_output(xi, self._network(xi, timestep, label), timestep)

    def _mean_from_output(self, xi: torch.Tensor, out: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """μ_θ from the network's output ``out (N, D)``, with one ``timestep (N,)`` per point."""
        if self.parameterisation == "eps":
            return self.schedule.mean_from_eps(xi, out, timestep)
        return out

    def _eps_prediction(
        self, xi: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._eps_from_output(xi, self._network(xi, timestep, label), timestep)

    def _eps_from_output(self, xi: torch.Tensor, out: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """ε_θ from the network's output ``out (N, D)``, with one ``timestep (N,)`` per point."""
        if self.parameterisation == "eps":
            return out
        return self.schedule.eps_from_mean(xi, out, timestep)

    def mean_weight(self, timestep: torch.Tensor) -> torch.Tensor:
        """Weight ``w_i (N,)`` of ``|μ̃_i - μ_θ|²`` in the training loss (see the module docstring)."""
        s = self.schedule
        if self.weighting == "bound":
            return 1.0 / (2.0 * self.reverse_variance[timestep])
        return (s.alpha[timestep] * s.sigma_bar[timestep] / s.beta2[timestep]) ** 2

    def _check_points(self, x0: torch.Tensor) -> None:
        check_points(x0, self.dim, self.standardize.mean.dtype, "x0")

    def loss(self, x0: torch.Tensor, label: object = None) -> torch.Tensor:
        """Weighted MSE between μ_θ and μ̃ at i ~ U{1..L}, averaged over points and dimensions.

        A conditional model's ``label (N,)`` is replaced by the null token with probability
        ``p_uncond`` (for every point without a label).

        ``x0 (N, D)`` in data units; returns a scalar. Each timestep is drawn for a run of
        ``points_per_timestep`` consecutive points (gcd(N, points_per_timestep) when that does not
        divide N), so the network embeds and projects N / points_per_timestep timesteps instead of N.
        Every point's timestep is still uniform, so the loss's expectation is unchanged; callers should
        shuffle the data so that a run is a random set of points.

        Raises:
            ValueError: an empty batch, or ``x0`` not ``(N, D)`` of the model's dtype.
        """
        self._check_points(x0)
        z0, _ = self.standardize(x0)
        n = z0.shape[0]
        if n == 0:
            raise ValueError("the loss needs at least one point, got an empty batch")
        share = math.gcd(n, self.points_per_timestep)
        shared = torch.randint(1, self.diffusion_steps + 1, (n // share,), device=z0.device)
        timestep = shared.repeat_interleave(share) if share > 1 else shared
        noise = torch.randn_like(z0)
        xi = self.schedule.q_sample(z0, timestep, noise)
        label = check_labels(label, n, self.n_labels, z0.device)
        if self.n_labels:
            null = torch.full((n,), self.n_labels, dtype=torch.long, device=z0.device)
            dropped = torch.rand(n, device=z0.device) < self.p_uncond
            label = null if label is None else torch.where(dropped, null, label)
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
        """Per-point bound term at ``timestep (N,)``: the KL L_{i-1} for i >= 2, -log p(x_0 | x_1) for i = 1."""
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
        """Variational upper bound on ``-log p(x0)`` (Ho et al. 2020, eq. 5), every step summed; on
        ``-log p(x0 | label)`` given labels (without, a conditional model's unconditional prediction).

        ``x0 (N, D)`` in data units; returns ``(N,)`` nats per sample in the data's units (the
        standardisation's log-Jacobian included). The decoder p(x_0 | x_1) is the Gaussian
        N(μ_θ(x_1, 1), β²_1 I) (continuous data, no discretisation). Costs L network passes. Each
        step's term is evaluated at one draw of x_i ~ q(x_i | x_0), from ``generator`` (default: torch's
        global generator), so a seeded generator gives the same numbers every time.

        Raises:
            ValueError: ``x0`` is not ``(N, D)`` of the model's dtype.
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
        """``{"test_nll_bound": mean of the bound's stratified estimate}`` in nats per point, ``x (N, D)``
        (given ``label``)."""
        return {"test_nll_bound": float(self.nll_bound_estimate(x, label=label).mean())}

    @torch.no_grad()
    def nll_bound_estimate(
        self,
        x0: torch.Tensor,
        *,
        label: object = None,
        strata: int = 32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Unbiased, cheap estimate of :meth:`nll_bound`: the prior and decoder terms exactly, and the
        L - 1 KL terms by stratified sampling: i in 2..L is cut into ``strata`` equal ranges, one
        random i is drawn in each, and its term is weighted by the range's length.

        ``x0 (N, D)``; returns ``(N,)`` nats. Costs ``strata + 1`` network passes instead of L. The
        timesteps and the x_i are drawn from ``generator`` (default: torch's global generator).

        Raises:
            ValueError: ``x0`` is not ``(N, D)`` of the model's dtype.
        """
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
        return_trajectory: bool = False,
    ) -> torch.Tensor:
        """Draw ``n`` samples ``(n, D)`` in the data's units.

        With ``steps`` None (or L): ancestral sampling through all L steps, x_L ~ N(0, I),
        x_{i-1} = μ_θ(x_i, i) + σ̃_i z, and the mean alone at i = 1. With ``steps < L``: the strided
        DDIM sampler (Song, Meng & Ermon 2021, eq. 12) with noise scale ``eta`` on the ``steps``
        timesteps of :func:`ddim_timesteps` with ``spacing`` ``"quadratic"`` (dense near the data, as
        Song et al. sec. D.2 use) or ``"linear"``.

        A conditional model draws from p(x | ``label``) (an int or ``(n,)`` labels) with classifier-free
        guidance of scale ``guidance_scale`` (:meth:`guided_output`), and without a label from p(x).

        Outside autocast a :class:`DenoisingNetwork` (not a subclass) without forward hooks of its own
        is evaluated in its :meth:`~DenoisingNetwork.frozen` form, the same function computed faster;
        :meth:`register_reverse_step_hook` observes the steps either way.

        Warns (UserWarning) when ``eta`` or ``spacing`` is given for the ancestral sampler, which
        they do not change.

        Raises:
            ValueError: ``n`` not a whole number >= 0, ``steps`` not in 1..L, ``eta`` not in [0, 1], an
                unknown ``spacing``, a label the model cannot take, or a negative ``guidance_scale``.
        """
        width = getattr(getattr(self.network, "input", None), "out_features", 0)  # of the residual stream
        n = check_sample_count(n, self.dim, width)
        label = check_labels(label, n, self.n_labels, self.schedule.beta2.device)
        if not (isinstance(guidance_scale, numbers.Real) and 0 <= guidance_scale < math.inf):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if steps is not None:
            whole = whole_number(steps)
            if whole is None or not 1 <= whole <= self.diffusion_steps:
                raise ValueError(
                    f"steps must be a whole number in 1..{self.diffusion_steps} (the diffusion steps), "
                    f"got {steps!r}"
                )
            steps = whole
        eta_value = None  # a real number, also a NumPy or one-element tensor one
        if isinstance(eta, torch.Tensor) and eta.numel() == 1 and not eta.dtype == torch.bool:
            eta_value = float(eta)
        elif isinstance(eta, numbers.Real) and not isinstance(eta, bool):
            eta_value = float(eta)
        if eta_value is None or not 0.0 <= eta_value <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        eta = eta_value
        if spacing not in ("quadratic", "linear"):
            raise ValueError(f"spacing must be 'quadratic' or 'linear', got {spacing!r}")
        device = self.schedule.beta2.device
        x = torch.randn(n, self.dim, generator=generator, device=device, dtype=self.standardize.mean.dtype)
        s = self.schedule
        full = steps is None or steps >= self.diffusion_steps
        if full and (eta != 1.0 or spacing != "quadratic"):
            warnings.warn(
                f"eta={eta:g}, spacing={spacing!r}: these set the strided DDIM sampler, but all "
                f"{self.diffusion_steps} steps run the ancestral sampler, which they do not change; pass "
                f"steps below {self.diffusion_steps} to use it",
                stacklevel=2,
            )
        if full:
            timesteps = list(range(self.diffusion_steps, 0, -1))
        else:
            timesteps = ddim_timesteps(self.diffusion_steps, steps, spacing)
        trajectory = [x]
        t_all = torch.tensor(timesteps, device=device)
        # One timestep shared by every point: shape (1,), so the time embedding and each block's
        # conditioning are computed once and broadcast over the n points. Outside autocast, a plain
        # DenoisingNetwork (no subclass, no hooks of its own to call) is replaced by its frozen form,
        # which computes them once for all timesteps before the loop.
        net = self.network
        frozen = None
        if (
            type(net) is DenoisingNetwork
            and not (net._forward_pre_hooks or net._forward_hooks)
            and not torch.is_autocast_enabled(device.type)
        ):
            frozen = net.frozen(t_all)
        for k, i in enumerate(timesteps):
            timestep = t_all[k : k + 1]
            for hook in self._reverse_step_hooks.values():
                hook(x, timestep)
            if frozen is None:
                at = lambda x, y, t=timestep: self._network(x, t, y)  # noqa: E731
            else:
                at = lambda x, y, k=k: frozen(x, k, y)  # noqa: E731
            out = self.guided_output(x, timestep, label, guidance_scale, at)
            if full:
                x = self._mean_from_output(x, out, timestep)
                if i > 1:
                    x = x + self.reverse_variance[i].sqrt() * torch.randn(
                        x.shape, generator=generator, device=device
                    )
            else:
                prev = timesteps[k + 1] if k + 1 < len(timesteps) else 0
                eps = self._eps_from_output(x, out, timestep)
                x0 = (x - s.sigma_bar[i] * eps) / s.alpha_bar[i].clamp_min(1e-12)  # ᾱ can underflow
                ab_prev = s.alpha_bar[prev]
                sigma = eta * torch.sqrt(
                    (1 - ab_prev**2) / (1 - s.alpha_bar[i] ** 2) * (1 - s.alpha_bar[i] ** 2 / ab_prev**2)
                )
                x = ab_prev * x0 + torch.sqrt((1 - ab_prev**2 - sigma**2).clamp_min(0)) * eps
                if prev > 0:
                    x = x + sigma * torch.randn(x.shape, generator=generator, device=device)
            if return_trajectory:
                trajectory.append(x)
        if return_trajectory:
            return torch.stack([self.standardize.inverse(t)[0] for t in trajectory])
        return self.standardize.inverse(x)[0]


def _parameter_count(config: DDPMModelConfig, dim: int) -> int:
    """Weights of the denoising network ``config`` builds for ``dim``-dimensional data."""
    h = config.hidden_units

    def linear(a: int, b: int) -> int:
        return a * b + b

    time = linear(config.time_embed_dim, h) + linear(h, h)
    blocks = config.n_blocks * (3 * linear(h, h) + 2 * h)  # two layers, the conditioning, the LayerNorm
    labels = (config.n_labels + 1) * h if config.n_labels else 0
    return time + linear(dim + config.input_embed_dim, h) + blocks + 2 * h + linear(h, dim) + labels


def _ode_nll(
    model: DDPM, x: torch.Tensor, generator: torch.Generator | None, label: object = None
) -> torch.Tensor:
    """The probability-flow ODE's ``-log p(x)`` ``(N,)`` in nats; given labels, ``-log p(x | y)`` with the
    network held at each label in turn (a forward pre-hook adds it to the network's calls)."""
    from genmodels.models.flow_ode import probability_flow_nll

    label = check_labels(label, x.shape[0], model.n_labels, x.device)
    if label is None:
        return probability_flow_nll(model, x)
    out = x.new_empty(x.shape[0])
    for y in label.unique().tolist():

        def with_label(module: nn.Module, args: tuple, y: int = y) -> tuple | None:
            return (
                None if len(args) > 2 else (*args, torch.full_like(args[1][:1], y).expand(args[0].shape[0]))
            )

        handle = model.network.register_forward_pre_hook(with_label)
        try:
            out[label == y] = probability_flow_nll(model, x[label == y])
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
            "bound": lambda model, x, generator, label=None: model.nll_bound(
                x, label=label, generator=generator
            ),
            "ode": _ode_nll,
        },
        loss_label="training loss (weighted MSE)",
        sample_options={
            "steps": "sampling_steps",
            "eta": "eta",
            "spacing": "ddim_spacing",
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
