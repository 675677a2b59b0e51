"""Conditional models: RealNVP with a label context, DDPM with a null token and classifier-free guidance."""

from __future__ import annotations

import pytest
import torch

from genmodels.models.ddpm import DDPM, DDPMModelConfig, DenoisingNetwork
from genmodels.models.realnvp import RealNVP, RealNVPModelConfig


def _randomised(model: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """``model`` with every weight drawn at random (a new flow is the identity for every label)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model


def _flow(n_labels: int = 3, scale: float = 0.3) -> RealNVP:
    flow = RealNVP(2, n_coupling_layers=4, n_hidden=1, hidden_units=16, n_labels=n_labels)
    return _randomised(flow, scale)


def test_conditional_flow_inverts_and_its_log_det_is_the_jacobian_s() -> None:
    flow = _flow().double()
    x = torch.randn(6, 2, dtype=torch.float64)
    label = torch.tensor([0, 1, 2, 0, 1, 2])
    z, log_det = flow(x, label)
    torch.testing.assert_close(flow.inverse(z, label), x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: flow(v[None], label[i : i + 1])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jac)[1])
    assert not torch.allclose(flow(x, 0)[0], flow(x, 1)[0])  # the label changes the bijection


def test_conditional_log_prob_normalises_for_every_label() -> None:
    flow = _flow(scale=0.15)
    grid = torch.linspace(-10, 10, 401)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], 1)
    cell = float(grid[1] - grid[0]) ** 2
    with torch.no_grad():
        masses = [float(flow.log_prob(points, y).exp().sum()) * cell for y in range(3)]
        marginal = float(flow.log_prob(points).exp().sum()) * cell
    assert masses == pytest.approx([1.0] * 3, abs=0.02)
    assert marginal == pytest.approx(1.0, abs=0.02)


def test_marginal_log_prob_mixes_the_labels_in_their_proportions() -> None:
    flow = _flow()
    flow.label_proportions.copy_(torch.tensor([0.5, 0.3, 0.2]))
    x = torch.randn(5, 2)
    per_label = torch.stack([flow.log_prob(x, y).exp() for y in range(3)], 1)
    torch.testing.assert_close(flow.log_prob(x).exp(), per_label @ flow.label_proportions)


def test_unconditional_models_keep_their_state_dicts() -> None:
    flow = RealNVP.from_config(RealNVPModelConfig(n_coupling_layers=2, n_hidden=1, hidden_units=8), 2)
    assert sorted(flow.state_dict()) == sorted(
        ["standardize.mean", "standardize.std"]
        + [f"layers.{i}.net.{j}.{p}" for i in range(2) for j in (0, 2) for p in ("weight", "bias")]
    )
    assert flow.layers[0].net[0].in_features == 1
    ddpm = DDPM.from_config(DDPMModelConfig(diffusion_steps=10, n_blocks=1, hidden_units=8), 2)
    assert not any("label" in key for key in ddpm.state_dict())
    assert not hasattr(ddpm.network, "label_embedding")


def _ddpm(p_uncond: float = 0.1, n_labels: int = 3) -> DDPM:
    config = DDPMModelConfig(diffusion_steps=20, n_blocks=2, hidden_units=16, time_embed_dim=8,
                             n_labels=n_labels, p_uncond=p_uncond, points_per_timestep=1)  # fmt: skip
    return _randomised(DDPM.from_config(config, 2))


def test_ddpm_with_p_uncond_1_ignores_labels() -> None:
    x = torch.randn(32, 2)
    losses = {}
    for p_uncond in (1.0, 0.0):
        model = _ddpm(p_uncond)
        for name, label in (("a", torch.zeros(32, dtype=torch.long)), ("b", torch.arange(32) % 3)):
            torch.manual_seed(5)
            losses[p_uncond, name] = float(model.loss(x, label).detach())
    assert losses[1.0, "a"] == losses[1.0, "b"]
    assert losses[0.0, "a"] != losses[0.0, "b"]


@pytest.mark.parametrize("steps", [None, 5])
def test_guidance_scale_1_is_conditional_and_0_unconditional(steps: int | None) -> None:
    model = _ddpm().eval()

    def draw(**options: object) -> torch.Tensor:
        return model.sample(16, generator=torch.Generator().manual_seed(3), steps=steps, **options)

    conditional, unconditional = draw(label=1), draw()
    torch.testing.assert_close(draw(label=1, guidance_scale=1.0), conditional, rtol=0, atol=0)
    torch.testing.assert_close(draw(label=1, guidance_scale=0.0), unconditional, rtol=0, atol=0)
    sharper = draw(label=1, guidance_scale=3.0)
    assert not torch.allclose(sharper, conditional) and not torch.allclose(conditional, unconditional)


def test_guided_output_is_the_guidance_formula() -> None:
    model = _ddpm().eval()
    x, label, timestep = torch.randn(8, 2), torch.arange(8) % 3, torch.tensor([7])
    with torch.no_grad():
        at = lambda x, y: model.network(x, timestep, y)  # noqa: E731
        guided = model.guided_output(x, timestep, label, 2.5, at)
        expected = at(x, None) + 2.5 * (at(x, label) - at(x, None))
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-5)


def test_precomputed_conditioning_takes_labels() -> None:
    network = _randomised(DenoisingNetwork(2, 20, hidden_units=16, n_blocks=2, time_embed_dim=8, n_labels=3))
    x, label, timesteps = torch.randn(9, 2), torch.arange(9) % 3, torch.tensor([20, 11, 1])
    with torch.no_grad():
        cond = network.conditioning(network.time_table[timesteps])
        for k in range(3):
            t = timesteps[k : k + 1]
            for y in (label, None):
                expected = network(x, t.expand(9), y)  # one timestep per point, nothing shared
                torch.testing.assert_close(network(x, t, y, conditioning=cond[k : k + 1]), expected)
        assert not torch.allclose(network(x, t, label), network(x, t))


def test_conditional_likelihoods_take_labels() -> None:
    model = _ddpm().eval()
    x, label = torch.randn(6, 2), torch.arange(6) % 3
    bound = model.nll_bound(x, label=label, generator=torch.Generator().manual_seed(0))
    assert bound.shape == (6,) and torch.isfinite(bound).all()
    flow = _flow()
    torch.testing.assert_close(
        flow.held_out_metrics(x, label)["test_nll"], float(-flow.log_prob(x, label).mean())
    )


@pytest.mark.parametrize("bad", [3, -1, torch.tensor([0.5] * 4), torch.zeros(3, dtype=torch.long)])
def test_models_refuse_labels_they_cannot_take(bad: object) -> None:
    with pytest.raises(ValueError, match="label"):
        _flow().sample(4, label=bad)
    with pytest.raises(ValueError, match="label"):
        _ddpm().sample(4, label=bad)


def test_unconditional_models_refuse_labels() -> None:
    with pytest.raises(ValueError, match="without labels"):
        _flow(0).sample(4, label=1)
    with pytest.raises(ValueError, match="without labels"):
        _ddpm(n_labels=0).loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


def test_parameter_counts_include_the_label_embeddings() -> None:
    from genmodels.models import get_spec

    for name, config in (("realnvp", RealNVPModelConfig(n_coupling_layers=2, hidden_units=8, n_labels=4)),
                         ("ddpm", DDPMModelConfig(diffusion_steps=10, hidden_units=8, n_blocks=2, n_labels=4))):  # fmt: skip
        model = get_spec(name).model_class.from_config(config, 2)
        assert get_spec(name).parameter_count(config, 2) == sum(p.numel() for p in model.parameters())


def test_the_probability_flow_ode_is_given_the_label() -> None:
    from genmodels.models import get_spec

    model, x = _ddpm().eval(), torch.randn(4, 2)
    ode = get_spec("ddpm").likelihoods["ode"]
    given = ode(model, x, None, torch.tensor([0, 1, 2, 0]))
    per_label = torch.stack([ode(model, x, None, torch.full((4,), y)) for y in range(3)], 1)
    torch.testing.assert_close(
        given, per_label[torch.arange(4), torch.tensor([0, 1, 2, 0])], rtol=1e-3, atol=3e-3
    )
    assert not torch.allclose(per_label[:, 0], per_label[:, 1])
    assert not model.network._forward_pre_hooks  # the label's hook is removed afterwards
