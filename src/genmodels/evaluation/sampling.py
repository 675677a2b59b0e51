"""The one path from a trained model to scored samples: :func:`sample_model` draws them, :func:`finite_samples`
drops the unusable ones, :func:`two_sample_scores` compares them with real points beside a floor, and
:func:`evaluate_samples` is the C2ST summary a training run stores."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from genmodels.evaluation import metrics as M
from genmodels.models import ModelSpec, get_spec, model_names
from genmodels.train import distributed
from genmodels.train.acceleration import autocast

log = logging.getLogger(__name__)
Pair = tuple[np.ndarray, np.ndarray]


def spec_of(model: nn.Module) -> ModelSpec:
    """The registered spec whose ``model_class`` ``model`` is an instance of."""
    for name in model_names():
        if isinstance(model, get_spec(name).model_class):
            return get_spec(name)
    raise TypeError(f"{type(model).__name__} is not a registered model")


@torch.no_grad()
def sample_model(
    model: nn.Module,
    n: int,
    *,
    seed: int,
    chunk_size: int = 4096,
    sampling_steps: int = 0,
    eta: float = 1.0,
    precision: str = "float32",
    ddim_spacing: str = "quadratic",
    ddim_order: int = 2,
    guidance_scale: float = 1.0,
    label: int | np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Draw ``n`` samples ``(n, D)`` in data units, ``chunk_size`` at a time, chunk k seeded by ``(seed, k)``
    (processes under torchrun share the chunks), with the settings the spec's ``sample_options`` names; given
    ``label`` (an int, or ``(n,)`` indices, e.g. :func:`draw_labels`), from p(x | label). ``progress``: a
    progress bar of the points drawn, shown where the drawing takes over 2 s."""
    from tqdm.auto import tqdm

    settings = {"sampling_steps": sampling_steps or None, "eta": eta, "ddim_spacing": ddim_spacing,
                "ddim_order": ddim_order, "guidance_scale": guidance_scale}  # fmt: skip
    options = {option: settings[key] for option, key in spec_of(model).sample_options.items()}
    device = next(model.buffers()).device
    labels = None if label is None else torch.as_tensor(np.broadcast_to(label, (n,)).copy(), device=device)
    chunks = {}
    bar = tqdm(total=n, desc="sample", unit="point", delay=2.0, disable=not progress, dynamic_ncols=True)
    with autocast(device, precision), bar:
        for k in distributed.chunks_of_this_process(math.ceil(n / chunk_size)):
            key = seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
            generator = torch.Generator(device=device).manual_seed(key)
            given = {} if labels is None else {"label": labels[k * chunk_size : (k + 1) * chunk_size]}
            chunk = model.sample(min(chunk_size, n - k * chunk_size), generator=generator, **options, **given)
            chunks[k] = chunk.cpu().double().numpy()
            bar.update(len(chunk))
    samples = np.concatenate(distributed.gather_chunks(chunks)) if n else np.zeros((0, model.dim))
    _warn_far_samples(model, samples)
    return samples


def draw_labels(model: nn.Module, n: int, seed: int) -> np.ndarray | None:
    """``n`` label indices ``(n,)`` drawn (seeded) in a conditional model's training proportions, else None."""
    if not getattr(model, "n_labels", 0):
        return None
    proportions = model.label_proportions.detach().cpu().double().numpy()
    return np.random.default_rng(seed).choice(len(proportions), size=n, p=proportions / proportions.sum())


FAR_SAMPLE_STDS = 50.0  # training standard deviations from the mean that draw a warning (docs/evaluation.md)


def _warn_far_samples(model: nn.Module, samples: np.ndarray) -> None:
    mean, std = (t.detach().cpu().double().numpy() for t in (model.standardize.mean, model.standardize.std))
    with np.errstate(invalid="ignore", over="ignore"):
        distance = np.abs((samples - mean) / std).max(1)
    if (far := distance > FAR_SAMPLE_STDS).any():
        log.warning("%d of %d samples lie more than %g training standard deviations from the training mean (up "
                    "to %.3g): the model puts a little mass far outside the data (a flow's stretched tails, an "
                    "undertrained DDPM); such outliers skew means and plots",
                    int(far.sum()), len(samples), FAR_SAMPLE_STDS, float(np.nanmax(distance[far])))  # fmt: skip


def finite_samples(samples: np.ndarray) -> np.ndarray:
    """The rows of ``samples (N, D)`` that are finite, as float64; warns when some are left out."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = np.isfinite(samples).all(axis=1)
    if not finite.all():
        log.warning("%d of %d samples are not finite; they are left out", int((~finite).sum()), len(samples))
    return samples[finite]


def two_sample_scores(
    real: np.ndarray,
    generated: np.ndarray,
    floor_pair: Pair | None,
    names: Sequence[str],
    *,
    n_boot: int = 0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each statistic in ``names`` (c2st_mlp, c2st_hgb, energy, mmd, sliced_w2) of ``real`` against ``generated``,
    beside its floor (the statistic of ``floor_pair``; NaN without) and a 95 % interval (bootstrap of ``n_boot >= 2``
    for the distances, else Wilson's on ``2 n`` predictions): ``{name: {value, interval, interval_kind, floor, seconds}}``."""
    statistics: dict[str, tuple[M.Statistic, bool]] = {  # with whether its interval is a bootstrap one
        "c2st_mlp": (lambda a, b: M.c2st(a, b, seed=seed), False),
        "c2st_hgb": (lambda a, b: M.c2st(a, b, seed=seed, classifier="hgb"), False),
        "energy": (M.energy_distance, True),
        "mmd": (M.mmd, True),
        "sliced_w2": (lambda a, b: M.sliced_wasserstein(a, b, seed=seed), True),
    }
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        (stat, bootstrap), start = statistics[name], time.perf_counter()
        value = float(stat(real, generated))
        floor = math.nan if floor_pair is None else float(stat(*floor_pair))
        if bootstrap and n_boot >= 2:
            lo, hi = M.bootstrap_interval(stat, real, generated, n_boot=n_boot, seed=seed)
            kind = f"bootstrap 95% ({n_boot} replicates)"
        else:
            lo, hi = M.wilson_interval(value, 2 * len(generated))
            kind = "binomial 95% (Wilson)"
        interval, seconds = [float(lo), float(hi)], time.perf_counter() - start
        out[name] = dict(value=value, interval=interval, interval_kind=kind, floor=floor, seconds=seconds)
    return out


_ACCURACY = "classifier accuracy (0.5: indistinguishable)"
_FAR = "share of points beyond the training data's box widened by half its range"
_STDS = "training standard deviations from the training mean"
METRIC_UNITS: dict[str, str] = {  # a run's metrics file's "units" entry: what its numbers are
    **dict.fromkeys(("train_seconds", "sample_seconds"), "seconds"),
    **dict.fromkeys(("train_nll", "test_nll"), "nats per point"),
    "test_nll_per_dim": "nats per dimension",
    "test_nll_bound": "nats per point (upper bound on the NLL)",
    "test_nll_bound_per_dim": "nats per dimension (upper bound on the NLL)",
    **dict.fromkeys(("c2st", "c2st_floor", "c2st_hgb", "c2st_hgb_floor"), _ACCURACY),
    **dict.fromkeys(("far_share", "far_share_floor"), _FAR),
    **dict.fromkeys(("max_distance", "max_distance_floor"), _STDS),
}


def label_classifier(points: np.ndarray, labels: np.ndarray, seed: int) -> Any:
    """A histogram gradient-boosted tree classifier of the labels ``(N,)`` of real ``points (N, D)``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return HistGradientBoostingClassifier(random_state=seed).fit(points, labels)


def per_label_scores(
    samples: Pair, test: Pair, train: Pair, names: Sequence[str], *, seed: int, classifier: Any = None
) -> dict[str, dict[str, float]]:
    """Per label name: the C2ST (trees) of its samples against its held-out points beside its floor (its training
    against its held-out points), and the share of its samples, and of its held-out points, that ``classifier``
    (else :func:`label_classifier`) assigns to it. Each pair is ``(points (N, D), label indices (N,))``."""
    classifier = classifier or label_classifier(*train, seed)
    predicted, predicted_real = classifier.predict(samples[0]), classifier.predict(test[0])
    out = {}
    for k, name in enumerate(names):
        mine, real = samples[1] == k, test[1] == k
        entry = {"n_samples": int(mine.sum()), "n_test": int(real.sum()),
                 "label_accuracy": float(np.mean(predicted[mine] == k)) if mine.any() else math.nan,
                 "label_accuracy_real": float(np.mean(predicted_real[real] == k)) if real.any() else math.nan}  # fmt: skip
        scores = evaluate_samples(
            samples[0][mine], test[0][real], train[0][train[1] == k], seed=seed, names=("c2st_hgb",)
        )
        out[name] = entry | {key: scores[key] for key in ("c2st_hgb", "c2st_hgb_floor")}
    return out


def evaluate_samples(
    samples: np.ndarray,
    real_test: np.ndarray,
    real_train: np.ndarray | None,
    *,
    seed: int,
    names: Sequence[str] = ("c2st_mlp", "c2st_hgb"),
    n_eval: int = 0,
) -> dict:
    """C2ST (``names``) of ``samples`` against the held-out points, each beside its floor (as many training points
    against them; NaN without ``real_train``), and the samples' and held-out points' (``_floor``) ``tail_metrics``
    against the training points: ``{"n_eval", "far_share", "max_distance", "c2st", "c2st_hgb", ..._floor}``. The
    C2ST takes the first ``n_eval`` samples (0: all), the tails every sample."""
    tails = {}
    if real_train is not None and len(real_train) and len(real_test):
        for key, points in (("", samples), ("_floor", real_test)):
            tails.update({name + key: value for name, value in M.tail_metrics(points, real_train).items()})
    scored = samples[: n_eval or None]
    n = min(len(scored), len(real_test))
    rng = np.random.default_rng(seed)
    gen = scored[rng.choice(len(scored), n, replace=False)]
    test = real_test[rng.choice(len(real_test), n, replace=False)]
    out: dict[str, Any] = {"n_eval": int(n), **tails}
    out.update(c2st=math.nan, c2st_hgb=math.nan, c2st_floor=math.nan, c2st_hgb_floor=math.nan)
    if n < M.MIN_TWO_SAMPLE_POINTS:
        fewest = f"samples ({len(scored)}; raise sampling.n_samples, --n_samples)"
        if len(scored) >= len(real_test):
            fewest = f"held-out points ({len(real_test)}; raise data.test_fraction)"
        log.warning("too few %s for a two-sample test (at least %d are needed); c2st skipped", fewest,
                    M.MIN_TWO_SAMPLE_POINTS)  # fmt: skip
        return out
    floor_pair = None
    if real_train is not None:
        other = real_train[rng.choice(len(real_train), min(n, len(real_train)), replace=False)]
        floor_pair = (other[: len(test)], test[: len(other)])
        if len(other) < M.MIN_TWO_SAMPLE_POINTS:
            log.warning("too few training points (%d) for the c2st floor; floor skipped", len(other))
            floor_pair = None
    scores = two_sample_scores(test, gen, floor_pair, names, seed=seed)  # the real points' scale for both
    for key, name in (("c2st", "c2st_mlp"), ("c2st_hgb", "c2st_hgb")):
        if name in scores:
            out[key], out[f"{key}_floor"] = scores[name]["value"], scores[name]["floor"]
    return out
