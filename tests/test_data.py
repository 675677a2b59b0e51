"""Tests of genmodels.data: CSV validation, saving, splitting and the toy data generators."""

from __future__ import annotations

import gzip
import math
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from matplotlib.path import Path as MplPath
from scipy.spatial import cKDTree

from cases import case
from genmodels.data import (
    GENERATORS,
    DataWarning,
    csv_text,
    exact_entropy,
    glyph_area,
    glyph_labels,
    load_csv,
    make_text,
    save_csv,
    train_test_split,
)
from genmodels.data.generators import PEN_DIGITS, PEN_WIDTH, STROKE_BLUR
from genmodels.data.generators import _char_area as char_area
from genmodels.data.generators import _glyph_layout as glyph_layout
from genmodels.data.generators import _stroke_midlines as stroke_midlines
from genmodels.errors import DataError

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "data" / "689_data.csv"  # the reference data set, where present


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# The bad-input cases (tests/cases.py)
# ---------------------------------------------------------------------------------------------------------


def test_b01_first_numeric_line_is_data():
    data = load_csv(case("B01.csv"))
    assert data.values.shape == (1000, 2)
    assert data.values.dtype == np.float64
    assert data.values[0].tolist() == [4.0, -4.0]
    assert data.columns == ("x", "y")
    assert data.n_dropped == 0


def test_b02_lists_every_broken_row():
    with pytest.raises(DataError) as info:
        load_csv(case("B02.csv"))
    message = str(info.value)
    assert "B02.csv" in message
    assert "line 12, column 'y': ''" in message
    assert "line 251, column 'x': ''" in message
    assert "line 500, column 'x': 'nan'" in message
    assert "line 731, column 'y': 'NaN'" in message
    assert "line 999, column 'x': ''" in message
    assert "line 999, column 'y': ''" in message
    assert "a finite number" in message
    assert "--drop_invalid" in message
    assert "5 rows of 1,000" in message


def test_b02_drop_invalid_counts_and_warns():
    with pytest.warns(DataWarning, match=r"dropped 5 invalid rows .*lines 12, 251, 500, 731, 999"):
        data = load_csv(case("B02.csv"), drop_invalid=True)
    assert data.n_dropped == 5
    assert data.values.shape == (995, 2)
    assert np.all(np.isfinite(data.values))


def test_b03_names_bad_text():
    with pytest.raises(DataError) as info:
        load_csv(case("B03.csv"))
    message = str(info.value)
    assert "line 43, column 'x': '0.73x'" in message
    assert "line 509, column 'y': 'abc'" in message
    assert "line 902, column 'x': '1,25'" in message
    assert "3 rows of 1,000" in message


def test_a_column_of_text_is_named_with_the_options_that_fit(tmp_path: Path) -> None:
    """A column without one number is named as a column to remove or to condition on; scattered bad
    cells point to --drop_invalid instead (B03: bad cells in x and y)."""
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, "x,y,name\n1.0,2.0,a\n1.5,2.5,b\n2.0,3.0,c\n3.0,1.0,d\n"))
    message = str(info.value)
    assert "column 'name' (line 2: 'a')" in message and "--condition name" in message
    assert "--drop_invalid" not in message and "line 3" not in message  # the column, not each of its cells
    with pytest.raises(DataError, match="column 'name'"):  # dropping rows would drop them all
        load_csv(write(tmp_path, "x,y,name\n1.0,2.0,a\n1.5,2.5,b\n2.0,3.0,c\n3.0,1.0,d\n"), drop_invalid=True)
    with pytest.raises(DataError) as info:
        load_csv(case("B03.csv"))
    assert "--drop_invalid" in str(info.value) and "--condition" not in str(info.value)


def test_b04_one_column():
    with pytest.raises(DataError, match=r"B04.csv has 1 column \('x'\); at least 2"):
        load_csv(case("B04.csv"))


@pytest.mark.parametrize("sep", [";", "\t", " "])
@pytest.mark.parametrize("header", [True, False])
def test_other_separators_are_read(tmp_path, sep: str, header: bool):
    path = tmp_path / "points.csv"
    rows = [(i, (i * 7) % 10 - 2.5) for i in range(10)]
    path.write_text(f"a{sep}b\n" * header + "".join(f"{x}{sep}{y}\n" for x, y in rows))
    data = load_csv(path)
    assert data.columns == (("a", "b") if header else ("x", "y"))
    assert data.values.tolist() == [list(map(float, row)) for row in rows]


def test_b05_three_columns():
    data = load_csv(case("B05.csv"))
    assert data.columns == ("a", "b", "c")
    assert data.values.shape == (500, 3)


def test_b06_constant_column():
    with pytest.raises(DataError) as info:
        load_csv(case("B06.csv"))
    assert str(info.value).startswith("column 'y' of ")
    assert "B06.csv is constant (5.0 on every row)" in str(info.value)


def test_b07_degenerate_warning():
    with pytest.warns(DataWarning, match=r"only 4 distinct points among 1,000 rows"):
        data = load_csv(case("B07.csv"))
    assert data.values.shape == (1000, 2)


def test_points_on_a_line_or_plane_draw_a_warning(tmp_path):
    rng = np.random.default_rng(3)
    x, y, z = rng.normal(size=(3, 2000))
    flat = {
        "line.csv": (np.c_[x, 2 * x + 1], "lie on a straight line: a weighted sum of columns 'x', 'y'"),
        "plane.csv": (
            np.c_[x, y, x - 3 * y],
            "lie on a 2-dimensional plane: .* 'x0', 'x1', 'x2'",
        ),
        "line3.csv": (np.c_[x, 2 * x, -x], "lie on a straight line"),
    }
    for name, (values, message) in flat.items():
        save_csv(tmp_path / name, values)
        with pytest.warns(DataWarning, match=rf"{name}: the points {message}"):
            load_csv(tmp_path / name)
    # Strongly correlated but spread (1% noise), and the shipped data: no warning.
    save_csv(tmp_path / "close.csv", np.c_[x, 2 * x + 0.01 * z])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_csv(tmp_path / "close.csv")
        load_csv(REPO / "689_data.csv")


def test_b08_small_but_valid():
    data = load_csv(case("B08.csv"))
    assert data.values.shape == (10, 2)
    with pytest.raises(DataError, match="10 valid rows; at least 11 are needed"):
        load_csv(case("B08.csv"), min_rows=11)


@pytest.mark.parametrize("name", ["B10.csv", "B12.csv", "B13.csv"])
def test_other_case_csv_files_load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_csv(case(name))
    assert data.values.shape[1] == 2 and len(data.values) >= 100


# ---------------------------------------------------------------------------------------------------------
# Other malformed files
# ---------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv' does not exist"):
        load_csv(missing)


def test_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty.csv is empty"):
        load_csv(path)


@pytest.mark.parametrize(
    "content", [b"x,y\n\x00\x01\x02", b"x,y\n1,2\n\xff\xfe\x80,3\n", "x,y\n1,2\n".encode("utf-16")]
)
def test_binary_file(tmp_path, content):
    path = tmp_path / "blob.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="blob.csv"):
        load_csv(path)


def test_header_only(tmp_path):
    with pytest.raises(DataError, match="0 valid rows; at least 4"):
        load_csv(write(tmp_path, "x,y\n"))


def test_one_dropped_row_is_named_as_one_line(tmp_path):
    with pytest.warns(DataWarning, match=r"dropped 1 invalid row of .* \(line 3\)"):
        data = load_csv(write(tmp_path, "x,y\n1,2\nnan,3\n4,5\n7,9\n9,10\n"), drop_invalid=True)
    assert len(data.values) == 4


def test_wrong_field_counts(tmp_path):
    text = "x,y\n1,2\n3\n4,5,6\n7,8\n9,10\n11,14\n"
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, text))
    message = str(info.value)
    # each line of another width is named once, with its number of fields and the header's
    assert re.search(r"line 3\D+1 field\D+header has 2", message)
    assert re.search(r"line 4\D+3 fields\D+header has 2", message)
    assert "line 5" not in message
    with pytest.warns(DataWarning, match="lines 3, 4"):
        data = load_csv(write(tmp_path, text), drop_invalid=True)
    assert data.values.tolist() == [[1, 2], [7, 8], [9, 10], [11, 14]]
    assert data.n_dropped == 2


def test_many_bad_cells_are_summarised(tmp_path):
    rows = ["x,y"] + [f"{i},oops" for i in range(30)] + ["1,2"] * 5
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, "\n".join(rows) + "\n"))
    message = str(info.value)
    assert "line 2, column 'y': 'oops'" in message
    assert "line 21, column 'y': 'oops'" in message
    assert "line 22," not in message
    assert "and 10 more" in message


def test_quoted_fields_crlf_bom_blank_lines(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'\xef\xbb\xbf"x","y"\r\n"1.5", 2\r\n\r\n3,4e-3\r\n-5,+6\r\n.5,7.\r\n\r\n\r\n')
    data = load_csv(path)
    assert data.columns == ("x", "y")
    assert data.values.tolist() == [[1.5, 2.0], [3.0, 0.004], [-5.0, 6.0], [0.5, 7.0]]


def test_line_numbers_count_blank_lines(tmp_path):
    with pytest.raises(DataError, match=r"line 7, column 'b': 'inf'"):
        load_csv(write(tmp_path, "\n \na,b\n1,2\n\n3,4\n5,inf\n6,7\n8,9\n"))


@pytest.mark.parametrize("cell", ["1_000", "0x10", "1e999", "--1", "1.2.3", "١"])
def test_cells_python_would_accept_or_overflow_are_rejected(tmp_path, cell):
    text = f"x,y\n1,2\n{cell},3\n4,5\n6,7\n8,9\n"
    with pytest.raises(DataError, match=rf"line 3, column 'x': '{cell}'"):
        load_csv(write(tmp_path, text))


@pytest.mark.parametrize(
    "header, name",
    [("x,2", "'2'"), ("1.5,abc", "'1.5'"), ("x,Infinity", "'Infinity'"), ('"a\nb",y', "'a\\nb'")],
)
def test_number_like_or_multiline_header_names_are_refused(tmp_path, header, name):
    # Such names could not be written back as a header; before, the run failed only after training.
    with pytest.raises(DataError, match=r"line 1 of .*data.csv is read as the header") as info:
        load_csv(write(tmp_path, header + "\n1,2\n3,4\n5,6\n7,9\n"))
    assert name in str(info.value)


@pytest.mark.parametrize("header, name", [("x,x", "'x'"), ("a,b, a ", "'a'"), ("column_2,", "'column_2'")])
def test_two_columns_of_one_name_are_refused(tmp_path, header, name):
    width = header.count(",") + 1
    rows = "".join(",".join(str(i + j) for j in range(width)) + "\n" for i in range(6))
    with pytest.raises(DataError, match=rf"line 1 of .*data.csv, the header: .*{name}"):
        load_csv(write(tmp_path, header + "\n" + rows))


def test_an_unnamed_column_gets_a_name(tmp_path):
    assert load_csv(write(tmp_path, "x1,\n1,2\n3,4\n5,6\n7,9\n")).columns == ("x1", "column_2")
    # (an unnamed first column counting the rows is a pandas index, refused: see below)
    assert load_csv(write(tmp_path, ",x,y\n5,1.5,2\n3,2.5,3.1\n9,0.3,1\n"), min_rows=2).columns == (
        "column_1",
        "x",
        "y",
    )


def test_no_header_three_columns_names(tmp_path):
    data = load_csv(write(tmp_path, "1,2,3\n4,5,6\n7,8,0\n1,1,1\n"))
    assert data.columns == ("x0", "x1", "x2")
    assert data.values.shape == (4, 3)


def test_huge_or_tiny_values_are_reported(tmp_path):
    tiny = "x,y\n" + "".join(f"{i}e-200,{i % 3}\n" for i in range(1, 30))
    with pytest.raises(DataError, match=r"column 'x' of .*data.csv cannot be standardised \(deviation 0\)"):
        load_csv(write(tmp_path, tiny))
    with pytest.raises(DataError, match="column 'x' of .*data.csv cannot be standardised"):
        load_csv(write(tmp_path, "x,y\n1e308,1\n-1e308,2\n1e308,3\n-1e308,4\n"))


# ---------------------------------------------------------------------------------------------------------
# Saving and round trips
# ---------------------------------------------------------------------------------------------------------


def test_save_then_load_with_and_without_header(tmp_path):
    values = np.array([[4.0, -4.0], [0.1, 1 / 3], [-2.5e-7, 1e12], [3.0, 2.0]])
    path = tmp_path / "sub" / "out.csv"
    save_csv(path, values)
    assert path.read_text().splitlines()[0] == "x,y"
    data = load_csv(path)
    assert data.columns == ("x", "y")
    assert np.array_equal(data.values, values)
    save_csv(path, values, columns=["first col", 'quote"d'])
    assert load_csv(path).columns == ("first col", 'quote"d')
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    data = load_csv(headerless)
    assert np.array_equal(data.values, values)
    assert data.values[0].tolist() == [4.0, -4.0]
    assert list(tmp_path.glob("sub/.*")) == []  # no temporary files left


def test_save_float32_exact(tmp_path):
    values = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    save_csv(tmp_path / "f.csv", values)
    loaded = load_csv(tmp_path / "f.csv").values
    assert np.array_equal(loaded.astype(np.float32), values)


@pytest.mark.parametrize(
    ("values", "columns"),
    [
        (np.zeros(3), None),
        (np.array([[1.0, np.nan]]), None),
        (np.ones((2, 2)), ["a"]),
        (np.ones((2, 2)), ["a", "1.5"]),
        (np.ones((2, 2)), ["a", ""]),
    ],
)
def test_save_rejects_bad_input(tmp_path, values, columns):
    with pytest.raises(ValueError):
        save_csv(tmp_path / "bad.csv", values, columns)
    assert not (tmp_path / "bad.csv").exists()


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=hnp.arrays(np.float64, st.tuples(st.integers(4, 12), st.integers(2, 4)), elements=finite),
)
def test_round_trip_property(tmp_path, values):
    path = tmp_path / "rt.csv"
    save_csv(path, values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        try:
            data = load_csv(path)
        except DataError as exc:  # only constant columns or over- or underflowing spreads may be refused
            assert "constant" in str(exc) or "cannot be standardised" in str(exc)
            return
    assert np.array_equal(data.values, values)
    assert data.values.dtype == np.float64


@pytest.mark.parametrize("text", ["x,y,\n1.5,2,\n2.5,3.1,\n0.3,1,\n", "x,y\n1.5,2,\n2.5,3.1,\n0.3,1,\n"])
def test_trailing_commas_are_bad_cells_named_by_line(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError) as error:
        load_csv(path, min_rows=2)
    assert str(path) in str(error.value)
    # a third, unnamed header field: empty cells in it; a header of two: lines of three fields
    pattern = "line {}, column " if text.startswith("x,y,") else r"line {}\D+3 fields\D+has 2"
    assert all(re.search(pattern.format(line), str(error.value)) for line in (2, 3, 4))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_csv_is_written_in_chunks_with_the_same_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: type
) -> None:
    """Rows are formatted a chunk at a time (bounded memory for a million samples); the text is the
    same for any chunk size, every row is written once, and the values read back exactly."""
    import genmodels.data.csv as data_module

    values = np.random.default_rng(5).normal(size=(23, 3)).astype(dtype) * 1e3
    whole = csv_text(values)
    for rows in (1, 5, 23, 64):
        monkeypatch.setattr(data_module, "_CSV_CHUNK_ROWS", rows)
        assert csv_text(values) == whole
    save_csv(tmp_path / "c.csv", values)
    assert (tmp_path / "c.csv").read_text() == whole
    assert whole.count("\n") == 24
    assert np.array_equal(load_csv(tmp_path / "c.csv").values.astype(dtype), values)  # 9 digits: exact


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.text(alphabet=st.sampled_from(list('0123456789.,-+eE"\n\r xyna\t')), max_size=200),
    )
)
def test_garbage_never_crashes(tmp_path, content):
    path = tmp_path / "garbage.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        try:
            data = load_csv(path, min_rows=1)
        except DataError as exc:
            assert "garbage.csv" in str(exc)
            return
    assert data.values.dtype == np.float64 and data.values.ndim == 2
    assert data.values.shape[1] >= 2
    assert np.all(np.isfinite(data.values))


# ---------------------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "n_test"),
    [(100, 0.2, 20), (10, 0.01, 1), (3, 0.9, 2), (7, 0.5, 4), (5, 0.0, 0), (2, 0.5, 1)],
)
def test_split_sizes(n, fraction, n_test):
    values = np.arange(3 * n, dtype=np.float64).reshape(n, 3)
    train, test = train_test_split(values, test_fraction=fraction, seed=1)
    assert test.shape == (n_test, 3) and train.shape == (n - n_test, 3)
    together = np.concatenate([train, test])
    assert sorted(together[:, 0].tolist()) == values[:, 0].tolist()


def test_split_deterministic_and_seeded():
    values = np.arange(200, dtype=np.float64).reshape(100, 2)
    a = train_test_split(values, test_fraction=0.3, seed=5)
    b = train_test_split(values, test_fraction=0.3, seed=5)
    c = train_test_split(values, test_fraction=0.3, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(np.zeros((10, 2)), test_fraction=fraction, seed=0)


def test_split_needs_two_rows_for_a_test_part():
    with pytest.raises(ValueError):
        train_test_split(np.zeros((1, 2)), test_fraction=0.5, seed=0)


# ---------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------


def test_registry_names():
    assert set(GENERATORS) == {
        "text",
        "two_moons",
        "8gaussians",
        "checkerboard",
        "pinwheel",
        "2spirals",
        "circles",
        "swiss_roll",
    }


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shape_determinism_seed(name):
    make = GENERATORS[name]
    a = make(500, seed=3)
    assert a.shape == (500, 2) and a.dtype == np.float64
    assert np.all(np.isfinite(a))
    assert np.array_equal(a, make(500, seed=3))
    assert not np.array_equal(a, make(500, seed=4))
    assert np.abs(a).max() < 6.0
    assert make(0, seed=0).shape == (0, 2)


def test_generator_scales():
    g = GENERATORS["8gaussians"](4000, seed=0)
    assert np.hypot(g[:, 0], g[:, 1]).mean() == pytest.approx(2.0, abs=0.02)
    c = GENERATORS["checkerboard"](4000, seed=0)
    assert c.min() >= -2.0 and c.max() <= 2.0
    cell = np.floor(c + 2).astype(int)  # unit cells 0..3
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0)
    r = np.hypot(*GENERATORS["circles"](4000, seed=0).T)
    assert np.mean(np.abs(r - 3.0) < 0.8) == pytest.approx(0.5, abs=0.03)


def test_exact_entropy_values():
    assert exact_entropy("checkerboard") == pytest.approx(math.log(8.0))
    assert exact_entropy("checkerboard", half_width=1.0) == pytest.approx(math.log(2.0))
    assert exact_entropy("8gaussians") == pytest.approx(math.log(8) + math.log(2 * math.pi * math.e * 0.01))
    assert exact_entropy("8gaussians", std=0.5) is None
    assert exact_entropy("two_moons") is None
    assert exact_entropy("text") is None
    assert exact_entropy("text", background=0.0) is None  # soft strokes: not uniform over the ink
    with pytest.raises(KeyError):
        exact_entropy("nope")


def test_checkerboard_entropy_matches_samples():
    # Uniform density: -E[log p] equals ln(area) exactly when every sample is inside the support.
    x = GENERATORS["checkerboard"](2000, seed=0)
    assert np.all(np.abs(x) <= 2.0)


# ---------------------------------------------------------------------------------------------------------
# Text data
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_points() -> np.ndarray:
    return make_text(20000, seed=0)


@pytest.mark.parametrize("font", ["pen", "dejavu"])
def test_text_fraction_inside_glyphs(font):
    text_points = make_text(20000, seed=0, font=font)
    labels = glyph_labels(text_points, font=font)
    assert labels.shape == (20000,) and labels.dtype == np.int64
    # A straight stroke of width w blurred by N(0, (w / 4)^2) keeps P(|z| < 2) = 95.4 % inside; curves
    # and stroke ends move it a little. A uniform fill would keep all.
    inside_strokes = np.mean(
        glyph_labels(make_text(20000, seed=1, background=0.0, font=font), font=font) >= 0
    )
    assert 0.93 < inside_strokes < 0.97
    # 90 % stroke points plus the background points that happen to fall on a glyph: about 0.86
    background = np.random.default_rng(99).standard_normal((20000, 2))
    expected = 0.9 * inside_strokes + 0.1 * np.mean(glyph_labels(background, font=font) >= 0)
    assert np.mean(labels >= 0) == pytest.approx(expected, abs=0.007)


def outline_length(outlines) -> float:
    return sum(float(np.hypot(*np.diff(np.vstack([o, o[:1]]), axis=0).T).sum()) for o in outlines)


def test_text_digits_get_points_in_proportion_to_stroke_length():
    # Mass is uniform per unit of midline length; a stroke's midline is half its two sides' outlines.
    glyph_only = make_text(20000, seed=2, background=0.0, font="dejavu")
    labels = glyph_labels(glyph_only, font="dejavu")
    counts = np.bincount(labels[labels >= 0], minlength=3)
    lengths = np.array([outline_length(outlines) for outlines in glyph_layout("689")])
    np.testing.assert_allclose(counts / counts.sum(), lengths / lengths.sum(), atol=0.01)
    areas = np.array([char_area(p) for p in glyph_layout("689")])
    assert areas.sum() == pytest.approx(glyph_area("689", font="dejavu"))


def pen_length(stroke: tuple[float, ...]) -> float:
    if len(stroke) == 4:
        return math.hypot(stroke[2] - stroke[0], stroke[3] - stroke[1])
    cx, cy, rx, ry, start, stop = stroke
    angle = np.radians(np.linspace(start, stop, 10001))
    return float(np.hypot(*np.diff(np.stack([rx * np.cos(angle), ry * np.sin(angle)]), axis=1)).sum())


def test_pen_digits_get_points_in_proportion_to_stroke_length():
    # The digits' strokes (arcs and lines in a unit box, all scaled alike) share the mass by length.
    names, lengths = zip(*[(c, sum(map(pen_length, PEN_DIGITS[c]))) for c in "1089"], strict=True)
    points, labels = make_text(40000, seed=3, text="1089", background=0.0, labels=True)
    counts = np.array([np.sum(labels == c) for c in names])
    np.testing.assert_allclose(counts / counts.sum(), np.array(lengths) / sum(lengths), atol=0.01)
    # Each point is labelled with the digit whose stroke lies nearest: most within half the pen's width.
    index = glyph_labels(points, "1089")
    inside = index >= 0
    assert np.mean(np.array(list("1089"))[index[inside]] == labels[inside]) > 0.99
    assert glyph_area("1089") == pytest.approx(PEN_WIDTH * sum(lengths) * (1.24 - PEN_WIDTH), rel=0.02)


# The pen's strokes cross (the 6's stroke and loop, the 8's loops): there a point's nearest midline can be
# the other stroke's, so fewer points lie beyond sigma than the half-normal 0.317.
@pytest.mark.parametrize(
    ("font", "expected_sigma", "tail"), [("dejavu", 0.036, 0.31), ("pen", 0.25 * PEN_WIDTH, 0.29)]
)
def test_text_strokes_are_gaussian_about_the_midlines(font, expected_sigma, tail):
    midline, widths, _ = stroke_midlines("689", font)
    if font == "dejavu":  # the midline is half the two sides' outlines
        assert len(midline) * 1.24e-3 / 2 == pytest.approx(
            outline_length(sum(glyph_layout("689"), ())) / 2, rel=0.02
        )
    sigma = STROKE_BLUR * float(np.median(widths))
    assert sigma == pytest.approx(expected_sigma, abs=0.002)  # DejaVu: 0.25 x the median width 0.144
    distance, _ = cKDTree(midline).query(make_text(20000, seed=2, background=0.0, font=font))
    # The offset across the stroke is N(0, sigma^2): RMS sigma, half-normal tail P(|z| > 1) = 0.317
    # (a uniform fill of width 4 sigma gives an RMS of 1.15 sigma and a tail of 0.5).
    assert np.sqrt(np.mean(distance**2)) == pytest.approx(sigma, rel=0.05)
    assert np.mean(distance > sigma) == pytest.approx(tail, abs=0.02)
    assert distance.max() < 5 * sigma


def test_text_background_is_gaussian(text_points):
    outside = text_points[glyph_labels(text_points) < 0]
    far = np.hypot(outside[:, 0], outside[:, 1]) > 2.0
    # N(0, I): P(r > 2) = exp(-2) ~ 0.135 of the background, i.e. ~1.35 % of all points
    assert far.sum() / len(text_points) == pytest.approx(0.1 * math.exp(-2.0), abs=0.004)


def hole_polygons(char_index: int) -> list[np.ndarray]:
    polygons = glyph_layout("689")[char_index]
    holes = []
    for i, polygon in enumerate(polygons):
        if any(MplPath(o).contains_point(tuple(polygon[0])) for j, o in enumerate(polygons) if j != i):
            holes.append(polygon)
    return holes


@pytest.mark.parametrize(("char_index", "n_holes"), [(0, 1), (1, 2), (2, 1)])
def test_holes_get_only_blurred_stroke_edges(text_points, char_index, n_holes):
    holes = hole_polygons(char_index)
    assert len(holes) == n_holes
    glyph_only = make_text(20000, seed=1, background=0.0, font="dejavu")
    sigma = STROKE_BLUR * float(np.median(stroke_midlines("689")[1]))
    for hole in holes:
        centre = hole.mean(axis=0)
        assert MplPath(hole).contains_point(tuple(centre))
        assert glyph_labels(centre[None, :], font="dejavu")[0] == -1
        assert MplPath(hole).contains_points(glyph_only).mean() < 0.01
        # no point deeper than 3 sigma into the hole: the disc of radius (nearest outline point - 3 sigma)
        radius = np.hypot(*(hole - centre).T).min()
        assert np.hypot(*(glyph_only - centre).T).min() > radius - 3 * sigma > 0.05


def test_hole_of_six_position():
    (hole,) = hole_polygons(0)
    centre = hole.mean(axis=0)
    # the loop of the 6 sits in the lower part of the left digit
    assert -1.2 < centre[0] < -0.8
    assert -0.3 < centre[1] < 0.1


@pytest.mark.parametrize("font", ["pen", "dejavu"])
def test_text_layout_extents(font):
    points = make_text(20000, seed=0, font=font)
    glyphs = points[glyph_labels(points, font=font) >= 0]
    lo, hi = glyphs.min(axis=0), glyphs.max(axis=0)
    assert lo[0] == pytest.approx(-1.45, abs=0.1) and hi[0] == pytest.approx(1.45, abs=0.1)
    assert lo[1] == pytest.approx(-0.49, abs=0.05) and hi[1] == pytest.approx(0.75, abs=0.05)
    assert glyph_area("689", font="dejavu") == pytest.approx(1.38, abs=0.05)


def test_text_font_choice():
    # auto: the pen for digits, DejaVu for anything else; the pen refuses what it cannot draw, by name.
    np.testing.assert_array_equal(make_text(50, seed=0), make_text(50, seed=0, font="pen"))
    np.testing.assert_array_equal(
        make_text(50, seed=0, text="6a"), make_text(50, seed=0, text="6a", font="dejavu")
    )
    with pytest.raises(ValueError, match="'a'"):
        make_text(10, seed=0, text="6a", font="pen")
    with pytest.raises(ValueError, match="font"):
        make_text(10, seed=0, font="comic")


def test_text_other_strings_and_options():
    pts = make_text(3000, seed=0, text="a b", background=0.0)
    labels = glyph_labels(pts, "a b")
    assert set(np.unique(labels).tolist()) == {-1, 0, 2}  # the space gets none; blurred edges fall out
    with pytest.raises(ValueError):
        make_text(10, seed=0, background=1.5)
    with pytest.raises(ValueError, match="stroke_blur"):
        make_text(10, seed=0, stroke_blur=0.0)
    with pytest.raises(ValueError):
        make_text(10, seed=0, text="")
    # A character the font lacks would be drawn as its empty box: named instead.
    with pytest.raises(
        ValueError, match=r"has no glyph for '漢' \(U\+6F22\); it would be drawn as an empty box"
    ):
        make_text(10, seed=0, text="A漢")
    assert make_text(200, seed=0, text=" Ωé ß-9!").shape == (200, 2)


def kl_entropy(x: np.ndarray) -> float:
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    distances, _ = cKDTree(x).query(x, k=2)
    return float(digamma(len(x)) - digamma(1) + math.log(math.pi) + 2 * np.mean(np.log(distances[:, 1])))


def test_text_entropy_close_to_reference(text_points):
    # Kozachenko-Leonenko estimate; the reference data set has about 0.84 nats
    assert kl_entropy(text_points) == pytest.approx(0.84, abs=0.1)


def test_repository_689_file_is_ours_and_reproducible():
    path = REPO / "689_data.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    data = load_csv(path)
    assert data.columns == ("x", "y") and data.values.shape == (65536, 2)
    assert path.read_text(encoding="utf-8") == csv_text(make_text(65536, seed=0), ("x", "y"))


# The reference data set's mean and standard deviation per column (65,536 points), so that the comparison
# runs without the file; where the file is present, these are checked against it.
REFERENCE_MEAN, REFERENCE_STD = (0.0532, 0.1461), (0.8566, 0.4498)


def test_repository_689_file_resembles_the_reference():
    data = load_csv(REPO / "689_data.csv").values
    if REFERENCE.exists():
        reference = load_csv(REFERENCE).values
        assert not np.array_equal(reference[:100], data[:100])
        assert reference.mean(axis=0) == pytest.approx(REFERENCE_MEAN, abs=1e-4)
        assert reference.std(axis=0) == pytest.approx(REFERENCE_STD, abs=1e-4)
    assert data.mean(axis=0) == pytest.approx(REFERENCE_MEAN, abs=0.06)
    assert data.std(axis=0) == pytest.approx(REFERENCE_STD, rel=0.1)


def test_compressed_files_are_read(tmp_path):
    text = b"x,y\n1,2\n3,4\n5,6\n7,8.5\n"
    (tmp_path / "points.csv.gz").write_bytes(gzip.compress(text))
    with zipfile.ZipFile(tmp_path / "points.zip", "w") as archive:
        archive.writestr("points.csv", text)
    for name in ("points.csv.gz", "points.zip"):
        assert load_csv(tmp_path / name).values.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8.5]]


def test_other_files_get_one_error_naming_the_file(tmp_path):
    decimal_commas = write(tmp_path, "x;y\n0,126;-0,132\n1,5;2,25\n3,0;4,75\n", "comma.csv")
    with pytest.raises(DataError, match=r"comma.csv: 3 rows .*\n  line 2, column 'x': '0,126'"):
        load_csv(decimal_commas)
    book = tmp_path / "points.xlsx"
    with zipfile.ZipFile(book, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    config = write(tmp_path, "# settings; see the docs\nmodel:\n  n_coupling_layers: 14\n", "config.yaml")
    for path in (book, config, write(tmp_path, "x,y\n1,2\n3", "short.csv")):
        with pytest.raises(DataError, match=path.name):
            load_csv(path)


def test_a_pandas_index_column_is_refused_and_a_named_one_kept(tmp_path: Path) -> None:
    """``DataFrame.to_csv`` writes the row index as a first column without a name: refused, naming the
    file and the fix; the same numbers under a name (an id column the user chose) are data."""
    import pandas as pd

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(30, 2)), columns=["x", "y"])
    frame.to_csv(tmp_path / "index.csv")
    with pytest.raises(DataError) as error:
        load_csv(tmp_path / "index.csv")
    assert str(tmp_path / "index.csv") in str(error.value) and "index=False" in str(error.value)
    frame.to_csv(tmp_path / "named.csv", index_label="id")
    assert load_csv(tmp_path / "named.csv").columns == ("id", "x", "y")
    frame.to_csv(tmp_path / "plain.csv", index=False)
    np.testing.assert_allclose(load_csv(tmp_path / "plain.csv").values, frame.to_numpy())
    shuffled = frame.sample(frac=1.0, random_state=1)  # an unnamed first column that is not 0..N-1: data
    shuffled.to_csv(tmp_path / "shuffled.csv")
    assert load_csv(tmp_path / "shuffled.csv").columns == ("column_1", "x", "y")
