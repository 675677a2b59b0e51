"""genmodels: RealNVP flows and DDPM diffusion models for point data; the API is imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_MODULES = {  # module -> the names it exports
    "genmodels.models": "RealNVP RealNVPModelConfig DDPM DDPMModelConfig get_spec model_names",
    "genmodels.config": "TrainingConfig RunConfig",
    "genmodels.train.trainer": "Trainer",
    "genmodels.train.checkpoint": "load_checkpoint model_from_checkpoint",
    "genmodels.evaluation.sampling": "sample_model",
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names.split()}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genmodels' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
