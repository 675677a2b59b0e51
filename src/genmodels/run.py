"""A whole training run: data -> model -> training -> checkpoint, samples, metrics and figures.

Output layout under ``output_dir``::

    checkpoints/<model>.pt        final checkpoint (written only when training completed)
    checkpoints/<model>_last.pt   latest resumable checkpoint (periodic, and on Ctrl-C)
    metrics/<model>.json          held-out metrics
    metrics/<model>_history.csv   per-epoch training log
    figures/<model>_results.png   the specification's three panels
    figures/<model>_loss.png      loss curves
    figures/<model>_*.png         the model's other figures (see genmodels.plots.report), index.html the page
    samples/<model>.csv           generated samples in the data's units
    configs/<model>.yaml          the effective config of the run
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from genmodels.config import RunConfig, config_to_dict
from genmodels.data import load_csv, train_test_split
from genmodels.errors import CheckpointError, ConfigError, DataError, TrainingError
from genmodels.evaluation.sampling import METRIC_UNITS, evaluate_samples, sample_model
from genmodels.fileio import folder_problem, path_in_the_way, write_json, write_text
from genmodels.models.schedule import schedule_warning
from genmodels.train.acceleration import compiled_network, resolve_device, worth_compiling
from genmodels.train.checkpoint import (
    architecture_differences,
    build_model,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from genmodels.train.trainer import Trainer

__all__ = ["RunResult", "run_training"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced: its metrics and the paths it wrote."""

    metrics: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


# 32-bit floats round a column to steps of spacing(max |value|); relative to the column's spread,
# a step above the first share is an error (the data would be visibly quantised), above the second a
# warning.
FLOAT32_STEP_ERROR = 1e-1
FLOAT32_STEP_WARNING = 1e-3


def _check_float32_range(values: np.ndarray, columns: tuple[str, ...], path: str) -> None:
    """The models compute in float32: each column's spread must be representable there, and not lost
    to rounding (a large offset with a small spread, e.g. 1e9 + N(0, 1), is constant in float32).

    Raises:
        DataError: a column outside float32's range, or rounded to steps of more than 10% of its spread.
    """
    info = np.finfo(np.float32)
    std = values.std(0)
    for name, s, m in zip(columns, std, np.abs(values).max(0), strict=True):
        if s < 1e3 * info.tiny or m > info.max / 1e3:
            raise DataError(
                f"column '{name}' of {path} has values of magnitude up to {m:.3g} with standard deviation "
                f"{s:.3g}: outside what 32-bit floats can standardise; rescale the column (e.g. to unit scale)"
            )
        step = float(np.spacing(np.float32(m)))
        if step > FLOAT32_STEP_WARNING * s:
            message = (
                f"column '{name}' of {path} has values of magnitude up to {m:.6g} but a standard deviation "
                f"of only {s:.3g}: 32-bit floats round it to steps of {step:.3g} ({step / s:.2%} of its "
                "spread)"
            )
            if step > FLOAT32_STEP_ERROR * s:
                raise DataError(f"{message}; subtract an offset first (e.g. the column's mean)")
            log.warning("%s; the models see it rounded", message)


FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".gif")


def _check_output_paths(out: Path, files: list[Path]) -> None:
    """Check before training that the run's output ``files`` can be written: no file where one of
    their folders goes, no folder where a file goes, and every folder creatable and writable. Otherwise a run would train, replace part of an
    earlier run's outputs and only then fail.

    Raises:
        ConfigError: naming ``--output_dir`` and the path in the way.
    """
    figures = out / "figures"
    if figures.is_dir():  # every figure of any format, not only the results and loss figures
        files = [*files, *(p for p in figures.iterdir() if p.suffix in FIGURE_SUFFIXES)]
    for file in files:
        blocker = path_in_the_way(file)
        if blocker == file:
            raise ConfigError(f"--output_dir {out}: {file} is a folder; the run writes a file there")
        if blocker is not None:  # a file or a broken link
            raise ConfigError(
                f"--output_dir {out}: {blocker} is a file; the run writes its outputs into a folder there"
            )
    for folder in dict.fromkeys(file.parent for file in files):
        problem = folder_problem(folder)
        if problem is not None:
            raise ConfigError(f"--output_dir {out}: {problem}")


def _history_csv(history: dict[str, list[float]]) -> str:
    keys = ["epoch"] + sorted(k for k in history if k != "epoch")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for row in zip(*(history[k] for k in keys), strict=True):
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else f"{v:.8g}" for v in row])
    return buffer.getvalue()


def _make_evaluate(test: torch.Tensor):
    if len(test) == 0:
        return None

    def evaluate(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return model.held_out_metrics(test)

    return evaluate


# Fewest training rows a run accepts after the split: as many as a data file must have.
MIN_TRAINING_ROWS = 4


def run_training(
    config: RunConfig,
    *,
    output_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    resume: str | None = None,
    fmt: str = "png",
    tensorboard: bool = False,
) -> RunResult:
    """Train ``config``'s model on its data and write every output; see the module docstring.

    Args:
        config: the effective run config.
        output_dir: directory for all outputs (created).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: show progress bars.
        resume: a checkpoint to continue from, or ``"auto"`` for ``checkpoints/<model>_last.pt`` where
            it exists (else a new run starts).
        fmt: figure format, "png", "svg" or "pdf" (see :func:`genmodels.plots.report.write_figures`).
        tensorboard: also log the training history to ``tensorboard/<model>`` (needs the
            ``tensorboard`` package).

    Raises:
        DataError, ConfigError, CheckpointError, TrainingError: problems the user can fix.
    """
    from genmodels.plots import arrays as visualize
    from genmodels.plots import report

    out = Path(output_dir)
    name = config.model_type
    dev = resolve_device(device)
    paths = {
        "checkpoint": out / "checkpoints" / f"{name}.pt",
        "last": out / "checkpoints" / f"{name}_last.pt",
        "metrics": out / "metrics" / f"{name}.json",
        "history": out / "metrics" / f"{name}_history.csv",
        "results": out / "figures" / f"{name}_results.png",
        "loss": out / "figures" / f"{name}_loss.png",
        "samples": out / "samples" / f"{name}.csv",
        "config": out / "configs" / f"{name}.yaml",
    }

    _check_output_paths(out, [*paths.values(), out / "index.html"])
    dataset = load_csv(config.data.path, drop_invalid=config.data.drop_invalid)
    train_np, test_np = train_test_split(
        dataset.values, test_fraction=config.data.test_fraction, seed=config.data.split_seed
    )
    dim = train_np.shape[1]
    if len(train_np) < MIN_TRAINING_ROWS:  # before the range check, which 1 row would fail as constant
        raise ConfigError(
            f"{config.data.path}: data.test_fraction {config.data.test_fraction:g} leaves "
            f"{len(train_np)} of its {len(dataset.values)} rows for training; at least {MIN_TRAINING_ROWS} are "
            "needed: lower data.test_fraction"
        )
    _check_float32_range(train_np, dataset.columns, config.data.path)
    train = torch.as_tensor(train_np, dtype=torch.float32, device=dev)
    test = torch.as_tensor(test_np, dtype=torch.float32, device=dev)

    if name == "ddpm":
        steps = config.model
        concern = schedule_warning(steps.diffusion_steps, steps.beta2_start, steps.beta2_end)
        if concern is not None:
            log.warning("model.beta2_start/beta2_end: %s", concern)
    torch.manual_seed(config.training.seed)
    model = build_model(config, dim)
    model.set_standardization(train.mean(0), train.std(0))
    model.to(dev)
    trainer = Trainer(model, config.training, progress=progress)

    if resume == "auto" and not (paths["last"].exists() or paths["last"].is_symlink()):
        # "auto" continues a run where there is one, so a job script may always pass it
        log.info(
            "--resume auto: no %s run to resume in %s (no %s); starting a new one", name, out, paths["last"]
        )
        resume = None
    if resume is not None:
        resume_path = paths["last"] if resume == "auto" else Path(resume)
        payload = load_checkpoint(resume_path, expected_type=name, map_location=dev)
        differences = architecture_differences(payload["config"], config)
        if differences or payload["dim"] != dim:
            if payload["dim"] != dim:
                differences.append(f"data dimension: {payload['dim']} (checkpoint) vs {dim} (data)")
            raise CheckpointError(f"cannot resume from {resume_path}: " + "; ".join(differences))
        mean, std = model.standardize.mean.clone(), model.standardize.std.clone()
        load_weights(model, payload["model"], str(resume_path))
        if not (
            torch.allclose(model.standardize.mean, mean, rtol=1e-5, atol=1e-6 * float(std.max()))
            and torch.allclose(model.standardize.std, std, rtol=1e-5)
        ):
            trained_on = payload.get("data") or {}
            where = f" ({trained_on['path']}, {trained_on['n_rows']} rows)" if "n_rows" in trained_on else ""
            raise CheckpointError(
                f"cannot resume from {resume_path}: it was trained on other data{where}; the training "
                f"split of {config.data.path} ({len(dataset.values)} rows, test_fraction "
                f"{config.data.test_fraction}, split_seed {config.data.split_seed}) has another mean or "
                "standard deviation"
            )
        if payload.get("trainer") is None:
            raise CheckpointError(f"{resume_path} holds no training state to resume from")
        trained = int(payload["trainer"]["epoch"])
        if trained > config.training.epochs:
            raise ConfigError(
                f"training.epochs (--epochs) is {config.training.epochs}, but {resume_path} has already "
                f"trained {trained} epochs; ask for at least {trained} to resume it"
            )
        try:
            trainer.load_state_dict(payload["trainer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:  # a damaged or hand-edited file
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CheckpointError(
                f"{resume_path} is a damaged checkpoint: its training state does not fit its model ({first[:300]})"
            ) from None
        stored, asked = payload["config"].training, config.training
        changed = trainer.adopt_optimizer_settings(stored)
        if changed:
            log.info(
                "resuming with %s: the learning rate continues at %.4g (learning_rate × lr_decay^%d)",
                ", ".join(changed),
                trainer.optimizer.param_groups[0]["lr"],
                trainer.epoch,
            )
        if stored.precision != asked.precision:
            log.warning(
                "the run continues in %s; its first %d epochs were trained in %s",
                asked.precision,
                int(payload["trainer"]["epoch"]),
                stored.precision,
            )
        log.info("resumed from %s at epoch %d", resume_path, trainer.epoch)
    elif paths["checkpoint"].exists() or paths["last"].exists():
        kept = ""
        if paths["last"].exists():
            # The earlier run's resumable state is set aside, not overwritten by this run's first
            # checkpoint: a run started into the wrong folder and stopped leaves it resumable.
            previous = paths["last"].with_name(f"{name}_last.previous.pt")
            paths["last"].replace(previous)
            kept = f"; its resumable checkpoint is kept as {previous} (--resume {previous} continues it)"
        log.info(
            "%s already holds a %s run; this new run replaces its outputs as it goes%s",
            out,
            name,
            kept or " (--resume auto would continue it instead)",
        )

    data_info = {
        "path": str(config.data.path),
        "n_rows": int(len(dataset.values)),
        "n_train": int(len(train_np)),
        "n_test": int(len(test_np)),
        "n_dropped": int(dataset.n_dropped),
    }

    def checkpoint(tr: Trainer, target: Path = paths["last"]) -> None:
        save_checkpoint(
            target,
            config=config,
            model=tr.model,
            dim=dim,
            columns=dataset.columns,
            trainer_state=tr.state_dict(),
            test_data=test,
            data_info=data_info,
        )

    board = report.TensorBoardLog(out / "tensorboard" / name) if tensorboard else None
    evaluate = _make_evaluate(test)
    if board is not None:
        evaluate = board.wrap(evaluate, trainer.history)
    trainer.fit(train, evaluate=evaluate, on_checkpoint=checkpoint)
    if board is not None:
        board.close(trainer.history)

    ema = trainer.ema.eval()
    sampling = config.sampling
    start = time.perf_counter()
    # The DDPM figures show the reverse process of the first samples, recorded on the way.
    recorder = visualize.record_reverse_process if name == "ddpm" else lambda _: contextlib.nullcontext()
    compiled = worth_compiling(
        sampling.compile, ema, sampling.n_samples, sampling.sampling_steps, sampling.precision
    )
    with compiled_network(ema, compiled), recorder(ema) as recording:
        samples = sample_model(
            ema,
            sampling.n_samples,
            seed=config.training.seed,
            chunk_size=sampling.chunk_size,
            sampling_steps=sampling.sampling_steps,
            eta=sampling.eta,
            precision=sampling.precision,
            ddim_spacing=sampling.ddim_spacing,
        )
    sample_seconds = time.perf_counter() - start
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples).all(1)).sum())
        raise TrainingError(
            f"{bad} of {len(samples)} generated samples are not finite; the trained model is unusable "
            f"(its state is in {paths['last']}); try a lower --lr or a smaller training.grad_clip"
        )

    metrics: dict[str, Any] = {
        "model": name,
        "data": str(config.data.path),
        "dim": dim,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "train_seconds": round(trainer.train_seconds, 3),
        "sample_seconds": round(sample_seconds, 3),
        "n_samples": len(samples),
    }
    with torch.no_grad():
        if name == "realnvp":
            metrics["train_nll"] = float(-torch.cat([ema.log_prob(b) for b in train.split(65536)]).mean())
            metrics["test_nll"] = float(-ema.log_prob(test).mean()) if len(test) else math.nan
            metrics["test_nll_per_dim"] = metrics["test_nll"] / dim
        else:
            metrics["test_nll_bound"] = float(ema.nll_bound(test).mean()) if len(test) else math.nan
            metrics["test_nll_bound_per_dim"] = metrics["test_nll_bound"] / dim
    n_eval = sampling.n_eval or len(test_np)
    metrics.update(evaluate_samples(samples[:n_eval], test_np, train_np, seed=config.data.split_seed))
    metrics["units"] = {key: unit for key, unit in METRIC_UNITS.items() if key in metrics}

    checkpoint(trainer, paths["checkpoint"])
    write_text(paths["config"], yaml.safe_dump(config_to_dict(config), sort_keys=False))
    write_text(paths["history"], _history_csv(trainer.history))
    write_json(paths["metrics"], metrics)
    from genmodels.data import save_csv

    save_csv(paths["samples"], samples, dataset.columns)
    figures = report.write_figures(
        ema,
        name,
        train_np,
        samples,
        trainer.history,
        out,
        fmt=fmt,
        metrics=metrics,
        columns=dataset.columns,
        data_name=config.data.path,
        reverse=recording.trajectory(samples) if recording is not None else None,
        sampling_steps=sampling.sampling_steps,
        seed=config.training.seed,
    )
    paths.update(figures)
    return RunResult(metrics=metrics, paths=paths)
