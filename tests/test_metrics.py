"""Tests of genmodels.evaluation.metrics against closed-form values and brute-force computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.special import ive
from scipy.stats import norm

from genmodels.evaluation import metrics
from genmodels.evaluation.metrics import (
    bootstrap_interval,
    c2st,
    energy_distance,
    gaussian_entropy,
    knn_entropy,
    mmd,
    sliced_wasserstein,
    two_sample_floor,
)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- closed forms -------------------------------------------------------------------------------


def _mean_abs_normal_1d(mu: float, sigma: float) -> float:
    """E|Z| for Z ~ N(mu, sigma^2) (folded normal mean)."""
    return sigma * math.sqrt(2.0 / math.pi) * math.exp(-(mu**2) / (2.0 * sigma**2)) + mu * (
        1.0 - 2.0 * norm.cdf(-mu / sigma)
    )


def _mean_norm_normal_2d(mu: float, sigma: float) -> float:
    """E|Z| for Z ~ N(m, sigma^2 I_2) with |m| = mu (Rice distribution mean).

    sigma * sqrt(pi / 2) * L_{1/2}(-mu^2 / (2 sigma^2)), with
    L_{1/2}(t) = exp(t / 2) * ((1 - t) I_0(-t / 2) - t I_1(-t / 2)).
    """
    t = -(mu**2) / (2.0 * sigma**2)
    laguerre = (1.0 - t) * ive(0, -t / 2.0) - t * ive(1, -t / 2.0)  # ive absorbs exp(t / 2)
    return sigma * math.sqrt(math.pi / 2.0) * laguerre


def _energy_closed_form(mu: float, dim: int) -> float:
    """Energy distance between N(0, I) and N(m, I), |m| = mu, in 1 or 2 dimensions."""
    mean_abs = _mean_abs_normal_1d if dim == 1 else _mean_norm_normal_2d
    sigma = math.sqrt(2.0)  # X - Y and X - X' have covariance 2 I
    return 2.0 * mean_abs(mu, sigma) - 2.0 * mean_abs(0.0, sigma)


def _mmd_closed_form(mu: np.ndarray, s: float, h: float) -> float:
    """MMD^2, Gaussian kernel of width h, between N(0, s^2 I) and N(mu, s^2 I)."""
    d = mu.shape[0]
    c = h * h + 2.0 * s * s
    return 2.0 * (h * h / c) ** (d / 2.0) * (1.0 - math.exp(-float(mu @ mu) / (2.0 * c)))


def test_closed_form_helpers_agree_with_simulation() -> None:
    z = _rng(0).normal(size=(400_000, 2)) * math.sqrt(2.0) + np.array([1.3, 0.0])
    assert _mean_abs_normal_1d(1.3, math.sqrt(2.0)) == pytest.approx(np.abs(z[:, 0]).mean(), abs=5e-3)
    assert _mean_norm_normal_2d(1.3, math.sqrt(2.0)) == pytest.approx(
        np.linalg.norm(z, axis=1).mean(), abs=5e-3
    )
    assert _mean_norm_normal_2d(0.0, 1.0) == pytest.approx(math.sqrt(math.pi / 2.0))


# --- c2st ---------------------------------------------------------------------------------------


def test_c2st_same_distribution_is_chance() -> None:
    rng = _rng(1)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    # Null spread of the accuracy over 4000 test predictions is about 0.008.
    assert abs(c2st(x, y) - 0.5) < 0.03


def test_c2st_far_apart_is_perfect() -> None:
    rng = _rng(2)
    x = rng.normal(size=(500, 2))
    y = rng.normal(size=(500, 2)) + np.array([10.0, 0.0])
    assert c2st(x, y) > 0.98


def test_c2st_passes_ctrl_c_on_instead_of_letting_the_classifier_swallow_it(monkeypatch) -> None:
    """scikit-learn's MLP catches KeyboardInterrupt in its epoch loop and only warns; c2st re-raises it."""
    from sklearn.neural_network import MLPClassifier

    calls = []

    def interrupted(self, *args, **kwargs):  # called by the MLP inside its own try/except KeyboardInterrupt
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(MLPClassifier, "_update_no_improvement_count", interrupted)
    rng = _rng(5)
    with pytest.raises(KeyboardInterrupt):
        c2st(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)))
    assert calls == [1]


def test_c2st_on_a_few_points_fits_without_warnings() -> None:
    """Fewer training points than the usual mini-batch: one batch of all of them, no warning per fold."""
    import warnings

    rng = _rng(4)
    x = rng.normal(size=(15, 2))
    y = rng.normal(size=(15, 2)) + np.array([10.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c2st(x, y) > 0.9


@pytest.mark.parametrize("classifier", ["mlp", "hgb"])
def test_c2st_fits_its_classifiers_on_one_thread(classifier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifiers' OpenMP and BLAS pools are limited to one thread while they fit (spinning
    threads slowed the test by orders of magnitude on a busy CPU), and restored afterwards."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_info

    seen: list[set[int]] = []
    cls = MLPClassifier if classifier == "mlp" else HistGradientBoostingClassifier
    inner = cls.fit

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        seen.append({pool["num_threads"] for pool in threadpool_info()})
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(cls, "fit", spy)
    before = [pool["num_threads"] for pool in threadpool_info()]
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 3.0
    assert metrics.c2st(x, y, seed=0, n_folds=3, classifier=classifier) > 0.95
    assert seen == [{1}] * 3  # every fold's fit
    assert {pool["num_threads"] for pool in threadpool_info()} == set(before)  # pools loaded since: same


def test_c2st_is_deterministic_for_a_seed() -> None:
    rng = _rng(3)
    x, y = rng.normal(size=(150, 3)), rng.normal(size=(120, 3)) + 0.5
    assert c2st(x, y, seed=4, n_folds=3) == c2st(x, y, seed=4, n_folds=3)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        (np.zeros(10), np.zeros((10, 1)), {}, "2-D"),
        (np.zeros((10, 2)), np.zeros((10, 3)), {}, "same number of columns"),
        (np.zeros((4, 2)), np.zeros((10, 2)), {}, "at least 5 rows"),
        (np.zeros((10, 2)), np.zeros((2, 2)), {"n_folds": 3}, "at least 3 rows"),
        (np.zeros((10, 2)), np.zeros((10, 2)), {"n_folds": 1}, "n_folds"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), {}, "NaN"),
        (np.zeros((10, 0)), np.zeros((10, 0)), {}, "one column"),
    ],
)
def test_c2st_rejects_bad_input(x: np.ndarray, y: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        c2st(x, y, **kwargs)


# --- energy distance ----------------------------------------------------------------------------


def test_energy_distance_matches_brute_force_with_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 500)
    rng = _rng(4)
    x, y = rng.normal(size=(157, 3)), rng.normal(size=(91, 3)) + 0.5
    n, m = len(x), len(y)
    expected = (
        2.0 * cdist(x, y).mean() - cdist(x, x).sum() / (n * (n - 1)) - cdist(y, y).sum() / (m * (m - 1))
    )
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-10)
    assert energy_distance(y, x) == pytest.approx(expected, rel=1e-10)


def test_energy_distance_same_distribution_is_zero() -> None:
    rng = _rng(5)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    # Unbiased under the null; simulated null std at 2000 + 2000 points in 2-D is about 0.001.
    assert abs(energy_distance(x, y)) < 0.006


# tol is 4 times the sampling std at 3000 + 3000 points, simulated: 0.018, 0.047, 0.021.
@pytest.mark.parametrize(("dim", "mu", "tol"), [(1, 0.7, 0.075), (1, 2.0, 0.19), (2, 1.0, 0.085)])
def test_energy_distance_shifted_gaussians_match_closed_form(dim: int, mu: float, tol: float) -> None:
    rng = _rng(6 + dim)
    shift = np.zeros(dim)
    shift[0] = mu
    x, y = rng.normal(size=(3000, dim)), rng.normal(size=(3000, dim)) + shift
    assert energy_distance(x, y) == pytest.approx(_energy_closed_form(mu, dim), abs=tol)


# --- MMD ----------------------------------------------------------------------------------------


def test_mmd_matches_brute_force_with_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 500)
    rng = _rng(8)
    x, y = rng.normal(size=(140, 2)), rng.normal(size=(77, 2)) * 1.5
    n, m, h = len(x), len(y), 0.8

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-cdist(a, b, "sqeuclidean") / (2.0 * h * h))

    kxx, kyy = k(x, x), k(y, y)
    np.fill_diagonal(kxx, 0.0)
    np.fill_diagonal(kyy, 0.0)
    expected = kxx.sum() / (n * (n - 1)) + kyy.sum() / (m * (m - 1)) - 2.0 * k(x, y).mean()
    assert mmd(x, y, bandwidth=h) == pytest.approx(expected, rel=1e-10)


def test_mmd_median_heuristic() -> None:
    rng = _rng(9)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(200, 2))
    pooled = np.concatenate([x, y])
    h = float(np.median(cdist(pooled, pooled)[np.triu_indices(len(pooled), 1)]))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=h), rel=1e-12)
    # Above 2000 pooled points a subsample is used; X - X' ~ N(0, 2 I) has median norm 2 sqrt(log 2).
    big_x, big_y = rng.normal(size=(2500, 2)), rng.normal(size=(2500, 2))
    assert metrics._median_bandwidth(big_x, big_y) == pytest.approx(2.0 * math.sqrt(math.log(2.0)), rel=0.03)


def test_mmd_same_distribution_is_zero() -> None:
    rng = _rng(10)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    # Unbiased under the null; simulated null std at 2000 + 2000 points (h = 1) is about 0.0004.
    assert abs(mmd(x, y, bandwidth=1.0)) < 0.002


# tol is 4 times the sampling std at 3000 + 3000 points, simulated: 0.0093, 0.0036, 0.0061.
@pytest.mark.parametrize(
    ("mu", "s", "h", "tol"),
    [((1.0,), 1.0, 1.0, 0.037), ((0.5, -0.5), 1.0, 2.0, 0.015), ((1.0, 0.0, 1.0), 0.5, 1.0, 0.025)],
)
def test_mmd_shifted_gaussians_match_closed_form(
    mu: tuple[float, ...], s: float, h: float, tol: float
) -> None:
    rng = _rng(11)
    shift = np.array(mu)
    d = shift.shape[0]
    x = rng.normal(size=(3000, d)) * s
    y = rng.normal(size=(3000, d)) * s + shift
    assert mmd(x, y, bandwidth=h) == pytest.approx(_mmd_closed_form(shift, s, h), abs=tol)


def test_mmd_rejects_bad_bandwidth() -> None:
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, x + 1.0, bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd(x, x)  # median of all-zero distances


# --- sliced Wasserstein -------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.5, -2.0])
def test_sliced_wasserstein_1d_shift_is_abs_mu(mu: float) -> None:
    rng = _rng(12)
    x, y = rng.normal(size=(4000, 1)), rng.normal(size=(3000, 1)) + mu
    assert sliced_wasserstein(x, y) == pytest.approx(abs(mu), abs=0.06)


def test_sliced_wasserstein_exact_translation() -> None:
    # y = x + v exactly: each projection's W2 is |theta . v|, so SW2^2 = mean (theta . v)^2,
    # whose expectation over uniform directions in d dimensions is |v|^2 / d.
    rng = _rng(13)
    x = rng.normal(size=(500, 2))
    v = np.array([3.0, 4.0])
    assert sliced_wasserstein(x, x + v, n_projections=4096) == pytest.approx(5.0 / math.sqrt(2.0), rel=0.03)
    assert sliced_wasserstein(x, x) == 0.0


def test_sliced_wasserstein_unequal_sizes_is_exact_1d_w2() -> None:
    rng = _rng(14)
    a, b = rng.normal(size=(7, 1)), rng.normal(size=(5, 1)) + 1.0
    # Brute force: squared difference of the step quantile functions on a fine grid.
    u = (np.arange(420_000) + 0.5) / 420_000
    qa = np.sort(a[:, 0])[np.floor(u * 7).astype(int)]
    qb = np.sort(b[:, 0])[np.floor(u * 5).astype(int)]
    assert sliced_wasserstein(a, b, n_projections=3) == pytest.approx(
        np.sqrt(np.mean((qa - qb) ** 2)), rel=1e-6
    )
    # Repeating every point leaves the empirical distribution, hence the distance, unchanged.
    assert sliced_wasserstein(np.repeat(a, 3, axis=0), b, n_projections=3) == pytest.approx(
        sliced_wasserstein(a, b, n_projections=3), rel=1e-12
    )


# --- entropy ------------------------------------------------------------------------------------


def test_gaussian_entropy() -> None:
    assert gaussian_entropy(2.0) == pytest.approx(0.5 * math.log(2.0 * math.pi * math.e * 2.0))
    cov = np.array([[2.0, 0.3], [0.3, 0.5]])
    expected = 0.5 * math.log(np.linalg.det(2.0 * math.pi * math.e * cov))
    assert gaussian_entropy(cov) == pytest.approx(expected)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_entropy(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        gaussian_entropy(np.ones((2, 3)))


def test_knn_entropy_correlated_gaussian() -> None:
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    x = _rng(15).multivariate_normal([1.0, -2.0], cov, size=20_000)
    h, se = knn_entropy(x)
    assert 0.0 < se < 0.02
    assert abs(h - gaussian_entropy(cov)) < 3.0 * se + 0.01


def test_knn_entropy_uniform_square() -> None:
    x = _rng(16).uniform(0.0, 2.0, size=(20_000, 2))
    h, se = knn_entropy(x, k=1)
    # Boundary bias (overestimate) is about 0.01 at this size.
    assert abs(h - math.log(4.0)) < 3.0 * se + 0.02


def test_knn_entropy_scaling_is_exact() -> None:
    # Scaling by a multiplies every k-NN distance by a: H shifts by D log a exactly.
    x = _rng(17).normal(size=(1000, 3))
    h1, se1 = knn_entropy(x, k=4)
    h2, se2 = knn_entropy(2.5 * x, k=4)
    assert h2 - h1 == pytest.approx(3.0 * math.log(2.5), rel=1e-10)
    assert se2 == pytest.approx(se1, rel=1e-10)


def test_knn_entropy_duplicates() -> None:
    x = _rng(18).normal(size=(200, 2))
    with_pairs = np.concatenate([x, x[:10]])  # fewer than k = 3 copies: fine
    assert np.isfinite(knn_entropy(with_pairs, k=3)[0])
    with pytest.raises(ValueError, match="duplicates"):
        knn_entropy(with_pairs, k=1)
    with pytest.raises(ValueError, match="k must be"):
        knn_entropy(x, k=0)
    with pytest.raises(ValueError, match="at least 4 rows"):
        knn_entropy(x[:3], k=3)


# --- bootstrap and floor ------------------------------------------------------------------------


def test_bootstrap_interval_contains_point_estimate() -> None:
    rng = _rng(19)
    x, y = rng.normal(size=(400, 2)), rng.normal(size=(300, 2)) + 0.5
    point = sliced_wasserstein(x, y, n_projections=64)

    def stat(a: np.ndarray, b: np.ndarray) -> float:
        return sliced_wasserstein(a, b, n_projections=64)

    low, high = bootstrap_interval(stat, x, y, n_boot=60, seed=1)
    assert low < point < high
    assert (low, high) == bootstrap_interval(stat, x, y, n_boot=60, seed=1)

    low_e, high_e = bootstrap_interval(energy_distance, x, y, n_boot=40)
    assert low_e < energy_distance(x, y) < high_e


def test_bootstrap_interval_is_corrected_for_the_bias_of_duplicate_rows() -> None:
    """Resampled rows repeat, and repeated rows shrink the energy distance's within-sample terms: the
    replicates sit above the estimate. Corrected, the interval holds its own estimate and covers the
    true value (the population energy distance between N(0, I) and N(0.3 e, I), from 30-point samples)
    about as often as it claims; uncorrected: 81% and about 85% in this setting."""
    rng = _rng(7)
    truth = float(
        np.mean(
            [energy_distance(rng.normal(size=(3000, 2)), rng.normal(size=(3000, 2)) + 0.3) for _ in range(4)]
        )
    )
    reps, inside, covered = 100, 0, 0
    for r in range(reps):
        rng = _rng(1000 + r)
        x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + 0.3
        low, high = bootstrap_interval(energy_distance, x, y, n_boot=100, seed=r)
        inside += low <= energy_distance(x, y) <= high
        covered += low <= truth <= high
    assert inside >= 95
    assert covered >= 88  # 95% nominal; 100 trials


def test_bootstrap_interval_percentiles_of_mean_difference() -> None:
    # For the difference of means the percentile interval approximates the normal interval.
    rng = _rng(20)
    x, y = rng.normal(size=(2000,)), rng.normal(size=(2000,)) + 1.0

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(b.mean() - a.mean())

    low, high = bootstrap_interval(diff, x, y, n_boot=400, level=0.9)
    half_width = norm.ppf(0.95) * math.sqrt(2.0 / 2000)
    assert high - low == pytest.approx(2.0 * half_width, rel=0.2)
    assert low < diff(x, y) < high


def test_bootstrap_interval_rejects_bad_arguments() -> None:
    x = np.zeros((5, 1))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval(energy_distance, x, x, n_boot=1)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(energy_distance, x, x, level=1.0)


def test_two_sample_floor_uses_disjoint_halves() -> None:
    real = np.arange(11.0)[:, None]
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def record(a: np.ndarray, b: np.ndarray) -> float:
        seen.append((a, b))
        return 1.5

    assert two_sample_floor(record, real, seed=3) == 1.5
    a, b = seen[0]
    assert a.shape == b.shape == (5, 1)
    assert not set(a[:, 0]) & set(b[:, 0])
    with pytest.raises(ValueError, match="at least 2 rows"):
        two_sample_floor(record, real[:1])


def test_two_sample_floor_is_near_zero_for_energy_distance() -> None:
    real = _rng(21).normal(size=(3000, 2))
    assert abs(two_sample_floor(energy_distance, real)) < 0.01


def test_c2st_with_boosted_trees_detects_blur_and_not_identity():
    rng = np.random.default_rng(0)
    square = rng.uniform(-1, 1, size=(8000, 2))
    other = rng.uniform(-1, 1, size=(3000, 2))
    same = metrics.c2st(square[:3000], other, classifier="hgb")
    blurred = metrics.c2st(square[:3000] + 0.3 * rng.standard_normal((3000, 2)), other, classifier="hgb")
    assert abs(same - 0.5) < 0.03
    assert blurred > 0.55
    with pytest.raises(ValueError, match="classifier"):
        metrics.c2st(square, other, classifier="svm")


def test_tail_metrics_count_points_beyond_the_widened_box_and_their_distance():
    from genmodels.evaluation.metrics import tail_metrics

    # The box [0, 2] x [0, 4], widened to [-1, 3] x [-2, 6].
    reference = np.array([[0.0, 0.0], [2.0, 4.0], [1.0, 2.0]])
    points = np.array([[2.9, 5.9], [3.1, 0.0], [1.0, -2.5], [np.nan, 1.0], [1.0, 2.0]])
    out = tail_metrics(points, reference)
    assert out["far_share"] == pytest.approx(3 / 5)  # (3.1, 0), (1, -2.5) and the nan row
    assert out["max_distance"] == np.inf  # the nan row
    finite = tail_metrics(points[[0, 1, 2, 4]], reference)
    std = reference.std(0)
    assert finite["max_distance"] == pytest.approx(
        max((3.1 - 1.0) / std[0], (5.9 - 2.0) / std[1], 4.5 / std[1])
    )
    assert tail_metrics(reference, reference)["far_share"] == 0.0
