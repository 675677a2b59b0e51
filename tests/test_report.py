"""Tests for genmodels.plots.report: every figure of both models, the results page (rendered in headless
Chromium when it is installed), TensorBoard logging, the training run's outputs and `genmodels plot`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from genmodels.cli import main
from genmodels.config import default_config, with_overrides
from genmodels.data import make_text, save_csv
from genmodels.errors import ConfigError
from genmodels.plots import report
from genmodels.plots.figures import DPI
from genmodels.run import run_training
from test_visualize import tiny_ddpm, tiny_flow

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
PIXEL_STD_FLOOR = 0.02


@pytest.fixture
def saved_sizes(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[float, float]]:
    """Size in inches of every figure saved from now on, by the name of the file it is written to."""
    sizes: dict[str, tuple[float, float]] = {}
    original = Figure.savefig

    def recording(self: Figure, fname, *args, **kwargs):  # noqa: ANN001
        sizes[Path(str(fname)).name] = tuple(self.get_size_inches())
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return sizes


def check_png(path: Path, sizes: dict[str, tuple[float, float]]) -> None:
    """A PNG of the size its figure was drawn at, with visible content."""
    assert path.exists() and path.suffix == ".png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = [size for name, size in sizes.items() if name.startswith(f".{path.name}.")]
    assert drawn, f"no figure was saved for {path.name}"
    image = mpimg.imread(path)
    width, height = drawn[-1]
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert image[..., :3].std() > PIXEL_STD_FLOOR, f"{path.name} is blank"


def check_gif(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "GIF"
        assert image.size == (440, 440)
        assert image.n_frames > 1
        assert image.info.get("loop") == 0
        frames = []
        for k in (0, image.n_frames - 1):
            image.seek(k)
            frames.append(np.asarray(image.convert("RGB"), dtype=float) / 255.0)
    assert all(f.std() > PIXEL_STD_FLOOR for f in frames)
    assert np.abs(frames[0] - frames[1]).mean() > 1e-3, "the animation does not change"


@pytest.fixture(scope="module")
def text_points() -> np.ndarray:
    return make_text(1500, seed=0)


def history(n: int = 6, heldout: str = "test_nll") -> dict[str, list[float]]:
    nan = float("nan")
    return {
        "epoch": list(range(1, n + 1)),
        "loss": [2.0 / k for k in range(1, n + 1)],
        "lr": [1e-3 * 0.9**k for k in range(n)],
        "grad_norm": [5.0 / k for k in range(1, n + 1)],
        "seconds": [0.1] * n,
        heldout: [nan if k % 2 else 1.0 / k for k in range(1, n + 1)],
    }


def test_realnvp_figures(tmp_path: Path, text_points: np.ndarray, saved_sizes: dict) -> None:
    flow = tiny_flow()
    samples = flow.sample(800).numpy()
    paths = report.write_figures(
        flow, "realnvp", text_points, samples, history(), tmp_path,
        metrics={"test_nll": 1.234, "c2st": 0.61}, data_name="689_data.csv",
    )  # fmt: skip
    assert set(paths) == {"results", "density", "warped_grid", "latent", "loss", "diagnostics", "index"}
    for key, path in paths.items():
        if key != "index":
            assert path.parent == tmp_path / "figures" and path.name == f"realnvp_{key}.png"
            check_png(path, saved_sizes)
    page = (tmp_path / "index.html").read_text()
    assert all(f'src="figures/{p.name}"' in page for k, p in paths.items() if k not in ("index", "loss"))
    assert 'href="figures/realnvp_loss.png"' in page and 'src="figures/realnvp_loss.png"' not in page
    widths = {m[0]: int(m[1]) for m in re.findall(r'src="figures/(\w+)\.png"[^>]*width="(\d+)"', page)}
    assert widths["realnvp_density"] == round(5.6 * 90)  # every figure at 90 CSS pixels per figure inch


def test_ddpm_figures(tmp_path: Path, text_points: np.ndarray, saved_sizes: dict) -> None:
    from genmodels.plots.arrays import record_reverse_process

    model = tiny_ddpm(steps=30)
    with record_reverse_process(model, 300) as recording:
        samples = model.sample(600, generator=torch.Generator().manual_seed(0)).numpy()
    paths = report.write_figures(
        model, "ddpm", text_points, samples, history(heldout="test_nll_bound"), tmp_path,
        metrics={"test_nll_bound": 2.5, "c2st": 0.7}, reverse=recording.trajectory(samples),
    )  # fmt: skip
    expected = {
        "results",
        "reverse",
        "reverse_gif",
        "forward",
        "vector_field",
        "loss",
        "diagnostics",
        "index",
    }
    assert set(paths) == expected
    check_gif(paths["reverse_gif"])
    assert paths["reverse_gif"].name == "ddpm_reverse.gif"
    for key in expected - {"reverse_gif", "index"}:
        check_png(paths[key], saved_sizes)


def test_ddpm_figures_without_a_recording(tmp_path: Path, text_points: np.ndarray) -> None:
    model = tiny_ddpm(steps=10)
    paths = report.write_figures(model, "ddpm", text_points, text_points, None, tmp_path, sampling_steps=4)
    assert {"reverse", "reverse_gif", "forward"} <= set(paths) and "diagnostics" not in paths
    check_gif(paths["reverse_gif"])


def test_the_forward_and_reverse_strips_each_keep_one_scale(
    tmp_path: Path, text_points: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits: dict[str, set] = {}
    save = Figure.savefig

    def recording(fig: Figure, *args, **kwargs) -> None:
        limits[fig.get_suptitle()] = {(ax.get_xlim(), ax.get_ylim()) for ax in fig.axes if ax.axison}
        save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    report.write_figures(
        tiny_ddpm(steps=30), "ddpm", text_points, text_points, None, tmp_path, sampling_steps=4
    )
    strips = {
        title: axes
        for title, axes in limits.items()
        if "forward process" in title or "reverse process" in title
    }
    assert len(strips) == 2
    for title, axes in strips.items():
        assert len(axes) == 1, f"{title}: panels on {len(axes)} different scales"


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_higher_dimensions_get_pair_plots(
    model_type: str, tmp_path: Path, saved_sizes: dict, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 3)) * [1.0, 2.0, 0.5]
    model = tiny_flow(3) if model_type == "realnvp" else tiny_ddpm(3, steps=10)
    samples = model.sample(400).numpy()
    with caplog.at_level("INFO", logger="genmodels.plots.report"):
        paths = report.write_figures(model, model_type, real, samples, history(), tmp_path, index=False)
    assert "pairs" in paths and "index" not in paths
    assert not {"density", "warped_grid", "vector_field"} & set(paths)
    assert "2-D only" in caplog.text
    for path in paths.values():
        if path.suffix == ".png":
            check_png(path, saved_sizes)


def test_vector_formats(tmp_path: Path, text_points: np.ndarray) -> None:
    paths = report.write_figures(
        tiny_flow(), "realnvp", text_points, text_points, history(), tmp_path, fmt="svg"
    )
    assert all(p.suffix == ".svg" for k, p in paths.items() if k != "index")
    assert all(p.read_bytes().startswith(b"<?xml") for k, p in paths.items() if k != "index")
    model = tiny_ddpm(steps=10)
    paths = report.write_figures(model, "ddpm", text_points, text_points, None, tmp_path, fmt="pdf")
    assert paths["reverse_gif"].suffix == ".gif" and paths["forward"].read_bytes().startswith(b"%PDF")
    page = (tmp_path / "index.html").read_text()
    assert 'href="figures/ddpm_forward.pdf"' in page and 'src="figures/realnvp_density.svg"' in page


def test_index_page(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "configs").mkdir()
    metrics = {"c2st": 0.5123, "epochs": 3, "note": "<b>", "units": {"c2st": "accuracy <0.5>"}}
    (tmp_path / "metrics" / "ddpm.json").write_text(json.dumps(metrics))
    (tmp_path / "configs" / "ddpm.yaml").write_text("model:\n  diffusion_steps: 7 # <x>\n")
    page_path = report.write_index(tmp_path)
    page = page_path.read_text()
    assert page_path == tmp_path / "index.html"
    assert "0.5123" in page and "diffusion_steps: 7" in page and "&lt;x&gt;" in page and "&lt;b&gt;" in page
    # The units are a column beside their metric, not a row of their own.
    assert re.search(r"<th>c2st</th><td[^>]*>0.5123</td><td[^>]*>accuracy &lt;0.5&gt;</td>", page)
    assert "<th>units</th>" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must work offline"
    assert '<h2 id="ddpm">DDPM</h2>' in page and "RealNVP</h2>" not in page


def test_index_page_sets_apart_figures_older_than_the_metrics(tmp_path: Path) -> None:
    import os

    (tmp_path / "figures").mkdir()
    (tmp_path / "metrics").mkdir()
    stale, fresh = tmp_path / "figures" / "realnvp_density.png", tmp_path / "figures" / "realnvp_results.png"
    stale.write_bytes(b"old")
    (tmp_path / "metrics" / "realnvp.json").write_text(json.dumps({"test_nll": 1.0}))
    fresh.write_bytes(b"new")
    os.utime(stale, ns=(1, 1))  # written long before the metrics
    page = report.write_index(tmp_path).read_text()
    figures, older = page.split("<h3>Older figures</h3>")
    assert "realnvp_results.png" in figures and "realnvp_density.png" not in figures
    assert "realnvp_density.png" in older and "earlier run into this folder" in older


def test_tensorboard_missing_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        report.TensorBoardLog(tmp_path / "tb")


def test_tensorboard_logs_new_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    logged: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, log_dir: str) -> None:
            self.log_dir = log_dir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            logged.append((tag, value, step))

        def flush(self) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    board = report.TensorBoardLog(tmp_path / "tb")
    hist = history(3)
    board.update({k: v[:2] for k, v in hist.items()})
    board.close(hist)
    assert [step for tag, _, step in logged if tag == "loss"] == [1, 2, 3]
    assert [step for tag, _, step in logged if tag == "test_nll"] == [2]  # NaN rows skipped
    assert not [t for t, _, _ in logged if t == "epoch"]


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "689_data.csv"
    save_csv(path, make_text(1200, seed=1), ("x", "y"))
    return path


def tiny_config(model_type: str, data: Path):
    overrides = {
        "data.path": str(data),
        "training.epochs": 2,
        "training.batch_size": 256,
        "training.eval_every": 1,
        "sampling.n_samples": 600,
        "sampling.n_eval": 200,
    }
    if model_type == "realnvp":
        overrides.update({"model.n_coupling_layers": 2, "model.hidden_units": 16})
    else:
        overrides.update({"model.diffusion_steps": 20, "model.hidden_units": 16, "model.n_blocks": 1})
    return with_overrides(default_config(model_type), overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, text_csv: Path) -> Path:
    out = tmp_path_factory.mktemp("run")
    for model_type in ("realnvp", "ddpm"):
        result = run_training(tiny_config(model_type, text_csv), output_dir=out, device="cpu", progress=False)
        assert result.paths["index"] == out / "index.html"
        assert result.paths["results"].exists()
    return out


def test_training_run_writes_every_figure_and_the_page(run_dir: Path) -> None:
    names = {p.name for p in (run_dir / "figures").iterdir()}
    realnvp = {
        f"realnvp_{k}.png" for k in ("results", "density", "warped_grid", "latent", "loss", "diagnostics")
    }
    ddpm = {f"ddpm_{k}.png" for k in ("results", "reverse", "forward", "vector_field", "loss", "diagnostics")}
    assert realnvp | ddpm | {"ddpm_reverse.gif"} <= names
    page = (run_dir / "index.html").read_text()
    for name in names:
        assert f"figures/{name}" in page
    assert "test_nll" in page and "diffusion_steps: 20" in page and "n_coupling_layers: 2" in page


def test_plot_command(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plots"
    code = main(["plot", str(run_dir / "checkpoints" / "ddpm.pt"), "--output_dir", str(out), "-n", "300",
                 "--format", "svg", "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("ddpm_results.svg", "ddpm_reverse.gif", "ddpm_vector_field.svg", "index.html"):
        assert (out / "figures" / name).exists() or (out / name).exists()
        assert name in printed
    check_gif(out / "figures" / "ddpm_reverse.gif")
    assert main(["plot", str(run_dir / "checkpoints" / "realnvp.pt"), "--output_dir", str(out), "-n", "300",
                 "--device", "cpu", "--text", "689"]) == 0  # fmt: skip
    assert (out / "figures" / "realnvp_latent.png").exists()


def test_plot_command_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium) for the page test"
)
def test_index_page_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    page = (run_dir / "index.html").read_text()
    check = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((im) => !(im.complete && im.naturalWidth > 0)).map((im) => im.src);
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify({total: images.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""
    probe = run_dir / "index_check.html"  # beside the page, so its relative paths resolve the same
    probe.write_text(page.replace("</body>", check + "\n</body>"))
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
             probe.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        probe.unlink()
    match = re.search(r'<pre id="image-check">(.*?)</pre>', result.stdout)
    assert match, f"no result from chromium: {result.stderr[-2000:]}"
    outcome = json.loads(match.group(1).replace("&quot;", '"'))
    assert outcome["total"] >= 11  # the loss figures are linked: the diagnostics show the same curves
    assert outcome["broken"] == []


def test_a_run_far_short_of_the_models_steps_warns_with_the_epochs_it_needs(
    text_csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from genmodels.run import _warn_short_run

    config = tiny_config("realnvp", text_csv)  # 2 epochs of batches of 256; RealNVP needs about 1000 steps
    with caplog.at_level("WARNING"):
        _warn_short_run(config, 1000)  # 4 steps per epoch: 8 steps
    assert "--epochs" in caplog.text and " 8 optimisation steps" in caplog.text and "250" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _warn_short_run(with_overrides(config, {"training.epochs": 100}), 1000)  # 400 steps: over a third
    assert caplog.text == ""


def test_sampling_estimate_scales_one_timed_chunk_and_leaves_the_random_streams(
    text_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import genmodels.run as run

    model = tiny_ddpm(steps=40).train()
    config = with_overrides(
        tiny_config("ddpm", text_csv), {"sampling.n_samples": 1000, "sampling.chunk_size": 250}
    )
    clock = iter([10.0, 12.0])  # the timed chunk takes 2 s
    monkeypatch.setattr(run.time, "perf_counter", lambda: next(clock))
    state = torch.get_rng_state()
    # 250 points through 8 of 40 steps in 2 s: 1000 points through all 40 take 2 * 5 * 4 = 40 s
    assert run._sampling_seconds(model, config) == pytest.approx(40.0)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    clock = iter([0.0, 0.5])
    ddim = with_overrides(config, {"sampling.sampling_steps": 16})
    assert run._sampling_seconds(model, ddim) == pytest.approx(0.5 * 2 * 4)
    clock = iter([0.0, 0.5])
    flow = with_overrides(
        tiny_config("realnvp", text_csv), {"sampling.n_samples": 1000, "sampling.chunk_size": 250}
    )
    assert run._sampling_seconds(tiny_flow(), flow) == pytest.approx(0.5 * 4)  # one pass per chunk


def test_first_epoch_estimates_training_and_the_sampling_after_it(caplog: pytest.LogCaptureFixture) -> None:
    from genmodels.config import TrainingConfig
    from genmodels.train.trainer import Trainer

    trainer = Trainer(tiny_ddpm(), TrainingConfig(epochs=3, batch_size=64), progress=False)
    with caplog.at_level("INFO"):
        trainer.fit(torch.randn(128, 2), then_seconds=90.0)
    assert "2 epochs left" in caplog.text and "1 min 30 s of sampling" in caplog.text


def test_a_compiled_run_estimates_after_its_second_epoch(caplog, monkeypatch) -> None:
    from genmodels.config import TrainingConfig
    from genmodels.train import trainer as trainer_module

    # A stand-in for torch.compile: another callable, so the first epoch counts as compiling.
    monkeypatch.setattr(trainer_module, "compile_function", lambda fn, device: lambda *a, **k: fn(*a, **k))
    config = TrainingConfig(epochs=4, batch_size=64, compile="on")
    with caplog.at_level("INFO"):
        trainer_module.Trainer(tiny_ddpm(), config, progress=False).fit(torch.randn(128, 2))
    assert "2 epochs left" in caplog.text and "3 epochs left" not in caplog.text


def test_comparing_no_checkpoints_is_a_config_error(tmp_path):
    from genmodels.errors import ConfigError
    from genmodels.plots.report import compare_checkpoints

    with pytest.raises(ConfigError, match="nothing to compare"):
        compare_checkpoints([], tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_data_s_histogram_log_density_is_in_nats_with_rows_along_y() -> None:
    """Three points in the top-left quarter of the unit square and one in the bottom-right: densities
    3 and 1 per unit area there (each quarter holds its share of the 4 points on 1/4 of the area)."""
    from genmodels.plots.report import _histogram_log_density

    points = np.array([[0.25, 0.75]] * 3 + [[0.75, 0.25]])
    logp = _histogram_log_density(points, (0.0, 1.0, 0.0, 1.0), 2)
    np.testing.assert_allclose([logp[1, 0], logp[0, 1]], [np.log(3.0), 0.0])
    assert np.isneginf(logp[0, 0]) and np.isneginf(logp[1, 1])
