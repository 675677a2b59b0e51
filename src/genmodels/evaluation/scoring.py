"""Evaluation of a trained checkpoint on held-out data, every number beside its reference.

:func:`evaluate_checkpoint` loads a RealNVP or DDPM checkpoint and measures, on the held-out split
stored with the run (or on points given):

Likelihood (nats per sample and per dimension, in the data's own units)
    RealNVP's exact NLL; DDPM's variational bound (:meth:`genmodels.models.ddpm.DDPM.nll_bound`) and its exact
    NLL through the probability-flow ODE (:mod:`genmodels.models.flow_ode`), each on a random subset whose size
    is reported, with standard errors ``std / sqrt(n)``. The reference is the data's differential
    entropy -- the lowest NLL any model can reach in expectation (``E[-log q] = H(p) + KL(p || q)``):
    the Kozachenko-Leonenko estimate (:func:`genmodels.evaluation.metrics.knn_entropy`) with its standard
    error, and the closed form (:func:`genmodels.data.exact_entropy`) when the data's generator is
    named. The gap ``NLL - entropy`` estimates the KL divergence; its standard error adds the two in
    quadrature.

Sample quality
    C2ST (MLP and gradient-boosted trees), energy distance, MMD² (Gaussian kernel, median heuristic)
    and sliced W2 between ``n_eval`` generated points and ``n_eval`` real points, each beside its
    floor: the same statistic between those real points and ``n_eval`` *other* real points (the real
    data are split into two disjoint halves, so ``n_eval <= N_real // 2``), i.e. what a perfect model
    scores at the same sample sizes. Energy, MMD and sliced W2 carry a bias-corrected percentile
    bootstrap interval (:func:`genmodels.evaluation.metrics.bootstrap_interval`); a bootstrap of the C2ST would retrain its
    classifier hundreds of times, so its interval is the binomial one of the cross-validated
    accuracy on ``2 n_eval`` test predictions, ``acc ± 1.96 sqrt(acc (1 - acc) / (2 n_eval))``.

Mode coverage (text data)
    The share of generated and of real points inside each glyph (:func:`genmodels.data.glyph_labels`)
    and outside all of them, so a missing or merged character shows as a number.

Every random choice is seeded; the result is a JSON-ready dict (see :func:`evaluate_model`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.evaluation import metrics as M

__all__ = [
    "Evaluation",
    "evaluate_checkpoint",
    "evaluate_model",
    "likelihood_metrics",
    "sample_metrics",
    "mode_coverage",
    "entropy_reference",
    "looks_like_text",
    "format_report",
    "compare_table",
    "log_density_grid",
]

log = logging.getLogger(__name__)

#: Shares inside the glyphs above which 2-D data are taken to be the rendered text.
_TEXT_MIN_INSIDE = 0.5
_TEXT_MIN_PER_GLYPH = 0.1


@dataclass
class Evaluation:
    """What :func:`evaluate_model` measured (``metrics``, JSON-ready) and the arrays behind it."""

    metrics: dict[str, Any]
    samples: np.ndarray
    real: np.ndarray
    model: torch.nn.Module | None = None
    columns: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), se


# How far (beyond 4 standard errors) the k-NN entropy of a dataset's points may fall from its exact
# entropy before ``entropy_reference`` warns that they may not come from it. The estimator's own bias at
# sharp edges stays below this: checkerboard is +0.18 nats at 300 points, +0.04 at 6,554.
ENTROPY_MISMATCH_NATS = 0.25


def entropy_reference(real: np.ndarray, *, dataset: str | None = None, k: int = 3) -> dict[str, Any]:
    """The likelihood floor: the data's differential entropy in nats.

    Args:
        real: the evaluation points ``(N, D)``.
        dataset: the generator that made them (:data:`genmodels.data.GENERATORS`, default options),
            for the closed-form entropy where one exists. Logs a warning where the points' k-NN
            estimate is far from it (:data:`ENTROPY_MISMATCH_NATS`): they may come from elsewhere.
        k: neighbour order of the Kozachenko-Leonenko estimate.

    Returns:
        ``{"knn": value, "knn_se": se, "knn_k": k, "n": N, "exact": value or None, "dataset": name,
        "value": exact if known else knn, "se": 0 if exact else knn_se, "source": "exact"|"knn"}``.
    """
    from genmodels.data import exact_entropy

    out: dict[str, Any] = {"n": int(len(real)), "knn_k": int(k), "dataset": dataset, "exact": None}
    try:
        h, se = M.knn_entropy(real, k=k)
    except ValueError as error:  # duplicated points
        log.warning("k-NN entropy skipped: %s", error)
        h, se = math.nan, math.nan
    out["knn"], out["knn_se"] = h, se
    if dataset is not None:
        out["exact"] = exact_entropy(dataset)
    exact = out["exact"]
    if exact is not None and math.isfinite(h) and abs(h - exact) > ENTROPY_MISMATCH_NATS + 4 * se:
        log.warning(
            "the data do not look drawn from %s: their k-NN entropy is %.3f ± %.3f nats, its exact "
            "entropy %.3f; the gaps to H use the exact value as asked, and are off by the difference "
            "if the data came from elsewhere (or were rescaled)",
            dataset, h, se, exact,
        )  # fmt: skip
    if out["exact"] is not None:
        out.update(value=float(out["exact"]), se=0.0, source="exact")
    else:
        out.update(value=h, se=se, source="knn")
    return out


def _nll_entry(nll: np.ndarray, dim: int, entropy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    mean, se = _mean_se(nll)
    gap_se = math.sqrt(se**2 + (entropy["se"] or 0.0) ** 2) if math.isfinite(se) else math.nan
    return {
        "value": mean,
        "se": se,
        "per_dim": mean / dim,
        "per_dim_se": se / dim,
        "n": int(len(nll)),
        "gap": mean - entropy["value"],
        "gap_se": gap_se,
        **extra,
    }


def likelihood_metrics(
    model: torch.nn.Module,
    model_type: str,
    real: np.ndarray,
    *,
    entropy: dict[str, Any],
    n_bound: int = 1000,
    n_ode: int = 1000,
    seed: int = 0,
    ode_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Held-out negative log-likelihoods (nats, data units) with standard errors and gaps to ``entropy``.

    RealNVP: ``"exact"`` on every point. DDPM: ``"bound"`` (the variational bound, all L steps) on
    ``n_bound`` random points and ``"ode"`` (the probability-flow ODE) on ``n_ode`` random points
    (0 skips either). Returns ``{name: {value, se, per_dim, n, gap, gap_se, seconds, ...}}``.
    """
    dim = real.shape[1]
    rng = np.random.default_rng(seed)
    device = next(model.buffers()).device
    out: dict[str, Any] = {}

    def subset(n: int) -> torch.Tensor:
        idx = np.sort(rng.choice(len(real), size=min(n, len(real)), replace=False))
        return torch.as_tensor(real[idx], dtype=torch.float32, device=device)

    if model_type == "realnvp":
        start = time.perf_counter()
        x = torch.as_tensor(real, dtype=torch.float32, device=device)
        with torch.no_grad():
            nll = torch.cat([-model.log_prob(b) for b in x.split(65536)]).double().cpu().numpy()
        out["exact"] = _nll_entry(nll, dim, entropy, seconds=time.perf_counter() - start)
        return out
    if n_bound > 0:
        start = time.perf_counter()
        x = subset(n_bound)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            nll = model.nll_bound(x, generator=generator).double().cpu().numpy()
        out["bound"] = _nll_entry(nll, dim, entropy, seconds=time.perf_counter() - start)
    if n_ode > 0:
        from genmodels.models.flow_ode import probability_flow_log_prob

        start = time.perf_counter()
        x = subset(n_ode)
        options = {"rtol": 1e-5, "atol": 1e-5, **(ode_options or {})}
        flow = probability_flow_log_prob(model, x, **options)
        nll = (-flow.log_prob).cpu().numpy()
        out["ode"] = _nll_entry(
            nll, dim, entropy, seconds=time.perf_counter() - start, nfe=flow.nfe, **options
        )
    return out


def _binomial_interval(acc: float, n_test: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of an accuracy ``acc`` on ``n_test`` trials: unlike
    ``acc ± z·SE`` it stays within [0, 1], also at accuracies near 0 or 1."""
    n = max(n_test, 1)
    shrink = 1 + z * z / n
    center = (acc + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(max(acc * (1 - acc), 0.0) / n + z * z / (4 * n * n))
    return max(center - half, 0.0), min(center + half, 1.0)


def sample_metrics(
    generated: np.ndarray,
    real: np.ndarray,
    *,
    n_eval: int | None = None,
    n_boot: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Two-sample statistics of ``generated`` against real points, each with its floor and interval.

    The real points are shuffled (seeded) and split into halves A and B; ``n_eval`` (default and at
    most ``min(len(generated), len(real) // 2)``) points of the generated sample are compared with
    ``n_eval`` points of A (the model's value), and ``n_eval`` points of B with the same points of A
    (the floor). Returns ``{"n_eval": n, "n_boot": b, name: {"value", "interval": [lo, hi],
    "interval_kind", "floor"}}`` for ``c2st_mlp``, ``c2st_hgb``, ``energy``, ``mmd``, ``sliced_w2``.
    """
    rng = np.random.default_rng(seed)
    half = len(real) // 2
    n = min(len(generated), half) if n_eval is None else min(int(n_eval), len(generated), half)
    if n < M.MIN_TWO_SAMPLE_POINTS:
        raise ValueError(
            f"too few points for the two-sample tests: {n} (need >= {M.MIN_TWO_SAMPLE_POINTS} per sample)"
        )
    perm = rng.permutation(len(real))
    real_a, real_b = real[perm[:n]], real[perm[half : half + n]]
    gen = generated[rng.choice(len(generated), size=n, replace=False)]

    statistics: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
        "c2st_mlp": (lambda a, b: M.c2st(a, b, seed=seed), False),
        "c2st_hgb": (lambda a, b: M.c2st(a, b, seed=seed, classifier="hgb"), False),
        "energy": (M.energy_distance, True),
        "mmd": (M.mmd, True),
        "sliced_w2": (lambda a, b: M.sliced_wasserstein(a, b, seed=seed), True),
    }
    out: dict[str, Any] = {"n_eval": int(n), "n_boot": int(n_boot)}
    for name, (stat, bootstrap) in statistics.items():
        start = time.perf_counter()
        value = float(stat(real_a, gen))
        floor = float(stat(real_a, real_b))
        if bootstrap and n_boot >= 2:
            lo, hi = M.bootstrap_interval(stat, real_a, gen, n_boot=n_boot, seed=seed)
            kind = f"bootstrap 95% ({n_boot} replicates)"
        else:
            lo, hi = _binomial_interval(value, 2 * n)
            kind = "binomial 95% (Wilson)"
        out[name] = {
            "value": value,
            "interval": [float(lo), float(hi)],
            "interval_kind": kind,
            "floor": floor,
            "seconds": time.perf_counter() - start,
        }
    return out


def looks_like_text(points: np.ndarray, text: str = "689") -> bool:
    """Whether 2-D points look like :func:`genmodels.data.make_text` of ``text``: at least half of them
    inside the glyphs and at least a tenth of them inside each glyph."""
    from genmodels.data import glyph_labels

    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        return False
    try:
        labels = glyph_labels(points, text)
    except ValueError:
        return False
    shares = np.bincount(labels + 1, minlength=len(text) + 1) / len(labels)
    inked = [i + 1 for i, ch in enumerate(text) if not ch.isspace()]
    return bool(1.0 - shares[0] >= _TEXT_MIN_INSIDE and all(shares[i] >= _TEXT_MIN_PER_GLYPH for i in inked))


def mode_coverage(generated: np.ndarray, real: np.ndarray, text: str = "689") -> dict[str, Any]:
    """Share of generated vs real points inside each glyph of ``text`` and outside them all.

    Returns ``{"text": text, "glyphs": [{"char", "real", "generated", "real_se", "generated_se",
    "ratio"}, ...], "outside": {...}, "max_abs_difference": float}``; the standard errors are binomial,
    ``sqrt(p (1 - p) / n)``.
    """
    from genmodels.data import glyph_labels

    def shares(points: np.ndarray) -> tuple[np.ndarray, int]:
        labels = glyph_labels(points, text)
        return np.bincount(labels + 1, minlength=len(text) + 1) / len(labels), len(labels)

    p_real, n_real = shares(real)
    p_gen, n_gen = shares(generated)

    def entry(i: int, char: str | None) -> dict[str, Any]:
        return {
            "char": char,
            "real": float(p_real[i]),
            "generated": float(p_gen[i]),
            "real_se": float(math.sqrt(p_real[i] * (1 - p_real[i]) / n_real)),
            "generated_se": float(math.sqrt(p_gen[i] * (1 - p_gen[i]) / n_gen)),
            "ratio": float(p_gen[i] / p_real[i]) if p_real[i] > 0 else math.nan,
        }

    glyphs = [entry(i + 1, ch) for i, ch in enumerate(text) if not ch.isspace()]
    return {
        "text": text,
        "n_real": int(n_real),
        "n_generated": int(n_gen),
        "glyphs": glyphs,
        "outside": entry(0, None),
        "max_abs_difference": float(np.max(np.abs(p_gen - p_real))),
    }


# --------------------------------------------------------------------------------------------------
# A whole checkpoint
# --------------------------------------------------------------------------------------------------


# Stored as the "units" entry of :func:`evaluate_model`'s metrics, so a metrics file says what its numbers are.
UNITS: dict[str, str] = {
    "entropy": "value, se: nats per point (natural logarithm, in the data's own coordinates)",
    "likelihood": "value, se, gap, gap_se: nats per point; per_dim, per_dim_se: nats per dimension",
    "samples": (
        "c2st_mlp, c2st_hgb: classifier accuracy (0.5: indistinguishable); energy, sliced_w2: data "
        "units; mmd: squared MMD of a Gaussian kernel (no units)"
    ),
    "seconds": "seconds",
}


def evaluate_model(
    model: torch.nn.Module,
    model_type: str,
    real: np.ndarray,
    *,
    n_samples: int = 3000,
    n_eval: int | None = None,
    n_bound: int = 1000,
    n_ode: int = 1000,
    n_boot: int = 10,
    dataset: str | None = None,
    text: str | None = None,
    seed: int = 0,
    samples: np.ndarray | None = None,
    ode_options: dict[str, Any] | None = None,
) -> Evaluation:
    """Every metric of one model on the real points ``real (N, D)`` (module docstring).

    Args:
        model: a RealNVP or DDPM in eval mode.
        model_type: ``"realnvp"`` or ``"ddpm"``.
        real: the evaluation points, data units.
        n_samples: samples drawn (DDPM: full ancestral sampling through all L steps).
        n_eval: points per sample in the two-sample tests (default ``min(n_samples, N // 2)``).
        n_bound, n_ode: DDPM points for the variational bound and the ODE likelihood.
        n_boot: bootstrap replicates of the interval of each cheap two-sample statistic.
        dataset: the generator that made the data, for the closed-form entropy.
        text: the rendered string for mode coverage; ``None`` detects "689" text
            (:func:`looks_like_text`) or takes it from ``dataset == "text"``.
        seed: seed of every random choice.
        samples: use these generated points instead of sampling.
        ode_options: keyword arguments of :func:`genmodels.models.flow_ode.probability_flow_log_prob`.
    """
    from genmodels.evaluation.sampling import sample_model

    timing: dict[str, float] = {}
    total = time.perf_counter()
    real = np.asarray(real, dtype=np.float64)
    dim = real.shape[1]

    start = time.perf_counter()
    entropy = entropy_reference(real, dataset=dataset)
    timing["entropy"] = time.perf_counter() - start

    start = time.perf_counter()
    likelihood = likelihood_metrics(
        model,
        model_type,
        real,
        entropy=entropy,
        n_bound=n_bound,
        n_ode=n_ode,
        seed=seed,
        ode_options=ode_options,
    )
    timing["likelihood"] = time.perf_counter() - start

    start = time.perf_counter()
    if samples is None:
        samples = sample_model(model, n_samples, seed=seed)
    samples = np.asarray(samples, dtype=np.float64)
    timing["sampling"] = time.perf_counter() - start
    finite = np.all(np.isfinite(samples), axis=1)
    if not finite.all():
        log.warning("%d of %d samples are not finite; they are left out", int((~finite).sum()), len(samples))
        samples = samples[finite]

    start = time.perf_counter()
    quality = sample_metrics(samples, real, n_eval=n_eval, n_boot=n_boot, seed=seed)
    timing["two_sample"] = time.perf_counter() - start

    coverage = None
    if text is None and dataset == "text":
        text = "689"
    if text is None and dim == 2 and looks_like_text(real):
        text = "689"
    if text is not None and dim == 2:
        start = time.perf_counter()
        coverage = mode_coverage(samples, real, text)
        timing["mode_coverage"] = time.perf_counter() - start
    timing["total"] = time.perf_counter() - total

    metrics = {
        "model": model_type,
        "dim": int(dim),
        "n_real": int(len(real)),
        "n_samples": int(len(samples)),
        "seed": int(seed),
        "entropy": entropy,
        "likelihood": likelihood,
        "samples": quality,
        "mode_coverage": coverage,
        "seconds": {k: round(v, 3) for k, v in timing.items()},
        "units": UNITS,
    }
    return Evaluation(metrics=metrics, samples=samples, real=real, model=model)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    drop_invalid: bool = False,
    device: str = "cpu",
    **options: Any,
) -> Evaluation:
    """Load a checkpoint of either model and run :func:`evaluate_model` on its held-out split
    (``payload["test_data"]``), or on the CSV file ``data`` (read by :func:`genmodels.data.load_csv`
    with ``drop_invalid``).

    Raises:
        CheckpointError: the checkpoint cannot be used; DataError: bad ``data``; ConfigError: no
            evaluation data (a checkpoint without a held-out split and no ``data``).
    """
    from genmodels.data import load_csv
    from genmodels.errors import ConfigError, DataError
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(checkpoint, map_location=device)
    model = model_from_checkpoint(payload, device=device)
    if data is not None:
        dataset = load_csv(data, drop_invalid=drop_invalid)
        real = dataset.values
        source = str(data)
        if real.shape[1] != payload["dim"]:
            raise ConfigError(
                f"{data} has {real.shape[1]} columns but the model was trained on {payload['dim']}"
            )
    else:
        test = payload.get("test_data")
        if test is None or len(test) == 0:
            raise ConfigError(f"{checkpoint} stores no held-out data; pass --data")
        real = test.double().cpu().numpy()
        source = "held-out split stored in the checkpoint"
    if len(real) < 2 * M.MIN_TWO_SAMPLE_POINTS:
        raise DataError(
            f"{source} has {len(real)} rows; the two-sample tests need at least {2 * M.MIN_TWO_SAMPLE_POINTS} "
            f"(two halves of {M.MIN_TWO_SAMPLE_POINTS})"
        )
    result = evaluate_model(model, payload["model_type"], real, **options)
    result.columns = tuple(payload["columns"])
    result.metrics = {
        "checkpoint": str(checkpoint),
        "data": source,
        "train_data": (payload.get("data") or {}).get("path"),
        "epochs": (payload.get("trainer") or {}).get("epoch"),
        **result.metrics,
    }
    return result


def log_density_grid(
    model: torch.nn.Module, model_type: str, grid: np.ndarray, **ode_options: Any
) -> np.ndarray:
    """log p at grid points ``(G, D)``: RealNVP exactly, DDPM by the probability-flow ODE."""
    device = next(model.buffers()).device
    x = torch.as_tensor(grid, dtype=torch.float32, device=device)
    if model_type == "realnvp":
        with torch.no_grad():
            return model.log_prob(x).double().cpu().numpy()
    from genmodels.models.flow_ode import probability_flow_log_prob

    return probability_flow_log_prob(model, x, **ode_options).log_prob.cpu().numpy()


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------

_LIKELIHOOD_NAMES = {
    "exact": "exact NLL (RealNVP)",
    "bound": "variational bound (DDPM)",
    "ode": "probability-flow ODE NLL (DDPM)",
}
_SAMPLE_NAMES = {
    "c2st_mlp": "C2ST accuracy, MLP",
    "c2st_hgb": "C2ST accuracy, boosted trees",
    "energy": "energy distance",
    "mmd": "MMD² (median heuristic)",
    "sliced_w2": "sliced W2",
}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value != 0 and not 1e-3 <= abs(value) < 1e6:  # tiny or huge (a diverged model's NLL): a power of ten
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def format_report(metrics: dict[str, Any]) -> str:
    """A plain-text report of :func:`evaluate_model`'s metrics, each number beside its reference."""
    lines = []
    head = metrics.get("checkpoint", "model")
    lines.append(f"{metrics['model']} {head}")
    lines.append(
        f"evaluation data: {metrics.get('data', 'given points')} ({metrics['n_real']} points, D = {metrics['dim']})"
    )
    e = metrics["entropy"]
    lines.append("")
    lines.append(
        "likelihood [nats per sample | per dimension]   value ± SE        reference: entropy    gap NLL - H"
    )
    knn = f"Kozachenko-Leonenko (k={e['knn_k']}) {_fmt(e['knn'])} ± {_fmt(e['knn_se'])}"
    exact = f"; exact ({e['dataset']}) {_fmt(e['exact'])}" if e["exact"] is not None else ""
    lines.append(f"  data entropy H: {knn}{exact}; gaps use the {e['source']} value")
    for key, entry in metrics["likelihood"].items():
        extra = f", {entry['nfe']} drift evaluations" if "nfe" in entry else ""
        lines.append(
            f"  {_LIKELIHOOD_NAMES[key]:<34} {_fmt(entry['value'])} ± {_fmt(entry['se'])} "
            f"| {_fmt(entry['per_dim'])}   H = {_fmt(e['value'])}   gap {_fmt(entry['gap'])} ± {_fmt(entry['gap_se'])}"
            f"   ({entry['n']} points{extra})"
        )
    s = metrics["samples"]
    lines.append("")
    lines.append(
        f"sample quality ({s['n_eval']} generated vs {s['n_eval']} real points; floor: "
        f"{s['n_eval']} other real points vs the same real points)"
    )
    lines.append(f"  {'metric':<30} {'model':>10}  {'95% interval':<24} {'floor':>10}")
    for key, name in _SAMPLE_NAMES.items():
        entry = s[key]
        interval = f"[{_fmt(entry['interval'][0])}, {_fmt(entry['interval'][1])}]"
        lines.append(f"  {name:<30} {_fmt(entry['value']):>10}  {interval:<24} {_fmt(entry['floor']):>10}")
    cov = metrics.get("mode_coverage")
    if cov:
        lines.append("")
        lines.append(f"mode coverage of '{cov['text']}' (share of points; real is the reference)")
        for entry in [*cov["glyphs"], cov["outside"]]:
            label = f"inside '{entry['char']}'" if entry["char"] is not None else "outside the glyphs"
            lines.append(
                f"  {label:<20} generated {entry['generated']:.4f} ± {entry['generated_se']:.4f}   "
                f"real {entry['real']:.4f} ± {entry['real_se']:.4f}   ratio {_fmt(entry['ratio'], 3)}"
            )
    t = metrics["seconds"]
    lines.append("")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return "\n".join(lines)


def compare_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table with one column per evaluated model (``(label, metrics)`` pairs) and one row
    per metric; numbers are ``value ± SE`` or ``value [interval] (floor f)``."""

    def cell_nll(m: dict[str, Any], key: str, field_: str = "value") -> str:
        entry = m["likelihood"].get(key)
        if entry is None:
            return "–"
        if field_ == "gap":
            return f"{_fmt(entry['gap'])} ± {_fmt(entry['gap_se'])}"
        if field_ == "per_dim":
            return _fmt(entry["per_dim"])
        return f"{_fmt(entry['value'])} ± {_fmt(entry['se'])} (n={entry['n']})"

    def cell_sample(m: dict[str, Any], key: str) -> str:
        entry = m["samples"][key]
        lo, hi = entry["interval"]
        return f"{_fmt(entry['value'])} [{_fmt(lo)}, {_fmt(hi)}] (floor {_fmt(entry['floor'])})"

    header = "| metric | " + " | ".join(label for label, _ in rows) + " |"
    lines = [header, "|---" * (len(rows) + 1) + "|"]

    def add(name: str, fn: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(fn(m) for _, m in rows) + " |")

    add(
        "data entropy H [nats] (reference)",
        lambda m: f"{_fmt(m['entropy']['value'])} ± {_fmt(m['entropy']['se'])} ({m['entropy']['source']})",
    )
    for key, name in _LIKELIHOOD_NAMES.items():
        if any(key in m["likelihood"] for _, m in rows):
            add(f"{name} [nats]", lambda m, k=key: cell_nll(m, k))
            add(f"{name} [nats/dim]", lambda m, k=key: cell_nll(m, k, "per_dim"))
            add(f"gap {key} - H [nats]", lambda m, k=key: cell_nll(m, k, "gap"))
    for key, name in _SAMPLE_NAMES.items():
        add(name, lambda m, k=key: cell_sample(m, k))
    if any(m.get("mode_coverage") for _, m in rows):
        first = next(m["mode_coverage"] for _, m in rows if m.get("mode_coverage"))
        for i, glyph in enumerate(first["glyphs"]):
            add(
                f"share in '{glyph['char']}' (real {glyph['real']:.3f})",
                lambda m, i=i: (
                    f"{m['mode_coverage']['glyphs'][i]['generated']:.3f}" if m.get("mode_coverage") else "–"
                ),
            )
        add(
            f"share outside glyphs (real {first['outside']['real']:.3f})",
            lambda m: f"{m['mode_coverage']['outside']['generated']:.3f}" if m.get("mode_coverage") else "–",
        )
    add("evaluation seconds", lambda m: f"{m['seconds']['total']:.1f}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
