"""2-D toy distributions: text glyphs (:func:`make_text`) and the flow literature's toy densities at
FFJORD's scales (most mass in ``[-4, 4]^2``), with closed-form entropies (:func:`exact_entropy`).

Every generator in :data:`GENERATORS` is ``f(n, *, seed, **options) -> ndarray (n, 2)`` (float64,
dimensionless), a function of its arguments only. Those of :data:`LABELLED` take ``labels=True`` and then
return ``(points, names)``: the same points and each one's component name, a str array ``(n,)``. Bit for bit,
``689_data.csv`` is ``genmodels make-data text --text 689 -n 65536 --seed 0 -o 689_data.csv``."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["GENERATORS", "LABELLED", "exact_entropy", "glyph_area", "glyph_labels", "make_2spirals", "PEN_DIGITS", "make_8gaussians",
           "make_checkerboard", "make_circles", "make_pinwheel", "make_swiss_roll", "make_text", "make_two_moons"]  # fmt: skip


STROKE_BLUR = 0.25  #: Stroke noise std / median stroke width (~ 1 / sqrt(2 pi e): a uniform fill's entropy).
_HEIGHT = 1.24  # height of the text's ink, data units
_CURVE_STEPS = 16  # points per Bezier segment of an outline
_STATION_SPACING = 1e-3 * _HEIGHT  # arc length between midline stations along an outline
_MIN_CHORD_CENTRING = 0.75  # a chord crosses a stroke squarely if its midpoint is this centred
_ROWS = 512  # rows per block of the (rows, edges) distance arrays


def _closed_outlines(path) -> list[np.ndarray]:
    """Closed polylines ``(V, 2)`` of a matplotlib path, curves evaluated at ``_CURVE_STEPS`` points."""
    outlines, current = [], []
    t = np.linspace(0.0, 1.0, _CURVE_STEPS + 1)[1:]
    for segment, code in [*path.iter_bezier(), (None, path.MOVETO)]:
        if code == path.MOVETO:
            if len(current) > 2:
                outlines.append(np.concatenate(current))
            current = [] if segment is None else [segment.control_points[-1:]]
        elif code == path.CLOSEPOLY or segment.degree == 1:
            current.append(segment.control_points[-1:])
        else:
            current.append(segment(t))
    return outlines


@functools.lru_cache(maxsize=32)
def _glyph_layout(text: str) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per character, its DejaVu Sans outlines ``(V, 2)`` (even-odd), ink 1.24 tall at ``(0, 0.13)``."""
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.ft2font import FT2Font
    from matplotlib.textpath import TextPath

    font = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    charmap = FT2Font(font).get_charmap()
    if missing := [c for c in sorted(set(text)) if not c.isspace() and ord(c) not in charmap]:
        names = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in missing)
        raise ValueError(f"DejaVu Sans has no glyph for {names}; it would be drawn as an empty box")
    prop = FontProperties(fname=font)
    per_char, n_before = [], 0
    for i in range(len(text)):
        try:
            outlines = _closed_outlines(TextPath((0.0, 0.0), text[: i + 1], size=1.0, prop=prop))
        except AttributeError:  # matplotlib cannot build the path of a text without any ink so far
            outlines = []
        per_char.append(outlines[n_before:])
        n_before = len(outlines)
    if not any(per_char):
        raise ValueError(f"text {text!r} has no visible glyphs: give at least one visible character")
    stacked = np.concatenate([o for outlines in per_char for o in outlines])
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)
    scale = _HEIGHT / (hi[1] - lo[1])
    shift = np.array([0.0, 0.13]) - scale * (lo + hi) / 2
    return tuple(tuple(scale * o + shift for o in outlines) for outlines in per_char)


def _inside(points: np.ndarray, polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Even-odd containment of ``points`` ``(N, 2)`` in a set of outlines: ``(N,)`` bool."""
    from matplotlib.path import Path as MplPath

    hits = [MplPath(polygon, closed=True).contains_points(points) for polygon in polygons]
    return np.logical_xor.reduce(hits) if hits else np.zeros(len(points), dtype=bool)


def _char_area(polygons: Sequence[np.ndarray]) -> float:
    """Even-odd area (shoelace): outlines nested an even number of times add, odd ones subtract."""
    total = 0.0
    for i, polygon in enumerate(polygons):
        x, y = polygon[:, 0], polygon[:, 1]
        depth = sum(_inside(polygon[:1], [other])[0] for j, other in enumerate(polygons) if j != i)
        total += (-1) ** depth * 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return total


def glyph_labels(points: np.ndarray, text: str = "689", font: str = "auto") -> np.ndarray:
    """Index of the character of ``text`` (laid out by :func:`make_text` in ``font``) whose strokes contain
    each of ``points (N, 2)``: int64 ``(N,)``, ``-1`` outside (pen: within half its width of a midline)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if _font(text, font) == "pen":
        from scipy.spatial import cKDTree

        midline, widths, chars = _pen_midlines(text)
        distance, nearest = cKDTree(midline).query(pts)
        return np.where(distance <= widths[nearest] / 2, chars[nearest], -1).astype(np.int64)
    labels = np.full(len(pts), -1, dtype=np.int64)
    for index, polygons in enumerate(_glyph_layout(text)):
        free = np.flatnonzero(labels == -1)
        labels[free[_inside(pts[free], polygons)]] = index
    return labels


def glyph_area(text: str = "689", font: str = "auto") -> float:
    """Total inked area of ``text`` in the layout of :func:`make_text`, in squared data units (pen:
    midline length times the pen's width)."""
    if _font(text, font) == "pen":
        return len(_pen_midlines(text)[0]) * _STATION_SPACING * PEN_WIDTH
    return float(sum(_char_area(polygons) for polygons in _glyph_layout(text)))


def _ray_hit_distance(origins, directions, starts, ends) -> np.ndarray:
    """Distance ``(M,)`` along each ray ``(M, 2)`` to its first edge ``starts -> ends``; ``inf`` for none."""
    edge = ends - starts
    out = np.empty(len(origins))
    for i in range(0, len(origins), _ROWS):
        o, d = origins[i : i + _ROWS, None, :], directions[i : i + _ROWS, None, :]
        rel = starts[None] - o  # (rows, S, 2)
        cross = d[..., 0] * edge[:, 1] - d[..., 1] * edge[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (rel[..., 0] * edge[:, 1] - rel[..., 1] * edge[:, 0]) / cross
            u = (rel[..., 0] * d[..., 1] - rel[..., 1] * d[..., 0]) / cross
        out[i : i + _ROWS] = np.where((t > 1e-9 * _HEIGHT) & (u >= 0.0) & (u <= 1.0), t, np.inf).min(axis=1)
    return out


def _distance_to_edges(points, starts, ends) -> np.ndarray:
    """Distance ``(M,)`` from each of ``points`` ``(M, 2)`` to the nearest edge ``starts -> ends``."""
    edge = ends - starts
    squared_length = np.maximum((edge * edge).sum(-1), 1e-300)
    out = np.empty(len(points))
    for i in range(0, len(points), _ROWS):
        rel = points[i : i + _ROWS, None, :] - starts[None]  # (rows, S, 2)
        along = np.clip((rel * edge).sum(-1) / squared_length, 0.0, 1.0)
        gap = rel - along[..., None] * edge
        out[i : i + _ROWS] = np.sqrt((gap * gap).sum(-1).min(axis=1))
    return out


def _stations(outline: np.ndarray, closed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(M, 2)`` every ``_STATION_SPACING`` or so along an outline, and unit normals there."""
    closed = np.vstack([outline, outline[:1]]) if closed else outline
    step = np.diff(closed, axis=0)
    length = np.hypot(step[:, 0], step[:, 1])
    cumulative = np.concatenate([[0.0], np.cumsum(length)])
    count = max(int(cumulative[-1] / _STATION_SPACING), 3)
    at = (np.arange(count) + 0.5) * cumulative[-1] / count
    edge = np.clip(np.searchsorted(cumulative, at, side="right") - 1, 0, len(step) - 1)
    frac = (at - cumulative[edge]) / np.maximum(length[edge], 1e-300)
    tangent = step[edge] / np.maximum(length[edge], 1e-300)[:, None]
    return closed[edge] + frac[:, None] * step[edge], np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)


def _inscribed_radius(origins, normals, starts, ends, upper) -> np.ndarray:
    """Radius ``(M,)`` of the largest inked disc touching each origin (shrinking-ball medial axis)."""
    low, high = np.zeros(len(origins)), np.asarray(upper, dtype=np.float64).copy()
    for _ in range(24):
        radius = 0.5 * (low + high)
        fits = _distance_to_edges(origins + radius[:, None] * normals, starts, ends) >= radius * (1 - 1e-3)
        low, high = np.where(fits, radius, low), np.where(fits, high, radius)
    return low


#: Single-stroke digits drawn as a pen would, in a box 0.6 wide and 1 tall (baseline 0): arcs
#: ``(cx, cy, rx, ry, from_degrees, to_degrees)`` and lines ``(x0, y0, x1, y1)``.
PEN_DIGITS: dict[str, tuple[tuple[float, ...], ...]] = {
    "0": ((0.3, 0.5, 0.28, 0.48, 0, 360),),
    "1": ((0.3, 0, 0.3, 1), (0.3, 1, 0.1, 0.8)),
    "2": ((0.3, 0.72, 0.27, 0.27, 160, -40), (0.51, 0.55, 0.02, 0), (0.02, 0, 0.58, 0)),
    "3": ((0.3, 0.76, 0.23, 0.23, 150, -90), (0.3, 0.27, 0.27, 0.26, 90, -150)),
    "4": ((0.45, 0, 0.45, 1), (0.45, 1, 0, 0.3), (0, 0.3, 0.6, 0.3)),
    "5": ((0.55, 1, 0.12, 1), (0.12, 1, 0.08, 0.56), (0.3, 0.3, 0.3, 0.3, 130, -150)),
    "6": ((0.3, 0.3, 0.3, 0.3, 0, 360), (0.52, 1, 0.06, 0.45)),
    "7": ((0, 1, 0.6, 1), (0.6, 1, 0.2, 0)),
    "8": ((0.3, 0.77, 0.23, 0.23, 0, 360), (0.3, 0.27, 0.27, 0.27, 0, 360)),
    "9": ((0.3, 0.7, 0.3, 0.3, 0, 360), (0.6, 0.7, 0.55, 0)),
}
PEN_WIDTH = 0.18  #: Pen width in data units (the strokes' blur is ``stroke_blur`` times it).
_PEN_ADVANCE = 0.95  # distance between the boxes' left edges, in box heights


def _font(text: str, font: str) -> str:
    """``font`` resolved: ``"auto"`` is ``"pen"`` for digits (and spaces), else ``"dejavu"``."""
    if font not in ("auto", "pen", "dejavu"):
        raise ValueError(f"font must be 'auto', 'pen' or 'dejavu', got {font!r}")
    if font == "auto":
        return "pen" if text.strip() and all(c.isspace() or c in PEN_DIGITS for c in text) else "dejavu"
    if font == "pen" and (missing := sorted({c for c in text if not c.isspace() and c not in PEN_DIGITS})):
        raise ValueError(f"the pen font draws the digits 0-9 only, not {', '.join(map(repr, missing))}")
    return font


@functools.lru_cache(maxsize=32)
def _pen_midlines(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_stroke_midlines` of :data:`PEN_DIGITS`: ink (with the pen) 1.24 tall at ``(0, 0.13)``."""
    scale = (_HEIGHT - PEN_WIDTH) / _HEIGHT  # box height 1 -> midline height, keeping ``_STATION_SPACING``
    stations, chars = [], []
    for index, char in enumerate(text):
        shift = [index * _PEN_ADVANCE, 0.0]
        for stroke in PEN_DIGITS.get(char, ()):
            if len(stroke) == 4:
                line = np.array(stroke).reshape(2, 2)
            else:
                cx, cy, rx, ry, start, stop = stroke
                angle = np.radians(np.linspace(start, stop, 256))
                line = np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=1)
            stations.append(_stations((line + shift) * _HEIGHT * scale, closed=False)[0])
            chars.append(np.full(len(stations[-1]), index))
    stations_all = np.concatenate(stations)
    lo, hi = stations_all.min(axis=0), stations_all.max(axis=0)
    stations_all += np.array([0.0, 0.13]) - (lo + hi) / 2
    return stations_all, np.full(len(stations_all), PEN_WIDTH), np.concatenate(chars)


@functools.lru_cache(maxsize=32)
def _stroke_midlines(text: str, font: str = "dejavu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stroke midline points ``(M, 2)``, widths and character indices ``(M,)``, equal mass per length."""
    if _font(text, font) == "pen":
        return _pen_midlines(text)
    points, widths, loose, chars = [], [], [], []
    for char, outlines in enumerate(_glyph_layout(text)):
        if not outlines:
            continue
        starts, ends = np.concatenate(outlines), np.concatenate([np.roll(o, -1, axis=0) for o in outlines])
        for outline in outlines:
            origin, normal = _stations(outline)
            normal = np.where(_inside(origin + 1e-6 * _HEIGHT * normal, outlines)[:, None], normal, -normal)
            chord = np.minimum(_ray_hit_distance(origin, normal, starts, ends), _HEIGHT)
            middle = origin + 0.5 * chord[:, None] * normal
            square = _distance_to_edges(middle, starts, ends) >= _MIN_CHORD_CENTRING * 0.5 * chord
            radius = _inscribed_radius(origin[~square], normal[~square], starts, ends, 0.5 * chord[~square])
            middle[~square] = origin[~square] + radius[:, None] * normal[~square]
            chord[~square] = 2 * radius
            points.append(middle), widths.append(chord), loose.append(~square)
            chars.append(np.full(len(middle), char))
    points, widths, loose, chars = (np.concatenate(a) for a in (points, widths, loose, chars))
    keep = ~loose | (widths >= 0.25 * np.median(widths[~loose]))
    return points[keep], widths[keep], chars[keep]


def make_text(
    n: int,
    *,
    seed: int,
    text: str = "689",
    background: float = 0.1,
    background_std: float = 1.0,
    stroke_blur: float = STROKE_BLUR,
    font: str = "auto",
    labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Soft pen strokes of ``text`` plus a Gaussian background: float64 ``(n, 2)``.

    A point is, with probability ``background``, from ``N(0, background_std^2 I)``, else uniform by length on
    the stroke midlines (ink 1.24 tall at ``(0, 0.13)``) plus isotropic Gaussian noise of std ``stroke_blur``
    times the median stroke width (about 95 % inside the strokes). ``font``: ``"pen"``, hand-drawn digits
    (:data:`PEN_DIGITS`, pen :data:`PEN_WIDTH`); ``"dejavu"``, the midlines of DejaVu Sans's outlines (any
    text it covers); ``"auto"``: pen for digits. Labels: each point's character, or ``"background"``."""
    rng = _rng(n, seed)
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be in [0, 1], got {background!r}")
    if background_std <= 0:
        raise ValueError(f"background_std must be positive, got {background_std!r}")
    if not stroke_blur > 0:
        raise ValueError(f"stroke_blur must be positive, got {stroke_blur!r}")
    midline, widths, chars = _stroke_midlines(text, font)
    n_background = int(rng.binomial(n, background)) if n else 0
    n_glyph = n - n_background
    pick = rng.integers(len(midline), size=n_glyph)
    glyph_points = midline[pick] + stroke_blur * float(np.median(widths)) * rng.standard_normal((n_glyph, 2))
    background_points = background_std * rng.standard_normal((n_background, 2))
    order = rng.permutation(n)
    points = np.concatenate([glyph_points, background_points])[order]
    index = np.concatenate([chars[pick], np.full(n_background, len(text))])[order]
    return _named(points, labels, index, [*text, "background"])


def _named(points: np.ndarray, labels: bool, index: np.ndarray, names: Sequence[str]):  # noqa: ANN202
    """``points``, or with ``labels`` also each point's component name ``names[index]`` ``(n,)``."""
    return (points, np.asarray(names, dtype=str)[index]) if labels else points


def _rng(n: int, seed: int) -> np.random.Generator:
    """The generator of ``seed``; ValueError unless ``n`` is a non-negative integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return np.random.default_rng(seed)


def make_two_moons(n: int, *, seed: int, noise: float = 0.1, labels: bool = False):  # noqa: ANN201
    """Two interleaved half circles of radius 1 with Gaussian ``noise``, scaled by 2, centred at
    ``(-1, -0.2)`` and ``(1, 0.2)`` (FFJORD): about ``[-3, 3] x [-1.5, 1.5]``. Labels: upper, lower."""
    rng = _rng(n, seed)
    upper = rng.random(n) < 0.5
    angle = np.pi * rng.random(n)
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return _named(2.0 * points + np.array([-1.0, -0.2]), labels, (~upper).astype(int), ["upper", "lower"])


def make_8gaussians(n: int, *, seed: int, radius: float = 2.0, std: float = 0.1, labels: bool = False):  # noqa: ANN201
    """Equal mixture of 8 isotropic Gaussians (``std``) at angles ``k pi / 4`` on a circle of ``radius``.
    Labels: k = 0..7."""
    rng = _rng(n, seed)
    k = rng.integers(0, 8, size=n)
    angle = k * (np.pi / 4)
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return _named(centres + std * rng.standard_normal((n, 2)), labels, k, [str(i) for i in range(8)])


def make_checkerboard(n: int, *, seed: int, half_width: float = 2.0, labels: bool = False):  # noqa: ANN201
    """Uniform over the 8 dark squares (the one at ``(-half_width, -half_width)`` is dark) of a 4 x 4
    board covering ``[-half_width, half_width]^2``: support area ``2 half_width^2``. Labels: the
    squares in two colours, alternating along the dark diagonals (``a`` at the lower left corner, ``b``)."""
    rng = _rng(n, seed)
    cell = half_width / 2
    column = rng.integers(0, 4, size=n)
    row = 2 * rng.integers(0, 2, size=n) + column % 2
    corner = np.stack([column, row], axis=1) * cell - half_width
    return _named(corner + cell * rng.random((n, 2)), labels, (row // 2 + column // 2) % 2, ["a", "b"])


def make_pinwheel(
    n: int,
    *,
    seed: int,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
    labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """FFJORD's pinwheel: a point of arm ``k`` starts at ``(1 + radial_std e1, tangential_std e2)``
    (``e`` standard normal), is rotated by ``2 pi k / arms + rate exp(1 + radial_std e1)`` and scaled by 2.
    Labels: the arm k."""
    rng = _rng(n, seed)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    arm = rng.integers(0, arms, size=n)
    angle = 2 * np.pi * arm / arms + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    x = cos * features[:, 0] - sin * features[:, 1]
    y = sin * features[:, 0] + cos * features[:, 1]
    return _named(2.0 * np.stack([x, y], axis=1), labels, arm, [str(i) for i in range(arms)])


def make_2spirals(n: int, *, seed: int, noise: float = 0.1) -> np.ndarray:
    """FFJORD's two point-symmetric spirals of 1.5 turns: position ``t = 3 pi sqrt(u)`` (``u`` uniform),
    jittered by up to 0.5, scaled by 1/3, plus Gaussian ``noise``."""
    rng = _rng(n, seed)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    points = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) + 0.5 * rng.random((n, 2))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    return sign * points / 3.0 + noise * rng.standard_normal((n, 2))


def make_circles(
    n: int, *, seed: int, radius: float = 3.0, factor: float = 0.5, noise: float = 0.08, labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Two concentric circles, radii ``radius`` and ``factor * radius``, equally likely, uniform angle,
    plus isotropic noise of standard deviation ``noise * radius``. Labels: outer, inner."""
    rng = _rng(n, seed)
    outer = rng.random(n) < 0.5
    angle = 2 * np.pi * rng.random(n)
    points = np.where(outer, 1.0, factor)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points = radius * (points + noise * rng.standard_normal((n, 2)))
    return _named(points, labels, (~outer).astype(int), ["outer", "inner"])


def make_swiss_roll(n: int, *, seed: int, noise: float = 1.0) -> np.ndarray:
    """The spiral ``t (cos t, sin t)``, ``t`` uniform in ``[1.5 pi, 4.5 pi]``, plus Gaussian ``noise``,
    divided by 5 (FFJORD): about ``[-3, 3]^2``."""
    rng = _rng(n, seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    return (np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + noise * rng.standard_normal((n, 2))) / 5.0


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "text": make_text,
    "two_moons": make_two_moons,
    "8gaussians": make_8gaussians,
    "checkerboard": make_checkerboard,
    "pinwheel": make_pinwheel,
    "2spirals": make_2spirals,
    "circles": make_circles,
    "swiss_roll": make_swiss_roll,
}

LABELLED = ("text", "two_moons", "8gaussians", "checkerboard", "pinwheel", "circles")


def exact_entropy(name: str, **options: object) -> float | None:
    """Closed-form differential entropy in nats of generator ``name`` with ``options``, or None:
    ``checkerboard`` ``ln(2 half_width^2)``; ``8gaussians`` with modes >= 12 std apart
    ``ln 8 + ln(2 pi e std^2)``. KeyError for an unknown ``name``."""
    if name not in GENERATORS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(GENERATORS)}")
    bound = inspect.signature(GENERATORS[name]).bind_partial(0, seed=0, **options)
    bound.apply_defaults()
    o = bound.arguments
    if name == "checkerboard":
        return math.log(2.0 * float(o["half_width"]) ** 2)
    if name == "8gaussians" and 0 < o["std"] and 2 * o["radius"] * math.sin(math.pi / 8) >= 12 * o["std"]:
        return math.log(8) + math.log(2 * math.pi * math.e * float(o["std"]) ** 2)
    return None
