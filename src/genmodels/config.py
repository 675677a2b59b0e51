"""Typed, validated run configs (sections ``model``, ``training``, ``data``, ``sampling``), loaded from YAML;
an invalid config raises one :class:`ConfigError` listing every unknown key and invalid value."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, StrictBool, ValidationError

from genmodels.errors import ConfigError
from genmodels.models import DDPMModelConfig, RealNVPModelConfig, get_spec, model_names
from genmodels.models.base import Float, Int, check_config_type, settings

__all__ = ["DataConfig", "SamplingConfig", "TrainingConfig", "RealNVPModelConfig", "DDPMModelConfig", "RunConfig",
           "MODEL_TYPES", "MAX_SEED", "check_config_type", "default_config", "load_config", "config_from_dict",
           "config_to_dict", "with_overrides", "yaml_settings"]  # fmt: skip

MODEL_TYPES = model_names()

# Seeds are the integers 0..2^32 - 1, which torch, numpy and scikit-learn (the C2ST) all accept.
MAX_SEED = 2**32 - 1
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
Precision = Literal["auto", "float32", "bfloat16"]
# YAML reads on/off (and true/false) as booleans.
_ON_OFF = BeforeValidator(lambda v: ("on" if v else "off") if isinstance(v, bool) else v)
Compile = Annotated[Literal["auto", "on", "off"], _ON_OFF]
PathText = Annotated[str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]


@settings
class DataConfig:
    """The CSV file (one point per row) and its held-out split; ``drop_invalid`` drops rows with bad cells;
    ``condition``: a categorical column to condition on (p(x | label); the other columns are x)."""

    path: PathText = Field("689_data.csv", min_length=1)
    test_fraction: Float = Field(0.1, ge=0, lt=1)
    split_seed: Seed = 0
    drop_invalid: StrictBool = False
    condition: str | None = Field(None, min_length=1)


@settings
class SamplingConfig:
    """The samples a run draws; ``n_eval`` 0: the held-out split's size; ``sampling_steps`` 0: all;
    ``chunk_size``: points taken through all reverse steps at once; ``ddim_order``: 2, the strided sampler's
    second-order step, 1: plain DDIM (docs/ddpm-sampling.md); ``guidance_scale``: a conditional
    DDPM's classifier-free guidance w (1: plain conditional, 0: unconditional)."""

    n_samples: Int = Field(20000, ge=1)
    n_eval: Int = Field(0, ge=0)
    sampling_steps: Int = Field(0, ge=0)
    eta: Float = Field(1.0, ge=0, le=1)
    ddim_spacing: Literal["quadratic", "linear"] = "quadratic"
    ddim_order: Literal[1, 2] = 2
    chunk_size: Int = Field(4096, ge=1)
    precision: Precision = "auto"
    compile: Compile = "auto"
    guidance_scale: Float = Field(1.0, ge=0)


@settings
class TrainingConfig:
    """Optimisation settings shared by every model; ``lr_decay``: learning-rate factor per epoch;
    ``adaptive_clip``: scale a step's gradient down to at most this many times the running mean of the
    gradient norms (docs/speed.md); ``skip_spikes``: skip a step whose gradient norm is over this many
    times that mean; ``grad_clip``, ``adaptive_clip``, ``skip_spikes``, ``weight_decay`` (AdamW),
    ``validation_fraction``: hold out this share of the training rows and keep, at the end, the evaluated
    EMA weights with the lowest loss on them (early stopping's choice, without stopping);
    ``ema_decay``, ``checkpoint_every``, ``validation_fraction``: 0 disables."""

    epochs: Int = Field(500, ge=1)
    batch_size: Int = Field(2048, ge=1)
    learning_rate: Float = Field(1e-3, gt=0)
    lr_decay: Float = Field(0.999, gt=0, le=1)
    seed: Seed = 42
    grad_clip: Float = Field(100.0, ge=0, allow_inf_nan=True)  # .inf: no clipping, as 0
    adaptive_clip: Float = Field(3.0, ge=0)
    skip_spikes: Float = Field(0.0, ge=0)
    weight_decay: Float = Field(0.0, ge=0)
    ema_decay: Float = Field(0.999, ge=0, lt=1)
    eval_every: Int = Field(10, ge=1)
    validation_fraction: Float = Field(0.0, ge=0, lt=1)
    checkpoint_every: Int = Field(50, ge=0)
    precision: Precision = "auto"
    compile: Compile = "auto"


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs (stored in its checkpoint); checks the rules spanning sections."""

    model_type: str
    model: Any
    training: TrainingConfig
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        for name, cls in _section_classes(_known(self.model_type)).items():
            check_config_type(getattr(self, name), cls)
        if self.sampling.sampling_steps > (steps := getattr(self.model, "diffusion_steps", float("inf"))):
            raise ConfigError(f"sampling.sampling_steps ({self.sampling.sampling_steps}) must be at most "
                              f"model.diffusion_steps ({steps}); 0 means all")  # fmt: skip
        if getattr(self.model, "n_labels", 0) and self.data.condition is None:
            raise ConfigError(f"model.n_labels is {self.model.n_labels} but data.condition names no column; a run "
                              "sets model.n_labels from it (--condition): set that instead")  # fmt: skip


_SECTIONS = ("model", "training", "data", "sampling")
_SECTION_CLASSES = (TrainingConfig, DataConfig, SamplingConfig)
# ``training.lr`` is another name for ``training.learning_rate`` (``--lr`` on the command line).
_ALIASES: dict[str, dict[str, str]] = {"training": {"lr": "learning_rate"}}


def _known(model_type: str) -> str:
    """``model_type``, or a ConfigError where it is not one of :data:`MODEL_TYPES`."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    return model_type


def default_config(model_type: str) -> RunConfig:
    """The default run config of ``model_type`` (one of :data:`MODEL_TYPES`)."""
    spec = get_spec(_known(model_type))
    return RunConfig(model_type, spec.config_class(), TrainingConfig(**spec.training_defaults))


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a CSV file given as a config is one long string)."""
    text = repr(value)
    end = text[-1] if text[-1] in "'\"]}" else ""  # the closing quote or bracket stays
    return text if len(text) <= limit else text[: limit - 4] + " ..." + end


def _section_classes(model_type: str) -> dict[str, type]:
    return dict(zip(_SECTIONS, (get_spec(model_type).config_class, *_SECTION_CLASSES), strict=True))


def _keys(section: str, model_type: str) -> list[str]:
    return [f.name for f in dataclasses.fields(_section_classes(model_type)[section])]


def _closest(name: str, valid: list[str], what: str) -> str:
    """``did you mean 'X'?`` for the closest of ``valid``, or all of them."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'?" if match else f"valid {what}: {', '.join(valid)}"


def _unknown(section: str, key: str, model_type: str) -> str:
    """``unknown key 'section.key'`` with where it belongs, or the closest valid key, or all of them."""
    if home := [other for other in _SECTIONS if other != section and key in _keys(other, model_type)]:
        return f"unknown key '{section}.{key}' (it belongs in '{home[0]}.{key}')"
    valid = _keys(section, model_type) + list(_ALIASES.get(section, {}))
    return f"unknown key '{section}.{key}' ({_closest(key, valid, 'keys')})"


_SIGNS = {"greater than or equal to": ">=", "less than or equal to": "<="}
_SIGNS |= {"greater than": ">", "less than": "<"}


def _problem(section: str, error: Mapping[str, Any], model_type: str) -> str:
    """One pydantic error as ``section.key must be EXPECTED (got VALUE)``."""
    key = ".".join(map(str, error["loc"]))
    if error["type"] == "unexpected_keyword_argument":
        return _unknown(section, key, model_type)
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    message = re.sub("|".join(_SIGNS), lambda match: _SIGNS[match[0]], message)
    got = f"(got {_shown(error['input'])})"
    return f"{section}.{key} " + (f"{message} {got}" if message.startswith("must") else f"{got}: {message}")


def _other_type_hint(model: Mapping[str, Any], model_type: str) -> str:
    """A hint when every model key belongs to another model type's architecture."""
    if model and any(k not in _keys("model", model_type) for k in model):
        for other in MODEL_TYPES:
            if all(k in _keys("model", other) for k in model):
                return f". This looks like a {other} config; use it with 'train {other}'"
    return ""


def _sections(raw: Any, model_type: str, source: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``raw``'s sections as dicts (aliases resolved) and the unknown sections."""
    if raw is not None and not isinstance(raw, Mapping):
        hint = "; is it a data file? The data go to --data, a YAML config to --config"
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {_shown(raw)}"
                          f"{hint if isinstance(raw, str) else ''}")  # fmt: skip
    raw = dict(raw or {})
    if (declared := raw.pop("model_type", model_type)) != model_type:
        raise ConfigError(f"{source} is a {declared} config, but a {model_type} run was asked for")
    sections, unknown = {}, []
    for name, values in raw.items():
        if name not in _SECTIONS:
            unknown.append(f"unknown section '{name}' ({_closest(str(name), list(_SECTIONS), 'sections')})")
            continue
        if not isinstance(values or {}, Mapping):
            raise ConfigError(f"{source}: section '{name}' must be a mapping of keys to values "
                              f"(got {_shown(values)})")  # fmt: skip
        sections[name] = {}
        for key, value in (values or {}).items():
            real = _ALIASES.get(name, {}).get(key, key)
            if real in sections[name]:
                both = " and ".join(f"'{name}.{k}'" for k in values if _ALIASES[name].get(k, k) == real)
                raise ConfigError(f"{source}: {both} both set {name}.{real}; keep one")
            sections[name][real] = value
    return sections, unknown


def _build(raw: Any, model_type: str, source: str, options: Mapping[str, str]) -> RunConfig:
    config = default_config(model_type)
    sections, problems = _sections(raw, model_type, source)
    built = {}
    for name, values in sections.items():
        try:
            built[name] = dataclasses.replace(getattr(config, name), **values)
        except ValidationError as error:
            problems += [_problem(name, e, model_type) for e in error.errors(include_url=False)]
    try:
        if problems:  # the hint needs a model key unknown to model_type
            raise ConfigError("; ".join(problems) + _other_type_hint(sections.get("model", {}), model_type))
        return dataclasses.replace(config, **built)
    except ConfigError as error:
        message = f"invalid {source if source == 'command line' else f'config {source}'}: {error}"
        for key, option in options.items():  # name the options the keys came from
            message = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w])", f"{key} ({option})", message)
        raise ConfigError(message) from None


def config_from_dict(raw: Mapping[str, Any], model_type: str, *, source: str = "<config>") -> RunConfig:
    """Build a :class:`RunConfig` from a nested mapping (parsed YAML, :func:`config_to_dict`); keys it
    does not set keep their defaults. Raises ConfigError naming ``source``, every unknown key and bad value."""
    return _build(raw, model_type, source, {})


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice and reads ``1e-3`` as a number (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            plain = isinstance(key, (str, int, float, bool)) or key is None
            if not plain or key in seen:
                problem = f"key {key!r} is given twice" if plain else "keys must be plain names"
                raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark, problem,
                                                        key_node.start_mark)  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # 1e-3: YAML 1.1 wants 1.0e-3
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    """The parsed content of the YAML file ``path``; a ConfigError where it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a YAML file: {path}") from None
    except yaml.YAMLError as error:  # FILE, line L, column C (1-based): not valid YAML: PROBLEM
        mark, context = getattr(error, "problem_mark", None), getattr(error, "context", None)
        problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"{path}{where}: not valid YAML: {detail}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) YAML file") from None


def load_config(path: str | os.PathLike[str], model_type: str) -> RunConfig:
    """Load ``path`` (YAML) as a ``model_type`` run config; see :func:`config_from_dict`."""
    return config_from_dict(_read_yaml(path), model_type, source=str(path))


def yaml_settings(path: str | os.PathLike[str], model_type: str) -> dict[str, Any]:
    """The settings a valid YAML config file writes, as dotted ``section.key`` overrides (for
    :func:`with_overrides`: a file laid over a resumed run's config)."""
    raw = _read_yaml(path)
    config_from_dict(raw, model_type, source=str(path))  # every check, with its messages
    sections = {section: values or {} for section, values in (raw or {}).items() if section != "model_type"}
    return {f"{section}.{key}": v for section, values in sections.items() for key, v in values.items()}


def with_overrides(config: RunConfig, overrides: Mapping[str, Any], *, source: str = "command line",
                   options: Mapping[str, str] | None = None) -> RunConfig:  # fmt: skip
    """``config`` with dotted ``section.key`` overrides (None skipped); ``options``: ``{"sampling.eta": "--eta"}``."""
    raw = config_to_dict(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." not in dotted:
            raise ConfigError(f"override {dotted!r} in {source} must be 'section.key' "
                              f"({', '.join(_SECTIONS)})")  # fmt: skip
        section, key = dotted.split(".", 1)
        current = raw.setdefault(section, {})  # an unknown section is reported when built
        current.pop(_ALIASES.get(section, {}).get(key, key), None)  # "training.lr" replaces the rate
        current[key] = value
    return _build(raw, config.model_type, source, options or {})


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The config as plain nested dicts (YAML/JSON-ready, and safe for ``torch.load(weights_only=True)``)."""
    return dataclasses.asdict(config)
