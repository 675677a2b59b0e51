"""The figures and the results page of a run.

:func:`write_figures` draws every figure of one trained model (the training run and ``genmodels plot``
both call it, so a figure is made in one place only) and :func:`write_index` writes
``OUTPUT_DIR/index.html``: a static page, viewable offline, with every figure of the run directory,
the metrics tables of ``metrics/*.json`` and the effective configs of ``configs/*.yaml``.

Figures under ``OUTPUT_DIR/figures/`` (``<model>_<name>.<fmt>``; the animation is always a GIF):

* both models: ``results`` (data | latent or diffused | samples), ``loss``, ``diagnostics`` (loss,
  held-out NLL, learning rate, gradient norm); for D > 2 also ``pairs`` (real vs generated);
* RealNVP: ``density`` (log-density heatmap with the data's contours, 2-D), ``warped_grid`` (a
  regular grid pushed through the couplings, 2-D), ``latent`` (data and latent coloured by glyph);
* DDPM: ``reverse`` (snapshots x_L ... x_0), ``reverse.gif``, ``forward`` (x_0 ... x_L) and
  ``vector_field`` (the learned denoising direction at a few noise levels, 2-D).

:class:`TensorBoardLog` mirrors the training history to TensorBoard (optional dependency).
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genmodels.errors import ConfigError, DataError
from genmodels.evaluation.scoring import Evaluation, compare_table, evaluate_checkpoint, log_density_grid
from genmodels.fileio import write_text
from genmodels.plots import arrays as V

__all__ = [
    "FIGURE_ORDER",
    "TensorBoardLog",
    "glyph_colouring",
    "plot_checkpoint",
    "write_figures",
    "write_index",
]

log = logging.getLogger(__name__)

_TITLES = {"realnvp": "RealNVP", "ddpm": "DDPM"}
FIGURE_ORDER = (
    "results",
    "density",
    "warped_grid",
    "latent",
    "reverse",
    "reverse_gif",
    "forward",
    "vector_field",
    "pairs",
    "diagnostics",
    "loss",
)
"""Keys of :func:`write_figures`'s result in the order the results page shows them."""

_CAPTIONS = {
    "results": "Data, the model's intermediate space, and generated samples.",
    "density": "The model's log-density log p(x) with the data's 50 % / 90 % highest-density contours.",
    "warped_grid": "A regular grid in data space (and data points) pushed through the flow, "
    "coupling by coupling: how each layer bends space (after the first panel, in standardised units).",
    "latent": "Where each part of the data lands in the latent space z = f(x).",
    "reverse": "The reverse (generative) process: snapshots of x_i from pure noise (i = L) to samples (i = 0).",
    "reverse_gif": "The reverse process, animated.",
    "forward": "The forward (noising) process: data x_0 diffused to x_i ~ q(x_i | x_0).",
    "vector_field": "The learned denoising direction -σ̄_i ε_θ(x, i) on a grid at a few noise levels.",
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


# --------------------------------------------------------------------------------------------------
# Colouring by glyph
# --------------------------------------------------------------------------------------------------


def glyph_colouring(
    points: np.ndarray, *, text: str | None, data_name: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, list[str] | None, str]:
    """How to colour points so a reader can follow them into the latent space.

    With ``text`` (or, when ``text`` is None, ``"689"`` for a data file named ``689_data.csv``), the
    points are labelled by the character of the text-generator layout they lie in (see
    :func:`genmodels.data.glyph_labels`), if at least half of them lie in some glyph. Otherwise,
    or for ``text=""``, they are coloured by the quantile of their first coordinate.

    Returns:
        ``(labels, categories, note)``: integer labels with category names, or floats in [0, 1]
        with ``categories`` None; ``note`` says what the colour means.
    """
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
                "only %.0f%% of the points lie in the glyphs of %r; colouring by x quantile instead",
                100 * share,
                text,
            )
    ranks = np.argsort(np.argsort(pts[:, 0], kind="stable"), kind="stable")
    return ranks / max(len(pts) - 1, 1), None, "colour: quantile of the first coordinate"


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _fmt_number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _headline(model_type: str, metrics: Mapping[str, Any]) -> str:
    """The numbers for figure titles: test NLL (RealNVP) or NLL bound, and C2ST when known."""
    parts = []
    if model_type == "realnvp" and metrics.get("test_nll") is not None:
        parts.append(f"test NLL {_fmt_number(metrics['test_nll'])} nats")
    if model_type == "ddpm" and metrics.get("test_nll_bound") is not None:
        parts.append(f"NLL bound {_fmt_number(metrics['test_nll_bound'])} nats")
    if metrics.get("c2st") is not None:
        parts.append(f"C2ST {_fmt_number(metrics['c2st'])}")
    return ", ".join(parts)


def _latent_names(dim: int) -> list[str]:
    """Axis names of the latent space: z1, z2, ... (subscripts, as in z = f(x))."""
    subscripts = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    return [f"z{str(i + 1).translate(subscripts)}" for i in range(dim)]


def _subsample(values: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(values) <= n:
        return values
    keep = np.sort(np.random.default_rng(seed).choice(len(values), n, replace=False))
    return values[keep]


def write_figures(
    model: nn.Module,
    model_type: str,
    real: np.ndarray,
    samples: np.ndarray,
    history: Mapping[str, Sequence[float]] | None,
    out_dir: str | os.PathLike[str],
    *,
    fmt: str = "png",
    metrics: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    data_name: str | os.PathLike[str] | None = None,
    text: str | None = None,
    reverse: tuple[np.ndarray, np.ndarray] | None = None,
    sampling_steps: int = 0,
    seed: int = 0,
    index: bool = True,
) -> dict[str, Path]:
    """Draw every figure of a trained model into ``out_dir/figures`` (and ``out_dir/index.html``).

    Args:
        model: the trained RealNVP or DDPM (eval mode; its device is used).
        model_type: ``"realnvp"`` or ``"ddpm"``.
        real: (N, D) real points in data units (the figures use at most 20,000 of them).
        samples: (M, D) generated points in data units.
        history: the trainer's per-epoch history (None or empty: no loss/diagnostics figures).
        out_dir: the run directory.
        fmt: "png", "svg" or "pdf" (the animation is always a GIF).
        metrics: numbers for the titles (``test_nll``, ``test_nll_bound``, ``c2st``).
        columns: the data's column names.
        data_name: the data file, used to recognise text data for the glyph colouring.
        text: the text of text data ("" = not text; None = guess from ``data_name``).
        reverse: DDPM: ``(timesteps, states)`` of a recorded reverse process
            (:meth:`genmodels.plots.arrays.ReverseRecording.trajectory`); None draws a small one.
        sampling_steps: DDPM: reverse steps used when ``reverse`` is None (0 = all).
        seed: seed of the subsampling and noise of the figures.
        index: also rewrite ``out_dir/index.html``.

    Returns:
        ``{name: path}`` of every file written (names as in :data:`FIGURE_ORDER`, plus "index").
    """
    from genmodels.plots import figures as P

    start = time.perf_counter()
    if model_type not in _TITLES:
        raise ConfigError(f"unknown model type {model_type!r}")
    out = Path(out_dir)
    fig_dir = out / "figures"
    real = np.asarray(real, dtype=float)
    samples = np.asarray(samples, dtype=float)
    dim = real.shape[1]
    metrics = dict(metrics or {})
    headline = _headline(model_type, metrics)
    name = _TITLES[model_type]
    where = f" on {Path(data_name).name}" if data_name else ""
    written: dict[str, Path] = {}

    def target(key: str) -> Path:
        return fig_dir / f"{model_type}_{key}.{fmt}"

    real_show = _subsample(real, _SHOW_POINTS, seed)
    samples_show = samples[:_SHOW_POINTS]
    model.eval()

    if dim >= 2:
        # The specification's three panels.
        if model_type == "realnvp":
            middle = ("Latent z = f(x)", V.latent(model, real_show))
            middle_names = _latent_names(dim)
        else:
            with torch.no_grad():
                x = torch.as_tensor(real_show, dtype=torch.float32, device=next(model.buffers()).device)
                generator = torch.Generator(device=x.device).manual_seed(seed)
                diffused = model.forward_diffuse(x, model.diffusion_steps, generator=generator)
            middle = ("Forward Diffused", diffused.double().cpu().numpy())
            names = list(columns) if columns is not None else [f"x{i + 1}" for i in range(dim)]
            middle_names = [f"{name} (standardised)" for name in names]
        written["results"] = P.plot_panels(
            [
                ("Original Data", real_show),
                middle,
                (f"Generated Samples\n{headline}" if headline else "Generated Samples", samples_show),
            ],
            target("results"),
            columns=columns,
            panel_columns=[None, middle_names, None],
            reference=real_show,
            share_reference=[True, False, True],
            suptitle=f"{name}{where}",
            fmt=fmt,
        )
    else:
        log.info("the data are 1-D: scatter figures skipped")

    if dim > 2:
        written["pairs"] = P.plot_pairs(
            real_show, samples_show, target("pairs"), columns=columns, suptitle=f"{name}{where}", fmt=fmt
        )
    elif dim == 2:
        log.debug("2-D data: no pair plot")

    if model_type == "realnvp" and dim >= 2:
        _realnvp_figures(
            model,
            real_show,
            target,
            written,
            dim=dim,
            headline=headline,
            where=where,
            columns=columns,
            data_name=data_name,
            text=text,
            fmt=fmt,
            seed=seed,
        )
    if model_type == "ddpm" and dim >= 2:
        _ddpm_figures(
            model,
            real_show,
            target,
            written,
            dim=dim,
            where=where,
            reverse=reverse,
            sampling_steps=sampling_steps,
            fmt=fmt,
            seed=seed,
        )

    if history and len(history.get("epoch", [])):
        _history_figures(model_type, history, target, written, fmt=fmt)

    if index:
        written["index"] = write_index(out)
    log.info("figures written to %s in %.1f s", fig_dir, time.perf_counter() - start)
    return written


def _realnvp_figures(
    flow: nn.Module,
    real: np.ndarray,
    target: Callable[[str], Path],
    written: dict[str, Path],
    *,
    dim: int,
    headline: str,
    where: str,
    columns: Sequence[str] | None,
    data_name: str | os.PathLike[str] | None,
    text: str | None,
    fmt: str,
    seed: int,
) -> None:
    from genmodels.plots import figures as P

    labels, categories, note = glyph_colouring(real, text=text, data_name=data_name)
    z = V.latent(flow, real)
    written["latent"] = P.plot_coloured_panels(
        [("data x", real), ("latent z = f(x)", z)],
        labels,
        target("latent"),
        categories=categories,
        normal_rings=[False, True],
        panel_columns=[columns, _latent_names(dim)],
        suptitle=f"RealNVP{where}: where the data land in the latent space",
        colour_note=note,
        fmt=fmt,
    )
    if dim != 2:
        log.info("the data are %d-D: density heatmap and warped grid skipped (2-D only)", dim)
        return
    grid, extent = P.grid_for(real, resolution=_DENSITY_RESOLUTION)
    logp = V.log_density_on_grid(flow, grid).reshape(_DENSITY_RESOLUTION, _DENSITY_RESOLUTION)
    written["density"] = P.plot_density(
        logp,
        extent,
        target("density"),
        points=real,
        title=f"RealNVP log-density{where}" + (f"\n{headline}" if headline else ""),
        columns=columns,
        fmt=fmt,
    )
    carried = _subsample(np.arange(len(real)), 1500, seed + 1)
    warped = V.warped_grid(flow, extent, points=real[carried], n_panels=5)
    written["warped_grid"] = P.plot_warped_grid(
        list(zip(warped.titles, warped.lines, warped.points, strict=True)),
        target("warped_grid"),
        labels=labels[carried],
        categories=categories,
        suptitle=f"RealNVP{where}: a regular grid in data space pushed through the flow\n"
        "(the first panel in the data's units, the others in standardised units)",
        fmt=fmt,
    )


def _ddpm_figures(
    model: nn.Module,
    real: np.ndarray,
    target: Callable[[str], Path],
    written: dict[str, Path],
    *,
    dim: int,
    where: str,
    reverse: tuple[np.ndarray, np.ndarray] | None,
    sampling_steps: int,
    fmt: str,
    seed: int,
) -> None:
    from genmodels.plots import figures as P

    steps = int(model.diffusion_steps)
    if reverse is None:
        generator = torch.Generator(device=next(model.buffers()).device).manual_seed(seed)
        n = min(_TRAJECTORY_POINTS // 2, len(real))
        with V.record_reverse_process(model, n) as recording:
            final = model.sample(n, generator=generator, steps=sampling_steps or None)
        reverse = recording.trajectory(final.double().cpu().numpy())
    timesteps, states = reverse
    states = states[:, :_TRAJECTORY_POINTS]
    # Snapshots at even steps in noise level, not in i: with the default schedule x_i is almost pure
    # noise for i above about L/2, and the digits form in the last few hundred steps.
    strip_steps = list(dict.fromkeys([steps, *V.noise_level_timesteps(model, _STRIP_NOISE_LEVELS), 0]))
    chosen = V.closest_indices(timesteps, strip_steps)
    written["reverse"] = P.plot_strip(
        [(f"x_{int(timesteps[k])}", states[k]) for k in chosen],
        target("reverse"),
        suptitle=f"DDPM{where}: reverse process, from noise (i = {steps}) to samples (i = 0)",
        fmt=fmt,
    )
    frames = V.closest_indices(timesteps, V.frame_timesteps(steps, _GIF_FRAMES))
    written["reverse_gif"] = P.plot_animation(
        [(f"reverse step i = {int(timesteps[k])}", states[k]) for k in frames],
        target("reverse").with_name(target("reverse").stem + ".gif"),
        reference=real,
        suptitle=f"DDPM{where}",
    )
    forward_steps = list(dict.fromkeys(strip_steps[::-1]))
    x0 = real[:_TRAJECTORY_POINTS]
    diffused = V.forward_process(model, x0, forward_steps, seed=seed)
    written["forward"] = P.plot_strip(
        [(f"x_{i}", xi) for i, xi in zip(forward_steps, diffused, strict=True)],
        target("forward"),
        suptitle=f"DDPM{where}: forward process q(x_i | x_0), from data (i = 0) to noise (i = {steps})",
        fmt=fmt,
    )
    if dim != 2:
        log.info("the data are %d-D: denoising vector field skipped (2-D only)", dim)
        return
    grid, _ = P.grid_for(real, resolution=_FIELD_RESOLUTION)
    field = V.denoising_field(model, grid, V.noise_level_timesteps(model))
    written["vector_field"] = P.plot_vector_fields(
        field.points,
        [
            (f"i = {i}, noise σ̄ = {s:.2f}", v)
            for i, s, v in zip(field.timesteps, field.sigmas, field.vectors, strict=True)
        ],
        target("vector_field"),
        background=real[:5000],
        suptitle=f"DDPM{where}: learned denoising direction -σ̄_i ε_θ(x, i) (grey: data)",
        fmt=fmt,
    )


def _history_figures(
    model_type: str,
    history: Mapping[str, Sequence[float]],
    target: Callable[[str], Path],
    written: dict[str, Path],
    *,
    fmt: str,
) -> None:
    from genmodels.plots import figures as P

    epochs = list(history["epoch"])
    loss_history: dict[str, Sequence[float]] = {"epoch": epochs}
    if model_type == "realnvp":
        loss_history["train_nll"] = history["loss"]
        if "test_nll" in history:
            loss_history["test_nll"] = history["test_nll"]
        ylabel = "negative log-likelihood [nats]"
    else:
        loss_history["weighted_mse"] = history["loss"]
        ylabel = "weighted MSE"
    title = (
        "RealNVP: NLL per epoch (train: mean over the epoch's batches; held-out: averaged weights)"
        if model_type == "realnvp"
        else "DDPM: training loss per epoch (weighted MSE of the posterior mean)"
    )
    written["loss"] = P.plot_loss(loss_history, target("loss"), ylabel=ylabel, title=title, fmt=fmt)
    diag = dict(loss_history)
    heldout: list[str] = []
    if model_type == "ddpm" and "test_nll_bound" in history:
        diag["test_nll_bound"] = history["test_nll_bound"]
        heldout.append("test_nll_bound")
    for key in ("lr", "grad_norm"):
        if key in history:
            diag[key] = history[key]
    titles = {"loss": "loss [nats]" if model_type == "realnvp" else "training loss (weighted MSE)"}
    titles["held-out"] = "held-out NLL bound [nats]"
    written["diagnostics"] = P.plot_training_diagnostics(
        diag, target("diagnostics"), heldout=heldout, titles=titles, fmt=fmt
    )


# --------------------------------------------------------------------------------------------------
# The results page
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; margin-top: .3em; }
table { border-collapse: collapse; font-size: .92em; margin: .5em 0 1em; }
td, th { border: 1px solid #ddd; padding: .25em .7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .88em; }
.muted { color: #777; font-size: .9em; }
"""
_IMAGE_SUFFIXES = (".png", ".svg", ".gif", ".jpg", ".jpeg")
_LINK_SUFFIXES = (".pdf",)


def _figure_key(model_type: str, path: Path) -> str:
    stem = path.stem[len(model_type) + 1 :]
    return "reverse_gif" if path.suffix == ".gif" and stem == "reverse" else stem


def _sort_figures(model_type: str, files: list[Path]) -> list[Path]:
    def rank(path: Path) -> tuple[int, str, str]:
        key = _figure_key(model_type, path)
        order = FIGURE_ORDER.index(key) if key in FIGURE_ORDER else len(FIGURE_ORDER)
        return order, key, path.suffix

    return sorted(files, key=rank)


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    """The metrics as an HTML table; their ``"units"`` entry, where it is a mapping, becomes a column."""
    units = metrics.get("units")
    units = units if isinstance(units, Mapping) else {}
    rows = []
    for key, value in metrics.items():
        if key == "units" and units:
            continue
        if isinstance(value, float):
            text, cls = (f"{value:.6g}" if math.isfinite(value) else "n/a"), "num"
        elif isinstance(value, int) and not isinstance(value, bool):
            text, cls = f"{value:,}", "num"
        elif value is None:
            text, cls = "n/a", "num"
        else:
            text, cls = (json.dumps(value) if isinstance(value, (list, dict)) else str(value)), ""
        unit = html.escape(str(units.get(key, "")))
        rows.append(
            f'<tr><th>{html.escape(str(key))}</th><td class="{cls}">{html.escape(text)}</td>'
            f'<td class="muted">{unit}</td></tr>'
        )
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _read_metrics(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("results page: %s not readable (%s); skipped", path, error)
        return None
    return data if isinstance(data, dict) else None


def write_index(out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/index.html``: every figure under ``figures/``, the metrics of
    ``metrics/*.json`` and the configs of ``configs/*.yaml``, one section per model. A model's figures
    older than its metrics file (left by an earlier run into the folder) are shown apart, as older.

    Figures are linked by relative paths and the page has no external resources, so the directory
    can be copied or opened offline as it is. Returns the path written.
    """
    out = Path(out_dir)
    fig_dir, metrics_dir, config_dir = out / "figures", out / "metrics", out / "configs"
    figures = [p for p in sorted(fig_dir.glob("*")) if p.suffix.lower() in _IMAGE_SUFFIXES + _LINK_SUFFIXES]
    models = [
        m
        for m in _TITLES
        if any(p.name.startswith(m + "_") for p in figures)
        or (metrics_dir / f"{m}.json").is_file()
        or (config_dir / f"{m}.yaml").is_file()
    ]
    known = {p for m in models for p in figures if p.name.startswith(m + "_")}
    title = f"genmodels results: {out.resolve().name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">Written {html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))}. '
        + (", ".join(f'<a href="#{m}">{_TITLES[m]}</a>' for m in models) or "No results yet.")
        + "</p>",
    ]
    for model in models:
        parts.append(f'<h2 id="{model}">{_TITLES[model]}</h2>')
        metrics = (
            _read_metrics(metrics_dir / f"{model}.json")
            if (metrics_dir / f"{model}.json").is_file()
            else None
        )
        if metrics:
            parts.append("<h3>Metrics</h3>")
            parts.append(_metrics_table(metrics))
        links = [
            (rel, label)
            for rel, label in (
                (f"metrics/{model}_history.csv", "training history (CSV)"),
                (f"samples/{model}.csv", "generated samples (CSV)"),
                (f"checkpoints/{model}.pt", "checkpoint"),
            )
            if (out / rel).is_file()
        ]
        if links:
            parts.append(
                '<p class="muted">'
                + " · ".join(f'<a href="{html.escape(rel)}">{html.escape(label)}</a>' for rel, label in links)
                + "</p>"
            )
        own = _sort_figures(model, [p for p in figures if p.name.startswith(model + "_")])
        # A run writes its metrics, then its figures: a figure older than the metrics was left by an
        # earlier run into this folder (a 2-D run's density before a 3-D one), so it is set apart.
        metrics_file = metrics_dir / f"{model}.json"
        written = metrics_file.stat().st_mtime_ns if metrics_file.is_file() else None
        older = [p for p in own if written is not None and p.stat().st_mtime_ns < written]
        own = [p for p in own if p not in older]
        if own:
            parts.append("<h3>Figures</h3>")
        for path in own:
            parts.append(_figure_html(model, path))
        if older:
            parts.append("<h3>Older figures</h3>")
            parts.append(
                '<p class="muted">Written before these metrics, by an earlier run into this folder; '
                "they may not show this run's model.</p>"
            )
            parts.extend(_figure_html(model, path) for path in older)
        config = config_dir / f"{model}.yaml"
        if config.is_file():
            parts.append("<h3>Effective config</h3>")
            parts.append(f"<pre>{html.escape(config.read_text(encoding='utf-8'))}</pre>")
    others = [p for p in figures if p not in known]
    if others:
        parts.append('<h2 id="other">Other figures</h2>')
        parts.extend(_figure_html("", p) for p in others)
    parts += ["</body>", "</html>", ""]
    target = out / "index.html"
    write_text(target, "\n".join(parts))
    return target


def _figure_html(model_type: str, path: Path) -> str:
    rel = html.escape(f"figures/{path.name}")
    key = _figure_key(model_type, path) if model_type else path.stem
    caption = html.escape(_CAPTIONS.get(key, path.stem.replace("_", " ")))
    if path.suffix.lower() in _LINK_SUFFIXES:
        return (
            f'<figure><a href="{rel}">{html.escape(path.name)}</a><figcaption>{caption}</figcaption></figure>'
        )
    return (
        f'<figure><img src="{rel}" alt="{html.escape(path.stem)}" loading="eager">'
        f'<figcaption>{caption} <span class="muted">({html.escape(path.name)})</span></figcaption></figure>'
    )


# --------------------------------------------------------------------------------------------------
# TensorBoard
# --------------------------------------------------------------------------------------------------


class TensorBoardLog:
    """Writes the rows of a trainer's history to TensorBoard as they appear.

    Call :meth:`update` with the history whenever convenient (e.g. at each evaluation, and once at
    the end): rows not yet written are logged as scalars against their epoch, NaNs skipped.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package, which is not installed: "
                "pip install tensorboard  (or: pip install 'genmodels[tensorboard]')"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.written = 0

    def update(self, history: Mapping[str, Sequence[float]]) -> None:
        """Log the history rows not logged yet."""
        epochs = list(history.get("epoch", []))
        for row in range(self.written, len(epochs)):
            for key, values in history.items():
                if key == "epoch" or row >= len(values):
                    continue
                value = float(values[row])
                if math.isfinite(value):
                    self.writer.add_scalar(key, value, int(epochs[row]))
        self.written = len(epochs)
        self.writer.flush()

    def wrap(
        self, evaluate: Callable[[nn.Module], dict[str, float]] | None, history: Mapping[str, Sequence[float]]
    ) -> Callable[[nn.Module], dict[str, float]] | None:
        """``evaluate`` that also logs the history so far each time it runs (None stays None)."""
        if evaluate is None:
            return None

        def evaluate_and_log(model: nn.Module) -> dict[str, float]:
            self.update(history)
            return evaluate(model)

        return evaluate_and_log

    def close(self, history: Mapping[str, Sequence[float]] | None = None) -> None:
        """Log what is left of ``history`` and close the writer."""
        if history is not None:
            self.update(history)
        self.writer.close()


# --------------------------------------------------------------------------------------------------
# genmodels plot
# --------------------------------------------------------------------------------------------------


def default_plot_dir(checkpoint: str | os.PathLike[str]) -> Path:
    """The run directory of a checkpoint: ``RUN/checkpoints/x.pt`` -> ``RUN``, else its folder."""
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
    """Every figure of a checkpoint's model, plus the results page (``genmodels plot``).

    The real points are the checkpoint's held-out split, or ``data`` (a CSV) when given. Samples are
    drawn afresh (``n_samples``, the run's sampling settings); the titles show the held-out NLL
    (RealNVP) or an estimate of its bound (DDPM), and a C2ST of the samples against the real points.
    """
    from genmodels.data import load_csv
    from genmodels.evaluation import metrics as M
    from genmodels.evaluation.sampling import sample_model
    from genmodels.train.acceleration import resolve_device
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    if n_samples < 1:
        raise ConfigError(f"--n_samples must be >= 1 (got {n_samples})")
    dev = resolve_device(device)
    payload = load_checkpoint(checkpoint, map_location=dev)
    model = model_from_checkpoint(payload, device=dev)
    model_type = payload["model_type"]
    config = payload["config"]
    if data is not None:
        real = load_csv(data).values
        data_name: str | None = str(data)
    else:
        test = payload.get("test_data")
        if test is None or len(test) == 0:
            raise ConfigError(f"{checkpoint} holds no held-out points; pass --data CSV to plot against")
        real = test.double().cpu().numpy()
        data_name = str((payload.get("data") or {}).get("path") or config.data.path)
    if real.shape[1] != payload["dim"]:
        raise DataError(f"{data} has {real.shape[1]} columns but the model was trained on {payload['dim']}")
    recorder = V.record_reverse_process(model, _TRAJECTORY_POINTS) if model_type == "ddpm" else None
    sampling = config.sampling
    if recorder is not None:
        with recorder as recording:
            samples = sample_model(
                model,
                n_samples,
                seed=seed,
                chunk_size=sampling.chunk_size,
                sampling_steps=sampling.sampling_steps,
                eta=sampling.eta,
                ddim_spacing=sampling.ddim_spacing,
            )
        reverse = recording.trajectory(samples)
    else:
        samples = sample_model(model, n_samples, seed=seed, chunk_size=sampling.chunk_size)
        reverse = None
    finite = np.isfinite(samples).all(axis=1)
    if not finite.all():
        log.warning(
            "%d of %d samples are not finite; they are left out of the figures", (~finite).sum(), len(samples)
        )
        samples = samples[finite]
    metrics: dict[str, Any] = {}
    x = torch.as_tensor(real[:20000], dtype=torch.float32, device=dev)
    with torch.no_grad():
        if model_type == "realnvp":
            metrics["test_nll"] = float(-model.log_prob(x).mean())
        else:
            metrics["test_nll_bound"] = float(model.nll_bound_estimate(x[:5000]).mean())
    n = min(len(samples), len(real), 2000)
    if n >= 10:
        rng = np.random.default_rng(seed)
        metrics["c2st"] = M.c2st(
            real[rng.choice(len(real), n, replace=False)],
            samples[rng.choice(len(samples), n, replace=False)],
            seed=seed,
        )
    history = (payload.get("trainer") or {}).get("history") or {}
    out = Path(output_dir) if output_dir is not None else default_plot_dir(checkpoint)
    return write_figures(
        model,
        model_type,
        real,
        samples,
        history,
        out,
        fmt=fmt,
        metrics=metrics,
        columns=payload.get("columns"),
        data_name=data_name,
        text=text,
        reverse=reverse,
        sampling_steps=sampling.sampling_steps,
        seed=seed,
    )


# Several runs side by side
# --------------------------------------------------------------------------------------------------


def run_checkpoints(run_dir: str | Path) -> list[tuple[str, Path]]:
    """The final checkpoints of a training output directory, ``(model_type, path)`` per model
    (``checkpoints/<model>.pt``, else ``checkpoints/<model>_last.pt``)."""
    found = []
    for model_type in ("realnvp", "ddpm"):
        for name in (f"{model_type}.pt", f"{model_type}_last.pt"):
            path = Path(run_dir) / "checkpoints" / name
            if path.is_file():
                found.append((model_type, path))
                break
    return found


def compare_checkpoints(
    checkpoints: Sequence[tuple[str, str | Path]],
    output_dir: str | Path,
    *,
    data: str | Path | None = None,
    device: str = "cpu",
    grid_resolution: int = 40,
    grid_ode_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[str, dict[str, Path]]:
    """Evaluate every ``(label, checkpoint)``, write ``compare.md``, ``compare.json`` and
    ``figures/compare.png`` under ``output_dir``; returns the Markdown table and the paths written.

    The figure shows the real data, the first RealNVP's and the first DDPM's samples, and their
    log-densities on a ``grid_resolution``² grid (RealNVP exactly; DDPM by the probability-flow ODE,
    with ``grid_ode_options``, default tolerances 1e-4 since only a picture is needed).
    """
    from genmodels.errors import ConfigError
    from genmodels.fileio import write_json, write_text
    from genmodels.plots import figures as plotting

    if not checkpoints:
        raise ConfigError("nothing to compare: no checkpoints given or found")
    out = Path(output_dir)
    results: list[tuple[str, Evaluation]] = []
    for label, path in checkpoints:
        log.info("evaluating %s", label if str(path) in label else f"{label} ({path})")
        results.append((label, evaluate_checkpoint(path, data=data, device=device, **options)))
    first_label, first_real = results[0][0], results[0][1].real
    others = [label for label, ev in results[1:] if not np.array_equal(ev.real, first_real)]
    if others:
        log.warning(
            "%s %s evaluated on other points than %s (each run on its own held-out split): the numbers "
            "are not directly comparable; --data evaluates every run on the same file",
            ", ".join(others),
            "was" if len(others) == 1 else "were",
            first_label,
        )
    table = compare_table([(label, ev.metrics) for label, ev in results])
    paths = {
        "table": out / "compare.md",
        "json": out / "compare.json",
        "figure": out / "figures" / "compare.png",
    }
    write_text(paths["table"], table)
    write_json(paths["json"], {label: ev.metrics for label, ev in results})

    first = results[0][1]
    real = first.real
    columns = first.columns or None
    panels: list[tuple[str, np.ndarray]] = [("Real data", real)]
    densities: list[tuple[str, np.ndarray, tuple[float, float, float, float]]] = []
    if real.shape[1] == 2:
        grid, extent = plotting.grid_for(real, resolution=grid_resolution)
    shown: list[str] = []
    for model_type, name in (("realnvp", "RealNVP"), ("ddpm", "DDPM")):
        match = next(((label, ev) for label, ev in results if ev.metrics["model"] == model_type), None)
        if match is None:
            continue
        label, ev = match
        shown.append(name)
        c2st = ev.metrics["samples"]["c2st_mlp"]["value"]
        panels.append((f"{name} samples (C2ST {c2st:.3f})", ev.samples))
        if real.shape[1] == 2 and ev.model is not None:
            ode = {"rtol": 1e-4, "atol": 1e-4, **(grid_ode_options or {})}
            logp = log_density_grid(ev.model, model_type, grid, **ode)
            how = "exact" if model_type == "realnvp" else "probability-flow ODE"
            densities.append(
                (f"{name} log p(x), {how}", logp.reshape(grid_resolution, grid_resolution), extent)
            )
    paths["figure"] = plotting.plot_compare(
        panels,
        densities,
        paths["figure"],
        reference=real,
        columns=columns,
        suptitle=" vs ".join(shown) if len(shown) > 1 else f"{shown[0]} and the data",
    )
    return table, paths
