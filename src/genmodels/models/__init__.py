"""The models and their mathematics; this layer imports nothing else of the package.

Importing it registers every model (:func:`genmodels.models.base.get_spec`).
"""

from genmodels.models.base import GenerativeModel, ModelSpec, get_spec, model_names, register

# The registry lists the models in the order their modules are imported.
# isort: off
from genmodels.models.realnvp import RealNVP, RealNVPModelConfig
from genmodels.models.ddpm import DDPM, DDPMModelConfig

# isort: on

__all__ = [
    "DDPM",
    "DDPMModelConfig",
    "GenerativeModel",
    "ModelSpec",
    "RealNVP",
    "RealNVPModelConfig",
    "get_spec",
    "model_names",
    "register",
]
