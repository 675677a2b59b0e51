"""Training under torchrun (2 CPU processes, gloo, one thread each) against one process.

The runs are tiny (a few hundred points, a few epochs); independent runs start together, as
subprocesses, so the file takes about as long as its longest chain of runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from genmodels.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# 540 training rows (RealNVP: all trained on, none held out for validation). RealNVP's batches of 99
# split into shards of 49 + 50 (the last, 45: 22 + 23).
# DDPM's batches of 112 share a timestep among 8 points; the shards of 56 are whole runs of 8, those
# of the last batch (92: 46 + 46, runs of 4) are not.
SMALL = {
    "realnvp": {
        "model": {"n_coupling_layers": 2, "hidden_units": 16},
        "training": {"batch_size": 99, "validation_fraction": 0},
    },
    "ddpm": {
        "model": {"diffusion_steps": 20, "hidden_units": 16, "n_blocks": 1},
        "training": {"batch_size": 112},
    },
}
TRAINING = {"epochs": 3, "eval_every": 1}
# 3 chunks of samples, so each process draws some; the C2ST is skipped (it costs most of a run).
SAMPLING = {"n_samples": 300, "n_eval": 9, "chunk_size": 128}  # n_eval < 10: no C2ST (time)


def setup(tmp_path: Path, model: str, **training: object) -> tuple[Path, Path]:
    """A data file and a tiny config for ``model`` in ``tmp_path``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    x[:, 1] += x[:, 0] ** 2
    data = tmp_path / "data.csv"
    np.savetxt(data, x, delimiter=",", header="x,y", comments="")
    config = tmp_path / f"{model}.yaml"
    raw = {
        **SMALL[model],
        "training": {**SMALL[model]["training"], **TRAINING, **training},
        "sampling": SAMPLING,
    }
    config.write_text(yaml.safe_dump(raw))
    return data, config


def start(*args: str | Path, processes: int = 0) -> subprocess.Popen[str]:
    """``python ARGS`` (``processes`` > 0: under torchrun), one thread per process; output in stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(REPO / "src"))
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [sys.executable, *(launcher if processes else []), *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def train(
    model: str, data: Path, config: Path, out: Path, *extra: str, processes: int = 0
) -> subprocess.Popen:
    args = ("train", model, "--config", config, "--data", data, "--output_dir", out, "--quiet", *extra)
    return start("-m", "genmodels", *args, processes=processes)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output
    return output


def history(out: Path, model: str) -> dict[str, list[float]]:
    with open(out / "metrics" / f"{model}_history.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def assert_same_training(one: Path, several: Path, model: str) -> None:
    """Per-epoch losses and held-out NLLs, and the final NLL, within 1e-4 relative; the same samples
    (whatever the number of processes) and the same files."""
    h1, h2 = history(one, model), history(several, model)
    test_key = "test_nll" if model == "realnvp" else "test_nll_bound"
    for key in ("epoch", "loss", "lr", test_key):
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-4, err_msg=key)
    m1, m2 = (json.loads((out / "metrics" / f"{model}.json").read_text()) for out in (one, several))
    assert (m2["epochs"], m2["steps"]) == (m1["epochs"], m1["steps"])
    assert math.isclose(m2[test_key], m1[test_key], rel_tol=1e-4)
    s1, s2 = (
        np.loadtxt(out / "samples" / f"{model}.csv", delimiter=",", skiprows=1) for out in (one, several)
    )
    np.testing.assert_allclose(s2, s1, atol=1e-4)
    assert files(several) == files(one)


@pytest.mark.parametrize("model", ["realnvp", "ddpm"])
def test_two_processes_train_as_one(tmp_path: Path, model: str) -> None:
    data, config = setup(tmp_path, model)
    one = train(model, data, config, tmp_path / "one")
    several = train(model, data, config, tmp_path / "two", processes=2)
    finish(one)
    output = finish(several)
    assert output.count("wrote ") == 5, output  # rank 0 alone prints
    assert_same_training(tmp_path / "one", tmp_path / "two", model)
    if model == "ddpm":
        return
    # Each run continues with the other number of processes, from its checkpoint, as one would.
    more = ("--resume", "auto", "--epochs", "4")
    one = train(model, data, config, tmp_path / "one", *more, processes=2)
    finish(train(model, data, config, tmp_path / "two", *more))
    finish(one)
    assert_same_training(tmp_path / "one", tmp_path / "two", model)
    assert history(tmp_path / "one", model)["epoch"] == [1, 2, 3, 4]


# Run as a torchrun worker: rank 1 dies (SIGKILL) or raises in its second epoch.
FAULTY_WORKER = """
import os, signal, sys
from genmodels.cli import main
from genmodels.train.trainer import Trainer

def fault(self, *args, **kwargs):
    if self.epoch == 2:
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("injected fault")
    return end_epoch(self, *args, **kwargs)

if os.environ["RANK"] == "1":
    end_epoch, Trainer._end_epoch = Trainer._end_epoch, fault
sys.exit(main(sys.argv[2:]))
"""


def test_a_worker_that_dies_or_raises_ends_the_job(tmp_path: Path) -> None:
    data, config = setup(tmp_path, "realnvp", epochs=10_000, checkpoint_every=1)
    worker = tmp_path / "worker.py"
    worker.write_text(FAULTY_WORKER)
    began = time.monotonic()
    jobs = {
        fault: start(
            worker,
            fault,
            "train",
            "realnvp",
            "--config",
            config,
            "--data",
            data,
            "--output_dir",
            tmp_path / fault,
            "--quiet",
            processes=2,
        )  # fmt: skip
        for fault in ("kill", "raise")
    }
    for fault, job in jobs.items():
        output = job.communicate(timeout=90)[0]
        assert job.returncode != 0, output
        assert "rank      : 1" in output, output  # torchrun's failure summary names the rank
        assert ("Signal 9" in output) if fault == "kill" else ("RuntimeError: injected fault" in output), (
            output
        )
        assert load_checkpoint(tmp_path / fault / "checkpoints" / "realnvp_last.pt")["trainer"]["epoch"] >= 1
    assert time.monotonic() - began < 90


def test_ctrl_c_under_torchrun_saves_then_stops(tmp_path: Path) -> None:
    data, config = setup(tmp_path, "realnvp", epochs=10_000, checkpoint_every=1)
    out = tmp_path / "out"
    job = train("realnvp", data, config, out, processes=2)
    last = out / "checkpoints" / "realnvp_last.pt"
    deadline = time.monotonic() + 60
    while not last.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    job.send_signal(signal.SIGINT)  # to torchrun, which passes it on to the workers
    output = job.communicate(timeout=60)[0]
    assert job.returncode != 0, output
    assert "a resumable checkpoint was saved" in output, output
    state = load_checkpoint(last)["trainer"]
    assert 1 <= state["epoch"] < 10_000
    assert state["history"]["epoch"] == list(range(1, state["epoch"] + 1))
