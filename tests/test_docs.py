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


def test_the_docs_example_model_is_one_module_that_trains_and_evaluates(tmp_path):
    """docs/models.md's "Adding a model" example, run in its own process (the registry is global):
    registering the module is all `genmodels train` and `evaluate` need."""
    import subprocess
    import sys

    docs = Path(__file__).resolve().parents[1] / "docs" / "models.md"
    section = docs.read_text(encoding="utf-8").split("## Adding a model", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "run.py"
    script.write_text(
        example
        + "\nfrom genmodels.cli import main\nfrom genmodels.data import make_two_moons, save_csv\n"
        + f"save_csv({str(tmp_path / 'm.csv')!r}, make_two_moons(1000, seed=0), ('x', 'y'))\n"
        + f"assert main(['train', 'gaussian', '--data', {str(tmp_path / 'm.csv')!r}, '--epochs', '2', "
        + f"'--quiet', '--output_dir', {str(tmp_path / 'out')!r}]) == 0\n"
        + f"assert main(['evaluate', {str(tmp_path / 'out' / 'checkpoints' / 'gaussian.pt')!r}, '-n', '200', "
        + "'--n_boot', '2']) == 0\n",
        encoding="utf-8",
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "figures" / "gaussian_results.png").stat().st_size > 10_000
    assert "exact" in done.stdout and "C2ST accuracy" in done.stdout
