"""How the hot code runs: mixed precision (bfloat16 autocast) and ``torch.compile``.

bfloat16 is opt-in (``training.precision``, ``sampling.precision``, ``--precision``): on a CPU with
AVX-512 bfloat16 instructions its matrix products run about twice as fast as float32 ones, elsewhere
it may be slower, and it changes the numbers a run produces. ``torch.compile`` fuses the element-wise
work around the matrix products but costs 4-45 s of compilation per run on a 2-core CPU. Training
compiles when asked (``training.compile: on``, or ``auto``: where it was measured to be faster);
sampling a DDPM compiles by default where that was measured to win, in bfloat16 when the sampling is
long enough to repay it (``sampling.compile: auto``). ``benchmarks/run.py`` measures all of it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from genmodels.errors import ConfigError

__all__ = [
    "tune_allocator",
    "PRECISIONS",
    "COMPILE_WORTHWHILE_POINT_STEPS",
    "autocast",
    "compile_function",
    "compiled_network",
    "compiler_available",
    "TRAINING_COMPILE_WORTHWHILE_POINTS",
    "worth_compiling",
    "worth_compiling_training",
]

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
_COMPILER_WARNED = False

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed CPU memory in the process instead of handing it back to the system at once.

    The activations of these small networks are a few MB each and are allocated and freed at every
    step. glibc's malloc serves such blocks with fresh ``mmap`` pages or trims them off the heap when
    freed, so every step pays the page faults of first touching them again (measured: 1.8 million
    faults and up to 2x the time for 200 DDPM sampling steps on 4,096 points; 40 thousand with the
    setting). This raises the ``mmap`` threshold to 32 MiB and the trim threshold to 256 MiB
    (``mallopt``), as the command line does at start. A no-op, returning False, where the C library
    is not glibc; True once applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (
        mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
        and mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024) == 1
    )
    _ALLOCATOR_TUNED = ok
    return ok


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


def compiler_available(device: torch.device | str, *, warn: bool = True) -> bool:
    """Whether ``torch.compile`` can build code for ``device``: on the CPU it needs a C++ compiler
    (``$CXX``, else ``g++``, ``clang++`` or ``c++`` on the PATH). With ``warn``, logs one warning (per
    process) when it cannot."""
    global _COMPILER_WARNED
    if torch.device(device).type != "cpu":
        return True
    cxx = os.environ.get("CXX")
    found = shutil.which(cxx) is not None if cxx else any(shutil.which(c) for c in ("g++", "clang++", "c++"))
    if not found and warn and not _COMPILER_WARNED:
        _COMPILER_WARNED = True
        where = f"CXX={cxx} is not a program on the PATH" if cxx else "no g++, clang++ or c++ on the PATH"
        log.warning("torch.compile needs a C++ compiler on the CPU (%s); running without compiling", where)
    return found


def _compile_mode(device: torch.device | str) -> str | None:
    """CUDA graphs (``"reduce-overhead"``) on a GPU, where small steps are bound by kernel launches."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else None


def _compile(fn: Any, device: torch.device | str) -> Any:
    """``torch.compile`` with one static graph per input shape (``dynamic=False``).

    A run meets two batch sizes: the full one and the partial last batch (or sampling chunk). By
    default, the second size makes torch recompile a shape-generic graph that then also serves the full
    batches: measured on the default DDPM in bfloat16, 18.0 ms per training step against 11.7 ms with
    two static graphs, which also compiled faster here (9 s against 35 s).
    """
    return torch.compile(fn, mode=_compile_mode(device), dynamic=False)


class _EagerFallback:
    """Calls ``compiled``; where compiling fails (``torch._dynamo``'s errors: no working C++ compiler,
    an inductor failure), logs one warning and calls ``eager``, then and for every later call."""

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any], what: str) -> None:
        self.compiled, self.eager, self.what, self.failed = compiled, eager, what, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torch._dynamo.exc import TorchDynamoException

        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except TorchDynamoException as error:
                self.failed = True
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
                log.warning("torch.compile could not compile %s (%s); running it eagerly", self.what, reason)
        return self.eager(*args, **kwargs)


def compile_function(fn: F, device: torch.device | str) -> F:
    """``torch.compile(fn)``; on CUDA with ``mode="reduce-overhead"``, which replays the compiled
    step as a CUDA graph (small batches are otherwise bound by kernel launches).

    Compilation happens at the first call of each new input shape (one static graph each), not here.
    Without a C++ compiler on the CPU (:func:`compiler_available`) ``fn`` is returned as it is; where
    compilation fails for another reason (a compiler that does not work), that call and every later
    one run ``fn`` eagerly, after one warning.
    """
    if not compiler_available(device):
        return fn
    return functools.wraps(fn)(
        _EagerFallback(_compile(fn, device), fn, getattr(fn, "__name__", "a function"))
    )


class _CompiledNetwork(torch.nn.Module):
    """``network`` run through its compiled version, or eagerly once compiling it has failed."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.network = network
        self.call = _EagerFallback(_compile(network, device), network, "the denoising network")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)


def _check_setting(setting: str) -> str:
    """``setting`` if it is ``"auto"``, ``"on"`` or ``"off"``; otherwise a ValueError."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"compile must be auto, on or off (got {setting!r})")
    return setting


# Measured on a 2-core AVX-512 CPU with the default DDPM network, 4,096-point chunks through 2,500
# steps: compiling and freezing costs 4-10 s; in bfloat16 it then saves about 0.2 µs per point and step
# (0.89 -> 0.68 µs), so it pays from about 5e7 point-steps (20,000 points through 2,500 steps). In
# float32 the compiled network is slower than the eager sampler's frozen network (0.86 against 0.72 µs).
COMPILE_WORTHWHILE_POINT_STEPS = 4 * 10**7


def worth_compiling(
    setting: str, model: torch.nn.Module, n_points: int, sampling_steps: int, precision: str
) -> bool:
    """Whether to sample ``n_points`` through ``sampling_steps`` reverse steps (0: all of the model's
    ``diffusion_steps``) with a compiled network.

    ``setting`` is ``sampling.compile``: ``"on"``, ``"off"`` or ``"auto"``: on for a model with a
    ``network`` sampled in bfloat16 when ``n_points * steps >= COMPILE_WORTHWHILE_POINT_STEPS``
    (the measurements above), otherwise off.

    Raises:
        ValueError: an unknown ``setting``.
    """
    if _check_setting(setting) != "auto":
        return setting == "on"
    if getattr(model, "network", None) is None or precision != "bfloat16":
        return False
    steps = sampling_steps or getattr(model, "diffusion_steps", 1)
    if n_points * steps < COMPILE_WORTHWHILE_POINT_STEPS:
        return False
    device = next(model.network.parameters()).device
    return compiler_available(device, warn=False)


# Measured on a 2-core AVX-512 CPU (``benchmarks/run.py`` and whole ``genmodels train`` runs): the
# compiled training loss wins for RealNVP in float32 (1.42 -> 1.20 s per epoch of 59,000 points in the
# default run, about 3.7 µs saved per 1,000 points; 1.50 -> 1.11 s in shorter runs) and in bfloat16
# (1.18 -> 0.71 s). It is not the default: in the one compiled default run the gradient norm spiked
# past the clipping threshold in 6 epochs (up to 5,400), against never (at most 37) in the eager run.
# Compiling costs 20-45 s (a cold cache at the top), so it pays after about 1.2e7
# points; at batch size 256 it saved about as much per point. For the default DDPM it gained 0-10% per
# step in either precision, from run to run: too little to be sure of repaying its compilation.
_TRAINING_COMPILE_WINS = {"RealNVP": ("float32", "bfloat16")}
TRAINING_COMPILE_WORTHWHILE_POINTS = 15 * 10**6


def worth_compiling_training(
    setting: str, model: torch.nn.Module, device: torch.device | str, points: int, precision: str
) -> bool:
    """Whether to train ``model`` on ``device`` with a compiled loss, for a run that passes ``points``
    training points through it in all (epochs times the training set's size).

    ``setting`` is ``training.compile``: ``"on"``, ``"off"`` or ``"auto"``. ``"auto"`` compiles on a
    CPU with a C++ compiler (without one it stays silent and eager) for a model (or a subclass of one)
    and ``precision`` where compiling was measured to win (RealNVP, in float32 or bfloat16), when
    ``points`` is at least :data:`TRAINING_COMPILE_WORTHWHILE_POINTS` (the default RealNVP run: 2.9e7).
    It stays off on a GPU, where it has not been measured; ``"on"`` uses CUDA graphs there. Judged on
    the whole run, so a resumed run decides as the uninterrupted one did.

    Raises:
        ValueError: an unknown ``setting``.
    """
    if _check_setting(setting) != "auto":
        return setting == "on"
    if torch.device(device).type != "cpu" or points < TRAINING_COMPILE_WORTHWHILE_POINTS:
        return False
    names = {cls.__name__ for cls in type(model).__mro__}
    measured = any(precision in _TRAINING_COMPILE_WINS.get(name, ()) for name in names)
    return measured and compiler_available(device, warn=False)


@contextlib.contextmanager
def compiled_network(model: torch.nn.Module, enabled: bool = True) -> Iterator[torch.nn.Module]:
    """While inside, ``model.network`` (a DDPM's denoising network) is a compiled wrapper of itself,
    for sampling (under ``torch.inference_mode``).

    The weights are frozen into the compiled code (inductor's ``freezing``: constant folding, packed
    weights, and the bias and activation fused into each matrix product), so they must not change
    while inside. The model's ``state_dict`` keys are unchanged once the context is left. Hooks
    registered on ``model.network`` inside the context run outside the compiled code. Where
    compilation fails, the network runs eagerly (with a warning). A model without a ``network``
    (RealNVP, whose sampling is cheap) or ``enabled=False`` is left as it is. Yields ``model``.
    """
    modules = model._modules
    original = modules.get("network")
    if not enabled or original is None:
        yield model
        return
    import torch._inductor.config as inductor_config

    device = next(original.parameters()).device
    if not compiler_available(device):
        yield model
        return
    modules["network"] = _CompiledNetwork(original, device)
    try:
        with inductor_config.patch(freezing=True):
            yield model
    finally:
        modules["network"] = original


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for, but no CUDA GPU is available (use --device cpu or auto)"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda (got {name!r})")
    return torch.device(name)
