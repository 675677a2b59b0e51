"""RealNVP mathematics: invertibility, log-determinants against autograd, densities, units."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from genmodels.models.realnvp import ActNorm, AffineCoupling, RealNVP, standard_normal_log_prob


def perturbed_flow(dim: int, *, seed: int = 0, scale: float = 0.1, **kwargs) -> RealNVP:
    """A flow whose every weight has been moved away from the identity initialisation."""
    torch.manual_seed(seed)
    flow = RealNVP(dim, **kwargs)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
        flow.set_standardization(torch.randn(dim), torch.rand(dim) + 0.5)
    return flow.eval()


def test_new_flow_is_standardisation_only():
    flow = RealNVP(3, n_coupling_layers=4, hidden_units=16)
    mean, std = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 2.0, 4.0])
    flow.set_standardization(mean, std)
    x = torch.randn(10, 3)
    z, log_det = flow(x)
    torch.testing.assert_close(z, (x - mean) / std)
    torch.testing.assert_close(log_det, torch.full((10,), -float(torch.log(std).sum())))


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_inverse_of_forward_after_perturbation(dim):
    flow = perturbed_flow(dim, n_coupling_layers=6, hidden_units=32, actnorm=True, scale=0.05)
    x = torch.randn(256, dim)
    z, _ = flow(x)
    assert (z - (x - flow.standardize.mean) / flow.standardize.std).abs().max() > 0.1
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-5, rtol=0)
    w = torch.randn(256, dim)
    torch.testing.assert_close(flow(flow.inverse(w))[0], w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_inverse_of_strongly_perturbed_flow_in_float64(dim):
    flow = perturbed_flow(dim, n_coupling_layers=8, hidden_units=32, actnorm=True, scale=0.15).double()
    x = torch.randn(256, dim, dtype=torch.float64)
    z, _ = flow(x)
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_log_det_matches_autograd_jacobian(dim):
    flow = perturbed_flow(dim, n_coupling_layers=5, hidden_units=24, actnorm=True).double()
    x = torch.randn(6, dim, dtype=torch.float64)
    _, log_det = flow(x)
    for k in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[k])
        expected = torch.linalg.slogdet(jac).logabsdet
        assert float(log_det[k].detach()) == pytest.approx(float(expected), abs=1e-9)


def test_coupling_inverse_log_det_is_negative_forward():
    torch.manual_seed(1)
    layer = AffineCoupling(3, 1, n_hidden=2, hidden_units=16, scale_clamp=2.0)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(50, 3)
    y, ld = layer(x)
    back, ld_inv = layer.inverse(y)
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ld_inv, -ld)
    # The kept half passes through unchanged (parity 1 keeps the last coordinates).
    torch.testing.assert_close(y[:, 1:], x[:, 1:])
    # The soft clamp bounds the log-scale.
    _, log_scale = layer.shift_and_log_scale(100 * torch.randn(1000, 2))
    assert float(log_scale.detach().abs().max()) <= 2.0


def test_log_prob_integrates_to_one_on_a_grid():
    flow = perturbed_flow(2, n_coupling_layers=4, hidden_units=16, scale=0.2).double()
    flow.set_standardization(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    grid = torch.linspace(-12, 12, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xx.ravel(), yy.ravel()], 1)
    with torch.no_grad():
        density = flow.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert float(density) == pytest.approx(1.0, abs=2e-3)


def test_sample_is_inverse_of_base_sample():
    flow = perturbed_flow(2, n_coupling_layers=4, hidden_units=16)
    x = flow.sample(500, generator=torch.Generator().manual_seed(3))
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x, flow.inverse(z))
    assert x.shape == (500, 2) and torch.isfinite(x).all()


def test_actnorm_initialises_from_first_batch_and_inverts():
    layer = ActNorm(2)
    x = torch.randn(1000, 2) * torch.tensor([3.0, 0.1]) + torch.tensor([5.0, -1.0])
    layer.train()
    y, log_det = layer(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(layer.inverse(y)[0], x, atol=1e-4, rtol=0)
    assert float(log_det[0].detach()) == pytest.approx(-math.log(float(x.std(0).prod())), rel=1e-4)


def test_actnorm_reads_its_flag_until_initialised_and_again_after_loading(monkeypatch):
    torch.manual_seed(0)
    layer = ActNorm(2).train()
    fresh = ActNorm(2).state_dict()
    layer(torch.randn(100, 2) * 4.0)
    scale = layer.log_scale.detach().clone()
    reads = []
    real_bool = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or real_bool(t))
    layer(torch.randn(100, 2))  # a later batch neither re-initialises nor waits for the device flag
    assert reads == [] and torch.equal(layer.log_scale.detach(), scale)
    layer.load_state_dict(fresh)  # an uninitialised state: the next training batch initialises again
    layer(torch.randn(1000, 2) * 0.5)
    assert reads == [1]
    torch.testing.assert_close(layer.log_scale.detach(), torch.full((2,), math.log(2.0)), atol=0.1, rtol=0)


def fit_flow(data: torch.Tensor, *, epochs: int = 150, seed: int = 0) -> RealNVP:
    from genmodels.config import TrainingConfig
    from genmodels.train.trainer import Trainer

    torch.manual_seed(seed)
    flow = RealNVP(2, n_coupling_layers=4, n_hidden=1, hidden_units=32)
    flow.set_standardization(data.mean(0), data.std(0))
    config = TrainingConfig(epochs=epochs, batch_size=512, learning_rate=3e-3, lr_decay=0.99, ema_decay=0.0)
    Trainer(flow, config, progress=False).fit(data)
    return flow


def test_a_finished_trainer_warns_instead_of_training_and_leaves_both_models_in_eval_mode(caplog):
    from genmodels.config import TrainingConfig
    from genmodels.train.trainer import Trainer

    torch.manual_seed(0)
    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    trainer = Trainer(flow, TrainingConfig(epochs=2, batch_size=64, ema_decay=0.9), progress=False)
    data = torch.randn(200, 2)
    trainer.fit(data)
    assert trainer.epoch == 2 and not trainer.model.training and not trainer.ema.training
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.model.train()
    with caplog.at_level("WARNING", logger="genmodels.train.trainer"):
        trainer.fit(data)
    assert "nothing to train: the model has already been trained for 2 epochs" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters(), strict=True))
    assert trainer.epoch == 2 and not trainer.model.training and not trainer.ema.training


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_training_unstandardised_data_draws_a_warning(caplog, model_type):
    from genmodels.config import DDPMModelConfig, TrainingConfig
    from genmodels.models.ddpm import DDPM
    from genmodels.train.trainer import Trainer

    def train(model: torch.nn.Module, data: torch.Tensor) -> str:
        caplog.clear()
        with caplog.at_level("WARNING", logger="genmodels.train.trainer"):
            Trainer(model, TrainingConfig(epochs=1, batch_size=64), progress=False).fit(data)
        return caplog.text

    def build() -> torch.nn.Module:
        if model_type == "realnvp":
            return RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
        return DDPM.from_config(DDPMModelConfig(diffusion_steps=10, hidden_units=8, n_blocks=1), dim=2)

    ring = 40 * torch.randn(200, 2) + torch.tensor([100.0, 0.0])  # the B10 case's scale
    text = train(build(), ring)
    assert "have means " in text and "call model.set_standardization(data.mean(0), data.std(0))" in text
    model = build()
    model.set_standardization(ring.mean(0), ring.std(0))
    assert train(model, ring) == ""
    assert train(build(), torch.randn(200, 2)) == ""  # already near mean 0 and deviation 1


def test_constructor_and_standardization_arguments_are_checked():
    for kwargs, needle in (
        ({"n_coupling_layers": 0}, "n_coupling_layers must be a whole number >= 1, got 0"),
        ({"n_coupling_layers": -1}, "n_coupling_layers must be a whole number >= 1, got -1"),
        ({"hidden_units": 0}, "hidden_units must be a whole number >= 1, got 0"),
        ({"n_hidden": 2.0}, "n_hidden must be a whole number >= 0, got 2.0"),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            RealNVP(2, **kwargs)
    for dim in (2.5, "2", 1, True):
        with pytest.raises(ValueError, match=rf"^dim .*2.*{re.escape(repr(dim))}$"):
            RealNVP(dim)
    for clamp in (0, -1.0, float("inf"), "3"):  # 0 gave nan log-densities
        with pytest.raises(
            ValueError, match=re.escape(f"scale_clamp must be a finite number > 0, got {clamp!r}")
        ):
            RealNVP(2, scale_clamp=clamp)
    assert len(RealNVP(2, n_coupling_layers=np.int64(3), hidden_units=8).layers) == 3
    flow = RealNVP(3, n_coupling_layers=2, hidden_units=8)
    flow.set_standardization(np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 4.0])  # NumPy and lists are numbers
    torch.testing.assert_close(flow.standardize.std, torch.tensor([1.0, 2.0, 4.0]))
    for mean, std, needle in (
        (torch.zeros(2), torch.ones(3), "^mean .*3"),
        (torch.zeros(3), torch.ones(3, 1), "^std .*3"),
        (torch.zeros(3), ["a", "b", "c"], "^std .*3"),
        (torch.tensor([0.0, math.nan, 0.0]), torch.ones(3), "^mean .*finite"),
        (torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), "standard deviations must be positive"),
    ):
        with pytest.raises(ValueError, match=needle):
            flow.set_standardization(mean, std)
    torch.testing.assert_close(flow.standardize.std, torch.tensor([1.0, 2.0, 4.0]))  # unchanged


def test_fit_to_gaussian_matches_analytic_log_prob():
    torch.manual_seed(0)
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]])
    mean = torch.tensor([3.0, -1.0])
    gaussian = torch.distributions.MultivariateNormal(mean, cov)
    data = gaussian.sample((4000,))
    flow = fit_flow(data, epochs=60)
    test = gaussian.sample((4000,))
    with torch.no_grad():
        model_nll = float(-flow.log_prob(test).mean())
    true_nll = float(-gaussian.log_prob(test).mean())
    assert model_nll == pytest.approx(true_nll, abs=0.05)
    # Pointwise agreement in the bulk of the distribution.
    bulk = gaussian.sample((200,))
    with torch.no_grad():
        diff = (flow.log_prob(bulk) - gaussian.log_prob(bulk)).abs().median()
    assert float(diff) < 0.1


def test_nll_shifts_by_dim_log_scale_when_data_are_scaled():
    """Density units: data multiplied by 1000 have an NLL larger by 2 ln 1000 (D = 2)."""
    torch.manual_seed(0)
    data = torch.distributions.MultivariateNormal(
        torch.zeros(2), torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    ).sample((2000,))
    nll = {}
    for scale in (1.0, 1000.0):
        flow = fit_flow(data * scale, epochs=20, seed=0)
        with torch.no_grad():
            nll[scale] = float(-flow.log_prob(data * scale).mean())
    assert nll[1000.0] - nll[1.0] == pytest.approx(2 * math.log(1000.0), abs=1e-3)


def test_standard_normal_log_prob():
    z = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    expected = [-math.log(2 * math.pi), -math.log(2 * math.pi) - 2.5]
    np.testing.assert_allclose(standard_normal_log_prob(z).numpy(), expected, rtol=1e-6)


def test_rejects_one_dimensional_data():
    with pytest.raises(ValueError, match="dim .*>= 2"):
        RealNVP(1)


@settings(max_examples=25, deadline=None)
@given(
    dim=st.integers(2, 6),
    layers=st.integers(1, 5),
    width=st.integers(1, 24),
    hidden=st.integers(0, 2),
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 0.5),
)
def test_property_invertible_with_exact_log_det(dim, layers, width, hidden, seed, scale):
    flow = perturbed_flow(
        dim, seed=seed, scale=scale, n_coupling_layers=layers, n_hidden=hidden, hidden_units=width
    ).double()
    x = torch.randn(4, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    jacobians = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], row) for row in x]
    )
    # float64's round-off (1e-16) times the condition number bounds the round trip's error: 1e-7 holds
    # below 1e9 (a few random flows with scale 0.5 reach 1e11, and lose 1e-6 there)
    assume(float(torch.linalg.cond(jacobians).max()) < 1e9)
    with torch.no_grad():
        z, log_det = flow(x)
        torch.testing.assert_close(flow.inverse(z), x, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(jacobians).logabsdet, atol=1e-7, rtol=0)


def test_points_of_the_wrong_shape_or_dtype_are_named():
    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    for bad in (torch.zeros(2), torch.zeros(4, 3), torch.zeros(1, 4, 2)):
        with pytest.raises(ValueError, match=r"x must have shape \(N, 2\), got"):
            flow.log_prob(bad)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor of shape \(N, 2\), got list"):
        flow.log_prob([[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"z must have shape \(N, 2\)"):
        flow.inverse(torch.zeros(3))
    with pytest.raises(ValueError, match=r"x is torch.float64 but the flow computes in torch.float32"):
        flow.log_prob(torch.zeros(4, 2, dtype=torch.float64))
    assert flow.double().log_prob(torch.zeros(4, 2, dtype=torch.float64)).shape == (4,)
    assert flow.sample(3).dtype == torch.float64


def test_sample_model_warns_about_samples_far_outside_the_data(caplog, monkeypatch) -> None:
    from genmodels.evaluation.sampling import sample_model

    flow = RealNVP(2, n_coupling_layers=2, hidden_units=8)
    flow.set_standardization(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5]))
    with caplog.at_level("WARNING", logger="genmodels.run"):
        sample_model(flow, 500, seed=0)  # an untrained flow: standard normal in standardised units
        assert not caplog.records
        far = torch.tensor([[1.0, -1.0], [1.0 + 2.0 * 60, -1.0], [1.0, -1.0 - 0.5 * 1e4]])
        monkeypatch.setattr(flow, "sample", lambda n, generator=None: far[:n])
        assert sample_model(flow, 3, seed=0).shape == (3, 2)
    (record,) = caplog.records
    assert "2 of 3 samples lie more than 50 training standard deviations" in record.getMessage()
    assert "(up to 1e+04)" in record.getMessage()


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_weights_are_counted_from_the_config_and_huge_networks_refused(tmp_path, model_type):
    from genmodels.config import config_from_dict
    from genmodels.errors import ConfigError
    from genmodels.models.resources import physical_memory
    from genmodels.train.checkpoint import build_model, parameter_count

    for extra in ({}, {"hidden_units": 16, "n_hidden": 3} if model_type == "realnvp" else {"n_blocks": 2}):
        config = config_from_dict({"model": extra}, model_type)
        for dim in (2, 3, 6):
            weights = sum(p.numel() for p in build_model(config, dim).parameters())
            assert parameter_count(config, dim) == pytest.approx(weights, rel=0.05)  # biases aside
    if physical_memory() is None:
        pytest.skip("the platform does not tell its memory")
    huge = config_from_dict({"model": {"hidden_units": 10**10}}, model_type)
    with pytest.raises(
        ConfigError, match=r"model \(.*hidden_units\): training a network of .* weights needs "
    ):
        build_model(huge, 2)


def test_sampling_more_points_than_memory_holds_is_refused_at_once():
    from genmodels.config import DDPMModelConfig
    from genmodels.models.ddpm import DDPM

    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    ddpm = DDPM.from_config(DDPMModelConfig(diffusion_steps=10, hidden_units=8, n_blocks=1), dim=2)
    for model in (flow, ddpm):
        with pytest.raises(
            ValueError, match=r"drawing 10000000000000 samples of 2 values at once needs about"
        ):
            model.sample(10**13)
        assert model.sample(3).shape == (3, 2)


def test_trainer_names_a_wrong_model_or_data_dtype():
    from genmodels.config import TrainingConfig
    from genmodels.train.trainer import Trainer

    with pytest.raises(TypeError, match="model must be an nn.Module with a loss"):
        Trainer(None, TrainingConfig())  # type: ignore[arg-type]
    trainer = Trainer(
        RealNVP(2, n_coupling_layers=2, hidden_units=8), TrainingConfig(epochs=1), progress=False
    )
    with pytest.raises(ValueError, match=r"the training data are torch.float64 but the model computes in "):
        trainer.fit(torch.randn(100, 2, dtype=torch.float64))
    assert trainer.epoch == 0


@pytest.mark.parametrize("progress", [True, False])
def test_sample_model_counts_the_points_drawn_on_a_progress_bar(progress: bool, monkeypatch) -> None:
    import tqdm.auto

    from genmodels.evaluation.sampling import sample_model

    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.shown, self.counted = not kwargs["disable"], []
            bars.append(self)

        def update(self, n: int = 1) -> None:
            self.counted.append(n)
            super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    flow = RealNVP(2, n_coupling_layers=2, hidden_units=8)
    assert sample_model(flow, 1000, seed=0, chunk_size=300, progress=progress).shape == (1000, 2)
    (bar,) = bars
    assert bar.total == 1000 and bar.counted == [300, 300, 300, 100] and bar.shown is progress
