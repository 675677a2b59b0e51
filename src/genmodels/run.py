"""A whole training run: prepare the data; build the model (or resume a run); fit, sample and score it;
write :data:`OUTPUTS` (``<model>.pt`` once training completed, ``<model>_last.pt`` periodically and on
Ctrl-C). Under torchrun every process trains and draws a share of the samples; rank 0 alone writes."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from genmodels.config import RunConfig, config_to_dict
from genmodels.data import load_csv, save_csv, train_test_split
from genmodels.errors import CheckpointError, ConfigError, DataError, TrainingError
from genmodels.evaluation.sampling import draw_labels, sample_model
from genmodels.fileio import folder_problem, path_in_the_way, write_json, write_text
from genmodels.models import ModelSpec, get_spec
from genmodels.train import checkpoint as ckpt
from genmodels.train import distributed
from genmodels.train.acceleration import compiled_network, resolve_device, sampling_plan
from genmodels.train.trainer import Trainer, format_duration

__all__ = ["RunResult", "run_training", "resume_path"]

log = logging.getLogger(__name__)

# The files of a run under its output folder ({} is the model's name).
OUTPUTS = {
    "checkpoint": "checkpoints/{}.pt", "last": "checkpoints/{}_last.pt", "metrics": "metrics/{}.json",
    "history": "metrics/{}_history.csv", "results": "figures/{}_results.png", "loss": "figures/{}_loss.png",
    "samples": "samples/{}.csv", "config": "configs/{}.yaml",
}  # fmt: skip
FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".gif")
MIN_TRAINING_ROWS = 4
# float32 rounding step of a column, as a share of its spread, above which it is an error / a warning
FLOAT32_STEP_ERROR = 1e-1
FLOAT32_STEP_WARNING = 1e-3


@dataclasses.dataclass
class RunResult:
    """What a finished run produced: its metrics and the paths it wrote."""

    metrics: dict[str, Any]
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Data:
    """A run's data split: float64 arrays in the data's units, and float32 tensors on the device."""

    columns: tuple[str, ...]
    train_np: np.ndarray
    test_np: np.ndarray
    train: torch.Tensor
    test: torch.Tensor
    info: dict[str, Any]  # path, n_rows, n_train, n_test, n_dropped (stored in checkpoints)
    # With data.condition: each split's label indices (N,) int64 arrays and tensors, into label_names.
    train_labels_np: np.ndarray | None = None
    test_labels_np: np.ndarray | None = None
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    label_names: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return self.train_np.shape[1]

    @property
    def proportions(self) -> np.ndarray:
        """Each label's share of the training split ``(K,)``."""
        return np.bincount(self.train_labels_np, minlength=len(self.label_names)) / len(self.train_labels_np)

    def label_info(self, column: str | None) -> dict[str, Any] | None:
        """What a checkpoint stores of the condition (None without one)."""
        if column is None:
            return None
        return {"column": column, "names": list(self.label_names), "proportions": self.proportions.tolist(),
                "test_labels": self.test_labels.cpu()}  # fmt: skip


def run_training(config: RunConfig, *, output_dir: str | Path, device: str = "auto", progress: bool = True,
                 resume: str | None = None, fmt: str = "png", tensorboard: bool = False,
                 show: Callable[[RunConfig], None] | None = None) -> RunResult:  # fmt: skip
    """Train ``config``'s model and write every output; ``resume``: a checkpoint, or ``"auto"`` for
    ``checkpoints/<model>_last.pt`` where it exists; ``show``, if given, receives the effective config once
    the data are read (in the main process). Raises DataError, ConfigError, CheckpointError, TrainingError."""
    out, name, main = Path(output_dir), config.model_type, distributed.is_main()
    paths = {key: out / pattern.format(name) for key, pattern in OUTPUTS.items()}
    ended = {"start": time.perf_counter()}  # when each stage ended
    if main:
        _check_output_paths(out, [*paths.values(), out / "index.html"])
    data = _prepare_data(config, resolve_device(device))
    if data.label_names:  # the model's label count comes from the data
        model = dataclasses.replace(config.model, n_labels=len(data.label_names))
        config = dataclasses.replace(config, model=model)
    if main:
        if show is not None:
            show(config)
        _warn_short_run(config, len(data.train))
    trainer = _build_or_resume(config, data, paths["last"], resume, progress and main)
    ended["data and model"] = time.perf_counter()
    _fit(trainer, config, data, paths["last"], out / "tensorboard" / name if tensorboard else None)
    ended["training"] = time.perf_counter()
    if main:  # the stages after the progress bar, so a long one is not silent
        log.info("drawing %s samples", f"{config.sampling.n_samples:,}")
    samples, labels, seconds, reverse = _sample(trainer.ema.eval(), config, paths["last"], progress and main)
    ended["sampling"] = time.perf_counter()
    if not main:
        return RunResult(metrics={}, paths=paths)
    log.info("scoring: held-out likelihood, C2ST against the held-out points, tails")
    metrics = _score(trainer, config, data, (samples, labels), seconds)
    ended["scoring"] = time.perf_counter()
    paths.update(_write_outputs(out, paths, trainer, config, data, (samples, labels, metrics, reverse), fmt))
    ended["outputs"] = time.perf_counter()
    log.info("%s run done in %s", name, _durations(ended))
    return RunResult(metrics=metrics, paths=paths)


def resume_path(resume: str | Path | None, last: Path, model_type: str) -> str | Path | None:
    """The checkpoint ``--resume`` names: ``"auto"`` is ``last``, or None (a new run) where it is missing."""
    if resume != "auto":
        return resume
    if last.exists() or last.is_symlink():
        return last
    # A job script may always pass --resume auto: its first run starts afresh.
    log.warning("--resume auto: no %s run to resume in %s (no %s); starting a new one", model_type,
                last.parent.parent, last)  # fmt: skip
    return None


def _durations(ended: dict[str, float]) -> str:
    """``TOTAL (STAGE TIME, ...)`` from the clock times at which each stage ended, after ``start``."""
    times = list(ended.values())
    parts = [f"{stage} {format_duration(times[k + 1] - times[k])}" for k, stage in enumerate(list(ended)[1:])]
    return f"{format_duration(times[-1] - times[0])} ({', '.join(parts)})"


def _warn_short_run(config: RunConfig, n_train: int) -> None:
    """Warn where the run takes under a third of the optimisation steps its model needs."""
    spec, training = get_spec(config.model_type), config.training
    per_epoch = math.ceil(n_train / max(min(training.batch_size, n_train), 1))
    if 3 * training.epochs * per_epoch < spec.recommended_steps:
        log.warning(
            "training.epochs (--epochs) %d makes %d optimisation steps (%d per epoch: %d training points, "
            "batch size %d); %s needs about %d for good samples: use --epochs %d or more (docs/usage.md, "
            "'Choosing epochs')", training.epochs, training.epochs * per_epoch, per_epoch, n_train,
            training.batch_size, spec.title, spec.recommended_steps, math.ceil(spec.recommended_steps / per_epoch),
        )  # fmt: skip


def _check_output_paths(out: Path, files: list[Path]) -> None:
    """Before training, a ConfigError naming the path in the way of any output ``file``."""
    if (out / "figures").is_dir():  # every figure of any format, not only the results and loss figures
        files = [*files, *(p for p in (out / "figures").iterdir() if p.suffix in FIGURE_SUFFIXES)]
    for file in files:
        if (blocker := path_in_the_way(file)) == file:
            raise ConfigError(f"--output_dir {out}: {file} is a folder; the run writes a file there")
        if blocker is not None:  # a file or a broken link
            raise ConfigError(f"--output_dir {out}: {blocker} is a file; the run writes its outputs into a "
                              "folder there")  # fmt: skip
    for folder in dict.fromkeys(file.parent for file in files):
        if (problem := folder_problem(folder)) is not None:
            raise ConfigError(f"--output_dir {out}: {problem}")


def _prepare_data(config: RunConfig, device: torch.device) -> _Data:
    """Read the CSV and split it; check that float32 holds the training split's spread."""
    settings = config.data
    dataset = load_csv(settings.path, drop_invalid=settings.drop_invalid, condition=settings.condition)
    split = functools.partial(train_test_split, test_fraction=settings.test_fraction,
                              seed=settings.split_seed)  # fmt: skip
    (train, test), n_rows = split(dataset.values), len(dataset.values)
    if len(train) < MIN_TRAINING_ROWS:  # before the range check, which 1 row would fail as constant
        raise ConfigError(f"{settings.path}: data.test_fraction {settings.test_fraction:g} leaves {len(train)} "
                          f"of its {n_rows} rows for training; at least {MIN_TRAINING_ROWS} are needed: "
                          "lower data.test_fraction")  # fmt: skip
    _check_float32_range(train, dataset.columns, settings.path)
    info = {"path": str(settings.path), "n_rows": n_rows, "n_train": len(train), "n_test": len(test),
            "n_dropped": int(dataset.n_dropped)}  # fmt: skip
    as_tensor = functools.partial(torch.as_tensor, dtype=torch.float32, device=device)
    data = _Data(dataset.columns, train, test, as_tensor(train), as_tensor(test), info)
    if dataset.labels is None:
        return data
    train_labels, test_labels = split(dataset.labels)
    if absent := [name for k, name in enumerate(dataset.label_names) if not (train_labels == k).any()]:
        raise DataError(f"{settings.path}: label {absent[0]!r} of column {settings.condition!r} has no row in the "
                        "training split; give each label more rows or lower data.test_fraction")  # fmt: skip
    as_labels = functools.partial(torch.as_tensor, dtype=torch.long, device=device)
    return dataclasses.replace(data, train_labels_np=train_labels, test_labels_np=test_labels,
                               train_labels=as_labels(train_labels), test_labels=as_labels(test_labels),
                               label_names=dataset.label_names)  # fmt: skip


def _check_float32_range(values: np.ndarray, columns: tuple[str, ...], path: str) -> None:
    """A DataError for a column whose spread float32 cannot hold or rounds away (e.g. 1e9 + N(0, 1))."""
    info = np.finfo(np.float32)
    for name, s, m in zip(columns, values.std(0), np.abs(values).max(0), strict=True):
        if s < 1e3 * info.tiny or m > info.max / 1e3:
            raise DataError(f"column '{name}' of {path} has values of magnitude up to {m:.3g} with standard "
                            f"deviation {s:.3g}: outside what 32-bit floats can standardise; rescale the column "
                            "(e.g. to unit scale)")  # fmt: skip
        if (step := float(np.spacing(np.float32(m)))) > FLOAT32_STEP_WARNING * s:
            message = (f"column '{name}' of {path} has values of magnitude up to {m:.6g} but a standard "
                       f"deviation of only {s:.3g}: 32-bit floats round it to steps of {step:.3g} "
                       f"({step / s:.2%} of its spread)")  # fmt: skip
            if step > FLOAT32_STEP_ERROR * s:
                raise DataError(f"{message}; subtract an offset first (e.g. the column's mean)")
            log.warning("%s; the models see it rounded", message)


def _build_or_resume(config: RunConfig, data: _Data, last: Path, resume: str | Path | None,
                     progress: bool) -> Trainer:  # fmt: skip
    """The model, standardised on the training split, and its trainer: new, or resumed."""
    for concern in getattr(config.model, "concerns", list)():  # valid settings that deserve a warning
        log.warning("%s", concern)
    torch.manual_seed(config.training.seed)
    model = ckpt.build_model(config, data.dim)
    model.set_standardization(data.train.mean(0), data.train.std(0))
    if data.label_names:
        model.label_proportions.copy_(torch.as_tensor(data.proportions))
    trainer = Trainer(model.to(data.train.device), config.training, progress=progress)
    if (path := resume_path(resume, last, config.model_type)) is not None:
        _resume(trainer, Path(path), config, data)
    elif distributed.is_main():
        _set_aside_earlier_run(last, config.model_type)
    return trainer


def _set_aside_earlier_run(last: Path, name: str) -> None:
    """Keep an earlier run's resumable checkpoint as ``<model>_last.previous.pt``, and say so."""
    if not (last.with_name(f"{name}.pt").exists() or last.exists()):
        return
    kept = " (--resume auto would continue it instead)"
    if last.exists():
        last.replace(previous := last.with_name(f"{name}_last.previous.pt"))
        kept = f"; its resumable checkpoint is kept as {previous} (--resume {previous} continues it)"
    log.info("%s already holds a %s run; this new run replaces its outputs as it goes%s", last.parent.parent,
             name, kept)  # fmt: skip


def _resume(trainer: Trainer, path: Path, config: RunConfig, data: _Data) -> None:
    """Restore the weights, optimizer, EMA, epoch, history and RNG of the checkpoint at ``path``."""
    payload = ckpt.load_checkpoint(path, expected_type=config.model_type, map_location=data.train.device)
    differences = ckpt.architecture_differences(payload["config"], config)
    if payload["dim"] != data.dim:
        differences.append(f"data dimension: {payload['dim']} (checkpoint) vs {data.dim} (data)")
    if differences:
        raise CheckpointError(f"cannot resume from {path}: " + "; ".join(differences))
    _load_weights_of_the_same_data(trainer.model, payload, path, config, data)
    if (state := payload.get("trainer")) is None:
        raise CheckpointError(f"{path} holds no training state to resume from")
    if state["epoch"] > config.training.epochs:
        raise ConfigError(f"training.epochs (--epochs) is {config.training.epochs}, but {path} has already trained "
                          f"{state['epoch']} epochs; ask for at least {state['epoch']} to resume it")  # fmt: skip
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:  # a damaged or hand-edited file
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path} is a damaged checkpoint: its training state does not fit its model "
                              f"({first[:300]})") from None  # fmt: skip
    stored = payload["config"].training
    if changed := trainer.adopt_optimizer_settings(stored):
        log.info("resuming with %s: the learning rate continues at %.4g (learning_rate × lr_decay^%d)",
                 ", ".join(changed), trainer.optimizer.param_groups[0]["lr"], trainer.epoch)  # fmt: skip
    if stored.precision != config.training.precision:
        log.warning("the run continues in %s; its first %d epochs were trained in %s",
                    config.training.precision, trainer.epoch, stored.precision)  # fmt: skip
    log.info("resumed from %s at epoch %d", path, trainer.epoch)


def _load_weights_of_the_same_data(model: nn.Module, payload: dict[str, Any], path: Path, config: RunConfig,
                                   data: _Data) -> None:  # fmt: skip
    """Load the checkpoint's weights; a CheckpointError where it was standardised on other data."""
    mean, std = model.standardize.mean.clone(), model.standardize.std.clone()
    ckpt.load_weights(model, payload["model"], str(path))
    same_mean = torch.allclose(model.standardize.mean, mean, rtol=1e-5, atol=1e-6 * float(std.max()))
    if same_mean and torch.allclose(model.standardize.std, std, rtol=1e-5):
        return
    trained_on = payload.get("data") or {}
    where = f" ({trained_on['path']}, {trained_on['n_rows']} rows)" if "n_rows" in trained_on else ""
    raise CheckpointError(f"cannot resume from {path}: it was trained on other data{where}; the training split "
                          f"of {config.data.path} ({data.info['n_rows']} rows, test_fraction "
                          f"{config.data.test_fraction}, split_seed {config.data.split_seed}) has another mean or "
                          "standard deviation")  # fmt: skip


def _save(trainer: Trainer, config: RunConfig, data: _Data, target: Path) -> None:
    ckpt.save_checkpoint(target, config=config, model=trainer.model, dim=data.dim, columns=data.columns,
                         trainer_state=trainer.state_dict(), test_data=data.test, data_info=data.info,
                         labels=data.label_info(config.data.condition))  # fmt: skip


def _fit(trainer: Trainer, config: RunConfig, data: _Data, last: Path, tensorboard: Path | None) -> None:
    """Train to ``training.epochs``, evaluating on the held-out split and checkpointing to ``last``."""
    from genmodels.plots import report

    def held_out(model: nn.Module) -> dict[str, float]:
        labels = [] if data.test_labels is None else [data.test_labels]
        with torch.no_grad():
            return model.held_out_metrics(data.test, *labels)

    if not distributed.is_main():  # rank 0 evaluates and writes
        trainer.fit(data.train)
        return
    evaluate = held_out if len(data.test) else None
    board = report.TensorBoardLog(tensorboard) if tensorboard is not None else None
    evaluate = evaluate if board is None else board.wrap(evaluate, trainer.history)
    trainer.fit(data.train, labels=data.train_labels, evaluate=evaluate,
                on_checkpoint=lambda tr: _save(tr, config, data, last),
                then_seconds=_sampling_seconds(trainer.ema, config))  # fmt: skip
    if board is not None:
        board.close(trainer.history)


def _sampling_seconds(model: nn.Module, config: RunConfig) -> float:
    """The run's sampling seconds: one chunk timed through 8 reverse steps (a flow: one pass), scaled up."""
    spec, sampling = get_spec(config.model_type), config.sampling
    steps = sampling.sampling_steps or getattr(model, "diffusion_steps", 1)
    probe, points = min(8, steps), min(sampling.chunk_size, sampling.n_samples)
    options = {keyword: probe if key == "sampling_steps" else getattr(sampling, key)
               for keyword, key in spec.sample_options.items()}  # fmt: skip
    device, labels = next(model.parameters()).device, draw_labels(model, points, 0)
    if labels is not None:
        options["label"] = torch.as_tensor(labels, device=device)
    training = model.training
    with torch.random.fork_rng(devices=[]), torch.inference_mode():  # the run's random streams stay
        start = time.perf_counter()
        model.eval().sample(points, generator=torch.Generator(device).manual_seed(0), **options)
        seconds = time.perf_counter() - start
    model.train(training)
    return seconds * steps / probe * sampling.n_samples / points


def _sample(
    model: nn.Module, config: RunConfig, last: Path, progress: bool = False
) -> tuple[np.ndarray, Any, float, Any]:
    """The samples (data units), their labels (or None), the seconds they took, the reverse process (or None)."""
    from genmodels.plots.arrays import record_reverse_process

    spec, sampling, seed = get_spec(config.model_type), config.sampling, config.training.seed
    options = {key: getattr(sampling, key) for key in spec.sample_options.values()}
    recorder = (record_reverse_process if "reverse_process" in spec.figures
                else lambda _: contextlib.nullcontext())  # fmt: skip
    compiled, precision = sampling_plan(sampling.compile, sampling.precision, model, sampling.n_samples,
                                        sampling.sampling_steps)  # fmt: skip
    start = time.perf_counter()
    labels = draw_labels(model, sampling.n_samples, seed)
    with compiled_network(model, compiled), recorder(model) as recording:
        samples = sample_model(model, sampling.n_samples, seed=seed, chunk_size=sampling.chunk_size,
                               precision=precision, label=labels, progress=progress, **options)  # fmt: skip
    seconds = time.perf_counter() - start
    if not np.isfinite(samples).all():
        raise TrainingError(f"{int((~np.isfinite(samples).all(1)).sum())} of {len(samples)} generated samples are "
                            f"not finite; the trained model is unusable (its state is in {last}); try a lower --lr "
                            "or a smaller training.grad_clip")  # fmt: skip
    return samples, labels, seconds, recording.trajectory(samples) if recording is not None else None


def _score(trainer: Trainer, config: RunConfig, data: _Data, drawn: tuple, seconds: float) -> dict:
    """The run's metrics and their units; a conditional model's also per label and the labels' entropy."""
    from genmodels.evaluation.sampling import METRIC_UNITS, evaluate_samples, per_label_scores

    samples, labels = drawn
    metrics: dict[str, Any] = {"model": config.model_type, "data": str(config.data.path), "dim": data.dim,
                               "epochs": trainer.epoch, "steps": trainer.step,
                               "train_seconds": round(trainer.train_seconds, 3),
                               "sample_seconds": round(seconds, 3), "n_samples": len(samples)}  # fmt: skip
    metrics.update(_likelihood_metrics(trainer.ema, get_spec(config.model_type), data))
    n_eval, seed = config.sampling.n_eval or len(data.test_np), config.data.split_seed
    metrics.update(evaluate_samples(samples, data.test_np, data.train_np, seed=seed, n_eval=n_eval))
    if labels is not None:
        per_label = per_label_scores((samples, labels), (data.test_np, data.test_labels_np),
                                     (data.train_np, data.train_labels_np), data.label_names, seed=seed)  # fmt: skip
        for name, nll in metrics.pop("per_label_nll").items():
            per_label[name].update(nll)
        p = data.proportions[data.proportions > 0]
        metrics.update(labels=per_label, label_entropy=float(-(p * np.log(p)).sum()))
    metrics["units"] = {key: unit for key, unit in METRIC_UNITS.items() if key in metrics}
    return metrics


@torch.no_grad()
def _likelihood_metrics(model: nn.Module, spec: ModelSpec, data: _Data) -> dict[str, float]:
    """``spec``'s first likelihood in nats (per point, per dimension): ``test_nll`` or ``test_nll_<name>``."""
    name, nll = next(iter(spec.likelihoods.items()))

    def per_point(x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        parts = zip(x.split(65536), *([] if labels is None else [labels.split(65536)]), strict=True)
        return torch.cat([nll(model, p, None, *y) for p, *y in parts] or [x[:0, 0]])

    def mean(values: torch.Tensor) -> float:
        return float(values.mean()) if len(values) else math.nan

    exact = name == "exact"
    key = "test_nll" if exact else f"test_nll_{name}"
    out: dict[str, Any] = {"train_nll": mean(per_point(data.train, data.train_labels))} if exact else {}
    test = per_point(data.test, data.test_labels)
    out[key] = mean(test)
    out[f"{key}_per_dim"] = out[key] / data.dim
    if data.label_names:  # the NLL above is given the labels
        out["per_label_nll"] = {label: {key: mean(test[data.test_labels == k])}
                                for k, label in enumerate(data.label_names)}  # fmt: skip
        if exact:  # and the model's marginal p(x) = sum_y π_y p(x | y) on the same points
            out["test_nll_marginal"] = mean(per_point(data.test, None))
    return out


def _write_outputs(out: Path, paths: dict[str, Path], trainer: Trainer, config: RunConfig, data: _Data,
                   results: tuple, fmt: str) -> dict[str, Path]:  # fmt: skip
    """Write every output of ``results`` (samples, labels, metrics, reverse process); returns the figures."""
    from genmodels.plots import report

    samples, labels, metrics, reverse = results
    _save(trainer, config, data, paths["checkpoint"])
    write_text(paths["config"], yaml.safe_dump(config_to_dict(config), sort_keys=False))
    write_text(paths["history"], _history_csv(trainer.history))
    write_json(paths["metrics"], metrics)
    names = None if labels is None else np.asarray(data.label_names)[labels]
    save_csv(paths["samples"], samples, data.columns, names)
    return report.write_figures(trainer.ema, config.model_type, data.train_np, samples, trainer.history, out,
                                fmt=fmt, metrics=metrics, columns=data.columns, data_name=config.data.path,
                                reverse=reverse, sampling_steps=config.sampling.sampling_steps,
                                seed=config.training.seed, labels=None if labels is None else (data.label_names, labels),
                                real_labels=data.train_labels_np)  # fmt: skip


def _history_csv(history: dict[str, list[float]]) -> str:
    """The per-epoch history as CSV: ``epoch`` first, then the other keys sorted; NaN as empty cells."""
    keys = ["epoch"] + sorted(k for k in history if k != "epoch")
    rows = [["" if isinstance(v, float) and math.isnan(v) else f"{v:.8g}" for v in row]
            for row in zip(*(history[k] for k in keys), strict=True)]  # fmt: skip
    return "".join(",".join(row) + "\n" for row in [keys, *rows])
