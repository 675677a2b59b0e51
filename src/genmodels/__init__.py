"""genmodels: RealNVP flows and DDPM diffusion models for point data; the API is imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RealNVP": "genmodels.models",
    "RealNVPModelConfig": "genmodels.models",
    "DDPM": "genmodels.models",
    "DDPMModelConfig": "genmodels.models",
    "get_spec": "genmodels.models",
    "model_names": "genmodels.models",
    "TrainingConfig": "genmodels.config",
    "RunConfig": "genmodels.config",
    "Trainer": "genmodels.train.trainer",
    "load_checkpoint": "genmodels.train.checkpoint",
    "model_from_checkpoint": "genmodels.train.checkpoint",
    "sample_model": "genmodels.evaluation.sampling",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genmodels' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
