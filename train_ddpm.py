"""Train DDPM: ``python train_ddpm.py --config configs/ddpm.yaml`` (see ``--help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from genmodels.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "ddpm", *sys.argv[1:]], prog="train_ddpm.py"))
