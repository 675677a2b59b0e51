"""The command line end to end: training, sampling, evaluation and every bad input (written by tests/cases.py).

All runs are tiny (a few epochs, small diffusion step counts, a few hundred samples) and write only under
pytest's temporary directories.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from cases import case
from genmodels.cli import main
from genmodels.config import load_config, with_overrides
from genmodels.data import GENERATORS, DataWarning, load_csv, make_text
from genmodels.train.checkpoint import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]

REALNVP_KEYS = {"test_nll", "train_nll", "c2st", "c2st_floor", "epochs", "steps", "train_seconds"}
DDPM_KEYS = {"c2st", "c2st_floor", "test_nll_bound", "epochs", "steps", "train_seconds", "sample_seconds"}

# Small models and evaluations, so that a run takes about a second on one CPU thread.
SMALL = {
    "realnvp": {
        "model": {"n_coupling_layers": 4, "hidden_units": 32},
        "training": {"epochs": 2, "batch_size": 256, "eval_every": 1},
        "sampling": {"n_samples": 500, "n_eval": 200},
    },
    "ddpm": {
        "model": {"diffusion_steps": 20, "hidden_units": 32, "n_blocks": 2},
        "training": {"epochs": 2, "batch_size": 256, "eval_every": 1},
        "sampling": {"n_samples": 500, "n_eval": 200},
    },
}


def write_config(path: Path, model_type: str, **sections: dict[str, Any]) -> Path:
    """A YAML config: the SMALL settings of ``model_type``, updated section by section."""
    raw = {key: dict(value) for key, value in SMALL[model_type].items()}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run ``genmodels ARGS`` in this process (training quietly); return (exit code, stdout, stderr)."""
    argv = [str(a) for a in args]
    if argv[0] == "train":
        argv.append("--quiet")
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def script(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` from the repository root, as a user would."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_clean_error(err: str, *needles: str) -> None:
    """A user-facing error: starts with 'error: ', no traceback, mentions every needle."""
    assert err.startswith("error: "), err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def read_metrics(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / "metrics" / f"{name}.json").read_text())


def assert_outputs(out: Path, name: str) -> dict[str, Any]:
    """Every output of a finished run exists and the metrics are finite; returns the metrics."""
    for rel in (
        f"figures/{name}_results.png",
        f"figures/{name}_loss.png",
        f"checkpoints/{name}.pt",
        f"metrics/{name}.json",
        f"samples/{name}.csv",
    ):
        path = out / rel
        assert path.is_file() and path.stat().st_size > 0, path
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    metrics = read_metrics(out, name)
    keys = REALNVP_KEYS if name == "realnvp" else DDPM_KEYS
    assert keys <= set(metrics), keys - set(metrics)
    for key in keys:
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), (key, metrics[key])
    assert metrics["steps"] >= metrics["epochs"] >= 1
    nll_key = "test_nll" if name == "realnvp" else "test_nll_bound"
    assert metrics["units"][nll_key].startswith("nats per point")
    assert metrics["units"][nll_key + "_per_dim"].startswith("nats per dimension")
    assert metrics["units"]["train_seconds"] == "seconds" and set(metrics["units"]) <= set(metrics)
    return metrics


def read_samples(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def finite_checkpoint(path: Path) -> bool:
    payload = torch.load(path, map_location="cpu", weights_only=True)

    def tensors(obj: Any):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from tensors(value)

    return all(torch.isfinite(t).all() for t in tensors(payload) if t.is_floating_point())


# -- trained runs shared by several tests ------------------------------------------------------------


@pytest.fixture(scope="module")
def realnvp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-architecture RealNVP trained for 2 epochs on the 8-Gaussians case."""
    root = tmp_path_factory.mktemp("realnvp_default")
    config = root / "c.yaml"
    config.write_text(
        yaml.safe_dump({"training": {"checkpoint_every": 1}, "sampling": {"n_samples": 500, "n_eval": 200}})
    )
    out = root / "out"
    code = main(["train", "realnvp", "--config", str(config), "--data", str(case("B13.csv"))]
                + ["--epochs", "2", "--output_dir", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DDPM (20 diffusion steps) trained for 2 epochs on the two-moons case."""
    root = tmp_path_factory.mktemp("ddpm_small")
    config = write_config(root / "c.yaml", "ddpm", training={"checkpoint_every": 1})
    out = root / "out"
    code = main(
        ["train", "ddpm", "--config", str(config), "--data", str(case("B12.csv")), "--output_dir", str(out)]
        + ["--quiet"]
    )
    assert code == 0
    return out


# -- the specification's entry points, as subprocesses -----------------------------------------------


def test_train_realnvp_script_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = script(
        "train_realnvp.py", "--data", case("B12.csv"), "--epochs", "2", "--n_samples", "500",
        "--output_dir", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = assert_outputs(out, "realnvp")
    assert (metrics["epochs"], metrics["dim"]) == (2, 2)
    for rel in ("figures/realnvp_results.png", "samples/realnvp.csv", "checkpoints/realnvp.pt", "index.html"):
        assert f"wrote {out / rel}" in result.stdout
    assert len(read_samples(out / "samples" / "realnvp.csv")) == 500


def test_train_ddpm_script_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "ddpm.yaml"
    config.write_text("model:\n  diffusion_steps: 20\nsampling:\n  n_eval: 200\n")
    result = script(
        "train_ddpm.py", "--config", config, "--data", case("B12.csv"), "--epochs", "2",
        "--n_samples", "500", "--output_dir", out, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = assert_outputs(out, "ddpm")
    assert metrics["epochs"] == 2
    checkpoint = load_checkpoint(out / "checkpoints" / "ddpm.pt", expected_type="ddpm")
    assert checkpoint["config"].model.diffusion_steps == 20
    assert checkpoint["config"].training.seed == 689


# The shared case B17: every key but hidden_units is misspelled.
B17_YAML = (
    "model:\n  n_coupling_layer: 4\n  hidden_units: 64\n"
    "training:\n  epoch: 3\n  batchsize: 64\n  learning_rte: 0.0005\n"
)


def b17(folder: Path) -> Path:
    path = folder / "B17_misspelled_keys.yaml"
    path.write_text(B17_YAML, encoding="utf-8")
    return path


def test_script_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    config = b17(tmp_path)
    out = tmp_path / "out"
    result = script("train_realnvp.py", "--config", config, "--output_dir", out)
    assert result.returncode == 2
    assert_clean_error(result.stderr, "B17_misspelled_keys.yaml", "n_coupling_layer", "learning_rte")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_scripts_name_themselves_in_usage_and_errors() -> None:
    result = script("train_ddpm.py", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: train_ddpm.py [-h]")
    result = script("train_realnvp.py", "--bogus")
    assert result.returncode == 2
    assert "train_realnvp.py: error: unrecognized arguments: --bogus" in result.stderr


# -- genmodels sample / make-data ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["realnvp_run", "ddpm_run"])
def test_sample_writes_n_rows(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], tmp_path: Path, fixture: str
) -> None:
    out: Path = request.getfixturevalue(fixture)
    name = fixture.split("_")[0]
    target = tmp_path / "f.csv"
    code, stdout, err = cli(capsys, "sample", out / "checkpoints" / f"{name}.pt", "-n", "37", "-o", target)
    assert code == 0, err
    lines = target.read_text().splitlines()
    assert lines[0] == "x,y" and len(lines) == 38
    assert np.isfinite(read_samples(target)).all()
    assert "wrote 37 samples" in stdout


def test_sample_bad_arguments(capsys: pytest.CaptureFixture[str], realnvp_run: Path, tmp_path: Path) -> None:
    ckpt = realnvp_run / "checkpoints" / "realnvp.pt"
    target = tmp_path / "f.csv"
    code, _, err = cli(capsys, "sample", ckpt, "-n", "0", "-o", target)
    assert code == 2
    assert_clean_error(err, "sampling.n_samples (-n) must be >= 1 (got 0)")
    code, _, err = cli(capsys, "sample", tmp_path / "missing.pt", "-n", "5", "-o", target)
    assert code == 2
    assert_clean_error(err, "checkpoint not found", "missing.pt")
    code, _, err = cli(capsys, "sample", ckpt, "-n", "5", "--sampling_steps", "-1", "-o", target)
    assert code == 2
    assert_clean_error(err, "--sampling_steps")
    assert not target.exists()


def test_ddpm_sample_with_fewer_steps(
    capsys: pytest.CaptureFixture[str], ddpm_run: Path, tmp_path: Path
) -> None:
    ckpt = ddpm_run / "checkpoints" / "ddpm.pt"
    target = tmp_path / "ddim.csv"
    code, _, err = cli(
        capsys, "sample", ckpt, "-n", "20", "--sampling_steps", "5", "--eta", "0", "-o", target
    )
    assert code == 0, err
    assert read_samples(target).shape == (20, 2)
    code, _, err = cli(capsys, "sample", ckpt, "-n", "20", "--eta", "1.5", "-o", tmp_path / "bad.csv")
    assert code == 2
    assert_clean_error(err, "--eta")


def test_sample_from_diverged_weights_writes_nothing(
    capsys: pytest.CaptureFixture[str], realnvp_run: Path, tmp_path: Path
) -> None:
    payload = torch.load(realnvp_run / "checkpoints" / "realnvp.pt", map_location="cpu", weights_only=True)
    for state in (payload["model"], payload["trainer"]["ema"]):
        for key, value in state.items():
            if value.is_floating_point() and key.startswith("layers.0."):
                value.fill_(float("nan"))
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    target = tmp_path / "x.csv"
    code, _, err = cli(capsys, "sample", broken, "-n", "10", "-o", target)
    assert code == 2
    assert_clean_error(err, "weights hold nan or inf values", "broken.pt")
    assert not target.exists()


def test_make_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    moons = tmp_path / "moons.csv"
    code, _, err = cli(capsys, "make-data", "two_moons", "-n", "100", "-o", moons)
    assert code == 0, err
    assert load_csv(moons).values.shape == (100, 2)
    text = tmp_path / "ab.csv"
    code, _, err = cli(capsys, "make-data", "text", "--text", "AB", "-n", "100", "-o", text)
    assert code == 0, err
    assert load_csv(text).values.shape == (100, 2)
    code, _, err = cli(capsys, "make-data", "nonsense", "-n", "10", "-o", tmp_path / "x.csv")
    assert code == 2
    assert_clean_error(err, "unknown dataset 'nonsense'", "two_moons")
    code, _, err = cli(capsys, "make-data", "text", "--text", "", "-n", "10", "-o", tmp_path / "y.csv")
    assert code == 2
    assert_clean_error(err, "text")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()
    digits = tmp_path / "689.csv"
    code, _, err = cli(
        capsys, "make-data", "text", "--font", "dejavu", "-n", "100", "--seed", "3", "-o", digits
    )
    assert code == 0, err
    np.testing.assert_allclose(load_csv(digits).values, make_text(100, seed=3, font="dejavu"), rtol=1e-15)
    code, _, err = cli(
        capsys, "make-data", "text", "--text", "6a", "--font", "pen", "-n", "10", "-o", tmp_path / "z.csv"
    )
    assert code == 2
    assert_clean_error(err, "'a'")
    code, _, err = cli(
        capsys, "make-data", "two_moons", "--font", "pen", "-n", "10", "-o", tmp_path / "z.csv"
    )
    assert code == 2
    assert_clean_error(err, "--font")
    assert not (tmp_path / "z.csv").exists()


# -- options ---------------------------------------------------------------------------------------


def test_resume_auto_continues_a_run(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"checkpoint_every": 1})
    out = tmp_path / "out"
    base = ["train", "realnvp", "--config", config, "--data", case("B13.csv"), "--output_dir", out]
    code, _, err = cli(capsys, *base, "--resume", "auto")  # no run there yet: a new one starts
    assert code == 0, err
    assert "--resume auto: no realnvp run to resume in" in caplog.text and "starting a new one" in caplog.text
    first = read_metrics(out, "realnvp")
    assert first["epochs"] == 2
    code, _, err = cli(capsys, *base, "--epochs", "4", "--resume", "auto")
    assert code == 0, err
    metrics = assert_outputs(out, "realnvp")
    assert metrics["epochs"] == 4
    assert metrics["steps"] == 2 * first["steps"]
    history = (out / "metrics" / "realnvp_history.csv").read_text().splitlines()
    assert len(history) == 1 + 4
    # Fewer epochs than the checkpoint has trained: an error, and the finished run's files untouched.
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    code, _, err = cli(capsys, *base, "--epochs", "3", "--resume", "auto")
    assert code == 2
    assert_clean_error(err, "--epochs", "is 3", "already trained 4 epochs")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_missing_data_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    code, _, err = cli(capsys, "train", "realnvp", "--data", missing, "--output_dir", tmp_path / "out")
    assert code == 2
    assert_clean_error(err, str(missing), "does not exist")
    assert not (tmp_path / "out" / "checkpoints").exists()
    capsys.readouterr()  # without --quiet: the error comes before the effective config is printed
    assert main(["train", "realnvp", "--data", str(missing), "--output_dir", str(tmp_path / "out")]) == 2
    assert "effective realnvp config" not in capsys.readouterr().out


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "train", "ddpm", "--config", tmp_path / "none.yaml", "--output_dir", tmp_path)
    assert code == 2
    assert_clean_error(err, "config file not found", "none.yaml")


def test_invalid_yaml_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  epochs: [1, 2\n")
    code, _, err = cli(capsys, "train", "realnvp", "--config", config, "--output_dir", tmp_path / "out")
    assert code == 2
    assert_clean_error(err, "bad.yaml", "line ", "column ", "not valid YAML")


def test_bad_option_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for option, value, key in [
        ("--epochs", "0", "training.epochs"),
        ("--lr", "-1", "training.learning_rate"),
        ("--batch_size", "0", "training.batch_size"),
    ]:
        code, _, err = cli(capsys, "train", "realnvp", option, value, "--output_dir", tmp_path / "out")
        assert code == 2
        assert_clean_error(err, key)
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    blocker = tmp_path / "out"
    blocker.write_text("not a directory")
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", case("B13.csv"), "--output_dir", blocker
    )
    assert code == 2
    assert_clean_error(err, "out")
    assert blocker.read_text() == "not a directory"


UNWRITABLE = Path("/proc/genmodels-test")  # /proc takes no new folders, not even from root


@pytest.mark.skipif(not UNWRITABLE.parent.is_dir(), reason="needs Linux's /proc")
def test_output_folders_that_cannot_be_made_are_refused_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    code, out, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", case("B13.csv"), "--output_dir", UNWRITABLE
    )
    assert code == 2
    assert_clean_error(err, f"--output_dir {UNWRITABLE}", "files cannot be written into")
    assert "epoch" not in out + err  # refused before training, not after it
    target = UNWRITABLE / "sub" / "x.csv"  # /proc names are streams to -o, so a missing folder here
    code, _, err = cli(capsys, "make-data", "two_moons", "-n", "5", "-o", target)
    assert code == 2
    assert_clean_error(err, f"-o {target}", "files cannot be written into")


def test_config_of_the_other_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", REPO / "configs" / "ddpm.yaml", "--output_dir", tmp_path / "o"
    )
    assert code == 2
    assert_clean_error(err, "ddpm.yaml", "'model.diffusion_steps'", "looks like a ddpm config")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_checkpoint_loads_and_samples_on_cpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", "ddpm")
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", "ddpm", "--config", config, "--data", case("B12.csv"), "--device", "cuda",
        "--output_dir", out,
    )  # fmt: skip
    assert code == 0, err
    ckpt = out / "checkpoints" / "ddpm.pt"
    model = model_from_checkpoint(load_checkpoint(ckpt, map_location="cpu"))
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    target = tmp_path / "s.csv"
    code, _, err = cli(capsys, "sample", ckpt, "-n", "11", "--device", "cpu", "-o", target)
    assert code == 0, err
    assert read_samples(target).shape == (11, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(
        capsys, "train", "realnvp", "--data", case("B13.csv"), "--device", "cuda", "--output_dir", tmp_path
    )
    assert code == 2
    assert_clean_error(err, "--device cuda", "no CUDA GPU")
    capsys.readouterr()
    # Not quiet: the device is checked before the effective config is printed.
    code = main(
        [
            "train",
            "realnvp",
            "--data",
            str(case("B13.csv")),
            "--device",
            "cuda",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and capsys.readouterr().out == ""
    code, _, err = cli(capsys, "make-data", "two_moons", "-n", "10", "-o", tmp_path / "m.csv")
    assert code == 0
    assert not (tmp_path / "checkpoints").exists()


# -- the bad and awkward inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("B02.csv", ["line 12", "line 251", "line 500", "line 731", "line 999", "column 'y'", "column 'x'"]),
        (
            "B03.csv",
            ["line 43", "'0.73x'", "line 509", "'abc'", "line 902", "'1,25'", "column 'x'", "column 'y'"],
        ),
        ("B04.csv", ["1 column", "at least 2"]),
        ("B06.csv", ["column 'y'", "constant"]),
    ],
)
@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_bad_data_is_an_error_before_any_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, needles: list[str], model_type: str
) -> None:
    path = case(name)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "train", model_type, "--data", path, "--output_dir", out)
    assert code == 2
    assert_clean_error(err, str(path), *needles)
    assert not out.exists() or not any(out.rglob("*.*"))
    # without --quiet too, the error comes alone: the effective config is printed once the data are read
    assert main(["train", model_type, "--data", str(path), "--output_dir", str(out)]) == 2
    assert "effective" not in capsys.readouterr().out


def test_b02_rows_dropped_behind_an_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    out = tmp_path / "out"
    with pytest.warns(DataWarning, match="dropped 5 invalid rows"):
        code, _, err = cli(
            capsys, "train", "realnvp", "--config", config, "--data", case("B02.csv"), "--drop_invalid",
            "--output_dir", out,
        )  # fmt: skip
    assert code == 0, err
    data = load_checkpoint(out / "checkpoints" / "realnvp.pt")["data"]
    assert (data["n_rows"], data["n_dropped"]) == (995, 5)
    # evaluate --data suggests --drop_invalid for the same file, and has it
    ckpt = out / "checkpoints" / "realnvp.pt"
    code, _, err = cli(capsys, "evaluate", ckpt, "--data", case("B02.csv"), "-n", "200", "--n_boot", "2")
    assert code == 2 and "pass --drop_invalid" in err
    with pytest.warns(DataWarning, match="dropped 5 invalid rows"):
        code, _, err = cli(capsys, "evaluate", ckpt, "--data", case("B02.csv"), "--drop_invalid",
                           "-n", "200", "--n_boot", "2", "--output", tmp_path / "e.json")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["n_real"] == 995


def test_b17_misspelled_keys(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = b17(tmp_path)
    for model_type in ("realnvp", "ddpm"):
        code, _, err = cli(capsys, "train", model_type, "--config", path, "--output_dir", tmp_path / "out")
        assert code == 2
        assert_clean_error(
            err, str(path), "training.epoch'", "'epochs'", "training.batchsize'", "'batch_size'"
        )
        assert "learning_rte" in err and "'learning_rate'" in err
    code, _, err = cli(capsys, "train", "realnvp", "--config", path, "--output_dir", tmp_path / "out")
    assert "'model.n_coupling_layer' (did you mean 'n_coupling_layers'?)" in err
    assert not (tmp_path / "out").exists()


def test_b01_first_line_of_numbers_is_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp")
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", case("B01.csv"), "--output_dir", out
    )
    assert code == 0, err
    assert_outputs(out, "realnvp")
    data = load_checkpoint(out / "checkpoints" / "realnvp.pt")["data"]
    assert data["n_rows"] == 1000
    assert data["n_train"] + data["n_test"] == 1000


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_b05_three_columns(capsys: pytest.CaptureFixture[str], tmp_path: Path, model_type: str) -> None:
    config = write_config(tmp_path / "c.yaml", model_type)
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", model_type, "--config", config, "--data", case("B05.csv"), "--output_dir", out
    )
    assert code == 0, err
    metrics = assert_outputs(out, model_type)
    assert metrics["dim"] == 3
    samples_file = out / "samples" / f"{model_type}.csv"
    assert samples_file.read_text().splitlines()[0] == "a,b,c"
    assert read_samples(samples_file).shape == (500, 3)
    target = tmp_path / "s.csv"
    code, _, err = cli(capsys, "sample", out / "checkpoints" / f"{model_type}.pt", "-n", "7", "-o", target)
    assert code == 0, err
    assert read_samples(target).shape == (7, 3)


def test_b07_degenerate_data_warns_and_stays_finite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp")
    out = tmp_path / "out"
    with pytest.warns(DataWarning, match=r"only 4 distinct points among 1,000 rows"):
        code, _, err = cli(
            capsys, "train", "realnvp", "--config", config, "--data", case("B07.csv"), "--output_dir", out
        )
    assert code == 0, err
    metrics = read_metrics(out, "realnvp")
    assert math.isfinite(metrics["train_nll"]) and math.isfinite(metrics["test_nll"])
    history = np.genfromtxt(out / "metrics" / "realnvp_history.csv", delimiter=",", names=True)
    assert np.isfinite(history["loss"]).all()
    assert finite_checkpoint(out / "checkpoints" / "realnvp.pt")


@pytest.mark.parametrize(
    ("model_type", "batch_option"), [("realnvp", ["--batch_size", "64"]), ("realnvp", []), ("ddpm", [])]
)
def test_b08_ten_rows_one_partial_batch_per_epoch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, model_type: str, batch_option: list[str]
) -> None:
    # The default config (batch size 2048 / 4096), shortened, with small models.
    config = write_config(tmp_path / "c.yaml", model_type, training={"epochs": 3, "batch_size": 2048})
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", model_type, "--config", config, "--data", case("B08.csv"), *batch_option,
        "--output_dir", out,
    )  # fmt: skip
    assert code == 0, err
    metrics = read_metrics(out, model_type)
    assert metrics["epochs"] == metrics["steps"] == 3
    history = np.genfromtxt(out / "metrics" / f"{model_type}_history.csv", delimiter=",", names=True)
    assert np.isfinite(history["loss"]).all()
    assert (out / "figures" / f"{model_type}_results.png").is_file()
    assert finite_checkpoint(out / "checkpoints" / f"{model_type}.pt")


def test_b10_ddpm_samples_in_the_data_units(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        "ddpm",
        model={"diffusion_steps": 50, "hidden_units": 64},
        training={"epochs": 40, "batch_size": 128, "learning_rate": 0.003, "eval_every": 40},
    )
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", "ddpm", "--config", config, "--data", case("B10.csv"), "--output_dir", out
    )
    assert code == 0, err
    metrics = assert_outputs(out, "ddpm")
    assert metrics["steps"] >= 200
    radius = np.linalg.norm(read_samples(out / "samples" / "ddpm.csv"), axis=1)
    data_radius = np.linalg.norm(load_csv(case("B10.csv")).values, axis=1).mean()
    assert 35 < data_radius < 45
    assert 20 < radius.mean() < 60, radius.mean()


@pytest.fixture(scope="module")
def b12_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A good RealNVP run, then a run with ``--lr 0.5`` into the same output directory."""
    out = tmp_path_factory.mktemp("b12") / "out"
    base = [
        "train",
        "realnvp",
        "--data",
        str(case("B12.csv")),
        "--n_samples",
        "500",
        "--output_dir",
        str(out),
    ]
    base += ["--config", str(REPO / "configs" / "realnvp.yaml"), "--quiet"]
    assert main([*base, "--epochs", "2"]) == 0
    keep = ["checkpoints/realnvp.pt", "metrics/realnvp.json", "metrics/realnvp_history.csv"]
    keep += ["figures/realnvp_results.png", "figures/realnvp_loss.png", "samples/realnvp.csv"]
    keep += ["configs/realnvp.yaml"]

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {rel: ((out / rel).read_bytes(), (out / rel).stat().st_mtime_ns) for rel in keep}

    before = snapshot()
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([*base, "--epochs", "5", "--lr", "0.5"])
    return {"out": out, "before": before, "after": snapshot(), "code": code, "err": err.getvalue()}


def test_b12_high_learning_rate_finite_or_clean_stop(b12_runs: dict[str, Any]) -> None:
    out, code, err = b12_runs["out"], b12_runs["code"], b12_runs["err"]
    assert code in (0, 1), err
    for ckpt in (out / "checkpoints").glob("*.pt"):
        assert finite_checkpoint(ckpt), f"non-finite checkpoint {ckpt}"
    if code == 1:
        assert_clean_error(err, "non-finite", "epoch ", "step ", "lower")
        assert "--lr" in err or "learning rate" in err
        before, after = b12_runs["before"], b12_runs["after"]
        for rel in before:
            if rel.startswith("configs/"):
                continue  # see test_b12_failed_run_keeps_the_earlier_config
            assert after[rel] == before[rel], f"{rel} of the earlier good run was changed"
    else:
        metrics = assert_outputs(out, "realnvp")
        assert metrics["epochs"] == 5


def test_b12_failed_run_keeps_the_earlier_config(b12_runs: dict[str, Any]) -> None:
    if b12_runs["code"] != 1:
        pytest.skip("the --lr 0.5 run finished; nothing to keep")
    rel = "configs/realnvp.yaml"
    assert b12_runs["after"][rel] == b12_runs["before"][rel]


def _max_round_trip_error(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        z, _ = model(x)
        return float((model.inverse(z) - x).abs().max())


def test_b13_invertibility_before_after_training_and_reload(realnvp_run: Path, tmp_path: Path) -> None:
    from genmodels.train.trainer import Trainer

    data = load_csv(case("B13.csv"))
    x = torch.as_tensor(data.values, dtype=torch.float32)
    config = load_config(REPO / "configs" / "realnvp.yaml", "realnvp")
    config = with_overrides(config, {"training.epochs": 3, "training.batch_size": 256})
    torch.manual_seed(0)
    model = build_model(config, 2)
    model.set_standardization(x.mean(0), x.std(0))
    model.eval()
    assert _max_round_trip_error(model, x) < 1e-4, "before training"

    trainer = Trainer(model, config.training, progress=False)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(x)
    assert any(not torch.equal(initial[k], v) for k, v in model.state_dict().items()), (
        "training changed nothing"
    )
    model.eval()
    assert _max_round_trip_error(model, x) < 1e-4, "after training"
    assert _max_round_trip_error(trainer.ema, x) < 1e-4, "after training (EMA)"

    path = tmp_path / "m.pt"
    save_checkpoint(
        path, config=config, model=model, dim=2, columns=data.columns, trainer_state=trainer.state_dict()
    )
    for use_ema in (False, True):
        reloaded = model_from_checkpoint(load_checkpoint(path, expected_type="realnvp"), use_ema=use_ema)
        assert _max_round_trip_error(reloaded, x) < 1e-4, f"after reloading (ema={use_ema})"
    with torch.no_grad():
        reloaded = model_from_checkpoint(load_checkpoint(path), use_ema=False)
        torch.testing.assert_close(reloaded(x)[0], model(x)[0])

    # and the checkpoint the command line wrote
    payload = load_checkpoint(realnvp_run / "checkpoints" / "realnvp.pt", expected_type="realnvp")
    assert payload["data"]["n_rows"] == 2000
    for use_ema in (False, True):
        assert _max_round_trip_error(model_from_checkpoint(payload, use_ema=use_ema), x) < 1e-4


def test_b15_ddpm_three_steps(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", "ddpm", "--config", case("B15_ddpm_three_steps.yaml"), "--data", case("B13.csv"),
        "--n_samples", "500", "--output_dir", out,
    )  # fmt: skip
    assert code == 0, err
    assert "ends at ᾱ_L = 0.612: x_L keeps 61% of the data's scale" in caplog.text  # steep, but short
    metrics = assert_outputs(out, "ddpm")
    assert metrics["epochs"] == 2
    assert np.isfinite(read_samples(out / "samples" / "ddpm.csv")).all()

    payload = load_checkpoint(out / "checkpoints" / "ddpm.pt", expected_type="ddpm")
    model = model_from_checkpoint(payload)
    assert model.diffusion_steps == 3
    generator = torch.Generator().manual_seed(0)
    trajectory = model.sample(64, generator=generator, return_trajectory=True)
    assert trajectory.shape == (4, 64, 2)  # x_3 and exactly 3 reverse steps
    assert torch.isfinite(trajectory).all()
    # the last step (i = 1) is the predicted mean alone, x̂₀ within the sampler's bound: no noise is added
    with torch.no_grad():
        x1, _ = model.standardize(trajectory[-2])
        mean = model.posterior_mean_prediction(x1, torch.ones(64, dtype=torch.long))
        bound = model.sample_x0_bound()
        expected, _ = model.standardize.inverse(torch.maximum(torch.minimum(mean, bound), -bound))
    torch.testing.assert_close(trajectory[-1], expected, atol=1e-4, rtol=1e-4)


def test_b18_resume_with_another_architecture(
    capsys: pytest.CaptureFixture[str], realnvp_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config, data = case("B18_other_architecture.yaml"), case("B13.csv")
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", data,
        "--resume", realnvp_run / "checkpoints" / "realnvp_last.pt", "--output_dir", out,
    )  # fmt: skip
    assert code == 2
    assert_clean_error(err, "model.n_coupling_layers", "14", "3", "model.hidden_units", "128", "17")
    assert "n_hidden" not in err  # only the settings that differ
    assert len(err.strip().splitlines()) == 1 and len(err) < 600
    assert not (out / "checkpoints").exists()


def test_b18_ddpm_checkpoint_given_to_realnvp(
    capsys: pytest.CaptureFixture[str], ddpm_run: Path, tmp_path: Path
) -> None:
    ckpt = ddpm_run / "checkpoints" / "ddpm.pt"
    out = tmp_path / "out"
    config, data = case("B18_other_architecture.yaml"), case("B13.csv")
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", data, "--resume", ckpt, "--output_dir", out
    )
    assert code == 2
    assert_clean_error(err, str(ckpt), "ddpm checkpoint", "realnvp")
    assert not (out / "checkpoints").exists()


def test_b19_foreign_cuda_pickle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    code, _, err = cli(capsys, "sample", case("B19.pt"), "-n", "5", "-o", target)
    assert code == 2
    assert_clean_error(err, "B19.pt", "not a genmodels checkpoint")
    assert "deserializ" not in err.lower()
    assert not target.exists()
    code, _, err = cli(capsys, "train", "realnvp", "--data", case("B13.csv"), "--resume", case("B19.pt"),
                       "--output_dir", tmp_path / "out")  # fmt: skip
    assert code == 2
    assert_clean_error(err, "not a genmodels checkpoint")


def test_sample_rejects_other_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (text, empty, tmp_path):
        code, _, err = cli(capsys, "sample", path, "-n", "5", "-o", tmp_path / "x.csv")
        assert code == 2
        assert_clean_error(err, str(path))


def test_resume_may_change_points_per_timestep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Timestep sharing only changes how the model is trained, so a resumed run may change it."""
    out = tmp_path / "out"
    config = write_config(tmp_path / "a.yaml", "ddpm", training={"checkpoint_every": 1})
    code, _, err = cli(
        capsys, "train", "ddpm", "--config", config, "--data", case("B12.csv"), "--output_dir", out
    )
    assert code == 0, err
    assert load_checkpoint(out / "checkpoints" / "ddpm.pt")["config"].model.points_per_timestep == 8
    changed = write_config(
        tmp_path / "b.yaml", "ddpm", model={"points_per_timestep": 1}, training={"epochs": 3}
    )
    code, stdout, err = cli(capsys, "train", "ddpm", "--config", changed, "--data", case("B12.csv"),
                            "--resume", "auto", "--output_dir", out)  # fmt: skip
    assert code == 0, err
    stored = load_checkpoint(out / "checkpoints" / "ddpm.pt")["config"]
    assert stored.model.points_per_timestep == 1 and stored.training.epochs == 3
    # The metrics printed are the same valid JSON as the metrics file (non-finite values as null).
    printed = json.loads(stdout[stdout.index("{") : stdout.index("\n}") + 2])
    assert printed == json.loads((out / "metrics" / "ddpm.json").read_text())


def test_resume_without_config_continues_the_stored_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--resume auto` alone keeps the stored run's settings (epochs, samples, data), not the defaults."""
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"checkpoint_every": 1, "epochs": 3})
    out = tmp_path / "out"
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", case("B13.csv"), "--output_dir", out
    )
    assert code == 0, err
    code, _, err = cli(capsys, "train", "realnvp", "--resume", "auto", "--output_dir", out, "--epochs", "4")
    assert code == 0, err
    stored = load_checkpoint(out / "checkpoints" / "realnvp.pt")["config"]
    assert stored.training.epochs == 4 and stored.data.path == str(case("B13.csv"))
    assert stored.sampling.n_samples == SMALL["realnvp"]["sampling"]["n_samples"]


@pytest.fixture(scope="module")
def moons_realnvp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small RealNVP run (1 epoch on two moons, made here); returns its output folder."""
    root = tmp_path_factory.mktemp("moons_realnvp")
    config = write_config(root / "c.yaml", "realnvp", training={"epochs": 1, "checkpoint_every": 1})
    out = root / "out"
    code = main(["train", "realnvp", "--config", str(config), "--data", str(moons_csv(root / "m.csv"))]
                + ["--output_dir", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    return out


def test_hand_edited_checkpoints_are_named_as_damaged(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path
) -> None:
    """A checkpoint whose weights were edited (nan values, a tensor of another shape, an optimizer
    state of another size, negative second moments) is a damaged checkpoint, for resuming and for
    sampling alike (a file with impossible optimizer values may be damaged anywhere)."""
    payload = torch.load(moons_realnvp / "checkpoints" / "realnvp_last.pt", weights_only=True)
    key = next(iter(k for k in payload["model"] if k.endswith("weight")))

    def edited_weights(tensor: torch.Tensor) -> dict:  # the weights and their average (which sampling uses)
        trainer = {**payload["trainer"], "ema": {**payload["trainer"]["ema"], key: tensor}}
        return {**payload, "model": {**payload["model"], key: tensor}, "trainer": trainer}

    optimizer = payload["trainer"]["optimizer"]
    fewer_params = {**optimizer, "param_groups": [{**optimizer["param_groups"][0], "params": [0]}]}
    first = optimizer["state"][0]  # a flipped sign bit in Adam's second moments
    negative = {
        **optimizer,
        "state": {**optimizer["state"], 0: {**first, "exp_avg_sq": -first["exp_avg_sq"] - 1}},
    }
    edits = {
        "nan.pt": (
            edited_weights(torch.full_like(payload["model"][key], math.nan)),
            "hold nan or inf values",
        ),
        "shape.pt": (
            edited_weights(payload["model"][key][:1]),
            "weights do not fit its own config (size mismatch",
        ),
        "optimizer.pt": (
            {**payload, "trainer": {**payload["trainer"], "optimizer": fewer_params}},
            "its training state does not fit its model",
        ),
        "moments.pt": (
            {**payload, "trainer": {**payload["trainer"], "optimizer": negative}},
            "optimizer state holds negative values where only values >= 0 can be (exp_avg_sq of parameter 0)",
        ),
    }
    out = tmp_path / "out"
    for name, (edited, needle) in edits.items():
        torch.save(edited, tmp_path / name)
        code, _, err = cli(capsys, "train", "realnvp", "--data", moons_csv(tmp_path / "m.csv"), "--epochs", "2",
                           "--resume", tmp_path / name, "--output_dir", out)  # fmt: skip
        assert code == 2, err
        assert_clean_error(err, str(tmp_path / name), needle)
        if name != "optimizer.pt":  # sampling does not load the optimizer state into an optimizer
            code, _, err = cli(capsys, "sample", tmp_path / name, "-n", "5", "-o", tmp_path / "s.csv")
            assert code == 2, err
            assert_clean_error(err, needle)
    assert not (out / "checkpoints").exists() and not (tmp_path / "s.csv").exists()


def test_sample_writes_to_stdout_through_links_and_into_pipes(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path
) -> None:
    """`-o -` is standard output; a link is written through (it stays a link), a pipe is written into
    (it stays a pipe): the atomic rename must not replace either with a plain file."""
    ckpt = moons_realnvp / "checkpoints" / "realnvp.pt"
    code, out, err = cli(capsys, "sample", ckpt, "-n", "5", "-o", "-")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "x,y" and len(lines) == 6 and all(len(line.split(",")) == 2 for line in lines[1:])
    assert err.strip() == "wrote 5 samples of realnvp to standard output"
    code, out, _ = cli(capsys, "make-data", "two_moons", "-n", "3", "-o", "-")
    assert code == 0 and out.splitlines()[0] == "x,y" and len(out.splitlines()) == 4
    assert not (Path.cwd() / "-").exists()

    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "target.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert cli(capsys, "sample", ckpt, "-n", "7", "-o", link)[0] == 0
    assert link.is_symlink() and len(read_samples(target)) == 7

    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.csv"
        os.mkfifo(fifo)
        received: list[str] = []
        reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
        reader.start()
        code = cli(capsys, "sample", ckpt, "-n", "4", "-o", fifo)[0]
        reader.join(timeout=60)
        assert code == 0
        assert received and received[0].startswith("x,y\n") and len(received[0].splitlines()) == 5
        assert fifo.is_fifo()


def _genmodels_process(*args: str | Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    code = "import sys; from genmodels.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, **kwargs)


def test_sample_to_dev_stdout_appends_and_a_closed_pipe_is_an_error(
    moons_realnvp: Path, tmp_path: Path
) -> None:
    """`-o /dev/stdout >> file` appends (opening /dev/stdout anew would truncate the file) and its
    message goes to standard error; a reader that stops early makes the command fail, not claim success."""
    ckpt = moons_realnvp / "checkpoints" / "realnvp.pt"
    appended = tmp_path / "all.csv"
    appended.write_text("x,y\n1,1\n")
    with open(appended, "a") as handle:
        process = _genmodels_process("sample", ckpt, "-n", "3", "-o", "/dev/stdout", stdout=handle,
                                     stderr=subprocess.PIPE)  # fmt: skip
        _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    lines = appended.read_text().splitlines()
    assert lines[:3] == ["x,y", "1,1", "x,y"] and len(lines) == 6
    assert b"wrote 3 samples of realnvp to standard output" in err
    with open(appended, "a") as handle:  # any output file of the command line, here evaluate's JSON
        process = _genmodels_process("evaluate", ckpt, "-n", "50", "--n_boot", "2", "--output", "/dev/stdout",
                                     stdout=handle, stderr=subprocess.PIPE)  # fmt: skip
        _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    text = appended.read_text()
    assert text.splitlines()[:6] == lines
    assert json.loads(text[text.index("\n{") : text.rindex("}") + 1])["model"] == "realnvp"

    process = _genmodels_process("sample", ckpt, "-n", "300000", "-o", "-", stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(4) == b"x,y\n"
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=180) == 2
    assert_clean_error(err, "standard output was closed before all 300000 samples")
    assert "wrote" not in err


def test_output_paths_that_cannot_hold_the_file_are_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path
) -> None:
    ckpt = moons_realnvp / "checkpoints" / "realnvp.pt"
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "into_a_file").symlink_to(tmp_path / "a_file" / "x.csv")
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.txt", "b")
    locked = tmp_path / "locked.csv"
    locked.write_text("x,y\n1,2\n")
    locked.chmod(0o444)
    cases = [
        ("locked.csv", "is read-only; make it writable (chmod u+w)"),
        ("loop_a", "cannot be followed to a file"),
        ("into_a_file", "a_file is a file, not a folder"),
        ("notes.zip", "is a zip archive"),
    ]
    for name, needle in cases:
        for argv in (["sample", ckpt, "-n", "5"], ["make-data", "two_moons", "-n", "5"]):
            code, _, err = cli(capsys, *argv, "-o", tmp_path / name)
            assert code == 2, (argv, err)
            assert_clean_error(err, f"-o {tmp_path / name}", needle)
    assert (tmp_path / "loop_a").is_symlink() and archive.read_bytes()[:2] == b"PK"
    assert locked.read_text() == "x,y\n1,2\n"
    code, _, err = cli(capsys, "make-data", "two_moons", "-n", str(10**12), "-o", tmp_path / "x.csv")
    assert code == 2
    assert_clean_error(err, f"-n {10**12}", "GiB of memory")
    for argv in (["make-data", "text", "-n", "50", "-o", tmp_path / "t.csv"], ["evaluate", ckpt, "-n", "50"]):
        code, _, err = cli(capsys, *argv, "--text", "\u200b")
        assert code == 2
        assert_clean_error(err, "no visible glyphs")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "t.csv").exists()


def test_ctrl_c_while_pytorch_loads_ends_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted() -> None:  # the first call after parsing, where the slow imports begin
        raise KeyboardInterrupt

    monkeypatch.setattr("genmodels.train.acceleration.tune_allocator", interrupted)
    code, out, err = cli(capsys, "make-data", "two_moons", "-n", "5", "-o", "-")
    assert code == 130
    assert err == "interrupted\n" and out == ""


def test_eta_without_the_strided_sampler_draws_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", "ddpm", training={"epochs": 1})
    out = tmp_path / "out"
    assert cli(capsys, "train", "ddpm", "--config", config, "--data", moons_csv(tmp_path / "m.csv"),
               "--output_dir", out)[0] == 0  # fmt: skip
    ckpt = out / "checkpoints" / "ddpm.pt"
    for steps in ("0", "20"):
        with pytest.warns(
            UserWarning, match=r"eta=0.5, spacing='quadratic': .* all 20 steps run the ancestral"
        ):
            code, _, err = cli(capsys, "sample", ckpt, "-n", "5", "--eta", "0.5", "--sampling_steps", steps,
                               "-o", tmp_path / "s.csv")  # fmt: skip
        assert code == 0, err
    with pytest.warns(UserWarning) as caught:
        code, _, err = cli(capsys, "sample", ckpt, "-n", "5", "--eta", "0.5", "--ddim_spacing", "linear",
                           "-o", tmp_path / "s.csv")  # fmt: skip
    assert code == 0, err
    assert [str(w.message) for w in caught] == [  # once, by DDPM.sample
        "eta=0.5, spacing='linear': these set the strided DDIM sampler, but all 20 steps run the ancestral "
        "sampler, which they do not change; pass steps below 20 to use it"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for option in (["--eta", "0.5"], ["--ddim_spacing", "linear"]):
            assert cli(capsys, "sample", ckpt, "-n", "5", *option, "--sampling_steps", "5",
                       "-o", tmp_path / "s.csv")[0] == 0  # fmt: skip
    model = model_from_checkpoint(ckpt)  # the Python API says so too
    with pytest.warns(UserWarning, match=r"eta=0, spacing='quadratic': these set the strided DDIM sampler"):
        model.sample(3, eta=0.0)
    with pytest.warns(UserWarning, match=r"spacing='linear'"):
        model.sample(3, steps=20, spacing="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.sample(3, steps=5, eta=0.0, spacing="linear")


def test_sample_and_evaluate_refuse_to_overwrite_a_checkpoint(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path
) -> None:
    ckpt = moons_realnvp / "checkpoints" / "realnvp.pt"
    last = moons_realnvp / "checkpoints" / "realnvp_last.pt"
    before = last.read_bytes()
    code, _, err = cli(capsys, "sample", ckpt, "-n", "5", "-o", last)
    assert code == 2
    assert_clean_error(err, f"-o {last}", "zip archive (as PyTorch checkpoints are)")
    code, _, err = cli(capsys, "evaluate", ckpt, "-n", "50", "--output", last)
    assert code == 2
    assert_clean_error(err, f"--output {last}", "zip archive (as PyTorch checkpoints are)")
    assert last.read_bytes() == before


@pytest.mark.parametrize(
    "option, needle",
    [
        (["--n_eval", "0"], "--n_eval must be at least 10 (got 0)"),
        (["--text", " "], "--text: text ' ' has no visible glyphs"),
    ],
)
def test_evaluate_option_values_are_checked(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, option: list[str], needle: str
) -> None:
    code, out, err = cli(capsys, "evaluate", moons_realnvp / "checkpoints" / "realnvp.pt", *option)
    assert code == 2 and out == ""
    assert_clean_error(err, needle)


def test_evaluate_output_dash_prints_the_json_alone_and_an_empty_name_is_an_error(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = moons_realnvp / "checkpoints" / "realnvp.pt"
    code, out, err = cli(capsys, "evaluate", ckpt, "-n", "50", "--n_boot", "2", "--output", "-")
    assert code == 0 and not (tmp_path / "-").exists()
    metrics = json.loads(out)
    assert metrics["model"] == "realnvp" and math.isfinite(metrics["likelihood"]["exact"]["value"])
    assert "nats" in err  # the readable report goes to standard error
    for command in (["evaluate", ckpt, "--output", ""], ["sample", ckpt, "-n", "5", "-o", ""]):
        code, _, err = cli(capsys, *command)
        assert code == 2
        assert_clean_error(err, "must name a file, got an empty string")


def test_sample_refuses_ddpm_only_options_for_a_realnvp(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path
) -> None:
    ckpt = moons_realnvp / "checkpoints" / "realnvp.pt"
    for option, needle in ((["--eta", "0.5"], "--eta 0.5 applies only to DDPM checkpoints"),
                           (["--sampling_steps", "5"], "--sampling_steps 5 applies only to DDPM checkpoints")):  # fmt: skip
        code, _, err = cli(capsys, "sample", ckpt, "-n", "5", *option, "-o", tmp_path / "s.csv")
        assert code == 2
        assert_clean_error(err, needle)
    assert not (tmp_path / "s.csv").exists()


def test_sample_refuses_a_count_beyond_the_machines_memory(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path
) -> None:
    target = tmp_path / "huge.csv"
    code, _, err = cli(capsys, "sample", moons_realnvp / "checkpoints" / "realnvp.pt", "-n", str(10**13),
                       "-o", target)  # fmt: skip
    assert code == 2
    assert_clean_error(err, f"-n {10**13}", "GiB of memory", "ask for fewer")
    assert not target.exists()
    # train draws its samples after training: the same count is refused before any training
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "realnvp", "--data", moons_csv(tmp_path / "m.csv"), "--epochs", "1",
                       "--n_samples", str(10**13), "--output_dir", out)  # fmt: skip
    assert code == 2
    assert_clean_error(err, f"sampling.n_samples (--n_samples) {10**13}", "GiB of memory")
    assert not out.exists()


def test_compare_warns_when_runs_were_evaluated_on_other_points(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    data = moons_csv(tmp_path / "m.csv", n=300, seed=3)
    assert cli(capsys, "train", "realnvp", "--config", config, "--data", data, "--output_dir", other)[0] == 0
    fast = ["-n", "100", "--n_boot", "2", "--output_dir", tmp_path / "cmp"]
    with caplog.at_level(logging.WARNING, logger="genmodels.evaluation.scoring"):
        assert cli(capsys, "compare", moons_realnvp, other, *fast)[0] == 0
    assert "were evaluated on other points" not in caplog.text
    assert f"realnvp ({other}) was evaluated on other points than realnvp ({moons_realnvp})" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genmodels.evaluation.scoring"):
        assert cli(capsys, "compare", moons_realnvp, other, *fast, "--data", data)[0] == 0
    assert "other points" not in caplog.text


def test_a_new_run_into_a_run_folder_says_it_replaces_it(
    capsys: pytest.CaptureFixture[str], moons_realnvp: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    shutil.copytree(moons_realnvp, out)
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    data = moons_csv(tmp_path / "m.csv")
    last = out / "checkpoints" / "realnvp_last.pt"
    before = last.read_bytes()
    with caplog.at_level(logging.INFO, logger="genmodels.run"):
        assert (
            cli(capsys, "train", "realnvp", "--config", config, "--data", data, "--output_dir", out)[0] == 0
        )
        # The earlier run's resumable state is set aside, not overwritten by the new run's.
        previous = out / "checkpoints" / "realnvp_last.previous.pt"
        assert previous.read_bytes() == before and last.read_bytes() != before
        assert f"{out} already holds a realnvp run" in caplog.text
        assert (
            f"its resumable checkpoint is kept as {previous} (--resume {previous} continues it)"
            in caplog.text
        )
        caplog.clear()
        assert cli(capsys, "train", "ddpm", "--config", write_config(tmp_path / "d.yaml", "ddpm"),
                   "--data", data, "--output_dir", out)[0] == 0  # fmt: skip
        assert "already holds" not in caplog.text


def test_a_tiny_training_split_skips_the_floor_instead_of_failing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """4 training rows are too few for the floor's two-sample test: it is skipped (null in the
    metrics), and the run still writes its checkpoint, metrics and figures."""
    config = write_config(tmp_path / "c.yaml", "realnvp", data={"test_fraction": 0.99})
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="genmodels.run"):
        code, _, err = cli(capsys, "train", "realnvp", "--config", config,
                           "--data", moons_csv(tmp_path / "m.csv", n=400), "--output_dir", out)  # fmt: skip
    assert code == 0, err
    assert "too few training points (4) for the c2st floor" in caplog.text
    metrics = read_metrics(out, "realnvp")
    assert metrics["c2st_floor"] is None and metrics["c2st_hgb_floor"] is None
    assert 0 <= metrics["c2st"] <= 1
    assert (out / "checkpoints" / "realnvp.pt").is_file()
    # Fewer than 4 training rows is an error naming the split, before any training
    for fraction, left in ((0.995, 2), (0.999, 1)):
        config = write_config(tmp_path / "c.yaml", "realnvp", data={"test_fraction": fraction})
        code, _, err = cli(capsys, "train", "realnvp", "--config", config, "--data", tmp_path / "m.csv",
                           "--output_dir", tmp_path / "out2")  # fmt: skip
        assert code == 2
        assert_clean_error(
            err, f"data.test_fraction {fraction:g} leaves {left} of its 400 rows", "at least 4"
        )
    assert not (tmp_path / "out2" / "checkpoints").exists()


def test_user_mistakes_get_clear_errors(
    capsys: pytest.CaptureFixture[str], realnvp_run: Path, tmp_path: Path
):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, _, err = cli(capsys, "train", "realnvp", "--data", case("B13.csv"), "--output_dir", a_file)
    assert code == 2
    assert_clean_error(err, "--output_dir", "is a file")
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("x,y\n" + "".join(f"{i}e-200,{-i}e-200\n" for i in range(1, 30)))
    code, _, err = cli(capsys, "train", "realnvp", "--data", tiny, "--output_dir", tmp_path / "o")
    assert code == 2
    assert_clean_error(err, "column 'x'", "rescale")
    code, _, err = cli(capsys, "make-data", "text", "--text", "   ", "-n", "10", "-o", tmp_path / "t.csv")
    assert code == 2
    assert_clean_error(err, "visible character")
    code, _, err = cli(capsys, "sample", tiny, "-n", "5", "-o", tmp_path / "s.csv")
    assert code == 2
    assert_clean_error(err, "not a genmodels checkpoint")
    assert "weights_only" not in err
    ckpt = realnvp_run / "checkpoints" / "realnvp.pt"
    code, _, err = cli(capsys, "sample", ckpt, "-n", "5", "--sampling_steps", "10", "-o", tmp_path / "s.csv")
    assert code == 2
    assert_clean_error(err, "--sampling_steps", "DDPM")


def test_ddpm_sampling_steps_above_diffusion_steps_is_rejected(tmp_path: Path) -> None:
    from genmodels.config import default_config
    from genmodels.errors import ConfigError

    with pytest.raises(ConfigError, match="sampling.sampling_steps"):
        with_overrides(default_config("ddpm"), {"sampling.sampling_steps": 99999})


# -- resuming, output folders, data that float32 cannot hold, seeds ------------------------------------


def moons_csv(path: Path, n: int = 600, *, seed: int = 0, offset: float = 0.0) -> Path:
    points = GENERATORS["two_moons"](n, seed=seed) + offset
    np.savetxt(path, points, delimiter=",", header="x,y", comments="", fmt="%.10g")
    return path


def test_resume_applies_a_new_learning_rate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`--lr` on a resumed run takes effect at once, continuing at lr × decay^epoch; the stored config
    and the recorded learning rates agree."""
    data = moons_csv(tmp_path / "d.csv")
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"lr_decay": 0.9})
    out = tmp_path / "out"
    base = ["train", "realnvp", "--config", config, "--data", data, "--output_dir", out]
    assert cli(capsys, *base)[0] == 0
    code, _, err = cli(capsys, *base, "--epochs", "4", "--lr", "5e-4", "--resume", "auto")
    assert code == 0, err
    rows = (out / "metrics" / "realnvp_history.csv").read_text().splitlines()
    column = rows[0].split(",").index("lr")
    lrs = [float(row.split(",")[column]) for row in rows[1:]]
    assert lrs == pytest.approx([1e-3 * 0.9, 1e-3 * 0.81, 5e-4 * 0.9**3, 5e-4 * 0.9**4], rel=1e-6)
    stored = load_checkpoint(out / "checkpoints" / "realnvp.pt")["config"]
    assert stored.training.learning_rate == 5e-4


def test_resume_on_other_data_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", "realnvp")
    out = tmp_path / "out"
    base = ["train", "realnvp", "--config", config, "--output_dir", out]
    assert cli(capsys, *base, "--data", moons_csv(tmp_path / "a.csv"))[0] == 0
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    other = moons_csv(tmp_path / "b.csv", seed=1, offset=3.0)
    code, _, err = cli(capsys, *base, "--data", other, "--epochs", "3", "--resume", "auto")
    assert code == 2
    assert_clean_error(err, "cannot resume", "other data", str(other))
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    # The same data under another name resumes.
    copy = tmp_path / "copy.csv"
    copy.write_bytes((tmp_path / "a.csv").read_bytes())
    assert cli(capsys, *base, "--data", copy, "--epochs", "3", "--resume", "auto")[0] == 0


@pytest.mark.parametrize(
    "blocked",
    ["figures", "metrics", "index.html/", "figures/realnvp_density.png/", "figures/realnvp_results.svg/"],
)
def test_a_blocked_output_folder_stops_the_run_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, blocked: str
) -> None:
    """A file where an output folder goes (or a folder where index.html goes) stops the run before it
    trains, so an earlier run's checkpoint and metrics are untouched."""
    data = moons_csv(tmp_path / "d.csv")
    config = write_config(tmp_path / "c.yaml", "realnvp")
    out = tmp_path / "out"
    base = ["train", "realnvp", "--config", config, "--data", data, "--output_dir", out]
    assert cli(capsys, *base)[0] == 0
    target = out / blocked.rstrip("/")
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.mkdir() if blocked.endswith("/") else target.write_text("in the way")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    code, _, err = cli(capsys, *base, "--seed", "3", "--format", "svg" if "svg" in blocked else "png")
    assert code == 2
    assert_clean_error(err, "--output_dir", str(target))
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_sampling_into_the_checkpoint_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = moons_csv(tmp_path / "d.csv")
    config = write_config(tmp_path / "c.yaml", "realnvp")
    out = tmp_path / "out"
    assert cli(capsys, "train", "realnvp", "--config", config, "--data", data, "--output_dir", out)[0] == 0
    ckpt = out / "checkpoints" / "realnvp.pt"
    before = ckpt.read_bytes()
    code, _, err = cli(
        capsys, "sample", ckpt, "-n", "10", "-o", out / "checkpoints" / ".." / "checkpoints" / "realnvp.pt"
    )
    assert code == 2
    assert_clean_error(err, "-o", "is the checkpoint itself")
    assert ckpt.read_bytes() == before
    data_before = data.read_bytes()  # nor into the data the run was trained on (a link to it included)
    (tmp_path / "link.csv").symlink_to(data)
    for target in (data, tmp_path / "link.csv"):
        code, _, err = cli(capsys, "sample", ckpt, "-n", "10", "-o", target)
        assert code == 2
        assert_clean_error(err, f"-o {target} is the data {ckpt} was trained on")
    assert data.read_bytes() == data_before
    # nor over the run's other outputs (its metrics, a figure, its config), which are not CSV files
    for target in (out / "metrics" / "realnvp.json", out / "configs" / "realnvp.yaml", config):
        target_before = target.read_bytes()
        code, _, err = cli(capsys, "sample", ckpt, "-n", "10", "-o", target)
        assert code == 2
        assert_clean_error(err, f"-o {target} exists and is a {target.suffix} file, not a CSV file")
        assert target.read_bytes() == target_before
    history = out / "metrics" / "realnvp_history.csv"
    history_before = history.read_bytes()
    code, _, err = cli(capsys, "sample", ckpt, "-n", "10", "-o", history)
    assert code == 2
    assert_clean_error(err, f"-o {history} is one of the run's metrics files")
    assert history.read_bytes() == history_before
    code, _, err = cli(capsys, "make-data", "two_moons", "-n", "10", "-o", out / "metrics" / "realnvp.json")
    assert code == 2 and "not a CSV file" in err
    assert (
        cli(capsys, "sample", ckpt, "-n", "3", "-o", tmp_path / "new.json")[0] == 0
    )  # a new name is the user's
    # evaluate --output: not the checkpoint, not a folder, not under a file; all checked before evaluating
    for output, needle in (
        (str(ckpt), "is the checkpoint itself"),
        (str(tmp_path / "new_folder") + "/", "is a folder"),
        (str(data / "x.json"), f"{data} is a file, not a folder"),
    ):
        code, _, err = cli(capsys, "evaluate", ckpt, "--output", output)
        assert code == 2
        assert_clean_error(err, "--output", needle)
    assert ckpt.read_bytes() == before and not (tmp_path / "new_folder").exists()
    # The Python API rebuilds the model from the path as from the loaded payload.
    by_path, by_payload = model_from_checkpoint(ckpt), model_from_checkpoint(load_checkpoint(ckpt))
    points = torch.randn(5, 2, dtype=torch.float32)
    assert torch.equal(by_path.log_prob(points), by_payload.log_prob(points))
    # Too few rows for the two-sample tests: a clear error, not a traceback.
    small = moons_csv(tmp_path / "small.csv", n=12)
    code, _, err = cli(capsys, "evaluate", ckpt, "--data", small)
    assert code == 2
    assert_clean_error(err, str(small), "12 rows", "at least 20")


def test_offset_data_that_float32_rounds_away(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1e9 + N(0, 1) is constant in float32: an error naming the column; 1e5 + N(0, 1) is rounded to
    steps of 0.8% of its spread: a warning; the unshifted data: neither."""
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    base = ["train", "realnvp", "--config", config, "--output_dir", tmp_path / "out"]
    rng = np.random.default_rng(0)
    far = tmp_path / "far.csv"
    np.savetxt(far, np.c_[1e9 + rng.normal(size=400), rng.normal(size=400)], delimiter=",", fmt="%.17g")
    code, _, err = cli(capsys, *base, "--data", far)
    assert code == 2
    assert_clean_error(err, "column '", str(far), "subtract an offset")
    with caplog.at_level(logging.WARNING, logger="genmodels.run"):
        assert cli(capsys, *base, "--data", moons_csv(tmp_path / "near.csv", offset=1e5))[0] == 0
    assert "round it to steps of" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genmodels.run"):
        assert cli(capsys, *base, "--data", moons_csv(tmp_path / "plain.csv"))[0] == 0
    assert "round it to steps" not in caplog.text


def test_logged_warnings_are_marked_as_warnings(tmp_path: Path) -> None:
    """A warning logged during a run reaches the terminal as 'warning: ...', like Python's warnings;
    progress messages stay bare."""
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"epochs": 1})
    data = moons_csv(tmp_path / "near.csv", offset=1e5)
    result = script(
        "train_realnvp.py", "--config", config, "--data", data, "--n_samples", "200",
        "--output_dir", tmp_path / "out", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    rounding = [line for line in lines if "round it to steps of" in line]
    assert [line[: len("warning: column 'x' of ")] for line in rounding] == [
        "warning: column 'x' of ",
        "warning: column 'y' of ",
    ], lines
    assert any(line.startswith("figures written to ") for line in lines), lines


@pytest.mark.parametrize(
    "yaml_text, needles",
    [
        (
            "training:\n  seed: 99999999999999999999\n",
            ["training.seed", "<= 4294967295", "99999999999999999999"],
        ),
        ("data:\n  split_seed: 4294967296\n", ["data.split_seed", "<= 4294967295", "4294967296"]),
        ("training:\n  learning_rate: .inf\n", ["training.learning_rate", "finite"]),
        ("training:\n  weight_decay: .inf\n", ["training.weight_decay", "finite"]),
        ("training:\n  ? [a, b]\n  : 1\n", ["line 2", "keys must be plain names"]),
        ("training:\n  epochs: 2\n  epochs: 3\n", ["line 3", "'epochs' is given twice"]),
    ],
)
def test_bad_yaml_values_get_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, yaml_text: str, needles: list[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    data = moons_csv(tmp_path / "d.csv")
    code, _, err = cli(
        capsys, "train", "realnvp", "--config", config, "--data", data, "--output_dir", tmp_path / "o"
    )
    assert code == 2
    assert_clean_error(err, str(config), *needles)
    assert not (tmp_path / "o" / "checkpoints").exists() or not any(
        (tmp_path / "o" / "checkpoints").iterdir()
    )


def test_seed_options_are_range_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["sample", "x.pt", "-o", "y.csv"], ["make-data", "two_moons", "-o", "y.csv"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--seed", "4294967296"])
        assert exit_info.value.code == 2
        assert "--seed: must be in [0, 2^32)" in capsys.readouterr().err


def test_a_broken_link_for_the_figures_folder_stops_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").symlink_to(tmp_path / "nowhere")
    data = moons_csv(tmp_path / "d.csv")
    config = write_config(tmp_path / "c.yaml", "realnvp")
    code, _, err = cli(capsys, "train", "realnvp", "--config", config, "--data", data, "--output_dir", out)
    assert code == 2
    assert_clean_error(err, "--output_dir", str(out / "figures"))
    assert sorted(p.name for p in out.iterdir()) == ["figures"]


def test_resuming_from_another_folder_names_the_relative_data_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    moons_csv(run / "d.csv")
    config = write_config(run / "c.yaml", "realnvp", training={"checkpoint_every": 1})
    monkeypatch.chdir(run)
    assert (
        cli(capsys, "train", "realnvp", "--config", config, "--data", "d.csv", "--output_dir", run / "out")[0]
        == 0
    )
    monkeypatch.chdir(tmp_path)
    resume = ["train", "realnvp", "--resume", "auto", "--output_dir", run / "out", "--epochs", "3"]
    code, _, err = cli(capsys, *resume)
    assert code == 2
    assert_clean_error(err, "d.csv", "relative to where the run was started", "--data")
    assert cli(capsys, *resume, "--data", run / "d.csv")[0] == 0


def test_resume_with_a_config_keeps_the_stored_settings_it_does_not_set(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A --config given on resume lays its keys over the stored run's settings, not over the defaults."""
    data = moons_csv(tmp_path / "d.csv")
    config = write_config(tmp_path / "c.yaml", "realnvp", training={"learning_rate": 5e-3})
    out = tmp_path / "out"
    assert cli(capsys, "train", "realnvp", "--config", config, "--data", data, "--output_dir", out)[0] == 0
    extra = tmp_path / "w.yaml"
    extra.write_text("training:\n  weight_decay: 0.001\n")
    code, _, err = cli(
        capsys,
        "train",
        "realnvp",
        "--config",
        extra,
        "--resume",
        "auto",
        "--output_dir",
        out,
        "--epochs",
        "3",
    )
    assert code == 0, err
    stored = load_checkpoint(out / "checkpoints" / "realnvp.pt")["config"]
    assert stored.training.learning_rate == 5e-3 and stored.training.weight_decay == 0.001
    assert stored.data.path == str(data) and stored.model.n_coupling_layers == 4


def test_loading_onto_a_device_this_machine_lacks_names_the_device_not_the_file(tmp_path: Path) -> None:
    # The device is checked before the file is read: the checkpoint is not to blame.
    missing = tmp_path / "run.pt"
    cases = [
        ("gpu", "must be a torch device such as 'cpu' or 'cuda', got 'gpu'"),
        ("meta", "holds no values"),
    ]
    if not torch.cuda.is_available():
        cases.append(("cuda", "device 'cuda' is not available on this machine"))
    for device, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            model_from_checkpoint(missing, device=device)
    with pytest.raises(ValueError, match="map_location 'meta' holds no values"):
        load_checkpoint(missing, map_location="meta")


@pytest.mark.parametrize(
    "command, needle",
    [
        (["train", "realnvp", "--output_dir", ""], "--output_dir must name a file or folder"),
        (["train", "ddpm", "--config", ""], "--config must name a file or folder"),
        (["train", "realnvp", "--resume", ""], "--resume must name a file or folder"),
        (["plot", "x.pt", "--output_dir", ""], "--output_dir must name a file or folder"),
        (["evaluate", ""], "CHECKPOINT must name a file or folder"),
        (["compare", ""], "RUN_DIR must name a file or folder"),
        (["compare", "no/such/run"], "RUN_DIR no/such/run does not exist"),
        (["evaluate", "x.pt", "-n", "3"], "error: -n must be at least 10 (got 3)"),
    ],
)
def test_empty_paths_and_missing_runs_are_named(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *command)
    assert code == 2
    assert_clean_error(err, needle)
    assert list(tmp_path.iterdir()) == []  # nothing was written into the current folder


@pytest.mark.parametrize(
    "argv, usage",
    [
        (["train", "realnvp", "--sampling_steps", "5"], "usage: genmodels train realnvp"),
        (["sample", "x.pt", "-o", "s.csv", "--epochs", "3"], "usage: genmodels sample"),
    ],
)
def test_an_option_the_command_lacks_is_reported_with_that_commands_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], usage: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(usage)
    assert f"error: unrecognized arguments: {' '.join(argv[-2:])}" in err


def test_an_abbreviated_option_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # "--epoch" must not silently mean "--epochs" (and train into the default outputs/).
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "realnvp", "--epoch", "5", "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--epoch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "typed, meant",
    [
        (["--batch-size", "64"], ["--batch_size"]),
        (["--epoch", "5", "--no_compile"], ["--epochs", "--no-compile"]),
        (["--n-samples=10"], ["--n_samples"]),
        (["--zzzz"], []),  # nothing close: no hint
    ],
)
def test_a_mistyped_option_names_the_closest_ones(
    capsys: pytest.CaptureFixture[str], typed: list[str], meant: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "ddpm", *typed])
    err = capsys.readouterr().err.splitlines()[-1]
    assert exit_info.value.code == 2
    hint = err.partition("did you mean ")[2].rstrip("?)").split(" or ")
    assert hint == (meant or [""])
