"""Conditional runs end to end: labelled data, --condition, sample --label, and each bad input's error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genmodels.cli import main
from genmodels.data import GENERATORS, LABELLED, load_csv
from genmodels.errors import DataError

_TINY = {
    "realnvp": {"model": {"n_coupling_layers": 2, "hidden_units": 8}},
    "ddpm": {"model": {"diffusion_steps": 10, "hidden_units": 8, "n_blocks": 1}},
}


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lab.csv"
    assert main(["make-data", "text", "--labels", "-n", "600", "--seed", "0", "-o", str(path)]) == 0
    return path


def test_make_data_labels_add_a_column_and_keep_the_points(tmp_path: Path, labelled: Path) -> None:
    plain = tmp_path / "plain.csv"
    assert main(["make-data", "text", "-n", "600", "--seed", "0", "-o", str(plain)]) == 0
    with_labels, without = pd.read_csv(labelled, dtype={"label": str}), pd.read_csv(plain)
    assert list(with_labels.columns) == ["x", "y", "label"]
    np.testing.assert_array_equal(with_labels[["x", "y"]].to_numpy(), without.to_numpy())
    assert set(with_labels["label"]) == {"6", "8", "9", "background"}
    for name in LABELLED:
        points, names = GENERATORS[name](300, seed=2, labels=True)
        np.testing.assert_array_equal(points, GENERATORS[name](300, seed=2))
        assert names.shape == (300,) and len(set(names)) >= 2


def test_a_glyph_label_names_the_glyph_a_point_is_drawn_from() -> None:
    from genmodels.data import glyph_labels

    points, names = GENERATORS["text"](2000, seed=1, labels=True)
    inside = glyph_labels(points)  # 0, 1, 2: inside 6, 8, 9; most stroke points fall inside their glyph
    glyph = names != "background"
    agree = np.array(list("689"))[inside[glyph & (inside >= 0)]] == names[glyph & (inside >= 0)]
    assert agree.mean() > 0.99


@pytest.fixture(scope="module", params=["realnvp", "ddpm"])
def conditional_run(request: pytest.FixtureRequest, labelled: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(request.param)
    config = root / "c.yaml"
    settings = {**_TINY[request.param], "training": {"epochs": 2, "batch_size": 128},
                "sampling": {"n_samples": 400, "n_eval": 100}}  # fmt: skip
    config.write_text(yaml.safe_dump(settings))
    args = ["train", request.param, "--config", config, "--data", labelled, "--condition", "label"]
    assert main([str(a) for a in [*args, "--output_dir", root / "out", "--quiet"]]) == 0
    return request.param, root / "out"


def test_a_conditional_run_scores_each_label(conditional_run: tuple[str, Path]) -> None:
    name, out = conditional_run
    metrics = json.loads((out / "metrics" / f"{name}.json").read_text())
    assert list(metrics["labels"]) == ["6", "8", "9", "background"]
    for entry in metrics["labels"].values():
        assert {"label_accuracy", "c2st_hgb", "c2st_hgb_floor"} <= set(entry)
        assert any(key.startswith("test_nll") for key in entry)
    assert metrics["label_entropy"] == pytest.approx(
        -sum(p * np.log(p) for p in (0.3, 0.3, 0.3, 0.1)), abs=0.1
    )
    samples = pd.read_csv(out / "samples" / f"{name}.csv", dtype={"label": str})
    assert list(samples.columns) == ["x", "y", "label"] and set(samples["label"]) <= set(metrics["labels"])
    assert "Per label" in (out / "index.html").read_text()


def test_sample_label_draws_that_label(
    capsys: pytest.CaptureFixture[str], conditional_run, tmp_path: Path
) -> None:
    name, out = conditional_run
    extra = ["--guidance_scale", "2"] if name == "ddpm" else []
    code, _, err = cli(capsys, "sample", out / "checkpoints" / f"{name}.pt", "-n", "50", "--label", "8",
                       "-o", tmp_path / "s.csv", *extra)  # fmt: skip
    assert code == 0, err
    samples = pd.read_csv(tmp_path / "s.csv", dtype={"label": str})
    assert (
        len(samples) == 50 and set(samples["label"]) == {"8"} and np.isfinite(samples[["x", "y"]]).all().all()
    )


def test_sample_refuses_a_label_absent_from_training(capsys, conditional_run, tmp_path: Path) -> None:  # noqa: ANN001
    name, out = conditional_run
    code, _, err = cli(
        capsys, "sample", out / "checkpoints" / f"{name}.pt", "--label", "7", "-o", tmp_path / "s.csv"
    )
    assert code != 0 and "--label 7" in err and "6, 8, 9, background" in err and "'label'" in err


def test_sample_refuses_a_label_for_an_unconditional_checkpoint(
    capsys, labelled: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({**_TINY["realnvp"], "training": {"epochs": 1}, "sampling": {"n_samples": 50}})
    )
    data = tmp_path / "plain.csv"
    pd.read_csv(labelled)[["x", "y"]].to_csv(data, index=False)
    assert main(["train", "realnvp", "--config", str(config), "--data", str(data), "--output_dir",
                 str(tmp_path / "o"), "--quiet"]) == 0  # fmt: skip
    checkpoint = tmp_path / "o" / "checkpoints" / "realnvp.pt"
    code, _, err = cli(capsys, "sample", checkpoint, "--label", "8", "-o", tmp_path / "s.csv")
    assert code != 0 and "--label 8" in err and str(checkpoint) in err and "without a condition" in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_condition_column_missing_names_it_and_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "x,y,kind\n" + "".join(f"{i},{i * i % 7},a\n" for i in range(10)))
    with pytest.raises(DataError, match=r"no column 'label'.*'x', 'y', 'kind'") as info:
        load_csv(path, condition="label")
    assert str(path) in str(info.value)


def test_a_continuous_condition_is_refused(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * i % 7},{i * 0.01}\n" for i in range(200))
    path = _write(tmp_path / "d.csv", "x,y,t\n" + rows)
    with pytest.raises(DataError, match=r"column 't'.*200 distinct.*continuous context is not supported yet"):
        load_csv(path, condition="t")


def test_empty_condition_cells_name_their_lines(tmp_path: Path) -> None:
    rows = [f"{i},{i * i % 7},{'a' if i % 2 else 'b'}" for i in range(10)]
    rows[3] = "3,2,"
    path = _write(tmp_path / "d.csv", "x,y,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"column 'label'.*empty on 1 rows \(lines 5\)"):
        load_csv(path, condition="label")


def test_condition_labels_index_sorted_names(tmp_path: Path) -> None:
    rows = [f"{i},{i * i % 7},{['10', '9', 'bg'][i % 3]}" for i in range(12)]
    data = load_csv(_write(tmp_path / "d.csv", "x,y,label\n" + "\n".join(rows) + "\n"), condition="label")
    assert data.columns == ("x", "y") and data.label_names == ("9", "10", "bg")
    assert data.labels.tolist() == [1, 0, 2] * 4


def test_train_refuses_a_missing_condition_column(capsys, labelled: Path, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = cli(capsys, "train", "realnvp", "--data", labelled, "--condition", "glyph",
                       "--epochs", "1", "--output_dir", tmp_path / "o", "--quiet")  # fmt: skip
    assert code != 0 and "'glyph'" in err and str(labelled) in err


def test_make_data_labels_refuses_a_generator_without_components(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = cli(capsys, "make-data", "swiss_roll", "--labels", "-n", "10", "-o", tmp_path / "s.csv")
    assert code != 0 and "'swiss_roll'" in err and "two_moons" in err


def test_n_labels_without_a_condition_is_refused() -> None:
    from genmodels.config import config_from_dict
    from genmodels.errors import ConfigError

    with pytest.raises(ConfigError, match="model.n_labels.*data.condition"):
        config_from_dict({"model": {"n_labels": 3}}, "realnvp")


def test_the_printed_config_has_the_data_s_label_count(
    capsys: pytest.CaptureFixture[str], labelled: Path, tmp_path: Path
) -> None:
    """A run prints its effective config once the data are read: with the labels' count the model gets."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**_TINY["realnvp"], "training": {"epochs": 1, "batch_size": 300},
                                      "sampling": {"n_samples": 100, "n_eval": 100}}))  # fmt: skip
    args = ["train", "realnvp", "--config", config, "--data", labelled, "--condition", "label"]
    code, out, err = cli(capsys, *args, "--output_dir", tmp_path / "out")
    assert code == 0, err
    printed = yaml.safe_load(out[out.index("effective realnvp config:") :].split("\n", 1)[1].split("\n{")[0])
    assert printed["model"]["n_labels"] == 4 and printed["data"]["condition"] == "label"
