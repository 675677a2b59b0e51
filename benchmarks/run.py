"""Speed and memory benchmarks of genmodels' RealNVP and DDPM against peer libraries.

Run from the repository root (the ``bench`` extra installs the peers: ``pip install -e .[bench]``)::

    python benchmarks/run.py                   # everything, full size (long on a CPU)
    python benchmarks/run.py --quick           # small sizes and few rounds: a smoke test (a few minutes on a CPU)
    python benchmarks/run.py --device cuda     # on the GPU (kernels are synchronised around every timing)
    python benchmarks/run.py --only realnvp_train,memory

Every timing is measured in this one process: each case is warmed up, then all cases of a benchmark
run in interleaved rounds (the order rotates from round to round) and a case's time is the median
over rounds. A ratio ``peer/ours`` is the peer's median divided by genmodels' median from the same
rounds: above 1 means genmodels is faster (or smaller, for memory). Each result is printed as one
line when measured, and all of them again as a table at the end.

The benchmarks (``--only`` takes their names, comma-separated):

``realnvp_train``
    ms per optimisation step (loss, backward, Adam step) of a RealNVP with 14 affine couplings, each
    conditioned by a ReLU MLP with 2 hidden layers of 128 units, on a batch of 2048 2-D points.
    "genmodels" is ``genmodels.models.realnvp.RealNVP`` with the optimizer ``genmodels.train.trainer.Trainer``
    builds (``torch.optim.Adam(params, lr, fused=True)``); "genmodels, default Adam" isolates the
    optimizer's share; "genmodels Trainer.fit" is the library's whole training loop per step (batch
    gathering, gradient clipping, the loss/gradient check, the EMA update). The peers, normflows,
    zuko and nflows, build the same architecture with their own coupling layers and MLPs, and "plain
    eager PyTorch" is a minimal hand-written RealNVP (``benchmarks/_peers.py``); they use
    ``torch.optim.Adam(params, lr)`` with its defaults, as their users typically would.
``realnvp_flops``
    The achieved arithmetic rate of the genmodels RealNVP step: the matrix-product FLOPs of one step
    (forward and backward, counted by ``torch.utils.flop_counter.FlopCounterMode``) divided by its
    time, as a fraction of the measured rate of a float32 (and a bfloat16) ``2048x128 @ 128x128``
    matmul loop, the step's dominant shape, timed in the same rounds.
``ddpm_train``
    ms per optimisation step of ``genmodels.models.ddpm.DDPM`` with the default config (2500 steps, 4
    residual blocks of width 64, time embedding 32, eps prediction, simple loss) on a batch of 4096,
    against the usual diffusers loop (``DDPMScheduler.add_noise`` with ``trained_betas`` equal to
    genmodels' β² schedule, MSE on the noise) around the very same network module.
``ddpm_sample``
    Seconds to draw 65,536 points through all 2,500 ancestral steps as ``genmodels sample`` does
    (``genmodels.evaluation.sampling.sample_model``: chunks of 4,096 points, each taken through every step) against a
    diffusers ``DDPMScheduler.step`` loop with the same network on all points at once, and with 100
    DDIM steps (``sampling_steps=100, eta=1``) against ``DDIMScheduler.step``; the network's FLOPs per
    step (one call on 65,536 points) and the achieved fraction of the matmul rate of the network's
    ``N x 64 @ 64 x 64`` products. With ``--quick`` fewer points and steps are timed and the seconds
    are scaled linearly to the full size (marked "extrapolated").
``memory``
    Peak memory in MB, each case in a fresh subprocess: the growth of the resident set's high-water
    mark (``resource.getrusage().ru_maxrss``, read as the process's own ``VmHWM`` on Linux, see
    ``_max_rss_mb``) over the workload, or on CUDA the growth of
    ``torch.cuda.max_memory_allocated``. Workloads: 5 training steps of each RealNVP implementation
    and of both DDPM loops, and ``genmodels.evaluation.sampling.sample_model(model, 1_000_000, seed=0,
    chunk_size=65536)`` for both genmodels models (the DDPM with fewer diffusion steps under
    ``--quick``; the memory of sampling does not depend on the step count).

Every genmodels case is also timed with ``precision="bfloat16"``, with ``torch.compile`` and with both
(``genmodels.train.acceleration``; ``--no_compile`` skips the compiled ones), each with its speed-up over
the fastest peer.

FLOPs count only matrix products (linear layers); activations, normalisations and the optimizer
are elementwise work that the count leaves out, so the "fraction of peak" is a lower bound of how busy
the arithmetic units are. Thread count follows ``OMP_NUM_THREADS`` / torch's default; it is printed
in the header.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _common import Report, Row, Settings, count_flops, interleaved, matmul_case  # noqa: E402
from _peers import (  # noqa: E402
    FLOW_PEERS,
    FlowSpec,
    Unavailable,
    diffusers_loss,
    diffusers_sample,
    diffusers_scheduler,
    plain_realnvp,
)

from genmodels.config import DDPMModelConfig, TrainingConfig  # noqa: E402
from genmodels.evaluation.sampling import sample_model  # noqa: E402
from genmodels.models.ddpm import DDPM  # noqa: E402
from genmodels.models.realnvp import RealNVP  # noqa: E402
from genmodels.train.acceleration import (  # noqa: E402
    autocast,
    compile_function,
    compiled_network,
    tune_allocator,
)

LEARNING_RATE = 1e-3
REALNVP_BATCH = 2048
DDPM_BATCH = 4096
SAMPLE_POINTS = 65_536
DDIM_STEPS = 100
DDIM_ETA = 1.0
MEMORY_POINTS = 1_000_000
MEMORY_CHUNK = 65_536
MEMORY_TRAIN_STEPS = 5
EPOCH_BATCHES = 4  # batches per timed epoch of the per-epoch cases (Trainer.fit, DataLoader loop)


@dataclass(frozen=True)
class Sizes:
    """Problem sizes actually timed (``--quick`` shrinks the sampling ones and extrapolates)."""

    sample_points: int
    ancestral_steps: int
    ddim_steps: int
    memory_ddpm_steps: int


FULL_SIZES = Sizes(
    SAMPLE_POINTS, DDPMModelConfig().diffusion_steps, DDIM_STEPS, DDPMModelConfig().diffusion_steps
)
QUICK_SIZES = Sizes(sample_points=8192, ancestral_steps=10, ddim_steps=10, memory_ddpm_steps=3)


@dataclass
class Context:
    settings: Settings
    sizes: Sizes
    report: Report
    compile: bool = True

    @property
    def device(self) -> torch.device:
        return self.settings.device


# -- shared pieces ------------------------------------------------------------------------------------
def toy_points(n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """``n`` correlated 2-D Gaussian points off the origin (the values do not matter for speed)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=generator)
    return (z @ torch.tensor([[1.5, 0.3], [0.0, 0.4]]) + torch.tensor([1.0, -2.0])).to(device)


def train_step(loss: Callable[[torch.Tensor], torch.Tensor], optimizer, batch: torch.Tensor):  # noqa: ANN001
    """One optimisation step as a zero-argument call."""

    def step() -> None:
        value = loss(batch)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return step


def accelerated(
    loss: Callable[[torch.Tensor], torch.Tensor], device: torch.device, precision: str, compiled: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``loss`` as ``genmodels.train.trainer.Trainer`` runs it with ``training.precision`` and
    ``training.compile``."""
    fn = compile_function(loss, device) if compiled else loss

    def run(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return fn(batch)

    return run


def variants(ctx: Context) -> dict[str, tuple[str, bool]]:
    """The accelerated genmodels cases: name suffix -> (precision, compiled)."""
    out = {"bfloat16": ("bfloat16", False)}
    if ctx.compile:
        out.update({"compiled": ("float32", True), "compiled bfloat16": ("bfloat16", True)})
    return out


def fastest_vs_peers(ctx: Context, bench: str, times: dict[str, float], peers: list[str]) -> None:
    """Rows: each genmodels variant's speed-up over the fastest peer measured in the same rounds."""
    present = [name for name in peers if name in times]
    if not present:
        return
    best = min(present, key=times.__getitem__)
    for name, seconds in times.items():
        if name.startswith("genmodels") and "Trainer" not in name and "default Adam" not in name:
            ctx.report.add(
                Row(bench, f"{name}: speed-up over the fastest peer ({best})", times[best] / seconds, "x")
            )


def fused_adam(module: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``genmodels.train.trainer.Trainer`` builds (without weight decay)."""
    return torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=LEARNING_RATE, fused=True)


def default_adam(module: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)


def trainer_steps(model: torch.nn.Module, data: torch.Tensor, batch_size: int) -> Callable[[], None]:
    """One epoch of ``genmodels.train.trainer.Trainer.fit`` over ``data`` (a whole number of batches), eager."""
    from genmodels.train.trainer import Trainer

    config = TrainingConfig(
        compile="off",
        epochs=1,
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        lr_decay=1.0,
        eval_every=10**9,
        checkpoint_every=0,
    )
    trainer = Trainer(model, config, progress=False)

    def epoch() -> None:
        trainer.config = dataclasses.replace(trainer.config, epochs=trainer.epoch + 1)
        trainer.fit(data)

    return epoch


def genmodels_realnvp(spec: FlowSpec, data: torch.Tensor) -> RealNVP:
    model = RealNVP(
        spec.dim, n_coupling_layers=spec.couplings, n_hidden=spec.n_hidden, hidden_units=spec.hidden_units
    )
    model.set_standardization(data.mean(0).cpu(), data.std(0).cpu())
    return model.to(data.device)


def genmodels_ddpm(data: torch.Tensor, steps: int | None = None) -> DDPM:
    config = DDPMModelConfig()
    if steps is not None:
        config = dataclasses.replace(config, diffusion_steps=steps)
    model = DDPM.from_config(config, dim=data.shape[1])
    model.set_standardization(data.mean(0).cpu(), data.std(0).cpu())
    return model.to(data.device)


def report_times(
    ctx: Context, bench: str, times: dict[str, float], ours: str, unit: str, scale: float, note: str = ""
) -> None:
    """Add one row per case (``times`` in seconds, shown times ``scale`` in ``unit``), with the ratio
    to the case named ``ours``."""
    for name, seconds in times.items():
        ratio = None if name == ours else seconds / times[ours]
        ctx.report.add(Row(bench, name, seconds * scale, unit, ratio, note))


def add_case(
    ctx: Context, bench: str, cases: dict[str, Callable[[], object]], name: str, build: Callable[[], object]
) -> None:
    """Build a case and run it once, or print why it is skipped (a missing peer library, an API that
    changed)."""
    try:
        case = build()
        case()
        cases[name] = case
    except Unavailable as error:
        ctx.report.skip(bench, name, str(error))
    except Exception as error:  # a peer's API differs from the one this file was written against
        ctx.report.skip(bench, name, f"could not be built: {type(error).__name__}: {error}")


def add_genmodels_training_cases(
    ctx: Context,
    bench: str,
    cases: dict[str, Callable[[], object]],
    per_call: dict[str, int],
    build: Callable[[torch.Tensor], torch.nn.Module],
    batch: torch.Tensor,
) -> torch.Tensor:
    """The genmodels training-step cases of ``bench``: the model ``build(data)`` makes, with the fused
    Adam ("genmodels"), the default Adam, each accelerated variant, and ``Trainer.fit`` over an epoch
    of ``EPOCH_BATCHES`` batches (its time is divided by that, through ``per_call``). Returns that
    epoch's data, for other per-epoch cases."""

    def ours(
        optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
        precision: str = "float32",
        compiled: bool = False,
    ) -> Callable[[], object]:
        torch.manual_seed(0)
        model = build(batch)
        return train_step(accelerated(model.loss, ctx.device, precision, compiled), optimizer(model), batch)

    cases["genmodels"] = ours(fused_adam)
    add_case(ctx, bench, cases, "genmodels, default Adam", lambda: ours(default_adam))
    for suffix, (precision, compiled) in variants(ctx).items():
        add_case(
            ctx, bench, cases, f"genmodels {suffix}", lambda p=precision, c=compiled: ours(fused_adam, p, c)
        )
    data = toy_points(len(batch) * EPOCH_BATCHES, ctx.device, seed=1)
    add_case(ctx, bench, cases, "genmodels Trainer.fit", lambda: trainer_steps(build(data), data, len(batch)))
    per_call["genmodels Trainer.fit"] = EPOCH_BATCHES
    return data


# -- benchmarks ---------------------------------------------------------------------------------------
def bench_realnvp_train(ctx: Context) -> None:
    bench, spec = "realnvp_train", FlowSpec()
    batch = toy_points(REALNVP_BATCH, ctx.device)
    cases: dict[str, Callable[[], object]] = {}
    per_call: dict[str, int] = {}

    add_genmodels_training_cases(ctx, bench, cases, per_call, lambda d: genmodels_realnvp(spec, d), batch)

    def peer(build: Callable[[FlowSpec], object]) -> Callable[[], object]:
        torch.manual_seed(0)
        trainable = build(spec)
        trainable.module.to(ctx.device)
        return train_step(trainable.loss, default_adam(trainable.module), batch)

    add_case(ctx, bench, cases, "plain eager PyTorch", lambda: peer(plain_realnvp))
    for name, build in FLOW_PEERS.items():
        add_case(ctx, bench, cases, name, lambda build=build: peer(build))
    timings = interleaved(cases, ctx.settings)
    times = {name: t.median / per_call.get(name, 1) for name, t in timings.items()}
    report_times(ctx, bench, times, "genmodels", "ms/step", 1e3)
    fastest_vs_peers(ctx, bench, times, list(FLOW_PEERS))


def bench_realnvp_flops(ctx: Context) -> None:
    bench, spec = "realnvp_flops", FlowSpec()
    batch = toy_points(REALNVP_BATCH, ctx.device)
    torch.manual_seed(0)
    model = genmodels_realnvp(spec, batch)
    flops = count_flops(lambda: model.loss(batch).backward())
    model.zero_grad(set_to_none=True)
    cases: dict[str, Callable[[], object]] = {"step": train_step(model.loss, fused_adam(model), batch)}
    for suffix, (precision, compiled) in variants(ctx).items():
        torch.manual_seed(0)
        other = genmodels_realnvp(spec, batch)
        loss = accelerated(other.loss, ctx.device, precision, compiled)
        add_case(
            ctx, bench, cases, f"step {suffix}", lambda o=other, f=loss: train_step(f, fused_adam(o), batch)
        )
    peak_flops: dict[str, int] = {}
    for label, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        call, peak_flops[label] = matmul_case(
            REALNVP_BATCH, spec.hidden_units, spec.hidden_units, dtype, ctx.device
        )
        cases[label] = call
    timings = interleaved(cases, ctx.settings)
    step_s = timings["step"].median
    rate = flops / step_s
    report = ctx.report
    report.add(Row(bench, "matmul FLOPs per step (fwd+bwd)", flops / 1e9, "GFLOP"))
    report.add(Row(bench, "genmodels step", step_s * 1e3, "ms/step"))
    report.add(Row(bench, "genmodels achieved rate", rate / 1e9, "GFLOP/s"))
    shape = f"{REALNVP_BATCH}x{spec.hidden_units}@{spec.hidden_units}x{spec.hidden_units}"
    for label in ("float32", "bfloat16"):
        peak = peak_flops[label] / timings[label].median
        report.add(Row(bench, f"matmul peak {label} {shape}", peak / 1e9, "GFLOP/s"))
        report.add(Row(bench, f"genmodels fraction of {label} peak", 100 * rate / peak, "%"))
    # The accelerated paths do the same FLOPs; their rate against the float32 peak is the speed-up
    # a user sees over what float32 arithmetic alone could reach.
    peak32 = peak_flops["float32"] / timings["float32"].median
    for suffix in variants(ctx):
        if f"step {suffix}" in timings:
            step = timings[f"step {suffix}"].median
            report.add(Row(bench, f"genmodels {suffix} step", step * 1e3, "ms/step"))
            report.add(
                Row(bench, f"genmodels {suffix} fraction of float32 peak", 100 * flops / step / peak32, "%")
            )


def bench_ddpm_train(ctx: Context) -> None:
    bench = "ddpm_train"
    batch = toy_points(DDPM_BATCH, ctx.device)
    cases: dict[str, Callable[[], object]] = {}
    per_call: dict[str, int] = {}

    data = add_genmodels_training_cases(ctx, bench, cases, per_call, genmodels_ddpm, batch)

    def diffusers_case() -> Callable[[], object]:
        torch.manual_seed(0)
        model = genmodels_ddpm(batch)
        network = copy.deepcopy(model.network)
        scheduler = diffusers_scheduler(model.schedule, "ddpm")
        loss = diffusers_loss(network, scheduler, model.standardize.mean, model.standardize.std)
        return train_step(loss, default_adam(network), batch)

    add_case(ctx, bench, cases, "diffusers DDPMScheduler loop", diffusers_case)

    def diffusers_dataloader_case() -> Callable[[], object]:
        # The loop as diffusers' training examples write it: batches from a shuffling DataLoader.
        torch.manual_seed(0)
        model = genmodels_ddpm(data)
        network = copy.deepcopy(model.network)
        scheduler = diffusers_scheduler(model.schedule, "ddpm")
        loss = diffusers_loss(network, scheduler, model.standardize.mean, model.standardize.std)
        optimizer = default_adam(network)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data), batch_size=DDPM_BATCH, shuffle=True
        )

        def epoch() -> None:
            for (x0,) in loader:
                train_step(loss, optimizer, x0)()

        return epoch

    add_case(ctx, bench, cases, "diffusers loop, DataLoader batches", diffusers_dataloader_case)
    per_call["diffusers loop, DataLoader batches"] = EPOCH_BATCHES
    timings = interleaved(cases, ctx.settings)
    times = {name: t.median / per_call.get(name, 1) for name, t in timings.items()}
    report_times(ctx, bench, times, "genmodels", "ms/step", 1e3)
    fastest_vs_peers(ctx, bench, times, ["diffusers DDPMScheduler loop"])
    if "diffusers loop, DataLoader batches" in times:
        for name in [n for n in times if n.startswith("genmodels") and "default Adam" not in n]:
            speed_up = times["diffusers loop, DataLoader batches"] / times[name]
            ctx.report.add(Row(bench, f"{name}: speed-up over the DataLoader diffusers loop", speed_up, "x"))
    model = genmodels_ddpm(batch)
    flops = count_flops(lambda: model.loss(batch).backward())
    ctx.report.add(Row(bench, "matmul FLOPs per step (fwd+bwd)", flops / 1e9, "GFLOP"))
    ctx.report.add(Row(bench, "genmodels achieved rate", flops / times["genmodels"] / 1e9, "GFLOP/s"))


def bench_ddpm_sample(ctx: Context) -> None:
    bench, sizes, device = "ddpm_sample", ctx.sizes, ctx.device
    data = toy_points(4096, device)
    n = sizes.sample_points
    torch.manual_seed(0)
    ancestral = genmodels_ddpm(data, steps=sizes.ancestral_steps).eval()
    ddim = genmodels_ddpm(data).eval()
    full_steps = DDPMModelConfig().diffusion_steps
    mean, std = ancestral.standardize.mean, ancestral.standardize.std

    def generator() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    # genmodels samples as `genmodels sample` does: sample_model, in chunks of the default size.
    cases: dict[str, Callable[[], object]] = {
        "genmodels DDPM": lambda: sample_model(ancestral, n, seed=0),
    }

    def accelerated_sampler(precision: str, compiled: bool) -> Callable[[], object]:
        torch.manual_seed(0)
        model = genmodels_ddpm(data, steps=sizes.ancestral_steps).eval()

        def run() -> object:
            with compiled_network(model, compiled) as m:
                return sample_model(m, n, seed=0, precision=precision)

        return run

    for suffix, (precision, compiled) in variants(ctx).items():
        add_case(
            ctx,
            bench,
            cases,
            f"genmodels DDPM {suffix}",
            lambda p=precision, c=compiled: accelerated_sampler(p, c),
        )

    def diffusers_ddpm() -> Callable[[], object]:
        scheduler = diffusers_scheduler(ancestral.schedule, "ddpm")
        return lambda: diffusers_sample(
            ancestral.network,
            scheduler,
            n,
            dim=2,
            inference_steps=sizes.ancestral_steps,
            mean=mean,
            std=std,
            generator=generator(),
        )

    add_case(ctx, bench, cases, "diffusers DDPMScheduler loop", diffusers_ddpm)
    cases["genmodels DDIM"] = lambda: sample_model(
        ddim, n, seed=0, sampling_steps=sizes.ddim_steps, eta=DDIM_ETA
    )

    def diffusers_ddim() -> Callable[[], object]:
        scheduler = diffusers_scheduler(ddim.schedule, "ddim")
        return lambda: diffusers_sample(
            ddim.network,
            scheduler,
            n,
            dim=2,
            inference_steps=sizes.ddim_steps,
            mean=mean,
            std=std,
            generator=generator(),
            eta=DDIM_ETA,
        )

    add_case(ctx, bench, cases, "diffusers DDIMScheduler loop", diffusers_ddim)
    width = DDPMModelConfig().hidden_units
    peak_flops: dict[str, int] = {}
    for label, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        cases[label], peak_flops[label] = matmul_case(n, width, width, dtype, device, target_flops=1e9)
    timings = interleaved(cases, ctx.settings)

    # The network's FLOPs per step at the full size, and at the size timed, called as the sampler
    # calls it: one timestep shape (1,) for all points, so the time embedding and each block's
    # conditioning are computed once per step (the diffusers loop passes one timestep per point).
    with torch.inference_mode():
        t_full = torch.full((1,), full_steps, device=device)
        flops_full = count_flops(lambda: ddim.network(toy_points(SAMPLE_POINTS, device), t_full))
    flops_timed = flops_full * n / SAMPLE_POINTS
    point_scale = SAMPLE_POINTS / n
    groups = {
        "ancestral": (sizes.ancestral_steps, full_steps, "genmodels DDPM", "diffusers DDPMScheduler loop"),
        "ddim": (sizes.ddim_steps, DDIM_STEPS, "genmodels DDIM", "diffusers DDIMScheduler loop"),
    }
    for suffix in variants(ctx):
        name = f"genmodels DDPM {suffix}"
        if name in timings:
            groups[suffix] = (sizes.ancestral_steps, full_steps, name, "diffusers DDPMScheduler loop")
    report = ctx.report
    report.add(Row(bench, f"network matmul FLOPs per step ({SAMPLE_POINTS} pts)", flops_full / 1e9, "GFLOP"))
    for label in ("float32", "bfloat16"):
        peak = peak_flops[label] / timings[label].median
        report.add(Row(bench, f"matmul peak {label} {n}x{width}@{width}x{width}", peak / 1e9, "GFLOP/s"))
    for timed_steps, target_steps, ours, peer in groups.values():
        scale = point_scale * target_steps / timed_steps
        note = "" if scale == 1 else f"extrapolated from {n} pts x {timed_steps} steps"
        label = f"{SAMPLE_POINTS} pts x {target_steps} steps"
        # the peer's row is reported once, with the float32 sampler; variants get a speed-up row
        shown = (ours, peer) if ours in ("genmodels DDPM", "genmodels DDIM") else (ours,)
        times = {f"{name} ({label})": timings[name].median * scale for name in shown if name in timings}
        report_times(ctx, bench, times, f"{ours} ({label})", "s", 1.0, note)
        if peer in timings:
            speed_up = timings[peer].median / timings[ours].median
            report.add(Row(bench, f"{ours}: speed-up over {peer}", speed_up, "x"))
        rate = flops_timed * timed_steps / timings[ours].median
        for peak_label in ("float32", "bfloat16"):
            peak = peak_flops[peak_label] / timings[peak_label].median
            report.add(Row(bench, f"{ours} fraction of {peak_label} peak", 100 * rate / peak, "%"))


# -- memory: each case in a fresh subprocess ----------------------------------------------------------
MEMORY_CASES = (
    "realnvp train: genmodels",
    "realnvp train: plain eager PyTorch",
    *(f"realnvp train: {name}" for name in FLOW_PEERS),
    "ddpm train: genmodels",
    "ddpm train: diffusers DDPMScheduler loop",
    "realnvp sample 1M: genmodels",
    "ddpm sample 1M: genmodels",
)


def memory_workload(case: str, device: torch.device, ddpm_steps: int) -> Callable[[], object]:
    """Set up ``case`` (model, optimizer, data) and return the workload whose memory is measured."""

    torch.manual_seed(0)
    kind, name = case.split(": ", 1)
    if kind == "realnvp train":
        batch = toy_points(REALNVP_BATCH, device)
        if name == "genmodels":
            model = genmodels_realnvp(FlowSpec(), batch)
            step = train_step(model.loss, fused_adam(model), batch)
        else:
            build = plain_realnvp if name == "plain eager PyTorch" else FLOW_PEERS[name]
            trainable = build(FlowSpec())
            trainable.module.to(device)
            step = train_step(trainable.loss, default_adam(trainable.module), batch)
    elif kind == "ddpm train":
        batch = toy_points(DDPM_BATCH, device)
        model = genmodels_ddpm(batch)
        if name == "genmodels":
            step = train_step(model.loss, fused_adam(model), batch)
        else:
            scheduler = diffusers_scheduler(model.schedule, "ddpm")
            loss = diffusers_loss(model.network, scheduler, model.standardize.mean, model.standardize.std)
            step = train_step(loss, default_adam(model.network), batch)
    elif kind == "realnvp sample 1M":
        model = genmodels_realnvp(FlowSpec(), toy_points(4096, device)).eval()
        return lambda: sample_model(model, MEMORY_POINTS, seed=0, chunk_size=MEMORY_CHUNK)
    elif kind == "ddpm sample 1M":
        model = genmodels_ddpm(toy_points(4096, device), steps=ddpm_steps).eval()
        return lambda: sample_model(model, MEMORY_POINTS, seed=0, chunk_size=MEMORY_CHUNK)
    else:
        raise ValueError(f"unknown memory case {case!r}")

    def train() -> None:
        for _ in range(MEMORY_TRAIN_STEPS):
            step()

    return train


def _max_rss_mb() -> float:
    """The process's resident-set high-water mark in MB.

    This is ``resource.getrusage().ru_maxrss``, except that on Linux it is read as ``VmHWM`` from
    ``/proc/self/status``: Linux carries ``ru_maxrss`` over ``exec`` from the process that started
    this one (here the benchmark's main process, whose peak would hide the workload's), while VmHWM
    belongs to this process's own address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def memory_child(case: str, device: torch.device, ddpm_steps: int) -> dict[str, float]:
    """Run in a fresh process: the peak memory that ``case``'s workload adds to its setup."""
    import gc

    work = memory_workload(case, device, ddpm_steps)
    gc.collect()
    result: dict[str, float] = {"rss_before_mb": _max_rss_mb()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated = torch.cuda.memory_allocated(device)
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["cuda_delta_mb"] = (torch.cuda.max_memory_allocated(device) - allocated) / 2**20
    result["rss_peak_mb"] = _max_rss_mb()
    result["rss_delta_mb"] = result["rss_peak_mb"] - result["rss_before_mb"]
    return result


def bench_memory(ctx: Context) -> None:
    bench, device = "memory", ctx.device
    key = "cuda_delta_mb" if device.type == "cuda" else "rss_delta_mb"
    what = "peak CUDA allocation growth" if device.type == "cuda" else "max RSS growth"
    ours_mb: dict[str, float] = {}
    for case in MEMORY_CASES:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-child",
            case,
            "--device",
            device.type,
            "--memory-ddpm-steps",
            str(ctx.sizes.memory_ddpm_steps),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(("RESULT ", "SKIP "))]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            ctx.report.skip(bench, case, f"subprocess failed (exit {done.returncode}): {tail}")
            continue
        if lines[-1].startswith("SKIP "):
            ctx.report.skip(bench, case, lines[-1][5:])
            continue
        result = json.loads(lines[-1][7:])
        kind, name = case.split(": ", 1)
        if name == "genmodels":
            ours_mb[kind] = result[key]
        ours = ours_mb.get(kind)
        ratio = result[key] / ours if name != "genmodels" and ours else None
        note = what
        if kind == "ddpm sample 1M":
            note += f", {ctx.sizes.memory_ddpm_steps} diffusion steps"
        ctx.report.add(Row(bench, case, result[key], "MB", ratio, note))


# -- registry and command line ------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    name: str
    run: Callable[[Context], None]
    summary: str


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "realnvp_train", bench_realnvp_train, "RealNVP training step vs normflows/zuko/nflows/eager"
        ),
        Benchmark("realnvp_flops", bench_realnvp_flops, "RealNVP step FLOP rate vs the matmul peak"),
        Benchmark("ddpm_train", bench_ddpm_train, "DDPM training step vs a diffusers loop"),
        Benchmark("ddpm_sample", bench_ddpm_sample, "DDPM / DDIM sampling vs diffusers scheduler loops"),
        Benchmark("memory", bench_memory, "peak memory of training and of sampling 1M points"),
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    listing = "; ".join(f"{b.name}: {b.summary}" for b in BENCHMARKS.values())
    parser = argparse.ArgumentParser(
        description="Benchmark genmodels against peer libraries.", epilog=f"Benchmarks: {listing}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds (default 7; 3 with --quick)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per case (default 3; 1 with --quick)")
    parser.add_argument(
        "--no_compile", action="store_true", help="skip the torch.compile cases (they compile for minutes)"
    )
    parser.add_argument(
        "--no_allocator_tuning",
        action="store_true",
        help="leave glibc's malloc thresholds alone (genmodels.train.acceleration.tune_allocator)",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-ddpm-steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1 (a median needs a round), got {args.rounds}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    if args.only is not None and not args.only.strip(","):
        parser.error(f"--only needs benchmark names, comma-separated; choose from {', '.join(BENCHMARKS)}")
    if args.only:
        unknown = [n for n in args.only.split(",") if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but torch sees no CUDA GPU")
    return args


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"torch {torch.__version__}"]
    for name in ("normflows", "zuko", "nflows", "diffusers"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    # As the genmodels command line does; every case, peers included, runs in this process with it.
    allocator = "untuned" if args.no_allocator_tuning else ("tuned" if tune_allocator() else "untuned")
    if args.memory_child:
        try:
            result = memory_child(args.memory_child, device, args.memory_ddpm_steps or 1)
        except Unavailable as error:
            print(f"SKIP {error}")
            return 0
        print("RESULT " + json.dumps(result))
        return 0

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    settings = Settings(
        device=device,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
        rounds=args.rounds if args.rounds is not None else (3 if args.quick else 7),
        min_sample_s=0.02 if args.quick else 0.2,
        quick=args.quick,
    )
    ctx = Context(settings, sizes, Report(), compile=not args.no_compile)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {_versions()}")
    print(
        f"# device {device} ({where}), torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{'quick' if args.quick else 'full'} mode: warm-up {settings.warmup}, rounds {settings.rounds}, "
        f"malloc {allocator}"
    )
    failed = []
    for name in names:
        print(f"## {name}: {BENCHMARKS[name].summary}", flush=True)
        try:
            BENCHMARKS[name].run(ctx)
        except Exception as error:
            traceback.print_exc()
            ctx.report.skip(name, "(benchmark)", f"failed: {type(error).__name__}: {error}")
            failed.append(name)
    print()
    print("# Summary (peer/ours: the peer's time or memory divided by genmodels'; > 1 means genmodels wins)")
    print(ctx.report.table())
    nan_rows = [r for r in ctx.report.rows if r.unit != "skipped" and math.isnan(r.value)]
    return 1 if failed or nan_rows else 0


if __name__ == "__main__":
    sys.exit(main())
