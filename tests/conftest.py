"""Shared paths for the tests: the repository root and the folder of bad-input cases (tests/cases.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from cases import case_folder

# The same examples on every run and machine: a property test that fails, fails everywhere (CI included),
# and nothing is stored beside the clone.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.load_profile("repeatable")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    """The repository root (holds configs/, train_realnvp.py, train_ddpm.py)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """A temporary folder holding every bad-input case (B01.csv ... B19.pt), written once per session."""
    return case_folder()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker takes one core: one intra-op thread, so two workers share two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
