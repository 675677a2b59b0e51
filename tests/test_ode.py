"""The probability-flow ODE likelihood against analytic answers, and RealNVP / DDPM on a Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

from genmodels.config import DDPMModelConfig
from genmodels.models.ddpm import DDPM
from genmodels.models.flow_ode import (
    ContinuousSchedule,
    _network_eps,
    probability_flow_log_prob,
    probability_flow_nll,
)
from genmodels.models.realnvp import RealNVP

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[4.0, 1.8], [1.8, 2.25]])  # correlation 0.6


def make_ddpm(steps: int = 100, **kw) -> DDPM:
    config = DDPMModelConfig(
        diffusion_steps=steps,
        beta2_start=1e-3,
        beta2_end=0.2,
        hidden_units=kw.pop("hidden_units", 16),
        n_blocks=kw.pop("n_blocks", 1),
        time_embed_dim=kw.pop("time_embed_dim", 8),
        **kw,
    )
    torch.manual_seed(0)
    return DDPM.from_config(config, 2)


def gaussian_oracle(schedule: ContinuousSchedule, corr: torch.Tensor):
    """Exact ε for standardised data N(0, C): x_s ~ N(0, ᾱ² C + σ̄² I), E[ε | x_s] = σ̄ Σ_s⁻¹ x_s."""

    def eps(x: torch.Tensor, s: float) -> torch.Tensor:
        a, sig = schedule.alpha_bar(s), schedule.sigma_bar(s)
        cov_s = a * a * corr.double() + sig * sig * torch.eye(corr.shape[0], dtype=torch.float64)
        return sig * x.double() @ torch.linalg.inv(cov_s).T

    return eps


@pytest.mark.parametrize("steps,start,end", [(2500, 1e-4, 0.02), (100, 1e-3, 0.2), (2, 0.01, 0.05)])
def test_continuous_schedule_matches_the_discrete_one(steps: int, start: float, end: float) -> None:
    config = DDPMModelConfig(
        diffusion_steps=steps, beta2_start=start, beta2_end=end, hidden_units=8, n_blocks=1
    )
    model = DDPM.from_config(config, 2)
    cs = ContinuousSchedule.from_model(model)
    continuous = torch.tensor([cs.alpha_bar(i) for i in range(1, steps + 1)], dtype=torch.float64)
    discrete = model.schedule.alpha_bar[1:].double()
    assert torch.allclose(continuous, discrete, rtol=1e-4)
    assert cs.sigma_bar(1) == pytest.approx(math.sqrt(start), rel=1e-5)
    # The rate per unit timestep is -log(1 - β²) half a step later (≈ β²).
    assert cs.rate(1.0) == pytest.approx(-math.log1p(-cs.beta2(1.5)))


def test_fractional_embedding_equals_the_table_at_integer_steps() -> None:
    model = make_ddpm(steps=50)
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(7, 2)
    eps = _network_eps(model, ContinuousSchedule.from_model(model), "embedding")
    for i in (1, 17, 50):
        expected = model._eps_prediction(x, torch.full((7,), i))
        assert torch.allclose(eps(x, float(i)), expected, atol=1e-6)
    assert model.network.time_table.shape[0] == 51  # restored after the call


def test_standard_normal_oracle_matches_the_analytic_nll() -> None:
    """Data N(m, diag(s²)) standardise to N(0, I), whose exact ε is σ̄ x: the flow is the identity
    and the NLL is the Gaussian's, with the standardisation's Jacobian."""
    model = make_ddpm()
    std = torch.tensor([2.0, 0.5])
    model.set_standardization(MEAN, std)
    cs = ContinuousSchedule.from_model(model)
    torch.manual_seed(1)
    x = MEAN + std * torch.randn(500, 2)
    nll = probability_flow_nll(model, x, eps_fn=lambda z, s: cs.sigma_bar(s) * z.double())
    analytic = -torch.distributions.Normal(MEAN, std).log_prob(x).sum(-1)
    assert float((nll - analytic.double()).abs().max()) < 1e-3
    assert float(nll.mean()) == pytest.approx(float(analytic.mean()), abs=0.02)


def test_correlated_gaussian_oracle_matches_the_analytic_nll() -> None:
    model = make_ddpm()
    std = COV.diag().sqrt()
    model.set_standardization(MEAN, std)
    corr = COV / (std[:, None] * std[None, :])
    torch.manual_seed(2)
    x = torch.distributions.MultivariateNormal(MEAN, COV).sample((1000,))
    flow = probability_flow_log_prob(
        model, x, eps_fn=gaussian_oracle(ContinuousSchedule.from_model(model), corr)
    )
    analytic = torch.distributions.MultivariateNormal(MEAN, COV).log_prob(x).double()
    assert float(flow.log_prob.mean()) == pytest.approx(float(analytic.mean()), abs=0.02)
    assert flow.nfe > 0 and torch.isfinite(flow.divergence).all()


def test_realnvp_and_ddpm_reach_the_analytic_nll_of_a_correlated_gaussian() -> None:
    """The key check: on N(MEAN, COV), RealNVP's exact NLL and the trained DDPM's probability-flow NLL
    are within 0.05 nats of the true density's NLL on the same held-out points, and DDPM's variational
    bound lies above it. (About 30 s on one busy CPU thread, mostly the DDPM's 1,500 training steps.)"""
    torch.manual_seed(0)
    dist = torch.distributions.MultivariateNormal(MEAN, COV)
    train, test = dist.sample((8192,)), dist.sample((1000,))
    analytic = float(-dist.log_prob(test).mean())

    flow = RealNVP(2, n_coupling_layers=4, n_hidden=1, hidden_units=16)
    flow.set_standardization(train.mean(0), train.std(0))
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    for _ in range(300):
        loss = flow.loss(train[torch.randint(0, len(train), (1024,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        realnvp_nll = float(-flow.log_prob(test).mean())
    assert realnvp_nll == pytest.approx(analytic, abs=0.05)

    model = make_ddpm(hidden_units=32, n_blocks=2, time_embed_dim=16)
    model.set_standardization(train.mean(0), train.std(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1500)
    for _ in range(1500):
        loss = model.loss(train[torch.randint(0, len(train), (1024,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    model.eval()
    ode_nll = float(probability_flow_nll(model, test).mean())
    assert ode_nll == pytest.approx(analytic, abs=0.05)
    bound = float(model.nll_bound(test).mean())
    assert bound > analytic
    assert bound > ode_nll


def test_interpolated_time_mode_and_bad_arguments() -> None:
    model = make_ddpm(steps=20)
    x = torch.randn(20, 2)
    a = probability_flow_nll(model, x, time_mode="interpolate")
    b = probability_flow_nll(model, x)
    # A new network outputs ε = 0 (zero last layer): both modes give the same linear flow.
    assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="time_mode"):
        probability_flow_nll(model, x, time_mode="nearest")
    with pytest.raises(ValueError, match="start"):
        probability_flow_nll(model, x, start=20.0)
    with pytest.raises(ValueError, match="at least 2"):
        ContinuousSchedule(1, 0.1, 0.1)
