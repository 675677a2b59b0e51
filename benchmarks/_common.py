"""Timing, FLOP counting and result reporting shared by the benchmarks in ``benchmarks/run.py``.

Timing is interleaved: every case is warmed up, then each round runs every case once (in an order
rotated from round to round, so no case always runs first or last), and a case's time is the median
over rounds of its per-call time. Ratios computed from these medians compare cases measured in the
same process, under the same machine load.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "Settings",
    "Timing",
    "Row",
    "Report",
    "synchronize",
    "interleaved",
    "count_flops",
    "matmul_case",
]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: warm-up calls, interleaved rounds, and the minimum seconds per sample
    (a case is called ``inner`` times in a row per round, enough to fill that time)."""

    device: torch.device
    warmup: int
    rounds: int
    min_sample_s: float
    quick: bool


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median over rounds, and the smallest and largest round."""

    median: float
    low: float
    high: float
    inner: int

    @property
    def spread(self) -> float:
        """(slowest - fastest round) / median: how noisy the measurement was."""
        return (self.high - self.low) / self.median if self.median > 0 else math.nan


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA kernels run asynchronously); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], object], inner: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / inner


def interleaved(cases: dict[str, Callable[[], object]], settings: Settings) -> dict[str, Timing]:
    """Time every case in ``cases`` (name -> zero-argument call) in interleaved rounds."""
    device = settings.device
    inner: dict[str, int] = {}
    for name, fn in cases.items():
        for _ in range(settings.warmup):
            fn()
        once = _seconds(fn, 1, device)
        inner[name] = max(1, math.ceil(settings.min_sample_s / max(once, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(settings.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_seconds(cases[name], inner[name], device))
    return {
        name: Timing(statistics.median(values), min(values), max(values), inner[name])
        for name, values in samples.items()
    }


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of the matrix products (matmul, linear, conv) that ``fn()`` runs,
    forward and backward, as counted by :class:`torch.utils.flop_counter.FlopCounterMode`.
    Elementwise work (activations, normalisations, the optimizer) is not counted."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_case(
    m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, *, target_flops: float = 2e8
) -> tuple[Callable[[], object], int]:
    """A call running ``(m, k) @ (k, n)`` products in ``dtype`` back to back, and its FLOP count.

    Timing it gives the machine's matmul rate for exactly the shapes a model uses: the "peak" that
    a model's achieved rate is compared with.
    """
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    reps = max(1, round(target_flops / (2 * m * k * n)))

    def run() -> None:
        for _ in range(reps):
            torch.mm(a, b, out=out)

    return run, 2 * m * k * n * reps


@dataclass
class Row:
    """One result line: ``value`` in ``unit``; ``ratio`` (a peer's value / ours) where it applies."""

    bench: str
    case: str
    value: float
    unit: str
    ratio: float | None = None
    note: str = ""


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == 0 or 0.01 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


@dataclass
class Report:
    """Collects rows, printing each as soon as it is measured, and prints the summary table."""

    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = f"  x{row.ratio:.2f} vs ours" if row.ratio is not None else ""
        note = f"  ({row.note})" if row.note else ""
        print(f"[{row.bench}] {row.case}: {_format_value(row.value)} {row.unit}{ratio}{note}", flush=True)

    def skip(self, bench: str, case: str, reason: str) -> None:
        self.rows.append(Row(bench, case, math.nan, "skipped", note=reason))
        print(f"[{bench}] {case}: SKIPPED: {reason}", flush=True)

    def table(self) -> str:
        header = ("benchmark", "case", "value", "unit", "peer/ours")
        body = [
            (
                r.bench,
                r.case,
                _format_value(r.value) if r.unit != "skipped" else "-",
                r.unit,
                f"{r.ratio:.2f}" if r.ratio is not None else "",
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

        def fmt(line: tuple[str, ...]) -> str:
            return "  ".join(
                cell.ljust(w) if i < 2 or i == 3 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])
