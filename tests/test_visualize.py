"""Tests for genmodels.plots.arrays: the arrays behind the model figures, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmodels.data import make_text
from genmodels.models.ddpm import DDPM, DenoisingNetwork
from genmodels.models.realnvp import RealNVP
from genmodels.plots import arrays as V
from genmodels.plots.report import glyph_colouring


def tiny_flow(dim: int = 2) -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(dim, n_coupling_layers=4, n_hidden=1, hidden_units=8)
    for p in flow.parameters():  # leave the identity start so the couplings do something
        torch.nn.init.normal_(p, std=0.3)
    flow.set_standardization(torch.full((dim,), 0.5), torch.full((dim,), 2.0))
    return flow.eval()


def tiny_ddpm(dim: int = 2, steps: int = 20) -> DDPM:
    torch.manual_seed(0)
    net = DenoisingNetwork(dim, steps, hidden_units=16, n_blocks=1, time_embed_dim=8)
    for p in net.output.parameters():
        torch.nn.init.normal_(p, std=0.1)
    model = DDPM(dim, steps=steps, beta2_start=1e-3, beta2_end=0.2, network=net)
    model.set_standardization(torch.full((dim,), 1.0), torch.full((dim,), 3.0))
    return model.eval()


def test_log_density_on_grid_matches_log_prob() -> None:
    flow = tiny_flow()
    grid = np.random.default_rng(0).normal(size=(50, 2))
    values = V.log_density_on_grid(flow, grid, batch_size=7)
    expected = flow.log_prob(torch.as_tensor(grid, dtype=torch.float32)).detach().double().numpy()
    assert values.shape == (50,)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)


def test_grid_lines_cover_the_box() -> None:
    lines = V.grid_lines((-1.0, 2.0, 0.0, 1.0), n_lines=5, n_points=11)
    assert lines.shape == (10, 11, 2)
    assert np.allclose(lines[:5, :, 0], np.linspace(-1, 2, 5)[:, None])  # vertical: constant x
    assert np.allclose(lines[5:, :, 1], np.linspace(0, 1, 5)[:, None])  # horizontal: constant y
    with pytest.raises(ValueError):
        V.grid_lines((0, 1, 0, 1), n_lines=1)


def test_warped_grid_stages() -> None:
    flow = tiny_flow()
    points = np.random.default_rng(1).normal(size=(30, 2))
    warped = V.warped_grid(flow, (-2.0, 2.0, -2.0, 2.0), points=points, n_panels=4, n_lines=6, n_points=9)
    titles, grids, moved = zip(*warped, strict=True)
    assert len(titles) == len(grids) == len(moved) == 4
    assert titles[0] == "data space x" and titles[-1].startswith("latent z")
    np.testing.assert_allclose(grids[0], V.grid_lines((-2, 2, -2, 2), n_lines=6, n_points=9), atol=1e-6)
    np.testing.assert_allclose(moved[0], points, atol=1e-6)
    np.testing.assert_allclose(moved[-1], V.latent(flow, points), atol=1e-5)
    assert all(lines.shape == (12, 9, 2) for lines in grids)
    with pytest.raises(ValueError):
        V.warped_grid(tiny_flow(3), (-1, 1, -1, 1))


@pytest.mark.parametrize("steps", [None, 6])
def test_recorded_reverse_process_is_the_sampler_trajectory(steps: int | None) -> None:
    model = tiny_ddpm()
    n = 40
    expected = model.sample(
        n, generator=torch.Generator().manual_seed(3), steps=steps, return_trajectory=True
    )
    with V.record_reverse_process(model, n_keep=25) as recording:
        final = model.sample(n, generator=torch.Generator().manual_seed(3), steps=steps)
    timesteps, states = recording.trajectory(final.double().numpy())
    assert timesteps[0] == model.diffusion_steps and timesteps[-1] == 0
    assert np.all(np.diff(timesteps) < 0)
    assert states.shape == (len(expected), 25, 2)
    np.testing.assert_allclose(states, expected[:, :25].double().numpy(), atol=1e-4)
    # The hook is gone afterwards: nothing more is recorded.
    model.sample(5)
    assert len(recording) == len(timesteps) - 1


def test_record_reverse_process_rejects_a_flow() -> None:
    with pytest.raises(ValueError), V.record_reverse_process(tiny_flow()):
        pass


def test_forward_process_and_noise_levels() -> None:
    model = tiny_ddpm()
    x0 = np.random.default_rng(0).normal(size=(20, 2))
    out = V.forward_process(model, x0, [0, 10, 20])
    assert [a.shape for a in out] == [(20, 2)] * 3
    np.testing.assert_allclose(out[0], x0, atol=1e-5)  # i = 0 is the data itself
    steps = V.noise_level_timesteps(model)
    assert all(1 <= i <= 20 for i in steps) and steps == sorted(steps, reverse=True)


def test_denoising_field_is_minus_sigma_eps_in_data_units() -> None:
    model = tiny_ddpm()
    grid = np.random.default_rng(0).normal(size=(16, 2))
    field = V.denoising_field(model, grid, [5, 15])
    assert field.timesteps == [5, 15] and len(field.vectors) == 2
    z, _ = model.standardize(torch.as_tensor(grid, dtype=torch.float32))
    eps = model._eps_prediction(z, torch.full((16,), 5, dtype=torch.long))
    expected = (-model.schedule.sigma_bar[5] * eps * model.standardize.std).detach().double().numpy()
    np.testing.assert_allclose(field.vectors[0], expected, atol=1e-5)


def test_closest_indices_and_frames() -> None:
    ts = np.array([100, 75, 50, 25, 10, 0])
    assert V.closest_indices(ts, [100, 74, 0, 1]) == [0, 1, 5]
    frames = V.frame_timesteps(100, 30)
    assert len(frames) == 30 and frames[0] == 100 and frames[-1] == 0


def test_glyph_colouring() -> None:
    points = make_text(3000, seed=0)
    labels, categories, note = glyph_colouring(points, text=None, data_name="some/dir/689_data.csv")
    assert categories == ["'6'", "'8'", "'9'"]
    assert set(np.unique(labels)) <= {-1, 0, 1, 2} and (labels >= 0).mean() > 0.8
    assert "689" in note
    # The same points under another name: colour by x quantile.
    values, none, note = glyph_colouring(points, text=None, data_name="other.csv")
    assert none is None and values.min() == 0.0 and values.max() == 1.0 and "quantile" in note
    # Explicit text that does not fit the data (Gaussian blob): falls back too.
    blob = np.random.default_rng(0).normal(size=(500, 2)) * 5
    assert glyph_colouring(blob, text="689")[1] is None


def test_reverse_recording_records_a_diffusion_model_and_yields_none_for_a_flow() -> None:
    with V.reverse_recording(tiny_flow()) as nothing:
        assert nothing is None
    model = tiny_ddpm(steps=5)
    with V.reverse_recording(model, n_keep=3) as recording:
        final = model.sample(4, generator=torch.Generator().manual_seed(0))
    timesteps, states = recording.trajectory(final.double().numpy())
    assert list(timesteps) == [5, 4, 3, 2, 1, 0] and states.shape == (6, 3, 2)
