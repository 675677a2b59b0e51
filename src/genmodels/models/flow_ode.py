"""Exact log-likelihood of a DDPM through the probability-flow ODE.

Song et al. 2021 ("Score-Based Generative Modeling through Stochastic Differential Equations", ICLR,
sec. 4.3 and appendix D.2): the discrete DDPM forward process is the discretisation of the
variance-preserving SDE ``dx = -½ β(t) x dt + sqrt(β(t)) dW``, and every SDE has a deterministic
"probability-flow" ODE with the same marginals p_t::

    dx/dt = f(x, t) = -½ β(t) (x + ∇_x log p_t(x))

The instantaneous change of variables (a continuous normalizing flow) gives the exact log-density::

    log p_0(x(0)) = log p_1(x(1)) + ∫_0^1 div f(x(t), t) dt

Time is the continuous timestep ``s = t L`` (s = i is step i). With β²(u) on the schedule's straight
line, ``b(u) = -log(1 - β²(u))`` and ``log ᾱ_i = ½ Σ_{k<=i} log(1 - β²_k)``::

    log ᾱ(s) = log ᾱ_1 - ½ ∫_{3/2}^{s+1/2} b(u) du            (s >= 1)

(the midpoint rule of b(k) per unit interval, so ᾱ(s) matches ᾱ_i at integers to ~1e-9); the rate is
``β_s(s) = -2 d log ᾱ/ds = b(s + ½)``, ``σ̄(s) = sqrt(1 - ᾱ(s)²)``, and in closed form
``∫ b du = (G(w(u1)) - G(w(u0))) / Δ`` with ``w = 1 - β²(u)``, ``G(w) = w log w - w``, slope ``Δ``.

Score: ``∇ log p_s(x) ≈ -ε_θ(x, s) / σ̄(s)``, so ``dx/ds = -½ b(s + ½) (x - ε_θ(x, s) / σ̄(s))`` in
standardised units. At fractional s the network gets the sinusoidal embedding of s
(``time_mode="embedding"``) or its outputs at ⌊s⌋ and ⌈s⌉ are interpolated (``"interpolate"``).
``div f`` is exact (D autograd rows); the solver is torchdiffeq's ``dopri5``. The ODE runs from s = 1
(the network never saw i < 1; an error of order ``D σ̄_1² / 2`` nats) to s = L, where N(0, I) is the
prior; the standardisation's log-Jacobian puts the result in the data's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genmodels.models.layers import sinusoidal_embedding

__all__ = ["ContinuousSchedule", "FlowLikelihood", "probability_flow_log_prob", "probability_flow_nll"]

EpsFunction = Callable[[torch.Tensor, float], torch.Tensor]
TIME_MODES = ("embedding", "interpolate")
_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


class ContinuousSchedule:
    """The continuous-time extension of a linear β² schedule (L >= 2; module docstring), at s in [1, L]."""

    def __init__(self, steps: int, beta2_start: float, beta2_end: float) -> None:
        if steps < 2:
            raise ValueError(f"the probability-flow ODE needs at least 2 diffusion steps, got {steps}")
        self.steps, self.beta2_start = int(steps), float(beta2_start)
        self.slope = (float(beta2_end) - float(beta2_start)) / (steps - 1)
        if not 0.0 < self.beta2(self.steps + 0.5) < 1.0:
            raise ValueError("the β² schedule leaves (0, 1) half a step beyond its last step")
        self._log_alpha_bar_1 = 0.5 * math.log1p(-self.beta2_start)

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> ContinuousSchedule:
        """The continuous schedule of a :class:`genmodels.models.ddpm.DDPM` (read from its β² buffer)."""
        return cls(model.diffusion_steps, float(model.schedule.beta2[1]), float(model.schedule.beta2[-1]))

    def beta2(self, u: float) -> float:
        """β²(u) on the schedule's straight line."""
        return self.beta2_start + (u - 1.0) * self.slope

    def rate(self, s: float) -> float:
        """β_s(s) = -2 d log ᾱ / ds = -log(1 - β²(s + ½)), the VP-SDE's rate per unit timestep."""
        return -math.log1p(-self.beta2(s + 0.5))

    def _integral(self, u0: float, u1: float) -> float:
        """∫_{u0}^{u1} -log(1 - β²(u)) du."""
        if abs(self.slope) < 1e-14:
            return -math.log1p(-self.beta2(0.5 * (u0 + u1))) * (u1 - u0)
        w0, w1 = 1.0 - self.beta2(u0), 1.0 - self.beta2(u1)
        return ((w1 * math.log(w1) - w1) - (w0 * math.log(w0) - w0)) / self.slope

    def log_alpha_bar(self, s: float) -> float:
        """log ᾱ(s); equals the discrete log ᾱ_i at s = i up to the midpoint rule's tiny error."""
        return self._log_alpha_bar_1 - 0.5 * self._integral(1.5, s + 0.5)

    def alpha_bar(self, s: float) -> float:
        return math.exp(self.log_alpha_bar(s))

    def sigma_bar(self, s: float) -> float:
        """σ̄(s) = sqrt(1 - ᾱ(s)²), the noise level of q(x_s | x_0) in standardised units."""
        return math.sqrt(-math.expm1(2.0 * self.log_alpha_bar(s)))


def _network_eps(model: torch.nn.Module, schedule: ContinuousSchedule, time_mode: str) -> EpsFunction:
    """ε_θ(x, s) at a continuous timestep s for a DDPM's own network (see the module docstring)."""
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    network = model.network
    if time_mode == "interpolate":

        def eps(x: torch.Tensor, s: float) -> torch.Tensor:
            low = min(max(int(math.floor(s)), 1), model.diffusion_steps)
            high, w = min(low + 1, model.diffusion_steps), s - low
            # Shape (1,): one timestep for all points, so its embedding and projections are computed once.
            out = model._eps_prediction(x, x.new_full((1,), low, dtype=torch.long))
            if w > 0 and high != low:
                out = (1 - w) * out + w * model._eps_prediction(x, x.new_full((1,), high, dtype=torch.long))
            return out

        return eps

    if not (hasattr(network, "time_table") and hasattr(network, "conditioning")):
        raise ValueError(
            "time_mode='embedding' needs a network with a sinusoidal 'time_table' and 'conditioning'; "
            "use time_mode='interpolate' or pass eps_fn"
        )
    width = network.time_table.shape[1]

    def eps(x: torch.Tensor, s: float) -> torch.Tensor:
        embedding = sinusoidal_embedding(x.new_tensor([s]), width).to(network.time_table.dtype)
        # One conditioning row for all points; the timestep argument is only shown to hooks.
        out = network(x, x.new_zeros(1, dtype=torch.long), conditioning=network.conditioning(embedding))
        if model.parameterisation == "eps":
            return out
        # μ = (x - β²/σ̄ ε) / α  =>  ε = (x - α μ) σ̄ / β², with the continuous α(s), β²(s), σ̄(s).
        beta2 = schedule.beta2(s)
        return (x - math.sqrt(1.0 - beta2) * out) * (schedule.sigma_bar(s) / beta2)

    return eps


@dataclass
class FlowLikelihood:
    """``log_prob (N,)`` nats in data units = ``prior (N,)`` log N(x_L; 0, I) + ``divergence (N,)`` ∫ div f ds
    + the standardisation's log-Jacobian; ``nfe``: drift evaluations."""

    log_prob: torch.Tensor
    prior: torch.Tensor
    divergence: torch.Tensor
    nfe: int


def probability_flow_log_prob(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    time_mode: str = "embedding",
    eps_fn: EpsFunction | None = None,
    start: float = 1.0,
    batch_size: int = 4096,
) -> FlowLikelihood:
    """Exact log-density of a DDPM's probability-flow ODE at ``x (N, D)`` (data units), from s = ``start``.

    ``eps_fn`` replaces the network: ``(x_s (N, D) standardised, s) -> ε (N, D)``; ``batch_size``
    points share one adaptive torchdiffeq solve (``method``, ``rtol``, ``atol``).
    """
    from torchdiffeq import odeint

    steps = model.diffusion_steps
    if not 1.0 <= start < steps:
        raise ValueError(f"start must be in [1, {steps}), got {start}")
    schedule = ContinuousSchedule.from_model(model)
    eps = eps_fn if eps_fn is not None else _network_eps(model, schedule, time_mode)
    param_dtype = next(iter(model.buffers())).dtype
    drift = _Drift(schedule, eps, param_dtype)
    parts = []
    times = torch.tensor([float(start), float(steps)], dtype=torch.float64, device=x.device)
    # step_t makes an adaptive solver land on s = L instead of stepping past it (undefined there).
    extra = {"options": {"step_t": times[-1:]}} if method in _ADAPTIVE else {}
    with torch.no_grad():
        z0, log_det = model.standardize(x.to(param_dtype))
        for z, ld in zip(z0.double().split(batch_size), log_det.double().split(batch_size), strict=True):
            state = (z, torch.zeros(z.shape[0], dtype=torch.float64, device=z.device))
            path, integral = odeint(drift, state, times, rtol=rtol, atol=atol, method=method, **extra)
            prior = -0.5 * (path[-1].pow(2).sum(-1) + x.shape[1] * math.log(2 * math.pi))
            parts.append((prior + integral[-1] + ld, prior, integral[-1]))
    return FlowLikelihood(*(torch.cat(values) for values in zip(*parts, strict=True)), nfe=drift.nfe)


class _Drift:
    """The probability-flow ODE for torchdiffeq: ``(s, (x (N, D), ·)) -> (dx/ds, div f (N,))``; ``nfe``: calls."""

    def __init__(self, schedule: ContinuousSchedule, eps: EpsFunction, param_dtype: torch.dtype) -> None:
        self.schedule, self.eps, self.param_dtype, self.nfe = schedule, eps, param_dtype, 0

    def __call__(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.nfe += 1
        s = min(float(t), float(self.schedule.steps))  # the initial step-size probe may look past L
        rate, sigma = self.schedule.rate(s), self.schedule.sigma_bar(s)
        (n, dim), x = state[0].shape, state[0]
        selector = torch.eye(dim, dtype=x.dtype, device=x.device).repeat_interleave(n, 0)
        with torch.enable_grad():
            # Copy d of the batch back-propagates e_d, so its gradient's d-th entry is ∂f_d/∂x_d.
            xs = x.detach().repeat(dim, 1).requires_grad_(True)
            e = self.eps(xs.to(self.param_dtype), s).to(xs.dtype)
            f = -0.5 * rate * (xs - e / sigma)
            (grad,) = torch.autograd.grad((f * selector).sum(), xs)
            div = (grad * selector).sum(-1).view(dim, n).sum(0)
        return f[:n].detach(), div.detach()


def probability_flow_nll(model: torch.nn.Module, x: torch.Tensor, **options: object) -> torch.Tensor:
    """``-log p(x)`` by :func:`probability_flow_log_prob`: ``(N,)`` nats per sample, data units."""
    return -probability_flow_log_prob(model, x, **options).log_prob  # type: ignore[arg-type]
