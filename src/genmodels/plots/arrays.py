"""Arrays (numpy out, nothing drawn) for the figures of a trained flow or diffusion model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

_BATCH = 65536
Box = tuple[float, float, float, float]  # (x0, x1, y0, y1)


def model_tensor(model: nn.Module, values: np.ndarray) -> torch.Tensor:
    """``values`` as a float32 tensor on ``model``'s device."""
    return torch.as_tensor(np.asarray(values), dtype=torch.float32, device=next(model.buffers()).device)


@torch.no_grad()
def log_density_on_grid(flow: nn.Module, grid: np.ndarray, *, batch_size: int = _BATCH) -> np.ndarray:
    """``log p(x)`` of a flow at the points ``grid (G, D)``: ``(G,)`` nats, non-finite ones as ``-inf``."""
    x = model_tensor(flow, grid)
    out = torch.cat([flow.log_prob(chunk) for chunk in x.split(batch_size)]).double().cpu().numpy()
    out[~np.isfinite(out)] = -np.inf
    return out


@torch.no_grad()
def latent(flow: nn.Module, x: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """The latent ``z = f(x)`` (``f_y(x)`` given labels ``(N,)``) of points ``x (N, D)``: ``(N, D)`` float64."""
    chunks = model_tensor(flow, x).split(_BATCH)
    labels = [None] * len(chunks) if label is None else torch.as_tensor(label).split(_BATCH)
    return torch.cat([flow(c, y)[0] for c, y in zip(chunks, labels, strict=True)]).double().cpu().numpy()


def grid_lines(box: Box, *, n_lines: int = 15, n_points: int = 160) -> np.ndarray:
    """Grid lines over ``box = (x0, x1, y0, y1)``: ``(2 * n_lines, n_points, 2)``, vertical ones first."""
    if n_lines < 2 or n_points < 2:
        raise ValueError("n_lines and n_points must be at least 2")
    x0, x1, y0, y1 = box
    vertical = np.meshgrid(np.linspace(x0, x1, n_lines), np.linspace(y0, y1, n_points), indexing="ij")
    horizontal = np.meshgrid(np.linspace(x0, x1, n_points), np.linspace(y0, y1, n_lines))
    return np.concatenate([np.stack(vertical, -1), np.stack(horizontal, -1)]).astype(float)


def _coupling_stages(kinds: Sequence[str], n_panels: int) -> list[int]:
    """Stages to show (-1 = the input): the input, after 1, 2, 4, ... couplings, the last bijection."""
    couplings = [i for i, kind in enumerate(kinds) if kind == "AffineCoupling"]
    if not couplings:
        return [-1, len(kinds) - 1]
    want = max(n_panels - 1, 1)
    counts = sorted({min(2**k, len(couplings)) for k in range(want)} | {len(couplings)})
    return [-1, *[couplings[c - 1] for c in [*counts[: min(want, len(counts)) - 1], counts[-1]]]]


@torch.no_grad()
def warped_grid(
    flow: nn.Module,
    box: Box,
    *,
    points: np.ndarray | None = None,
    n_panels: int = 5,
    n_lines: int = 15,
    n_points: int = 160,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A regular grid over ``box`` (and ``points``) of a 2-D flow at ``n_panels`` stages: per stage a title,
    the grid lines ``(2 * n_lines, n_points, 2)`` and the points ``(N, 2)``."""
    if getattr(flow, "dim", 2) != 2:
        raise ValueError("warped_grid needs a 2-D flow")
    lines = grid_lines(box, n_lines=n_lines, n_points=n_points)
    n = lines.shape[0] * lines.shape[1]  # the grid's vertices come first, then the points
    pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=float)[:, :2]
    x = model_tensor(flow, np.concatenate([lines.reshape(-1, 2), pts]))
    stages = torch.stack([*flow.trajectory(x), x]).double().cpu().numpy()  # the input last, at index -1
    kinds = [type(bijection).__name__ for bijection in flow._bijections()]
    chosen = _coupling_stages(kinds, n_panels)
    done = np.cumsum([k == "AffineCoupling" for k in kinds]).tolist()  # couplings up to each bijection
    titles = [
        "data space x" if i == -1
        else f"latent z (after all {done[-1]} couplings)" if i == len(kinds) - 1
        else f"after {done[i]} coupling{'s' if done[i] != 1 else ''}"
        for i in chosen
    ]  # fmt: skip
    return [(t, v[:n].reshape(lines.shape), v[n:]) for t, v in zip(titles, stages[chosen], strict=True)]


@dataclass
class ReverseRecording:
    """The reverse process of the first ``n_keep`` points of a sampling run (standardised units)."""

    mean: torch.Tensor  # of the model's standardisation, (D,)
    std: torch.Tensor
    timesteps: list[int] = field(default_factory=list)
    states: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.timesteps)

    def trajectory(self, final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(timesteps (T + 1,), states (T + 1, n, D))`` in data units, x_L down to ``final``."""
        if not self.states:
            raise ValueError("nothing was recorded (was the model sampled inside record_reverse_process?)")
        n = min(len(self.states[0]), len(final))
        states = torch.stack([s[:n] for s in self.states]).double() * self.std.double() + self.mean.double()
        last = np.asarray(final, dtype=float)[None, :n]
        return np.asarray([*self.timesteps, 0]), np.concatenate([states.numpy(), last])


@contextlib.contextmanager
def record_reverse_process(model: nn.Module, n_keep: int = 2000) -> Iterator[ReverseRecording]:
    """Record x_i of the first ``n_keep`` points at every reverse step of the sampling done inside."""
    register, scale = getattr(model, "register_reverse_step_hook", None), getattr(model, "standardize", None)
    if register is None or scale is None:
        raise ValueError("record_reverse_process needs a DDPM (a model with reverse steps and .standardize)")
    recording = ReverseRecording(scale.mean.detach().cpu(), scale.std.detach().cpu())

    def hook(x: torch.Tensor, timestep: torch.Tensor) -> None:
        step = int(timestep.reshape(-1)[0])
        if step not in recording.timesteps:
            recording.timesteps.append(step)
            recording.states.append(x[: int(n_keep)].detach().float().cpu().clone())

    handle = register(hook)
    try:
        yield recording
    finally:
        handle.remove()


@contextlib.contextmanager
def reverse_recording(model: nn.Module, n_keep: int = 2000) -> Iterator[ReverseRecording | None]:
    """:func:`record_reverse_process` for a model with reverse steps; None for any other model."""
    hooks = hasattr(model, "register_reverse_step_hook")
    with record_reverse_process(model, n_keep) if hooks else contextlib.nullcontext() as recording:
        yield recording


def closest_indices(timesteps: np.ndarray, targets: Sequence[float]) -> list[int]:
    """Index into ``timesteps`` of the entry nearest each target timestep (duplicates dropped)."""
    ts = np.asarray(timesteps, dtype=float)
    return list(dict.fromkeys(int(np.argmin(np.abs(ts - target))) for target in targets))


@torch.no_grad()
def forward_process(
    model: nn.Module, x0: np.ndarray, timesteps: Sequence[int], *, seed: int = 0, standardised: bool = False
) -> list[np.ndarray]:
    """Draws ``x_i ~ q(x_i | x_0)`` of ``x0 (N, D)`` at each timestep, in data (else standardised) units."""
    x = model_tensor(model, x0)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    diffused = [model.forward_diffuse(x, int(i), generator=generator) for i in timesteps]
    diffused = diffused if standardised else [model.standardize.inverse(xi)[0] for xi in diffused]
    return [xi.double().cpu().numpy() for xi in diffused]


def noise_level_timesteps(model: nn.Module, levels: Sequence[float] = (0.7, 0.4, 0.2, 0.08)) -> list[int]:
    """Timesteps whose noise std sqrt(1 - ᾱ_i²) (standardised units) is nearest each level."""
    sigma = model.schedule.sigma_bar.detach().cpu().double().numpy()
    return [k + 1 for k in closest_indices(sigma[1:], levels)]


@dataclass
class VectorField:
    """Per timestep, ``(G, 2)`` vectors ``σ̄_i² ∇ log p_i(x) = -σ̄_i ε_θ(x, i)`` (data units)."""

    points: np.ndarray
    timesteps: list[int]
    sigmas: list[float]
    vectors: list[np.ndarray]


@torch.no_grad()
def denoising_field(model: nn.Module, grid: np.ndarray, timesteps: Sequence[int]) -> VectorField:
    """:class:`VectorField` of a 2-D DDPM at the points ``grid (G, 2)`` (data units)."""
    z, _ = model.standardize(model_tensor(model, grid))
    steps, std = [int(i) for i in timesteps], model.standardize.std
    sigmas = [model.schedule.sigma_bar[i] for i in steps]  # below: one timestep shared by all points
    eps = [model._eps_prediction(z, torch.full((1,), i, dtype=torch.long, device=z.device)) for i in steps]
    vectors = [(-s * e * std).double().cpu().numpy() for s, e in zip(sigmas, eps, strict=True)]
    return VectorField(np.asarray(grid, dtype=float), steps, [float(s) for s in sigmas], vectors)


def frame_timesteps(total: int, n_frames: int = 30, power: float = 2.0) -> list[float]:
    """``n_frames`` target timesteps from ``total`` down to 0, denser near 0 (where structure forms)."""
    return [float(total * v**power) for v in np.linspace(1.0, 0.0, max(int(n_frames), 2))]
