"""Checkpoint evaluation: the metric pieces on known answers, the report, and the evaluate / compare commands."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from genmodels.cli import main
from genmodels.config import default_config, with_overrides
from genmodels.data import make_checkerboard, make_text
from genmodels.evaluation.scoring import (
    compare_table,
    entropy_reference,
    evaluate_checkpoint,
    format_report,
    looks_like_text,
    mode_coverage,
    sample_metrics,
)
from genmodels.train.checkpoint import build_model, save_checkpoint

TINY = {
    "realnvp": {"model.n_coupling_layers": 2, "model.hidden_units": 8},
    "ddpm": {
        "model.diffusion_steps": 10,
        "model.hidden_units": 8,
        "model.n_blocks": 1,
        "model.time_embed_dim": 4,
    },
}


def tiny_checkpoint(tmp_path, model_type: str, points: np.ndarray) -> str:
    config = with_overrides(default_config(model_type), TINY[model_type])
    torch.manual_seed(0)
    model = build_model(config, 2)
    train = torch.as_tensor(points[:400], dtype=torch.float32)
    model.set_standardization(train.mean(0), train.std(0))
    path = tmp_path / model_type / "checkpoints" / f"{model_type}.pt"
    save_checkpoint(
        path,
        config=config,
        model=model,
        dim=2,
        columns=("x", "y"),
        test_data=torch.as_tensor(points[400:], dtype=torch.float32),
    )
    return str(path)


def test_entropy_reference_uses_the_closed_form_when_the_generator_is_named() -> None:
    points = make_checkerboard(2000, seed=0)
    named = entropy_reference(points, dataset="checkerboard")
    assert named["source"] == "exact" and named["value"] == pytest.approx(math.log(8.0))
    assert named["knn"] == pytest.approx(math.log(8.0), abs=0.15)
    unnamed = entropy_reference(points)
    assert unnamed["source"] == "knn" and unnamed["exact"] is None and unnamed["se"] > 0


def test_entropy_reference_warns_when_the_data_do_not_match_the_named_generator(caplog) -> None:
    with caplog.at_level("WARNING", logger="genmodels.evaluation.scoring"):
        for n in (300, 6554):  # the estimator's edge bias is largest at few points; no warning
            entropy_reference(make_checkerboard(n, seed=1), dataset="checkerboard")
        assert not caplog.records
        rescaled = entropy_reference(3.0 * make_checkerboard(2000, seed=0), dataset="checkerboard")
    assert rescaled["value"] == pytest.approx(math.log(8.0))  # the exact value, as asked
    assert rescaled["knn"] == pytest.approx(math.log(8.0) + 2 * math.log(3.0), abs=0.15)
    (record,) = caplog.records
    assert "do not look drawn from checkerboard" in record.getMessage() and "2.079" in record.getMessage()


def test_mode_coverage_counts_a_missing_digit() -> None:
    real = make_text(3000, seed=0, background=0.0)
    generated = real[np.isin(np.arange(len(real)), np.flatnonzero(real[:, 0] < 0.45))]  # drop the 9
    cov = mode_coverage(generated, real)
    shares = {g["char"]: g for g in cov["glyphs"]}
    assert shares["9"]["generated"] < 0.02 < 0.25 < shares["9"]["real"]
    assert shares["6"]["generated"] > shares["6"]["real"]
    assert cov["max_abs_difference"] > 0.25
    assert sum(g["real"] for g in cov["glyphs"]) + cov["outside"]["real"] == pytest.approx(1.0)
    assert looks_like_text(real) and not looks_like_text(make_checkerboard(1000, seed=0))


def test_sample_metrics_sit_at_the_floor_for_real_samples() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 2))
    out = sample_metrics(rng.normal(size=(200, 2)), real, n_boot=3)
    assert out["n_eval"] == 200
    for key in ("c2st_mlp", "c2st_hgb", "energy", "mmd", "sliced_w2"):
        lo, hi = out[key]["interval"]
        assert lo <= hi and math.isfinite(out[key]["floor"])
    assert abs(out["c2st_mlp"]["value"] - 0.5) < 0.12
    shifted = sample_metrics(rng.normal(size=(200, 2)) + 3.0, real, n_boot=3)
    assert shifted["c2st_mlp"]["value"] > 0.9 and shifted["energy"]["value"] > 10 * abs(
        out["energy"]["value"]
    )
    with pytest.raises(ValueError, match="too few"):
        sample_metrics(real[:5], real)


@pytest.mark.parametrize("model_type", ["realnvp", "ddpm"])
def test_evaluate_checkpoint_on_its_held_out_split(tmp_path, model_type: str) -> None:
    points = make_text(700, seed=1)
    path = tiny_checkpoint(tmp_path, model_type, points)
    result = evaluate_checkpoint(path, n_samples=300, n_points={"bound": 50, "ode": 20}, n_boot=2)
    m = result.metrics
    assert m["n_real"] == 300 and m["samples"]["n_eval"] == 150
    expected = {"realnvp": {"exact"}, "ddpm": {"bound", "ode"}}[model_type]
    assert set(m["likelihood"]) == expected
    for entry in m["likelihood"].values():
        assert math.isfinite(entry["value"]) and entry["per_dim"] == pytest.approx(entry["value"] / 2)
        assert entry["gap"] == pytest.approx(entry["value"] - m["entropy"]["value"])
    assert m["mode_coverage"] is not None and m["mode_coverage"]["text"] == "689"
    report = format_report(m)
    assert "gap" in report and "floor" in report and "inside '8'" in report
    table = compare_table([(model_type, m)])
    assert table.startswith("| metric |") and "C2ST" in table


def test_evaluate_and_compare_commands(tmp_path, capsys, monkeypatch, caplog) -> None:
    points = make_text(700, seed=2)
    nvp = tiny_checkpoint(tmp_path, "realnvp", points)
    ddpm = tiny_checkpoint(tmp_path, "ddpm", points)
    out_json = tmp_path / "eval.json"
    fast = ["-n", "200", "--n_boot", "2", "--ode_points", "10", "--bound_points", "20"]
    assert main(["evaluate", ddpm, "--output", str(out_json), *fast]) == 0
    saved = json.loads(out_json.read_text())
    assert saved["model"] == "ddpm" and "ode" in saved["likelihood"]
    assert "per_dim, per_dim_se: nats per dimension" in saved["units"]["likelihood"]
    assert "probability-flow ODE" in capsys.readouterr().out

    out_dir = tmp_path / "cmp"
    args = ["compare", "--realnvp", nvp, "--ddpm", ddpm, "--output_dir", str(out_dir), *fast]
    assert main(args) == 0
    assert (out_dir / "compare.md").read_text().startswith("| metric |")
    assert (out_dir / "figures" / "compare.png").stat().st_size > 10_000
    from genmodels.plots import figures as plotting

    titles = []
    real_plot = plotting.plot_compare

    def recording_plot(*args, suptitle, **kwargs):
        titles.append(suptitle)
        return real_plot(*args, suptitle=suptitle, **kwargs)

    monkeypatch.setattr(plotting, "plot_compare", recording_plot)
    with caplog.at_level(logging.INFO, logger="genmodels"):
        assert main(["compare", str(tmp_path / "realnvp"), "--output_dir", str(out_dir), *fast]) == 0
    assert titles == ["RealNVP and the data"]
    evaluating = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluating")]
    assert evaluating == [f"evaluating realnvp ({tmp_path / 'realnvp'})"]  # the run's folder, named once
    assert main(["evaluate", ddpm, "--dataset", "nope"]) == 2
    assert main(["compare", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    assert main(["evaluate", ddpm, "--output", str(tmp_path), *fast]) == 2
    assert "--output " + str(tmp_path) + " is a folder" in capsys.readouterr().err
    assert main(["compare", "--realnvp", ddpm, *fast]) == 2  # a DDPM passed as the RealNVP
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(ddpm) in err and "ddpm" in err and "realnvp" in err
    # DDPM-only options are refused for a RealNVP, instead of being silently ignored; negative ones too.
    assert main(["evaluate", nvp, "--ode_points", "10", "--output", str(out_json)]) == 2
    err = capsys.readouterr().err
    assert "--ode_points" in err and "DDPM" in err and "realnvp" in err
    assert main(["evaluate", nvp, "--ode_points", "5", "--bound_points", "5"]) == 2
    assert "--ode_points and --bound_points apply only" in capsys.readouterr().err
    assert main(["evaluate", ddpm, "--bound_points", "-1"]) == 2
    assert "--bound_points must be >= 0 (got -1)" in capsys.readouterr().err
    assert saved == json.loads(out_json.read_text())  # the refused run left the earlier metrics alone


def test_accuracy_intervals_are_wilson_intervals_within_0_and_1() -> None:
    from genmodels.evaluation.metrics import wilson_interval

    # Known answers: 50 of 100 gives [0.4038, 0.5962]; 100 of 100 gives [0.9630, 1].
    assert wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=5e-5)
    assert wilson_interval(1.0, 100) == pytest.approx((0.96300, 1.0), abs=5e-5)
    for acc in (0.0, 0.001, 0.9983, 0.99, 1.0):  # the accuracies of samples far from the data
        lo, hi = wilson_interval(acc, 1000)
        assert 0.0 <= lo <= acc <= hi <= 1.0


def test_report_numbers_of_any_size_stay_short() -> None:
    from genmodels.evaluation.scoring import _fmt

    assert [_fmt(v) for v in (1.2345678, 0.00012345, 2.705589901536181e29, -3e7, 0.0, math.nan)] == [
        "1.2346", "0.0001234", "2.706e+29", "-3e+07", "0.0000", "n/a",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("n_samples", "n_test", "named"),
    [(1, 200, "too few samples (1; raise sampling.n_samples"), (200, 5, "too few held-out points (5;")],
)
def test_a_skipped_two_sample_test_names_the_side_with_too_few_points(
    caplog: pytest.LogCaptureFixture, n_samples: int, n_test: int, named: str
) -> None:
    from genmodels.evaluation.sampling import evaluate_samples

    rng = np.random.default_rng(0)
    with caplog.at_level("WARNING"):
        out = evaluate_samples(
            rng.normal(size=(n_samples, 2)), rng.normal(size=(n_test, 2)), rng.normal(size=(300, 2)), seed=0
        )
    assert out["n_eval"] == min(n_samples, n_test) and math.isnan(out["c2st"])
    assert any(named in r.getMessage() and "c2st skipped" in r.getMessage() for r in caplog.records)


def test_training_metrics_report_the_samples_tails_beside_the_held_out_points():
    from genmodels.evaluation.sampling import evaluate_samples

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(2000, 2)), rng.normal(size=(400, 2))
    samples = rng.normal(size=(1000, 2))
    samples[:5] = 1e4  # five points thrown far away, as a sampler's rare failures
    out = evaluate_samples(samples, test, train, seed=0)
    assert out["far_share"] == pytest.approx(5 / 1000) and out["far_share_floor"] == 0.0
    assert out["max_distance"] == pytest.approx(np.max(np.abs((1e4 - train.mean(0)) / train.std(0))))
    assert out["max_distance_floor"] < 6
    # the tails count every sample, the C2ST only the first n_eval: far points beyond them still show
    samples[:5], samples[-3:] = 0.0, 1e4
    out = evaluate_samples(samples, test, train, seed=0, n_eval=300)
    assert out["n_eval"] == 300 and out["far_share"] == pytest.approx(3 / 1000)
