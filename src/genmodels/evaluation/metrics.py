"""Sample-based metrics: NumPy points ``(N, D)`` in, plain floats out (no torch, files or plots): two-sample
discrepancies (0, or 0.5 for the C2ST, mean indistinguishable), entropies and intervals."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist
from scipy.special import digamma, gammaln

MIN_TWO_SAMPLE_POINTS = 10  # the fewest points per sample the evaluations run a two-sample test on
_BLOCK_ELEMENTS = 4_000_000  # float64 entries in one block of a pairwise-distance matrix (~32 MB)
_MEDIAN_POINTS = 2000  # points behind the median-heuristic bandwidth of mmd
Elementwise = Callable[[np.ndarray], np.ndarray]
Statistic = Callable[[np.ndarray, np.ndarray], float]


def _as_points(a: np.ndarray, name: str, *, min_rows: int = 1) -> np.ndarray:
    """``a`` as a finite float64 ``(N, D)`` array with ``N >= min_rows`` (else ValueError)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1 or arr.shape[0] < min_rows:
        raise ValueError(f"{name} must be 2-D with at least {min_rows} rows and one column, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_pair(x: np.ndarray, y: np.ndarray, *, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two samples checked by :func:`_as_points`, of the same dimension."""
    xa, ya = _as_points(x, "x", min_rows=min_rows), _as_points(y, "y", min_rows=min_rows)
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have the same number of columns, got {xa.shape[1]} and {ya.shape[1]}")
    return xa, ya


def _count(value: float, name: str, least: int) -> int:
    """``value`` as an int, or ValueError where it is not an integer ``>= least``."""
    if int(value) != value or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _pairwise_sum(a: np.ndarray, b: np.ndarray, fn: Elementwise, *, same: bool) -> float:
    """Sum of ``fn(|a_i - b_j|^2)`` over all pairs, in row blocks; ``same``: ``a`` is ``b``, ``i != j``."""
    b_sq = np.einsum("ij,ij->i", b, b)
    rows = max(1, _BLOCK_ELEMENTS // max(1, b.shape[0]))
    total = 0.0
    for start in range(0, a.shape[0], rows):
        block = a[start : start + rows]
        cols = slice(start, None) if same else slice(None)
        sq = np.einsum("ij,ij->i", block, block)[:, None] + b_sq[None, cols] - 2.0 * (block @ b[cols].T)
        vals = fn(np.maximum(sq, 0.0, out=sq))
        if same:
            vals[np.tril_indices(block.shape[0])] = 0.0  # pairs j <= i inside the diagonal square
        total += (2.0 if same else 1.0) * float(vals.sum())
    return total


def _pair_means(xa: np.ndarray, ya: np.ndarray, fn: Elementwise) -> tuple[float, ...]:
    """Means of ``fn(|a - b|²)`` over the pairs across the samples and within each (pairs i != j)."""
    within = [_pairwise_sum(a, a, fn, same=True) / (len(a) * (len(a) - 1)) for a in (xa, ya)]
    return _pairwise_sum(xa, ya, fn, same=False) / (len(xa) * len(ya)), *within


_MLP_INTERRUPTED = "Training interrupted by user"  # scikit-learn's MLP warns so when Ctrl-C stops its fit


def c2st(x: np.ndarray, y: np.ndarray, *, seed: int = 0, n_folds: int = 5, classifier: str = "mlp") -> float:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017) as sbibm's (Lueckmann et al. 2021): the mean
    ``n_folds``-fold (stratified, seeded) held-out accuracy of a classifier telling ``x (N, D)`` from
    ``y (M, D)``, both z-scored by ``x``'s mean and std; in [0, 1], chance ``max(N, M) / (N + M)``.
    "mlp": ReLU MLP of two ``10 D`` layers, Adam, lr 1e-2, batches <= 1024, <= 1000 epochs
    (docs/evaluation.md); "hgb": histogram gradient-boosted trees, more sensitive on the 689 data."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    if classifier not in ("mlp", "hgb"):
        raise ValueError(f"classifier must be 'mlp' or 'hgb', got {classifier!r}")
    n_folds = _count(n_folds, "n_folds", 2)
    xa, ya = _as_pair(x, y, min_rows=n_folds)
    mean, std = xa.mean(axis=0), xa.std(axis=0)
    std[std == 0.0] = 1.0  # a constant column of x: only centre it
    data = np.concatenate([(xa - mean) / std, (ya - mean) / std])
    labels = np.repeat(np.array([0, 1], dtype=np.int64), [len(xa), len(ya)])
    folds, accuracies = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed), []
    mlp = dict(learning_rate_init=1e-2, max_iter=1000, random_state=seed)  # ReLU and Adam: the defaults
    with threadpool_limits(limits=1), warnings.catch_warnings():  # one thread: same results, as fast
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("error", message=_MLP_INTERRUPTED)  # Ctrl-C: stop, as elsewhere
        for train, test in folds.split(data, labels):
            if classifier == "hgb":
                clf = HistGradientBoostingClassifier(random_state=seed)
            else:
                batch = min(1024, len(train), max(64, len(train) // 8))
                clf = MLPClassifier((10 * xa.shape[1],) * 2, batch_size=batch, **mlp)
            try:
                clf.fit(data[train], labels[train])
            except UserWarning as warning:  # the interrupted fit's warning: stop; any other: re-raise
                if _MLP_INTERRUPTED not in str(warning):
                    raise
                raise KeyboardInterrupt from None
            accuracies.append(float(np.mean(clf.predict(data[test]) == labels[test])))
    return float(np.mean(accuracies))


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (Szekely & Rizzo 2013) of ``x (N >= 2, D)`` and
    ``y (M >= 2, D)`` in data units; unbiased (U-statistics), so about 0 for one distribution."""
    xa, ya = _as_pair(x, y, min_rows=2)
    xy, xx, yy = _pair_means(xa, ya, np.sqrt)
    return float(2.0 * xy - xx - yy)


def _median_bandwidth(xa: np.ndarray, ya: np.ndarray) -> float:
    """Median pairwise distance of the pooled sample (a fixed-seed subset of ``_MEDIAN_POINTS``)."""
    pooled = np.concatenate([xa, ya])
    if pooled.shape[0] > _MEDIAN_POINTS:
        pooled = pooled[np.random.default_rng(0).choice(pooled.shape[0], size=_MEDIAN_POINTS, replace=False)]
    return float(np.median(pdist(pooled)))


def mmd(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, JMLR 13, eq. 3) of ``x (N >= 2, D)`` and ``y (M >= 2, D)``
    with the kernel ``exp(-|a - b|² / (2 h²))``, ``h = bandwidth`` (data units; None: median heuristic)."""
    xa, ya = _as_pair(x, y, min_rows=2)
    h = _median_bandwidth(xa, ya) if bandwidth is None else float(bandwidth)
    if bandwidth is None and not h > 0.0:
        raise ValueError("median-heuristic bandwidth is 0 (most points coincide); pass bandwidth")
    if not 0.0 < h < math.inf:
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")

    def kernel(sq: np.ndarray) -> np.ndarray:
        return np.exp(np.multiply(sq, -1.0 / (2.0 * h * h), out=sq), out=sq)

    kxy, kxx, kyy = _pair_means(xa, ya, kernel)
    return float(kxx + kyy - 2.0 * kxy)


def _quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(weights, index_a, index_b)``: merged quantile intervals, each sample's order statistic on them."""
    levels = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    levels[-1] = 1.0
    lower = np.concatenate([[0.0], levels[:-1]])
    keep = (weights := levels - lower) > 0.0
    mid = 0.5 * (lower[keep] + levels[keep])
    return weights[keep], *(np.minimum(np.floor(mid * k).astype(np.int64), k - 1) for k in (n, m))


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, *, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance (Bonneel et al. 2015) of ``x (N, D)`` and ``y (M, D)``, data units:
    ``(mean_θ W_2²(θ·x, θ·y))^½`` over ``n_projections`` seeded directions, each 1-D ``W_2²`` exact
    between the empirical quantile functions (on their merged jump levels)."""
    xa, ya = _as_pair(x, y)
    n_projections = _count(n_projections, "n_projections", 1)
    n, m, dim = xa.shape[0], ya.shape[0], xa.shape[1]
    directions = np.random.default_rng(seed).normal(size=(n_projections, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    weights, index_a, index_b = (None, None, None) if n == m else _quantile_grid(n, m)
    per_block = max(1, _BLOCK_ELEMENTS // (2 * (n + m)))
    total = 0.0
    for start in range(0, directions.shape[0], per_block):
        theta = directions[start : start + per_block]
        pa, pb = np.sort(xa @ theta.T, axis=0), np.sort(ya @ theta.T, axis=0)
        if weights is None:
            total += float(np.sum((pa - pb) ** 2)) / n
        else:
            total += float(weights @ ((pa[index_a] - pb[index_b]) ** 2).sum(axis=1))
    return float(math.sqrt(total / directions.shape[0]))


def knn_entropy(x: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """Kozachenko-Leonenko differential entropy of ``x (N > k, D)`` in nats, ``(entropy, SE)``:
    ``psi(N) - psi(k) + log V_D + (D / N) sum_i log r_i``, ``r_i`` the distance to the k-th nearest
    other point (Kraskov et al. 2004, eq. 20). SE ``std(D log r_i) / sqrt(N)`` ignores correlated terms
    (docs/evaluation.md). ValueError where a point has ``k`` or more exact copies (``r_i = 0``)."""
    k = _count(k, "k", 1)
    xa = _as_points(x, "x", min_rows=k + 1)
    n, dim = xa.shape
    r = cKDTree(xa).query(xa, k=k + 1, workers=-1)[0][:, k]  # neighbour 0 is the point itself
    if n_zero := int(np.count_nonzero(r == 0.0)):
        raise ValueError(
            f"{n_zero} point(s) have {k} or more exact duplicates (zero k-NN distance); "
            "remove duplicates or add tiny jitter before estimating entropy"
        )
    terms = dim * np.log(r)
    log_unit_ball = 0.5 * dim * math.log(math.pi) - float(gammaln(0.5 * dim + 1.0))
    entropy = float(digamma(n) - digamma(k) + log_unit_ball + terms.mean())
    return entropy, float(terms.std(ddof=1) / math.sqrt(n))


def gaussian_entropy(cov: np.ndarray | float) -> float:
    """Entropy ``0.5 log det(2 pi e cov)`` in nats of a normal with covariance ``cov (D, D)`` (or a variance)."""
    c = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square matrix, got shape {np.shape(cov)}")
    try:
        chol = np.linalg.cholesky(0.5 * (c + c.T))
    except np.linalg.LinAlgError:
        raise ValueError("cov is not positive definite") from None
    return 0.5 * (c.shape[0] * math.log(2.0 * math.pi * math.e) + 2.0 * float(np.sum(np.log(np.diag(chol)))))


def bootstrap_interval(
    statistic: Statistic,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_boot: int = 100,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bias-corrected percentile bootstrap interval ``(low, high)`` of ``statistic(x, y)`` over ``n_boot >= 2``
    seeded resamplings of the rows: quantiles less ``mean(replicates) - statistic(x, y)`` (duplicates bias
    U-statistics; Efron & Tibshirani 1993, ch. 13, sec. 10.2)."""
    n_boot = _count(n_boot, "n_boot", 2)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.ndim == 0 or ya.ndim == 0 or xa.shape[0] == 0 or ya.shape[0] == 0:
        raise ValueError("x and y must be non-empty arrays with samples along the first axis")
    rng, n, m = np.random.default_rng(seed), xa.shape[0], ya.shape[0]
    values = np.array(
        [statistic(xa[rng.integers(0, n, size=n)], ya[rng.integers(0, m, size=m)]) for _ in range(n_boot)]
    )
    bias, alpha = values.mean() - float(statistic(xa, ya)), 1.0 - level
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0]) - bias
    return float(low), float(high)


def two_sample_floor(statistic: Statistic, real: np.ndarray, *, seed: int = 0) -> float:
    """``statistic`` between two disjoint, seeded random halves of ``real (N >= 2, ...)``: its noise floor,
    what a perfect model scores against ``N // 2`` real points."""
    arr = np.asarray(real)
    if arr.ndim == 0 or arr.shape[0] < 2:
        raise ValueError("real must have at least 2 rows")
    half = arr.shape[0] // 2
    perm = np.random.default_rng(seed).permutation(arr.shape[0])
    return float(statistic(arr[perm[:half]], arr[perm[half : 2 * half]]))


def wilson_interval(acc: float, n_test: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval (Wilson 1927) of an accuracy ``acc`` on ``n_test`` trials, within [0, 1]."""
    n = max(n_test, 1)
    shrink = 1 + z * z / n
    center = (acc + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(max(acc * (1 - acc), 0.0) / n + z * z / (4 * n * n))
    return max(center - half, 0.0), min(center + half, 1.0)


def tail_metrics(points: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far ``points (N, D)`` reach beyond ``reference (M, D)``: ``far_share``, the share outside the
    reference's bounding box widened by half its range on each side (non-finite rows count as far), and
    ``max_distance``, the largest ``|x_d - mean_d| / std_d`` (the reference's mean and std) of any point."""
    pad = np.ptp(reference, 0) / 2
    with np.errstate(invalid="ignore", over="ignore"):
        inside = ((points >= reference.min(0) - pad) & (points <= reference.max(0) + pad)).all(1)
        distance = np.abs((points - reference.mean(0)) / reference.std(0)).max(1)
    if not len(points):
        return {"far_share": math.nan, "max_distance": math.nan}
    distance = np.where(np.isfinite(distance), distance, np.inf)
    return {"far_share": float((~inside).mean()), "max_distance": float(distance.max())}
