"""Drawing samples from a model in chunks, and scoring them against held-out points with the C2ST."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from genmodels.evaluation import metrics as M
from genmodels.train import distributed
from genmodels.train.acceleration import autocast

__all__ = ["FAR_SAMPLE_STDS", "METRIC_UNITS", "evaluate_samples", "sample_model"]

log = logging.getLogger(__name__)


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
) -> np.ndarray:
    """Draw ``n`` samples ``(n, D)`` in the data's units, ``chunk_size`` at a time, reproducibly.

    Chunk k draws from a generator seeded by ``(seed, k)`` (chunk 0 by ``seed`` itself), so under
    torchrun each process draws every world_size-th chunk and all return the same samples as one
    process does.

    ``precision="bfloat16"`` runs the networks' matrix products in bfloat16
    (:func:`genmodels.train.acceleration.autocast`); wrap the call in
    :func:`genmodels.train.acceleration.compiled_network` to sample with a compiled DDPM network.
    """
    device = next(model.buffers()).device
    chunks = {}
    with autocast(device, precision):
        for k in distributed.chunks_of_this_process(math.ceil(n / chunk_size)):
            m = min(chunk_size, n - k * chunk_size)
            key = seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
            generator = torch.Generator(device=device).manual_seed(key)
            if hasattr(model, "diffusion_steps"):
                steps = sampling_steps or None
                chunk = model.sample(m, generator=generator, steps=steps, eta=eta, spacing=ddim_spacing)
            else:
                chunk = model.sample(m, generator=generator)
            chunks[k] = chunk.cpu().double().numpy()
    samples = np.concatenate(distributed.gather_chunks(chunks))
    _warn_far_samples(model, samples)
    return samples


# Samples farther than this many training standard deviations from the training mean draw a warning:
# an undertrained DDPM's reverse process sends a few points thousands of deviations out (measured:
# 12 of 20,000 two-moons samples beyond 100 deviations after 60 epochs), and the default RealNVP on
# the 689 data puts 4 of 20,000 out to 1,330 deviations. C2ST does not show such outliers.
FAR_SAMPLE_STDS = 50.0


def _warn_far_samples(model: nn.Module, samples: np.ndarray) -> None:
    standardize = getattr(model, "standardize", None)
    if standardize is None or not len(samples):
        return
    mean = standardize.mean.detach().cpu().double().numpy()
    std = standardize.std.detach().cpu().double().numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        distance = np.abs((samples - mean) / std).max(1)
    far = distance > FAR_SAMPLE_STDS
    if far.any():
        log.warning(
            "%d of %d samples lie more than %g training standard deviations from the training mean (up "
            "to %.3g): the model puts a little mass far outside the data (a flow's stretched tails, an "
            "undertrained DDPM); such outliers skew means and plots",
            int(far.sum()), len(samples), FAR_SAMPLE_STDS, float(np.nanmax(distance[far])),
        )  # fmt: skip


_ACCURACY = "classifier accuracy (0.5: indistinguishable)"
# A run's metrics file carries this as its "units" entry, so the file says what its numbers are.
METRIC_UNITS: dict[str, str] = {
    "train_seconds": "seconds",
    "sample_seconds": "seconds",
    "train_nll": "nats per point",
    "test_nll": "nats per point",
    "test_nll_per_dim": "nats per dimension",
    "test_nll_bound": "nats per point (upper bound on the NLL)",
    "test_nll_bound_per_dim": "nats per dimension (upper bound on the NLL)",
    "c2st": _ACCURACY,
    "c2st_floor": _ACCURACY,
    "c2st_hgb": _ACCURACY,
    "c2st_hgb_floor": _ACCURACY,
}


def evaluate_samples(
    samples: np.ndarray, real_test: np.ndarray, real_train: np.ndarray, *, seed: int
) -> dict:
    """C2ST (MLP and gradient-boosted trees) of ``samples`` against the held-out points, each beside
    its floor: the same test between two disjoint sets of real points of the same size."""
    n = min(len(samples), len(real_test))
    rng = np.random.default_rng(seed)
    gen = samples[rng.choice(len(samples), n, replace=False)]
    test = real_test[rng.choice(len(real_test), n, replace=False)]
    other = real_train[rng.choice(len(real_train), min(n, len(real_train)), replace=False)]
    out = {"n_eval": int(n)}
    if n < M.MIN_TWO_SAMPLE_POINTS:
        fewest = (
            f"samples ({len(samples)}; raise sampling.n_samples, --n_samples)"
            if len(samples) < len(real_test)
            else f"held-out points ({len(real_test)}; raise data.test_fraction)"
        )
        log.warning(
            "too few %s for a two-sample test (at least %d are needed); c2st skipped",
            fewest,
            M.MIN_TWO_SAMPLE_POINTS,
        )
        out.update(c2st=math.nan, c2st_floor=math.nan, c2st_hgb=math.nan, c2st_hgb_floor=math.nan)
        return out
    real_a, real_b = other[: len(test)], test[: len(other)]
    # The real points come first: their mean and standard deviation scale both samples, so a few
    # huge outliers among bad samples cannot squash the data into one point.
    out["c2st"] = M.c2st(test, gen, seed=seed)
    out["c2st_hgb"] = M.c2st(test, gen, seed=seed, classifier="hgb")
    if len(real_a) < M.MIN_TWO_SAMPLE_POINTS:
        log.warning("too few training points (%d) for the c2st floor; floor skipped", len(real_a))
        out.update(c2st_floor=math.nan, c2st_hgb_floor=math.nan)
        return out
    out["c2st_floor"] = M.c2st(real_a, real_b, seed=seed)
    out["c2st_hgb_floor"] = M.c2st(real_a, real_b, seed=seed, classifier="hgb")
    return out
