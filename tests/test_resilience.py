"""Resilience of training runs: kill-and-resume, Ctrl-C, atomic outputs, determinism, the non-finite
guard, a soak over random seeds and data units, and checkpoint loading of foreign or damaged files.

Every run is tiny (small models, a few epochs, a few hundred points) and writes only under pytest's
temporary directories; subprocesses run the specification's entry points from the repository root.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from genmodels.cli import main
from genmodels.config import config_from_dict, load_config, with_overrides
from genmodels.data import save_csv
from genmodels.errors import CheckpointError, TrainingError
from genmodels.fileio import folder_problem, write_json
from genmodels.models.realnvp import RealNVP
from genmodels.plots import figures as plotting
from genmodels.run import run_training
from genmodels.train.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    build_model,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from genmodels.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]

MODEL = {
    "realnvp": {"n_coupling_layers": 4, "hidden_units": 32},
    "ddpm": {"diffusion_steps": 20, "hidden_units": 32, "n_blocks": 2},
}
# n_eval below 10 skips the two-sample classifier tests, by far the costliest part of a tiny run.
SAMPLING = {"n_samples": 200, "n_eval": 5}
# Keys whose values are wall-clock times, which differ between any two runs.
TIMING_KEYS = {"seconds", "train_seconds", "sample_seconds"}
SCRIPTS = {"realnvp": "train_realnvp.py", "ddpm": "train_ddpm.py"}


# -- helpers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def repo_root_untouched():
    """No test writes into the repository: no outputs/ directory and no new output-like files at its root."""
    before = set(os.listdir(REPO))
    yield
    new = set(os.listdir(REPO)) - before
    suspicious = {
        name
        for name in new
        if name in {"outputs", "checkpoints", "metrics", "figures", "samples"}
        or Path(name).suffix in {".pt", ".csv", ".png", ".json", ".yaml", ".tmp"}
        or ".tmp" in name
    }
    assert not suspicious, f"tests left files in {REPO}: {sorted(suspicious)}"


@pytest.fixture
def quiet_logs():
    """Silence the runs' warnings (e.g. the skipped two-sample tests) in this process."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    yield
    logging.disable(previous)


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the scripts run with OMP_NUM_THREADS=1, so results agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mixture(n: int, seed: int) -> np.ndarray:
    """A two-component anisotropic Gaussian mixture in 2-D, ``(n, 2)`` float64."""
    rng = np.random.default_rng(seed)
    half = n // 2
    a = rng.normal(size=(half, 2)) * [1.0, 0.3] + [2.0, 0.0]
    b = rng.normal(size=(n - half, 2)) * [0.5, 1.0] - [2.0, 0.0]
    return rng.permutation(np.concatenate([a, b]))


def write_data(path: Path, values: np.ndarray) -> Path:
    save_csv(path, values, ("x", "y"))
    return path


def raw_config(model_type: str, data: Path, **training: Any) -> dict[str, Any]:
    train = {"epochs": 3, "batch_size": 64, "eval_every": 1, "checkpoint_every": 1, **training}
    return {
        "model": dict(MODEL[model_type]),
        "training": train,
        "data": {"path": str(data)},
        "sampling": dict(SAMPLING),
    }


def write_config(path: Path, model_type: str, **training: Any) -> Path:
    raw = raw_config(model_type, Path("unused.csv"), **training)
    del raw["data"]
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def run_config(model_type: str, data: Path, **training: Any):
    return config_from_dict(raw_config(model_type, data, **training), model_type)


def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing figures in in-process runs whose point is not the figures."""
    monkeypatch.setattr(plotting, "plot_panels", lambda *args, **kwargs: None)
    monkeypatch.setattr(plotting, "plot_loss", lambda *args, **kwargs: None)
    try:
        from genmodels.plots import report
    except ImportError:
        return
    if hasattr(report, "write_figures"):
        monkeypatch.setattr(report, "write_figures", lambda *args, **kwargs: {})


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def stop_leftover_runs():
    """A failing test must not leave its training subprocesses running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def _default_sigint() -> None:  # pragma: no cover - runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_script(model_type: str, *args: str | Path, log: Path) -> subprocess.Popen:
    """Start ``python train_<model>.py ARGS`` from the repository root; stdout and stderr go to files."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(
            [sys.executable, SCRIPTS[model_type], *map(str, args)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
            preexec_fn=_default_sigint,  # a SIGINT ignored by the parent shell must still reach the child
        )
    _STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> tuple[int, str, str]:
    code = proc.wait(timeout=timeout)
    return code, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


def wait_for_checkpoint(proc: subprocess.Popen, path: Path, epoch: int, timeout: float = 180) -> dict:
    """Poll until ``path`` holds a checkpoint of at least ``epoch`` completed epochs; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            payload = load_checkpoint(path)  # written atomically: never a half-written file
            if payload["trainer"]["epoch"] >= epoch:
                return payload
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) before epoch {epoch}"
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no checkpoint of epoch {epoch} at {path} within {timeout} s")


def all_tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from all_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from all_tensors(value)


def assert_state_close(a: Any, b: Any, where: str = "", atol: float = 1e-6) -> None:
    """Nested dicts, lists, tensors and numbers agree (tensors within ``atol``; NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=atol, rtol=0, equal_nan=True, msg=where)
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            if key not in TIMING_KEYS:
                assert_state_close(a[key], b[key], f"{where}.{key}", atol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_state_close(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol, (where, a, b)
    else:
        assert a == b, (where, a, b)


def read_samples(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def leftovers(directory: Path) -> list[str]:
    """Temporary files of interrupted atomic writes under ``directory``."""
    return sorted(str(p) for p in directory.rglob("*") if ".tmp" in p.name or p.name.startswith("."))


# -- 1. kill -9 mid-run, then --resume auto ----------------------------------------------------------


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_kill_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path,
    model_type: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    one_thread: None,
) -> None:
    """``kill -9`` of the script mid-run, then ``--resume auto``: the same weights, EMA, optimizer state,
    history, metrics and samples as a run that was never interrupted."""
    name = model_type
    epochs = 10
    data = write_data(tmp_path / "small.csv", mixture(600, seed=5))  # 540 training rows: 9 steps/epoch
    config = write_config(tmp_path / "c.yaml", model_type, checkpoint_every=1, eval_every=1)
    common = ["--config", config, "--data", data, "--epochs", epochs, "--n_samples", 200, "--quiet"]
    common = [str(a) for a in common]
    ref_out, out = tmp_path / "ref", tmp_path / "out"

    victim = start_script(model_type, *common, "--output_dir", out, log=tmp_path / "victim")
    last = out / "checkpoints" / f"{name}_last.pt"
    killed_at = wait_for_checkpoint(victim, last, epoch=2)["trainer"]["epoch"]
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.kill()  # SIGKILL: no handler, no cleanup
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "checkpoints" / f"{name}.pt").exists()
    resumed_from = load_checkpoint(last)["trainer"]["epoch"]
    assert killed_at <= resumed_from < epochs

    # The resumed and the uninterrupted runs go through the runner in this process (one thread, like the
    # script above), with the config the command line builds, and without drawing figures.
    no_plots(monkeypatch)
    caplog.set_level(logging.INFO, logger="genmodels")
    overrides = {"training.epochs": epochs, "data.path": str(data), "sampling.n_samples": 200}
    run = with_overrides(load_config(config, model_type), overrides)
    run_training(run, output_dir=out, device="cpu", progress=False, resume="auto")
    assert f"resumed from {last} at epoch {resumed_from}" in caplog.text
    run_training(run, output_dir=ref_out, device="cpu", progress=False)

    final, expected = (load_checkpoint(d / "checkpoints" / f"{name}.pt") for d in (out, ref_out))
    assert final["trainer"]["epoch"] == expected["trainer"]["epoch"] == epochs
    assert final["trainer"]["step"] == expected["trainer"]["step"] == epochs * 9
    assert_state_close(final["model"], expected["model"], "model")
    assert_state_close(final["trainer"]["ema"], expected["trainer"]["ema"], "ema")
    assert_state_close(final["trainer"]["optimizer"], expected["trainer"]["optimizer"], "optimizer")
    assert_state_close(final["trainer"]["scheduler"], expected["trainer"]["scheduler"], "scheduler")
    assert_state_close(final["trainer"]["rng"], expected["trainer"]["rng"], "rng")
    history, ref_history = final["trainer"]["history"], expected["trainer"]["history"]
    assert history["epoch"] == list(range(1, epochs + 1))
    assert_state_close(history, ref_history, "history")
    metrics, ref_metrics = (json.loads((d / "metrics" / f"{name}.json").read_text()) for d in (out, ref_out))
    assert_state_close(metrics, ref_metrics, "metrics")
    np.testing.assert_allclose(
        read_samples(out / "samples" / f"{name}.csv"),
        read_samples(ref_out / "samples" / f"{name}.csv"),
        atol=1e-6,
        rtol=0,
    )


# -- 2. Ctrl-C ---------------------------------------------------------------------------------------


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_130(tmp_path: Path, capsys, quiet_logs) -> None:
    data = write_data(tmp_path / "small.csv", mixture(600, seed=6))  # 9 steps/epoch
    config = write_config(tmp_path / "c.yaml", "realnvp", checkpoint_every=3, eval_every=2)
    out = tmp_path / "out"
    args = ["--config", config, "--data", data, "--n_samples", 200, "--output_dir", out, "--quiet"]
    proc = start_script("realnvp", *args, "--epochs", 100000, log=tmp_path / "run")
    last = out / "checkpoints" / "realnvp_last.pt"
    wait_for_checkpoint(proc, last, epoch=3)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, tmp_path / "run", timeout=120)
    assert code == 130, err
    assert "--resume auto" in err
    assert "Traceback" not in err

    payload = load_checkpoint(last, expected_type="realnvp")
    trainer = payload["trainer"]
    epoch = trainer["epoch"]
    assert f"interrupted after epoch {epoch};" in err  # the epoch saved is the one Ctrl-C cut short
    assert 3 <= epoch < 100000
    assert trainer["history"]["epoch"] == list(range(1, epoch + 1))
    assert trainer["step"] == epoch * 9  # whole epochs only
    assert all(bool(torch.isfinite(t).all()) for t in all_tensors(payload) if t.is_floating_point())
    assert not (out / "checkpoints" / "realnvp.pt").exists()
    assert not (out / "metrics").exists()

    capsys.readouterr()
    code = main(["train", "realnvp", *map(str, args), "--epochs", str(epoch + 2), "--resume", "auto"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((out / "metrics" / "realnvp.json").read_text())
    assert metrics["epochs"] == epoch + 2 and metrics["steps"] == (epoch + 2) * 9
    assert math.isfinite(metrics["test_nll"])


def test_ctrl_c_in_a_long_epoch_says_how_long_the_epoch_still_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first Ctrl-C finishes the epoch; when that takes a while, the warning says which step the
    epoch is at and about how long the rest takes (here 3 s a step, Ctrl-C at step 13 of 100)."""
    from genmodels.config import TrainingConfig
    from genmodels.train import trainer as training

    clock = {"steps": 0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: 3.0 * clock["steps"])
    model = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    loss = model.loss

    def counting_loss(batch: torch.Tensor) -> torch.Tensor:
        if clock["steps"] == 12:
            os.kill(os.getpid(), signal.SIGINT)
        clock["steps"] += 1
        return loss(batch)

    monkeypatch.setattr(model, "loss", counting_loss)
    trainer = Trainer(model, TrainingConfig(epochs=1, batch_size=1), progress=False)
    # as at a terminal, also where the tests run in a background job (which ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with caplog.at_level("WARNING", logger=training.log.name):
            trainer.fit(torch.randn(100, 2))  # the last epoch: it ends as it would have
    finally:
        signal.signal(signal.SIGINT, previous)
    assert trainer.epoch == 1 and clock["steps"] == 100
    warnings = [r.getMessage() for r in caplog.records if "Ctrl-C" in r.getMessage()]
    assert warnings == [
        "Ctrl-C: finishing this epoch (step 13 of 100, about 4 min left), then saving a resumable "
        "checkpoint (Ctrl-C again to stop now)"
    ]


def test_a_ctrl_c_during_the_epochs_exchange_of_stop_flags_stops_after_the_next_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under torchrun the processes agree at each epoch's end whether to stop; a Ctrl-C that lands
    during that exchange (after this process's flag was sent) is kept for the next epoch, not lost."""
    from genmodels.config import TrainingConfig
    from genmodels.train import distributed
    from genmodels.train import trainer as training

    exchanges = []

    def agree(losses: torch.Tensor, stop: bool) -> tuple[torch.Tensor, bool]:
        exchanges.append(stop)
        if len(exchanges) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives after ``stop`` was read: the others saw False
        return losses, stop

    monkeypatch.setattr(training.distributed, "agree", agree)
    assert distributed.agree is agree
    model = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    trainer = Trainer(model, TrainingConfig(epochs=10, batch_size=64), progress=False)
    saved = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit(torch.randn(256, 2), on_checkpoint=lambda tr: saved.append(tr.epoch))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exchanges == [False, False, True]
    assert trainer.epoch == 3 and saved == [3]


def test_an_ignored_ctrl_c_stays_ignored_during_training() -> None:
    """Under ``nohup`` (SIGINT ignored) training neither installs its Ctrl-C handler nor stops."""
    from genmodels.config import TrainingConfig

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
        trainer = Trainer(model, TrainingConfig(epochs=3, batch_size=64, eval_every=1), progress=False)

        def evaluate(_: torch.nn.Module) -> dict[str, float]:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after every epoch
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            return {}

        trainer.fit(torch.randn(256, 2), evaluate=evaluate)
        assert trainer.epoch == 3
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# -- 3. atomic outputs -------------------------------------------------------------------------------


def _tiny_checkpoint(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    config = config_from_dict(
        {"model": {"n_coupling_layers": 2, "n_hidden": 1, "hidden_units": 8}}, "realnvp"
    )
    save_checkpoint(path, config=config, model=model, dim=2, columns=("x", "y"))


def test_checkpoint_overwrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt" / "model.pt"
    _tiny_checkpoint(path, seed=0)
    _tiny_checkpoint(path, seed=1)  # over an existing file
    assert leftovers(tmp_path) == []
    old = path.read_bytes()
    load_checkpoint(path)

    real_save = torch.save

    def failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:  # half a file, then the disk fills up
            handle.truncate(len(old) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        _tiny_checkpoint(path, seed=2)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []
    assert os.listdir(path.parent) == ["model.pt"]
    load_checkpoint(path)


def test_json_overwrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics" / "m.json"
    write_json(path, {"a": 1.0})
    write_json(path, {"a": 2.0, "b": math.nan})
    assert json.loads(path.read_text()) == {"a": 2.0, "b": None}
    assert leftovers(tmp_path) == []
    old = path.read_bytes()

    # not serialisable: fails while dumping, before anything is written
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert path.read_bytes() == old

    # fails midway through writing the file
    real_write_text = Path.write_text

    def failing_write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"a": 3.0, "c": list(range(100))})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []
    assert os.listdir(path.parent) == ["m.json"]


def test_the_output_folder_probe_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert folder_problem(tmp_path / "a" / "b" / "c") is None
    assert os.listdir(tmp_path) == []  # the folders it made for the probe are gone again
    (tmp_path / "kept").mkdir()
    assert folder_problem(tmp_path / "kept") is None
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tempfile.TemporaryFile", full_disk)
    assert folder_problem(tmp_path / "new" / "deeper") == (
        f"files cannot be written into {tmp_path / 'new' / 'deeper'} (No space left on device)"
    )
    assert sorted(os.listdir(tmp_path)) == ["kept"]


def test_figure_overwrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    path = tmp_path / "figures" / "loss.png"
    history = {"epoch": [1, 2, 3], "train_nll": [3.0, 2.5, 2.2]}
    plotting.plot_loss(history, path, ylabel="nats", title="a")
    plotting.plot_loss({**history, "train_nll": [3.0, 2.0, 1.0]}, path, ylabel="nats", title="b")
    assert leftovers(tmp_path) == []
    old = path.read_bytes()
    assert old[:8] == b"\x89PNG\r\n\x1a\n"

    real_savefig = Figure.savefig

    def failing_savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        real_savefig(self, fname, *args, **kwargs)
        with open(fname, "r+b") as handle:
            handle.truncate(100)
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        plotting.plot_loss({**history, "train_nll": [1.0, 1.0, 1.0]}, path, ylabel="nats", title="c")
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []
    assert os.listdir(path.parent) == ["loss.png"]


# -- 4. determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_same_seed_same_run_other_seed_other_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_type: str, quiet_logs
) -> None:
    no_plots(monkeypatch)
    data = write_data(tmp_path / "d.csv", mixture(300, seed=7))
    out = tmp_path / "out"
    name = model_type

    def run(seed: int, target: Path) -> tuple[dict, bytes, dict]:
        result = run_training(
            run_config(model_type, data, seed=seed), output_dir=target, device="cpu", progress=False
        )
        history = load_checkpoint(target / "checkpoints" / f"{name}.pt")["trainer"]["history"]
        return history, (target / "samples" / f"{name}.csv").read_bytes(), result.metrics

    h1, s1, m1 = run(11, out)
    h2, s2, m2 = run(11, out)  # the same run again, over the first one's outputs
    assert leftovers(out) == []
    assert_state_close(h1, h2, "history", atol=0.0)
    assert s1 == s2
    assert_state_close(m1, m2, "metrics", atol=0.0)
    h3, s3, _ = run(12, tmp_path / "other")
    assert h3["loss"] != h1["loss"]
    assert s3 != s1


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_evaluation_does_not_change_the_training(tmp_path: Path, model_type: str, quiet_logs) -> None:
    """The held-out evaluation (random for DDPM) does not draw from the training's random stream: the
    same seed trains the same model whether it evaluates every epoch or only after the last one."""
    config = run_config(model_type, tmp_path / "unused.csv", epochs=3, checkpoint_every=0)

    def estimate(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if model_type == "ddpm":
                return model.nll_bound_estimate(x).mean()  # random timesteps
            return -model.log_prob(x).mean()

    train = torch.as_tensor(mixture(270, seed=13), dtype=torch.float32)
    held_out = torch.as_tensor(mixture(50, seed=14), dtype=torch.float32)
    models = []
    for eval_every in (1, 3):
        config = dataclasses.replace(
            config, training=dataclasses.replace(config.training, eval_every=eval_every)
        )
        torch.manual_seed(config.training.seed)
        model = build_model(config, 2)
        model.set_standardization(train.mean(0), train.std(0))
        trainer = Trainer(model, config.training, progress=False)
        trainer.fit(train, evaluate=lambda m: {"test_nll": float(estimate(m, held_out))})
        models.append((trainer.history, trainer.ema.state_dict()))
    (h1, w1), (h3, w3) = models
    assert h1["loss"] == h3["loss"]
    assert_state_close(w1, w3, "ema", atol=0.0)
    assert h1["test_nll"][-1] == h3["test_nll"][-1]
    assert math.isnan(h3["test_nll"][0]) and not math.isnan(h1["test_nll"][0])


# -- 5. the non-finite guard -------------------------------------------------------------------------


def test_nan_loss_stops_with_epoch_and_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_logs
) -> None:
    no_plots(monkeypatch)
    data = write_data(tmp_path / "d.csv", mixture(300, seed=8))  # 270 training rows: 5 steps/epoch
    out = tmp_path / "out"
    real_loss = RealNVP.loss
    calls = {"n": 0}

    def loss(self: RealNVP, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = real_loss(self, x)
        return value * math.nan if calls["n"] == 2 * 5 + 3 else value

    monkeypatch.setattr(RealNVP, "loss", loss)
    # every training row trained on (no validation rows), so the loss's calls are the steps
    config = run_config("realnvp", data, epochs=5, checkpoint_every=1, validation_fraction=0)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 3, step 3 of 5"):
        run_training(config, output_dir=out, device="cpu", progress=False)
    assert calls["n"] == 15  # the epoch is finished (without updates), then the error is raised
    assert not (out / "checkpoints" / "realnvp.pt").exists()
    assert not (out / "metrics").exists() and not (out / "samples").exists()
    payload = load_checkpoint(out / "checkpoints" / "realnvp_last.pt")
    assert payload["trainer"]["epoch"] == 2 and payload["trainer"]["step"] == 10
    assert all(bool(torch.isfinite(t).all()) for t in all_tensors(payload) if t.is_floating_point())
    model = model_from_checkpoint(payload)
    assert torch.isfinite(model.log_prob(torch.zeros(4, 2))).all()
    assert leftovers(out) == []


@pytest.mark.parametrize("skip_spikes", [10.0, 0.0])
def test_a_gradient_spike_is_skipped_and_training_goes_on(skip_spikes: float, caplog, capsys) -> None:
    """With ``skip_spikes`` 10, a step whose gradient norm is 10^4 times the others' changes no weight and
    no Adam state; it is counted in the history and on the progress bar, and the steps after it update
    again. With 0 (the default) it is taken."""
    from genmodels.config import TrainingConfig

    data = torch.as_tensor(mixture(256, seed=4), dtype=torch.float32)  # 4 steps of 64 per epoch
    config = TrainingConfig(epochs=28, batch_size=64, learning_rate=1e-2, skip_spikes=skip_spikes)
    spike_step = 26 * 4 + 2  # epoch 27, step 2: after the first 100 steps, which are never skipped
    torch.manual_seed(0)
    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    real_loss, weights = flow.loss, {}

    def loss(x: torch.Tensor) -> torch.Tensor:
        step = len(weights) + 1
        weights[step] = [p.detach().clone() for p in flow.parameters()]  # before this step's update
        return real_loss(x) * (1e4 if step == spike_step else 1.0)

    flow.loss = loss  # type: ignore[method-assign]
    trainer = Trainer(flow, config, progress=True)
    with caplog.at_level(logging.INFO, logger="genmodels"):
        trainer.fit(data)
    bar = capsys.readouterr().err
    assert "27/28" in bar and ("skipped=1" in bar) == bool(skip_spikes)  # the epoch that skipped
    summary = [r.getMessage() for r in caplog.records if "skip_spikes" in r.getMessage()]
    assert len(summary) == (1 if skip_spikes else 0) and all("1 of 112 steps" in line for line in summary)
    unchanged = [torch.equal(a, b) for a, b in zip(weights[spike_step], weights[spike_step + 1], strict=True)]
    moved = [torch.equal(a, b) for a, b in zip(weights[spike_step + 1], weights[spike_step + 2], strict=True)]
    adam_steps = {float(state["step"]) for state in trainer.optimizer.state.values()}
    if skip_spikes:
        assert all(unchanged) and not any(moved)
        assert trainer.history["skipped_steps"] == [0.0] * 26 + [1.0, 0.0] and trainer.skipped_steps == 1
        assert adam_steps == {111.0}
    else:
        assert not any(unchanged) and trainer.history["skipped_steps"] == [0.0] * 28
        assert adam_steps == {112.0}
    # the running mean of the gradient norms resumes with the rest of the state
    state = trainer.state_dict()
    assert state["skipped_steps"] == trainer.skipped_steps and 0 < state["grad_norm_mean"] < 1e3
    resumed = Trainer(flow, config, progress=False)
    resumed.load_state_dict(state)
    assert resumed.grad_norm_mean == state["grad_norm_mean"]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_non_finite_step_leaves_the_weights_of_the_last_finite_step(weight_decay: float) -> None:
    """The non-finite check waits for the epoch's end, but no update is applied from the bad step on:
    the model ends exactly where a run stopped just before that step ends, Adam's step count with it."""
    from genmodels.config import TrainingConfig

    data = torch.as_tensor(mixture(256, seed=4), dtype=torch.float32)  # 4 steps of 64 per epoch
    config = TrainingConfig(epochs=3, batch_size=64, learning_rate=1e-2, weight_decay=weight_decay)
    bad_step = 4 + 2  # epoch 2, step 2

    def run(poison: bool, stop_before: int | None = None) -> tuple[Trainer, int, Exception | None]:
        torch.manual_seed(0)
        flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
        real_loss = flow.loss
        calls = {"n": 0}

        def loss(x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] == stop_before:
                raise KeyboardInterrupt  # the reference run ends before this step
            value = real_loss(x)
            return value * math.nan if poison and calls["n"] == bad_step else value

        flow.loss = loss  # type: ignore[method-assign]
        trainer = Trainer(flow, config, progress=False)
        try:
            trainer.fit(data)
        except (TrainingError, KeyboardInterrupt) as error:
            return trainer, calls["n"], error
        return trainer, calls["n"], None

    poisoned, calls, error = run(poison=True)
    assert isinstance(error, TrainingError)
    assert str(error).startswith("non-finite loss at epoch 2, step 2 of 4")
    assert calls == 8  # the rest of epoch 2 ran, without updates
    reference, _, _ = run(poison=False, stop_before=bad_step)
    for name, got in poisoned.model.state_dict().items():
        assert torch.equal(got, reference.model.state_dict()[name]), name
    assert {float(state["step"]) for state in poisoned.optimizer.state.values()} == {bad_step - 1.0}
    assert not hasattr(poisoned.optimizer, "found_inf")
    # Unpoisoned, the same run goes on updating through the whole of epoch 2.
    clean, _, _ = run(poison=False, stop_before=9)
    assert {float(state["step"]) for state in clean.optimizer.state.values()} == {8.0}


def test_nan_loss_through_the_cli_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from genmodels.models.ddpm import DDPM

    data = write_data(tmp_path / "d.csv", mixture(300, seed=9))
    config = write_config(tmp_path / "c.yaml", "ddpm", epochs=3, checkpoint_every=1)
    real_loss = DDPM.loss
    calls = {"n": 0}

    def loss(self: DDPM, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = real_loss(self, x)
        return value + math.inf if calls["n"] == 5 + 2 else value

    monkeypatch.setattr(DDPM, "loss", loss)
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(
        ["train", "ddpm", "--config", str(config), "--data", str(data), "--output_dir", str(out), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: non-finite loss at epoch 2, step 2 of 5"), err
    assert not (out / "checkpoints" / "ddpm.pt").exists()
    assert load_checkpoint(out / "checkpoints" / "ddpm_last.pt")["trainer"]["epoch"] == 1


# -- 6. soak over seeds and units --------------------------------------------------------------------


def test_soak_random_seeds_scales_and_offsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_logs
) -> None:
    """20 short runs, alternating the models, on data ``z * s + o`` with random seeds, anisotropic scales
    s in [1e-3, 1e3] and offsets |o| <= 1e3. Each is compared with a run of the same seed on ``z``:
    both models standardise internally, so the reported NLL (bound) is in the data's units and shifts by
    exactly sum(log s), and the samples are the unit run's samples mapped by ``x -> x * s + o``, up to
    the float32 rounding of the data themselves."""
    no_plots(monkeypatch)
    rng = np.random.default_rng(2024)
    z = mixture(300, seed=10)
    base_path = write_data(tmp_path / "z.csv", z)
    keys = {"realnvp": ("train_nll", "test_nll"), "ddpm": ("test_nll_bound",)}
    for i in range(20):
        model_type = ("realnvp", "ddpm")[i % 2]
        seed = int(rng.integers(0, 2**31 - 1))
        scale = 10.0 ** rng.uniform(-3, 3, size=2)
        offset = rng.uniform(-1e3, 1e3, size=2)
        scaled_path = write_data(tmp_path / f"x{i}.csv", z * scale + offset)
        runs = []
        for path, target in ((base_path, tmp_path / f"base{i}"), (scaled_path, tmp_path / f"scaled{i}")):
            config = run_config(model_type, path, seed=seed, epochs=3, checkpoint_every=0)
            metrics = run_training(config, output_dir=target, device="cpu", progress=False).metrics
            history = load_checkpoint(target / "checkpoints" / f"{model_type}.pt")["trainer"]["history"]
            losses = history["loss"] + [v for k in keys[model_type] for v in history.get(k, [])[-1:]]
            assert all(math.isfinite(v) for v in losses), (i, model_type, scale, offset, history)
            samples = read_samples(target / "samples" / f"{model_type}.csv")
            assert samples.shape == (200, 2) and np.isfinite(samples).all()
            runs.append((metrics, samples))
        (base, base_samples), (scaled, scaled_samples) = runs
        # float32 resolution of the data, in units of their spread
        resolution = float(np.max(np.abs(offset) / scale)) * 2.0**-23
        where = (i, model_type, seed, scale, offset)
        for key in keys[model_type]:
            assert math.isfinite(scaled[key]), where
            shifted = scaled[key] - float(np.log(scale).sum())
            assert abs(shifted - base[key]) <= 1e-4 + resolution, (*where, key, shifted, base[key])
        mapped_back = (scaled_samples - offset) / scale
        assert np.abs(mapped_back - base_samples).max() <= 1e-3 + 10 * resolution, where


# -- 7. checkpoints ----------------------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, quiet_logs) -> Path:
    """A finished 2-epoch RealNVP run; returns its output directory."""
    no_plots(monkeypatch)
    root = tmp_path_factory.mktemp("trained")
    data = write_data(root / "d.csv", mixture(300, seed=11))
    run_training(run_config("realnvp", data, epochs=2), output_dir=root / "out", device="cpu", progress=False)
    monkeypatch.undo()
    return root / "out"


def test_checkpoint_from_a_gpu_loads_on_cpu_and_resumes(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_logs
) -> None:
    """A checkpoint whose storages are tagged ``cuda:0`` (as torch.save writes on a GPU) loads on CPU."""
    payload = torch.load(trained / "checkpoints" / "realnvp_last.pt", weights_only=True)
    foreign = tmp_path / "gpu.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(payload, foreign)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(foreign, weights_only=True)  # the simulation is faithful
    loaded = load_checkpoint(foreign, expected_type="realnvp")
    assert all(t.device.type == "cpu" for t in all_tensors(loaded))
    model = model_from_checkpoint(loaded)
    assert torch.isfinite(model.sample(5)).all()
    no_plots(monkeypatch)
    out = tmp_path / "out"
    config = loaded["config"]
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=3))
    result = run_training(
        config,
        output_dir=out,
        device="cpu",
        progress=False,
        resume=str(foreign),
    )
    assert result.metrics["epochs"] == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu_checkpoint_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_logs) -> None:
    no_plots(monkeypatch)
    data = write_data(tmp_path / "d.csv", mixture(300, seed=12))
    out = tmp_path / "out"
    config = run_config("ddpm", data, epochs=2)
    run_training(config, output_dir=out, device="cuda", progress=False)
    raw = torch.load(out / "checkpoints" / "ddpm.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in all_tensors(raw))  # written as CPU tensors
    assert "cuda" in raw["trainer"]["rng"]
    loaded = load_checkpoint(out / "checkpoints" / "ddpm.pt", map_location="cpu")
    assert all(t.device.type == "cpu" for t in all_tensors(loaded))
    assert torch.isfinite(model_from_checkpoint(loaded).sample(5)).all()
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=3))
    result = run_training(config, output_dir=out, device="cpu", progress=False, resume="auto")
    assert result.metrics["epochs"] == 3


def test_newer_format_version_is_rejected_with_both_versions(trained: Path, tmp_path: Path) -> None:
    payload = torch.load(trained / "checkpoints" / "realnvp.pt", weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(newer)
    message = str(error.value)
    assert f"version {FORMAT_VERSION + 1}" in message and f"version {FORMAT_VERSION})" in message
    assert str(newer) in message
    for bad in (None, "1", 1.0, -1, 0):
        odd = tmp_path / "odd.pt"
        torch.save({**payload, "format_version": bad}, odd)
        with pytest.raises(CheckpointError, match="format version") as error:
            load_checkpoint(odd)
        assert "newer than" not in str(error.value), (bad, str(error.value))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_files_that_are_not_checkpoints_are_rejected(trained: Path, tmp_path: Path) -> None:
    good = (trained / "checkpoints" / "realnvp.pt").read_bytes()
    cases: dict[str, bytes | None] = {
        "random.pt": np.random.default_rng(0).bytes(4096),
        "empty.pt": b"",
        "metrics.json": (trained / "metrics" / "realnvp.json").read_bytes(),
        "truncated.pt": good[: len(good) // 2],
        "pickle.pt": pickle.dumps({"format": FORMAT, "x": 1}),
        "object.pt": pickle.dumps(Path("x")),
        "samples.csv": b"x,y\n0.5,1.5\n",
        "zip.pt": None,
        "plain_dict.pt": None,
        "tensor.pt": None,
        "marker_only.pt": None,
        "bad_config.pt": None,
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "plain_dict.pt")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION}, tmp_path / "marker_only.pt")
    payload = torch.load(trained / "checkpoints" / "realnvp.pt", weights_only=True)
    torch.save({**payload, "config": "not a mapping"}, tmp_path / "bad_config.pt")
    # the marker and every key, but values of the wrong kind
    damaged = {
        "dim": "2",
        "columns": "xy",
        "model": [torch.ones(2)],
        "trainer": {"optimizer": {}},
        "test_data": [[0.0, 1.0]],
    }
    for key, value in damaged.items():
        torch.save({**payload, key: value}, tmp_path / f"damaged_{key}.pt")
    names = [*cases, *(f"damaged_{key}.pt" for key in damaged), "."]
    for name in names:
        path = tmp_path / name
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        assert str(path) in str(error.value), (name, str(error.value))
        if name.startswith("damaged_"):
            assert name[len("damaged_") : -3] in str(error.value)
        if name in ("random.pt", "empty.pt", "metrics.json", "truncated.pt", "samples.csv", "zip.pt"):
            assert "not a PyTorch checkpoint file" in str(error.value) and "truncated" in str(error.value)


def test_loading_always_uses_weights_only(
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quiet_logs,
) -> None:
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    load_checkpoint(trained / "checkpoints" / "realnvp.pt")
    target = tmp_path / "s.csv"
    assert main(["sample", str(trained / "checkpoints" / "realnvp.pt"), "-n", "7", "-o", str(target)]) == 0
    no_plots(monkeypatch)
    config = load_checkpoint(trained / "checkpoints" / "realnvp_last.pt")["config"]
    run_training(config, output_dir=trained, device="cpu", progress=False, resume="auto")
    assert len(calls) >= 4
    assert all(kwargs.get("weights_only") is True for kwargs in calls), calls
    assert all("map_location" in kwargs for kwargs in calls), calls


def test_a_spike_s_gradient_is_scaled_to_adaptive_clip_times_the_running_mean() -> None:
    """From step 100 on, the gradient a step applies has a norm of at most ``adaptive_clip`` times the
    running mean of the norms before it: a step with a 10^4-times loss applies exactly that (scaled, not
    skipped), an ordinary step its whole gradient, and the mean takes the spike capped at the threshold."""
    from genmodels.config import TrainingConfig

    data = torch.as_tensor(mixture(256, seed=4), dtype=torch.float32)  # 4 steps of 64 per epoch
    config = TrainingConfig(epochs=28, batch_size=64, learning_rate=1e-2, adaptive_clip=3.0)
    spike_step = 26 * 4 + 2
    torch.manual_seed(0)
    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    real_loss, seen = flow.loss, []
    trainer = Trainer(flow, config, progress=False)

    def loss(x: torch.Tensor) -> torch.Tensor:
        # p.grad still holds the gradient the previous step applied; grad_norm_mean is the mean before this step
        applied = math.sqrt(
            sum(float(p.grad.square().sum()) for p in flow.parameters() if p.grad is not None)
        )
        seen.append((applied, float(trainer.grad_norm_mean)))
        return real_loss(x) * (1e4 if len(seen) == spike_step else 1.0)

    flow.loss = loss  # type: ignore[method-assign]
    trainer.fit(data)
    applied, mean_before = seen[spike_step][0], seen[spike_step - 1][1]
    assert applied == pytest.approx(3.0 * mean_before, rel=1e-4)
    assert seen[spike_step][1] == pytest.approx(
        mean_before + 0.01 * (3.0 * mean_before - mean_before), rel=1e-4
    )
    # every later step: what it applied over the mean before it, at most 3 (seen[i]: step i's gradient)
    ratios = [seen[i][0] / seen[i - 1][1] for i in range(101, len(seen))]
    assert all(0 < ratio <= 3.0 * (1 + 1e-4) for ratio in ratios) and min(ratios) < 2.0
    assert trainer.skipped_steps == 0


def test_a_lasting_rise_of_the_gradient_norms_is_skipped_only_briefly() -> None:
    """The spike filter's running mean takes skipped norms capped at the threshold, so after a lasting
    100-fold rise of the gradient norms it accepts steps again within a few dozen steps (with factor 10,
    the mean grows 9% a step: about 27 skipped), instead of skipping every later step."""
    from genmodels.config import TrainingConfig

    config = TrainingConfig(skip_spikes=10.0, adaptive_clip=0.0)
    trainer = Trainer(RealNVP(2, n_coupling_layers=2), config, progress=False)
    trainer.grad_norm_mean = torch.tensor(0.0)
    norms = [0.1] * 20 + [1.0] * 130 + [100.0] * 200  # tenfold growth early on: not skipped
    skipped = []
    for trainer.step, norm in enumerate(norms):
        skipped.append(float(trainer._gradient_spike(torch.tensor(norm))))
    assert sum(skipped[:150]) == 0 and skipped[150] == 1.0  # the rise itself looks like a spike
    first_accepted = 150 + skipped[150:].index(0.0)
    assert 170 < first_accepted < 190 and sum(skipped[first_accepted:]) == 0
    assert float(trainer.grad_norm_mean) > 50  # the mean has followed the norms


def test_validation_rows_are_held_out_and_a_late_divergence_is_undone(caplog) -> None:
    """With ``validation_fraction`` 0.25, a quarter of the rows (the same draw for the same seed) never
    reaches a training step; steps that throw the model off in the last five epochs (gradient ascent)
    leave the last weights worse on those rows, and the weights kept are those of the evaluated epoch
    with the lowest validation loss, which they still have."""
    from genmodels.config import TrainingConfig

    data = torch.as_tensor(mixture(256, seed=4), dtype=torch.float32)
    config = TrainingConfig(epochs=12, batch_size=64, learning_rate=1e-2, ema_decay=0, eval_every=1,
                            validation_fraction=0.25, precision="float32")  # fmt: skip
    torch.manual_seed(0)
    flow = RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8)
    real_loss, seen = flow.loss, []

    def loss(x: torch.Tensor) -> torch.Tensor:
        if not flow.training:  # the validation loss
            return real_loss(x)
        seen.append(x.detach().clone())
        return real_loss(x) * (-1.0 if len(seen) > 7 * 3 else 1.0)  # epochs 8 to 12 ascend

    flow.loss = loss  # type: ignore[method-assign]
    trainer = Trainer(flow, config, progress=False)
    with caplog.at_level(logging.INFO, logger="genmodels"):
        trainer.fit(data)
    held = trainer._validation[0]
    assert held.shape == (64, 2)
    trained = torch.cat(seen[:3])  # epoch 1's three steps: every training row once
    assert trained.shape == (192, 2)
    assert torch.equal(torch.cat([trained, held]).unique(dim=0), data.unique(dim=0))
    assert not (held[:, None] == trained[None]).all(-1).any()
    again = Trainer(RealNVP(2, n_coupling_layers=2, n_hidden=1, hidden_units=8), config, progress=False)
    again._hold_out_validation(data, None)
    assert torch.equal(again._validation[0], held)
    curve = trainer.history["validation_loss"]
    best = int(np.argmin(curve))
    assert curve[-1] > curve[best] + 0.1 and trainer.best["epoch"] == best + 1 < 12
    with torch.no_grad():
        assert float(real_loss(held)) == pytest.approx(curve[best], rel=1e-6)
    assert any(f"kept the EMA weights of epoch {best + 1}" in r.getMessage() for r in caplog.records)
    # a resumed run knows the best weights so far
    resumed = Trainer(flow, config, progress=False)
    resumed.load_state_dict(trainer.state_dict())
    assert resumed.best["epoch"] == best + 1 and resumed.best["loss"] == curve[best]
