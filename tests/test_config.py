"""Tests of genmodels.config: shipped configs, unknown keys, types, ranges, overrides, round trips."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from genmodels.config import (
    DataConfig,
    DDPMModelConfig,
    RealNVPModelConfig,
    RunConfig,
    SamplingConfig,
    TrainingConfig,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
    with_overrides,
)
from genmodels.errors import ConfigError


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the shipped configs -----------------------------------------------------------------------------


def test_shipped_realnvp_config_has_the_specification_values(repo_root: Path) -> None:
    config = load_config(repo_root / "configs" / "realnvp.yaml", "realnvp")
    assert config.model_type == "realnvp"
    assert isinstance(config.model, RealNVPModelConfig)
    assert (config.model.n_coupling_layers, config.model.n_hidden, config.model.hidden_units) == (14, 2, 128)
    t = config.training
    assert (t.epochs, t.batch_size, t.learning_rate, t.lr_decay) == (500, 2048, 0.001, 0.999)
    assert t.seed == 42
    assert config == default_config("realnvp")


def test_shipped_ddpm_config_has_the_specification_values(repo_root: Path) -> None:
    config = load_config(repo_root / "configs" / "ddpm.yaml", "ddpm")
    assert config.model_type == "ddpm"
    m = config.model
    assert isinstance(m, DDPMModelConfig)
    assert (m.diffusion_steps, m.beta2_start, m.beta2_end, m.time_embed_dim, m.hidden_units) == (
        2500,
        1e-4,
        0.02,
        32,
        64,
    )
    t = config.training
    assert (t.epochs, t.batch_size, t.learning_rate, t.lr_decay) == (1000, 4096, 0.001, 0.999)
    assert t.seed == 689
    assert config == default_config("ddpm")


def test_default_seeds() -> None:
    assert default_config("realnvp").training.seed == 42
    assert default_config("ddpm").training.seed == 689


def test_unknown_model_type() -> None:
    with pytest.raises(ConfigError, match="unknown model type 'vae'"):
        default_config("vae")


def test_sections_are_frozen() -> None:
    config = default_config("realnvp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cls", "values", "key"),
    [
        (TrainingConfig, {"epochs": 0}, "epochs"),
        (TrainingConfig, {"batch_size": 2.5}, "batch_size"),
        (TrainingConfig, {"epochs": True}, "epochs"),
        (TrainingConfig, {"learning_rate": "1e-3"}, "learning_rate"),
        (TrainingConfig, {"precision": "fp16"}, "precision"),
        (TrainingConfig, {"compile": "yes"}, "compile"),
        (TrainingConfig, {"epoch": 3}, "epoch"),
        (DataConfig, {"path": ""}, "path"),
        (SamplingConfig, {"eta": 1.5}, "eta"),
        (RealNVPModelConfig, {"hidden_units": 0}, "hidden_units"),
        (DDPMModelConfig, {"points_per_timestep": 0}, "points_per_timestep"),
        (DDPMModelConfig, {"hidden_units": 64.5}, "hidden_units"),
    ],
)
def test_sections_built_in_python_are_validated(cls: type, values: dict, key: str) -> None:
    with pytest.raises(ValueError) as info:
        cls(**values)
    assert key in str(info.value) and repr(next(iter(values.values()))) in str(info.value)
    with pytest.raises(ValueError, match=key):  # and so is a changed copy
        dataclasses.replace(cls(), **values)


def test_python_numbers_of_numpy_are_numbers() -> None:
    np = pytest.importorskip("numpy")
    config = TrainingConfig(epochs=np.int64(2), learning_rate=np.float32(1e-3), seed=np.uint32(7))
    assert (config.epochs, config.seed) == (2, 7) and config.learning_rate == pytest.approx(1e-3)
    assert TrainingConfig(compile=True).compile == "on" and TrainingConfig(compile=False).compile == "off"


def test_run_config_checks_its_sections_and_the_rules_across_them() -> None:
    config = default_config("ddpm")
    with pytest.raises(
        ConfigError, match=r"sampling.sampling_steps \(2501\) must be at most model.diffusion_steps"
    ):
        dataclasses.replace(config, sampling=SamplingConfig(sampling_steps=2501))
    with pytest.raises(TypeError, match="config must be a DDPMModelConfig, got RealNVPModelConfig"):
        dataclasses.replace(config, model=RealNVPModelConfig())
    with pytest.raises(TypeError, match="config must be a TrainingConfig, got dict"):
        dataclasses.replace(config, training={"epochs": 3})


# -- unknown keys ------------------------------------------------------------------------------------


def test_misspelled_keys_case_names_every_key_with_a_suggestion(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "B17_misspelled_keys.yaml",
        "model:\n  n_coupling_layer: 4\n  hidden_units: 64\n"
        "training:\n  epoch: 3\n  batchsize: 64\n  learning_rte: 0.0005\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, "realnvp")
    message = str(info.value)
    assert str(path) in message
    for wrong, right in [
        ("model.n_coupling_layer", "n_coupling_layers"),
        ("training.epoch", "epochs"),
        ("training.batchsize", "batch_size"),
        ("training.learning_rte", "learning_rate"),
    ]:
        assert re.search(rf"'{re.escape(wrong)}' \(did you mean '{right}'\?\)", message), (wrong, message)
    assert "hidden_units" not in message  # the one correct key is not reported


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("modle:\n  n_hidden: 2\n", "'modle'", "model"),
        ("trainig:\n  epochs: 2\n", "'trainig'", "training"),
        ("model:\n  hiden_units: 8\n", "'model.hiden_units'", "hidden_units"),
        ("training:\n  epocs: 8\n", "'training.epocs'", "epochs"),
        ("data:\n  test_fractoin: 0.2\n", "'data.test_fractoin'", "test_fraction"),
        ("sampling:\n  n_sample: 10\n", "'sampling.n_sample'", "n_samples"),
    ],
)
def test_unknown_key_at_every_level(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, "realnvp")
    message = str(info.value)
    assert key in message and f"did you mean '{suggestion}'" in message and str(path) in message


@pytest.mark.parametrize(
    ("text", "model_type", "home"),
    [
        ("training:\n  points_per_timestep: 4\n", "ddpm", "model.points_per_timestep"),
        ("model:\n  epochs: 4\n", "realnvp", "training.epochs"),
        ("sampling:\n  test_fraction: 0.2\n", "ddpm", "data.test_fraction"),
    ],
)
def test_key_in_the_wrong_section_names_its_section(
    tmp_path: Path, text: str, model_type: str, home: str
) -> None:
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=rf"it belongs in '{re.escape(home)}'"):
        load_config(path, model_type)


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"'sampling.zzz' \(valid keys: n_samples, n_eval"):
        config_from_dict({"sampling": {"zzz": 1}}, "realnvp")


def test_unknown_keys_are_all_listed_across_sections() -> None:
    raw = {"model": {"a_b_c": 1}, "training": {"epochz": 1}, "extra": {}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "realnvp", source="x.yaml")
    message = str(info.value)
    for key in ("'model.a_b_c'", "'training.epochz'", "'extra'"):
        assert key in message


def test_config_of_the_other_model_is_named() -> None:
    with pytest.raises(ConfigError, match="looks like a ddpm config"):
        config_from_dict({"model": {"diffusion_steps": 10, "hidden_units": 8}}, "realnvp")
    with pytest.raises(ConfigError, match="looks like a realnvp config"):
        config_from_dict({"model": {"n_coupling_layers": 4}}, "ddpm")


def test_declared_model_type_must_match() -> None:
    assert config_from_dict({"model_type": "ddpm"}, "ddpm").model_type == "ddpm"
    with pytest.raises(ConfigError, match="is a ddpm config, but a realnvp run"):
        config_from_dict({"model_type": "ddpm"}, "realnvp")


# -- types and ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("training", "epochs", "10"),
        ("training", "epochs", True),
        ("training", "epochs", [1, 2]),
        ("training", "epochs", 2.5),
        ("training", "batch_size", {"a": 1}),
        ("training", "learning_rate", "fast"),
        ("training", "learning_rate", True),
        ("training", "learning_rate", [0.1]),
        ("model", "hidden_units", "128"),
        ("model", "actnorm", "yes"),
        ("model", "activation", "sigmoid"),
        ("data", "path", 5),
        ("data", "drop_invalid", 1),
    ],
)
def test_wrong_type_names_the_key_and_source(section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({section: {key: value}}, "realnvp", source="run.yaml")
    message = str(info.value)
    assert f"{section}.{key}" in message and "run.yaml" in message


@pytest.mark.parametrize(
    ("model_type", "section", "key", "value"),
    [
        ("realnvp", "training", "epochs", 0),
        ("realnvp", "training", "epochs", -3),
        ("realnvp", "training", "batch_size", 0),
        ("realnvp", "training", "learning_rate", 0),
        ("realnvp", "training", "learning_rate", -0.001),
        ("realnvp", "training", "learning_rate", float("nan")),
        ("realnvp", "training", "lr_decay", 1.5),
        ("realnvp", "training", "lr_decay", 0),
        ("realnvp", "training", "ema_decay", 1.0),
        ("realnvp", "model", "hidden_units", 0),
        ("realnvp", "model", "n_coupling_layers", 0),
        ("realnvp", "data", "test_fraction", 1.0),
        ("realnvp", "data", "test_fraction", -0.1),
        ("realnvp", "sampling", "n_samples", 0),
        ("ddpm", "model", "diffusion_steps", 0),
        ("ddpm", "model", "beta2_end", 1.0),
        ("ddpm", "model", "hidden_units", 0),
        ("ddpm", "sampling", "eta", 2.0),
    ],
)
def test_out_of_range_value_names_the_key(model_type: str, section: str, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({section: {key: value}}, model_type, source="run.yaml")
    message = str(info.value)
    assert f"{section}.{key}" in message and "run.yaml" in message


@pytest.mark.parametrize("start, end", [(0.01, 0.1), (0.1, 0.01), (1e-4, 0.07)])
def test_a_schedule_whose_alpha_bar_underflows_is_refused_on_load(start: float, end: float) -> None:
    # ᾱ_L of 1.2e-31, 1.2e-31 and 3.3e-20: the sampler's float32 values overflowed to nan (measured).
    with pytest.raises(ConfigError, match=r"run.yaml: model.beta2_end .* drives ᾱ_L to .*e-(31|20)"):
        config_from_dict({"model": {"beta2_start": start, "beta2_end": end}}, "ddpm", source="run.yaml")
    with pytest.raises(ValueError, match=r"beta2_end"):  # built in Python, too
        DDPMModelConfig(beta2_start=start, beta2_end=end)
    config_from_dict({"model": {"beta2_start": 1e-4, "beta2_end": 0.05}}, "ddpm")  # ᾱ_L 1.5e-14: fine


def test_every_out_of_range_value_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        raw = {"training": {"epochs": 0, "learning_rate": -1}, "model": {"hidden_units": 0}}
        config_from_dict(raw, "realnvp")
    message = str(info.value)
    for key in ("training.epochs", "training.learning_rate", "model.hidden_units"):
        assert key in message


def test_numbers_are_coerced_where_safe() -> None:
    config = config_from_dict(
        {"training": {"epochs": 7.0, "learning_rate": 1}, "model": {"scale_clamp": 2}}, "realnvp"
    )
    assert config.training.epochs == 7 and isinstance(config.training.epochs, int)
    assert config.training.learning_rate == 1.0 and isinstance(config.training.learning_rate, float)
    assert config.model.scale_clamp == 2.0


def test_yaml_scientific_notation_without_a_dot(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-4 and 1e3 as text; the loader reads them as numbers, as YAML 1.2 does.
    path = write_yaml(tmp_path / "c.yaml", "training:\n  learning_rate: 1e-4\n  batch_size: 1e3\n")
    config = load_config(path, "realnvp")
    assert config.training.learning_rate == pytest.approx(1e-4) and config.training.batch_size == 1000


@pytest.mark.parametrize("text", ['"64"', "abc", "1e3x"])
def test_a_number_written_as_text_names_the_key_file_and_value(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path / "c.yaml", f"training:\n  batch_size: {text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, "realnvp")
    message = str(info.value)
    value = repr(yaml.safe_load(text))
    assert str(path) in message and f"training.batch_size must be a number, not text (got {value})" in message


def test_section_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="section 'training' must be a mapping"):
        config_from_dict({"training": [1, 2]}, "realnvp")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        config_from_dict([1, 2], "realnvp")  # type: ignore[arg-type]


# -- aliases and overrides ---------------------------------------------------------------------------


def test_lr_alias() -> None:
    config = config_from_dict({"training": {"lr": 0.005}}, "realnvp")
    assert config.training.learning_rate == 0.005


def test_lr_alias_and_learning_rate_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'training.lr' and 'training.learning_rate' both set"):
        config_from_dict({"training": {"lr": 0.005, "learning_rate": 0.001}}, "realnvp")


def test_lr_alias_is_reported_as_written_outside_training() -> None:
    with pytest.raises(ConfigError, match=r"'model\.lr'"):
        config_from_dict({"model": {"lr": 0.1}}, "realnvp")


def test_with_overrides_applies_and_validates() -> None:
    base = default_config("realnvp")
    config = with_overrides(
        base,
        {
            "training.epochs": 3,
            "training.batch_size": None,  # skipped
            "training.learning_rate": 0.01,
            "data.path": "x.csv",
            "sampling.n_samples": 100,
        },
    )
    assert config.training.epochs == 3
    assert config.training.batch_size == base.training.batch_size
    assert config.training.learning_rate == 0.01
    assert config.data.path == "x.csv"
    assert config.sampling.n_samples == 100
    assert base.training.epochs == 500  # the original is unchanged
    assert with_overrides(base, {"training.lr": 0.02}).training.learning_rate == 0.02
    with pytest.raises(ConfigError, match=r"training\.epochs must be >= 1 \(got 0\)"):
        with_overrides(base, {"training.epochs": 0})
    with pytest.raises(ConfigError, match="'training.epocs'"):
        with_overrides(base, {"training.epocs": 3})
    with pytest.raises(ConfigError, match="'trainng'"):
        with_overrides(base, {"trainng.epochs": 3})
    with pytest.raises(ConfigError, match="must be 'section.key'"):
        with_overrides(base, {"epochs": 3})


def test_with_overrides_keeps_values_from_a_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", "model:\n  hidden_units: 16\ntraining:\n  epochs: 9\n")
    config = with_overrides(load_config(path, "realnvp"), {"training.batch_size": 32})
    assert (config.model.hidden_units, config.training.epochs, config.training.batch_size) == (16, 9, 32)


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_config_to_dict_round_trip(model_type: str) -> None:
    config = with_overrides(default_config(model_type), {"training.epochs": 3, "data.test_fraction": 0.25})
    raw = config_to_dict(config)
    assert set(raw) == {"model_type", "model", "training", "data", "sampling"}
    assert config_from_dict(raw, model_type) == config
    # and through YAML text, as written to OUTPUT_DIR/configs/
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(raw)), model_type) == config


def test_run_config_sections_have_expected_types() -> None:
    config = default_config("ddpm")
    assert isinstance(config, RunConfig)
    assert isinstance(config.training, TrainingConfig)
    assert isinstance(config.data, DataConfig)
    assert isinstance(config.sampling, SamplingConfig)


# -- files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "model:\n"])
def test_empty_yaml_gives_defaults(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path / "empty.yaml", text)
    assert load_config(path, "realnvp") == default_config("realnvp")
    assert load_config(path, "ddpm") == default_config("ddpm")


def test_invalid_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "broken.yaml", "model:\n  n_hidden: 2\n hidden_units: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, "realnvp")
    message = str(info.value)
    assert str(path) in message and "not valid YAML" in message
    assert re.search(r"line \d+, column \d+", message)
    assert "\n" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", "realnvp")


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, "realnvp")


def test_binary_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81\x82")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path, "realnvp")


def test_case_configs_load(tmp_path: Path) -> None:
    training = "training:\n  epochs: 2\n  batch_size: 128\n  learning_rate: 0.001\n  lr_decay: 0.999\n"
    b15 = write_yaml(
        tmp_path / "b15.yaml",
        "model:\n  diffusion_steps: 3\n  beta2_start: 0.0001\n  beta2_end: 0.5\n  time_embed_dim: 32\n"
        "  hidden_units: 64\n" + training,
    )
    b15_config = load_config(b15, "ddpm")
    assert b15_config.model.diffusion_steps == 3 and b15_config.model.beta2_end == 0.5
    b18 = write_yaml(
        tmp_path / "b18.yaml",
        "model:\n  n_coupling_layers: 3\n  n_hidden: 2\n  hidden_units: 17\n" + training,
    )
    b18_config = load_config(b18, "realnvp")
    assert (b18_config.model.n_coupling_layers, b18_config.model.hidden_units) == (3, 17)


def test_a_data_file_given_as_config_is_named_in_a_short_error(tmp_path: Path) -> None:
    rows = "".join(f"{i * 0.37:.17f},{i * -1.9:.17f}\n" for i in range(2000))
    path = write_yaml(tmp_path / "moons.csv", "x,y\n" + rows)  # 100 KB of one YAML string
    with pytest.raises(ConfigError) as info:
        load_config(path, "realnvp")
    message = str(info.value)
    assert "expected a mapping of sections" in message and "The data go to --data" in message
    assert len(message) < 400 and " ...'" in message
