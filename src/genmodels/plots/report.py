"""A run's figures (``figures/<model>_<name>.<fmt>``), results page ``index.html``, compare, TensorBoard."""

from __future__ import annotations

import html
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch
from torch import nn

from genmodels.errors import ConfigError
from genmodels.evaluation.sampling import draw_labels, evaluate_samples, finite_samples, sample_model
from genmodels.evaluation.scoring import Evaluation, checkpoint_points, compare_table, evaluate_checkpoint
from genmodels.fileio import write_json, write_text
from genmodels.models import ModelSpec, get_spec, model_names
from genmodels.plots import arrays as V
from genmodels.plots import figures as P

log = logging.getLogger(__name__)

_CAPTIONS = {
    "results": "Data, the model's intermediate space, and generated samples.",
    "density": "The model's log-density log p(x) with the data's 50 % / 90 % highest-density contours.",
    "warped_grid": "A regular grid in data space (and data points) pushed through the flow, "
    "coupling by coupling: how each layer bends space (after the first panel, in standardised units).",
    "latent": "Where each part of the data lands in the latent space z = f(x).",
    "reverse": "The reverse (generative) process: snapshots of x_i from pure noise (i = L) to samples (i = 0).",
    "reverse_gif": "The reverse process, animated.",
    "forward": "The forward (noising) process: data x_0 diffused to x_i ~ q(x_i | x_0).",
    "vector_field": "The learned denoising direction (minus the predicted noise times its level, σ̄ᵢ) on a grid at a few noise levels.",
    "pairs": "Real versus generated points, every pair of columns.",
    "diagnostics": "Training diagnostics: loss, held-out NLL, learning rate and gradient norm per epoch.",
    "loss": "Training loss per epoch.",
}
_SHOW_POINTS = 20000
_TRAJECTORY_POINTS = 2000
_GIF_FRAMES = 30
_STRIP_NOISE_LEVELS = (0.95, 0.8, 0.6, 0.4, 0.2)  # sqrt(1 - ᾱ_i²) between x_L and x_0
_DENSITY_RESOLUTION = 200
_FIELD_RESOLUTION = 25
_MIN_GLYPH_SHARE = 0.5
_TWO_D_ONLY = {"density", "warped_grid", "vector_fields"}  # figure kinds drawn for 2-D data only
_HEADLINE = {"test_nll": "test NLL {} nats", "test_nll_bound": "NLL bound {} nats", "c2st": "C2ST {}"}


def glyph_colouring(
    points: np.ndarray, *, text: str | None, data_name: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, list[str] | None, str]:
    """``(labels, categories, note)`` colouring points ``(N, 2)`` by glyph of ``text``, else by x quantile."""
    pts = np.asarray(points, dtype=float)
    if text is None and data_name is not None and Path(data_name).name == "689_data.csv":
        text = "689"
    if text and pts.shape[1] == 2:
        from genmodels.data import glyph_labels

        try:
            labels = glyph_labels(pts, text)
        except ValueError as error:
            log.info("glyph colouring for %r not possible (%s); colouring by x quantile", text, error)
        else:
            share = float((labels >= 0).mean()) if len(labels) else 0.0
            if share >= _MIN_GLYPH_SHARE:
                return labels, [f"'{c}'" for c in text], f"colour: the character of {text!r} a point lies in"
            log.info(
                "only %.0f%% of the points in the glyphs of %r: colouring by x quantile", 100 * share, text
            )
    ranks = np.argsort(np.argsort(pts[:, 0], kind="stable"), kind="stable")
    return ranks / max(len(pts) - 1, 1), None, "colour: quantile of the first coordinate"


def _headline(metrics: Mapping[str, Any]) -> str:
    known = [(text, metrics.get(key)) for key, text in _HEADLINE.items()]
    return ", ".join(text.format(_fmt_number(value)) for text, value in known if value is not None)


def _fmt_number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _latent_names(dim: int) -> list[str]:
    subscripts = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    return [f"z{str(i + 1).translate(subscripts)}" for i in range(dim)]


@dataclass
class _Run:
    """A model's figures' inputs (at most ``_SHOW_POINTS`` of each point set; ``reverse`` None: sampled anew)."""

    model: nn.Module
    spec: ModelSpec
    real: np.ndarray
    samples: np.ndarray
    fig_dir: Path
    headline: str = ""
    fmt: str = "png"
    columns: Sequence[str] | None = None
    data_name: str | os.PathLike[str] | None = None
    text: str | None = None
    reverse: tuple[np.ndarray, np.ndarray] | None = None
    sampling_steps: int = 0
    seed: int = 0
    labels: tuple[Sequence[str], np.ndarray] | None = None
    real_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        shown = P.subsample(np.arange(len(self.real)), _SHOW_POINTS, self.seed)
        self.real, self.samples = np.asarray(self.real, dtype=float)[shown], self.samples[:_SHOW_POINTS]
        self.model, self.samples = self.model.eval(), np.asarray(self.samples, dtype=float)
        if self.labels is not None:
            self.labels = (self.labels[0], np.asarray(self.labels[1])[:_SHOW_POINTS])
        self.real_labels = None if self.real_labels is None else np.asarray(self.real_labels)[shown]
        self.where = f" on {Path(self.data_name).name}" if self.data_name else ""
        self.dim, self.title = self.real.shape[1], self.spec.title + self.where

    def draw(self, key: str, plot: Callable[..., Path], *args: Any, **options: Any) -> dict[str, Path]:
        """``{key: path}`` of ``plot(*args, path, fmt=..., **options)`` drawn into this model's ``key`` file."""
        path = self.fig_dir / f"{self.spec.name}_{key}.{self.fmt}"
        return {key: plot(*args, path, fmt=self.fmt, **options)}


def write_figures(
    model: nn.Module,
    model_type: str,
    real: np.ndarray,
    samples: np.ndarray,
    history: Mapping[str, Sequence[float]] | None,
    out_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    index: bool = True,
    **options: Any,
) -> dict[str, Path]:
    """Draw every figure of ``model`` (``real (N, D)``, ``samples (M, D)``) into ``out_dir/figures``, and
    the results page where ``index``; ``options``: the fields of :class:`_Run` (``fmt``, ``columns``, ...)."""
    start, spec = time.perf_counter(), get_spec(model_type)
    run = _Run(model, spec, real, samples, Path(out_dir) / "figures", _headline(metrics or {}), **options)
    written = _scatter_figures(run)
    if history and len(history.get("epoch", [])):
        written.update(_history_figures(run, history))
    if index:
        written["index"] = write_index(out_dir)
    log.info("figures written to %s in %.1f s", run.fig_dir, time.perf_counter() - start)
    return written


def _scatter_figures(run: _Run) -> dict[str, Path]:
    if run.dim < 2:
        log.info("the data are 1-D: scatter figures skipped")
        return {}
    written = _results_figure(run)
    if run.dim > 2:
        written |= run.draw(
            "pairs", P.plot_pairs, run.real, run.samples, columns=run.columns, suptitle=run.title
        )
    for kind in run.spec.figures:
        if kind in _TWO_D_ONLY and run.dim != 2:
            log.info("the data are %d-D: %s skipped (2-D only)", run.dim, kind.replace("_", " "))
        else:
            written.update(FIGURES[kind](run))
    return written


def _results_figure(run: _Run) -> dict[str, Path]:
    """The data, the first middle panel (in its own space and limits) and the samples, each label's apart."""
    middle = [_MIDDLE_PANELS[kind](run) for kind in run.spec.figures if kind in _MIDDLE_PANELS][:1]
    samples_title = f"Generated Samples\n{run.headline}" if run.headline else "Generated Samples"
    panels = [("Original Data", run.real, None), *middle, (samples_title, run.samples, None)]
    categories = None
    if run.labels is not None:  # the real points and each label's samples in that label's colour
        names, labels = run.labels
        panels += [(f"Generated given {n}", run.samples[labels == k], None) for k, n in enumerate(names)]
        categories = [run.real_labels, *[run.real_labels] * len(middle), labels, *range(len(names))]
    own = [columns for _, _, columns in panels]
    return run.draw(
        "results", P.plot_panels, [p[:2] for p in panels], columns=run.columns, categories=categories,
        panel_columns=own, reference=run.real, share_reference=[c is None for c in own], suptitle=run.title,
    )  # fmt: skip


def _latent_panel(run: _Run) -> tuple[str, np.ndarray, list[str]]:
    return "Latent z = f(x)", V.latent(run.model, run.real, run.real_labels), _latent_names(run.dim)


def _diffused_panel(run: _Run) -> tuple[str, np.ndarray, list[str]]:
    steps = [run.model.diffusion_steps]
    diffused = V.forward_process(run.model, run.real, steps, seed=run.seed, standardised=True)[0]
    names = [f"{n} (standardised)" for n in P._column_names(run.columns, run.dim)]
    return "Forward Diffused", diffused, names


def _latent_figure(run: _Run) -> dict[str, Path]:
    labels, categories, note = glyph_colouring(run.real, text=run.text, data_name=run.data_name)
    if run.labels is not None and run.real_labels is not None:
        labels, categories = run.real_labels, list(run.labels[0])
        note = "colour: the label, z = f_y(x) given it"
    panels = [("data x", run.real), ("latent z = f(x)", V.latent(run.model, run.real, run.real_labels))]
    return run.draw(
        "latent", P.plot_panels, panels, labels=(labels, categories), normal_rings=[False, True],
        panel_columns=[run.columns, _latent_names(run.dim)],
        suptitle=f"{run.title}: where the data land in the latent space\n{note}",
    )  # fmt: skip


def _density_figure(run: _Run) -> dict[str, Path]:
    grid, extent = P.grid_for(run.real, resolution=_DENSITY_RESOLUTION)
    logp = V.log_density_on_grid(run.model, grid).reshape(_DENSITY_RESOLUTION, _DENSITY_RESOLUTION)
    title = f"{run.spec.title} log-density{run.where}" + (f"\n{run.headline}" if run.headline else "")
    return run.draw(
        "density", P.plot_density, logp, extent, points=run.real, title=title, columns=run.columns
    )


def _warped_grid_figure(run: _Run) -> dict[str, Path]:
    labels, categories, _ = glyph_colouring(run.real, text=run.text, data_name=run.data_name)
    _, extent = P.grid_for(run.real, resolution=_DENSITY_RESOLUTION)
    carried = P.subsample(np.arange(len(run.real)), 1500, run.seed + 1)
    warped = V.warped_grid(run.model, extent, points=run.real[carried])
    return run.draw(
        "warped_grid", P.plot_warped_grid, warped, labels=(labels[carried], categories),
        suptitle=f"{run.title}: a regular grid in data space pushed through the flow\n"
        "(the first panel in the data's units, the others in standardised units)",
    )  # fmt: skip


def _strip_steps(model: nn.Module) -> list[int]:
    """Timesteps of the snapshots, from L down to 0, at even steps in noise level."""
    levels = V.noise_level_timesteps(model, _STRIP_NOISE_LEVELS)
    return list(dict.fromkeys([int(model.diffusion_steps), *levels, 0]))


def _reverse_figures(run: _Run) -> dict[str, Path]:
    steps = int(run.model.diffusion_steps)
    if run.reverse is None:
        generator = torch.Generator(device=next(run.model.buffers()).device).manual_seed(run.seed)
        n = min(_TRAJECTORY_POINTS // 2, len(run.real))
        with V.record_reverse_process(run.model, n) as recording:
            final = run.model.sample(n, generator=generator, steps=run.sampling_steps or None)
        run.reverse = recording.trajectory(final.double().cpu().numpy())
    timesteps, states = run.reverse[0], run.reverse[1][:, :_TRAJECTORY_POINTS]
    snapshots = V.closest_indices(timesteps, _strip_steps(run.model))
    title = f"{run.title}: reverse process, from noise (i = {steps}) to samples (i = 0)"
    written = _strip(run, "reverse", [(f"x_{int(timesteps[k])}", states[k]) for k in snapshots], title)
    frames = V.closest_indices(timesteps, V.frame_timesteps(steps, _GIF_FRAMES))
    written["reverse_gif"] = P.plot_animation(
        [(f"reverse step i = {int(timesteps[k])}", states[k]) for k in frames],
        written["reverse"].with_suffix(".gif"), reference=run.real, suptitle=run.title,
    )  # fmt: skip
    return written


def _forward_figure(run: _Run) -> dict[str, Path]:
    steps = _strip_steps(run.model)[::-1]
    diffused = V.forward_process(run.model, run.real[:_TRAJECTORY_POINTS], steps, seed=run.seed)
    title = f"{run.title}: forward process q(x_i | x_0), from data (i = 0) to noise (i = {steps[-1]})"
    return _strip(run, "forward", [(f"x_{i}", x) for i, x in zip(steps, diffused, strict=True)], title)


def _strip(run: _Run, name: str, shots: list[tuple[str, np.ndarray]], title: str) -> dict[str, Path]:
    """A strip of snapshots of a diffusion on one scale, so the points are seen to spread from the data
    into the noise or to gather back onto it."""
    together = np.concatenate([points for _, points in shots])
    return run.draw(name, P.plot_panels, shots, suptitle=title, small=True, reference=together,
                    share_reference=[True] * len(shots))  # fmt: skip


def _vector_field_figure(run: _Run) -> dict[str, Path]:
    grid, _ = P.grid_for(run.real, resolution=_FIELD_RESOLUTION)
    field = V.denoising_field(run.model, grid, V.noise_level_timesteps(run.model))
    titles = [f"i = {i}, noise σ̄ = {s:.2f}" for i, s in zip(field.timesteps, field.sigmas, strict=True)]
    title = rf"{run.title}: learned denoising direction $-\bar{{\sigma}}_i\,\epsilon_\theta(x, i)$ (grey: data)"
    panels = list(zip(titles, field.vectors, strict=True))
    return run.draw(
        "vector_field", P.plot_vector_fields, field.points, panels, background=run.real[:5000], suptitle=title
    )


_MIDDLE_PANELS = {"latent": _latent_panel, "forward_process": _diffused_panel}

FIGURES: dict[str, Callable[[_Run], dict[str, Path]]] = {
    "latent": _latent_figure,
    "warped_grid": _warped_grid_figure,
    "density": _density_figure,
    "reverse_process": _reverse_figures,
    "forward_process": _forward_figure,
    "vector_fields": _vector_field_figure,
}


def _history_figures(run: _Run, history: Mapping[str, Sequence[float]]) -> dict[str, Path]:
    """The loss per epoch (the spec's ``loss_figure`` series and its held-out twin) and the diagnostics."""
    spec, style = run.spec, run.spec.loss_figure
    series = style.get("series", "train_loss")
    beside = "test_" + series.removeprefix("train_")
    loss: dict[str, Sequence[float]] = {"epoch": list(history["epoch"]), series: history["loss"]}
    loss.update({beside: history[beside]} if beside in history else {})
    # the loss on the rows held out of training to choose the kept weights (training.validation_fraction)
    loss.update({"validation_" + beside.removeprefix("test_"): history["validation_loss"]}
                if "validation_loss" in history else {})  # fmt: skip
    title = style.get("title", f"{spec.title}: training loss per epoch")
    ylabel = style.get("ylabel", spec.loss_label)
    written = run.draw("loss", P.plot_loss, loss, ylabel=ylabel, title=title)
    apart = [k for k in history if k.startswith("test_") and k != beside]
    extra = {k: history[k] for k in (*apart, "lr", "grad_norm") if k in history}
    held_out = ", ".join(P.pretty_label(k.removeprefix("test_")) for k in apart if not k.endswith("_se"))
    titles = {"loss": spec.loss_label, "held-out": f"held-out {held_out} [nats]"}
    if any(k.endswith("_se") for k in apart):  # a stochastic estimate (the DDPM bound over sampled timesteps)
        titles["held-out"] += "\nestimated during training; the metrics file's value is exact"
    return written | run.draw(
        "diagnostics", P.plot_training_diagnostics, loss | extra, heldout=apart, titles=titles
    )


def default_plot_dir(checkpoint: str | os.PathLike[str]) -> Path:
    """``RUN/checkpoints/x.pt`` -> ``RUN``, else the checkpoint's folder."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def plot_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str] | None = None,
    fmt: str = "png",
    data: str | os.PathLike[str] | None = None,
    text: str | None = None,
    n_samples: int = 5000,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Path]:
    """Every figure of a checkpoint's model and the results page (``genmodels plot``)."""
    from genmodels.train.acceleration import resolve_device
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    if n_samples < 1:
        raise ConfigError(f"--n_samples must be >= 1 (got {n_samples})")
    dev = resolve_device(device)
    payload = load_checkpoint(checkpoint, map_location=dev)
    model = model_from_checkpoint(payload, device=dev)
    real = checkpoint_points(payload, checkpoint, data)
    data_name = data or (payload.get("data") or {}).get("path") or payload["config"].data.path
    sampling, info = payload["config"].sampling, payload.get("labels")
    labels = draw_labels(model, n_samples, seed)  # a conditional model's, in the training proportions
    real_labels = info["test_labels"].numpy() if info is not None and data is None else None
    with V.reverse_recording(model, _TRAJECTORY_POINTS) as recording:
        samples = sample_model(
            model, n_samples, seed=seed, chunk_size=sampling.chunk_size, sampling_steps=sampling.sampling_steps,
            eta=sampling.eta, ddim_spacing=sampling.ddim_spacing, ddim_order=sampling.ddim_order, label=labels,
        )  # fmt: skip
    reverse = recording.trajectory(samples) if recording is not None else None
    labels = None if labels is None else labels[np.isfinite(samples).all(1)]
    samples = finite_samples(samples)
    held_out = [torch.as_tensor(real[:20000], dtype=torch.float32, device=dev)]
    held_out += [] if real_labels is None else [torch.as_tensor(real_labels[:20000], device=dev)]
    metrics: dict[str, Any] = model.held_out_metrics(*held_out)  # no_grad inside
    metrics["c2st"] = evaluate_samples(samples[:2000], real, None, seed=seed)["c2st"]
    return write_figures(
        model, payload["model_type"], real, samples, (payload.get("trainer") or {}).get("history") or {},
        default_plot_dir(checkpoint) if output_dir is None else Path(output_dir), fmt=fmt, metrics=metrics,
        columns=payload.get("columns"), data_name=data_name, text=text, reverse=reverse,
        sampling_steps=sampling.sampling_steps, seed=seed, real_labels=real_labels,
        labels=None if labels is None else (info["names"], labels),
    )  # fmt: skip


def run_checkpoints(run_dir: str | Path) -> list[tuple[str, Path]]:
    """``(model_type, path)`` of each final checkpoint (``<model>.pt``, else ``<model>_last.pt``) of a run."""
    found = []
    for name in model_names():
        paths = [Path(run_dir) / "checkpoints" / f"{name}{end}.pt" for end in ("", "_last")]
        found += [(name, path) for path in paths if path.is_file()][:1]
    return found


def compare_checkpoints(
    checkpoints: Sequence[tuple[str, str | Path]], output_dir: str | Path, **options: Any
) -> tuple[str, dict[str, Path]]:
    """Evaluate every ``(label, checkpoint)``; write and return the Markdown table, JSON and figure."""
    if not checkpoints:
        raise ConfigError("nothing to compare: no checkpoints given or found")
    out = Path(output_dir)
    results: list[tuple[str, Evaluation]] = []
    for label, path in checkpoints:
        named = str(path) in label or str(Path(path).parent.parent) in label  # the file, or its run's folder
        log.info("evaluating %s", label if named else f"{label} ({path})")
        results.append((label, evaluate_checkpoint(path, **options)))
    others = [label for label, ev in results[1:] if not np.array_equal(ev.real, results[0][1].real)]
    if others:
        log.warning(
            "%s %s evaluated on other points than %s (each run on its own held-out split): the numbers "
            "are not directly comparable; --data evaluates every run on the same file",
            ", ".join(others), "was" if len(others) == 1 else "were", results[0][0],
        )  # fmt: skip
    table = compare_table([(label, ev.metrics) for label, ev in results])
    paths = {"table": out / "compare.md", "json": out / "compare.json"}
    write_text(paths["table"], table)
    write_json(paths["json"], {label: ev.metrics for label, ev in results})
    paths["figure"] = _compare_figure([ev for _, ev in results], out / "figures" / "compare.png")
    return table, paths


def _compare_figure(results: Sequence[Evaluation], path: Path, resolution: int = 40) -> Path:
    """Real data and each model's first run's samples; for 2-D data their log-densities (last likelihood)."""
    real = results[0].real
    panels: list[tuple[str, np.ndarray]] = [("Real data", real)]
    densities: list[tuple[str, np.ndarray, tuple[float, float, float, float]]] = []
    first = {ev.metrics["model"]: ev for ev in reversed(results)}  # each model's first run
    shown = [get_spec(name).title for name in model_names() if name in first]
    for name in (name for name in model_names() if name in first):
        ev, spec = first[name], get_spec(name)
        c2st = ev.metrics["samples"]["c2st_mlp"]["value"]
        panels.append((f"{spec.title} samples (C2ST {c2st:.3f})", ev.samples))
        if real.shape[1] == 2 and ev.model is not None:
            grid, extent = P.grid_for(real, resolution=resolution)
            estimator, nll_of = list(spec.likelihoods.items())[-1]
            with torch.no_grad():
                logp = -nll_of(ev.model, V.model_tensor(ev.model, grid), None).double().cpu().numpy()
            how = {"ode": "probability-flow ODE"}.get(estimator, estimator)
            densities.append((f"{spec.title} log p(x), {how}", logp.reshape(resolution, resolution), extent))
    if densities:  # under the data: their own log-density on the same grid, for reference
        densities.insert(0, ("Data log p(x), histogram", _histogram_log_density(real, densities[0][2], resolution),
                             densities[0][2]))  # fmt: skip
    return P.plot_compare(
        panels, densities, path, columns=results[0].columns or None,
        suptitle=" vs ".join(shown) if len(shown) > 1 else f"{shown[0]} and the data",
    )  # fmt: skip


def _histogram_log_density(
    points: np.ndarray, extent: tuple[float, float, float, float], bins: int
) -> np.ndarray:
    """``log`` of the points' histogram density on a ``bins x bins`` grid over ``extent`` (rows: y), in
    nats; empty cells are -inf."""
    x0, x1, y0, y1 = extent
    counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=bins, range=[[y0, y1], [x0, x1]])
    with np.errstate(divide="ignore"):
        return np.log(counts / (len(points) * (x1 - x0) * (y1 - y0) / bins**2))


_OLDER_NOTE = (
    '<h3>Older figures</h3>\n<p class="muted">Written before these metrics, by an earlier run into this '
    "folder; they may not show this run's model.</p>"
)
_RUN_FILES = (("metrics/{}_history.csv", "training history (CSV)"), ("samples/{}.csv", "generated samples (CSV)"),
              ("checkpoints/{}.pt", "checkpoint"))  # fmt: skip
_IMAGE_SUFFIXES = (".png", ".svg", ".gif", ".jpg", ".jpeg", ".pdf")  # a PDF is linked, not shown


def _cell(value: Any) -> str:
    """A metric's ``<td>``: numbers right-aligned, missing and non-finite ones "n/a"."""
    if value is None or isinstance(value, float):
        text, cls = (f"{value:.6g}" if value is not None and math.isfinite(value) else "n/a"), "num"
    elif isinstance(value, int) and not isinstance(value, bool):
        text, cls = f"{value:,}", "num"
    else:
        text, cls = (json.dumps(value) if isinstance(value, (list, dict)) else str(value)), ""
    return f'<td class="{cls}">{html.escape(text)}</td>'


def _table(rows: Sequence[tuple[Any, str]]) -> str:
    """An HTML table of ``(row header, cells)`` rows."""
    body = "\n".join(f"<tr><th>{html.escape(str(head))}</th>{cells}</tr>" for head, cells in rows)
    return f"<table>\n{body}\n</table>"


def _figure_key(model_type: str, path: Path) -> str:
    stem = path.stem[len(model_type) + 1 :] if model_type else path.stem
    return "reverse_gif" if model_type and path.suffix == ".gif" and stem == "reverse" else stem


def _figure_html(model_type: str, path: Path) -> str:
    caption = _CAPTIONS.get(_figure_key(model_type, path), path.stem.replace("_", " "))
    rel, name, caption = (html.escape(s) for s in (f"figures/{path.name}", path.name, caption))
    if path.suffix.lower() == ".pdf":
        return f'<figure><a href="{rel}">{name}</a><figcaption>{caption}</figcaption></figure>'
    return (
        f'<figure><img src="{rel}" alt="{html.escape(path.stem)}"{_display_width(path)} loading="eager">'
        f'<figcaption>{caption} <span class="muted">({name})</span></figcaption></figure>'
    )


def _display_width(path: Path) -> str:
    """The ``width`` attribute (CSS pixels) showing every raster figure at one scale (90 per figure inch)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            dpi = image.info.get("dpi", (100.0 if path.suffix.lower() == ".gif" else P.DPI,))[0]
            return f' width="{round(image.width / float(dpi) * 90)}"'
    except (OSError, ValueError):  # an SVG, a PDF or a damaged file: its own size
        return ""


def write_index(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/index.html`` (relative links only): per model its metrics, figures and config."""
    out = Path(out_dir)
    figures = [p for p in sorted((out / "figures").glob("*")) if p.suffix.lower() in _IMAGE_SUFFIXES]
    own = {name: [p for p in figures if p.name.startswith(name + "_")] for name in model_names()}
    results = {name: (out / "metrics" / f"{name}.json", out / "configs" / f"{name}.yaml") for name in own}
    models = [name for name, mine in own.items() if mine or any(p.is_file() for p in results[name])]
    sections = [_model_section(out, name, own[name], *results[name]) for name in models]
    others = [_figure_html("", p) for p in figures if not any(p in mine for mine in own.values())]
    body = "\n".join(sections + (['<h2 id="other">Other figures</h2>', *others] if others else []))
    title = html.escape(f"genmodels results: {out.resolve().name}")
    links = ", ".join(f'<a href="#{m}">{get_spec(m).title}</a>' for m in models) or "No results yet."
    written = html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))
    page = Template((files(__package__) / "page.html").read_text(encoding="utf-8"))
    write_text(out / "index.html", page.substitute(title=title, written=written, links=links, sections=body))
    return out / "index.html"


def _model_section(out: Path, name: str, figures: list[Path], metrics_file: Path, config: Path) -> str:
    parts = [f'<h2 id="{name}">{get_spec(name).title}</h2>']
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
    except (OSError, ValueError) as error:
        log.warning("results page: %s not readable (%s); skipped", metrics_file, error)
        metrics = None
    if isinstance(metrics, dict) and metrics:
        per_label = metrics.pop("labels", None)
        units = metrics.get("units") if isinstance(metrics.get("units"), Mapping) else {}
        unit = {key: f'<td class="muted">{html.escape(str(units.get(key, "")))}</td>' for key in metrics}
        rows = [(key, _cell(v) + unit[key]) for key, v in metrics.items() if key != "units" or not units]
        parts += ["<h3>Metrics</h3>", _table(rows)]
        if isinstance(per_label, Mapping) and per_label:  # one row per label, one column per metric
            keys = list(dict.fromkeys(k for entry in per_label.values() for k in entry))
            head = ("label", "".join(f"<th>{html.escape(k)}</th>" for k in keys))
            rows = [(name, "".join(_cell(entry.get(k)) for k in keys)) for name, entry in per_label.items()]
            parts += ["<h3>Per label</h3>", _table([head, *rows])]
    found = {rel.format(name): text for rel, text in _RUN_FILES}
    links = [f'<a href="{html.escape(r)}">{text}</a>' for r, text in found.items() if (out / r).is_file()]
    if links:
        parts.append('<p class="muted">' + " · ".join(links) + "</p>")
    written = metrics_file.stat().st_mtime_ns if metrics_file.is_file() else None
    keys, rank = {p: _figure_key(name, p) for p in figures}, {k: i for i, k in enumerate(_CAPTIONS)}
    figures = sorted(figures, key=lambda p: (rank.get(keys[p], len(rank)), keys[p], p.suffix))
    if "diagnostics" in keys.values():  # its first panel is the loss figure
        names = [html.escape(p.name) for p in figures if keys[p] == "loss"][:1]
        figures = [p for p in figures if keys[p] != "loss"]
        parts += [f'<p class="muted">Loss alone: <a href="figures/{n}">{n}</a></p>' for n in names]
    older = [p for p in figures if written is not None and p.stat().st_mtime_ns < written]
    current = [p for p in figures if p not in older]
    for heading, group in (("<h3>Figures</h3>", current), (_OLDER_NOTE, older)):
        parts += [heading, *(_figure_html(name, p) for p in group)] if group else []
    if config.is_file():
        text = html.escape(config.read_text(encoding="utf-8"))
        parts += ["<h3>Effective config</h3>", f"<pre>{text}</pre>"]
    return "\n".join(parts)


class TensorBoardLog:
    """Logs the rows of a trainer's history not yet logged to TensorBoard, NaNs skipped."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package, which is not installed: "
                "pip install tensorboard  (or: pip install 'genmodels[tensorboard]')"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.written = 0

    def update(self, history: Mapping[str, Sequence[float]]) -> None:
        epochs = list(history.get("epoch", []))
        for row in range(self.written, len(epochs)):
            for key, values in history.items():
                value = float(values[row]) if key != "epoch" and row < len(values) else math.nan
                if math.isfinite(value):
                    self.writer.add_scalar(key, value, int(epochs[row]))
        self.written = len(epochs)
        self.writer.flush()

    def wrap(
        self, evaluate: Callable[[nn.Module], dict[str, float]] | None, history: Mapping[str, Sequence[float]]
    ) -> Callable[[nn.Module], dict[str, float]] | None:
        """``evaluate`` that also logs the history so far each time it runs (None stays None)."""

        def evaluate_and_log(model: nn.Module) -> dict[str, float]:
            self.update(history)
            return evaluate(model)

        return None if evaluate is None else evaluate_and_log

    def close(self, history: Mapping[str, Sequence[float]]) -> None:
        self.update(history)
        self.writer.close()
