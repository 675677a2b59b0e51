"""Tests for genmodels.plots.figures: files of the right size and format, not blank, written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from genmodels.plots import figures as plotting
from genmodels.plots.figures import (
    DPI,
    grid_for,
    plot_density,
    plot_loss,
    plot_pairs,
    plot_panels,
    plot_training_diagnostics,
)

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "svg": b"<?xml", "pdf": b"%PDF"}


def figure_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Record the size in inches of every figure saved from now on."""
    sizes: list[tuple[float, float]] = []
    original = Figure.savefig

    def recording(self: Figure, *args: object, **kwargs: object) -> None:
        sizes.append(tuple(self.get_size_inches()))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return sizes


def check_png(path: Path, size_inches: tuple[float, float]) -> np.ndarray:
    """The PNG at ``path`` is ``size_inches * DPI`` pixels and not blank; return its pixels."""
    assert path.suffix == ".png"
    assert path.read_bytes()[:8] == MAGIC["png"]
    image = mpimg.imread(path)
    width, height = size_inches
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert image[..., :3].std() > 0.02, "image is blank"
    return image


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def history() -> dict[str, list[float]]:
    epochs = np.arange(1, 11, dtype=float)
    test = np.where(epochs % 3 == 0, 1.0 - 0.1 * epochs, np.nan)
    return {
        "epoch": epochs.tolist(),
        "train_nll": (1.2 - 0.12 * epochs).tolist(),  # goes negative
        "test_nll": test.tolist(),
        "lr": (1e-3 * 0.9**epochs).tolist(),
        "grad_norm": (5.0 / epochs).tolist(),
    }


def test_plot_panels_png(tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = figure_sizes(monkeypatch)
    data = rng.uniform(0.0, 4.0, size=(3000, 2)) * [1.0, 0.5]
    latent = rng.standard_normal((3000, 2))
    out = plot_panels(
        [("Original Data", data), ("Latent z = f(x)", latent), ("Generated Samples", data + 0.01)],
        tmp_path / "panels.whatever",
        reference=data,
        columns=["u", "v"],
        suptitle="flow",
    )
    assert out == tmp_path / "panels.png"
    check_png(out, sizes[-1])
    assert no_temp_files(tmp_path)


def test_plot_panels_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rng: np.random.Generator
) -> None:
    """Panels flagged to share the reference's limits share them, another one keeps its own."""
    limits: list[tuple[tuple[float, float], tuple[float, float]]] = []
    original = Figure.savefig

    def capture(self: Figure, *args: object, **kwargs: object) -> None:
        limits.extend((ax.get_xlim(), ax.get_ylim()) for ax in self.axes)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    data = rng.uniform(10.0, 20.0, size=(2000, 2))
    panels = [("data", data), ("latent", rng.standard_normal((2000, 2))), ("gen", data * 1.01)]
    plot_panels(panels, tmp_path / "a.png", reference=data, share_reference=[True, False, True])
    assert limits[0] == limits[2]
    assert limits[1] != limits[0]
    assert limits[1][0][0] < 0.0 < limits[1][0][1]
    # Limits follow quantiles, not outliers.
    assert limits[0][0][1] < 25.0
    limits.clear()
    plot_panels(panels, tmp_path / "b.png", reference=data, share_reference=[True, True, False])
    assert limits[0] == limits[1]
    with pytest.raises(ValueError):
        plot_panels(panels, tmp_path / "c.png", share_reference=[True, False, False])


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_vector_formats(tmp_path: Path, rng: np.random.Generator, fmt: str, history: dict) -> None:
    pts = rng.standard_normal((5000, 2))
    outputs = [
        plot_panels([("x", pts)], tmp_path / "p.png", fmt=fmt),
        plot_loss(history, tmp_path / "l", ylabel="NLL [nats]", title="t", fmt=fmt),
        plot_panels([("a", pts), ("b", pts * 2)], tmp_path / "s.png", small=True, fmt=fmt),
    ]
    for out in outputs:
        assert out.suffix == "." + fmt
        assert out.read_bytes()[: len(MAGIC[fmt])] == MAGIC[fmt]


def test_plot_panels_three_dims_states_pair(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    original = Figure.savefig

    def capture(self: Figure, *args: object, **kwargs: object) -> None:
        texts.append(self.get_suptitle())
        texts.extend(ax.get_xlabel() + "|" + ax.get_ylabel() for ax in self.axes)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    real = rng.standard_normal((500, 3))
    out = plot_panels([("real", real), ("gen", real + 0.1)], tmp_path / "p3.png", columns=["a", "b", "c"])
    assert out.exists()
    assert "showing columns (a, b) of 3" in texts[0]
    assert texts[1:] == ["a|b", "a|b"]


def test_plot_pairs(tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = figure_sizes(monkeypatch)
    real = rng.standard_normal((3000, 3))
    gen = rng.standard_normal((2500, 3)) * 1.1
    out = plot_pairs(real, gen, tmp_path / "pairs.png", columns=["a", "b", "c"], max_points=1000)
    check_png(out, sizes[-1])
    with pytest.raises(ValueError):
        plot_pairs(real, gen[:, :2], tmp_path / "bad.png")
    # Samples all far outside the data's range (a barely trained model) draw without numerical warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_png(plot_pairs(real, gen + 1e6, tmp_path / "far.png", max_points=1000), sizes[-1])


def test_plot_panels_small_strip(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = figure_sizes(monkeypatch)
    x0 = rng.uniform(-1, 1, size=(2000, 2))
    snaps = [(f"x_{t}", x0 * (1 - t / 4) + rng.standard_normal(x0.shape) * t) for t in (4, 2, 0)]
    out = plot_panels(snaps, tmp_path / "strip.png", suptitle="reverse", small=True)
    check_png(out, sizes[-1])


def test_many_panels_wrap_into_rows_and_a_strip_stays_one_row(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = figure_sizes(monkeypatch)
    panels = [(f"label {k}", rng.standard_normal((300, 2))) for k in range(7)]
    plot_panels(panels[:3], tmp_path / "three.png", suptitle="results")
    plot_panels(panels, tmp_path / "seven.png", suptitle="results")
    plot_panels(panels, tmp_path / "strip.png", suptitle="results", small=True)
    (w3, h3), (w7, h7), (w_strip, h_strip) = sizes
    assert w7 == pytest.approx(w3 * 4 / 3) and 1.8 * h3 < h7 < 2.2 * h3  # two rows of 4, the last one short
    assert w_strip > w7 and h_strip < h3


def test_grid_for_and_plot_density(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = figure_sizes(monkeypatch)
    pts = rng.standard_normal((4000, 2)) * [2.0, 0.5]
    grid, extent = grid_for(pts, resolution=50)
    assert grid.shape == (2500, 2)
    x0, x1, y0, y1 = extent
    assert x0 < grid[:, 0].min() < grid[:, 0].max() < x1
    assert y0 < grid[:, 1].min() < grid[:, 1].max() < y1
    assert grid[1, 0] > grid[0, 0] and grid[1, 1] == grid[0, 1]  # x varies fastest
    logp = (-0.5 * ((grid[:, 0] / 2.0) ** 2 + (grid[:, 1] / 0.5) ** 2)).reshape(50, 50)
    logp[0, 0] = -np.inf
    logp[0, 1] = np.nan
    out = plot_density(logp, extent, tmp_path / "density.png", points=pts, title="log density")
    check_png(out, sizes[-1])
    out = plot_density(logp, extent, tmp_path / "plain.png", title="no points")
    check_png(out, sizes[-1])


def test_plot_loss_skips_nan(tmp_path: Path, history: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: dict[str, np.ndarray] = {}
    scales: list[str] = []
    original = Figure.savefig

    def capture(self: Figure, *args: object, **kwargs: object) -> None:
        for line in self.axes[0].get_lines():
            lines[line.get_label()] = np.asarray(line.get_ydata(), dtype=float)
        scales.append(self.axes[0].get_yscale())
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    losses = {k: history[k] for k in ("epoch", "train_nll", "test_nll")}
    out = plot_loss(losses, tmp_path / "loss.png", ylabel="NLL [nats]", title="training", log_y=True)
    assert out.exists()
    assert set(lines) == {"train NLL", "test NLL"}
    assert len(lines["train NLL"]) == 10
    assert len(lines["test NLL"]) == 3 and np.isfinite(lines["test NLL"]).all()
    assert scales[-1] == "linear"  # negative values: no log scale
    plot_loss({"epoch": [1, 2], "lr": [1e-3, 1e-4]}, tmp_path / "lr.png", ylabel="lr", title="t", log_y=True)
    assert scales[-1] == "log"


def test_a_long_loss_title_stays_inside_the_figure(
    tmp_path: Path, history: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's RealNVP loss title (88 characters) used to run off both edges of the figure."""
    boxes: list[tuple[object, object]] = []
    original = Figure.savefig

    def capture(self: Figure, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # drawn: the layout and the text extents are final
        boxes.append((self.axes[0].title.get_window_extent(), self.bbox))

    monkeypatch.setattr(Figure, "savefig", capture)
    title = "RealNVP: NLL per epoch (train: mean over the epoch's batches; held-out: averaged weights)"
    losses = {k: history[k] for k in ("epoch", "train_nll", "test_nll")}
    plot_loss(losses, tmp_path / "loss.png", ylabel="NLL [nats]", title=title)
    text, figure = boxes[-1]
    assert figure.x0 <= text.x0 and text.x1 <= figure.x1
    assert text.y1 <= figure.y1


def test_plot_loss_single_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = figure_sizes(monkeypatch)
    out = plot_loss({"epoch": [1], "train_nll": [1.5]}, tmp_path / "one.png", ylabel="NLL", title="one")
    image = check_png(out, sizes[-1])
    assert image.shape[:2] == (630, 960)  # 6.4 x 4.2 inches at 150 dpi
    all_nan = {"epoch": [1, 2], "train_nll": [np.nan, np.nan]}
    assert plot_loss(all_nan, tmp_path / "nan.png", ylabel="NLL", title="nan").exists()
    with pytest.raises(ValueError):
        plot_loss({"epoch": [1, 2], "train_nll": [1.0]}, tmp_path / "bad.png", ylabel="NLL", title="bad")


def test_plot_training_diagnostics(tmp_path: Path, history: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = figure_sizes(monkeypatch)
    out = plot_training_diagnostics(history, tmp_path / "diag.png")
    image = check_png(out, sizes[-1])
    assert image.shape[1] > 2 * image.shape[0]
    partial = {"epoch": history["epoch"], "train_loss": history["train_nll"]}
    assert plot_training_diagnostics(partial, tmp_path / "partial.png").exists()


def test_a_loss_spike_stays_off_the_scale_and_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One epoch at 1.4e6 among 500 near 1 would flatten the curve into the axis: it is left off the
    scale, with a note naming how many values and the largest; a curve without outliers keeps them all."""
    seen: list[tuple[tuple[float, float], list[str]]] = []
    original = Figure.savefig

    def capture(self: Figure, *args: object, **kwargs: object) -> None:
        ax = self.axes[0]
        seen.append((ax.get_ylim(), [t.get_text() for t in ax.texts]))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    epochs = np.arange(1, 501)
    loss = 0.9 + 0.9 * np.exp(-epochs / 20.0) + np.random.default_rng(0).normal(0, 0.01, 500)
    spiked = loss.copy()
    spiked[295] = 1.4e6
    plot_loss({"epoch": epochs, "train_nll": spiked}, tmp_path / "spike.png", ylabel="NLL", title="t")
    (bottom, top), notes = seen[-1]
    # the first epochs (1.8 nats) stay on the scale, and the lowest value inside the frame
    assert loss[0] < top < 100 and bottom < loss.min() - 0.01
    assert len(notes) == 1 and "1 off scale" in notes[0] and "1.4e6" in notes[0]
    plot_loss({"epoch": epochs, "train_nll": loss}, tmp_path / "plain.png", ylabel="NLL", title="t")
    (bottom, top), notes = seen[-1]
    assert notes == [] and top >= loss.max()


def test_pretty_labels() -> None:
    assert plotting.pretty_label("train_nll") == "train NLL"
    assert plotting.pretty_label("grad_norm") == "grad norm"
    assert plotting.pretty_label("val_kl_loss") == "val KL loss"


def test_failed_save_keeps_old_file(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "panels.png"
    target.write_bytes(b"old contents")

    def broken(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        Path(str(fname)).write_bytes(b"\x89PNG partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_panels([("x", rng.standard_normal((100, 2)))], target)
    assert target.read_bytes() == b"old contents"
    assert no_temp_files(tmp_path)
    with pytest.raises(RuntimeError):
        plot_loss({"epoch": [1], "nll": [1.0]}, tmp_path / "new.png", ylabel="NLL", title="t")
    assert not (tmp_path / "new.png").exists()
    assert no_temp_files(tmp_path)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_panels([("x", np.zeros((10, 1)))], tmp_path / "a.png")
    with pytest.raises(ValueError):
        plot_panels([("x", np.zeros((10, 2)))], tmp_path / "a.png", fmt="jpg")
    with pytest.raises(ValueError):
        plot_density(np.zeros(5), (0, 1, 0, 1), tmp_path / "d.png", title="t")
    assert list(tmp_path.iterdir()) == []


def test_degenerate_data(tmp_path: Path) -> None:
    """Constant data and non-finite rows still give a picture rather than an error."""
    pts = np.ones((50, 2))
    pts[0] = np.nan
    assert plot_panels([("constant", pts)], tmp_path / "c.png").exists()
    grid, extent = grid_for(pts, resolution=4)
    assert np.isfinite(grid).all() and extent[0] < extent[1]


def test_points_outside_the_axes_are_counted_on_the_figure(tmp_path):
    """Diverged samples drawn inside the data's limits are announced, not silently cut off."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    inside = rng.normal(size=(900, 2))
    far = rng.normal(size=(100, 2)) * 1e5
    ax = Figure().subplots()
    plotting._scatter(ax, np.concatenate([inside, far]), "black", box=(-4.0, 4.0, -4.0, 4.0))
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("100 of 1,000 points (10.0%) outside") for t in texts), texts
    ax = Figure().subplots()
    plotting._scatter(ax, inside, "black", box=(-10.0, 10.0, -10.0, 10.0))
    assert not ax.texts


def test_log_axis_labels_share_one_style_across_magnitudes() -> None:
    """The gradient-norm axis of a run with spikes spans 10 to 1e7: before, its labels went "1000",
    "1e4", "1e+05"; small values read "1e-01"."""
    assert [plotting._plain_number(v) for v in (1e-4, 0.001, 0.1, 2, 1000, 1e4, 1e5, 8.2e6)] == [
        "1e-4", "0.001", "0.1", "2", "1000", "1e4", "1e5", "8.2e6",
    ]  # fmt: skip
    figure = Figure()
    ax = figure.subplots()
    epochs = np.arange(1.0, 101.0)
    norms = np.full(100, 20.0)
    norms[[10, 50]] = [1e4, 8e6]
    plotting._draw_curves(ax, epochs, {"grad_norm": norms.tolist()}, log_y=True)
    figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert {"10", "100", "1000", "1e4", "1e5", "1e6"} <= set(labels), labels
    assert not any("+" in label or "^" in label for label in labels), labels
    assert {t.get_text() for t in ax.get_xticklabels() if t.get_text()} >= {
        "0",
        "20",
        "40",
        "60",
        "80",
        "100",
    }


def test_panels_in_another_space_carry_their_own_axis_names(tmp_path: Path, monkeypatch) -> None:
    """The latent panel of the results figure is in z, not in the data's columns."""
    drawn: list[Figure] = []
    real_save = plotting._save
    monkeypatch.setattr(
        plotting, "_save", lambda fig, path, fmt: (drawn.append(fig), real_save(fig, path, fmt))[1]
    )
    points = np.random.default_rng(0).normal(size=(300, 2))
    plotting.plot_panels([("data", points), ("latent", points)], tmp_path / "p.png", columns=["a", "b"],
                         panel_columns=[None, ["z₁", "z₂"]])  # fmt: skip
    plotting.plot_panels([("data", points), ("latent", points)], tmp_path / "c.png",
                         labels=(np.zeros(300, dtype=int), ["all"]), panel_columns=[["a", "b"], ["z₁", "z₂"]])  # fmt: skip
    assert len(drawn) == 2
    for figure in drawn:
        axes = figure.axes[:2]
        assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes] == [("a", "b"), ("z₁", "z₂")]
    with pytest.raises(ValueError, match="panel_columns has 1 entries for 2 panels"):
        plotting.plot_panels([("data", points), ("latent", points)], tmp_path / "p.png", panel_columns=[None])


def test_category_colours_follow_the_finite_rows_and_the_palette():
    from genmodels.plots.figures import PALETTE, _category_colours

    data = np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.0], [2.0, 2.0]])
    colours = _category_colours(np.array([0, 1, 2, 1 + len(PALETTE)]), data)
    assert list(colours) == [PALETTE[0], PALETTE[2], PALETTE[1]]  # the NaN row is not drawn
    assert _category_colours(3, data) == PALETTE[3]
    assert _category_colours(None, data) is None


def test_compare_heatmaps_share_one_colour_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data's and the models' log-densities are drawn on one scale (the widest of their own ranges),
    so a colour means the same density in every panel."""
    seen = []
    real_image = plotting._log_density_image

    def recording(ax, log_density, extent, *, small, limits=None):
        seen.append(limits)
        return real_image(ax, log_density, extent, small=small, limits=limits)

    monkeypatch.setattr(plotting, "_log_density_image", recording)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 2))
    flat = np.full((8, 8), -3.0)
    flat[0, 0] = -1.0  # own range: -3 to -1
    steep = np.linspace(-12.0, 0.5, 64).reshape(8, 8)  # own range: from its 5 % quantile to 0.5
    box = (-2.0, 2.0, -2.0, 2.0)
    plotting.plot_compare(
        [("data", points), ("model", points)], [("a", flat, box), ("b", steep, box)], tmp_path / "c.png"
    )
    low = float(np.quantile(steep, 0.05))
    assert seen == [pytest.approx((low, 0.5)), pytest.approx((low, 0.5))]
