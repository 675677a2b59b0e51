"""The README's Python API example runs as written (with fewer epochs)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from genmodels.models.ddpm import ddim_timesteps

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_example_runs():
    section = README.read_text(encoding="utf-8").split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # The last lines load a trained run's checkpoint, which a test does not have.
    code = code.split("from genmodels import model_from_checkpoint", 1)[0]
    assert "epochs=50" in code
    code = code.replace("epochs=50", "epochs=2")
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["samples"].shape == (1000, 2)
    assert namespace["log_p"].shape == (10_000,)
    assert namespace["seen"] == ddim_timesteps(1000, 5) and namespace["seen"][::4] == [1000, 1]
