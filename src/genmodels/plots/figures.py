"""Figures of points, densities and training histories: numpy arrays in, ``figsize * DPI``-pixel files out."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator
from scipy.ndimage import gaussian_filter

from genmodels.fileio import PathLike, atomic_path

DPI = 150  # dots per inch of every figure

# Okabe-Ito (colour-blind safe): blue, vermillion, bluish green, reddish purple, orange, sky blue, black;
# purple before orange, so that four categories never get two orange tones
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

Box = tuple[float, float, float, float]
Labels = tuple[np.ndarray, Sequence[str] | None]  # values (N,) and class names, or None for floats in [0, 1]
Panels = Sequence[tuple[str, np.ndarray]]  # (title, array) per panel
History = Mapping[str, Sequence[float]]  # series by name, as in a training history

_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
_QUANTILE = 0.001
_PAD = 0.06
_PANEL_INCHES = 4.0
_MIN_ASPECT, _MAX_ASPECT = 0.6, 1.4
_STRIP_INCHES = 2.8
_PANELS_PER_ROW = 4  # a results figure with more panels (a conditional run's) wraps into rows
_STRIP_SCALE = (_STRIP_INCHES / _PANEL_INCHES) ** 2  # marker area in a smaller panel
_RASTERIZE_ABOVE = 2000
_ACRONYMS = {"nll": "NLL", "kl": "KL", "lr": "LR", "mse": "MSE", "elbo": "ELBO", "bpd": "BPD", "ema": "EMA"}
_SINGLE_PANELS = (("learning rate", "lr"), ("gradient norm, before clipping", "grad_norm"))
# cividis: perceptually uniform and readable with colour-vision deficiencies; values outside [0, 1] clipped
_SEQUENTIAL = {"cmap": "cividis", "vmin": 0.0, "vmax": 1.0}


def _finite_rows(data: np.ndarray) -> np.ndarray:
    return data[np.all(np.isfinite(data), axis=1)]


def _xy(data: np.ndarray, name: str) -> np.ndarray:
    """The finite rows of the first two columns of ``data (N, D >= 2)``."""
    return _finite_rows(_points(data, name)[:, :2])


def _interval(values: np.ndarray) -> tuple[float, float]:
    """The ``_QUANTILE``..``1 - _QUANTILE`` range of the finite ``values``, widened by ``_PAD`` of its width."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return -1.0, 1.0
    lo, hi = (float(v) for v in np.quantile(values, [_QUANTILE, 1.0 - _QUANTILE]))
    margin = _PAD * (hi - lo) if hi > lo else max(abs(lo), 1.0) * 0.5
    return lo - margin, hi + margin


def _box(xy: np.ndarray, *, aspect: float | None = 1.0) -> Box:
    """Padded quantile box ``(x0, x1, y0, y1)``, the shorter side widened to ``aspect`` (height / width)."""
    (x0, x1), (y0, y1) = _interval(xy[:, 0]), _interval(xy[:, 1])
    if aspect is not None:
        width = max(x1 - x0, (y1 - y0) / aspect)
        (cx, cy), height = ((x0 + x1) / 2.0, (y0 + y1) / 2.0), width * aspect
        x0, x1, y0, y1 = cx - width / 2, cx + width / 2, cy - height / 2, cy + height / 2
    return x0, x1, y0, y1


def _marker(n: int) -> tuple[float, float]:
    n = max(int(n), 1)
    return float(np.clip(2500.0 / n, 0.35, 25.0)), float(np.clip(math.sqrt(3000.0 / n), 0.35, 0.9))


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _dots(ax: Axes, xy: np.ndarray, **style: Any) -> PathCollection:
    """Edgeless scatter of ``xy (N, 2)``, rasterized in vector files above ``_RASTERIZE_ABOVE`` points."""
    return ax.scatter(xy[:, 0], xy[:, 1], linewidths=0, rasterized=len(xy) > _RASTERIZE_ABOVE, **style)


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _draw(ax: Axes, xy: np.ndarray, colour: object, labels: Labels | None, size: float, alpha: float) -> None:
    """Scatter in ``colour``, else by ``labels``: indices into names (-1 grey), or floats in [0, 1]."""
    values, names = (None, None) if labels is None else labels
    if names is None:
        colours = {"color": colour} if values is None else {"c": values, **_SEQUENTIAL}
        _dots(ax, xy, s=size, alpha=alpha, **colours)
        return
    groups = [(-1, "background", "#BBBBBB"), *((k, str(n), _color(k)) for k, n in enumerate(names))]
    for k, name, color in groups:
        mask = np.asarray(values, dtype=np.int64) == k
        if mask.any():
            _dots(ax, xy[mask], s=size, alpha=alpha if k >= 0 else alpha * 0.6, color=color, label=name)


def _scatter(ax: Axes, xy: np.ndarray, colour: Any, *, box: Box, n_style: int = 0, **style: Any) -> None:
    """:func:`_draw` in ``box``, markers sized for ``n_style`` points (else len(xy)) times ``style["scale"]``,
    saying how many points fall outside ``box`` where over 1 %: a figure must not hide diverged samples."""
    size, alpha = _marker(n_style or len(xy))
    _draw(ax, xy, colour, style.get("labels"), size * style.get("scale", 1.0), alpha)
    _frame(ax, box)
    outside = int(len(xy) - _inside(xy, box).sum())
    if outside > 0.01 * len(xy):
        ax.text(
            0.98, 0.02, f"{outside:,} of {len(xy):,} points ({100 * outside / len(xy):.1f}%) outside the axes",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#D55E00",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
        )  # fmt: skip


def _inside(xy: np.ndarray, box: Box) -> np.ndarray:
    """Which rows of ``xy (N, 2)`` lie in ``box`` (non-finite ones do not)."""
    return (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2]) & (xy[:, 1] <= box[3])


def _frame(ax: Axes, box: Box) -> None:
    ax.set(xlim=(box[0], box[1]), ylim=(box[2], box[3]), aspect="equal", adjustable="box", axisbelow=True)
    ax.tick_params(labelsize=8)
    ax.grid(True, linewidth=0.4, alpha=0.3)


def _label(ax: Axes, title: str, names: Sequence[str] | None = None, size: int = 11, ticks: int = 8) -> None:
    ax.set_title(title, fontsize=size)
    ax.set(**({} if names is None else {"xlabel": names[0], "ylabel": names[1]}))
    ax.tick_params(labelsize=ticks)


def _points(data: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(data, dtype=float)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be a 2-D array (N, D) with D >= 2, got shape {arr.shape}")
    return arr


def _column_names(columns: Sequence[str] | None, d: int) -> list[str]:
    return [f"x{i + 1}" for i in range(d)] if columns is None else [str(c) for c in columns]


def subsample(data: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_points`` rows, chosen reproducibly at random (order kept)."""
    if max_points is None or len(data) <= max_points:
        return data
    return data[np.sort(np.random.default_rng(seed).choice(len(data), size=int(max_points), replace=False))]


def _save(fig: Figure, path: PathLike, fmt: str) -> Path:
    if fmt not in _METADATA:
        raise ValueError(f"fmt must be one of {tuple(_METADATA)}, got {fmt!r}")
    target = Path(path).with_suffix("." + fmt)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
    return target


def _new_figure(width: float, height: float, suptitle: str | None = None, fontsize: float = 12) -> Figure:
    fig = Figure(figsize=(round(width * DPI) / DPI, round(height * DPI) / DPI), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06)
    if suptitle:
        fig.suptitle(suptitle, fontsize=fontsize)
    return fig


def _row(
    k: int, w: float, h: float, suptitle: str | None, fontsize: float = 12, *, wrap: int = 0,
    heading_inches: float = 0.0,
) -> tuple[Figure, list[Axes]]:  # fmt: skip
    """``k`` panels of ``w`` x ``h`` inches (``heading_inches`` of it the suptitle's) in a row, or in rows
    of at most ``wrap`` (0: one row; the unused panels of the last row hidden)."""
    rows = math.ceil(k / wrap) if wrap else 1
    cols = math.ceil(k / rows)
    fig = _new_figure(w * cols, h + (h - heading_inches) * (rows - 1), suptitle, fontsize)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[k:]:
        ax.set_axis_off()
    return fig, axes[:k]


def _projected(items: Panels, what: str) -> list[tuple[str, np.ndarray]]:
    return [(title, _xy(data, f"{what} {title!r}")) for title, data in items]


def _panel_boxes(
    xys: list[np.ndarray], reference: np.ndarray | None, share: Sequence[bool] | None, square: bool
) -> tuple[list[Box], float]:
    x0, x1, y0, y1 = _box(reference if reference is not None else xys[0], aspect=None)
    aspect = 1.0 if square else float(np.clip((y1 - y0) / (x1 - x0), _MIN_ASPECT, _MAX_ASPECT))
    flags = [False] * len(xys) if share is None else [bool(f) for f in share]
    if any(flags) and reference is None:
        raise ValueError("share_reference asks for reference limits but no reference was given")
    return [_box(reference if f else xy, aspect=aspect) for f, xy in zip(flags, xys, strict=True)], aspect


def _category_colours(category: int | np.ndarray | None, data: np.ndarray) -> str | np.ndarray | None:
    """Palette colours of a panel's category (one, or one per finite row of ``data``)."""
    if category is None:
        return None
    colours = np.asarray(PALETTE)[np.asarray(category) % len(PALETTE)]
    return str(colours) if colours.ndim == 0 else colours[np.isfinite(_points(data, "panel")[:, :2]).all(1)]


def plot_panels(
    panels: Panels,
    path: PathLike,
    *,
    reference: np.ndarray | None = None,
    share_reference: Sequence[bool] | None = None,
    columns: Sequence[str] | None = None,
    panel_columns: Sequence[Sequence[str] | None] | None = None,
    suptitle: str | None = None,
    categories: Sequence[int | np.ndarray | None] | None = None,
    labels: Labels | None = None,
    normal_rings: Sequence[bool] = (),
    small: bool = False,
    fmt: str = "png",
) -> Path:
    """A row of scatter panels ``(title, points (N_i, D >= 2))``.

    ``reference (M, D)``: the limits of the panels flagged in ``share_reference``; ``categories``: per panel
    None (its own colour), a category k or one per point ``(N_i,)``, in the palette's k-th colour;
    ``labels``: ``(values (N,), names)`` colouring the same N points of every panel (square panels),
    ``normal_rings`` flagging panels with N(0, I) circles; ``small``: a strip of small square panels."""
    if labels is not None:  # the same points in every panel: each drawn in all panels or in none
        finite = np.all([np.isfinite(_points(data, "panel")[:, :2]).all(1) for _, data in panels], axis=0)
        panels = [(title, np.asarray(data, dtype=float)[finite]) for title, data in panels]
        labels = (np.asarray(labels[0])[finite], labels[1])
    projected = _projected(panels, "panel")
    per_panel = categories or [None] * len(panels)
    colours = [_category_colours(c, data) for c, (_, data) in zip(per_panel, panels, strict=True)]
    d = _points(panels[0][1], "panel").shape[1]
    names = _column_names(columns, d)
    ref = None if reference is None else _xy(reference, "reference")
    square = small or labels is not None
    boxes, aspect = _panel_boxes([xy for _, xy in projected], ref, share_reference, square)
    shown = f"showing columns ({names[0]}, {names[1]}) of {d}" if d > 2 and not square else None
    heading = "\n".join(h for h in (suptitle, shown) if h)
    lines = max(str(title).count("\n") for title, _ in panels)  # of the panel titles, below
    heading_inches = 0.3 * len(heading.splitlines())
    height = (_PANEL_INCHES - 1.05) * aspect + 1.1 + heading_inches + 0.22 * lines
    size = (_STRIP_INCHES, _STRIP_INCHES + (0.35 if heading else 0.0)) if small else (_PANEL_INCHES, height)
    wrap = 0 if small else _PANELS_PER_ROW
    fig, axes = _row(len(panels), *size, heading, wrap=wrap, heading_inches=heading_inches)
    if panel_columns is not None and len(panel_columns) != len(panels) and not small:
        raise ValueError(f"panel_columns has {len(panel_columns)} entries for {len(panels)} panels")
    own = [names if c is None else _column_names(c, d) for c in panel_columns or [None] * len(panels)]
    n_style, scale = (max(len(xy) for _, xy in projected), _STRIP_SCALE) if small else (0, 1.0)
    for i, (ax, (title, xy), box, colour) in enumerate(zip(axes, projected, boxes, colours, strict=True)):
        colour = _color(0 if small else i) if colour is None else colour
        _scatter(ax, xy, colour, box=box, n_style=n_style, scale=scale, labels=labels)
        _label(ax, title, None if small else own[i], 10 if small else 11, ticks=7 if small else 8)
    if labels is not None and labels[1] is not None:
        scale = max(1.0, 6.0 / math.sqrt(_marker(len(projected[0][1]))[0]))
        axes[0].legend(fontsize=8, markerscale=scale, frameon=False, loc="best")
    for i in np.flatnonzero(normal_rings):  # the rings' legend on a white box, so the circles miss the text
        _normal_rings(axes[i], legend=labels is None or labels[1] is None)
    return _save(fig, path, fmt)


def plot_pairs(
    real: np.ndarray,
    generated: np.ndarray,
    path: PathLike,
    *,
    columns: Sequence[str] | None = None,
    max_points: int | None = 4000,
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """Pair-plot grid of real ``(N, D)`` vs generated ``(M, D)``: scatters and histograms."""
    real, gen = _finite_rows(_points(real, "real")), _finite_rows(_points(generated, "generated"))
    d = real.shape[1]
    if gen.shape[1] != d:
        raise ValueError(f"generated has {gen.shape[1]} columns but real has {d}")
    names, limits = _column_names(columns, d), [_interval(real[:, j]) for j in range(d)]
    shown = [subsample(real, max_points)]
    shown.append(subsample(gen, len(shown[0]), seed=1))
    size, alpha = _marker(max(len(x) for x in shown))
    cell = float(np.clip(10.0 / d, 1.6, 2.6))
    fig = _new_figure(cell * d + 0.3, cell * d + 0.3, suptitle)
    axes = fig.subplots(d, d, squeeze=False)
    for (i, j), ax in np.ndenumerate(axes):
        if j > i:
            ax.set_axis_off()
            continue
        if i == j:  # the density of each: counts over its number of points and the bin width
            edges = np.linspace(*limits[j], 41)
            for k, (v, source) in enumerate([(real[:, j], "real"), (gen[:, j], "generated")]):
                w = np.full(len(v), 1.0 / (max(len(v), 1) * (edges[1] - edges[0])))
                label = f"{source} (n={len(v):,})"
                ax.hist(v, edges, weights=w, histtype="step", color=PALETTE[k], lw=1.4, label=label)
            ax.set(xlim=limits[j], yticks=[])
        else:
            for k in (1, 0):
                _dots(ax, shown[k][:, [j, i]], s=size, alpha=alpha * 0.75, color=_color(k))
            ax.set(xlim=limits[j], ylim=limits[i], axisbelow=True)
            ax.grid(True, linewidth=0.4, alpha=0.3)
        ax.tick_params(labelsize=7, labelbottom=i == d - 1, labelleft=i == j or (j == 0 and i > 0))
        ax.set(xlabel=names[j] if i == d - 1 else "", ylabel=names[i] if j == 0 and i > 0 else "")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper right", frameon=False, fontsize=10)
    return _save(fig, path, fmt)


def grid_for(points: np.ndarray, *, resolution: int = 200) -> tuple[np.ndarray, Box]:
    """``(grid (R * R, 2), extent)``: cell centres over ``points``' box, x fastest (row 0 at the bottom)."""
    x0, x1, y0, y1 = _box(_xy(points, "points"))
    xe, ye = np.linspace(x0, x1, resolution + 1), np.linspace(y0, y1, resolution + 1)
    xs, ys = np.meshgrid((xe[:-1] + xe[1:]) / 2.0, (ye[:-1] + ye[1:]) / 2.0)
    return np.stack([xs.ravel(), ys.ravel()], axis=1), (float(x0), float(x1), float(y0), float(y1))


def _mass_levels(density: np.ndarray, fractions: Sequence[float]) -> list[float]:
    """Density thresholds whose super-level sets hold the given fractions of the total mass."""
    flat = np.sort(density.ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return []
    cum = np.cumsum(flat) / total
    levels = [float(flat[min(np.searchsorted(cum, f), flat.size - 1)]) for f in fractions]
    return sorted(set(lv for lv in levels if lv > 0))


def _colour_limits(logp: np.ndarray) -> tuple[float, float]:
    """From max(5 % quantile, maximum - 20) to the maximum of the finite values of ``logp``."""
    finite = logp[np.isfinite(logp)]
    vmax = float(finite.max()) if finite.size else 0.0
    vmin = max(float(np.quantile(finite, 0.05)), vmax - 20.0) if finite.size else -1.0
    return (vmax - 1.0 if vmin >= vmax else vmin), vmax


def _log_density_image(
    ax: Axes, log_density: np.ndarray, extent: Box, *, small: bool, limits: tuple[float, float] | None = None
) -> None:
    """Heatmap of ``log p (H, W)`` in nats, colours over ``limits`` (default: :func:`_colour_limits`)."""
    logp = np.asarray(log_density, dtype=float)
    if logp.ndim != 2 or min(logp.shape) < 2:
        raise ValueError(f"log_density must be a 2-D (H, W) array, got shape {logp.shape}")
    vmin, vmax = limits or _colour_limits(logp)
    cmap = colormaps["viridis"]
    image = ax.imshow(
        np.ma.masked_invalid(logp), origin="lower", extent=tuple(float(v) for v in extent),
        cmap=cmap.with_extremes(bad=cmap(0.0), under=cmap(0.0)), vmin=vmin, vmax=vmax,
        interpolation="nearest", aspect="equal",
    )  # fmt: skip
    _colorbar(ax.figure, image, ax, "log p(x) [nats]", small, extend="min", shrink=0.85 if small else 0.9)


def _colorbar(fig: Figure, mappable: Any, ax: Any, label: str, small: bool, **options: Any) -> None:
    bar = fig.colorbar(mappable, ax=ax, **options)
    bar.set_label(label, **({"fontsize": 8} if small else {}))
    if small:
        bar.ax.tick_params(labelsize=7)


def _data_contours(ax: Axes, points: np.ndarray, extent: Box) -> None:
    """White contours of the smoothed histogram of the ``points`` in view holding 50 % and 90 % of them."""
    pts = _xy(points, "points")
    inside = pts[_inside(pts, extent)]
    if len(inside) < 10:
        return
    bins = int(np.clip(math.sqrt(len(inside)) / 3.0, 25, 90))
    hist, xe, ye = np.histogram2d(inside[:, 0], inside[:, 1], bins=bins, range=[extent[:2], extent[2:]])
    smooth = gaussian_filter(hist.T, sigma=1.5, mode="constant", truncate=3.0)  # zero beyond the extent
    levels = _mass_levels(smooth, (0.9, 0.5))
    if not levels:
        return
    xc, yc = (xe[:-1] + xe[1:]) / 2.0, (ye[:-1] + ye[1:]) / 2.0
    ax.contour(xc, yc, smooth, levels=levels, colors="white", linewidths=[0.9, 1.4][: len(levels)], alpha=0.9)
    ax.plot([], [], color="white", linewidth=1.2, label="data: 50% / 90% regions")
    ax.legend(
        loc="upper right", fontsize=8, framealpha=0.3, facecolor="black", edgecolor="none", labelcolor="white"
    ).set_zorder(5)


def plot_density(
    log_density: np.ndarray,
    extent: Box,
    path: PathLike,
    *,
    points: np.ndarray | None = None,
    title: str,
    columns: Sequence[str] | None = None,
    fmt: str = "png",
) -> Path:
    """Heatmap of ``log_density (H, W)`` in nats over ``extent``, with ``points``' 50 % / 90 % contours."""
    extent = tuple(float(v) for v in extent)
    ax = _new_figure(5.6, 4.8).subplots()
    _log_density_image(ax, log_density, extent, small=False)
    if points is not None:
        _data_contours(ax, points, extent)
    ax.set(xlim=extent[:2], ylim=extent[2:])
    _label(ax, title, _column_names(columns, 2))
    return _save(ax.figure, path, fmt)


def pretty_label(key: str) -> str:
    """Legend label for a history key: "train_nll" -> "train NLL", "grad_norm" -> "grad norm"."""
    return " ".join(_ACRONYMS.get(tok.lower(), tok) for tok in key.split("_") if tok)


def _history_x(history: History) -> tuple[np.ndarray, str]:
    lengths = {k: len(v) for k, v in history.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history series differ in length: {lengths}")
    if "epoch" in history:
        return np.asarray(history["epoch"], dtype=float), "epoch"
    return np.arange(1, next(iter(lengths.values()), 0) + 1, dtype=float), "step"


def _draw_curves(ax: Axes, x: np.ndarray, series: History, *, log_y: bool, color_offset: int = 0) -> None:
    """Each series at its finite points, ``<key>_se`` as a ± 2 SE band; log y where asked and all positive."""
    drawn: list[np.ndarray] = []
    lines = [key for key in series if key.removesuffix("_se") == key or key.removesuffix("_se") not in series]
    for i, key in enumerate(lines):
        y = np.asarray(series[key], dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            continue
        sparse = ok.sum() < len(x) or ok.sum() <= 25
        color, label = _color(i + color_offset), pretty_label(key)
        if f"{key}_se" in series:
            band = 2 * np.nan_to_num(np.asarray(series[f"{key}_se"], dtype=float)[ok])
            ax.fill_between(x[ok], y[ok] - band, y[ok] + band, color=color, alpha=0.2, linewidth=0)
            label += " (± 2 SE)"
        markers = {"marker": "o", "markersize": 4} if sparse else {"markersize": 0}
        ax.plot(x[ok], y[ok], color=color, linewidth=1.6, label=label, **markers)
        drawn.append(y[ok])
    if not drawn:
        return _message(ax, "no finite values")
    if log_y and all((v > 0).all() for v in drawn):
        ax.set_yscale("log")
        for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            set_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    else:  # small values (a learning rate near 1e-3) as "9.5" under a "×10⁻⁴", not "0.00095"
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        _clip_outliers(ax, np.concatenate(drawn))
    finite_x = x[np.isfinite(x)]
    if finite_x.size and np.all(finite_x == np.round(finite_x)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    if len(np.unique(finite_x)) == 1:
        ax.set_xlim(float(finite_x[0]) - 1.0, float(finite_x[0]) + 1.0)
    ax.grid(True, linewidth=0.4, alpha=0.35)
    ax.tick_params(labelsize=8, which="both")
    ax.legend(fontsize=8, frameon=False)


def _clip_outliers(ax: Axes, values: np.ndarray) -> None:
    """Keep far outliers (a 10⁶ spike) off a linear scale, and say so: 2nd-98th percentiles widened 5 times."""
    lo, hi = np.percentile(values, [2, 98])
    bottom, top = lo - 5 * (hi - lo), hi + 5 * (hi - lo)
    off = (values < bottom) | (values > top)
    if hi == lo or not off.any():
        return
    low, high = max(bottom, values.min()), min(top, values.max())
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))  # the extreme points inside the frame
    far = values[off][np.argmax(np.abs(values[off] - hi))]
    ax.text(0.5, 0.97, f"{off.sum()} off scale (up to {_plain_number(float(f'{far:.3g}'))})", transform=ax.transAxes,
            ha="center", va="top", fontsize=7, color="0.3", bbox={"facecolor": "white", "edgecolor": "none"})  # fmt: skip


def _plain_number(value: float) -> str:
    """A tick label in one style: plain from 0.001 to 9,999, else "2e-5", "1e4", "8.2e6"."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    if -3 <= exponent <= 3:
        return f"{value:.6g}"
    return f"{value / 10**exponent:.3g}e{exponent}"


class _PlainLogFormatter(LogFormatter):
    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return _plain_number(x)


def plot_loss(
    history: History, path: PathLike, *, ylabel: str, title: str, log_y: bool = False, fmt: str = "png"
) -> Path:
    """Every series of ``history`` but "epoch" against the epoch (else 1, 2, ...)."""
    x, x_label = _history_x(history)
    ax = _new_figure(6.4, 4.2).subplots()
    _draw_curves(ax, x, {k: v for k, v in history.items() if k != "epoch"}, log_y=log_y)
    ax.set(xlabel=x_label, ylabel=ylabel)
    ax.set_title(textwrap.fill(title, width=64), fontsize=11)
    return _save(ax.figure, path, fmt)


def _is_loss_key(key: str) -> bool:
    return any(tok in ("loss", "nll", "mse", "kl", "elbo", "bpd") for tok in key.lower().split("_"))


def _spans_decade(series: History) -> bool:
    values = np.concatenate([np.asarray(v, dtype=float).ravel() for v in series.values()] or [np.zeros(0)])
    values = values[np.isfinite(values) & (values > 0)]
    return values.size > 0 and float(values.max()) >= 10.0 * float(values.min())


def plot_training_diagnostics(
    history: History,
    path: PathLike,
    *,
    heldout: Sequence[str] = (),
    titles: Mapping[str, str] | None = None,
    fmt: str = "png",
) -> Path:
    """Panels per epoch: losses, the ``heldout`` keys, "lr" and "grad_norm"; ``titles`` renames panels."""
    x, x_label = _history_x(history)
    apart = [k for k in heldout if k in history]
    losses = {k: v for k, v in history.items() if k != "epoch" and k not in apart and _is_loss_key(k)}
    panels = [("loss", losses), *([("held-out", {k: history[k] for k in apart})] if apart else [])]
    single = len(panels)  # the learning rate and gradient norm: one series each, log y where it helps
    panels += [(name, {k: history[k]} if k in history else {}) for name, k in _SINGLE_PANELS]
    fig = _new_figure(4.5 * len(panels), 4.0)
    for i, (ax, (name, series)) in enumerate(zip(fig.subplots(1, len(panels)), panels, strict=True)):
        one = i >= single
        if series:
            _draw_curves(ax, x, series, log_y=one and _spans_decade(series), color_offset=i + 1 if i else 0)
            if one and ax.get_legend():
                ax.get_legend().remove()
        else:
            _message(ax, f"no {name} recorded")
        ax.set_title((titles or {}).get(name, name), fontsize=11)
        ax.set_xlabel(x_label)
    return _save(fig, path, fmt)


_GIF_DPI = 100
_VECTOR_CMAP = "plasma"  # dark to bright and perceptually uniform; readable on a white background


def _normal_rings(ax: Axes, legend: bool) -> None:
    theta = np.linspace(0.0, 2.0 * math.pi, 200)
    for r in (1.0, 2.0, 3.0):
        ax.plot(r * np.cos(theta), r * np.sin(theta), color="0.35", linewidth=0.7, linestyle="--")
    ax.plot([], [], color="0.35", linewidth=0.7, linestyle="--", label="N(0, I): 1, 2, 3 σ")
    if legend:
        ax.legend(fontsize=8, loc="upper right", frameon=True, framealpha=0.9, edgecolor="none")


def plot_warped_grid(
    stages: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: PathLike,
    *,
    labels: Labels,
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """A row of ``(title, lines (L, P, 2), points (N, 2))`` stages of grid lines pushed through a map, the
    points coloured by ``labels = (values (N,), names)`` (indices into names, else floats in [0, 1])."""
    size = _STRIP_INCHES * 1.15
    height = size + 0.2 + 0.3 * (labels[1] is not None) + (0.35 if suptitle else 0.0)
    fig, axes = _row(len(stages), size, height, suptitle)
    for i, (ax, (title, lines, points)) in enumerate(zip(axes, stages, strict=True)):
        lines, pts = np.asarray(lines, dtype=float), np.asarray(points, dtype=float).reshape(-1, 2)
        vertices = _finite_rows(lines.reshape(-1, 2))
        fit = (vertices if len(vertices) else pts) if i == 0 or len(pts) < 10 else _finite_rows(pts)
        for j, line in enumerate(lines):  # the vertical lines, then the horizontal ones
            ax.plot(*line.T, color=PALETTE[j >= len(lines) // 2], linewidth=0.6, alpha=0.55, zorder=1)
        _draw(ax, pts, None, labels, _marker(len(pts))[0] * _STRIP_SCALE, _marker(len(pts))[1])
        _frame(ax, _box(fit, aspect=1.0))
        _label(ax, title, size=10, ticks=7)
    if labels[1] is not None:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=len(names), fontsize=9, frameon=False,
                   markerscale=4.0)  # fmt: skip
    return _save(fig, path, fmt)


def _arrows(ax: Axes, pts: np.ndarray, vec: np.ndarray, length: float) -> object | None:
    norm = np.linalg.norm(vec, axis=1)
    ok = np.isfinite(norm) & (norm > 0)
    if not ok.any():
        return None
    unit = vec[ok] / norm[ok, None] * length
    return ax.quiver(
        pts[ok, 0], pts[ok, 1], unit[:, 0], unit[:, 1], norm[ok] / norm[ok].max(),
        cmap=ListedColormap(colormaps[_VECTOR_CMAP](np.linspace(0.0, 0.85, 256))), clim=(0.0, 1.0),
        angles="xy", scale_units="xy", scale=1.0, width=0.005, headwidth=3.5, headlength=4.0,
        headaxislength=3.5, zorder=2,
    )  # fmt: skip


def plot_vector_fields(
    points: np.ndarray,
    fields: Panels,
    path: PathLike,
    *,
    background: np.ndarray,
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """A row of quiver panels ``(title, vectors (G, 2))`` at ``points (G, 2)`` over ``background (N, 2)``."""
    pts, bg = _points(points, "points")[:, :2], _xy(background, "background")
    box = _box(_finite_rows(pts), aspect=None)
    spacing = max(box[1] - box[0], box[3] - box[2]) / max(math.sqrt(len(pts)) - 1.0, 1.0)
    fig, axes = _row(len(fields), 3.3 + 0.6 / len(fields), 3.45 + (0.35 if suptitle else 0.0), suptitle, 11)
    arrows, (size, alpha) = None, _marker(len(bg))
    for ax, (title, vectors) in zip(axes, fields, strict=True):
        _dots(ax, bg, s=size * 0.6, alpha=min(1.0, alpha * 0.8), color="0.6")
        arrows = _arrows(ax, pts, np.asarray(vectors, dtype=float), 0.8 * spacing) or arrows
        _frame(ax, box)
        _label(ax, title, size=10, ticks=7)
    if arrows is not None:
        _colorbar(fig, arrows, axes, "length / longest in panel", True, shrink=0.85, pad=0.01, aspect=25)
    return _save(fig, path, fmt)


def plot_animation(
    frames: Panels, path: PathLike, *, reference: np.ndarray, suptitle: str | None = None
) -> Path:
    """A looping GIF of ``(title, points (N, D >= 2))`` frames in the limits of the first, the last and
    ``reference (M, D)``, 8 frames/s, the last held 8 more."""
    from matplotlib.animation import PillowWriter

    arrays = [xy for _, xy in _projected(frames, "frame")]
    size, alpha = _marker(max(len(a) for a in arrays))
    fig = Figure(figsize=(4.4, 4.4), dpi=_GIF_DPI, layout="constrained")
    ax = fig.subplots()
    scatter = _dots(ax, arrays[0], s=size, alpha=alpha, color=_color(0))
    _frame(ax, _box(np.concatenate([arrays[0], arrays[-1], _xy(reference, "reference")])))
    title = ax.set_title(frames[0][0], fontsize=11)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    target = Path(path).with_suffix(".gif")
    writer = PillowWriter(fps=8.0)
    with atomic_path(target) as tmp, writer.saving(fig, str(tmp), dpi=_GIF_DPI):
        for (name, _), xy in [*zip(frames, arrays, strict=True), *[(frames[-1], arrays[-1])] * 8]:
            scatter.set_offsets(xy)
            title.set_text(name)
            writer.grab_frame()
    return target


def plot_compare(
    panels: Panels,
    densities: Sequence[tuple[str, np.ndarray, Box]],
    path: PathLike,
    *,
    columns: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Path:
    """A PNG of scatter panels ``(title, points (N, >= 2))`` in the first one's limits above heatmaps
    ``(title, log_density (H, W), extent)`` on one colour scale, the heatmaps right-aligned: each under
    the last panels (the models' samples, after the real data)."""
    projected = _projected(panels, "scatter panel")
    names = _column_names(None if columns is None else list(columns)[:2], 2)
    n_cols, n_rows = max(len(panels), len(densities)), 2 if densities else 1
    height = (_PANEL_INCHES - 0.2) * n_rows + (0.3 if suptitle else 0.0)
    axes = _new_figure(_PANEL_INCHES * n_cols, height, suptitle).subplots(n_rows, n_cols, squeeze=False)
    for i, (title, xy) in enumerate(projected):
        _scatter(axes[0][i], xy, _color(i), box=_box(projected[0][1]))
        _label(axes[0][i], title, names, size=10)
    skip = n_cols - len(densities)
    own = [_colour_limits(np.asarray(logp, dtype=float)) for _, logp, _ in densities]
    shared = (
        (min(low for low, _ in own), max(high for _, high in own)) if own else None
    )  # one scale: comparable
    for i, (title, log_density, extent) in enumerate(densities):
        _log_density_image(axes[1][skip + i], log_density, extent, small=True, limits=shared)
        _label(axes[1][skip + i], title, names, size=10)
    for ax in [*axes[0][len(panels) :], *(axes[1][:skip] if densities else [])]:
        ax.set_axis_off()
    return _save(axes[0][0].figure, path, "png")
