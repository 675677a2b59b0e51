"""Figures for point data, densities and training histories: numpy arrays in, image files out.

This is the only module of the package that imports matplotlib. It builds every figure with
:class:`matplotlib.figure.Figure` directly (no pyplot, no global state, no display needed) and
writes it atomically through :func:`genmodels.fileio.atomic_path`, so a failure while drawing or
saving leaves any previous file untouched.

Every public ``plot_*`` function takes ``fmt`` ("png", "svg" or "pdf"); the suffix of ``path`` is
replaced by ``"." + fmt`` and the path actually written is returned. PNGs are written at
:data:`DPI` dots per inch without tight cropping, so an image is exactly ``figsize * DPI`` pixels.

Shared styling (in one place, :class:`_Style` helpers below):

* axis limits come from the 0.1 %-99.9 % quantiles of the data, padded and widened to the panel's
  shape, so a few outliers never squash the picture and nothing is hard-coded;
* scatter marker size and opacity shrink with the number of points, so tens of thousands of points
  still show holes and sharp edges rather than a solid blob;
* scatter panels use an equal aspect ratio and the colour-blind-safe Okabe-Ito palette.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from genmodels.fileio import atomic_path

__all__ = [
    "DPI",
    "PALETTE",
    "grid_for",
    "plot_animation",
    "plot_coloured_panels",
    "plot_density",
    "plot_loss",
    "plot_pairs",
    "plot_panels",
    "plot_strip",
    "plot_training_diagnostics",
    "plot_vector_fields",
    "plot_warped_grid",
]

DPI = 150
"""Resolution of every figure (dots per inch)."""

PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
)
"""Okabe-Ito colours, distinguishable under the common forms of colour-vision deficiency."""

PathLike = str | os.PathLike[str]
Box = tuple[float, float, float, float]

_FORMATS = ("png", "svg", "pdf")
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
_QUANTILE = 0.001
_PAD = 0.06
_PANEL_INCHES = 4.0
_MIN_ASPECT, _MAX_ASPECT = 0.6, 1.4
_STRIP_INCHES = 2.8
_RASTERIZE_ABOVE = 2000
_ACRONYMS = {
    "nll": "NLL",
    "kl": "KL",
    "lr": "LR",
    "mse": "MSE",
    "elbo": "ELBO",
    "bpd": "BPD",
    "ema": "EMA",
}
_LOSS_TOKENS = ("loss", "nll", "mse", "kl", "elbo", "bpd")


# --------------------------------------------------------------------------------------------------
# Shared styling and input checks
# --------------------------------------------------------------------------------------------------


class _Style:
    """Limits from quantiles, marker size and opacity from N, equal-aspect scatter axes, palette."""

    @staticmethod
    def finite_rows(data: np.ndarray) -> np.ndarray:
        """Rows of a 2-D array whose entries are all finite."""
        return data[np.all(np.isfinite(data), axis=1)]

    @staticmethod
    def interval(values: np.ndarray, q: float = _QUANTILE, pad: float = _PAD) -> tuple[float, float]:
        """The ``q``..``1 - q`` quantile range of the finite ``values``, widened by ``pad`` of its width."""
        values = np.asarray(values, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return -1.0, 1.0
        lo, hi = (float(v) for v in np.quantile(values, [q, 1.0 - q]))
        width = hi - lo
        if width <= 0.0:
            width = max(abs(lo), 1.0) * 0.5
            return lo - width, hi + width
        return lo - pad * width, hi + pad * width

    @classmethod
    def box(cls, xy: np.ndarray, *, aspect: float | None = 1.0) -> Box:
        """Padded quantile box ``(x0, x1, y0, y1)`` of 2-D points.

        With ``aspect`` (height / width) the shorter side is widened about its centre to that ratio,
        so an equal-aspect axes of the same shape is filled; ``None`` keeps the raw box.
        """
        x0, x1 = cls.interval(xy[:, 0])
        y0, y1 = cls.interval(xy[:, 1])
        if aspect is not None:
            width = max(x1 - x0, (y1 - y0) / aspect)
            height = width * aspect
            cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
            x0, x1, y0, y1 = cx - width / 2, cx + width / 2, cy - height / 2, cy + height / 2
        return x0, x1, y0, y1

    @staticmethod
    def marker(n: int) -> tuple[float, float]:
        """Marker area (points^2) and alpha for a scatter of ``n`` points in a ~4 inch panel."""
        n = max(int(n), 1)
        size = float(np.clip(2500.0 / n, 0.35, 25.0))
        alpha = float(np.clip(math.sqrt(3000.0 / n), 0.35, 0.9))
        return size, alpha

    @staticmethod
    def color(i: int) -> str:
        """The ``i``-th palette colour (cycling)."""
        return PALETTE[i % len(PALETTE)]

    @classmethod
    def scatter(
        cls,
        ax: Axes,
        xy: np.ndarray,
        color: str,
        *,
        box: Box | None = None,
        label: str | None = None,
        n_for_style: int | None = None,
        scale: float = 1.0,
    ) -> None:
        """Scatter 2-D points on ``ax`` with N-dependent size and alpha, equal aspect and ``box`` limits."""
        size, alpha = cls.marker(len(xy) if n_for_style is None else n_for_style)
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=size * scale,
            alpha=alpha,
            color=color,
            linewidths=0,
            marker="o",
            label=label,
            rasterized=len(xy) > _RASTERIZE_ABOVE,
        )
        if box is None:
            box = cls.box(xy)
        cls.frame(ax, box)
        cls.note_outside(ax, xy, box)

    @staticmethod
    def note_outside(ax: Axes, xy: np.ndarray, box: Box) -> None:
        """Say how many points fall outside the drawn limits when it is more than 1%: a figure must not
        hide that samples have diverged."""
        finite = np.isfinite(xy).all(axis=1)
        inside = (
            finite & (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2]) & (xy[:, 1] <= box[3])
        )
        outside = int(len(xy) - inside.sum())
        if len(xy) and outside > 0.01 * len(xy):
            ax.text(
                0.98,
                0.02,
                f"{outside:,} of {len(xy):,} points ({100 * outside / len(xy):.1f}%) outside the axes",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=8,
                color="#D55E00",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
            )

    @staticmethod
    def frame(ax: Axes, box: Box) -> None:
        """Apply limits, equal aspect and the light common look to a scatter or image axes."""
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=8)
        ax.grid(True, linewidth=0.4, alpha=0.3)
        ax.set_axisbelow(True)


def _points(data: np.ndarray, name: str, *, min_dims: int = 2) -> np.ndarray:
    """Validate an (N, D) array of points and return it as float64."""
    arr = np.asarray(data, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {arr.shape}")
    if arr.shape[1] < min_dims:
        raise ValueError(f"{name} needs at least {min_dims} columns, got {arr.shape[1]}")
    return arr


def _check_dims(dims: tuple[int, int], d: int, name: str) -> tuple[int, int]:
    a, b = (int(v) for v in dims)
    if a == b or not (0 <= a < d and 0 <= b < d):
        raise ValueError(f"dims {dims} must be two different column indices of {name}, which has {d}")
    return a, b


def _column_names(columns: Sequence[str] | None, d: int) -> list[str]:
    if columns is None:
        return [f"x{i + 1}" for i in range(d)]
    names = [str(c) for c in columns]
    if len(names) != d:
        raise ValueError(f"columns has {len(names)} names but the data has {d} columns")
    return names


def _subsample(data: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_points`` rows, chosen reproducibly at random (order kept)."""
    if max_points is None or len(data) <= max_points:
        return data
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(data), size=int(max_points), replace=False))
    return data[keep]


def _save(fig: Figure, path: PathLike, fmt: str) -> Path:
    """Write ``fig`` atomically as ``fmt`` to ``path`` with its suffix replaced; return the path written."""
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
    target = Path(path).with_suffix("." + fmt)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
    return target


def _new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure whose size in inches is a whole number of pixels at :data:`DPI`."""
    width, height = round(width * DPI) / DPI, round(height * DPI) / DPI
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06)
    return fig


# --------------------------------------------------------------------------------------------------
# Scatter panels, pair plots, strips
# --------------------------------------------------------------------------------------------------


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
    inter = ix * iy
    union = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter
    return inter / union if union > 0 else 0.0


def _panel_names(
    panel_columns: Sequence[Sequence[str] | None] | None, n_panels: int, names: list[str], d: int
) -> list[list[str]]:
    """Each panel's D axis names: its own from ``panel_columns``, else ``names``.

    Raises:
        ValueError: ``panel_columns`` of another length than the panels, or names not D long.
    """
    if panel_columns is None:
        return [names] * n_panels
    if len(panel_columns) != n_panels:
        raise ValueError(f"panel_columns has {len(panel_columns)} entries for {n_panels} panels")
    return [names if own is None else _column_names(own, d) for own in panel_columns]


def plot_panels(
    panels: Sequence[tuple[str, np.ndarray]],
    path: PathLike,
    *,
    reference: np.ndarray | None = None,
    share_reference: Sequence[bool] | None = None,
    columns: Sequence[str] | None = None,
    panel_columns: Sequence[Sequence[str] | None] | None = None,
    suptitle: str | None = None,
    dims: tuple[int, int] = (0, 1),
    fmt: str = "png",
) -> Path:
    """One row of scatter panels, e.g. "Original Data" | "Latent z = f(x)" | "Generated Samples".

    Args:
        panels: ``(title, points)`` pairs; each ``points`` is an (N_i, D) array with D >= 2.
            Titles are drawn as given (they may carry numbers such as an NLL).
        path: output file; its suffix is replaced by ``"." + fmt``.
        reference: optional (M, D) array, usually the real data, whose quantile box is used as the
            common axis limits of the panels that share it.
        share_reference: one flag per panel: ``True`` draws that panel inside the reference limits
            (use it for panels in data space: the data itself, generated samples), ``False`` gives
            it its own quantile limits (a latent panel near N(0, I), a diffused panel). ``None``
            (default) decides per panel: with a ``reference``, a panel shares its limits when its
            own quantile box overlaps the reference box with intersection-over-union >= 0.5; without
            a ``reference`` every panel has its own limits.
        columns: names of the D columns, used as axis labels (default "x1", "x2", ...).
        panel_columns: per panel, other names for its axes (a panel in another space, such as the
            latent z1, z2), or None for ``columns``.
        suptitle: optional figure title.
        dims: the two columns drawn. When D > 2 the figure says which pair it shows
            ("showing columns (a, b) of D"); use :func:`plot_pairs` for all pairs at once.
        fmt: "png" (default), "svg" or "pdf".

    Returns:
        The path written.
    """
    if len(panels) == 0:
        raise ValueError("plot_panels needs at least one panel")
    arrays = [_points(data, f"panel {title!r}") for title, data in panels]
    d = arrays[0].shape[1]
    if any(a.shape[1] != d for a in arrays):
        raise ValueError(
            f"all panels must have the same number of columns, got {[a.shape[1] for a in arrays]}"
        )
    a, b = _check_dims(dims, d, "the panels")
    names = _column_names(columns, d)
    axis_names = _panel_names(panel_columns, len(panels), names, d)
    projected = [_Style.finite_rows(arr[:, [a, b]]) for arr in arrays]

    ref_xy: np.ndarray | None = None
    if reference is not None:
        ref = _points(reference, "reference")
        if ref.shape[1] != d:
            raise ValueError(f"reference has {ref.shape[1]} columns but the panels have {d}")
        ref_xy = _Style.finite_rows(ref[:, [a, b]])
    # All panels share one shape, taken from the data (the reference, else the first panel).
    x0, x1, y0, y1 = _Style.box(ref_xy if ref_xy is not None else projected[0], aspect=None)
    aspect = float(np.clip((y1 - y0) / (x1 - x0), _MIN_ASPECT, _MAX_ASPECT))
    ref_box = None if ref_xy is None else _Style.box(ref_xy, aspect=aspect)
    own_boxes = [_Style.box(xy, aspect=aspect) for xy in projected]
    if share_reference is None:
        flags = [ref_box is not None and _overlap(box, ref_box) >= 0.5 for box in own_boxes]
    else:
        flags = [bool(f) for f in share_reference]
        if len(flags) != len(panels):
            raise ValueError(f"share_reference has {len(flags)} flags for {len(panels)} panels")
        if any(flags) and ref_box is None:
            raise ValueError("share_reference asks for reference limits but no reference was given")

    n = len(panels)
    heading = [suptitle] if suptitle else []
    if d > 2:
        heading.append(f"showing columns ({names[a]}, {names[b]}) of {d}")
    # Height: the data area (panel width less tick labels, times the aspect) plus title and labels.
    height = (_PANEL_INCHES - 1.05) * aspect + 1.1 + 0.3 * len(heading)
    height += 0.22 * max(str(title).count("\n") for title, _ in panels)  # multi-line panel titles
    fig = _new_figure(_PANEL_INCHES * n, height)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, (ax, (title, _), xy) in enumerate(zip(axes, panels, projected, strict=True)):
        box = ref_box if flags[i] and ref_box is not None else own_boxes[i]
        _Style.scatter(ax, xy, _Style.color(i), box=box)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(axis_names[i][a])
        ax.set_ylabel(axis_names[i][b])
    if heading:
        fig.suptitle("\n".join(heading), fontsize=12)
    return _save(fig, path, fmt)


def plot_pairs(
    real: np.ndarray,
    generated: np.ndarray,
    path: PathLike,
    *,
    columns: Sequence[str] | None = None,
    max_points: int | None = 4000,
    labels: tuple[str, str] = ("real", "generated"),
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """Pair-plot grid of real vs generated points, overlaid in two colours with a legend.

    The lower triangle holds a scatter for every pair of columns, the diagonal overlaid histograms
    of each column; the upper triangle is left empty (the legend sits there). Axis limits of each
    column come from the quantiles of ``real``, so generated points that stray are visibly cut off.

    Args:
        real: (N, D) array, D >= 2.
        generated: (M, D) array.
        path: output file; its suffix is replaced by ``"." + fmt``.
        columns: names of the D columns (default "x1", "x2", ...).
        max_points: each cloud is reproducibly subsampled to at most this many points (None: all).
        labels: legend labels of the two clouds.
        suptitle: optional figure title (e.g. the model and the data).
        fmt: "png" (default), "svg" or "pdf".

    Returns:
        The path written.
    """
    real = _Style.finite_rows(_points(real, "real"))
    gen = _Style.finite_rows(_points(generated, "generated"))
    d = real.shape[1]
    if gen.shape[1] != d:
        raise ValueError(f"generated has {gen.shape[1]} columns but real has {d}")
    names = _column_names(columns, d)
    real_s = _subsample(real, max_points)
    # As many generated points as real ones in the scatters, drawn under them, so neither cloud hides
    # the other (the histograms use every point).
    gen_s = _subsample(gen, len(real_s), seed=1)
    limits = [_Style.interval(real[:, j]) for j in range(d)]
    size, alpha = _Style.marker(max(len(real_s), len(gen_s)))
    colors = (_Style.color(0), _Style.color(1))

    cell = float(np.clip(10.0 / d, 1.6, 2.6))
    fig = _new_figure(cell * d + 0.3, cell * d + 0.3)
    axes = fig.subplots(d, d, squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                edges = np.linspace(*limits[j], 41)
                for data, color, label in zip((real, gen), colors, labels, strict=True):
                    # A density over all points, also those outside the axis: points out of view lower
                    # the curve (and no point in view is a flat zero, not 0/0).
                    ax.hist(
                        data[:, j],
                        bins=edges,
                        weights=np.full(len(data), 1.0 / (max(len(data), 1) * (edges[1] - edges[0]))),
                        histtype="step",
                        color=color,
                        linewidth=1.4,
                        label=label,
                    )
                ax.set_xlim(*limits[j])
                ax.set_yticks([])
            else:
                for data, color, label in zip((gen_s, real_s), colors[::-1], labels[::-1], strict=True):
                    ax.scatter(
                        data[:, j],
                        data[:, i],
                        s=size,
                        alpha=alpha * 0.75,
                        color=color,
                        linewidths=0,
                        label=label,
                        rasterized=len(data) > _RASTERIZE_ABOVE,
                    )
                ax.set_xlim(*limits[j])
                ax.set_ylim(*limits[i])
                ax.grid(True, linewidth=0.4, alpha=0.3)
                ax.set_axisbelow(True)
            ax.tick_params(labelsize=7)
            if i == d - 1:
                ax.set_xlabel(names[j])
            else:
                ax.tick_params(labelbottom=False)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif i != j:
                ax.tick_params(labelleft=False)
    handles, legend_labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        [f"{lab} (n={len(x):,})" for lab, x in zip(legend_labels, (real, gen), strict=True)],
        loc="upper right",
        frameon=False,
        fontsize=10,
    )
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _save(fig, path, fmt)


def plot_strip(
    snapshots: Sequence[tuple[str, np.ndarray]],
    path: PathLike,
    *,
    dims: tuple[int, int] = (0, 1),
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """A strip of small scatter panels, e.g. reverse-diffusion snapshots x_L ... x_0.

    Every panel has its own quantile limits (noise and data differ in scale) and the same colour,
    marker size and opacity (chosen from the largest snapshot), so the panels read as one sequence.

    Args:
        snapshots: ``(title, points)`` pairs; ``points`` is (N_i, D) with D >= 2.
        path: output file; its suffix is replaced by ``"." + fmt``.
        dims: the two columns drawn when D > 2.
        suptitle: optional figure title.
        fmt: "png" (default), "svg" or "pdf".

    Returns:
        The path written.
    """
    if len(snapshots) == 0:
        raise ValueError("plot_strip needs at least one snapshot")
    arrays = [_points(data, f"snapshot {title!r}") for title, data in snapshots]
    d = min(arr.shape[1] for arr in arrays)
    a, b = _check_dims(dims, d, "the snapshots")
    projected = [_Style.finite_rows(arr[:, [a, b]]) for arr in arrays]
    n_style = max(len(xy) for xy in projected)
    n = len(snapshots)
    fig = _new_figure(_STRIP_INCHES * n, _STRIP_INCHES + (0.35 if suptitle else 0.0))
    axes = fig.subplots(1, n, squeeze=False)[0]
    # A smaller panel holds fewer points per pixel: scale the marker area with the panel area.
    scale = (_STRIP_INCHES / _PANEL_INCHES) ** 2
    for ax, (title, _), xy in zip(axes, snapshots, projected, strict=True):
        _Style.scatter(ax, xy, _Style.color(0), n_for_style=n_style, scale=scale)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _save(fig, path, fmt)


# --------------------------------------------------------------------------------------------------
# Densities
# --------------------------------------------------------------------------------------------------


def grid_for(
    points: np.ndarray, *, resolution: int = 200, dims: tuple[int, int] = (0, 1)
) -> tuple[np.ndarray, Box]:
    """An evaluation grid over the padded, squared quantile box of ``points`` (columns ``dims``).

    Returns:
        ``(grid, extent)``: ``grid`` is a (resolution * resolution, 2) array of cell centres in
        row-major order with x varying fastest, so ``values.reshape(resolution, resolution)`` of
        per-point values is an (H, W) image with row 0 at the bottom, ready for :func:`plot_density`
        with ``extent = (x0, x1, y0, y1)`` (the outer cell edges).
    """
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    pts = _points(points, "points")
    a, b = _check_dims(dims, pts.shape[1], "points")
    x0, x1, y0, y1 = _Style.box(_Style.finite_rows(pts[:, [a, b]]))
    xe = np.linspace(x0, x1, resolution + 1)
    ye = np.linspace(y0, y1, resolution + 1)
    xs, ys = np.meshgrid((xe[:-1] + xe[1:]) / 2.0, (ye[:-1] + ye[1:]) / 2.0)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return grid, (float(x0), float(x1), float(y0), float(y1))


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (zero padding) of a 2-D array, with numpy only."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=float)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.apply_along_axis(np.convolve, 0, image, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 1, out, kernel, mode="same")


def _mass_levels(density: np.ndarray, fractions: Sequence[float]) -> list[float]:
    """Density thresholds whose super-level sets hold the given fractions of the total mass."""
    flat = np.sort(density.ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return []
    cum = np.cumsum(flat) / total
    levels = [float(flat[min(np.searchsorted(cum, f), flat.size - 1)]) for f in fractions]
    return sorted(set(lv for lv in levels if lv > 0))


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
    """Heatmap of a log-density on a grid, optionally with contours of the data's density.

    Args:
        log_density: (H, W) array of log p(x) in nats, row 0 at the bottom (see :func:`grid_for`).
            ``-inf`` and NaN cells are drawn in the lowest colour.
        extent: ``(x0, x1, y0, y1)``, the outer edges of the grid.
        path: output file; its suffix is replaced by ``"." + fmt``.
        points: optional (N, >=2) data; contours of its lightly smoothed 2-D histogram enclosing
            50 % and 90 % of the points in the view (highest-density regions) are drawn in white.
        title: axes title.
        columns: names of the two plotted columns (default "x1", "x2").
        fmt: "png" (default), "svg" or "pdf".

    The colour scale runs from a robust low value, the larger of the 5 % quantile of the finite
    values and (maximum - 20 nats), up to the maximum, so far tails do not wash out the picture.

    Returns:
        The path written.
    """
    logp = np.asarray(log_density, dtype=float)
    if logp.ndim != 2 or min(logp.shape) < 2:
        raise ValueError(f"log_density must be a 2-D (H, W) array, got shape {logp.shape}")
    x0, x1, y0, y1 = (float(v) for v in extent)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"extent must be (x0, x1, y0, y1) with x0 < x1 and y0 < y1, got {extent}")
    names = _column_names(columns, 2)
    finite = logp[np.isfinite(logp)]
    if finite.size:
        vmax = float(finite.max())
        vmin = max(float(np.quantile(finite, 0.05)), vmax - 20.0)
        if vmin >= vmax:
            vmin = vmax - 1.0
    else:
        vmin, vmax = -1.0, 0.0
    cmap = colormaps["viridis"]
    cmap = cmap.with_extremes(bad=cmap(0.0), under=cmap(0.0))

    fig = _new_figure(5.6, 4.8)
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(logp),
        origin="lower",
        extent=(x0, x1, y0, y1),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )
    bar = fig.colorbar(image, ax=ax, extend="min", shrink=0.9)
    bar.set_label("log p(x) [nats]")
    if points is not None:
        pts = _Style.finite_rows(_points(points, "points")[:, :2])
        inside = pts[(pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)]
        if len(inside) >= 10:
            bins = int(np.clip(math.sqrt(len(inside)) / 3.0, 25, 90))
            hist, xe, ye = np.histogram2d(inside[:, 0], inside[:, 1], bins=bins, range=[[x0, x1], [y0, y1]])
            smooth = _smooth(hist.T, sigma=1.5)
            levels = _mass_levels(smooth, (0.9, 0.5))
            if levels:
                xc, yc = (xe[:-1] + xe[1:]) / 2.0, (ye[:-1] + ye[1:]) / 2.0
                ax.contour(
                    xc,
                    yc,
                    smooth,
                    levels=levels,
                    colors="white",
                    linewidths=[0.9, 1.4][: len(levels)],
                    alpha=0.9,
                )
                ax.plot([], [], color="white", linewidth=1.2, label="data: 50% / 90% regions")
                legend = ax.legend(
                    loc="upper right",
                    fontsize=8,
                    framealpha=0.3,
                    facecolor="black",
                    edgecolor="none",
                    labelcolor="white",
                )
                legend.set_zorder(5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.tick_params(labelsize=8)
    return _save(fig, path, fmt)


# --------------------------------------------------------------------------------------------------
# Training histories
# --------------------------------------------------------------------------------------------------


def _pretty(key: str) -> str:
    """Legend label for a history key: "train_nll" -> "train NLL", "grad_norm" -> "grad norm"."""
    return " ".join(_ACRONYMS.get(tok.lower(), tok) for tok in key.split("_") if tok)


def _history_x(history: Mapping[str, Sequence[float]], x_key: str) -> np.ndarray:
    lengths = {k: len(v) for k, v in history.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history series differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    if x_key in history:
        return np.asarray(history[x_key], dtype=float)
    return np.arange(1, n + 1, dtype=float)


def _draw_curves(
    ax: Axes, x: np.ndarray, series: Mapping[str, Sequence[float]], *, log_y: bool, color_offset: int = 0
) -> None:
    """Plot each series against ``x`` using only finite points; markers where a series is sparse.

    A log y-axis is used only when asked for and every plotted value is positive.
    """
    drawn: list[np.ndarray] = []
    for i, (key, values) in enumerate(series.items()):
        y = np.asarray(values, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            continue
        sparse = ok.sum() < len(x) or ok.sum() <= 25
        ax.plot(
            x[ok],
            y[ok],
            color=_Style.color(i + color_offset),
            linewidth=1.6,
            marker="o" if sparse else None,
            markersize=4 if sparse else 0,
            label=_pretty(key),
        )
        drawn.append(y[ok])
    if not drawn:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="0.4")
        return
    if log_y and all((v > 0).all() for v in drawn):
        ax.set_yscale("log")
        # Plain numbers in one style ("0.5", "2", "1000", "1e5") instead of mathtext powers, also on minor ticks.
        ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
        ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    else:  # small values (a learning rate near 1e-3) as "9.5" under a "×10⁻⁴", not "0.00095"
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
    finite_x = x[np.isfinite(x)]
    if finite_x.size and np.all(finite_x == np.round(finite_x)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    if len(np.unique(finite_x)) == 1:
        ax.set_xlim(float(finite_x[0]) - 1.0, float(finite_x[0]) + 1.0)
    ax.grid(True, linewidth=0.4, alpha=0.35)
    ax.tick_params(labelsize=8, which="both")
    ax.legend(fontsize=8, frameon=False)


def _plain_number(value: float) -> str:
    """A tick label in one style for any magnitude: plain from 0.001 to 9,999 ("0.005", "20", "5000"),
    else a short power of ten ("2e-5", "1e4", "8.2e6")."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    if -3 <= exponent <= 3:
        return f"{value:.6g}"
    return f"{value / 10**exponent:.3g}e{exponent}"


class _PlainLogFormatter(LogFormatter):
    """matplotlib's LogFormatter (its choice of which minor ticks to label) with :func:`_plain_number`
    labels: its own labels switch from "1e4" to "1e+05" and write 0.1 as "1e-01"."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return _plain_number(x)


def plot_loss(
    history: Mapping[str, Sequence[float]],
    path: PathLike,
    *,
    x_key: str = "epoch",
    ylabel: str,
    title: str,
    log_y: bool = False,
    fmt: str = "png",
) -> Path:
    """Curves of every key of ``history`` other than ``x_key`` against ``x_key``.

    Non-finite values (e.g. NaN at epochs where a test loss was not computed) are skipped; series
    with gaps or few points get markers, so a single epoch still shows as a dot. ``log_y`` is
    honoured only when every plotted value is positive (NLLs in nats can be negative). Legend
    labels are prettified keys ("train_nll" -> "train NLL"). Without ``x_key`` in ``history`` the
    x-axis counts 1, 2, ...

    Returns:
        The path written.
    """
    x = _history_x(history, x_key)
    series = {k: v for k, v in history.items() if k != x_key}
    fig = _new_figure(6.4, 4.2)
    ax = fig.subplots()
    _draw_curves(ax, x, series, log_y=log_y)
    ax.set_xlabel(_pretty(x_key) if x_key in history else "step")
    ax.set_ylabel(ylabel)
    # wrapped to the axes' width (about 64 characters at this size), so a long title is not cut off
    ax.set_title(textwrap.fill(title, width=64), fontsize=11)
    return _save(fig, path, fmt)


def _is_loss_key(key: str) -> bool:
    tokens = key.lower().split("_")
    return any(tok in _LOSS_TOKENS for tok in tokens)


def _spans_decade(series: Mapping[str, Sequence[float]]) -> bool:
    """Whether the finite, positive values of ``series`` span at least a factor of 10."""
    values = np.concatenate([np.asarray(v, dtype=float).ravel() for v in series.values()] or [np.zeros(0)])
    values = values[np.isfinite(values) & (values > 0)]
    return values.size > 0 and float(values.max()) >= 10.0 * float(values.min())


def plot_training_diagnostics(
    history: Mapping[str, Sequence[float]],
    path: PathLike,
    *,
    x_key: str = "epoch",
    heldout: Sequence[str] = (),
    titles: Mapping[str, str] | None = None,
    fmt: str = "png",
) -> Path:
    """A 1 x 3 figure: loss curves, learning rate (log y) and gradient norm (log y) per epoch.

    Uses the keys ``x_key`` ("epoch"), "lr" and "grad_norm"; the loss panel shows every key
    whose underscore-separated parts include loss, nll, mse, kl, elbo or bpd (e.g. "train_nll",
    "val_loss"). A missing series leaves its panel with a short note.

    ``heldout`` names keys (e.g. "test_nll_bound", in other units than the training loss) drawn in
    a fourth panel beside the loss instead of in it; the figure is then 1 x 4. ``titles`` renames
    panels by their default titles ("loss", "held-out", "learning rate", "gradient norm").

    Returns:
        The path written.
    """
    x = _history_x(history, x_key)
    apart = [k for k in heldout if k in history]
    panels = [
        (
            "loss",
            {k: v for k, v in history.items() if k != x_key and k not in apart and _is_loss_key(k)},
            False,
        ),
        *([("held-out", {k: history[k] for k in apart}, False)] if apart else []),
        ("learning rate", {k: history[k] for k in ("lr",) if k in history}, True),
        ("gradient norm", {k: history[k] for k in ("grad_norm",) if k in history}, True),
    ]
    names = dict(titles or {})
    fig = _new_figure(4.5 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels))
    for i, (ax, (name, series, log_y)) in enumerate(zip(axes, panels, strict=True)):
        if series:
            # A log axis helps only across a wide range; over a narrow one it repeats tick labels.
            log_y = log_y and _spans_decade(series)
            _draw_curves(ax, x, series, log_y=log_y, color_offset=0 if i == 0 else i + 1)
            if name in ("learning rate", "gradient norm") and ax.get_legend() is not None:
                ax.get_legend().remove()
        else:
            ax.text(
                0.5, 0.5, f"no {name} recorded", transform=ax.transAxes, ha="center", va="center", color="0.4"
            )
        ax.set_title(names.get(name, name), fontsize=11)
        ax.set_xlabel(_pretty(x_key) if x_key in history else "step")
    return _save(fig, path, fmt)


# --------------------------------------------------------------------------------------------------
# Model pictures: coloured scatters, warped grids, vector fields, animations
# --------------------------------------------------------------------------------------------------

_OTHER_COLOR = "#BBBBBB"
_SEQUENTIAL = "cividis"  # perceptually uniform and readable with colour-vision deficiencies
_GIF_DPI = 100
_VECTOR_CMAP = "plasma"  # dark to bright and perceptually uniform; readable on a white background


def _draw_coloured(
    ax: Axes,
    xy: np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str] | None,
    *,
    n_for_style: int,
    scale: float = 1.0,
    legend: bool = False,
) -> None:
    """Scatter ``xy`` coloured by integer ``labels`` (names in ``categories``, -1 drawn grey) or,
    without ``categories``, by float ``labels`` in [0, 1] on a sequential colour map."""
    size, alpha = _Style.marker(n_for_style)
    rasterized = len(xy) > _RASTERIZE_ABOVE
    if categories is None:
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=np.clip(labels, 0.0, 1.0),
            cmap=_SEQUENTIAL,
            vmin=0.0,
            vmax=1.0,
            s=size * scale,
            alpha=alpha,
            linewidths=0,
            rasterized=rasterized,
        )
        return
    groups = [(-1, "background", _OTHER_COLOR)] + [
        (k, str(name), _Style.color(k)) for k, name in enumerate(categories)
    ]
    for k, name, color in groups:
        mask = labels == k
        if not mask.any():
            continue
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=size * scale,
            alpha=alpha if k >= 0 else alpha * 0.6,
            color=color,
            linewidths=0,
            label=name,
            rasterized=int(mask.sum()) > _RASTERIZE_ABOVE,
        )
    if legend:
        ax.legend(fontsize=8, markerscale=max(1.0, 6.0 / math.sqrt(size * scale)), frameon=False, loc="best")


def _check_labels(labels: np.ndarray, n: int, categories: Sequence[str] | None) -> np.ndarray:
    values = np.asarray(labels)
    if values.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {values.shape}")
    if categories is not None:
        values = values.astype(np.int64)
        if values.size and (values.min() < -1 or values.max() >= len(categories)):
            raise ValueError(f"labels must be in -1..{len(categories) - 1}")
    return values


def plot_coloured_panels(
    panels: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    path: PathLike,
    *,
    categories: Sequence[str] | None = None,
    normal_rings: Sequence[bool] | None = None,
    suptitle: str | None = None,
    colour_note: str | None = None,
    dims: tuple[int, int] = (0, 1),
    panel_columns: Sequence[Sequence[str] | None] | None = None,
    fmt: str = "png",
) -> Path:
    """One row of scatter panels of the same N points, each coloured by the same per-point labels.

    Use it to follow points from one space to another, e.g. data x and its latent z = f(x)
    coloured by the glyph each point came from.

    Args:
        panels: ``(title, points)`` pairs, every ``points`` (N, D) with D >= 2 and the same N.
        labels: (N,) integer class per point (with ``categories``; -1 = none of them, drawn grey),
            or floats in [0, 1] drawn on a sequential colour map (without ``categories``).
        path: output file; its suffix is replaced by ``"." + fmt``.
        categories: names of the classes 0, 1, ...; a legend shows them.
        normal_rings: per panel, whether to draw the 1, 2 and 3 sigma circles of N(0, I).
        suptitle: optional figure title; ``colour_note`` is appended below it (e.g. "colour: x1 quantile").
        dims: the two columns drawn.
        panel_columns: per panel, the names of its D axes (None: "x1", "x2", ...), drawn as labels.
        fmt: "png" (default), "svg" or "pdf".

    Returns:
        The path written.
    """
    if len(panels) == 0:
        raise ValueError("plot_coloured_panels needs at least one panel")
    arrays = [_points(data, f"panel {title!r}") for title, data in panels]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"all panels must hold the same points, got sizes {[len(a) for a in arrays]}")
    d = min(a.shape[1] for a in arrays)
    a, b = _check_dims(dims, d, "the panels")
    axis_names = _panel_names(panel_columns, len(panels), _column_names(None, d), d)
    values = _check_labels(labels, n, categories)
    projected = [arr[:, [a, b]] for arr in arrays]
    finite = np.all([np.all(np.isfinite(xy), axis=1) for xy in projected], axis=0)
    projected = [xy[finite] for xy in projected]
    values = values[finite]
    rings = [False] * len(panels) if normal_rings is None else [bool(r) for r in normal_rings]
    if len(rings) != len(panels):
        raise ValueError(f"normal_rings has {len(rings)} flags for {len(panels)} panels")

    heading = [h for h in (suptitle, colour_note) if h]
    k = len(panels)
    fig = _new_figure(_PANEL_INCHES * k, _PANEL_INCHES + 0.05 + 0.3 * len(heading))
    axes = fig.subplots(1, k, squeeze=False)[0]
    for i, (ax, (title, _), xy) in enumerate(zip(axes, panels, projected, strict=True)):
        box = _Style.box(xy)
        _draw_coloured(
            ax, xy, values, categories, n_for_style=len(xy), legend=categories is not None and i == 0
        )
        if rings[i]:
            theta = np.linspace(0.0, 2.0 * math.pi, 200)
            for r in (1.0, 2.0, 3.0):
                ax.plot(r * np.cos(theta), r * np.sin(theta), color="0.35", linewidth=0.7, linestyle="--")
            ax.plot([], [], color="0.35", linewidth=0.7, linestyle="--", label="N(0, I): 1, 2, 3 σ")
            if categories is None:  # on a white box, so the circles do not run through the text
                ax.legend(fontsize=8, loc="upper right", frameon=True, framealpha=0.9, edgecolor="none")
        _Style.frame(ax, box)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(axis_names[i][a])
        ax.set_ylabel(axis_names[i][b])
    if heading:
        fig.suptitle("\n".join(heading), fontsize=12)
    return _save(fig, path, fmt)


def plot_warped_grid(
    stages: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: PathLike,
    *,
    labels: np.ndarray | None = None,
    categories: Sequence[str] | None = None,
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """A row of panels showing grid lines (and points) after successive maps, e.g. flow layers.

    Args:
        stages: ``(title, lines, points)`` per panel: ``lines`` (L, P, 2) polylines, the first half
            drawn in one colour (e.g. the grid's vertical lines) and the second half in another;
            ``points`` (N, 2) points carried along (may be empty), coloured by ``labels``.
        path: output file; its suffix is replaced by ``"." + fmt``.
        labels, categories: as in :func:`plot_coloured_panels` (no ``labels``: one grey).
        suptitle: optional figure title.
        fmt: "png" (default), "svg" or "pdf".

    Each panel's limits come from the quantiles of its grid-line vertices, so a layer that
    sends a few lines far away still shows the bulk of the grid.

    Returns:
        The path written.
    """
    if len(stages) == 0:
        raise ValueError("plot_warped_grid needs at least one stage")
    k = len(stages)
    legend_height = 0.3 if categories is not None and labels is not None else 0.0
    fig = _new_figure(
        _STRIP_INCHES * 1.15 * k, _STRIP_INCHES * 1.15 + 0.2 + legend_height + (0.35 if suptitle else 0.0)
    )
    axes = fig.subplots(1, k, squeeze=False)[0]
    scale = (_STRIP_INCHES / _PANEL_INCHES) ** 2
    line_colors = ("#0072B2", "#D55E00")
    for i, (ax, (title, lines, points)) in enumerate(zip(axes, stages, strict=True)):
        lines = np.asarray(lines, dtype=float)
        if lines.ndim != 3 or lines.shape[2] != 2:
            raise ValueError(f"lines of stage {title!r} must have shape (L, P, 2), got {lines.shape}")
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        vertices = _Style.finite_rows(lines.reshape(-1, 2))
        if i == 0 or len(pts) < 10:
            box = _Style.box(vertices if len(vertices) else pts, aspect=1.0)
        else:  # where the carried points go: lines sent far away are cut off
            box = _Style.box(_Style.finite_rows(pts), aspect=1.0)
        half = len(lines) // 2
        for j, line in enumerate(lines):
            ax.plot(
                line[:, 0],
                line[:, 1],
                color=line_colors[0 if j < half else 1],
                linewidth=0.6,
                alpha=0.55,
                zorder=1,
            )
        if len(pts):
            if labels is None:
                _Style.scatter(ax, pts, "0.3", box=box, scale=scale)
            else:
                values = _check_labels(labels, len(pts), categories)
                _draw_coloured(
                    ax,
                    pts,
                    values,
                    categories,
                    n_for_style=len(pts),
                    scale=scale,
                )
        _Style.frame(ax, box)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=7)
    if categories is not None and labels is not None:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            names,
            loc="outside lower center",
            ncols=len(names),
            fontsize=9,
            frameon=False,
            markerscale=4.0,
        )
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _save(fig, path, fmt)


def plot_vector_fields(
    points: np.ndarray,
    fields: Sequence[tuple[str, np.ndarray]],
    path: PathLike,
    *,
    background: np.ndarray | None = None,
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """A row of quiver panels: one vector field per panel on the same 2-D grid of ``points``.

    Args:
        points: (G, 2) arrow tails (a regular grid).
        fields: ``(title, vectors)`` per panel, ``vectors`` (G, 2).
        path: output file; its suffix is replaced by ``"." + fmt``.
        background: optional (N, 2) points drawn faintly beneath the arrows (e.g. the data).
        suptitle: optional figure title.
        fmt: "png" (default), "svg" or "pdf".

    Arrows show the direction only (all the same length, 0.8 grid spacings); their colour shows
    the vector's length relative to that panel's longest (a colour bar on the right).

    Returns:
        The path written.
    """
    pts = _points(points, "points")[:, :2]
    if len(fields) == 0:
        raise ValueError("plot_vector_fields needs at least one field")
    box = _Style.box(_Style.finite_rows(pts), aspect=None)
    spacing = max(box[1] - box[0], box[3] - box[2]) / max(math.sqrt(len(pts)) - 1.0, 1.0)
    k = len(fields)
    fig = _new_figure(3.3 * k + 0.6, 3.45 + (0.35 if suptitle else 0.0))
    axes = fig.subplots(1, k, squeeze=False)[0]
    arrows = None
    for ax, (title, vectors) in zip(axes, fields, strict=True):
        vec = np.asarray(vectors, dtype=float)
        if vec.shape != pts.shape:
            raise ValueError(f"vectors of {title!r} must have shape {pts.shape}, got {vec.shape}")
        if background is not None:
            bg = _Style.finite_rows(_points(background, "background")[:, :2])
            size, alpha = _Style.marker(len(bg))
            ax.scatter(
                bg[:, 0],
                bg[:, 1],
                s=size * 0.6,
                alpha=min(1.0, alpha * 0.8),
                color="0.6",
                linewidths=0,
                rasterized=len(bg) > _RASTERIZE_ABOVE,
            )
        norm = np.linalg.norm(vec, axis=1)
        ok = np.isfinite(norm) & (norm > 0)
        longest = float(norm[ok].max()) if ok.any() else 0.0
        if longest > 0:
            unit = vec[ok] / norm[ok, None] * (0.8 * spacing)
            arrows = ax.quiver(
                pts[ok, 0],
                pts[ok, 1],
                unit[:, 0],
                unit[:, 1],
                norm[ok] / longest,
                cmap=ListedColormap(colormaps[_VECTOR_CMAP](np.linspace(0.0, 0.85, 256))),
                clim=(0.0, 1.0),
                angles="xy",
                scale_units="xy",
                scale=1.0,
                width=0.005,
                headwidth=3.5,
                headlength=4.0,
                headaxislength=3.5,
                zorder=2,
            )
        _Style.frame(ax, box)
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=7)
    if arrows is not None:
        bar = fig.colorbar(arrows, ax=list(axes), shrink=0.85, pad=0.01, aspect=25)
        bar.set_label("length / longest in panel", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return _save(fig, path, fmt)


def plot_animation(
    frames: Sequence[tuple[str, np.ndarray]],
    path: PathLike,
    *,
    reference: np.ndarray | None = None,
    suptitle: str | None = None,
    fps: float = 8.0,
    hold_last: int = 8,
    size_inches: float = 4.4,
) -> Path:
    """An animated, looping GIF of 2-D point clouds, e.g. the reverse diffusion x_L ... x_0.

    Args:
        frames: ``(title, points)`` per frame, ``points`` (N, D) with D >= 2 (columns 0 and 1 drawn).
        path: output file; its suffix is replaced by ".gif".
        reference: optional (M, >= 2) points (e.g. the real data) whose quantile box, widened to hold
            the frames' points too, sets the common axis limits; else the frames' own points do.
        suptitle: optional title above every frame.
        fps: frames per second.
        hold_last: the last frame is repeated this many extra times before the loop restarts.
        size_inches: width and height of the square figure; written at 100 dpi.

    Returns:
        The path written.
    """
    from matplotlib.animation import PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if len(frames) == 0:
        raise ValueError("plot_animation needs at least one frame")
    arrays = [_Style.finite_rows(_points(data, f"frame {title!r}")[:, :2]) for title, data in frames]
    parts = [arrays[0], arrays[-1]] + ([] if reference is None else [_points(reference, "reference")[:, :2]])
    box = _Style.box(_Style.finite_rows(np.concatenate(parts)))
    size, alpha = _Style.marker(max(len(a) for a in arrays))
    fig = Figure(figsize=(size_inches, size_inches), dpi=_GIF_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    scatter = ax.scatter(
        arrays[0][:, 0], arrays[0][:, 1], s=size, alpha=alpha, color=_Style.color(0), linewidths=0
    )
    _Style.frame(ax, box)
    title = ax.set_title(frames[0][0], fontsize=11)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    target = Path(path).with_suffix(".gif")
    writer = PillowWriter(fps=fps)
    with atomic_path(target) as tmp:
        writer.setup(fig, str(tmp), dpi=_GIF_DPI)
        for (name, _), xy in zip(frames, arrays, strict=True):
            scatter.set_offsets(xy)
            title.set_text(name)
            writer.grab_frame()
        for _ in range(max(int(hold_last), 0)):
            writer.grab_frame()
        writer.finish()
    return target


# --------------------------------------------------------------------------------------------------
# Model comparison sheet
# --------------------------------------------------------------------------------------------------


def plot_compare(
    panels: Sequence[tuple[str, np.ndarray]],
    densities: Sequence[tuple[str, np.ndarray, Box]],
    path: PathLike,
    *,
    reference: np.ndarray | None = None,
    columns: Sequence[str] | None = None,
    suptitle: str | None = None,
    fmt: str = "png",
) -> Path:
    """One sheet comparing models: scatter panels (real data, each model's samples) in the first row
    and log-density heatmaps in the second.

    Args:
        panels: ``(title, points (N, >=2))`` pairs, drawn in the limits of ``reference`` (or of the
            first panel).
        densities: ``(title, log_density (H, W), extent)`` triples as for :func:`plot_density`
            (row 0 at the bottom); each heatmap has its own colour scale, from the larger of its 5 %
            quantile and (maximum - 20 nats) up to its maximum.
        path: output file; its suffix is replaced by ``"." + fmt``.
        reference: points whose quantile box sets the scatter limits.
        columns: names of the two plotted columns.
        suptitle: optional figure title.
        fmt: "png" (default), "svg" or "pdf".

    Returns:
        The path written.
    """
    if len(panels) == 0:
        raise ValueError("plot_compare needs at least one scatter panel")
    arrays = [_Style.finite_rows(_points(data, f"panel {title!r}")[:, :2]) for title, data in panels]
    ref = arrays[0] if reference is None else _Style.finite_rows(_points(reference, "reference")[:, :2])
    box = _Style.box(ref)
    names = _column_names(None if columns is None else list(columns)[:2], 2)
    n_cols = max(len(panels), len(densities))
    n_rows = 2 if densities else 1
    fig = _new_figure(_PANEL_INCHES * n_cols, (_PANEL_INCHES - 0.2) * n_rows + (0.3 if suptitle else 0.0))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, ax in enumerate(axes[0]):
        if i >= len(arrays):
            ax.set_axis_off()
            continue
        _Style.scatter(ax, arrays[i], _Style.color(i), box=box, n_for_style=len(arrays[i]))
        ax.set_title(panels[i][0], fontsize=10)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    if densities:
        cmap = colormaps["viridis"]
        cmap = cmap.with_extremes(bad=cmap(0.0), under=cmap(0.0))
        for i, ax in enumerate(axes[1]):
            if i >= len(densities):
                ax.set_axis_off()
                continue
            title, log_density, extent = densities[i]
            logp = np.asarray(log_density, dtype=float)
            if logp.ndim != 2:
                raise ValueError(f"log-density {title!r} must be a 2-D (H, W) array, got shape {logp.shape}")
            finite = logp[np.isfinite(logp)]
            vmax = float(finite.max()) if finite.size else 0.0
            vmin = max(float(np.quantile(finite, 0.05)), vmax - 20.0) if finite.size else -1.0
            if vmin >= vmax:
                vmin = vmax - 1.0
            image = ax.imshow(
                np.ma.masked_invalid(logp),
                origin="lower",
                extent=tuple(float(v) for v in extent),
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
                aspect="equal",
            )
            bar = fig.colorbar(image, ax=ax, extend="min", shrink=0.85)
            bar.set_label("log p(x) [nats]", fontsize=8)
            bar.ax.tick_params(labelsize=7)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(names[0])
            ax.set_ylabel(names[1])
            ax.tick_params(labelsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _save(fig, path, fmt)
