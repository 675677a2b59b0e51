"""Train RealNVP: ``python train_realnvp.py --config configs/realnvp.yaml`` (see ``--help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from genmodels.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "realnvp", *sys.argv[1:]], prog="train_realnvp.py"))
