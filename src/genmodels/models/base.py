"""What every model shares: the :class:`GenerativeModel` interface, the :class:`ModelSpec` registry
(:func:`get_spec`; code outside ``genmodels.models`` never tests a model's name or class), the
standardising bijection and argument checks. Adding a model: ``docs/models.md``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, runtime_checkable

import torch
from pydantic import BeforeValidator, ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import nn

from genmodels.models.resources import memory_problem

__all__ = [
    "Float",
    "GenerativeModel",
    "Int",
    "ModelSpec",
    "Standardize",
    "as_number",
    "check_labels",
    "check_points",
    "check_sample_count",
    "get_spec",
    "model_names",
    "register",
    "settings",
    "standard_normal_log_prob",
]


@runtime_checkable
class GenerativeModel(Protocol):
    """The interface of a model: points ``(N, D)`` in the data's own units, likelihoods in nats per point.
    A model with ``n_labels = K > 0`` is conditional: ``label`` is an int in 0..K-1 or ``(N,)`` of them
    (:func:`check_labels`); without one it models p(x). A model with ``n_labels = 0`` refuses labels."""

    dim: int
    n_labels: int
    standardize: Standardize

    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the data's ``mean (D,)`` and ``std (D,)``: the model works on standardised points."""

    def loss(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar training loss of a batch ``x (N, D)`` (given its labels ``(N,)``)."""

    def sample(
        self,
        n: int,
        *,
        label: int | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """``n`` samples ``(n, D)`` (given ``label``); ``options`` are those named by the spec's
        ``sample_options``."""

    def held_out_metrics(self, x: torch.Tensor, label: torch.Tensor | None = None) -> dict[str, float]:
        """Cheap held-out likelihood numbers tracked during training, e.g. ``{"test_nll": 0.9}``."""


@dataclass(frozen=True)
class ModelSpec:
    """How the rest of the package builds, describes and evaluates one model.

    Attributes:
        name: the name users type and checkpoints store; title: the name figures show.
        model_class: ``model_class.from_config(config, dim)`` builds one from a ``config_class``.
        training_defaults: this model's ``training:`` defaults.
        parameter_count: ``(config, dim) -> int``; size_keys: the config keys that set the network's size.
        likelihoods: ``name -> (model, x, generator, label=None) -> (N,) nats`` (given labels ``(N,)``
            for a conditional model), in report order.
        sample_options: ``{sample() keyword: sampling settings key}``.
        figures: the model's figure kinds; loss_figure: its loss curve's ``series``, ``ylabel``, ``title``.
        recommended_steps: optimisation steps it needs on 2-D data (docs/usage.md, "Choosing epochs");
            a run of under a third of them warns.
    """

    name: str
    title: str
    model_class: type[nn.Module]
    config_class: type
    training_defaults: Mapping[str, Any]
    parameter_count: Callable[[Any, int], int]
    size_keys: tuple[str, ...]
    likelihoods: Mapping[str, Callable[[nn.Module, torch.Tensor, torch.Generator | None], torch.Tensor]]
    loss_label: str = "loss"
    sample_options: Mapping[str, str] = field(default_factory=dict)
    figures: tuple[str, ...] = ()
    loss_figure: Mapping[str, str] = field(default_factory=dict)
    recommended_steps: int = 0


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (its module calls this when imported); returns it."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a model named {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def model_names() -> tuple[str, ...]:
    """The registered models' names, in registration order."""
    return tuple(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of the model called ``name`` (KeyError listing the registered ones)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown model {name!r}; expected one of {', '.join(_REGISTRY)}") from None


def check_points(x: torch.Tensor, dim: int, dtype: torch.dtype, name: str, *, model: str = "model") -> None:
    """Check that ``x`` is a ``(N, dim)`` tensor of ``dtype`` (TypeError, or ValueError naming ``name``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, {dim}), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise ValueError(
            f"{name} is {x.dtype} but the {model} computes in {dtype}; convert it with .to({dtype})"
        )


def check_labels(label: object, n: int, n_labels: int, device: torch.device) -> torch.Tensor | None:
    """``label`` as an ``(n,)`` long tensor on ``device`` (an int stands for all n points), or None.

    Raises:
        ValueError: a label for a model without labels (``n_labels`` 0), a label outside 0..n_labels-1,
            or a tensor that is not ``(n,)`` integers.
    """
    if label is None:
        return None
    if n_labels == 0:
        raise ValueError("this model was built without labels (n_labels 0); sample or score it without label")
    whole = as_number(label)
    if whole is not None:
        label = torch.full((n,), whole, dtype=torch.long, device=device)
    if not isinstance(label, torch.Tensor) or label.shape != (n,) or label.is_floating_point():
        raise ValueError(f"label must be an int or an integer tensor of shape ({n},), got {label!r:.80}")
    if n and not bool(((label >= 0) & (label < n_labels)).all()):
        raise ValueError(f"labels must be in 0..{n_labels - 1}, got {label.unique().tolist()[:10]}")
    return label.to(device=device, dtype=torch.long)


def as_number(value: object, *, whole: bool = True) -> float | None:
    """``value`` as an ``int`` where it is a Python, NumPy or 0-d tensor integer, or (``whole`` False) as a
    ``float`` where it is any real number or one-element tensor; None for anything else, bools included."""
    if isinstance(value, bool) or getattr(value, "dtype", None) == torch.bool:
        return None
    try:
        if whole:
            return operator.index(value)
        return float(value) if isinstance(value, numbers.Real | torch.Tensor) else None
    except (TypeError, ValueError, RuntimeError):
        return None


# Bytes per sampled value a sampler holds at once: the float32 noise, the samples and a working copy.
_BYTES_PER_SAMPLED_VALUE = 16


def check_sample_count(n: int, dim: int = 1, width: int = 0) -> int:
    """``n`` as an ``int`` where it is a whole number >= 0 of samples of ``dim`` values that fit in memory
    (with a network ``width`` wide on all at once); else ValueError."""
    count = as_number(n)
    if count is None or count < 0:
        raise ValueError(f"the number of samples must be a whole number >= 0, got {n!r}")
    need = count * (dim + width) * _BYTES_PER_SAMPLED_VALUE
    if problem := memory_problem(need, f"drawing {count} samples of {dim} values at once"):
        raise ValueError(f"{problem}; draw them in parts")
    return count


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Log-density of ``N(0, I)`` at ``z (N, D)``; returns ``(N,)`` in nats."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))


class Standardize(nn.Module):
    """Fixed bijection ``x -> (x - mean) / std`` (buffers), ``log |det| = -sum(log std)`` per point."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set ``mean (D,)`` and ``std (D,)``, finite numbers (``std`` positive; else ValueError)."""
        values, dim = [], self.mean.shape[0]
        for name, value in (("mean", mean), ("std", std)):
            try:
                values.append(torch.as_tensor(value, dtype=self.mean.dtype, device=self.mean.device))
            except (TypeError, ValueError, RuntimeError):
                values.append(None)
            if values[-1] is None or values[-1].shape != (dim,) or not bool(torch.isfinite(values[-1]).all()):
                raise ValueError(f"{name} must be {dim} finite numbers, one per dimension, got {value!r:.80}")
        if not bool((values[1] > 0).all()):
            raise ValueError("standard deviations must be positive")
        self.mean.copy_(values[0])
        self.std.copy_(values[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = -torch.log(self.std).sum().expand(x.shape[0])
        return (x - self.mean) / self.std, log_det

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.log(self.std).sum().expand(z.shape[0])
        return z * self.std + self.mean, log_det


def _number(value: object) -> object:
    if isinstance(value, (bool, str)):  # pydantic would read true as 1 and "64" as 64
        raise ValueError(f"must be a number, not {'true or false' if isinstance(value, bool) else 'text'}")
    return value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]


def settings(cls: type) -> type:
    """``cls`` as a frozen pydantic dataclass refusing unknown keys and non-finite numbers (ValidationError)."""
    return pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))(cls)


def check_config_type(config: object, expected: type) -> None:
    """Raise TypeError unless ``config`` is an ``expected`` config dataclass."""
    if not isinstance(config, expected):
        hint = f" (build one with {expected.__name__}(**values))" if isinstance(config, dict) else ""
        raise TypeError(f"config must be a {expected.__name__}, got {type(config).__name__}{hint}")
