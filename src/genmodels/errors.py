"""Exceptions raised by genmodels for problems a user can fix (bad files, options, configs)."""

__all__ = ["GenModelsError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class GenModelsError(Exception):
    """Base class: a problem with the user's input, reported without a traceback by the CLI."""


class ConfigError(GenModelsError):
    """A config file or command-line option is unknown, mistyped or out of range."""


class DataError(GenModelsError):
    """A data file cannot be used: unreadable, non-numeric, non-finite, too few rows or columns."""


class CheckpointError(GenModelsError):
    """A checkpoint is missing, not from this project, of the other model, or of another architecture."""


class TrainingError(GenModelsError):
    """Training cannot go on, for example because the loss became non-finite."""
