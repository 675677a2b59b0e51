"""Point tables: CSV files of numbers read with pandas (:func:`load_csv`, naming every bad cell by line and
column, so that no model sees a silently changed data set), written exactly (:func:`save_csv`), and split."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from genmodels.errors import DataError
from genmodels.fileio import PathLike, atomic_path

__all__ = ["Dataset", "DataWarning", "check_data_path", "csv_text", "load_csv", "save_csv",
           "train_test_split", "write_csv"]  # fmt: skip

MAX_LISTED = 20  # bad cells listed in full in an error message; the rest are counted
MAX_LABELS = 64  # most distinct values a numeric condition column may have (more: a continuous context)
_CSV_CHUNK_ROWS = 65536
_NUMBER = r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*"  # a finite decimal number
Names = Sequence[str] | None  # column names or one label per row; None: the defaults, or no labels
_is_number = np.vectorize(lambda text: re.fullmatch(_NUMBER, text) is not None, otypes=[bool])


class DataWarning(UserWarning):
    """A data file loads but looks suspicious (degenerate, rows dropped)."""


@dataclass(frozen=True)
class Dataset:
    """A file's float64 ``values`` ``(N, D)`` in file order, ``columns`` (header, or ``x, y`` / ``x0, ...``),
    ``path`` and ``n_dropped`` invalid rows; with a ``condition`` column, ``labels``, each row's category index
    ``(N,)`` int64 into ``label_names``, the column's distinct values (sorted; numbers by value)."""

    values: np.ndarray
    columns: tuple[str, ...]
    path: str
    n_dropped: int = 0
    condition: str | None = None
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()


def _misread_name(name: str) -> bool:
    """Whether ``name`` would not survive a header line: number-like (``nan``, ``inf`` too) or multi-line."""
    return bool(_is_number(name) or re.search(r"^\s*[+-]?(nan|inf|infinity)\s*$|[\r\n]", name, re.IGNORECASE))


def _default_columns(d: int) -> tuple[str, ...]:
    return ("x", "y") if d == 2 else ("x",) if d == 1 else tuple(f"x{i}" for i in range(d))


def check_data_path(path: PathLike) -> None:
    """Raise :class:`DataError` unless ``path`` names a file that exists (reading it may still fail)."""
    target = Path(path)
    if target.is_dir():
        raise DataError(f"data path {str(target)!r} is a directory, not a CSV file")
    if not target.exists():
        raise DataError(f"data file {str(target)!r} does not exist")


def _read_cells(file: Path) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """``(lines (R,), cells (R, D))`` of the non-blank lines, split at commas, else at ``;``, tab or space,
    and ``{line: fields}`` of the lines with another number of fields than the first (D)."""
    import pandas as pd

    def read(sep: str) -> pd.DataFrame:  # as wide as the first non-blank line; a blank line is all NaN
        width = pd.read_csv(file, sep=sep, header=None, nrows=1, dtype=str, engine="python").shape[1]
        return pd.read_csv(file, sep=sep, header=None, names=range(width), dtype=str, keep_default_na=False,
                           engine="python", skip_blank_lines=False, skipinitialspace=True,
                           on_bad_lines=lambda fields: [sep.join(fields)])  # fmt: skip

    try:
        frame, sep = read(","), ","
        if frame.shape[1] == 1:
            sample = "\n".join(frame[0].dropna()[:50])
            with contextlib.suppress(csv.Error):
                sep = csv.Sniffer().sniff(sample, delimiters=";\t ").delimiter
                frame = read(sep)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame([[None]])
    except (ValueError, UnicodeError, OSError, csv.Error) as exc:  # pandas' ParserError is a ValueError
        raise DataError(f"{file} cannot be read as a UTF-8 CSV file of numbers ({exc})") from None
    blank = (frame[0].fillna("").str.strip() == "") & frame.iloc[:, 1:].isna().all(axis=1)
    if blank.all():
        raise DataError(f"{file} is empty: expected a header line such as 'x,y' and rows of numbers")
    # a missing field is NaN (an empty one ''); a line too long arrives whole in its first cell, alone
    fields = frame.notna().sum(axis=1)
    merged = (fields == 1) & (frame.shape[1] > 1)
    fields[merged] += frame[0][merged].str.count(re.escape(sep))
    odd = {int(i) + 1: int(n) for i, n in fields[~blank & (fields != frame.shape[1])].items()}
    return np.flatnonzero(~blank) + 1, frame[~blank].fillna("").to_numpy(dtype=str), odd


def _header(names: list[str], file: Path, line: int) -> tuple[str, ...]:
    """Column names from the header at ``line``; an empty name becomes ``column_<i>``."""
    names = [name.strip() or f"column_{i}" for i, name in enumerate(names, start=1)]
    if misread := [name for name in names if _misread_name(name)]:
        raise DataError(
            f"line {line} of {file} is read as the header, but names {', '.join(map(repr, misread[:5]))} look "
            "like numbers or hold a line break; name every column with text, or make every cell a number"
        )
    if clash := next((name for i, name in enumerate(names) if name in names[:i]), None):
        raise DataError(f"line {line} of {file}, the header: two columns are named {clash!r}; rename one")
    return tuple(names)


def _split_condition(
    columns: tuple[str, ...], cells: np.ndarray, lines: np.ndarray, condition: str, file: Path
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The other columns, their cells, and the ``condition`` column's stripped text ``(R,)``, checked."""
    if condition not in columns:
        raise DataError(
            f"{file} has no column {condition!r} (data.condition, --condition); its columns are "
            f"{', '.join(map(repr, columns))}: name a categorical column of its header"
        )
    j = columns.index(condition)
    text = np.char.strip(cells[:, j].astype(str))
    if (empty := np.flatnonzero(text == "")).size:
        shown = ", ".join(map(str, lines[empty[:10]])) + ", ..." * (len(empty) > 10)
        raise DataError(f"{file}: column {condition!r} (the condition) is empty on {len(empty):,} rows "
                        f"(lines {shown}); expected a category on every row")  # fmt: skip
    distinct = np.unique(text)
    if _is_number(distinct).all() and len(distinct) > MAX_LABELS:
        raise DataError(
            f"{file}: column {condition!r} (the condition) holds {len(distinct):,} distinct numbers; a "
            f"continuous context is not supported yet: expected a categorical column of at most "
            f"{MAX_LABELS} values (labels such as 6, 8, 9)"
        )
    return columns[:j] + columns[j + 1 :], np.delete(cells, j, axis=1), text


def _text_columns_error(file: Path, textual: list[str], first_cells: list[str], line: int) -> DataError:
    """A column without a single number is not a coordinate: remove it, or train on it as a label."""
    named = ", ".join(f"{c!r} (line {line}: {cell!r})" for c, cell in zip(textual, first_cells, strict=True))
    s = "s" * (len(textual) > 1)
    return DataError(f"{file}: column{s} {named} hold{'' if s else 's'} no numbers; remove {'them' if s else 'it'} "
                     f"from the file, or, if {'one' if s else 'it'} labels the points, pass --condition "
                     f"{textual[0]} to train on it as a label")  # fmt: skip


def load_csv(
    path: PathLike, *, drop_invalid: bool = False, min_rows: int = 4, condition: str | None = None
) -> Dataset:
    """Read a CSV file of finite decimal numbers, UTF-8, perhaps compressed (``.gz``, ``.zip``, ...).

    The first non-blank line is a header unless all its cells are numbers. Rows with bad cells raise a
    :class:`DataError` listing line, column and text, or with ``drop_invalid`` are dropped (with a
    :class:`DataWarning`). Also refused, naming the file: a missing, unreadable or empty file, fewer than 2
    columns or ``min_rows`` valid rows, duplicate or number-like header names, a constant column. Warns when
    the points lie on a plane or mostly repeat. ``condition`` names a categorical column: the labels."""
    file = Path(path)
    check_data_path(file)
    lines, cells, odd = _read_cells(file)
    columns, lines, cells = _columns_and_rows(lines, cells, file)
    width = len(columns)
    text = None
    if condition is not None:
        columns, cells, text = _split_condition(columns, cells, lines, condition, file)
    if len(columns) < 2:
        raise DataError(f"{file} has 1 column ({columns[0]!r}); at least 2 (comma-separated) are needed")
    values = np.where(_is_number(cells), cells, "nan").astype(np.float64)
    bad = ~np.isfinite(values)
    bad_rows = bad.any(axis=1)
    bad_lines = lines[bad_rows]
    n_bad, s = len(bad_lines), "s" * (len(bad_lines) > 1)
    # a column of text beside columns of numbers (--drop_invalid would drop every row); where every column
    # is unreadable, the file is in another format, and its cells are listed below, as are empty columns
    unread = np.flatnonzero(bad.all(axis=0)) if len(cells) else []
    textual = [j for j in unread if any(str(cell).strip() for cell in cells[:, j])]
    if len(textual) and (~bad).all(axis=0).any():
        raise _text_columns_error(
            file, [columns[j] for j in textual], [str(cells[0, j]) for j in textual], lines[0]
        )
    if n_bad and not drop_invalid:
        items = _bad_row_items(lines, cells, bad, columns, odd, width)
        more = [f"and {len(items) - MAX_LISTED:,} more"] if len(items) > MAX_LISTED else []
        raise DataError(
            f"{file}: {n_bad:,} row{s} of {len(cells):,} cannot be read; expected a finite number in each of "
            f"the columns {', '.join(columns)}:\n  " + "\n  ".join(items[:MAX_LISTED] + more)
            + "\nFix these rows, or pass --drop_invalid to drop such rows."
        )  # fmt: skip
    if n_bad:
        at = ", ".join(map(str, bad_lines[:10])) + ", ..." * (n_bad > 10)
        warnings.warn(DataWarning(f"dropped {n_bad:,} invalid row{s} of {file} (line{s} {at})"), stacklevel=2)
    values = values[~bad_rows]
    if len(values) < min_rows:
        raise DataError(f"{file} has {len(values):,} valid rows; at least {min_rows} are needed")
    _check_spread(values, columns, file)
    if text is None:
        return Dataset(values=values, columns=columns, path=str(file), n_dropped=n_bad)
    distinct, inverse = np.unique(text[~bad_rows], return_inverse=True)
    names = tuple(sorted(map(str, distinct), key=lambda v: (0, float(v)) if _is_number(v) else (1, 0.0)))
    labels = np.array([names.index(str(v)) for v in distinct], dtype=np.int64)[inverse]
    return Dataset(values, columns, str(file), n_bad, condition, labels, names)


def _bad_row_items(
    lines: np.ndarray,
    cells: np.ndarray,
    bad: np.ndarray,
    columns: Sequence[str],
    odd: dict[int, int],
    width: int,
) -> list[str]:
    """One item per bad cell (``bad (R, D)``), but one per line of another number of fields (``odd``)."""
    items = []
    for i in np.flatnonzero(bad.any(axis=1)):
        if (n := odd.get(int(lines[i]))) is not None:
            items.append(f"line {lines[i]}: {n} field{'s' * (n != 1)}, where the header has {width}")
        else:
            items += [
                f"line {lines[i]}, column {columns[j]!r}: {str(cells[i, j])!r}"
                for j in np.flatnonzero(bad[i])
            ]
    return items


def _columns_and_rows(
    lines: np.ndarray, cells: np.ndarray, file: Path
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The column names, and the line numbers and cells of the rows below the header (if there is one)."""
    if _is_number(cells[0]).all():
        return _default_columns(cells.shape[1]), lines, cells
    unnamed_first = not str(cells[0][0]).strip()
    columns, lines, cells = _header(list(cells[0]), file, lines[0]), lines[1:], cells[1:]
    if unnamed_first and _counts_rows(cells[:, 0]):
        raise DataError(
            f"{file}: its first column has no name and counts the rows (0, 1, 2, ...: the index that "
            "pandas' DataFrame.to_csv writes by default), which would be trained on as a coordinate; "
            "write the file with to_csv(index=False), or name the column to keep it"
        )
    return columns, lines, cells


def _counts_rows(cells: np.ndarray) -> bool:
    """Whether ``cells (R,)`` read 0, 1, ..., R - 1 (or 1, ..., R): a row index, not data."""
    if len(cells) < 2 or not _is_number(cells).all():
        return False
    values = cells.astype(np.float64)
    return bool(
        np.array_equal(values, np.arange(len(values)))
        or np.array_equal(values, np.arange(1, len(values) + 1))
    )


def _check_spread(values: np.ndarray, columns: Sequence[str], file: Path) -> None:
    """Refuse constant or overflowing columns; warn when the points lie on a plane or mostly repeat."""
    with np.errstate(all="ignore"):
        deviations, d = values.std(0), len(columns)
    for name, column, std in zip(columns, values.T, deviations, strict=True):
        if np.all(column == column[0]):
            raise DataError(f"column {name!r} of {file} is constant ({float(column[0])!r} on every row)")
        if not 0 < std < np.inf:  # under- or overflow
            raise DataError(
                f"column {name!r} of {file} cannot be standardised (deviation {std:g}); rescale it"
            )
    z = values - values.mean(0)
    z /= np.abs(z).max(0)  # first to within [-1, 1], so that tiny or huge columns stay finite
    _, spread, directions = np.linalg.svd(z / z.std(0), full_matrices=False)
    if len(values) > d and (flat := int(np.sum(spread < 1e-4 * spread[0]))):
        weight = np.abs(directions[-1])
        named = [repr(columns[j]) for j in np.flatnonzero(weight > 0.05 * weight.max())]
        where = "a straight line" if flat == d - 1 else f"a {d - flat}-dimensional plane"
        message = f"the points lie on {where}: a weighted sum of columns {', '.join(named)} is the same on every row"
        warnings.warn(DataWarning(f"{file}: {message}; remove a column the others determine"), stacklevel=3)
    n_distinct = len(np.unique(values, axis=0))
    if n_distinct < 0.5 * len(values) and n_distinct < 1000:
        message = f"{file} has only {n_distinct:,} distinct points among {len(values):,} rows"
        warnings.warn(DataWarning(f"{message}; a density model will put narrow peaks on them"), stacklevel=3)


def save_csv(path: PathLike, values: np.ndarray, columns: Names = None, labels: Names = None) -> None:
    """Write ``values`` ``(N, D)`` to ``path`` as by :func:`write_csv`, atomically (nothing on error)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        write_csv(handle, values, columns, labels)


def csv_text(values: np.ndarray, columns: Names = None) -> str:
    """``values`` ``(N, D)`` as CSV text with a header line (see :func:`write_csv`)."""
    buffer = io.StringIO()
    write_csv(buffer, values, columns)
    return buffer.getvalue()


def write_csv(handle: TextIO, values: np.ndarray, columns: Names = None, labels: Names = None) -> None:
    """Write finite ``values`` ``(N, D)`` to ``handle`` under a header of ``columns`` (default ``x, y`` or
    ``x0, x1, ...``), float64 shortest-exact, float32 to 9 digits (as :func:`load_csv` reads them), ``labels``
    ``(N,)`` as a last column ``label``; ValueError, before writing, for bad values, names or labels."""
    array = np.asarray(values)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"values must be real numbers of shape (N, D), got {array.dtype} {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("values must all be finite (load_csv would reject nan and inf)")
    names = _default_columns(array.shape[1]) if columns is None else tuple(str(c) for c in columns)
    if len(names) != array.shape[1] or any(not name.strip() or _misread_name(name) for name in names):
        raise ValueError(f"{names} cannot name {array.shape[1]} columns (empty, number-like or line breaks?)")
    if labels is not None and len(labels) != array.shape[0]:
        raise ValueError(f"labels must be one per row: {len(labels)} for {array.shape[0]} rows")
    csv.writer(handle, lineterminator="\n").writerow([*names, "label"] if labels is not None else names)
    number = "{:.9g}".format if array.dtype == np.float32 else repr
    for start in range(0, array.shape[0], _CSV_CHUNK_ROWS):
        chunk = array[start : start + _CSV_CHUNK_ROWS].astype(np.float64).tolist()
        rows = [",".join(map(number, row)) for row in chunk]
        if labels is not None:
            rows = [f"{r},{label}" for r, label in zip(rows, labels[start : start + len(rows)], strict=True)]
        handle.write("".join(row + "\n" for row in rows))


def train_test_split(values: np.ndarray, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows of ``values`` ``(N, ...)`` at random (``numpy.random.default_rng(seed)``) into ``(train,
    test)`` of ``N - T`` and ``T = round(N * test_fraction)`` rows (within ``[1, N - 1]`` when ``test_fraction
    > 0``). ValueError: ``test_fraction`` outside ``[0, 1)``, or a test part asked of fewer than 2 rows."""
    array, n = np.asarray(values), len(values)
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if test_fraction > 0.0 and n < 2:
        raise ValueError(f"cannot split {n} row(s) into non-empty training and test parts")
    n_test = 0 if test_fraction == 0.0 else min(max(int(round(n * test_fraction)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return array[order[n_test:]], array[order[:n_test]]
