"""Sample quality against sampling cost for a trained DDPM: the full ancestral sampler against the
strided DDIM sampler at a few step counts, each scored by C2ST against the held-out points.

    python benchmarks/ddim_quality.py CHECKPOINT [--steps 50,100,250] [--eta 1] [-n 10000] [--seeds 0,1,2]
        [--spacing quadratic|linear] [--precision bfloat16] [--compile]

For every sampler it draws ``n`` points (the same seeds for every sampler), times the sampling and
runs the MLP and gradient-boosted-trees C2ST of :func:`genmodels.evaluation.scoring.sample_metrics` against
half of the checkpoint's held-out split (its floor: the same test between the two halves). Prints a
Markdown table with the mean over seeds and the difference to the full sampler.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genmodels.evaluation.sampling import sample_model  # noqa: E402
from genmodels.evaluation.scoring import sample_metrics  # noqa: E402
from genmodels.train.acceleration import compiled_network, tune_allocator  # noqa: E402
from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0].replace("\n", " "))
    parser.add_argument("checkpoint", help="a DDPM checkpoint written by `genmodels train ddpm`")
    parser.add_argument("--steps", default="50,100,250", help="DDIM step counts, comma-separated")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM noise scale (default 1)")
    parser.add_argument("-n", type=int, default=10000, help="samples per sampler and seed (default 10000)")
    parser.add_argument(
        "--spacing", default="quadratic", choices=["quadratic", "linear"], help="DDIM timesteps"
    )
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true", help="sample with a compiled network")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds, comma-separated (default 0,1,2)")
    args = parser.parse_args(argv)
    tune_allocator()  # as the genmodels command line does

    payload = load_checkpoint(args.checkpoint)
    if payload["model_type"] != "ddpm":
        parser.error(f"{args.checkpoint} is a {payload['model_type']} checkpoint; a DDPM one is needed")
    model = model_from_checkpoint(payload)
    test = payload["test_data"].double().numpy()
    seeds = [int(s) for s in args.seeds.split(",")]
    ddim = f"DDIM {args.spacing}, eta={args.eta:g}"
    samplers = [("ancestral", 0)] + [(ddim, int(s)) for s in args.steps.split(",")]

    rows = []
    for name, steps in samplers:
        seconds, c2st, hgb, floor = [], [], [], []
        for seed in seeds:
            start = time.perf_counter()
            with compiled_network(model, args.compile):
                samples = sample_model(
                    model,
                    args.n,
                    seed=seed,
                    sampling_steps=steps,
                    eta=args.eta,
                    precision=args.precision,
                    ddim_spacing=args.spacing,
                )
            seconds.append(time.perf_counter() - start)
            scores = sample_metrics(samples, test, n_boot=0, seed=seed)
            c2st.append(scores["c2st_mlp"]["value"])
            hgb.append(scores["c2st_hgb"]["value"])
            floor.append(scores["c2st_mlp"]["floor"])
        row = (
            name,
            steps or model.diffusion_steps,
            statistics.mean(seconds),
            statistics.mean(c2st),
            statistics.mean(hgb),
            statistics.mean(floor),
        )
        rows.append(row)
        print(f"{row[0]} {row[1]} steps: {row[2]:.1f} s, c2st {row[3]:.4f}, hgb {row[4]:.4f}", flush=True)

    full = rows[0]
    how = f"{args.precision}{', compiled' if args.compile else ''}"
    print(
        f"\n{args.n} samples per seed ({how}), seeds {seeds}; C2ST against half of {len(test)} held-out points\n"
    )
    print("| sampler | steps | seconds | C2ST (MLP) | Δ vs full | C2ST (trees) | Δ vs full | floor (MLP) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, steps, sec, c, h, f in rows:
        print(
            f"| {name} | {steps} | {sec:.1f} | {c:.4f} | {c - full[3]:+.4f} | {h:.4f} | {h - full[4]:+.4f} "
            f"| {f:.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
