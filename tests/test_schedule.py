"""The β² schedule: golden values, closed forms against simulation, posterior against Bayes' rule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genmodels.models.ddpm import ddim_timesteps
from genmodels.models.schedule import (
    MAX_FINAL_ALPHA_BAR,
    MIN_ALPHA_BAR,
    NoiseSchedule,
    ancestral_step,
    ddim_step,
    final_alpha_bar,
    schedule_warning,
)


def test_golden_values_default_schedule():
    s = NoiseSchedule(2500, 1e-4, 0.02)
    beta2_2 = 1e-4 + (0.02 - 1e-4) / 2499
    assert float(s.beta2[1]) == pytest.approx(1e-4, rel=1e-6)
    assert float(s.beta2[2]) == pytest.approx(beta2_2, rel=1e-6)
    assert float(s.beta2[2500]) == pytest.approx(0.02, rel=1e-6)
    a1, a2 = math.sqrt(1 - 1e-4), math.sqrt(1 - beta2_2)
    assert float(s.alpha[1]) == pytest.approx(a1, rel=1e-7)
    assert float(s.alpha_bar[1]) == pytest.approx(a1, rel=1e-7)
    assert float(s.alpha_bar[2]) == pytest.approx(a1 * a2, rel=1e-7)
    # ᾱ_L = exp(sum of ½ log(1 - β²_i)) over the linear schedule.
    log_ab = sum(0.5 * math.log(1 - (1e-4 + (0.02 - 1e-4) * k / 2499)) for k in range(2500))
    assert float(s.alpha_bar[2500]) == pytest.approx(math.exp(log_ab), rel=1e-4)
    assert float(s.alpha_bar[2500]) < 1e-5
    # σ̃²_1 = 0 (the posterior at i = 1 is x_0 itself), σ̃²_2 = (1 - ᾱ_1²)/(1 - ᾱ_2²) β²_2.
    assert float(s.posterior_variance[1]) == 0.0
    expected = (1 - a1**2) / (1 - (a1 * a2) ** 2) * beta2_2
    assert float(s.posterior_variance[2]) == pytest.approx(expected, rel=1e-5)
    ab_prev = math.exp(log_ab - 0.5 * math.log(1 - 0.02))
    expected_l = (1 - ab_prev**2) / (1 - math.exp(2 * log_ab)) * 0.02
    assert float(s.posterior_variance[2500]) == pytest.approx(expected_l, rel=1e-5)
    # The orders of magnitude: 1/(2σ̃²) ≈ 1e4 at i = 2, ≈ 1e2 at i = 500; ᾱ < 0.03 past ~1300.
    assert 5e3 < 1 / (2 * float(s.posterior_variance[2])) < 2e4
    assert 50 < 1 / (2 * float(s.posterior_variance[500])) < 200
    assert float(s.alpha_bar[1300]) == pytest.approx(0.03, abs=0.01)


@pytest.mark.parametrize("steps, start, end", [(2500, 1e-4, 0.02), (1, 0.3, 0.3), (6000, 1e-4, 0.02)])
def test_final_alpha_bar_is_the_schedules_last_value(steps, start, end):
    expected = NoiseSchedule(steps, start, end).alpha_bar.double()[-1].item()
    assert final_alpha_bar(steps, start, end) == pytest.approx(expected, rel=1e-5)


def test_a_schedule_below_the_smallest_alpha_bar_is_refused():
    assert final_alpha_bar(2500, 1e-4, 0.07) < MIN_ALPHA_BAR < final_alpha_bar(2500, 1e-4, 0.06)
    with pytest.raises(ValueError, match="drives ᾱ_L to 3.3e-20, below 1e-18"):
        NoiseSchedule(2500, 1e-4, 0.07)
    NoiseSchedule(2500, 1e-4, 0.06)


def test_a_schedule_that_keeps_the_data_in_x_L_draws_a_warning():
    assert schedule_warning(2500, 1e-4, 0.02) is None  # the spec's: ᾱ_L = 3.2e-6
    s = NoiseSchedule(3, 1e-4, 0.5)  # the B15 case
    x0 = torch.ones(1, 2)
    x_l = s.q_sample(x0, torch.tensor([3]), torch.zeros(1, 2))
    assert float(x_l[0, 0]) == pytest.approx(0.612, abs=5e-4)  # x_3 keeps 61% of x_0 when ε = 0
    assert "ends at ᾱ_L = 0.612: x_L keeps 61% of the data's scale" in schedule_warning(3, 1e-4, 0.5)
    assert final_alpha_bar(100, 1e-4, 0.1) < MAX_FINAL_ALPHA_BAR < final_alpha_bar(80, 1e-4, 0.1)
    assert schedule_warning(100, 1e-4, 0.1) is None and schedule_warning(80, 1e-4, 0.1) is not None


def test_single_step_schedule_uses_the_end_value():
    s = NoiseSchedule(1, 1e-4, 0.5)
    assert float(s.beta2[1]) == pytest.approx(0.5)
    assert float(s.posterior_variance[1]) == 0.0
    assert float(s.posterior_coef_x0[1]) == pytest.approx(1.0)
    assert float(s.posterior_coef_xi[1]) == 0.0


def test_closed_form_matches_simulated_markov_chain():
    torch.manual_seed(0)
    s = NoiseSchedule(200, 1e-3, 0.05).double()
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    n = 200_000
    x = x0.expand(n, 2).clone()
    checkpoints = {1: None, 50: None, 200: None}
    for i in range(1, 201):
        x = s.alpha[i] * x + s.beta2[i].sqrt() * torch.randn_like(x)
        if i in checkpoints:
            checkpoints[i] = (x.mean(0), x.var(0))
    for i, (mean, var) in checkpoints.items():
        ab = float(s.alpha_bar[i])
        torch.testing.assert_close(mean, ab * x0, atol=5 * math.sqrt((1 - ab**2) / n) + 1e-12, rtol=0)
        torch.testing.assert_close(
            var, torch.full((2,), 1 - ab**2, dtype=torch.float64), rtol=0.02, atol=1e-9
        )


def test_posterior_matches_bayes_rule_numerically():
    """q(x_{i-1} | x_i, x_0) ∝ q(x_i | x_{i-1}) q(x_{i-1} | x_0), integrated on a 1-D grid."""
    s = NoiseSchedule(50, 1e-3, 0.2).double()
    x0, xi = 0.7, -0.4
    for i in (2, 10, 50):
        grid = torch.linspace(-6, 6, 200_001, dtype=torch.float64)
        ab_prev = s.alpha_bar[i - 1]
        log_prior = -0.5 * (grid - ab_prev * x0) ** 2 / (1 - ab_prev**2)
        log_lik = -0.5 * (xi - s.alpha[i] * grid) ** 2 / s.beta2[i]
        w = torch.softmax(log_prior + log_lik, 0)
        mean = (w * grid).sum()
        var = (w * (grid - mean) ** 2).sum()
        t = torch.tensor([i])
        mu = s.posterior_mean(
            torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xi]], dtype=torch.float64), t
        )
        assert float(mu) == pytest.approx(float(mean), abs=2e-5)  # buffers are stored in float32
        assert float(s.posterior_variance[i]) == pytest.approx(float(var), rel=1e-4)


def test_posterior_at_first_step_is_the_data():
    s = NoiseSchedule(10, 1e-2, 0.1)
    x0, xi = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(s.posterior_mean(x0, xi, torch.ones(5, dtype=torch.long)), x0)


def test_mean_and_eps_conversions_are_inverse():
    s = NoiseSchedule(100, 1e-4, 0.02).double()
    t = torch.randint(1, 101, (64,))
    xi, eps = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    mean = s.mean_from_eps(xi, eps, t)
    torch.testing.assert_close(s.eps_from_mean(xi, mean, t), eps)
    # With the true noise, the implied mean is the true posterior mean.
    x0 = torch.randn(64, 2, dtype=torch.float64)
    xt = s.q_sample(x0, t, eps)
    torch.testing.assert_close(s.mean_from_eps(xt, eps, t), s.posterior_mean(x0, xt, t))


@pytest.mark.parametrize("i", [2500, 1200, 2])
def test_ancestral_steps_mean_is_the_posterior_mean_at_the_true_x0(i):
    s = NoiseSchedule(2500, 1e-4, 0.02).double()
    t = torch.full((64,), i)
    x0, eps = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    xi = s.q_sample(x0, t, eps)
    zero = torch.zeros_like(xi)
    mean = ancestral_step(s, xi, eps, i, zero, variance=s.posterior_variance[i])
    torch.testing.assert_close(mean, s.posterior_mean(x0, xi, t))
    torch.testing.assert_close(mean, s.mean_from_eps(xi, eps, t))  # Ho et al. 2020, eq. 11
    noise = torch.randn_like(xi)
    stepped = ancestral_step(s, xi, eps, i, noise, variance=0.25)
    torch.testing.assert_close(stepped, mean + 0.5 * noise)
    # The last step returns x̂₀ itself, without noise.
    x1 = s.q_sample(x0, torch.ones(64, dtype=torch.long), eps)
    torch.testing.assert_close(ancestral_step(s, x1, eps, 1, None, variance=1.0), x0)


@pytest.mark.parametrize(("i", "i_prev"), [(2500, 0), (2500, 2400), (700, 3), (1200, 1199), (1, 0)])
def test_ddim_with_the_true_eps_of_a_point_mass_returns_the_point(i, i_prev):
    s = NoiseSchedule(2500, 1e-4, 0.02).double()
    point = torch.tensor([[1.5, -0.25]], dtype=torch.float64).expand(64, 2)
    eps = torch.randn(64, 2, dtype=torch.float64)
    xi = s.q_sample(point, torch.full((64,), i), eps)
    stepped, _ = ddim_step(s, xi, eps, i, i_prev, 0.0, None)
    # η = 0 moves along the noise already there: x_prev = ᾱ_prev x_0 + σ̄_prev ε (Song et al. 2021, eq. 12).
    # (to the float32 rounding of the stored ᾱ, as σ̄_prev is recomputed from it)
    expected = s.q_sample(point, torch.full((64,), i_prev), eps)
    torch.testing.assert_close(stepped, expected, rtol=1e-5, atol=1e-5)
    # η = 1 at the next step draws from the DDPM posterior q(x_{i-1} | x_i, x_0).
    if i_prev == i - 1 and i > 1:  # (1200, 1199)
        noise = torch.randn_like(xi)
        posterior = s.posterior_mean(point, xi, torch.full((64,), i)) + s.posterior_variance[i].sqrt() * noise
        torch.testing.assert_close(
            ddim_step(s, xi, eps, i, i_prev, 1.0, noise)[0], posterior, rtol=1e-5, atol=1e-5
        )


def _gaussian_ode_error(s: NoiseSchedule, steps: list[int], order: int) -> float:
    """Largest error of η = 0 DDIM from x_L to x_0 on 1-D data N(m, v), whose exact ε̂ and
    probability-flow ODE solution x_i = ᾱ_i m + sqrt(ᾱ_i² v + σ̄_i²) z are closed forms."""
    m, v = 0.7, 0.09
    z = torch.linspace(-3, 3, 101, dtype=torch.float64)[:, None]
    x, last = torch.sqrt(s.alpha_bar[steps[0]] ** 2 * v + s.sigma_bar[steps[0]] ** 2) * z, None
    x = x + s.alpha_bar[steps[0]] * m
    for i, i_prev in zip(steps, [*steps[1:], 0], strict=True):
        ab, sb = s.alpha_bar[i], s.sigma_bar[i]
        x0 = m + ab * v / (ab**2 * v + sb**2) * (x - ab * m)  # E[x_0 | x_i] (Gaussian posterior)
        x, x0 = ddim_step(s, x, (x - ab * x0) / sb, i, i_prev, 0.0, None, last=last)
        last = (x0, i) if order == 2 else None
    return float((x - (m + v**0.5 * z)).abs().max())


def test_the_second_order_step_converges_faster_than_ddim():
    s = NoiseSchedule(1000, 1e-4, 0.02).double()
    # Equal x̂₀ at both steps: the multistep correction vanishes and the step is DDIM's.
    xi, eps = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    x0 = (xi - s.sigma_bar[500] * eps) / s.alpha_bar[500]
    torch.testing.assert_close(
        ddim_step(s, xi, eps, 500, 400, 0.0, None, last=(x0, 600))[0],
        ddim_step(s, xi, eps, 500, 400, 0.0, None)[0],
    )
    errors = {
        (o, n): _gaussian_ode_error(s, ddim_timesteps(1000, n), o) for o in (1, 2) for n in (20, 40, 80)
    }
    # Doubling the steps halves DDIM's error (first order) and cuts the second order's by over 4.
    assert 1.7 < errors[1, 20] / errors[1, 40] < 2.3 and 1.7 < errors[1, 40] / errors[1, 80] < 2.3
    assert errors[2, 20] / errors[2, 40] > 4 and errors[2, 40] / errors[2, 80] > 4
    assert errors[2, 40] < errors[1, 40] / 5 and errors[2, 80] < 1e-3


def test_steps_clip_x0_to_the_bound_and_stay_consistent_with_x_i():
    s = NoiseSchedule(2500, 1e-4, 0.02).double()
    bound = torch.tensor([2.0, 3.0], dtype=torch.float64)
    xi = torch.randn(256, 2, dtype=torch.float64)
    eps = xi * s.sigma_bar[2500] + 0.3 * torch.randn_like(xi)  # an error of 0.3 puts x̂₀ near 1e5
    unclipped, _ = ddim_step(s, xi, eps, 2500, 0, 0.0, None)
    assert unclipped.abs().max() > 1e4
    clipped, _ = ddim_step(s, xi, eps, 2500, 0, 0.0, None, x0_bound=bound)
    assert (clipped.abs() <= bound).all() and (clipped.abs() == bound).any()
    # Inside the bound nothing changes.
    x0 = torch.rand(256, 2, dtype=torch.float64)
    true_eps = torch.randn_like(x0)
    xi = s.q_sample(x0, torch.full((256,), 40), true_eps)
    torch.testing.assert_close(
        ddim_step(s, xi, true_eps, 40, 7, 0.0, None, x0_bound=bound),
        ddim_step(s, xi, true_eps, 40, 7, 0.0, None),
    )
    # The second-order step's extrapolated x̂₀ is clipped too: recover it from x_prev = ᾱ_p d + σ̄_p ε̂(d).
    stepped, _ = ddim_step(
        s, xi, true_eps, 40, 20, 0.0, None, x0_bound=bound, last=(torch.full_like(xi, -50.0), 60)
    )
    ratio = s.sigma_bar[20] / s.sigma_bar[40]
    d = (stepped - ratio * xi) / (s.alpha_bar[20] - ratio * s.alpha_bar[40])
    torch.testing.assert_close(
        d, bound.expand_as(d), rtol=1e-5, atol=1e-4
    )  # x̂₀ in [0, 1] pushed away from -50: clipped at +bound
    x1 = ancestral_step(s, xi, eps[:256], 1, None, variance=1.0, x0_bound=bound)
    assert (x1.abs() <= bound).all()


def test_buffers_move_and_save():
    s = NoiseSchedule(5, 1e-3, 0.1)
    assert set(s.state_dict()) >= {"beta2", "alpha", "alpha_bar", "posterior_variance"}
    assert s.beta2.dtype == torch.float32 and s.beta2.shape == (6,)


def test_invalid_schedules_are_rejected():
    with pytest.raises(ValueError):
        NoiseSchedule(0, 1e-4, 0.02)
    with pytest.raises(ValueError):
        NoiseSchedule(10, 0.0, 0.02)
    with pytest.raises(ValueError):
        NoiseSchedule(10, 1e-4, 1.0)


@settings(max_examples=50, deadline=None)
@given(
    steps=st.integers(1, 3000),
    start=st.floats(1e-6, 0.5),
    end=st.floats(1e-6, 0.999),
)
def test_property_schedule_is_valid(steps, start, end):
    if final_alpha_bar(steps, start, end) < MIN_ALPHA_BAR:
        with pytest.raises(ValueError, match="drives ᾱ_L"):
            NoiseSchedule(steps, start, end)
        return
    s = NoiseSchedule(steps, start, end).double()
    assert torch.isfinite(s.alpha_bar).all() and torch.isfinite(s.posterior_variance).all()
    assert float(s.alpha_bar[0]) == 1.0
    assert (s.alpha_bar[1:] < 1).all() and (s.alpha_bar[1:] >= 0).all()
    assert (s.alpha_bar[1:] <= s.alpha_bar[:-1]).all()
    assert (s.posterior_variance[1:] >= 0).all()
    assert (s.posterior_variance[1:] <= s.beta2[1:] * (1 + 1e-6)).all()
    torch.testing.assert_close(
        s.sigma_bar**2 + s.alpha_bar**2, torch.ones_like(s.alpha_bar), atol=1e-6, rtol=0
    )
