"""Evaluation of a trained checkpoint on held-out data, every number beside its reference: NLL by each of
the spec's ``likelihoods`` with its gap to the data's entropy (``E[-log q] = H(p) + KL(p || q)``), two-sample
statistics beside their floors (:func:`sample_metrics`), and glyph shares (:func:`mode_coverage`). Seeded."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.data import exact_entropy, glyph_labels, load_csv
from genmodels.errors import ConfigError, DataError
from genmodels.evaluation import metrics as M
from genmodels.evaluation.sampling import finite_samples, sample_model, spec_of, two_sample_scores

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What :func:`evaluate_model` measured (``metrics``, JSON-ready) and the arrays behind it."""

    metrics: dict[str, Any]
    samples: np.ndarray
    real: np.ndarray
    model: torch.nn.Module | None = None
    columns: tuple[str, ...] = field(default_factory=tuple)


ENTROPY_MISMATCH_NATS = 0.25  # nats (beyond 4 SE) between k-NN and exact entropy that warn


def entropy_reference(real: np.ndarray, *, dataset: str | None = None, k: int = 3) -> dict[str, Any]:
    """The likelihood floor (nats) of ``real (N, D)``: its Kozachenko-Leonenko entropy (order ``k``) and
    the closed form of the generator ``dataset`` where known (then ``value``; a warning where they differ by
    more than :data:`ENTROPY_MISMATCH_NATS` + 4 SE). Keys: n, knn_k, dataset, exact, knn, knn_se, value, se, source."""
    exact = None if dataset is None else exact_entropy(dataset)
    try:
        h, se = M.knn_entropy(real, k=k)
    except ValueError as error:  # duplicated points
        log.warning("k-NN entropy skipped: %s", error)
        h, se = math.nan, math.nan
    if exact is not None and math.isfinite(h) and abs(h - exact) > ENTROPY_MISMATCH_NATS + 4 * se:
        log.warning(
            "the data do not look drawn from %s: their k-NN entropy is %.3f ± %.3f nats, its exact "
            "entropy %.3f; the gaps to H use the exact value as asked, and are off by the difference "
            "if the data came from elsewhere (or were rescaled)",
            dataset, h, se, exact,
        )  # fmt: skip
    out = {"n": int(len(real)), "knn_k": int(k), "dataset": dataset, "exact": exact, "knn": h, "knn_se": se}
    value, value_se, source = (h, se, "knn") if exact is None else (float(exact), 0.0, "exact")
    return out | dict(value=value, se=value_se, source=source)


def likelihood_metrics(
    model: torch.nn.Module,
    real: np.ndarray,
    *,
    entropy: dict[str, Any],
    n_points: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """NLL (nats, data units) by each estimator of the spec's ``likelihoods`` on ``n_points[name]`` random
    points of ``real (N, D)`` (default N; 0 skips): ``{name: {value, se, per_dim, per_dim_se, n, gap, gap_se, seconds}}``."""
    dim, device, rng = real.shape[1], next(model.buffers()).device, np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, nll_of in spec_of(model).likelihoods.items():
        n = min(int((n_points or {}).get(name, len(real))), len(real))
        if n <= 0:
            continue
        start = time.perf_counter()
        x = torch.as_tensor(real[np.sort(rng.choice(len(real), n, replace=False))], device=device)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad():
            nll = nll_of(model, x.float(), generator).double().cpu().numpy()
        mean, se = float(nll.mean()), float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        gap_se = math.sqrt(se**2 + (entropy["se"] or 0.0) ** 2) if math.isfinite(se) else math.nan
        out[name] = dict(value=mean, se=se, per_dim=mean / dim, per_dim_se=se / dim, n=int(n))
        out[name] |= dict(gap=mean - entropy["value"], gap_se=gap_se, seconds=time.perf_counter() - start)
    return out


def sample_metrics(
    generated: np.ndarray, real: np.ndarray, *, n_eval: int | None = None, n_boot: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Two-sample statistics of ``generated`` against ``n_eval`` (at most ``min(len(generated), N // 2)``)
    points of a seeded half A of ``real``, each with its floor (as many points of the other half B against
    the same points of A) and 95 % interval: ``{"n_eval", "n_boot", name: {...}}`` (:func:`two_sample_scores`)."""
    rng = np.random.default_rng(seed)
    half = len(real) // 2
    n = min(len(generated), half) if n_eval is None else min(int(n_eval), len(generated), half)
    if n < (least := M.MIN_TWO_SAMPLE_POINTS):
        raise ValueError(f"too few points for the two-sample tests: {n} (need >= {least} per sample)")
    perm = rng.permutation(len(real))
    real_a, real_b = real[perm[:n]], real[perm[half : half + n]]
    gen = generated[rng.choice(len(generated), size=n, replace=False)]
    scores = two_sample_scores(real_a, gen, (real_a, real_b), tuple(_SAMPLE_NAMES), n_boot=n_boot, seed=seed)
    return {"n_eval": int(n), "n_boot": int(n_boot), **scores}


def _glyph_shares(points: np.ndarray, text: str) -> np.ndarray:
    """The shares of ``points`` outside the glyphs of ``text`` (first), then inside each character."""
    return np.bincount(glyph_labels(points, text) + 1, minlength=len(text) + 1) / len(points)


def looks_like_text(points: np.ndarray, text: str = "689") -> bool:
    """Whether 2-D points look like :func:`genmodels.data.make_text` of ``text``: at least half inside the
    glyphs and a tenth inside each glyph."""
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        return False
    try:
        shares = _glyph_shares(points, text)
    except ValueError:
        return False
    inked = [i + 1 for i, ch in enumerate(text) if not ch.isspace()]
    return bool(1.0 - shares[0] >= 0.5 and all(shares[i] >= 0.1 for i in inked))


def mode_coverage(generated: np.ndarray, real: np.ndarray, text: str = "689") -> dict[str, Any]:
    """Shares of generated and real points inside each glyph of ``text`` and outside them all, with
    binomial SEs ``sqrt(p (1 - p) / n)``: ``{"text", "n_real", "n_generated", "glyphs": [{"char", "real",
    "generated", "real_se", "generated_se", "ratio"}], "outside", "max_abs_difference"}``."""
    (p_real, n_real), (p_gen, n_gen) = ((_glyph_shares(p, text), len(p)) for p in (real, generated))

    def entry(i: int, char: str | None) -> dict[str, Any]:
        real, gen = float(p_real[i]), float(p_gen[i])
        return {"char": char, "real": real, "generated": gen, "real_se": math.sqrt(real * (1 - real) / n_real),
                "generated_se": math.sqrt(gen * (1 - gen) / n_gen), "ratio": gen / real if real > 0 else math.nan}  # fmt: skip

    glyphs = [entry(i + 1, ch) for i, ch in enumerate(text) if not ch.isspace()]
    return {"text": text, "n_real": int(n_real), "n_generated": int(n_gen), "glyphs": glyphs,
            "outside": entry(0, None), "max_abs_difference": float(np.max(np.abs(p_gen - p_real)))}  # fmt: skip


UNITS: dict[str, str] = {  # the "units" entry of :func:`evaluate_model`'s metrics: what its numbers are
    "entropy": "value, se: nats per point (natural logarithm, in the data's own coordinates)",
    "likelihood": "value, se, gap, gap_se: nats per point; per_dim, per_dim_se: nats per dimension",
    "samples": "c2st_mlp, c2st_hgb: classifier accuracy (0.5: indistinguishable); energy, sliced_w2: data "
    "units; mmd: squared MMD of a Gaussian kernel (no units)",
    "tails": "far_share: share of points beyond one half of the real points' box widened by half its range; "
    "max_distance: its standard deviations; floor: the other half of the real points",
    "seconds": "seconds",
}


def evaluate_model(
    model: torch.nn.Module,
    real: np.ndarray,
    *,
    n_samples: int = 3000,
    n_eval: int | None = None,
    n_points: Mapping[str, int] | None = None,
    n_boot: int = 10,
    dataset: str | None = None,
    text: str | None = None,
    seed: int = 0,
    samples: np.ndarray | None = None,
) -> Evaluation:
    """Every metric (module docstring) of ``model`` on ``real (N, D)``: ``n_samples`` drawn (or ``samples``),
    ``n_eval``/``n_boot`` for :func:`sample_metrics`, ``n_points`` for :func:`likelihood_metrics`, ``dataset``'s
    exact entropy, mode coverage of ``text`` (None: "689" for text data); seeded by ``seed``."""
    timing: dict[str, float] = {}

    def timed(key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timing[key] = time.perf_counter() - start
        return result

    total = time.perf_counter()
    real = np.asarray(real, dtype=np.float64)
    entropy = timed("entropy", entropy_reference, real, dataset=dataset)
    nll = timed("likelihood", likelihood_metrics, model, real, entropy=entropy, n_points=n_points, seed=seed)
    if samples is None:
        samples = timed("sampling", sample_model, model, n_samples, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(real))  # sample_metrics' halves: reference, floor
    reference, other = real[perm[: len(real) // 2]], real[perm[len(real) // 2 :]]
    tails = {key: M.tail_metrics(p, reference) for key, p in (("samples", samples), ("floor", other))}
    samples = finite_samples(samples)
    quality = timed("two_sample", sample_metrics, samples, real, n_eval=n_eval, n_boot=n_boot, seed=seed)
    if real.shape[1] != 2:
        text = None
    elif text is None and (dataset == "text" or looks_like_text(real)):
        text = "689"
    coverage = None if text is None else timed("mode_coverage", mode_coverage, samples, real, text)
    timing["total"] = time.perf_counter() - total
    metrics = {"model": spec_of(model).name, "dim": int(real.shape[1]), "n_real": int(len(real)),
               "n_samples": int(len(samples)), "seed": int(seed), "entropy": entropy, "likelihood": nll,
               "samples": quality, "mode_coverage": coverage, "tails": tails,
               "seconds": {k: round(v, 3) for k, v in timing.items()}, "units": UNITS}  # fmt: skip
    return Evaluation(metrics=metrics, samples=samples, real=real, model=model)


def checkpoint_points(
    payload: dict[str, Any], checkpoint: Any, data: Any = None, *, drop_invalid: bool = False
) -> np.ndarray:
    """The evaluation points ``(N, D)`` of a loaded checkpoint: the CSV file ``data``, else its held-out
    split; ConfigError where it has none, DataError where ``data`` has other columns than the model."""
    if data is None:
        if (test := payload.get("test_data")) is None or len(test) == 0:
            raise ConfigError(f"{checkpoint} stores no held-out points; pass --data")
        return test.double().cpu().numpy()
    real = load_csv(data, drop_invalid=drop_invalid).values
    if real.shape[1] != payload["dim"]:
        raise DataError(f"{data} has {real.shape[1]} columns but the model was trained on {payload['dim']}")
    return real


def evaluate_checkpoint(
    checkpoint: str | Path, *, data: str | Path | None = None, drop_invalid: bool = False, device: str = "cpu",
    **options: Any,
) -> Evaluation:  # fmt: skip
    """:func:`evaluate_model` (with ``options``) of a checkpoint's model on :func:`checkpoint_points`."""
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(checkpoint, map_location=device)
    real = checkpoint_points(payload, checkpoint, data, drop_invalid=drop_invalid)
    source = "held-out split stored in the checkpoint" if data is None else str(data)
    if len(real) < (least := 2 * M.MIN_TWO_SAMPLE_POINTS):
        raise DataError(f"{source} has {len(real)} rows; the two-sample tests need at least {least} "
                        f"(two halves of {M.MIN_TWO_SAMPLE_POINTS})")  # fmt: skip
    result = evaluate_model(model_from_checkpoint(payload, device=device), real, **options)
    result.columns = tuple(payload["columns"])
    train_data, epochs = (payload.get("data") or {}).get("path"), (payload.get("trainer") or {}).get("epoch")
    result.metrics = {"checkpoint": str(checkpoint), "data": source, "train_data": train_data, "epochs": epochs,
                      **result.metrics}  # fmt: skip
    return result


_LIKELIHOOD_NAMES = {"exact": "exact NLL (RealNVP)", "bound": "variational bound (DDPM)",
                     "ode": "probability-flow ODE NLL (DDPM)"}  # fmt: skip
_SAMPLE_NAMES = {"c2st_mlp": "C2ST accuracy, MLP", "c2st_hgb": "C2ST accuracy, boosted trees",
                 "energy": "energy distance", "mmd": "MMD² (median heuristic)", "sliced_w2": "sliced W2"}  # fmt: skip


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value != 0 and not 1e-3 <= abs(value) < 1e6:  # tiny or huge (a diverged model's NLL): a power of ten
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def format_report(metrics: dict[str, Any]) -> str:
    """A plain-text report of :func:`evaluate_model`'s metrics, each number beside its reference."""
    e, s, cov = metrics["entropy"], metrics["samples"], metrics.get("mode_coverage")
    exact = f"; exact ({e['dataset']}) {_fmt(e['exact'])}" if e["exact"] is not None else ""
    lines = [
        f"{metrics['model']} {metrics.get('checkpoint', 'model')}",
        f"evaluation data: {metrics.get('data', 'given points')} ({metrics['n_real']} points, D = {metrics['dim']})",
        "",
        "likelihood [nats per sample | per dimension]   value ± SE        reference: entropy    gap NLL - H",
        f"  data entropy H: Kozachenko-Leonenko (k={e['knn_k']}) {_fmt(e['knn'])} ± {_fmt(e['knn_se'])}{exact}; "
        f"gaps use the {e['source']} value",
    ]
    lines += [
        f"  {_LIKELIHOOD_NAMES.get(key, key):<34} {_fmt(entry['value'])} ± {_fmt(entry['se'])} "
        f"| {_fmt(entry['per_dim'])}   H = {_fmt(e['value'])}   gap {_fmt(entry['gap'])} ± {_fmt(entry['gap_se'])}"
        f"   ({entry['n']} points)"
        for key, entry in metrics["likelihood"].items()
    ]
    n = s["n_eval"]
    lines += ["", f"sample quality ({n} generated vs {n} real points; floor: {n} other real points vs the same real points)",
              f"  {'metric':<30} {'model':>10}  {'95% interval':<24} {'floor':>10}"]  # fmt: skip
    for key, name in _SAMPLE_NAMES.items():
        entry = s[key]
        interval = "[{}, {}]".format(*map(_fmt, entry["interval"]))
        lines.append(f"  {name:<30} {_fmt(entry['value']):>10}  {interval:<24} {_fmt(entry['floor']):>10}")
    if cov:
        lines += ["", f"mode coverage of '{cov['text']}' (share of points; real is the reference)"]
        for entry in [*cov["glyphs"], cov["outside"]]:
            label = f"inside '{entry['char']}'" if entry["char"] is not None else "outside the glyphs"
            lines.append(f"  {label:<20} generated {entry['generated']:.4f} ± {entry['generated_se']:.4f}   "
                         f"real {entry['real']:.4f} ± {entry['real_se']:.4f}   ratio {_fmt(entry['ratio'], 3)}")  # fmt: skip
    if tails := metrics.get("tails"):
        lines += ["", "tails (beyond the real points' box widened by half its range)        model      floor"]
        for key, name in (("far_share", "share of points"), ("max_distance", "largest distance [std]")):
            lines.append(f"  {name:<66} {_fmt(tails['samples'][key]):>10} {_fmt(tails['floor'][key]):>10}")
    lines += ["", "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["seconds"].items())]
    return "\n".join(lines)


def compare_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A Markdown table with one column per evaluated model (``(label, metrics)`` pairs) and one row
    per metric; numbers are ``value ± SE`` or ``value [interval] (floor f)``."""
    lines = ["| metric | " + " | ".join(label for label, _ in rows) + " |", "|---" * (len(rows) + 1) + "|"]

    def add(name: str, fn: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {name} | " + " | ".join(fn(m) for _, m in rows) + " |")

    def nll(key: str, cell: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        return lambda m: "–" if m["likelihood"].get(key) is None else cell(m["likelihood"][key])

    def coverage(cell: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
        return lambda m: f"{cell(m['mode_coverage'])['generated']:.3f}" if m.get("mode_coverage") else "–"

    def sample_cell(entry: dict[str, Any]) -> str:
        return f"{_fmt(entry['value'])} [{', '.join(map(_fmt, entry['interval']))}] (floor {_fmt(entry['floor'])})"

    e = "entropy"
    add("data entropy H [nats] (reference)",
        lambda m: f"{_fmt(m[e]['value'])} ± {_fmt(m[e]['se'])} ({m[e]['source']})")  # fmt: skip
    for key in dict.fromkeys(k for _, m in rows for k in m["likelihood"]):
        name = _LIKELIHOOD_NAMES.get(key, key)
        add(f"{name} [nats]", nll(key, lambda v: f"{_fmt(v['value'])} ± {_fmt(v['se'])} (n={v['n']})"))
        add(f"{name} [nats/dim]", nll(key, lambda v: _fmt(v["per_dim"])))
        add(f"gap {key} - H [nats]", nll(key, lambda v: f"{_fmt(v['gap'])} ± {_fmt(v['gap_se'])}"))
    for key, name in _SAMPLE_NAMES.items():
        add(name, lambda m, k=key: sample_cell(m["samples"][k]))
    if first := next((m["mode_coverage"] for _, m in rows if m.get("mode_coverage")), None):
        for i, g in enumerate(first["glyphs"]):
            add(f"share in '{g['char']}' (real {g['real']:.3f})", coverage(lambda c, i=i: c["glyphs"][i]))
        add(f"share outside glyphs (real {first['outside']['real']:.3f})", coverage(lambda c: c["outside"]))
    add("evaluation seconds", lambda m: f"{m['seconds']['total']:.1f}")
    return "\n".join(lines) + "\n"
