"""DDPM sampling on a quiet CPU and beside another CPU-bound genmodels job, under three settings of
OpenMP's idle threads: the command line's default (``GOMP_SPINCOUNT=1000``: spin briefly, then sleep),
``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) and ``OMP_WAIT_POLICY=ACTIVE`` (spin until work comes).

    python benchmarks/busy_machine.py CHECKPOINT --data CSV [-n 2000] [--repeats 2]

Each case runs ``genmodels sample CHECKPOINT -n N`` in a fresh process and takes the median wall time of
``repeats`` runs; "busy" runs it while ``genmodels train realnvp --data CSV`` trains beside it under the
same setting (started first, stopped after). Prints each case's seconds, its ratio to the quiet run with
the same setting, and the quiet run's ratio to the default's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"}}


def _genmodels(*args: str) -> list[str]:
    return [sys.executable, "-m", "genmodels", *args]


def _env(setting: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    return env | SETTINGS[setting] | {"PYTHONPATH": str(ROOT / "src")}


def _sample_seconds(checkpoint: str, n: int, setting: str, folder: Path) -> float:
    start = time.perf_counter()
    command = _genmodels("sample", checkpoint, "-n", str(n), "-o", str(folder / "s.csv"))
    subprocess.run(command, env=_env(setting), check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="CSV the competing training job reads")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"({os.cpu_count()} cores, {args.n} samples, medians of {args.repeats} runs)")
    print(
        "| OpenMP idle threads | quiet s | beside a training job s | busy / quiet | quiet / default's quiet |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _sample_seconds(args.checkpoint, args.n, "default", folder)  # warm-up: file caches, bytecode
        default_quiet = None
        for setting in SETTINGS:
            quiet = statistics.median(
                _sample_seconds(args.checkpoint, args.n, setting, folder) for _ in range(args.repeats)
            )
            default_quiet = default_quiet or quiet
            train = _genmodels("train", "realnvp", "--data", args.data, "--epochs", "100000", "--quiet",
                               "--output_dir", str(folder / "job"))  # fmt: skip
            job = subprocess.Popen(
                train, env=_env(setting), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                time.sleep(20)  # past the job's start-up, into its training loop
                busy = statistics.median(
                    _sample_seconds(args.checkpoint, args.n, setting, folder) for _ in range(args.repeats)
                )
            finally:
                job.kill()
                job.wait()
            row = (
                f"| {setting} | {quiet:.1f} | {busy:.1f} | {busy / quiet:.2f} | {quiet / default_quiet:.2f} |"
            )
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
