"""The β² noise schedule of the DDPM forward process and its closed forms, in the specification's notation.

Forward step (Ho et al. 2020, eq. 2, written with the variance β²_i)::

    q(x_i | x_{i-1}) = N(α_i x_{i-1}, β²_i I),        α_i = sqrt(1 - β²_i)

Closed form (Ho et al. 2020, eq. 4; here ᾱ_i is the product of the α_i themselves, not of α_i²)::

    q(x_i | x_0) = N(ᾱ_i x_0, (1 - ᾱ_i²) I),          ᾱ_i = ∏_{k<=i} α_k,  ᾱ_0 = 1

Posterior (Ho et al. 2020, eqs. 6-7)::

    q(x_{i-1} | x_i, x_0) = N(μ̃_i, σ̃²_i I)
    μ̃_i = ᾱ_{i-1} β²_i / (1 - ᾱ_i²) · x_0 + α_i (1 - ᾱ_{i-1}²) / (1 - ᾱ_i²) · x_i
    σ̃²_i = (1 - ᾱ_{i-1}²) / (1 - ᾱ_i²) · β²_i                 (σ̃²_1 = 0 and μ̃_1 = x_0)

β²_i is linear in i from ``beta2_start`` to ``beta2_end`` (L = 1: β²_1 = ``beta2_end``), computed in
float64 and stored as buffers of length L + 1 indexed by the timestep i (entry 0: no noise).

Notation. This project's symbols against the common (Ho et al. 2020 / diffusers) ones, whose ᾱ_t
is the product of the α_t² (so ``alphas_cumprod`` = ᾱ² here):

==========================  ====================  =======================================
here                        Ho et al. 2020        diffusers
==========================  ====================  =======================================
β²_i (``beta2``)            β_t                   ``betas``
α_i = sqrt(1 - β²_i)        sqrt(α_t)             ``alphas ** 0.5``
ᾱ_i = ∏ α_k                 sqrt(ᾱ_t)             ``alphas_cumprod ** 0.5``
ᾱ_i²                        ᾱ_t                   ``alphas_cumprod``
σ̄_i = sqrt(1 - ᾱ_i²)        sqrt(1 - ᾱ_t)         ``sqrt_one_minus_alphas_cumprod``
σ̃²_i                        β̃_t                   ``variance`` (``"fixed_small"``)
x̂₀                          x̂₀ (eq. 15)           ``pred_original_sample``
==========================  ====================  =======================================

The samplers' steps: :func:`ancestral_step` (Ho et al. 2020, Algorithm 2) and :func:`ddim_step` (Song,
Meng & Ermon 2021, eq. 12), both through x̂₀, which they may clip to ``x0_bound`` (docs/ddpm-sampling.md).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "MAX_FINAL_ALPHA_BAR",
    "MIN_ALPHA_BAR",
    "NoiseSchedule",
    "ancestral_step",
    "broadcast_to",
    "ddim_step",
    "final_alpha_bar",
    "schedule_problem",
    "schedule_warning",
]

# The smallest ᾱ_L allowed: sampling multiplies the network's errors by up to 1/ᾱ_L (float32 overflow).
MIN_ALPHA_BAR = 1e-18
# The largest ᾱ_L without a warning: x_L keeps ᾱ_L of the data's scale, sampling starts from N(0, I).
MAX_FINAL_ALPHA_BAR = 0.1


def _linear_beta2(steps: int, beta2_start: float, beta2_end: float) -> torch.Tensor:
    """β²_1..β²_L ``(L,)`` float64, linear from ``beta2_start`` to ``beta2_end`` (one step: the end value)."""
    if steps == 1:
        return torch.tensor([beta2_end], dtype=torch.float64)
    return torch.linspace(beta2_start, beta2_end, steps, dtype=torch.float64)


def final_alpha_bar(steps: int, beta2_start: float, beta2_end: float) -> float:
    """ᾱ_L = prod_i sqrt(1 - β²_i) of the linear β² schedule (computed in float64 logarithms)."""
    return float(torch.exp(0.5 * torch.log1p(-_linear_beta2(steps, beta2_start, beta2_end)).sum()))


def schedule_problem(steps: int, beta2_start: float, beta2_end: float) -> str | None:
    """Why a schedule with these (in-range) values cannot be sampled in float32, or None."""
    alpha_bar = final_alpha_bar(steps, beta2_start, beta2_end)
    if alpha_bar >= MIN_ALPHA_BAR:
        return None
    return (
        f"the β² schedule from {beta2_start:g} to {beta2_end:g} over {steps} steps drives ᾱ_L to "
        f"{alpha_bar:.1e}, below {MIN_ALPHA_BAR:g}: sampling divides by ᾱ and would overflow float32; "
        "lower beta2_end, beta2_start or diffusion_steps (the default schedule ends at ᾱ_L = 3.2e-6)"
    )


def schedule_warning(steps: int, beta2_start: float, beta2_end: float) -> str | None:
    """Why a schedule leaves x_L far from N(0, I) (ᾱ_L above :data:`MAX_FINAL_ALPHA_BAR`), or None."""
    alpha_bar = final_alpha_bar(steps, beta2_start, beta2_end)
    if alpha_bar <= MAX_FINAL_ALPHA_BAR:
        return None
    return (
        f"the β² schedule from {beta2_start:g} to {beta2_end:g} over {steps} steps ends at ᾱ_L = "
        f"{alpha_bar:.3f}: x_L keeps {alpha_bar:.0%} of the data's scale, but sampling starts from pure "
        "noise N(0, I), so the samples will not reach the data's distribution; raise beta2_end or "
        "diffusion_steps (the default schedule ends at ᾱ_L = 3.2e-6)"
    )


def broadcast_to(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-point values ``(N,)`` to ``(N, 1, ..., 1)`` so they broadcast against ``like (N, ...)``."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


class NoiseSchedule(nn.Module):
    """Linear β² schedule (L >= 1 steps, β² in (0, 1)) with buffers ``(L + 1,)`` indexed by i = 0..L:
    ``beta2``, ``alpha``, ``alpha_bar``, ``sigma_bar`` (sqrt(1 - ᾱ_i²)), ``posterior_variance`` (σ̃²_i),
    ``posterior_coef_x0`` and ``posterior_coef_xi`` (the coefficients of μ̃_i)."""

    def __init__(self, steps: int, beta2_start: float, beta2_end: float) -> None:
        super().__init__()
        if steps < 1 or not (0 < beta2_start < 1 and 0 < beta2_end < 1):
            raise ValueError(f"need steps >= 1 and beta2 in (0, 1), got {steps}, {beta2_start}, {beta2_end}")
        if problem := schedule_problem(steps, beta2_start, beta2_end):
            raise ValueError(problem)
        self.steps = steps
        beta2 = torch.cat([torch.zeros(1, dtype=torch.float64), _linear_beta2(steps, beta2_start, beta2_end)])
        alpha = torch.sqrt(1.0 - beta2)
        alpha_bar = torch.cumprod(alpha, 0)
        one_minus_ab2 = 1.0 - alpha_bar**2  # entry 0 is exactly 0
        prev_one_minus = torch.cat([torch.zeros(1, dtype=torch.float64), one_minus_ab2[:-1]])
        prev_alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        safe = torch.where(one_minus_ab2 > 0, one_minus_ab2, torch.ones_like(one_minus_ab2))
        coef_x0 = torch.where(one_minus_ab2 > 0, prev_alpha_bar * beta2 / safe, torch.ones_like(beta2))
        coef_xi = alpha * prev_one_minus / safe
        variance = prev_one_minus / safe * beta2
        for name, value in {
            "beta2": beta2,
            "alpha": alpha,
            "alpha_bar": alpha_bar,
            "sigma_bar": torch.sqrt(one_minus_ab2),
            "posterior_variance": variance,
            "posterior_coef_x0": coef_x0,
            "posterior_coef_xi": coef_xi,
        }.items():
            self.register_buffer(name, value.float())

    def gather(self, name: str, timestep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Buffer ``name`` at per-point timesteps ``timestep (N,)``, shaped to broadcast with ``like``."""
        return broadcast_to(getattr(self, name)[timestep], like)

    def q_sample(
        self,
        x0: torch.Tensor,
        timestep: torch.Tensor,
        noise: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``x_i ~ q(x_i | x_0) = N(ᾱ_i x_0, (1 - ᾱ_i²) I)``; ``x0 (N, D)``, ``timestep (N,)``."""
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.gather("alpha_bar", timestep, x0) * x0 + self.gather("sigma_bar", timestep, x0) * noise

    def posterior_mean(self, x0: torch.Tensor, xi: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """μ̃_i(x_i, x_0), the mean of ``q(x_{i-1} | x_i, x_0)``; shapes ``(N, D)``, timestep ``(N,)``."""
        return (
            self.gather("posterior_coef_x0", timestep, x0) * x0
            + self.gather("posterior_coef_xi", timestep, xi) * xi
        )

    def mean_from_eps(self, xi: torch.Tensor, eps: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The posterior mean implied by a noise prediction (Ho et al. 2020, eq. 11):
        ``μ = (x_i - β²_i / sqrt(1 - ᾱ_i²) · ε) / α_i``."""
        beta2, sigma_bar, alpha = (self.gather(n, timestep, xi) for n in ("beta2", "sigma_bar", "alpha"))
        return (xi - beta2 / sigma_bar * eps) / alpha

    def eps_from_mean(self, xi: torch.Tensor, mean: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`mean_from_eps`: ``ε = (x_i - α_i μ) sqrt(1 - ᾱ_i²) / β²_i``."""
        beta2, sigma_bar, alpha = (self.gather(n, timestep, xi) for n in ("beta2", "sigma_bar", "alpha"))
        return (xi - alpha * mean) * sigma_bar / beta2


def _clip(x0: torch.Tensor, x0_bound: torch.Tensor | None) -> torch.Tensor:
    return x0 if x0_bound is None else torch.maximum(torch.minimum(x0, x0_bound), -x0_bound)


def _eps_from_x0(schedule: NoiseSchedule, x_i: torch.Tensor, x0: torch.Tensor, i: int) -> torch.Tensor:
    """The ε̂ that takes ``x0`` to ``x_i`` at step i (eq. 4 solved for the noise)."""
    return (x_i - schedule.alpha_bar[i] * x0) / schedule.sigma_bar[i]


def _x0_and_eps(
    schedule: NoiseSchedule, x_i: torch.Tensor, eps: torch.Tensor, i: int, x0_bound: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂₀ (Ho et al. 2020, eq. 15) clipped to ±``x0_bound`` if given, and the ε̂ that agrees with it."""
    x0 = (x_i - schedule.sigma_bar[i] * eps) / schedule.alpha_bar[i]
    if x0_bound is None:
        return x0, eps
    x0 = _clip(x0, x0_bound)
    return x0, _eps_from_x0(schedule, x_i, x0, i)


def ancestral_step(
    schedule: NoiseSchedule,
    x_i: torch.Tensor,
    eps: torch.Tensor,
    i: int,
    noise: torch.Tensor | None,
    *,
    variance: torch.Tensor | float,
    x0_bound: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step x_i -> x_{i-1} of the ancestral sampler (Ho et al. 2020, Algorithm 2, line 4).

    1. x̂₀ = (x_i - σ̄_i ε̂) / ᾱ_i                     (eq. 4 solved for x_0; eq. 15)
    2. x̂₀ clipped to ±``x0_bound``                   (if given; diffusers' ``clip_sample``)
    3. μ = μ̃_i(x_i, x̂₀)                              (eq. 7; unclipped it is eq. 11's μ_θ)
    4. x_{i-1} = μ + sqrt(``variance``) · ``noise``   (i > 1; at i = 1, μ̃_1 = x̂₀ alone)

    ``x_i``, ``eps``, ``noise``: ``(N, D)`` standardised; ``x0_bound``: ``(D,)`` or a scalar.
    """
    x0, _ = _x0_and_eps(schedule, x_i, eps, i, x0_bound)
    mean = schedule.posterior_coef_x0[i] * x0 + schedule.posterior_coef_xi[i] * x_i
    if i == 1:
        return mean
    return mean + variance**0.5 * noise


def ddim_step(
    schedule: NoiseSchedule,
    x_i: torch.Tensor,
    eps: torch.Tensor,
    i: int,
    i_prev: int,
    eta: float,
    noise: torch.Tensor | None,
    *,
    x0_bound: torch.Tensor | None = None,
    last: tuple[torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One strided step x_i -> x_{i_prev} of DDIM (Song, Meng & Ermon 2021, eq. 12; their α_t is ᾱ_t²).

    1. x̂₀ = (x_i - σ̄_i ε̂) / ᾱ_i                          (eq. 12's "predicted x_0")
    2. x̂₀ clipped to ±``x0_bound``, ε̂ re-derived from it   (if given)
    3. with ``last`` = (x̂₀ of the previous step, its timestep): x̂₀ <- x̂₀ + (x̂₀ - x̂₀_last) / (2r),
       r = (λ_i - λ_last) / (λ_prev - λ_i) in λ = log(ᾱ/σ̄), clipped likewise, and ε̂ re-derived: the
       second-order multistep step of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; for η = 1 its SDE
       variant), same network passes as DDIM
    4. σ = η sqrt(σ̄²_prev / σ̄²_i) sqrt(1 - ᾱ²_i / ᾱ²_prev)   (eq. 16; η = 1 is the DDPM posterior's)
    5. x_prev = ᾱ_prev x̂₀ + sqrt(σ̄²_prev - σ²) ε̂ + σ z     (eq. 12; i_prev = 0 gives step 2's x̂₀)

    ``x_i``, ``eps``, ``noise``: ``(N, D)`` standardised. Returns x_prev and step 2's x̂₀ (clipped, not
    extrapolated: the next step's ``last``).
    """
    x0, eps = _x0_and_eps(schedule, x_i, eps, i, x0_bound)
    if i_prev == 0:
        return x0, x0
    ab, ab_prev, d = schedule.alpha_bar[i], schedule.alpha_bar[i_prev], x0
    if last is not None:
        at = [i, last[1], i_prev]  # λ at the three timesteps only: this runs at every step
        lam_i, lam_last, lam_prev = torch.log(schedule.alpha_bar[at] / schedule.sigma_bar[at])
        d = _clip(x0 + (x0 - last[0]) * (lam_prev - lam_i) / (2 * (lam_i - lam_last)), x0_bound)
        eps = _eps_from_x0(schedule, x_i, d, i)
    sigma = eta * torch.sqrt((1 - ab_prev**2) / (1 - ab**2) * (1 - ab**2 / ab_prev**2))
    x = ab_prev * d + torch.sqrt((1 - ab_prev**2 - sigma**2).clamp_min(0)) * eps
    return (x if eta == 0 else x + sigma * noise), x0
