"""The same training on 1 and 2 processes under torchrun (one thread each): time per step and the
share of it the gradient all-reduce costs.

    OMP_NUM_THREADS=1 python benchmarks/distributed.py                # CPU, gloo, both models
    python benchmarks/distributed.py --device cuda --processes 1      # 1 GPU: torchrun against plain

Each case is a fresh ``torchrun --standalone`` job (``plain``: no torchrun) that trains the default
model with ``genmodels.train.trainer.Trainer`` on N(0, I) points and reports the median seconds of an
epoch after the first (warm-up), per step; the cases alternate in ``--repeats`` rounds, and each
prints the median over rounds. ``no all-reduce`` runs the same 2 processes, each on its
shard of every batch, without DistributedDataParallel (no gradient averaging): the all-reduce's cost
is the 2-process step time over that one. On a CPU the processes share the machine's cores and
memory bandwidth with each other (and with other users), so use as many free cores as processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
BATCH = {"realnvp": 2048, "ddpm": 4096}  # the configs' batch sizes


def worker(args: argparse.Namespace) -> None:
    """One process of a case: train, and print the result as JSON on rank 0."""
    import torch

    from genmodels.config import TrainingConfig
    from genmodels.models import get_spec
    from genmodels.train import distributed
    from genmodels.train.trainer import Trainer

    with distributed.session(args.device):
        if args.case == "no all-reduce":
            distributed.data_parallel = lambda model, loss_fn: loss_fn
        device = torch.device("cuda" if args.device == "cuda" else "cpu")
        spec = get_spec(args.model)
        torch.manual_seed(0)
        model = spec.model_class.from_config(spec.config_class(), 2).to(device)
        data = torch.randn(BATCH[args.model] * args.steps, 2, device=device)
        model.set_standardization(data.mean(0), data.std(0))
        config = TrainingConfig(epochs=args.epochs + 1, batch_size=BATCH[args.model], compile="off")
        trainer = Trainer(model, config, progress=False)
        trainer.fit(data)
        seconds = statistics.median(trainer.history["seconds"][1:]) / args.steps
        reduce_ms = math.nan  # the all-reduce of one step's gradients alone, in one bucket
        if distributed.world_size() > 1:
            flat = torch.zeros(sum(p.numel() for p in model.parameters()), device=device)
            times = []
            for _ in range(21):
                start = time.perf_counter()
                torch.distributed.all_reduce(flat)
                times.append(time.perf_counter() - start)
            reduce_ms = 1000 * statistics.median(times)
        if distributed.is_main():
            print(json.dumps({"step_ms": 1000 * seconds, "reduce_ms": reduce_ms}))


def run_case(case: str, processes: int, args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds per step of ``case`` on ``processes`` processes, and of an all-reduce."""
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    launcher = (
        []
        if case == "plain"
        else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    )
    command = [sys.executable, *launcher, __file__, "--worker", case, "--model", args.model, "--device", args.device,
               "--epochs", str(args.epochs), "--steps", str(args.steps)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        raise SystemExit(f"{case} on {processes} processes failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["realnvp", "ddpm", "both"], default="both")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--processes", type=int, default=2, help="the most processes (1: torchrun vs plain)")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs (after one of warm-up)")
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every case (median)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.case = args.worker
        return worker(args)
    print(f"device {args.device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, "
          f"{args.epochs} epochs of {args.steps} steps, ms per step (median epoch, median of {args.repeats} rounds)")  # fmt: skip
    cases = [("plain", 1), ("torchrun", 1)] + [("torchrun", 2), ("no all-reduce", 2)] * (args.processes >= 2)
    for model in ["realnvp", "ddpm"] if args.model == "both" else [args.model]:
        args.model = model
        rounds = [[run_case(case, processes, args) for case, processes in cases] for _ in range(args.repeats)]
        medians = [
            {key: statistics.median(r[key] for r in results) for key in results[0]}
            for results in zip(*rounds, strict=True)
        ]
        plain, one, *more = (m["step_ms"] for m in medians)
        line = f"{model:8s} batch {BATCH[model]}: plain {plain:.2f}, torchrun 1 process {one:.2f} ({one / plain:.3f}x)"
        if args.processes >= 2:
            two, local = more
            line += (f"; 2 processes {two:.2f} (speed-up {one / two:.2f}x), without the all-reduce {local:.2f}: "
                     f"all-reduce overhead {two / local:.3f}x; one all-reduce of the gradients "
                     f"{medians[2]['reduce_ms']:.2f} ms ({medians[2]['reduce_ms'] / two:.1%} of a step)")  # fmt: skip
        print(line, flush=True)


if __name__ == "__main__":
    main()
