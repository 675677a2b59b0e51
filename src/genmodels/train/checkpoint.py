"""One checkpoint format for every model: a dict of tensors and plain values (see :func:`save_checkpoint`)
that ``torch.load(weights_only=True)`` reads; the data's standardisation lives in the model's buffers."""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from typing import Any

import torch
from torch import nn

from genmodels import __version__
from genmodels.config import RunConfig, config_from_dict, config_to_dict
from genmodels.errors import CheckpointError, ConfigError
from genmodels.fileio import PathLike, atomic_path
from genmodels.models import get_spec
from genmodels.models.resources import memory_problem

__all__ = ["FORMAT", "FORMAT_VERSION", "build_model", "save_checkpoint", "load_checkpoint", "model_from_checkpoint",
           "load_weights", "architecture_differences"]  # fmt: skip

FORMAT = "genmodels-checkpoint"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("model_type", "config", "dim", "columns", "model")
Device = str | torch.device


def parameter_count(config: RunConfig, dim: int) -> int:
    """The weights of ``config``'s model for ``dim``-dimensional data, counted before building it."""
    return get_spec(config.model_type).parameter_count(config.model, dim)


# Bytes per weight while training: the weights, their gradients, Adam's two moments and the average.
_BYTES_PER_WEIGHT = 5 * 4


def build_model(config: RunConfig, dim: int) -> nn.Module:
    """A new model of ``config.model_type``; a ConfigError where training it needs too much memory."""
    spec, weights = get_spec(config.model_type), parameter_count(config, dim)
    if problem := memory_problem(weights * _BYTES_PER_WEIGHT, f"training a network of {weights:.3g} weights"):
        raise ConfigError(f"model ({', '.join(spec.size_keys)}): {problem}; choose a smaller network")
    return spec.model_class.from_config(config.model, dim)


def save_checkpoint(
    path: PathLike,
    *,
    config: RunConfig,
    model: nn.Module,
    dim: int,
    columns: tuple[str, ...],
    trainer_state: dict[str, Any] | None = None,
    test_data: torch.Tensor | None = None,
    data_info: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (a crash leaves the previous file intact). ``labels`` describes a
    conditional model's condition: ``{"column", "names" (in index order), "proportions" (training)}``."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
               "model_type": config.model_type, "config": config_to_dict(config), "dim": int(dim), "columns": list(columns),
               "model": _to_cpu(model.state_dict()), "trainer": _to_cpu(trainer_state),
               "test_data": _to_cpu(test_data), "data": dict(data_info or {}), "labels": labels}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _check_device(device: Device, what: str) -> torch.device:
    """``device`` as a ``torch.device`` this machine has; else a ValueError naming ``what``."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{what} must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if resolved.type == "meta":
        raise ValueError(f"{what} 'meta' holds no values; load the checkpoint onto 'cpu' or 'cuda'")
    try:
        torch.empty(0, device=resolved)
    except (RuntimeError, AssertionError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise ValueError(f"{what} {str(resolved)!r} is not available on this machine ({reason})") from None
    return resolved


def load_checkpoint(
    path: PathLike, *, expected_type: str | None = None, map_location: Device = "cpu"
) -> dict[str, Any]:
    """Load and validate a checkpoint (a CheckpointError, or a ValueError for ``map_location``); its
    ``"config"`` becomes a :class:`RunConfig`."""
    if isinstance(map_location, (str, torch.device)):
        _check_device(map_location, "map_location")
    path = os.fspath(path)
    payload = _read(path, map_location)
    _check_format(path, payload)
    _check_values(path, payload)
    model_type = payload["model_type"]
    try:  # an unknown model_type is the config's error
        payload["config"] = config_from_dict(payload["config"], model_type, source=f"{path} (stored config)")
    except ConfigError as error:
        raise CheckpointError(f"{path}: its stored config is invalid: {error}") from None
    if expected_type is not None and model_type != expected_type:
        raise CheckpointError(f"{path} is a {model_type} checkpoint, but a {expected_type} one is needed")
    return payload


_NOT_WRITTEN_HERE = "Checkpoints are written by 'genmodels train' under OUTPUT_DIR/checkpoints/."
# What torch.load raises for a file it cannot read as a checkpoint (whatever the file holds).
_LOAD_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError,
                TypeError, AttributeError, KeyError, IndexError, ImportError)  # fmt: skip


def _read(path: str, map_location: Device) -> Any:
    """``torch.load(path, weights_only=True)``; a file it cannot read is one CheckpointError."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a directory, not a file: {path}")
    with contextlib.suppress(*_LOAD_ERRORS):
        if zipfile.is_zipfile(path):  # torch.save writes zip archives
            return torch.load(path, map_location=map_location, weights_only=True)
    raise CheckpointError(
        f"{path} is not a genmodels checkpoint: it is not a PyTorch checkpoint file of tensors and plain "
        f"values, or it is truncated. {_NOT_WRITTEN_HERE}"
    )


def _check_format(path: str, payload: Any) -> None:
    """The marker, a format version this code reads, and every required key."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = ", ".join(map(str, list(payload)[:5])) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a genmodels checkpoint (no '{FORMAT}' marker; it holds: {keys}). {_NOT_WRITTEN_HERE}"
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path} has an invalid checkpoint format version {version!r} (expected a whole number "
            f"from 1 to {FORMAT_VERSION}); the file is damaged or was not written by genmodels"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than this genmodels "
            f"{__version__} reads (version {FORMAT_VERSION}); upgrade genmodels"
        )
    if missing := [key for key in _REQUIRED_KEYS if key not in payload]:
        raise CheckpointError(f"{path} is an incomplete genmodels checkpoint (missing: {', '.join(missing)})")


def _check_values(path: str, payload: dict[str, Any]) -> None:
    """Values of the right kind, and weights and optimizer state without nan or inf."""
    dim, columns, weights = payload["dim"], payload["columns"], payload["model"]
    trainer = payload.get("trainer")
    checks = {
        "dim": isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1,
        "columns": isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns),
        "model": _is_state(weights),
        "trainer": trainer is None or (isinstance(trainer, dict) and isinstance(trainer.get("epoch"), int)),
        "test_data": isinstance(payload.get("test_data"), (torch.Tensor, type(None))),
    }
    if damaged := [name for name, ok in checks.items() if not ok]:
        raise CheckpointError(f"{path} is a damaged genmodels checkpoint (invalid: {', '.join(damaged)})")
    trainer = trainer or {}
    ema = trainer.get("ema") if _is_state(trainer.get("ema")) else {}
    for where, state in (("model", weights), ("trainer.ema", ema)):
        if bad := [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]:
            raise CheckpointError(
                f"{path} is a damaged genmodels checkpoint: its {where} weights hold nan or inf values "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
            )
    # Adam's second moments are sums of squares; resuming from such a state diverges
    if problem := _optimizer_state_problem(trainer.get("optimizer")):
        raise CheckpointError(f"{path} is a damaged genmodels checkpoint: its optimizer state {problem}")


def _is_state(value: Any) -> bool:
    """Whether ``value`` is a state dict: a dict of tensors."""
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def _optimizer_state_problem(optimizer: Any) -> str | None:
    """What is impossible in a stored Adam state (nan, inf, a negative second moment), or None."""
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict):
        return None  # a missing or malformed state is reported where it is loaded
    for index, entry in optimizer["state"].items():
        for name, value in entry.items() if isinstance(entry, dict) else ():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                continue
            if not value.isfinite().all():
                return f"holds nan or inf values ({name} of parameter {index})"
            if name in _NON_NEGATIVE_STATE and (value < 0).any():
                return f"holds negative values where only values >= 0 can be ({name} of parameter {index})"
    return None


# Adam's per-parameter state that is a count or a running sum of squares.
_NON_NEGATIVE_STATE = frozenset({"step", "exp_avg_sq", "max_exp_avg_sq"})


# ``model`` keys that only change how the model is trained: a resumed run may change them.
TRAINING_ONLY_MODEL_KEYS = frozenset({"points_per_timestep", "clip_x0", "p_uncond"})


def architecture_differences(stored: RunConfig, requested: RunConfig) -> list[str]:
    """``model`` settings (but :data:`TRAINING_ONLY_MODEL_KEYS`) that differ between two configs."""
    a, b = config_to_dict(stored)["model"], config_to_dict(requested)["model"]
    differ = [k for k in a if a[k] != b.get(k) and k not in TRAINING_ONLY_MODEL_KEYS]
    return [f"model.{k}: {a[k]!r} (checkpoint) vs {b[k]!r} (config)" for k in differ]


def model_from_checkpoint(
    payload: dict[str, Any] | PathLike, *, use_ema: bool = True, device: Device = "cpu"
) -> nn.Module:
    """The model of a checkpoint (a path, or :func:`load_checkpoint`'s dict), EMA weights, in eval mode."""
    device = _check_device(device, "device")
    if isinstance(payload, (str, os.PathLike)):
        payload = load_checkpoint(payload, map_location=device)
    model = build_model(payload["config"], payload["dim"])
    ema = (payload.get("trainer") or {}).get("ema")
    load_weights(model, ema if use_ema and ema is not None else payload["model"], "the checkpoint")
    return model.to(device).eval()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)``; a mismatch is a CheckpointError naming ``source``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        detail = "; ".join(lines[:3]) + ("; ..." if len(lines) > 3 else "") if lines else str(error)
        raise CheckpointError(f"{source}'s weights do not fit its own config ({detail[:500]})") from None
