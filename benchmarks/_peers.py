"""The models that ``benchmarks/run.py`` compares genmodels with: the same RealNVP built with normflows,
zuko and nflows, a minimal hand-written eager RealNVP, and diffusers' DDPM/DDIM schedulers driving
genmodels' own denoising network.

Every builder returns an object with the trainable ``module`` and a ``loss(x)`` (mean negative
log-likelihood, or the DDPM noise-prediction error); a library that cannot be imported raises
:class:`Unavailable` with the reason, which the benchmark prints instead of a number.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "Unavailable",
    "FlowSpec",
    "Trainable",
    "FLOW_PEERS",
    "plain_realnvp",
    "diffusers_scheduler",
    "diffusers_loss",
    "diffusers_sample",
]


class Unavailable(RuntimeError):
    """A peer library is missing or does not work beside this torch; the message says why."""


def _require(name: str):  # noqa: ANN202 - a module
    try:
        return importlib.import_module(name)
    except Exception as error:  # ImportError, or anything a broken install raises on import
        raise Unavailable(f"cannot import {name}: {type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class FlowSpec:
    """The RealNVP architecture every flow implementation builds: ``couplings`` affine couplings on
    alternating halves of ``dim`` coordinates, each conditioned by a ReLU MLP with ``n_hidden`` hidden
    layers of ``hidden_units``."""

    dim: int = 2
    couplings: int = 14
    n_hidden: int = 2
    hidden_units: int = 128


@dataclass
class Trainable:
    """A model to train: its parameters live in ``module``; ``loss(batch)`` is a scalar."""

    module: nn.Module
    loss: Callable[[torch.Tensor], torch.Tensor]


def _nll(z: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    log_prob = -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi)) + log_det
    return -log_prob.mean()


# -- a minimal eager RealNVP: the baseline of "what a plain PyTorch implementation costs" -------------
class _PlainCoupling(nn.Module):
    def __init__(self, spec: FlowSpec, parity: int) -> None:
        super().__init__()
        self.parity = parity
        self.split = spec.dim // 2 if parity == 0 else spec.dim - spec.dim // 2
        n_out = spec.dim - self.split
        widths = [self.split] + [spec.hidden_units] * spec.n_hidden
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], 2 * n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.parity:
            x = x.flip(-1)
        kept, moved = x[:, : self.split], x[:, self.split :]
        shift, raw = self.net(kept).chunk(2, dim=-1)
        log_scale = 3.0 * torch.tanh(raw / 3.0)
        y = torch.cat([kept, moved * torch.exp(log_scale) + shift], dim=-1)
        return (y.flip(-1) if self.parity else y), log_scale.sum(-1)


class _PlainRealNVP(nn.Module):
    def __init__(self, spec: FlowSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_PlainCoupling(spec, i % 2) for i in range(spec.couplings))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        log_det = torch.zeros(x.shape[0], device=x.device)
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return _nll(x, log_det)


def plain_realnvp(spec: FlowSpec) -> Trainable:
    model = _PlainRealNVP(spec)
    return Trainable(model, model.loss)


# -- peer libraries ---------------------------------------------------------------------------------
def normflows_realnvp(spec: FlowSpec) -> Trainable:
    """normflows: ``AffineCouplingBlock`` (channel split into halves) followed by a swap ``Permute``."""
    nf = _require("normflows")
    half = spec.dim // 2
    flows = []
    for _ in range(spec.couplings):
        widths = [half] + [spec.hidden_units] * spec.n_hidden + [2 * (spec.dim - half)]
        flows.append(nf.flows.AffineCouplingBlock(nf.nets.MLP(widths, init_zeros=True)))
        flows.append(nf.flows.Permute(spec.dim, mode="swap"))
    base = nf.distributions.DiagGaussian(spec.dim, trainable=False)
    model = nf.NormalizingFlow(base, flows)
    return Trainable(model, model.forward_kld)


def zuko_realnvp(spec: FlowSpec) -> Trainable:
    """zuko: ``zuko.flows.RealNVP`` (alternating masks, monotonic affine transforms)."""
    zuko = _require("zuko")
    flow = zuko.flows.RealNVP(
        spec.dim, transforms=spec.couplings, hidden_features=[spec.hidden_units] * spec.n_hidden
    )
    return Trainable(flow, lambda x: -flow().log_prob(x).mean())


def nflows_realnvp(spec: FlowSpec) -> Trainable:
    """nflows: ``AffineCouplingTransform`` with alternating masks and nflows' own MLP."""
    _require("nflows")
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform

    class Conditioner(nn.Module):
        """nflows' MLP, taking the (unused) ``context`` argument that coupling layers pass."""

        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.mlp = MLP((n_in,), (n_out,), [spec.hidden_units] * spec.n_hidden)

        def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
            return self.mlp(inputs)

    transforms = []
    for i in range(spec.couplings):
        mask = torch.zeros(spec.dim, dtype=torch.int64)
        mask[spec.dim // 2 :] = 1
        transforms.append(AffineCouplingTransform(mask if i % 2 == 0 else 1 - mask, Conditioner))
    flow = Flow(CompositeTransform(transforms), StandardNormal([spec.dim]))
    return Trainable(flow, lambda x: -flow.log_prob(x).mean())


FLOW_PEERS: dict[str, Callable[[FlowSpec], Trainable]] = {
    "normflows": normflows_realnvp,
    "zuko": zuko_realnvp,
    "nflows": nflows_realnvp,
}


# -- diffusers: its schedulers around genmodels' denoising network ----------------------------------
def diffusers_scheduler(schedule: nn.Module, kind: str = "ddpm"):  # noqa: ANN201 - a diffusers scheduler
    """A diffusers ``DDPMScheduler`` (``kind="ddpm"``) or ``DDIMScheduler`` (``"ddim"``) whose betas are
    genmodels' β² schedule (``schedule``: a :class:`genmodels.models.schedule.NoiseSchedule`), checked to give
    the same ᾱ (genmodels' ᾱ_i is the square root of diffusers' ``alphas_cumprod``)."""
    diffusers = _require("diffusers")
    betas = schedule.beta2[1:].double().cpu().numpy()
    common = {
        "num_train_timesteps": len(betas),
        "trained_betas": betas,
        "clip_sample": False,
        "prediction_type": "epsilon",
    }
    if kind == "ddpm":
        scheduler = diffusers.DDPMScheduler(variance_type="fixed_small", **common)
    elif kind == "ddim":
        scheduler = diffusers.DDIMScheduler(set_alpha_to_one=True, timestep_spacing="trailing", **common)
    else:
        raise ValueError(f"unknown scheduler kind {kind!r}")
    ours = schedule.alpha_bar[1:].double().cpu()
    theirs = scheduler.alphas_cumprod.double().sqrt()
    if not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6):
        raise Unavailable("diffusers' alphas_cumprod does not match the genmodels schedule")
    return scheduler


def diffusers_loss(
    network: nn.Module, scheduler, mean: torch.Tensor, std: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:  # noqa: ANN001
    """The usual diffusers training loss: ``add_noise`` at t ~ U{0..T-1}, MSE of the predicted noise.
    diffusers' t is genmodels' timestep i = t + 1 (the network's embedding table is indexed by i)."""
    steps = scheduler.config.num_train_timesteps

    def loss(x0: torch.Tensor) -> torch.Tensor:
        z0 = (x0 - mean) / std
        t = torch.randint(0, steps, (z0.shape[0],), device=z0.device)
        noise = torch.randn_like(z0)
        noisy = scheduler.add_noise(z0, noise, t)
        return torch.nn.functional.mse_loss(network(noisy, t + 1), noise)

    return loss


@torch.inference_mode()
def diffusers_sample(
    network: nn.Module,
    scheduler,  # noqa: ANN001
    n: int,
    *,
    dim: int,
    inference_steps: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator | None = None,
    eta: float | None = None,
) -> torch.Tensor:
    """The usual diffusers sampling loop: ``set_timesteps``, then ``scheduler.step`` at every timestep;
    ``eta`` is passed to DDIM's step."""
    device = mean.device
    scheduler.set_timesteps(inference_steps)
    x = torch.randn(n, dim, generator=generator, device=device)
    network_steps = scheduler.timesteps.to(device) + 1
    extra = {} if eta is None else {"eta": eta}
    for k, t in enumerate(scheduler.timesteps):
        eps = network(x, network_steps[k].expand(n))
        x = scheduler.step(eps, t, x, generator=generator, **extra).prev_sample
    return x * std + mean
