"""How the hot code runs: bfloat16 autocast and ``torch.compile`` (where it pays: ``docs/speed.md``)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from genmodels.errors import ConfigError

__all__ = ["tune_allocator", "PRECISIONS", "native_bfloat16", "resolve_precision", "sampling_plan",
           "COMPILE_WORTHWHILE_POINT_STEPS", "autocast", "compile_function", "compiled_network", "compiler_available",
           "resolve_device", "TRAINING_COMPILE_WORTHWHILE_POINTS", "worth_compiling", "worth_compiling_training"]  # fmt: skip

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
# Sampling a DDPM compiled (in bfloat16) pays from this many points times reverse steps.
COMPILE_WORTHWHILE_POINT_STEPS = 4 * 10**7
# Training compiled pays from this many points (epochs x training set), for these classes and precisions.
TRAINING_COMPILE_WORTHWHILE_POINTS = 15 * 10**6
_TRAINING_COMPILE_WINS = {"RealNVP": ("float32", "bfloat16")}
_COMPILER_WARNED = False
# Threads offered to this process (a neighbour ended) while a compiled training loop runs: another
# thread count recompiles its graphs, so the trainer takes them where the rest of the run repays that.
_OFFERED_THREADS = 0
_DEFERRING_THREADS = False
F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def tune_allocator() -> bool:
    """Raise glibc's ``mmap`` and trim thresholds so freed memory stays in the process; True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_mmap_threshold, m_trim_threshold = -3, -1  # malloc.h
    return mallopt(m_mmap_threshold, 32 << 20) == 1 and mallopt(m_trim_threshold, 256 << 20) == 1


@functools.cache
def native_bfloat16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu", "cuda") multiplies bfloat16 matrices natively, and so faster than
    float32: a CUDA GPU that supports bfloat16, or a CPU with AVX-512 BF16 or AMX instructions."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu" or not hasattr(torch.cpu, "get_capabilities"):
        return False
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"auto"``: bfloat16 where ``device`` computes it natively (:func:`native_bfloat16`), else float32;
    "float32" and "bfloat16" are returned as they are."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(torch.device(device).type) else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)} (got {precision!r})")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Matrix products in ``precision`` (``"auto"``: :func:`resolve_precision`): bfloat16 autocast
    (Micikevicius et al. 2018) or a no-op."""
    if resolve_precision(precision, device) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def compiler_available(device: torch.device | str, *, warn: bool = True) -> bool:
    """Whether ``torch.compile`` can build code for ``device`` (on the CPU: a C++ compiler)."""
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


def _compile(fn: Any, device: torch.device | str) -> Any:
    """``torch.compile``: static shapes, and CUDA graphs on a GPU (small steps are launch-bound)."""
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    return torch.compile(fn, mode=mode, dynamic=False)


class _EagerFallback:
    """Calls ``compiled``; once compiling fails, one warning and ``eager`` from then on."""

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
    """``fn`` compiled at its first call per input shape; ``fn`` itself where it cannot be."""
    if not compiler_available(device):
        return fn
    fallback = _EagerFallback(_compile(fn, device), fn, getattr(fn, "__name__", "a function"))
    return functools.wraps(fn)(fallback)


class _CompiledNetwork(torch.nn.Module):
    """``network`` run through its compiled version, or eagerly once compiling it has failed."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.network = network
        self.call = _EagerFallback(_compile(network, device), network, "the denoising network")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)


def _setting(setting: str) -> bool:
    """``compile: on`` -> True, ``off`` -> False (``auto`` is the caller's to decide)."""
    if setting not in ("on", "off"):
        raise ValueError(f"compile must be auto, on or off (got {setting!r})")
    return setting == "on"


def worth_compiling(
    setting: str, model: torch.nn.Module, n_points: int, sampling_steps: int, precision: str
) -> bool:
    """Whether to sample with a compiled network; ``"auto"``: a ``network`` in bfloat16 from
    :data:`COMPILE_WORTHWHILE_POINT_STEPS` points x steps (0 steps: ``diffusion_steps``)."""
    if setting != "auto":
        return _setting(setting)
    if getattr(model, "network", None) is None or precision != "bfloat16":
        return False
    if n_points * (sampling_steps or getattr(model, "diffusion_steps", 1)) < COMPILE_WORTHWHILE_POINT_STEPS:
        return False
    return compiler_available(next(model.network.parameters()).device, warn=False)


def worth_compiling_training(
    setting: str, model: torch.nn.Module, device: torch.device | str, points: int, precision: str
) -> bool:
    """Whether to train with a compiled loss; ``"auto"``: on a CPU with a C++ compiler, for a measured
    class and ``precision``, from :data:`TRAINING_COMPILE_WORTHWHILE_POINTS` points in the whole run."""
    if setting != "auto":
        return _setting(setting)
    if torch.device(device).type != "cpu" or points < TRAINING_COMPILE_WORTHWHILE_POINTS:
        return False
    precision = resolve_precision(precision, device)
    measured = any(precision in _TRAINING_COMPILE_WINS.get(cls.__name__, ()) for cls in type(model).__mro__)
    return measured and compiler_available(device, warn=False)


def sampling_plan(
    compile_setting: str, precision: str, model: torch.nn.Module, n_points: int, sampling_steps: int
) -> tuple[bool, str]:
    """Whether to sample compiled, and in which precision; ``auto``: bfloat16 only where the network is also
    compiled (uncompiled bfloat16 sampling is slower than float32's frozen network: docs/speed.md)."""
    resolved = resolve_precision(precision, next(model.parameters()).device)
    compiled = worth_compiling(compile_setting, model, n_points, sampling_steps, resolved)
    return compiled, resolved if compiled or precision != "auto" else "float32"


@contextlib.contextmanager
def compiled_network(model: torch.nn.Module, enabled: bool = True) -> Iterator[torch.nn.Module]:
    """While inside, ``model.network`` is compiled with its weights frozen (they must not change)."""
    original = model._modules.get("network")
    if not enabled or original is None or not compiler_available(next(original.parameters()).device):
        yield model
        return
    import torch._inductor.config as inductor_config

    model._modules["network"] = _CompiledNetwork(original, next(original.parameters()).device)
    try:
        with inductor_config.patch(freezing=True):
            yield model
    finally:
        model._modules["network"] = original


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda (got {name!r})")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)


def offer_threads(n: int) -> None:
    """Compute on ``n`` more threads: at once, or while compiled training runs, when the trainer takes
    them (:func:`take_offered_threads`). Safe in a signal handler."""
    global _OFFERED_THREADS
    if _DEFERRING_THREADS:
        _OFFERED_THREADS += n
    else:
        torch.set_num_threads(torch.get_num_threads() + n)


@contextlib.contextmanager
def deferring_threads(defer: bool) -> Iterator[None]:
    """While a compiled loss trains (``defer``), threads offered wait for :func:`take_offered_threads`;
    after it, any still waiting are taken."""
    global _DEFERRING_THREADS
    _DEFERRING_THREADS = defer
    try:
        yield
    finally:
        _DEFERRING_THREADS = False
        take_offered_threads()


def take_offered_threads() -> int:
    """Add the threads offered so far (see :func:`offer_threads`) to torch's; how many."""
    global _OFFERED_THREADS
    n, _OFFERED_THREADS = _OFFERED_THREADS, 0
    if n:
        torch.set_num_threads(torch.get_num_threads() + n)
    return n


def threads_offered() -> int:
    """Threads offered and not yet taken."""
    return _OFFERED_THREADS
