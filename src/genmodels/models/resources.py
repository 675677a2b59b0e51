"""The machine's memory, for refusing work that could not fit before it starts."""

from __future__ import annotations

import os

__all__ = ["memory_problem", "physical_memory"]


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or None where the platform does not tell it."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return total if total > 0 else None


def memory_problem(need: float, what: str) -> str | None:
    """Why ``need`` bytes for ``what`` cannot fit in this machine's physical memory, or None."""
    total = physical_memory()
    if total is None or need <= total:
        return None
    return f"{what} needs about {need / 2**30:,.0f} GiB of memory, more than this machine's {total / 2**30:.0f} GiB"
