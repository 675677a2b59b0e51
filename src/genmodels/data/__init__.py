"""Point data sets: loading and saving CSV files, train/test splits, and 2-D toy distributions.

Loading (:func:`load_csv`) validates a file thoroughly and reports every problem with its file line and
column, so that a model never sees a silently changed, non-finite or degenerate data set.

The toy generators in :data:`GENERATORS` all have the signature ``f(n, *, seed, **options)`` and return an
array of shape ``(n, 2)`` (float64, dimensionless coordinates) that depends only on the arguments.
Their scales follow the normalizing-flow literature (FFJORD's toy data): most of the mass lies in
``[-4, 4]^2``. :func:`exact_entropy` gives the closed-form differential entropy where one exists.

The ``text`` data set renders a string with a font that matplotlib ships (DejaVu Sans, regular
weight), samples points uniformly inside the glyph outlines (holes excluded) and mixes in an isotropic
Gaussian background. The file ``689_data.csv`` at the repository root is regenerated, bit for bit, by::

    genmodels make-data text --text 689 -n 65536 --seed 0 -o 689_data.csv

which calls ``save_csv("689_data.csv", make_text(65536, seed=0, text="689"), ("x", "y"))``.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from genmodels.errors import DataError
from genmodels.fileio import atomic_path

__all__ = [
    "Dataset",
    "DataWarning",
    "load_csv",
    "save_csv",
    "csv_text",
    "write_csv",
    "train_test_split",
    "make_text",
    "make_two_moons",
    "make_8gaussians",
    "make_checkerboard",
    "make_pinwheel",
    "make_2spirals",
    "make_circles",
    "make_swiss_roll",
    "glyph_labels",
    "glyph_area",
    "GENERATORS",
    "exact_entropy",
]

#: Number of bad cells listed in full in an error message; the rest are counted.
MAX_LISTED = 20

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


class DataWarning(UserWarning):
    """A data file loads but looks suspicious (degenerate, rows dropped, a doubtful header)."""


@dataclass(frozen=True)
class Dataset:
    """Numeric contents of a CSV file.

    Attributes:
        values: float64 array of shape ``(N, D)``, one row per valid data row of the file, in file order.
        columns: the ``D`` column names (from the header, or ``x, y`` / ``x0, x1, ...`` without one).
        path: the file the values came from.
        n_dropped: number of invalid rows dropped (only non-zero with ``drop_invalid=True``).
    """

    values: np.ndarray
    columns: tuple[str, ...]
    path: str
    n_dropped: int = 0

    @property
    def n_rows(self) -> int:
        """Number of rows ``N``."""
        return int(self.values.shape[0])

    @property
    def n_dims(self) -> int:
        """Number of columns ``D``."""
        return int(self.values.shape[1])


# --------------------------------------------------------------------------------------------------------
# CSV loading and saving
# --------------------------------------------------------------------------------------------------------


def _parse_cell(text: str) -> tuple[float | None, str]:
    """Parse one cell; return ``(value, "")`` or ``(None, reason)`` when it is not a finite number."""
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        value = float(stripped)
        if math.isfinite(value):
            return value, ""
        return None, "too large for a float64"
    if _NON_FINITE.fullmatch(stripped):
        return None, "not finite"
    if stripped == "":
        return None, "empty"
    if re.fullmatch(r"[+-]?[0-9]+,[0-9]+", stripped):
        return None, "decimal comma? use a point"
    return None, "not a number"


def _looks_numeric(text: str) -> bool:
    stripped = text.strip()
    return bool(_NUMBER.fullmatch(stripped) or _NON_FINITE.fullmatch(stripped))


def _default_columns(d: int) -> tuple[str, ...]:
    if d == 1:
        return ("x",)
    if d == 2:
        return ("x", "y")
    return tuple(f"x{i}" for i in range(d))


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def check_data_path(path: str | os.PathLike[str]) -> None:
    """Before any work: ``path`` names a data file that exists (reading it may still fail).

    Raises:
        DataError: ``path`` does not exist or is a folder.
    """
    target = Path(path)
    if target.is_dir():
        raise DataError(f"data path {str(target)!r} is a directory, not a CSV file")
    if not target.exists():
        raise DataError(f"data file {str(target)!r} does not exist")


def _read_text(path: Path) -> str:
    """Read ``path`` as UTF-8 text, turning every way this can fail into a :class:`DataError`."""
    check_data_path(path)
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise DataError(f"data file {str(path)!r} cannot be read (permission denied)") from None
    except OSError as exc:
        raise DataError(f"data file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path} is UTF-16 text (as some spreadsheet programs save it); save it as UTF-8 CSV")
    if raw.startswith(b"\x1f\x8b"):
        raise DataError(f"{path} is gzip-compressed; decompress it first (gunzip {path})")
    if raw.startswith(b"PK\x03\x04"):
        raise DataError(f"{path} is a zip archive (a spreadsheet workbook?); export the sheet as a CSV file")
    if b"\x00" in raw:
        raise DataError(f"{path} is not a text CSV file (it contains NUL bytes; binary data?)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not a UTF-8 text CSV file (undecodable byte at line {line}); "
            "save it as UTF-8 CSV with one row of numbers per line"
        ) from None


def _records(text: str, path: Path) -> list[tuple[int, list[str]]]:
    """Split CSV text into ``(first line number, fields)`` records, skipping blank lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    previous_line = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
        start = previous_line + 1
        previous_line = reader.line_num
        if not fields or all(not f.strip() for f in fields) and len(fields) == 1:
            continue  # blank line
        records.append((start, fields))
    return records


def _shown_name(name: str, limit: int = 60) -> str:
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 5] + " ..." + text[-1]


# Separators a CSV file from elsewhere may use instead of commas, for a hint when only one column is found.
_OTHER_SEPARATORS = ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars"), (" ", "spaces"))


def load_csv(path: str | os.PathLike[str], *, drop_invalid: bool = False, min_rows: int = 4) -> Dataset:
    """Load a CSV file of numbers into a :class:`Dataset`, validating everything.

    The first non-blank line is a header unless every one of its cells parses as a number, in which case
    it is data (columns named ``x, y`` for two columns, else ``x0, x1, ...``). Blank lines are ignored.
    Every other cell must be a finite decimal number (a point as decimal separator; ``nan``/``inf`` are
    rejected) and every row must have as many fields as the first.

    Args:
        path: CSV file, comma separated, UTF-8 (a byte-order mark is allowed).
        drop_invalid: drop rows with bad cells or the wrong number of fields (counted in ``n_dropped``,
            with a :class:`DataWarning`) instead of raising.
        min_rows: the least number of valid rows accepted.

    Returns:
        The values, float64 of shape ``(N, D)`` in the file's units, with ``N >= min_rows`` and ``D >= 2``.

    Raises:
        DataError: the file is missing, unreadable, binary or empty; has fewer than 2 columns; has bad cells
            or rows (all listed with file line and column) and ``drop_invalid`` is false; has fewer than
            ``min_rows`` valid rows; has a constant column; or has a header with number-like names or
            names holding line breaks.

    Warns:
        DataWarning: rows were dropped; or fewer than half the
            rows (and fewer than 1,000) are distinct points.
    """
    file = Path(path)
    records = _records(_read_text(file), file)
    if not records:
        raise DataError(f"{file} is empty: expected a header line such as 'x,y' and rows of numbers")

    first_line, first = records[0]
    if all(_looks_numeric(cell) for cell in first):
        columns = _default_columns(len(first))
        data_records = records
    else:
        given = {name.strip() for name in first}
        columns = tuple(  # an empty name gets one that no other column has
            name.strip() or (f"x{i}" if f"x{i}" not in given else f"column_{i + 1}")
            for i, name in enumerate(first)
        )
        data_records = records[1:]
        numeric = [name for name in first if _misread_name(name)]
        if numeric:
            raise DataError(
                f"line {first_line} of {file} is read as the header, but {_plural(len(numeric), 'name')} "
                f"({', '.join(map(repr, numeric[:5]))}) look like numbers or hold a line break; name every "
                "column with text (e.g. x,y), so that the samples' CSV can be read back, or, if the line "
                "is data, make all of its cells numbers"
            )
        seen: dict[str, int] = {}
        for i, name in enumerate(columns, start=1):
            if name in seen:
                raise DataError(
                    f"line {first_line} of {file}, the header: columns {seen[name]} and {i} are both named "
                    f"{name!r}; give every column its own name (the names label the figures' axes and the "
                    "samples' CSV)"
                )
            seen[name] = i
    n_cols = len(columns)
    if n_cols < 2:
        lines = [",".join(fields).strip() for fields in (first, *(f for _, f in data_records[:20]))]
        other = next(  # a separator on most of the first lines, not one in a comment of some other file
            (name for sep, name in _OTHER_SEPARATORS if sum(sep in line for line in lines) > len(lines) / 2),
            None,
        )
        hint = f" (it seems to be separated by {other}; the file must use commas)" if other else ""
        if other and any("," in line for line in lines[1:]):  # 0,126;-0,132: decimal commas as well
            hint = (
                f" (it seems to be separated by {other}, with decimal commas; the file must separate columns "
                "with commas and write numbers with a decimal point)"
            )
        if first[0].lstrip().startswith("#"):
            hint = " (its first line is a comment: is it a config file? The data go to --data, a config to --config)"
        raise DataError(
            f"{file} has 1 column ({_shown_name(columns[0])}){hint}; at least 2 are needed: the models learn a density "
            "over points with 2 or more coordinates, one per comma-separated column"
        )

    lengths = {len(fields) for _, fields in data_records}
    if (
        data_records
        and lengths <= {n_cols, n_cols + 1}
        and max(lengths) > 2
        and all(not fields[-1].strip() for _, fields in data_records)
    ):
        raise DataError(
            f"every row of {file} ends with an empty field (a comma at the end of each line?); "
            "remove the trailing commas"
        )

    rows: list[list[float]] = []
    problems: list[str] = []  # one entry per bad cell or malformed row
    bad_lines: list[int] = []
    for line, fields in data_records:
        if len(fields) != n_cols:
            problems.append(
                f"line {line}: {_plural(len(fields), 'field')} ({','.join(fields)!r}), expected {n_cols} "
                f"({', '.join(columns)})"
            )
            bad_lines.append(line)
            continue
        row: list[float] = []
        ok = True
        for name, cell in zip(columns, fields, strict=True):
            value, reason = _parse_cell(cell)
            if value is None:
                ok = False
                extra = "" if reason in ("empty", "not a number") else f" ({reason})"
                problems.append(f"line {line}, column {name!r}: {cell!r}{extra}")
            else:
                row.append(value)
        if ok:
            rows.append(row)
        else:
            bad_lines.append(line)

    n_dropped = 0
    if bad_lines:
        if not drop_invalid:
            listed = "\n".join("  " + p for p in problems[:MAX_LISTED])
            if len(problems) > MAX_LISTED:
                listed += f"\n  and {len(problems) - MAX_LISTED:,} more"
            raise DataError(
                f"{file}: {_plural(len(bad_lines), 'row')} of {len(data_records):,} cannot be read; "
                f"expected a finite number in each of the {n_cols} columns ({', '.join(columns)}):\n"
                f"{listed}\n"
                "Fix these rows, or pass --drop_invalid to drop such rows."
            )
        n_dropped = len(bad_lines)
        shown = ", ".join(str(n) for n in bad_lines[:10]) + (", ..." if len(bad_lines) > 10 else "")
        warnings.warn(
            DataWarning(
                f"dropped {_plural(n_dropped, 'invalid row')} of {file} "
                f"({'line' if n_dropped == 1 else 'lines'} {shown})"
            ),
            stacklevel=2,
        )

    if len(rows) < min_rows:
        raise DataError(
            f"{file} has {_plural(len(rows), 'valid row')}; at least {min_rows} are needed"
            + (f" ({n_dropped} invalid rows were dropped)" if n_dropped else "")
        )
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), n_cols)

    if data_records is not records and not first[0].strip() and len(values) > 1:
        index = values[:, 0]
        if np.array_equal(index, np.arange(len(index))) or np.array_equal(
            index, np.arange(1, len(index) + 1)
        ):
            raise DataError(
                f"the first column of {file} has no name and counts the rows ({index[0]:g}, {index[1]:g}, ...): "
                "it looks like a saved row index (pandas' to_csv without index=False); remove the column"
            )

    for j, name in enumerate(columns):
        column = values[:, j]
        if np.all(column == column[0]):
            raise DataError(
                f"column {name!r} of {file} is constant ({float(column[0])!r} on every row): "
                "a density over it is degenerate; remove the column"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            spread = float(np.std(column))
        if not math.isfinite(spread):
            raise DataError(
                f"column {name!r} of {file} has values too large to standardise "
                f"(largest magnitude {float(np.max(np.abs(column))):.3g}); rescale the column"
            )

    flat = _flat_directions(values, columns)
    if flat is not None:
        warnings.warn(DataWarning(f"{file}: {flat}"), stacklevel=2)
    n_distinct = len(np.unique(values, axis=0))
    if n_distinct < 0.5 * len(values) and n_distinct < 1000:
        warnings.warn(
            DataWarning(
                f"{file} has only {n_distinct:,} distinct points among {len(values):,} rows; a continuous "
                "density model will put very narrow peaks on them"
            ),
            stacklevel=2,
        )
    return Dataset(values=values, columns=columns, path=str(file), n_dropped=n_dropped)


# The smallest spread, relative to the largest, of any direction of the standardised points that counts
# as spread at all: below it the points lie on a plane (a line in 2-D) up to rounding of their text.
FLAT_SPREAD = 1e-4


def _flat_directions(values: np.ndarray, columns: Sequence[str]) -> str | None:
    """Why ``values (N, D)`` (no constant column; named ``columns``) lie on a lower-dimensional plane, or None: some linear
    combination of the standardised columns spreads less than :data:`FLAT_SPREAD` of the widest one,
    where a density over D coordinates has no finite maximum (the flow's likelihood grows without
    bound as it narrows onto the plane)."""
    n, d = values.shape
    if n <= d:
        return None
    with np.errstate(all="ignore"):
        z = values - values.mean(0)
        z = z / np.abs(z).max(0)  # first to within [-1, 1], so that tiny or huge columns stay finite
        z = z / z.std(0)
        covariance = z.T @ z / n
    if not np.isfinite(covariance).all():
        return None
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    spread = np.sqrt(np.clip(eigenvalues, 0.0, None) / eigenvalues[-1])
    flat = int(np.sum(spread < FLAT_SPREAD))
    if flat == 0:
        return None
    where = "on a straight line" if d - flat == 1 else f"on a {d - flat}-dimensional plane in {d} dimensions"
    direction = eigenvectors[:, 0]
    involved = [repr(columns[j]) for j in np.flatnonzero(np.abs(direction) > 0.05 * np.abs(direction).max())]
    return (
        f"the points lie {where}: a weighted sum of columns {', '.join(involved)} is the same on every row "
        f"(its spread is {float(spread[0]):.1g} of the widest direction's), so one column follows "
        "from the others; a density over all of them is degenerate and its likelihood can grow without "
        "bound; remove a column that the others determine"
    )


def save_csv(path: str | os.PathLike[str], values: np.ndarray, columns: Sequence[str] | None = None) -> None:
    """Write ``values`` (shape ``(N, D)``) to ``path`` as CSV with a header line (see :func:`write_csv`),
    atomically: a symbolic link is written through, a device or a pipe directly.

    Raises:
        ValueError: as :func:`write_csv`; nothing is written then.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        write_csv(handle, values, columns)


def csv_text(values: np.ndarray, columns: Sequence[str] | None = None) -> str:
    """``values`` (shape ``(N, D)``) as CSV text with a header line (see :func:`write_csv`)."""
    buffer = io.StringIO()
    write_csv(buffer, values, columns)
    return buffer.getvalue()


_CSV_CHUNK_ROWS = 65536


def _misread_name(name: str) -> bool:
    """Whether a column name would not survive a header line: it looks like a number (the line would
    read as data) or holds a line break."""
    return _looks_numeric(name) or "\n" in name or "\r" in name


def write_csv(handle: TextIO, values: np.ndarray, columns: Sequence[str] | None = None) -> None:
    """Write ``values`` (shape ``(N, D)``) as CSV with a header line to the text stream ``handle``,
    ``65,536`` rows at a time, so the text never needs more memory than one chunk's.

    Numbers are written at full precision: float64 values as their shortest exact decimal form, float32
    values with 9 significant digits; :func:`load_csv` reads the same values back exactly.

    Args:
        handle: an open text stream.
        values: finite numbers of shape ``(N, D)`` with ``D >= 1``.
        columns: ``D`` column names; default ``x, y`` for ``D == 2``, else ``x0, x1, ...``.

    Raises:
        ValueError: ``values`` is not 2-D or not finite, or ``columns`` has the wrong length or names that
            would be misread (empty, number-like, containing line breaks); checked before anything is
            written.
    """
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"values must have shape (N, D), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"values must be real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("values must all be finite (load_csv would reject nan and inf)")
    names = _default_columns(array.shape[1]) if columns is None else tuple(str(c) for c in columns)
    if len(names) != array.shape[1]:
        raise ValueError(f"{len(names)} column names for {array.shape[1]} columns")
    for name in names:
        if not name.strip() or _misread_name(name):
            raise ValueError(f"column name {name!r} is empty, number-like or has a line break")
    csv.writer(handle, lineterminator="\n").writerow(names)
    if array.dtype != np.float32:
        array = array.astype(np.float64, copy=False)
    float32 = array.dtype == np.float32
    d = array.shape[1]
    for start in range(0, array.shape[0], _CSV_CHUNK_ROWS):
        chunk = array[start : start + _CSV_CHUNK_ROWS].ravel().tolist()
        cells = [format(v, ".9g") for v in chunk] if float32 else [repr(v) for v in chunk]
        handle.write("".join(",".join(cells[i : i + d]) + "\n" for i in range(0, len(cells), d)))


def train_test_split(values: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows of ``values`` (shape ``(N, ...)``) at random into a training and a test part.

    The rows are permuted with ``numpy.random.default_rng(seed)``; the test part has
    ``round(N * test_fraction)`` rows, but at least 1 when ``test_fraction > 0`` and at most ``N - 1``.

    Returns:
        ``(train, test)`` of shapes ``(N - T, ...)`` and ``(T, ...)``; ``T == 0`` when ``test_fraction == 0``.

    Raises:
        ValueError: ``test_fraction`` is outside ``[0, 1)``, or a non-empty test part is asked of fewer than
            2 rows.
    """
    array = np.asarray(values)
    if array.ndim < 1:
        raise ValueError("values must have at least one dimension (rows)")
    fraction = float(test_fraction)
    if not (0.0 <= fraction < 1.0):
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    n = array.shape[0]
    if fraction == 0.0:
        n_test = 0
    else:
        if n < 2:
            raise ValueError(f"cannot split {n} row(s) into non-empty training and test parts")
        n_test = min(max(int(round(n * fraction)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return array[order[n_test:]], array[order[:n_test]]


# --------------------------------------------------------------------------------------------------------
# Text rendered as a point cloud
# --------------------------------------------------------------------------------------------------------

_Polygon = np.ndarray  # (V, 2) vertices of one closed outline


def _font_file(font: str) -> str:
    if os.sep in font or font.endswith((".ttf", ".otf")):
        return font
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font + ".ttf")


@functools.lru_cache(maxsize=32)
def _glyph_layout(
    text: str, font: str, height: float, center: tuple[float, float]
) -> tuple[tuple[_Polygon, ...], ...]:
    """Outlines of each character of ``text`` in data coordinates.

    The text is set in one line with the font's advances and kerning, then scaled (aspect kept) so that
    the ink of the whole string is ``height`` tall and translated so that its bounding box is centred on
    ``center``. Returns, per character, its closed outline polygons (holes included; containment uses the
    even-odd rule). Characters without ink (spaces) get no polygons.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text.strip():
        raise ValueError("text must contain at least one visible character")
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(_font_file(font)).get_charmap()
    missing = sorted({c for c in text if not c.isspace() and ord(c) not in charmap})
    if missing:
        listed = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in missing)
        raise ValueError(
            f"the font {os.path.basename(_font_file(font))} has no glyph for {listed}; it would be drawn "
            "as an empty box. Use characters the font has (Latin, Greek and Cyrillic letters, digits, "
            "punctuation), or another font"
        )
    prop = FontProperties(fname=_font_file(font))
    per_char: list[list[np.ndarray]] = []
    n_before = 0
    for i in range(len(text)):
        try:
            polygons = TextPath((0.0, 0.0), text[: i + 1], size=1.0, prop=prop).to_polygons(closed_only=True)
        except AttributeError:  # matplotlib cannot build the path of a text without any ink so far
            polygons = []
        per_char.append([np.asarray(p, dtype=np.float64) for p in polygons[n_before:]])
        n_before = len(polygons)
    all_vertices = [p for polys in per_char for p in polys]
    if not all_vertices:
        raise ValueError(f"text {text!r} has no visible glyphs")
    stacked = np.concatenate(all_vertices)
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)
    scale = height / (hi[1] - lo[1])
    shift = np.asarray(center) - scale * (lo + hi) / 2
    return tuple(tuple(scale * p + shift for p in polys) for polys in per_char)


def _inside(points: np.ndarray, polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Even-odd containment of ``points`` (shape ``(N, 2)``) in a set of outlines: (N,) bool."""
    from matplotlib.path import Path as MplPath

    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        inside ^= MplPath(polygon, closed=True).contains_points(points)
    return inside


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _char_area(polygons: Sequence[np.ndarray]) -> float:
    """Area under the even-odd rule: outlines nested an even number of times add, odd ones subtract."""
    from matplotlib.path import Path as MplPath

    total = 0.0
    for i, polygon in enumerate(polygons):
        depth = sum(
            MplPath(other, closed=True).contains_point(tuple(polygon[0]))
            for j, other in enumerate(polygons)
            if j != i
        )
        total += _polygon_area(polygon) * (1 if depth % 2 == 0 else -1)
    return total


_TEXT_DEFAULTS = {"font": "DejaVuSans", "height": 1.24, "center": (0.0, 0.13)}


def glyph_labels(
    points: np.ndarray,
    text: str = "689",
    *,
    font: str = _TEXT_DEFAULTS["font"],
    height: float = _TEXT_DEFAULTS["height"],
    center: tuple[float, float] = _TEXT_DEFAULTS["center"],
) -> np.ndarray:
    """Index of the character of ``text`` whose glyph contains each point, ``-1`` outside every glyph.

    Args:
        points: shape ``(N, 2)``, in the coordinates of :func:`make_text` with the same layout options.
        text, font, height, center: the layout, as in :func:`make_text`.

    Returns:
        int64 array of shape ``(N,)`` with values in ``{-1, 0, ..., len(text) - 1}`` (holes give ``-1``).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    labels = np.full(len(pts), -1, dtype=np.int64)
    layout = _glyph_layout(text, font, float(height), (float(center[0]), float(center[1])))
    for index, polygons in enumerate(layout):
        if not polygons:
            continue
        free = labels == -1
        hit = _inside(pts[free], polygons)
        labels[np.flatnonzero(free)[hit]] = index
    return labels


def glyph_area(
    text: str = "689",
    *,
    font: str = _TEXT_DEFAULTS["font"],
    height: float = _TEXT_DEFAULTS["height"],
    center: tuple[float, float] = _TEXT_DEFAULTS["center"],
) -> float:
    """Total inked area of ``text`` in the layout of :func:`make_text`, in squared data units."""
    layout = _glyph_layout(text, font, float(height), (float(center[0]), float(center[1])))
    return float(sum(_char_area(polygons) for polygons in layout))


def make_text(
    n: int,
    *,
    seed: int,
    text: str = "689",
    background: float = 0.1,
    background_std: float = 1.0,
    font: str = _TEXT_DEFAULTS["font"],
    height: float = _TEXT_DEFAULTS["height"],
    center: tuple[float, float] = _TEXT_DEFAULTS["center"],
) -> np.ndarray:
    """Points uniform inside the glyphs of ``text``, mixed with a diffuse Gaussian background.

    Each point is, independently, with probability ``background`` drawn from an isotropic Gaussian
    ``N(0, background_std^2 I)`` centred on the origin, and otherwise uniformly from the inked area of the
    rendered text (holes such as those of 6, 8, 9 excluded). The default layout puts "689" in about
    ``x in [-1.4, 1.4]``, ``y in [-0.49, 0.75]``.

    Args:
        n: number of points.
        seed: seed of the ``numpy.random.default_rng`` generator; the result depends only on the arguments.
        text: the string to render (one line).
        background: fraction in ``[0, 1]`` of background points.
        background_std: standard deviation of the background, in data units.
        font: a font file name shipped with matplotlib (without ``.ttf``), or a path to a font file.
        height: height of the inked text, data units.
        center: centre of the text's bounding box, data units.

    Returns:
        float64 array of shape ``(n, 2)``.
    """
    _check_n(n)
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be in [0, 1], got {background!r}")
    if background_std <= 0:
        raise ValueError(f"background_std must be positive, got {background_std!r}")
    layout = _glyph_layout(text, font, float(height), (float(center[0]), float(center[1])))
    polygons = [p for polys in layout for p in polys]
    stacked = np.concatenate(polygons)
    lo, hi = stacked.min(axis=0), stacked.max(axis=0)

    rng = np.random.default_rng(seed)
    n_background = int(rng.binomial(n, background)) if n else 0
    n_glyph = n - n_background
    accepted: list[np.ndarray] = []
    n_accepted = 0
    while n_accepted < n_glyph:
        candidates = lo + (hi - lo) * rng.random((max(4 * (n_glyph - n_accepted), 256), 2))
        hit = np.zeros(len(candidates), dtype=bool)
        for polys in layout:
            if polys:
                hit |= _inside(candidates, polys)
        accepted.append(candidates[hit])
        n_accepted += int(hit.sum())
    glyph_points = np.concatenate(accepted)[:n_glyph] if n_glyph else np.empty((0, 2))
    background_points = background_std * rng.standard_normal((n_background, 2))
    points = np.concatenate([glyph_points, background_points])
    return points[rng.permutation(n)]


# --------------------------------------------------------------------------------------------------------
# Classic 2-D toy distributions
# --------------------------------------------------------------------------------------------------------


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def make_two_moons(n: int, *, seed: int, noise: float = 0.1) -> np.ndarray:
    """Two interleaved half circles of radius 1 with Gaussian noise ``noise``, scaled by 2 and centred.

    The upper moon is centred at ``(-1, -0.2)`` and the lower at ``(1, 0.2)`` after scaling (FFJORD's
    layout): points lie in about ``[-3, 3] x [-1.5, 1.5]``. Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    upper = rng.random(n) < 0.5
    angle = np.pi * rng.random(n)
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return 2.0 * points + np.array([-1.0, -0.2])


def make_8gaussians(n: int, *, seed: int, radius: float = 2.0, std: float = 0.1) -> np.ndarray:
    """Equal mixture of 8 isotropic Gaussians (standard deviation ``std``) on a circle of ``radius``.

    The means are at angles ``k * pi / 4``, ``k = 0..7``. Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    angle = rng.integers(0, 8, size=n) * (np.pi / 4)
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + std * rng.standard_normal((n, 2))


def make_checkerboard(n: int, *, seed: int, half_width: float = 2.0) -> np.ndarray:
    """Uniform over the 8 dark squares of a 4 x 4 checkerboard covering ``[-half_width, half_width]^2``.

    The square containing the corner ``(-half_width, -half_width)`` is dark. The support has area
    ``2 * half_width^2``. Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    cell = half_width / 2
    column = rng.integers(0, 4, size=n)
    row = 2 * rng.integers(0, 2, size=n) + column % 2
    corner = np.stack([column, row], axis=1) * cell - half_width
    return corner + cell * rng.random((n, 2))


def make_pinwheel(
    n: int,
    *,
    seed: int,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> np.ndarray:
    """Pinwheel: ``arms`` elongated Gaussian blobs, each bent by a rotation growing with its radius.

    A point of arm ``k`` starts at ``(1 + radial_std * e1, tangential_std * e2)`` (``e`` standard normal),
    is rotated by ``2 pi k / arms + rate * exp(1 + radial_std * e1)`` and scaled by 2, as in FFJORD.
    Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    arm = rng.integers(0, arms, size=n)
    angle = 2 * np.pi * arm / arms + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angle), np.sin(angle)
    x = cos * features[:, 0] - sin * features[:, 1]
    y = sin * features[:, 0] + cos * features[:, 1]
    return 2.0 * np.stack([x, y], axis=1)


def make_2spirals(n: int, *, seed: int, noise: float = 0.1) -> np.ndarray:
    """Two interleaved spirals of 1.5 turns (point-symmetric about the origin), scaled by 1/3.

    Along-spiral position ``t = sqrt(u) * 3 pi`` (``u`` uniform), jittered by up to 0.5 before scaling, plus
    Gaussian noise ``noise`` after it, as in FFJORD; points lie in about ``[-4, 4]^2``.
    Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    points = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) + 0.5 * rng.random((n, 2))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    return sign * points / 3.0 + noise * rng.standard_normal((n, 2))


def make_circles(
    n: int, *, seed: int, radius: float = 3.0, factor: float = 0.5, noise: float = 0.08
) -> np.ndarray:
    """Two concentric circles of radii ``radius`` and ``factor * radius`` with Gaussian noise.

    Each point is on either circle with probability 1/2, at a uniform angle, plus isotropic noise of
    standard deviation ``noise * radius`` (FFJORD: ``make_circles(factor=0.5, noise=0.08) * 3``).
    Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    r = np.where(rng.random(n) < 0.5, 1.0, factor)
    angle = 2 * np.pi * rng.random(n)
    points = r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return radius * (points + noise * rng.standard_normal((n, 2)))


def make_swiss_roll(n: int, *, seed: int, noise: float = 1.0) -> np.ndarray:
    """2-D Swiss roll: the spiral ``t (cos t, sin t)``, ``t`` uniform in ``[1.5 pi, 4.5 pi]``.

    Gaussian noise ``noise`` is added, then everything is divided by 5 (FFJORD's scaling of scikit-learn's
    roll), so points lie in about ``[-3, 3]^2``. Returns float64 of shape ``(n, 2)``.
    """
    _check_n(n)
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + noise * rng.standard_normal((n, 2))
    return points / 5.0


#: Toy data sets by name; each is ``f(n, *, seed, **options) -> ndarray (n, 2)``.
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


def exact_entropy(name: str, **kwargs: object) -> float | None:
    """Closed-form differential entropy, in nats, of generator ``name`` with options ``kwargs``.

    Options not given take the generator's defaults. Known cases:

    * ``checkerboard``: uniform over area ``A = 2 * half_width^2``, so ``H = ln A``.
    * ``8gaussians``: when neighbouring modes are at least 12 standard deviations apart the mixture
      components barely overlap and ``H = ln 8 + ln(2 pi e std^2)`` (error below 1e-6 nats).
    * ``text`` with ``background=0``: uniform over the inked area ``A`` (:func:`glyph_area`), ``H = ln A``.

    Returns ``None`` for every other case (mixtures with overlapping parts, noisy curves), where only a
    numerical estimate is possible.

    Raises:
        KeyError: ``name`` is not in :data:`GENERATORS`.
        TypeError: an option the generator does not take.
    """
    if name not in GENERATORS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(GENERATORS)}")
    signature = inspect.signature(GENERATORS[name])
    bound = signature.bind_partial(0, seed=0, **kwargs)
    bound.apply_defaults()
    options = bound.arguments
    if name == "checkerboard":
        return math.log(2.0 * float(options["half_width"]) ** 2)
    if name == "8gaussians":
        radius, std = float(options["radius"]), float(options["std"])
        if std > 0 and 2 * radius * math.sin(math.pi / 8) >= 12 * std:
            return math.log(8) + math.log(2 * math.pi * math.e * std**2)
        return None
    if name == "text" and float(options["background"]) == 0.0:
        center = options["center"]
        return math.log(
            glyph_area(
                str(options["text"]),
                font=str(options["font"]),
                height=float(options["height"]),  # type: ignore[arg-type]
                center=(float(center[0]), float(center[1])),  # type: ignore[index]
            )
        )
    return None
