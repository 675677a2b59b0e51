"""Conditional models. ``speed``: what conditioning on a label costs per training step, the default
RealNVP and DDPM (their default batch sizes, 2-D data) unconditional against conditional on 4 labels,
one optimisation step (loss, backward, Adam) per call, timed in interleaved rounds
(``_common.interleaved``); prints ms per step and the ratio (the bar: at most 1.15). ``guidance``: a
conditional DDPM checkpoint sampled at several classifier-free guidance scales w, each scored per
label (label accuracy, C2ST with trees against the held-out points of that label, and its floor).

    python benchmarks/conditional.py speed [--rounds 7] [--device cpu|cuda]
    python benchmarks/conditional.py guidance CHECKPOINT [--scales 0,1,2,4] [-n 8000] [--data FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks._common import Settings, interleaved  # noqa: E402
from genmodels.models import get_spec  # noqa: E402

N_LABELS = 4


def _step(name: str, n_labels: int, device: torch.device):  # noqa: ANN202
    """A zero-argument call running one training step of the default ``name`` model."""
    spec = get_spec(name)
    torch.manual_seed(0)
    model = spec.model_class.from_config(spec.config_class(n_labels=n_labels), 2).to(device)
    batch = spec.training_defaults["batch_size"]
    x = torch.randn(batch, 2, device=device)
    labels = torch.randint(0, N_LABELS, (batch,), device=device) if n_labels else None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model.loss(x) if labels is None else model.loss(x, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def guidance_table(checkpoint: str, scales: list[float], n: int, data: str | None) -> None:
    """Print the Markdown table of label accuracy and per-label C2ST at each guidance scale."""
    from genmodels.data import load_csv, train_test_split
    from genmodels.evaluation.sampling import draw_labels, label_classifier, per_label_scores, sample_model
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(checkpoint)
    model, info, config = model_from_checkpoint(payload), payload["labels"], payload["config"]
    dataset = load_csv(data or config.data.path, condition=info["column"])
    split = {"test_fraction": config.data.test_fraction, "seed": config.data.split_seed}
    train = (train_test_split(dataset.values, **split)[0], train_test_split(dataset.labels, **split)[0])
    test = (payload["test_data"].double().numpy(), info["test_labels"].numpy())
    classifier = label_classifier(*train, seed=0)
    labels = draw_labels(model, n, seed=0)
    names = info["names"]
    print(
        "| w | "
        + " | ".join(f"accuracy {k}" for k in names)
        + " | "
        + " | ".join(f"C2ST {k}" for k in names)
        + " |"
    )
    print("| ---: |" + " ---: |" * (2 * len(names)))
    floors = None
    for w in scales:
        samples = sample_model(model, n, seed=0, guidance_scale=w, label=labels)
        scores = per_label_scores((samples, labels), test, train, names, seed=0, classifier=classifier)
        accuracy = " | ".join(f"{scores[k]['label_accuracy']:.3f}" for k in names)
        c2st = " | ".join(f"{scores[k]['c2st_hgb']:.3f}" for k in names)
        floors = " | ".join(f"{scores[k]['c2st_hgb_floor']:.3f}" for k in names)
        print(f"| {w:g} | {accuracy} | {c2st} |", flush=True)
    real = " | ".join(f"{scores[k]['label_accuracy_real']:.3f}" for k in names)
    print(f"| real points | {real} | {floors} (floors) |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0].replace("\n", " "))
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed")
    speed.add_argument("--rounds", type=int, default=7)
    speed.add_argument("--device", default="cpu")
    guidance = sub.add_parser("guidance")
    guidance.add_argument("checkpoint")
    guidance.add_argument("--scales", default="0,1,2,4")
    guidance.add_argument("-n", type=int, default=8000)
    guidance.add_argument("--data", help="the labelled CSV (default: the checkpoint's data.path)")
    args = parser.parse_args(argv)
    if args.command == "guidance":
        guidance_table(args.checkpoint, [float(w) for w in args.scales.split(",")], args.n, args.data)
        return 0
    device = torch.device(args.device)
    settings = Settings(device=device, warmup=3, rounds=args.rounds, min_sample_s=0.5, quick=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    print("| model | unconditional ms/step | conditional ms/step | ratio |\n| --- | ---: | ---: | ---: |")
    for name in ("realnvp", "ddpm"):
        cases = {"plain": _step(name, 0, device), "labels": _step(name, N_LABELS, device)}
        timing = interleaved(cases, settings)
        plain, labelled = timing["plain"].median * 1e3, timing["labels"].median * 1e3
        print(f"| {get_spec(name).title} | {plain:.2f} | {labelled:.2f} | {labelled / plain:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
