"""Typed, validated run configurations for RealNVP and DDPM, loaded from YAML.

A run config has four sections, each a frozen dataclass: ``model`` (architecture), ``training``
(optimisation), ``data`` (file, split) and ``sampling`` (how many samples to draw and evaluate).
The YAML files in ``configs/`` use the specification's keys; every other key has a default here.
Unknown keys are an error that names the key, the file and the closest valid key; values of the wrong
type or out of range are errors too. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from genmodels.errors import ConfigError
from genmodels.models import DDPMModelConfig, RealNVPModelConfig, get_spec, model_names
from genmodels.models.base import _check, _shown, _type_problems, check_config_type

__all__ = [
    "DataConfig",
    "SamplingConfig",
    "TrainingConfig",
    "RealNVPModelConfig",
    "DDPMModelConfig",
    "RunConfig",
    "MODEL_TYPES",
    "check_config_type",
    "default_config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "with_overrides",
]

MODEL_TYPES = model_names()


MAX_SEED = 2**32 - 1


def _valid_seed(seed: int) -> bool:
    """Seeds are the integers 0..2^32 - 1, which torch, numpy and scikit-learn (the C2ST) all accept."""
    return 0 <= seed <= MAX_SEED


def _integer_hint(value: Any) -> str:
    """For text YAML did not read as a number, though it is a whole one (``1e3``): how to write it."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not (number.is_integer() and abs(number) < 1e15):
        return ""
    if value.strip() == str(int(number)):  # "64", quoted
        return f"; write it without quotes: {int(number)}"
    return f"; YAML reads {value.strip()} as text: write {int(number)}"


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how the held-out split is made.

    Attributes:
        path: CSV file, one point per row (a header line is optional).
        test_fraction: share of rows held out for evaluation, in [0, 1).
        split_seed: seed of the held-out split (independent of the training seed).
        drop_invalid: drop rows with empty or non-numeric cells instead of failing.
    """

    path: str = "689_data.csv"
    test_fraction: float = 0.1
    split_seed: int = 0
    drop_invalid: bool = False

    def problems(self) -> list[str]:
        errors = _type_problems(self, "data")
        if errors:
            return errors
        _check(errors, 0.0 <= self.test_fraction < 1.0, "data.test_fraction must be in [0, 1)")
        _check(errors, bool(self.path), "data.path must not be empty")
        _check(
            errors,
            _valid_seed(self.split_seed),
            f"data.split_seed must be an integer in [0, 2^32) (got {self.split_seed})",
        )
        return errors


@dataclass(frozen=True)
class SamplingConfig:
    """How many samples the run draws for its figure and metrics.

    Attributes:
        n_samples: samples drawn for the results figure and the written sample file.
        n_eval: points on each side of the two-sample tests (0 = the size of the held-out split).
        sampling_steps: DDPM only: reverse steps (0 = all ``diffusion_steps``, ancestral sampling;
            fewer uses the strided DDIM sampler).
        eta: DDPM only: DDIM stochasticity (1 = ancestral-like noise, 0 = deterministic).
        ddim_spacing: DDPM only: where the DDIM sampler's timesteps lie: ``"quadratic"`` (dense near
            the data; at 100 of 2,500 steps its samples were as good as the full sampler's) or
            ``"linear"`` (evenly spaced).
        chunk_size: points taken through all reverse steps at once: bounds memory, and a few thousand
            keep a DDPM's activations in the CPU's cache.
        precision: ``"float32"``, or ``"bfloat16"`` to run the networks' matrix products in bfloat16
            (autocast; the flow and diffusion arithmetic stay in float32).
        compile: sample with the DDPM denoising network compiled by ``torch.compile``: ``"on"``,
            ``"off"``, or ``"auto"``: on where it was measured to win, in bfloat16 when the sampling is
            long enough to repay the compilation (:func:`genmodels.train.acceleration.worth_compiling`).
            ``true``/``false`` mean on/off.
    """

    n_samples: int = 20000
    n_eval: int = 0
    sampling_steps: int = 0
    eta: float = 1.0
    ddim_spacing: Literal["quadratic", "linear"] = "quadratic"
    chunk_size: int = 4096
    precision: Literal["float32", "bfloat16"] = "float32"
    compile: Literal["auto", "on", "off"] = "auto"

    def problems(self) -> list[str]:
        errors = _type_problems(self, "sampling")
        if errors:
            return errors
        _check(errors, self.n_samples >= 1, "sampling.n_samples must be >= 1")
        _check(errors, self.n_eval >= 0, "sampling.n_eval must be >= 0")
        _check(errors, self.sampling_steps >= 0, "sampling.sampling_steps must be >= 0")
        _check(errors, 0.0 <= self.eta <= 1.0, "sampling.eta must be in [0, 1]")
        _check(errors, self.chunk_size >= 1, "sampling.chunk_size must be >= 1")
        return errors


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings shared by both models.

    Attributes:
        epochs: passes over the training split.
        batch_size: points per optimisation step (the last batch of an epoch may be smaller).
        learning_rate: Adam's initial learning rate.
        lr_decay: factor applied to the learning rate once per epoch (exponential decay).
        seed: seed of initialisation, batching and sampling.
        grad_clip: clip the global gradient norm to this value (0 disables clipping).
        weight_decay: decoupled weight decay (AdamW); 0 gives plain Adam.
        ema_decay: decay of the exponential moving average of the weights used for evaluation
            and sampling (0 disables the average).
        eval_every: compute held-out metrics every this many epochs (and at the last one).
        checkpoint_every: write a resumable checkpoint every this many epochs (0 = only at the end).
        precision: ``"float32"``, or ``"bfloat16"`` for mixed precision: the networks' matrix products
            run in bfloat16 (autocast), while the weights, the optimizer, the flow's log-determinants
            and the diffusion arithmetic stay in float32. Held-out metrics are always float32.
        compile: ``"on"`` compiles the training loss (forward and backward) with ``torch.compile``;
            the first step of each batch shape pays the compilation. ``"auto"`` does so only where it
            was measured to be faster (:func:`genmodels.train.acceleration.worth_compiling_training`: a
            RealNVP on a CPU with a C++ compiler, for runs of at least 1.5e7 training points in all).
            The default is ``"off"``: the one compiled default run had gradient-norm spikes that the
            eager run had not. ``true``/``false`` mean on/off.
    """

    epochs: int = 500
    batch_size: int = 2048
    learning_rate: float = 1e-3
    lr_decay: float = 0.999
    seed: int = 42
    grad_clip: float = 100.0
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    eval_every: int = 10
    checkpoint_every: int = 50
    precision: Literal["float32", "bfloat16"] = "float32"
    compile: Literal["auto", "on", "off"] = "off"

    def problems(self) -> list[str]:
        errors = _type_problems(self, "training")
        if errors:
            return errors
        _check(errors, self.epochs >= 1, f"training.epochs must be >= 1 (got {self.epochs})")
        _check(errors, self.batch_size >= 1, f"training.batch_size must be >= 1 (got {self.batch_size})")
        _check(
            errors,
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"training.learning_rate must be a finite number > 0 (got {self.learning_rate})",
        )
        _check(
            errors, _valid_seed(self.seed), f"training.seed must be an integer in [0, 2^32) (got {self.seed})"
        )
        _check(errors, 0 < self.lr_decay <= 1, f"training.lr_decay must be in (0, 1] (got {self.lr_decay})")
        _check(errors, self.grad_clip >= 0, "training.grad_clip must be >= 0")
        _check(
            errors,
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"training.weight_decay must be a finite number >= 0 (got {self.weight_decay})",
        )
        _check(errors, 0 <= self.ema_decay < 1, "training.ema_decay must be in [0, 1)")
        _check(errors, self.eval_every >= 1, "training.eval_every must be >= 1")
        _check(errors, self.checkpoint_every >= 0, "training.checkpoint_every must be >= 0")
        return errors


ModelConfig = RealNVPModelConfig | DDPMModelConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; stored in its checkpoint."""

    model_type: str
    model: Any
    training: TrainingConfig
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def problems(self) -> list[str]:
        errors: list[str] = []
        for section in (self.model, self.training, self.data, self.sampling):
            errors.extend(section.problems())
        steps = getattr(self.model, "diffusion_steps", None)
        if steps is not None and self.sampling.sampling_steps > steps:
            errors.append(
                f"sampling.sampling_steps ({self.sampling.sampling_steps}) must be at most "
                f"model.diffusion_steps ({steps}); 0 means all"
            )
        return errors


_MODEL_CLASSES: dict[str, type] = {name: get_spec(name).config_class for name in MODEL_TYPES}
_SECTIONS = ("model", "training", "data", "sampling")
# The specification writes the learning rate as ``learning_rate`` in YAML and ``--lr`` on the command line;
# ``training.lr`` is accepted as another name for it.
_ALIASES: dict[str, dict[str, str]] = {"training": {"lr": "learning_rate"}}


def default_config(model_type: str) -> RunConfig:
    """The default run config of ``model_type`` ("realnvp" or "ddpm")."""
    if model_type not in _MODEL_CLASSES:
        raise ConfigError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    return RunConfig(
        model_type=model_type,  # type: ignore[arg-type]
        model=_MODEL_CLASSES[model_type](),
        training=TrainingConfig(**get_spec(model_type).training_defaults),
    )


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid keys: {', '.join(valid)})"


def _other_type_hint(raw: Mapping[str, Any], model_type: str) -> str:
    """A hint when every model key of ``raw`` belongs to the other model type's architecture."""
    model = raw.get("model")
    if not isinstance(model, Mapping) or not model:
        return ""
    for other, cls in _MODEL_CLASSES.items():
        if other == model_type:
            continue
        names = {f.name for f in dataclasses.fields(cls)}
        own = {f.name for f in dataclasses.fields(_MODEL_CLASSES[model_type])}
        if all(k in names for k in model) and any(k not in own for k in model):
            return f". This looks like a {other} config; use it with 'train {other}'"
    return ""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML reads on/off/true/false as booleans
        if value not in choices:
            also = " (or true/false)" if {"on", "off"} <= set(choices) else ""
            raise ConfigError(
                f"{where} must be one of {', '.join(map(repr, choices))}{also} (got {_shown(value)})"
            )
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false (got {_shown(value)})")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be a whole number (got {_shown(value)}){_integer_hint(value)}")
        return value
    if annotation is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                raise ConfigError(f"{where} must be a number (got {_shown(value)})") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number (got {_shown(value)})")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be text (got {_shown(value)})")
        return value
    return value


def _build_section(cls: type, base: Any, values: Mapping[str, Any], name: str, source: str) -> Any:
    hints = get_type_hints(cls)
    updates = {}
    for key, value in values.items():
        updates[key] = _coerce(value, hints[key], f"{name}.{key} in {source}")
    return dataclasses.replace(base, **updates)


def config_from_dict(raw: Mapping[str, Any], model_type: str, *, source: str = "<config>") -> RunConfig:
    """Build and validate a :class:`RunConfig` from a nested mapping (a parsed YAML file).

    Raises:
        ConfigError: listing every unknown key (with the closest valid one), or the first value of the
            wrong type, or every out-of-range value.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        hint = (
            "; is it a data file? The data go to --data, a YAML config to --config"
            if isinstance(raw, str)
            else ""
        )
        raise ConfigError(
            f"{source}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {_shown(raw)}{hint}"
        )
    config = default_config(model_type)
    raw = dict(raw)
    declared = raw.pop("model_type", model_type)
    if declared != model_type:
        raise ConfigError(f"{source} is a {declared} config, but a {model_type} run was asked for")
    unknown: list[str] = []
    sections: dict[str, Mapping[str, Any]] = {}
    for key, value in raw.items():
        if key not in _SECTIONS:
            unknown.append(f"'{key}'{_closest(str(key), list(_SECTIONS))}")
            continue
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{source}: section '{key}' must be a mapping of keys to values (got {_shown(value)})"
            )
        valid = [f.name for f in dataclasses.fields(getattr(config, key))]
        aliases = _ALIASES.get(key, {})
        section: dict[str, Any] = {}
        written_as: dict[str, Any] = {}
        for written, sub_value in value.items():
            sub = aliases.get(written, written)
            if sub not in valid:
                home = [
                    other
                    for other in _SECTIONS
                    if other != key and sub in {f.name for f in dataclasses.fields(getattr(config, other))}
                ]
                where = f" (it belongs in '{home[0]}.{sub}')" if home else None
                unknown.append(f"'{key}.{written}'{where or _closest(str(written), valid + list(aliases))}")
            elif sub in section:
                first = f"{key}.{written_as[sub]}"
                raise ConfigError(f"{source}: '{first}' and '{key}.{written}' both set {key}.{sub}; keep one")
            else:
                section[sub] = sub_value
                written_as[sub] = written
        sections[key] = section
    if unknown:
        hint = _other_type_hint(raw, model_type)
        raise ConfigError(f"unknown key(s) in {source}: " + "; ".join(unknown) + hint)
    for key, values in sections.items():
        base = getattr(config, key)
        config = dataclasses.replace(config, **{key: _build_section(type(base), base, values, key, source)})
    problems = config.problems()
    if problems:
        raise ConfigError(f"invalid value(s) in {source}: " + "; ".join(problems))
    return config


def _yaml_error_message(path: str | os.PathLike[str], error: yaml.YAMLError) -> str:
    """``FILE, line L, column C: not valid YAML: PROBLEM`` (1-based), from a PyYAML error."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    context = getattr(error, "context", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{problem} ({context})" if context else problem
    return f"{path}{where}: not valid YAML: {detail}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML would
    keep the last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    "keys must be plain names",
                    key_node.start_mark,
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    """The parsed content of the YAML file ``path`` (duplicate keys rejected).

    Raises:
        ConfigError: the file is missing, a directory, not UTF-8 text or not YAML.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a YAML file: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error_message(path, error)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) YAML file") from None


def load_config(path: str | os.PathLike[str], model_type: str) -> RunConfig:
    """Load ``path`` (YAML) as a ``model_type`` run config; see :func:`config_from_dict`.

    Raises:
        ConfigError: the file is missing, not YAML, or its content is invalid.
    """
    return config_from_dict(_read_yaml(path), model_type, source=str(path))


def yaml_settings(path: str | os.PathLike[str], model_type: str) -> dict[str, Any]:
    """The settings a YAML config file writes, as dotted ``section.key`` overrides (for
    :func:`with_overrides`), so that a file can be laid over another config (a resumed run's) instead of
    over the defaults.

    Raises:
        ConfigError: the file is not a valid ``model_type`` config (see :func:`load_config`).
    """
    raw = _read_yaml(path)
    config_from_dict(raw, model_type, source=str(path))  # every check, with its messages
    return {
        f"{section}.{key}": value
        for section, values in (raw or {}).items()
        if section != "model_type"
        for key, value in (values or {}).items()
    }


def with_overrides(
    config: RunConfig, overrides: Mapping[str, Any], *, source: str = "command line"
) -> RunConfig:
    """Return ``config`` with dotted ``section.key`` overrides applied (None values are skipped)."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." not in dotted:
            raise ConfigError(
                f"override {dotted!r} in {source} must be 'section.key' ({', '.join(_SECTIONS)})"
            )
        section, key = dotted.split(".", 1)
        nested.setdefault(section, {})[key] = value
    raw = config_to_dict(config)
    for section, values in nested.items():
        current = raw.setdefault(section, {})  # an unknown section is reported by config_from_dict
        for key, value in values.items():
            current.pop(_ALIASES.get(section, {}).get(key, key), None)  # "training.lr" replaces the rate
            current[key] = value
    return config_from_dict(raw, config.model_type, source=source)


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The config as plain nested dicts (YAML/JSON-ready, and safe for ``torch.load(weights_only=True)``)."""
    return dataclasses.asdict(config)
