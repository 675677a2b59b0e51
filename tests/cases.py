"""The bad and awkward inputs of the tests, written on demand: B01 to B19, each a small file of a kind that
has broken other implementations of flows and diffusion models (what each holds is in ``_CSV`` and
``_YAML``, and :func:`_b19`).

``case(name)`` gives the path of case ``name`` in a temporary folder made once per test session;
``write_case(name, folder)`` writes it anywhere.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genmodels.data import make_8gaussians, make_two_moons


def _table(header: str | None, points: np.ndarray, broken: dict[int, str] | None = None) -> str:
    """CSV text of ``points`` ``(N, D)`` with 6 decimals; ``broken`` replaces file lines (1-based)."""
    lines = ([header] if header else []) + [",".join(f"{v:.6f}" for v in row) for row in points]
    for line, text in (broken or {}).items():
        lines[line - 1] = text
    return "\n".join(lines) + "\n"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _moons(n: int, seed: int) -> np.ndarray:
    """Two moons at scikit-learn's scale (half circles of radius 1, noise 0.05)."""
    return (make_two_moons(n, seed=seed) + [1.0, 0.2]) / 2


def _ring(n: int, radius: float, seed: int) -> np.ndarray:
    angle = 2 * np.pi * _rng(seed).random(n)
    r = radius + _rng(seed + 1).standard_normal(n)
    return r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


_CSV: dict[str, Callable[[], str]] = {
    # 1,000 two-moons points, no header line, the first row (4, -4): a first line of numbers is data
    "B01.csv": lambda: _table(None, _moons(1000, seed=1), {1: "4.000000,-4.000000"}),
    # five broken rows (empty cells, nan, a lone comma) at file lines 12, 251, 500, 731, 999
    "B02.csv": lambda: _table(
        "x,y",
        _moons(1000, seed=2),
        {12: "1.994978,", 251: ",0.132511", 500: "nan,0.772066", 731: "1.828722,NaN", 999: ","},
    ),
    # bad text: 0.73x at line 43 (x), abc at line 509 (y), a quoted decimal comma at line 902 (x)
    "B03.csv": lambda: _table(
        "x,y",
        _moons(1000, seed=3),
        {43: "0.73x,0.462312", 509: "-0.272614,abc", 902: '"1,25",0.269718'},
    ),
    "B04.csv": lambda: _table("x", _rng(4).standard_normal((500, 1))),  # one column
    "B05.csv": lambda: _table("a,b,c", _rng(5).standard_normal((500, 3)) @ [[1, 1, 0], [0, 1, 0], [0, 0, 1]]),
    "B06.csv": lambda: _table("x,y", np.c_[_rng(6).standard_normal(1000), np.full(1000, 5.0)]),  # y constant
    "B07.csv": lambda: _table("x,y", _rng(7).choice([-1.0, 1.0], size=(1000, 2))),  # 4 distinct points
    "B08.csv": lambda: _table("x,y", make_two_moons(10, seed=8)),  # 10 rows
    "B10.csv": lambda: _table("x,y", _ring(1000, 40.0, seed=10)),  # a ring of radius 40
    "B12.csv": lambda: _table("x,y", _moons(2000, seed=12)),
    "B13.csv": lambda: _table("x,y", make_8gaussians(2000, seed=13)),  # 8 Gaussians, circle of radius 2
}

_YAML = {
    "B15_ddpm_three_steps.yaml": """\
# A DDPM run with only three diffusion steps and a steep schedule.
model:
  diffusion_steps: 3
  beta2_start: 0.0001
  beta2_end: 0.5
  time_embed_dim: 32
  hidden_units: 64
training:
  epochs: 2
  batch_size: 128
  learning_rate: 0.001
  lr_decay: 0.999
""",
    "B17_misspelled_keys.yaml": """\
# Every key here but hidden_units is misspelled.
model:
  n_coupling_layer: 4
  hidden_units: 64
training:
  epoch: 3
  batchsize: 64
  learning_rte: 0.0005
""",
    "B18_other_architecture.yaml": """\
# An architecture unlike the default one: use it to resume or load a checkpoint trained with the defaults.
model:
  n_coupling_layers: 3
  n_hidden: 2
  hidden_units: 17
training:
  epochs: 1
  batch_size: 256
  learning_rate: 0.001
  lr_decay: 0.999
""",
}


def _b19(path: Path) -> None:
    """A small dictionary of tensors (a 1-8-2 MLP's state dict, an epoch, a config) that is no checkpoint
    of this project, whose storages say they were saved on ``cuda:0``: saved on the CPU, then the
    location tag of each storage in the pickle is rewritten (protocol 2 strings are length-prefixed)."""
    import torch

    generator = torch.Generator().manual_seed(19)
    shapes = {"0.weight": (8, 1), "0.bias": (8,), "2.weight": (2, 8), "2.bias": (2,)}
    state = OrderedDict((key, torch.randn(shape, generator=generator)) for key, shape in shapes.items())
    payload = {
        "model_state_dict": state,
        "epoch": 3,
        "config": {"note": "stand-in checkpoint; storages tagged cuda:0"},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
                assert data.count(cpu) == 1, "torch.save's pickle changed: the location tag is not found"
                data = data.replace(cpu, cuda)
            target.writestr(info, data)


def write_case(name: str, folder: Path) -> Path:
    """Write case ``name`` (a file name such as ``"B02.csv"``) into ``folder``; return its path."""
    path = Path(folder) / name
    if name in _CSV:
        path.write_text(_CSV[name]())
    elif name in _YAML:
        path.write_text(_YAML[name])
    elif name == "B19.pt":
        _b19(path)
    else:
        raise KeyError(f"unknown case {name!r}")
    return path


NAMES = (*_CSV, *_YAML, "B19.pt")
_folder: Path | None = None


def case_folder() -> Path:
    """The session's folder of cases, made (and every case written) on first use, removed at exit."""
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="genmodels-cases-"))
        atexit.register(shutil.rmtree, _folder, ignore_errors=True)
        for name in NAMES:
            write_case(name, _folder)
    return _folder


def case(name: str) -> Path:
    """The path of case ``name`` in :func:`case_folder`."""
    path = case_folder() / name
    if not path.exists():
        raise KeyError(f"unknown case {name!r}")
    return path
