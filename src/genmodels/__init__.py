"""genmodels: RealNVP normalizing flows and DDPM diffusion models for low-dimensional point data."""

__version__ = "0.1.0"
