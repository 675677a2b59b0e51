"""DDPM: losses, the likelihood bound against an exact answer, sampling, small schedules, an end-to-end fit."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from genmodels.config import DDPMModelConfig, TrainingConfig
from genmodels.models.ddpm import DDPM
from genmodels.train.trainer import Trainer


def small_ddpm(steps: int = 20, *, parameterisation: str = "eps", weighting: str = "simple", **kw) -> DDPM:
    config = DDPMModelConfig(
        diffusion_steps=steps,
        beta2_start=kw.pop("beta2_start", 1e-3),
        beta2_end=kw.pop("beta2_end", 0.2),
        hidden_units=16,
        n_blocks=kw.pop("n_blocks", 1),
        time_embed_dim=8,
        parameterisation=parameterisation,
        weighting=weighting,
        **kw,
    )
    torch.manual_seed(0)
    model = DDPM.from_config(config, 2)
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


class OracleEps(nn.Module):
    """The exact noise prediction for standard normal data: E[ε | x_i] = sqrt(1 - ᾱ_i²) x_i."""

    def __init__(self, sigma_bar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sigma_bar", sigma_bar)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.sigma_bar[timestep][:, None] * x


def oracle_ddpm(steps: int, dim: int = 2, reverse_variance: str = "beta") -> DDPM:
    from genmodels.models.schedule import NoiseSchedule

    schedule = NoiseSchedule(steps, 1e-4, 0.02)
    network = OracleEps(schedule.sigma_bar.clone())
    return DDPM(
        dim, steps=steps, beta2_start=1e-4, beta2_end=0.02, network=network, reverse_variance=reverse_variance
    )


def test_eps_simple_loss_equals_weighted_posterior_mean_error():
    model = small_ddpm()
    x = torch.randn(256, 2)
    torch.manual_seed(5)
    shortcut = model.loss(x)
    # The same draw through the general weighted-mean path, with one timestep per point.
    torch.manual_seed(5)
    z0, _ = model.standardize(x)
    share = model.points_per_timestep
    assert share == 8
    t = torch.randint(1, model.diffusion_steps + 1, (256 // share,)).repeat_interleave(share)
    xi = model.schedule.q_sample(z0, t, torch.randn_like(z0))
    target = model.schedule.posterior_mean(z0, xi, t)
    error = (model.posterior_mean_prediction(xi, t) - target).pow(2).mean(-1)
    general = (model.mean_weight(t) * error).mean()
    assert float(shortcut.detach()) == pytest.approx(float(general.detach()), rel=1e-3)


def test_mean_and_eps_parameterisations_give_the_same_loss_for_the_same_mean():
    """A mean network that outputs exactly what an eps network implies has the same weighted loss."""
    eps_model = small_ddpm(weighting="bound")
    mean_model = small_ddpm(parameterisation="mean", weighting="bound")

    class ImpliedMean(nn.Module):
        def forward(self, x, t):
            # t holds one timestep per run of points (the loss shares them); the schedule needs each point's.
            per_point = t.repeat_interleave(x.shape[0] // t.shape[0])
            return eps_model.schedule.mean_from_eps(x, eps_model.network(x, t), per_point)

    mean_model.network = ImpliedMean()
    x = torch.randn(128, 2)
    torch.manual_seed(7)
    a = eps_model.loss(x)
    torch.manual_seed(7)
    b = mean_model.loss(x)
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-5)


def test_bound_weight_is_inverse_twice_the_reverse_variance():
    model = small_ddpm(weighting="bound")
    t = torch.tensor([1, 2, 20])
    w = model.mean_weight(t)
    s = model.schedule
    assert float(w[0]) == pytest.approx(1 / (2 * float(s.beta2[1])))
    assert float(w[1]) == pytest.approx(1 / (2 * float(s.posterior_variance[2])))
    simple = small_ddpm().mean_weight(t)
    expected = (s.alpha[t] * s.sigma_bar[t] / s.beta2[t]) ** 2
    torch.testing.assert_close(simple, expected)


def test_nll_bound_of_exact_model_is_above_and_close_to_true_nll():
    """Gaussian data, the exact noise prediction and σ²_i = β²_i: the reverse chain is then the exact
    time reversal, so the bound is tight; with σ̃²_i it is a looser upper bound."""
    torch.manual_seed(0)
    loose = oracle_ddpm(1000, reverse_variance="posterior").double()
    loose.set_standardization(torch.tensor([1.0, 1.0]).double(), torch.tensor([2.0, 0.5]).double())
    model = oracle_ddpm(1000).double()
    x = torch.randn(4000, 2, dtype=torch.float64) * torch.tensor([2.0, 0.5], dtype=torch.float64) + 1.0
    model.set_standardization(torch.tensor([1.0, 1.0]).double(), torch.tensor([2.0, 0.5]).double())
    bound = float(model.nll_bound(x).mean())
    true = float(
        -torch.distributions.Normal(1.0, torch.tensor([2.0, 0.5]).double()).log_prob(x).sum(-1).mean()
    )
    assert bound >= true - 0.01
    assert bound == pytest.approx(true, abs=0.05)
    assert float(loose.nll_bound(x).mean()) > bound + 0.1
    estimate = float(model.nll_bound_estimate(x).mean())
    assert estimate == pytest.approx(bound, abs=0.1)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_tiny_schedules_train_and_sample(steps):
    model = small_ddpm(steps, beta2_end=0.5)
    x = torch.randn(64, 2)
    loss = model.loss(x)
    loss.backward()
    assert torch.isfinite(loss)
    traj = model.sample(50, generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert traj.shape == (steps + 1, 50, 2)
    assert torch.isfinite(traj).all()
    assert torch.isfinite(model.nll_bound(x)).all()


def test_last_reverse_step_adds_no_noise():
    model = small_ddpm(3, beta2_end=0.5)
    traj = model.sample(20, generator=torch.Generator().manual_seed(0), return_trajectory=True)
    x1 = model.standardize(traj[-2])[0]
    with torch.no_grad():
        mean = model.posterior_mean_prediction(x1, torch.ones(20, dtype=torch.long))
    torch.testing.assert_close(model.standardize.inverse(mean)[0], traj[-1], atol=1e-5, rtol=1e-5)


def test_sampling_is_deterministic_under_a_seed():
    model = small_ddpm()
    a = model.sample(100, generator=torch.Generator().manual_seed(3))
    b = model.sample(100, generator=torch.Generator().manual_seed(3))
    c = model.sample(100, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_ddim_with_all_steps_and_eta_one_matches_ancestral_in_distribution():
    model = oracle_ddpm(200)
    ddim = model.sample(20000, generator=torch.Generator().manual_seed(0), steps=50, eta=0.0)
    # The exact model of N(0, I) data: DDIM with any stride must return N(0, I).
    torch.testing.assert_close(ddim.mean(0), torch.zeros(2), atol=0.03, rtol=0)
    torch.testing.assert_close(ddim.std(0), torch.ones(2), atol=0.03, rtol=0)
    ancestral = model.sample(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ancestral.std(0), torch.ones(2), atol=0.03, rtol=0)


def test_forward_diffuse_to_the_end_is_standard_normal():
    model = small_ddpm(200, beta2_end=0.1)
    x = torch.randn(20000, 2) * 5 + 3
    model.set_standardization(x.mean(0), x.std(0))
    xl = model.forward_diffuse(x, 200)
    torch.testing.assert_close(xl.mean(0), torch.zeros(2), atol=0.05, rtol=0)
    torch.testing.assert_close(xl.std(0), torch.ones(2), atol=0.05, rtol=0)


def test_two_separated_gaussians_are_both_generated_in_proportion():
    torch.manual_seed(0)
    n = 4000
    left = torch.randn(int(0.3 * n), 2) * 0.3 + torch.tensor([-4.0, 0.0])
    right = torch.randn(n - len(left), 2) * 0.3 + torch.tensor([4.0, 0.0])
    data = torch.cat([left, right])
    config = DDPMModelConfig(
        diffusion_steps=100, beta2_start=1e-3, beta2_end=0.1, hidden_units=32, n_blocks=2
    )
    model = DDPM.from_config(config, 2)
    model.set_standardization(data.mean(0), data.std(0))
    training = TrainingConfig(epochs=60, batch_size=256, learning_rate=2e-3, lr_decay=0.98, ema_decay=0.99)
    trainer = Trainer(model, training, progress=False)
    trainer.fit(data)
    samples = trainer.ema.sample(4000, generator=torch.Generator().manual_seed(0))
    near_left = ((samples - torch.tensor([-4.0, 0.0])).norm(dim=1) < 1.5).float().mean()
    near_right = ((samples - torch.tensor([4.0, 0.0])).norm(dim=1) < 1.5).float().mean()
    assert float(near_left + near_right) > 0.9
    assert float(near_left / (near_left + near_right)) == pytest.approx(0.3, abs=0.06)


def test_data_units_bound_shifts_with_scale():
    """The bound is reported in the data's units: scaling data by 1000 adds D ln 1000."""
    torch.manual_seed(0)
    model = oracle_ddpm(100)
    x = torch.randn(2000, 2)
    model.set_standardization(torch.zeros(2), torch.ones(2))
    a = float(model.nll_bound(x).mean())
    model.set_standardization(torch.zeros(2), torch.full((2,), 1000.0))
    torch.manual_seed(0)
    b = float(model.nll_bound(x * 1000).mean())
    assert b - a == pytest.approx(2 * math.log(1000), abs=0.05)


def test_ddim_timesteps_linear_and_quadratic():
    from genmodels.models.ddpm import ddim_timesteps

    linear = ddim_timesteps(2500, 100, "linear")
    assert linear == torch.linspace(2500, 1, 100).round().long().tolist()
    quadratic = ddim_timesteps(2500, 100)
    assert len(quadratic) == 100 and quadratic[0] == 2500 and quadratic[-1] == 1
    gaps = -torch.diff(torch.tensor(quadratic, dtype=torch.float64))
    assert bool((gaps > 0).all())
    # dense near the data: the gaps shrink linearly towards i = 1 (2 (L - 1) / (S - 1)² per step)
    assert gaps[0] > 40 * gaps[-1]
    assert float(gaps[:-1].diff().mean()) == pytest.approx(-2 * 2499 / 99**2, rel=0.05)
    assert ddim_timesteps(10, 1) == [10]
    assert ddim_timesteps(5, 50) == [5, 4, 3, 2, 1]  # rounding duplicates are kept once
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(100, 10, "cosine")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ddim_timesteps(100, 0)


def test_network_with_shared_timesteps_equals_one_timestep_per_point():
    model = small_ddpm(steps=50)
    x = torch.randn(24, 2)
    shared = torch.tensor([3, 50, 17])
    per_point = shared.repeat_interleave(8)
    torch.testing.assert_close(model.network(x, shared), model.network(x, per_point), rtol=1e-6, atol=1e-6)
    # One timestep for all points broadcasts, as the sampler uses it.
    torch.testing.assert_close(
        model.network(x, shared[:1]), model.network(x, shared[:1].expand(24)), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="does not divide the 24 rows"):
        model.network(x, torch.tensor([1, 2, 3, 4, 5]))


@pytest.mark.parametrize("method", ["nll_bound", "nll_bound_estimate"])
def test_likelihood_bound_follows_its_generator(method):
    model = small_ddpm(steps=20)
    x = torch.randn(6, 2)
    bound = getattr(model, method)

    def seeded(seed: int) -> torch.Tensor:
        return bound(x, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(seeded(0), seeded(0), rtol=0, atol=0)
    assert not torch.allclose(seeded(0), seeded(1))
    torch.manual_seed(7)
    global_draws = bound(x)
    torch.manual_seed(7)
    torch.testing.assert_close(bound(x), global_draws, rtol=0, atol=0)


@pytest.mark.parametrize("input_embed_dim", [0, 6])
def test_precomputed_conditioning_equals_the_module_at_each_timestep(input_embed_dim):
    model = small_ddpm(steps=50, input_embed_dim=input_embed_dim, n_blocks=3)
    net = model.network
    timesteps = torch.tensor([50, 31, 7, 1])
    x = torch.randn(33, 2)
    conditioning = net.conditioning(net.time_table[timesteps])
    assert conditioning.shape == (4, 3, 16)
    for k in range(len(timesteps)):
        expected = net(x, timesteps[k : k + 1])
        with torch.inference_mode():  # the in-place activations compute the same function
            fast = net(x, timesteps[k : k + 1], conditioning=conditioning[k : k + 1])
        torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [None, 7])
def test_sampler_draws_the_same_points_as_with_a_plain_call_of_the_module(steps):
    model = small_ddpm(steps=30)

    class Plain(nn.Module):  # not a DenoisingNetwork: the sampler calls it as it is
        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return self.network(x, timestep)

    fast = model.sample(500, generator=torch.Generator().manual_seed(1), steps=steps)
    calls = []
    handle = model.network.register_forward_pre_hook(lambda module, args: calls.append(int(args[1][0])))
    hooked = model.sample(500, generator=torch.Generator().manual_seed(1), steps=steps)
    handle.remove()
    # A hook of the network's own sees every step.
    assert len(calls) == (steps or 30) and calls[-1] == 1
    torch.testing.assert_close(hooked, fast, rtol=0, atol=0)
    model.network = Plain(model.network)
    plain = model.sample(500, generator=torch.Generator().manual_seed(1), steps=steps)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("n", "share", "rows"), [(256, 8, 32), (12, 8, 3), (7, 8, 7), (40, 1, 40)])
def test_loss_draws_one_timestep_per_run_of_points(n, share, rows):
    """gcd(N, points_per_timestep) points share a draw, so a partial batch still works."""
    model = small_ddpm(points_per_timestep=share)
    seen = []
    network = model.network

    class Recording(nn.Module):
        def forward(self, x, t):
            seen.append((x.shape[0], t.shape[0]))
            return network(x, t)

    model.network = Recording()
    loss = model.loss(torch.randn(n, 2))
    assert seen == [(n, rows)]
    assert math.isfinite(float(loss.detach()))


def test_sharing_timesteps_leaves_the_expected_loss_unchanged():
    """Every point's timestep is still uniform: the mean loss over many draws matches per-point draws."""
    per_point = small_ddpm(steps=20, points_per_timestep=1)
    shared = small_ddpm(steps=20, points_per_timestep=16)
    shared.load_state_dict(per_point.state_dict())
    x = torch.randn(512, 2)
    torch.manual_seed(1)
    with torch.no_grad():
        a = torch.stack([per_point.loss(x) for _ in range(400)])
        b = torch.stack([shared.loss(x) for _ in range(400)])
    standard_error = math.sqrt(float(a.var() + b.var()) / 400)
    assert abs(float(a.mean() - b.mean())) < 4 * standard_error
    # Sharing makes single draws noisier (fewer distinct timesteps), not biased.
    assert float(b.var()) > float(a.var())


@pytest.mark.parametrize("value", [0, -1, 2.5, 8.0, True, "8", None])
def test_points_per_timestep_is_validated(value):
    with pytest.raises(ValueError, match="points_per_timestep must be an integer >= 1"):
        DDPM(2, steps=10, beta2_start=1e-3, beta2_end=0.1, network=nn.Identity(), points_per_timestep=value)


def test_points_per_timestep_config_check_names_the_key():
    with pytest.raises(ValueError, match=r"points_per_timestep\n.*greater than or equal to 1.*input_value=0"):
        DDPMModelConfig(points_per_timestep=0)


def test_builders_reject_a_dict_config_and_a_bad_dimension():
    with pytest.raises(
        TypeError, match=re.escape("config must be a DDPMModelConfig, got dict (build one with")
    ):
        DDPM.from_config({"diffusion_steps": 10}, 2)
    for dim in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="dim \\(the data dimension\\) must be a whole number >= 1"):
            DDPM.from_config(DDPMModelConfig(diffusion_steps=10), dim)
    with pytest.raises(
        TypeError, match=re.escape("config must be a TrainingConfig, got dict (build one with")
    ):
        Trainer(small_ddpm(), {"epochs": 2})


def test_loss_of_an_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="empty batch"):
        small_ddpm().loss(torch.zeros(0, 2))


def test_sampler_and_trainer_arguments_are_checked():
    model = small_ddpm(10)
    for steps in (0, 11, 50, 2.5, True, "5", np.float64(5.0)):
        with pytest.raises(ValueError, match=r"steps must be a whole number in 1\.\.10"):
            model.sample(4, steps=steps)
    for eta in (-0.1, 5.0, "0.5", math.nan, True, torch.tensor([0.1, 0.2])):
        with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
            model.sample(4, steps=5, eta=eta)
    for order in (0, 3, "2"):
        with pytest.raises(ValueError, match="order must be 1 or 2"):
            model.sample(4, steps=5, order=order)
    with pytest.raises(ValueError, match="spacing .*'cubic'"):
        model.sample(4, spacing="cubic")
    # NumPy and tensor numbers, as a loop over an array gives them, are numbers.
    generated = model.sample(
        4, steps=np.int64(5), eta=np.float32(0.5), generator=torch.Generator().manual_seed(2)
    )
    plain = model.sample(4, steps=5, eta=0.5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(generated, plain, rtol=0, atol=0)
    assert model.sample(4, steps=torch.tensor(5), eta=torch.tensor(0.0)).shape == (4, 2)
    assert model.sample(4, steps=10).shape == (4, 2)
    assert small_ddpm(10).double().sample(3, steps=5).dtype == torch.float64
    # A config checks its values when it is built (tests/test_config.py), before a model or trainer sees it.
    for cls, bad in ((DDPMModelConfig, {"diffusion_steps": 0}), (TrainingConfig, {"batch_size": -1}),
                     (TrainingConfig, {"learning_rate": float("inf")}), (TrainingConfig, {"epochs": True})):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            cls(**bad)


def test_models_check_their_inputs_and_the_trainer_its_data() -> None:
    """Wrong shapes, dtypes, empty batches, negative counts and non-finite training data get errors
    that name what was expected, from both models and the trainer alike."""
    from genmodels.errors import TrainingError
    from genmodels.models.realnvp import RealNVP

    ddpm = small_ddpm(10)
    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    for method in (ddpm.nll_bound, ddpm.nll_bound_estimate, ddpm.loss):
        with pytest.raises(ValueError, match=re.escape("x0 must have shape (N, 2), got (4, 3)")):
            method(torch.randn(4, 3))
        with pytest.raises(ValueError, match="x0 is torch.float64 but the model computes in torch.float32"):
            method(torch.randn(4, 2, dtype=torch.float64))
    for model in (ddpm, flow):
        with pytest.raises(ValueError, match="the loss needs at least one point"):
            model.loss(torch.zeros(0, 2))
        for n in (-1, 2.5, True):
            with pytest.raises(ValueError, match="number of samples must be a whole number >= 0"):
                model.sample(n)
        assert model.sample(0).shape == (0, 2)
        assert model.sample(np.int64(3)).shape == model.sample(torch.tensor(3)).shape == (3, 2)
    assert ddpm.nll_bound_estimate(torch.zeros(0, 2)).shape == (0,)
    assert TrainingConfig(epochs=np.int64(2), learning_rate=np.float32(1e-3)).epochs == 2
    config = TrainingConfig(epochs=1, batch_size=32)
    data = torch.randn(100, 2)
    data[[7, 40]] = math.nan
    with pytest.raises(TrainingError, match="non-finite values .* in 2 of 100 rows, the first at row 7"):
        Trainer(flow, config, progress=False).fit(data)
    with pytest.raises(ValueError, match="the training data have 3 columns but the model takes 2"):
        Trainer(flow, config, progress=False).fit(torch.randn(100, 3))
    with pytest.raises(ValueError, match=re.escape("shape (N, D), got (100,)")):
        Trainer(ddpm, config, progress=False).fit(torch.randn(100))


def test_reverse_step_hook_sees_every_step_and_must_be_callable() -> None:
    model = DDPM.from_config(DDPMModelConfig(diffusion_steps=6, hidden_units=8, n_blocks=1), dim=2)
    seen = []
    handle = model.register_reverse_step_hook(lambda x, t: seen.append((tuple(x.shape), int(t))))
    model.sample(3, generator=torch.Generator().manual_seed(0))
    assert seen == [((3, 2), i) for i in range(6, 0, -1)]
    handle.remove()
    model.sample(3)
    assert len(seen) == 6
    with pytest.raises(TypeError, match="hook must be callable as hook\\(x_i, timestep\\), got int"):
        model.register_reverse_step_hook(3)


class TailBlunder(nn.Module):
    """A deliberately poor ε̂: right in the bulk (standard normal data), off by 100 where |x| > 2."""

    def __init__(self, sigma_bar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sigma_bar", sigma_bar)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.sigma_bar[timestep][:, None] * x + 100.0 * (x.abs() > 2).float()


def test_loss_learns_the_samplers_bound_in_training_mode_only():
    model = small_ddpm()
    assert model.sample_x0_bound() is None  # no data seen yet: nothing to clip to
    data = torch.randn(256, 2) * torch.tensor([1.0, 3.0]) + 5.0
    model.set_standardization(data.mean(0), data.std(0))
    model.eval()
    model.loss(data)
    assert model.sample_x0_bound() is None
    model.train()
    model.loss(data[:128])
    model.loss(data[128:])
    z = (data - data.mean(0)) / data.std(0)
    torch.testing.assert_close(model.x0_max_abs, z.abs().amax(0))
    torch.testing.assert_close(model.sample_x0_bound(), 1.5 * z.abs().amax(0))
    assert "x0_max_abs" in model.state_dict()
    # A checkpoint written before the bound existed loads with none: its samplers clip nothing.
    old = {k: v for k, v in model.state_dict().items() if k != "x0_max_abs"}
    fresh = small_ddpm()
    fresh.load_state_dict(old)
    assert fresh.sample_x0_bound() is None
    model.clip_x0 = False
    assert model.sample_x0_bound() is None


@pytest.mark.parametrize(("steps", "eta"), [(None, 1.0), (10, 0.0), (10, 1.0)])
def test_samplers_fed_a_poor_eps_in_the_tails_stay_finite_and_inside_the_bound(steps, eta):
    model = oracle_ddpm(200)
    model.network = TailBlunder(model.schedule.sigma_bar.clone())
    model.set_standardization(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    model.x0_max_abs.copy_(torch.tensor([3.0, 4.0]))
    model.clip_x0 = False
    wild = model.sample(2000, generator=torch.Generator().manual_seed(0), steps=steps, eta=eta)
    assert wild.abs().max() > 100  # the defect the bound is for
    model.clip_x0 = True
    x = model.sample(2000, generator=torch.Generator().manual_seed(0), steps=steps, eta=eta)
    z = (x - model.standardize.mean) / model.standardize.std
    assert torch.isfinite(x).all()
    assert (z.abs() <= 1.5 * torch.tensor([3.0, 4.0]) + 1e-5).all()


def test_clipping_leaves_the_likelihoods_alone():
    model = small_ddpm(30)
    x = torch.randn(64, 2)
    before = model.nll_bound(x, generator=torch.Generator().manual_seed(0))
    model.x0_max_abs.fill_(1e-3)  # a bound that would clip nearly everything
    after = model.nll_bound(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_held_out_bound_is_repeatable_and_its_se_covers_the_full_bound():
    model = small_ddpm(steps=20)
    x = torch.randn(400, 2)
    first, second = model.held_out_metrics(x), model.held_out_metrics(x)
    assert first == second  # the same draws at every call
    estimate = model.nll_bound_estimate(x, generator=torch.Generator().manual_seed(0)).double()
    assert first["test_nll_bound"] == pytest.approx(float(estimate.mean()), rel=1e-12)
    assert first["test_nll_bound_se"] == pytest.approx(float(estimate.std() / 20), rel=1e-9)
    full = float(model.nll_bound(x, generator=torch.Generator().manual_seed(1)).mean())
    assert abs(full - first["test_nll_bound"]) < 4 * first["test_nll_bound_se"] + 0.05
