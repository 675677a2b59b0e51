"""Shared paths for the tests: the repository root and the directory of bad-input cases."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The bad and awkward inputs live beside the repository, in shared/cases (see its README).
CASES_DIR = REPO_ROOT.parent / "shared" / "cases"


@pytest.fixture
def repo_root() -> Path:
    """The repository root (holds configs/, train_realnvp.py, train_ddpm.py)."""
    return REPO_ROOT


@pytest.fixture
def cases_dir() -> Path:
    """The directory of bad-input cases; tests that need it are skipped when it is absent."""
    if not CASES_DIR.is_dir():
        pytest.skip(f"bad-input cases not found at {CASES_DIR}")
    return CASES_DIR
