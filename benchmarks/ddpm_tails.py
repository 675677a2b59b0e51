"""Far-out samples of a trained DDPM's samplers, with and without clipping x̂₀ (docs/ddpm-sampling.md).

    python benchmarks/ddpm_tails.py CHECKPOINT --data CSV [-n 20000] [--remedies none,clip]
        [--samplers ancestral,0:50,0:100,0:250,1:50,1:100,1:250] [--margin 1.5]

For each remedy and sampler (``ancestral``, or ``ETA:STEPS`` for DDIM) it draws ``n`` points (seed 0)
and prints a Markdown row: the points "far" from the data (outside the training data's bounding box
widened by half its range on each side), the largest |coordinate|, the points on the clip bound, and
the C2ST of gradient-boosted trees between the checkpoint's held-out points and as many of the
samples (the first ones; equal sizes, so chance is 0.5). ``CSV`` is the training
data file; its training split sets the bound of a checkpoint written before the model kept one.
Remedies: ``none`` (no clipping), ``clip`` (x̂₀ clipped per coordinate to ``margin`` times the
training data's largest |standardised coordinate|), ``rescale`` (x̂₀ shrunk towards 0 until inside
that bound: dynamic thresholding, Saharia et al. 2022, with the data's bound in place of 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genmodels.data import load_csv, train_test_split  # noqa: E402
from genmodels.evaluation.metrics import c2st  # noqa: E402
from genmodels.models import ddpm, schedule  # noqa: E402
from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402

_CLIP = schedule._x0_and_eps


def _rescale(sched, x_i, eps, i, bound):  # noqa: ANN001, ANN202 - the signature of schedule._x0_and_eps
    x0, eps = _CLIP(sched, x_i, eps, i, None)
    if bound is None:
        return x0, eps
    s = (x0.abs() / bound).amax(-1, keepdim=True).clamp_min(1.0)
    x0 = x0 / s
    return x0, (x_i - sched.alpha_bar[i] * x0) / sched.sigma_bar[i]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="the training data CSV (for the bounding box)")
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--remedies", default="none,clip")
    parser.add_argument("--samplers", default="ancestral,0:50,0:100,0:250,1:50,1:100,1:250")
    parser.add_argument("--margin", type=float, default=ddpm.X0_BOUND_MARGIN)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    payload = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(payload)
    cfg = payload["config"].data
    train_np, _ = train_test_split(
        load_csv(args.data).values, test_fraction=cfg.test_fraction, seed=cfg.split_seed
    )
    train = torch.as_tensor(train_np, dtype=torch.float32)
    if not bool((model.x0_max_abs > 0).all()):  # a checkpoint from before the model kept its bound
        model.x0_max_abs.copy_(model.standardize(train)[0].abs().amax(0))
    test = payload["test_data"].double().numpy()
    low, high = train.min(0).values, train.max(0).values
    low, high = low - (high - low) / 2, high + (high - low) / 2
    ddpm.X0_BOUND_MARGIN = args.margin
    print(f"x0_max_abs {model.x0_max_abs.tolist()}, margin {args.margin:g}; n = {args.n}")
    print("| remedy | sampler | far | max abs coord | on the bound | C2ST trees | seconds |")
    print("|---|---|---|---|---|---|---|")
    for remedy in args.remedies.split(","):
        model.clip_x0 = remedy != "none"
        schedule._x0_and_eps = _rescale if remedy == "rescale" else _CLIP
        bound = model.sample_x0_bound()
        for sampler in args.samplers.split(","):
            eta, steps = (
                (1.0, None)
                if sampler == "ancestral"
                else (float(sampler.split(":")[0]), int(sampler.split(":")[1]))
            )
            start = time.perf_counter()
            x = model.sample(args.n, generator=torch.Generator().manual_seed(0), steps=steps, eta=eta)
            seconds = time.perf_counter() - start
            far = int(((x < low) | (x > high)).any(1).sum())
            z = model.standardize(x)[0]
            on_bound = 0 if bound is None else int(((z.abs() - bound).abs() < 1e-4 * bound).any(1).sum())
            finite = bool(torch.isfinite(x).all())
            score = c2st(test, x[: len(test)].double().numpy(), classifier="hgb") if finite else float("nan")
            name = "ancestral 2500" if steps is None else f"DDIM η={eta:g} {steps}"
            print(
                f"| {remedy} | {name} | {far} | {float(x.abs().max()):.3g} | {on_bound} | {score:.3f} | {seconds:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
