"""How the hot code runs: mixed precision (bfloat16 autocast) and ``torch.compile``.

Both are opt-in (``training.precision``/``training.compile`` and ``sampling.precision``/
``sampling.compile``, or ``--precision`` and ``--compile`` on the command line) because what they buy
depends on the machine: on a CPU with AVX-512 bfloat16 instructions the bfloat16 matrix products run
about twice as fast as float32 ones; ``torch.compile`` fuses the element-wise work around them but
costs tens of seconds of compilation per input shape. ``benchmarks/run.py`` measures both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

__all__ = ["PRECISIONS", "autocast", "compile_function", "compiled_network"]

PRECISIONS = ("float32", "bfloat16")

F = TypeVar("F", bound=Callable[..., Any])


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """A context in which matrix products run in ``precision`` on ``device``'s type.

    ``"float32"`` gives a no-op context; ``"bfloat16"`` gives ``torch.autocast(device_type,
    dtype=torch.bfloat16)`` (Micikevicius et al. 2018, with bfloat16 needing no loss scaling): linear
    layers compute in bfloat16, reductions and the code around them keep float32.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "float32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def compile_function(fn: F, device: torch.device | str) -> F:
    """``torch.compile(fn)``; on CUDA with ``mode="reduce-overhead"``, which replays the compiled
    step as a CUDA graph (small batches are otherwise bound by kernel launches).

    Compilation happens at the first call of each new input shape, not here.
    """
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    return torch.compile(fn, mode=mode)  # type: ignore[return-value]


@contextlib.contextmanager
def compiled_network(model: torch.nn.Module, enabled: bool = True) -> Iterator[torch.nn.Module]:
    """While inside, ``model.network`` (a DDPM's denoising network) is a compiled wrapper of itself,
    for sampling (under ``torch.inference_mode``).

    The weights are frozen into the compiled code (inductor's ``freezing``: constant folding, packed
    weights, and the bias and activation fused into each matrix product), so they must not change
    while inside. The model's ``state_dict`` keys are unchanged once the context is left. Hooks
    registered on ``model.network`` inside the context run outside the compiled code. A model without
    a ``network`` (RealNVP, whose sampling is cheap) or ``enabled=False`` is left as it is. Yields
    ``model``.
    """
    modules = model._modules
    original = modules.get("network")
    if not enabled or original is None:
        yield model
        return
    import torch._inductor.config as inductor_config

    device = next(original.parameters()).device
    modules["network"] = compile_function(original, device)
    try:
        with inductor_config.patch(freezing=True):
            yield model
    finally:
        modules["network"] = original
