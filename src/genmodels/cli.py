"""The ``genmodels`` command line: argparse, paths, seeds, devices, printing.

    genmodels train realnvp [--config configs/realnvp.yaml] [--epochs N] [--batch_size N] [--lr LR]
                            [--seed S] [--data CSV] [--device auto|cpu|cuda] [--output_dir DIR]
    genmodels train ddpm    [same options]
    genmodels sample CHECKPOINT -n N -o samples.csv
    genmodels make-data NAME -n N --seed S -o file.csv   (NAME: text, two_moons, 8gaussians, ...)
    genmodels plot CHECKPOINT [--output_dir DIR] [--format png|svg|pdf] [--data CSV]

``train_realnvp.py`` and ``train_ddpm.py`` at the repository root are the specification's entry points;
they call :func:`main` with ``train realnvp`` / ``train ddpm``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["main", "build_parser"]

_SPEC_DEFAULTS = {"realnvp": "configs/realnvp.yaml", "ddpm": "configs/ddpm.yaml"}


def _seed(text: str) -> int:
    """argparse type of ``--seed``: an integer in [0, 2^32)."""
    from genmodels.config import MAX_SEED

    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^32), got {seed}")
    return seed


# Files a points CSV must not replace: a run's own outputs (metrics, figures, configs, pages) and code.
_NOT_CSV_SUFFIXES = frozenset(
    {".json", ".pt", ".pth", ".png", ".gif", ".jpg", ".jpeg", ".pdf", ".svg", ".yaml", ".yml", ".md"}
    | {".html", ".py", ".toml", ".gz", ".zip"}
)


def _check_output_file(option: str, output: str, checkpoint: str | None = None, *, csv: bool = False) -> None:
    """Before any work: ``output`` (given as ``option``) must be a writable file's place, and not
    ``checkpoint``; ``-`` (standard output) always is. With ``csv``, an existing file whose name says
    it is something else (``metrics/realnvp.json``, a figure, a config) is not replaced by points.

    Raises:
        ConfigError: naming the option and what is in the way.
    """
    from genmodels.errors import ConfigError
    from genmodels.fileio import folder_problem, is_special_path, path_in_the_way

    if not output:
        raise ConfigError(f"{option} must name a file, got an empty string")
    if output == "-":
        return
    path = Path(output)
    if is_special_path(path) and path.exists():
        return  # a device or pipe (/dev/stdout, /dev/null) is written into, not replaced
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError) as error:  # a loop of symbolic links
        raise ConfigError(f"{option} {output} cannot be followed to a file ({error})") from None
    blocker = path_in_the_way(resolved)
    if output.endswith(("/", os.sep)) or blocker == resolved:
        raise ConfigError(f"{option} {output} is a folder; expected the file to write")
    if blocker is not None:
        raise ConfigError(f"{option} {output}: {blocker} is a file, not a folder")
    if checkpoint is not None and resolved == Path(checkpoint).resolve():
        raise ConfigError(f"{option} {output} is the checkpoint itself; write to another file")
    if resolved.is_file() and not resolved.stat().st_mode & 0o222:
        raise ConfigError(
            f"{option} {output} is read-only; make it writable (chmod u+w) if it is to be replaced, "
            "or write to another file"
        )
    problem = folder_problem(resolved.parent)
    if problem is not None:
        raise ConfigError(f"{option} {output}: {problem}")
    if _is_zip_archive(path):
        raise ConfigError(
            f"{option} {output} is a zip archive (as PyTorch checkpoints are); write to another file, "
            "or remove it first if it is to be replaced"
        )
    if csv and resolved.is_file() and resolved.suffix.lower() in _NOT_CSV_SUFFIXES:
        raise ConfigError(
            f"{option} {output} exists and is a {resolved.suffix.lower()} file, not a CSV file; write the "
            "points to a .csv file, or remove it first if it is to be replaced"
        )


def _check_not_the_runs_own_files(option: str, output: str, checkpoint: str, payload: dict) -> None:
    """Refuse to write over the CSV file the checkpoint was trained on (its stored ``data.path``, as
    seen from here): resuming or evaluating the run needs it; nor over a file in the run's ``metrics/``
    folder (its per-epoch history is a CSV file too).

    Raises:
        ConfigError: naming the option, the file and the checkpoint.
    """
    from genmodels.errors import ConfigError

    trained_on = (payload.get("data") or {}).get("path") or payload["config"].data.path
    try:
        same = Path(output).is_file() and os.path.samefile(output, trained_on)
    except OSError:  # the data file is not found from here
        return
    if same:
        raise ConfigError(
            f"{option} {output} is the data {checkpoint} was trained on (resuming and evaluating the run "
            "read it again); write the samples to another file"
        )
    folder = Path(checkpoint).resolve().parent
    if folder.name == "checkpoints" and Path(output).is_file():  # OUTPUT_DIR/checkpoints/<model>.pt
        if Path(output).resolve().parent == folder.parent / "metrics":
            raise ConfigError(
                f"{option} {output} is one of the run's metrics files; write the samples to another file"
            )


# Memory per sampled value on the way to the CSV file, which is written in chunks: the float32 samples,
# their concatenation and the float64 array, with room to spare (53 bytes were measured for 4e6 samples).
_BYTES_PER_SAMPLED_VALUE = 80


def _check_sample_memory(n: int, dim: int, what: str = "samples", option: str = "-n") -> None:
    """Refuse ``n`` points (given as ``option``) of ``dim`` values that would need more memory than the
    machine has (where the platform tells its physical memory).

    Raises:
        ConfigError: naming ``option`` and the memory it would need.
    """
    from genmodels.errors import ConfigError
    from genmodels.models.resources import memory_problem

    problem = memory_problem(n * dim * _BYTES_PER_SAMPLED_VALUE, f"writing {n} {what} of {dim} values")
    if problem is not None:
        raise ConfigError(
            f"{option} {n}: {problem}; ask for fewer (for more, run the command several times with "
            "different --seed values)"
        )


def _is_zip_archive(path: Path) -> bool:
    """Whether ``path`` is a regular file that starts like a zip archive (as torch.save writes)."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _write_points(output: str, points: np.ndarray, columns: tuple[str, ...], what: str) -> None:
    """Write ``points`` as CSV to ``output``: '-' is standard output; the message goes to standard
    error when the points may go to the terminal or a pipe ('-', a device such as /dev/stdout).

    Raises:
        OSError: the reader of standard output went away before all points were written.
    """
    from genmodels.data import save_csv, write_csv
    from genmodels.fileio import is_special_path, stream_descriptor

    if output == "-":
        try:
            write_csv(sys.stdout, points, columns)
            sys.stdout.flush()
        except BrokenPipeError:
            # Later writes to the closed pipe (at exit, too) go nowhere instead of raising again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise OSError(errno.EPIPE, f"standard output was closed before all {what} were written") from None
        print(f"wrote {what} to standard output", file=sys.stderr)
        return
    save_csv(output, points, columns)
    where = "standard output" if stream_descriptor(output) == 1 else output
    print(f"wrote {what} to {where}", file=sys.stderr if is_special_path(output) else sys.stdout)


def _add_train_options(parser: argparse.ArgumentParser, model_type: str) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"YAML config (default: {_SPEC_DEFAULTS[model_type]} if it exists, else the built-in defaults)",
    )
    from genmodels.config import default_config

    spec = default_config(model_type).training  # the specification's values, which the shipped configs hold
    parser.add_argument(
        "--epochs", type=int, help=f"training epochs (overrides training.epochs; default {spec.epochs})"
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        help=f"training batch size (overrides training.batch_size; default {spec.batch_size})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        help=f"learning rate (overrides training.learning_rate; default {spec.learning_rate:g})",
    )
    parser.add_argument(
        "--seed", type=_seed, help=f"random seed (overrides training.seed; default {spec.seed})"
    )
    parser.add_argument("--data", help="CSV dataset (overrides data.path; default 689_data.csv)")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default auto)"
    )
    parser.add_argument("--output_dir", default="outputs", help="where outputs are written (default outputs)")
    parser.add_argument(
        "--resume",
        help="continue from a checkpoint, or 'auto' for OUTPUT_DIR's latest one (a new run where there is none)",
    )
    parser.add_argument("--drop_invalid", action="store_true", help="drop CSV rows with bad cells (counted)")
    parser.add_argument("--n_samples", type=int, help="samples to draw after training (sampling.n_samples)")
    if model_type == "ddpm":
        parser.add_argument(
            "--sampling_steps", type=int, help="reverse steps (0 = all; fewer uses the DDIM sampler)"
        )
    _add_speed_options(
        parser,
        "training.precision and sampling.precision; default float32",
        "sets training.compile and sampling.compile to on or off; by default training is eager and "
        "sampling compiles where it was measured to win",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or config printout")
    parser.add_argument(
        "--format", default="png", choices=["png", "svg", "pdf"], help="figure format (default png)"
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log training to OUTPUT_DIR/tensorboard (pip install tensorboard)",
    )


def _add_speed_options(parser: argparse.ArgumentParser, precision_keys: str, compile_keys: str) -> None:
    parser.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        help=f"bfloat16: mixed-precision matrix products, faster on CPUs with AVX-512 BF16 and on GPUs "
        f"(sets {precision_keys})",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"use torch.compile, or not ({compile_keys}; pays off on long runs, "
        "see the README's Speed section)",
    )


def _compile_setting(flag: bool | None) -> str | None:
    """``--compile`` -> "on", ``--no-compile`` -> "off", neither -> None (the config decides)."""
    return None if flag is None else ("on" if flag else "off")


def build_parser(train_prog: str | None = None) -> argparse.ArgumentParser:
    """The ``genmodels`` argument parser; ``train_prog`` names the ``train <model>`` commands in their
    usage and errors (the specification's scripts give their own file name)."""
    parser = argparse.ArgumentParser(
        prog=train_prog or "genmodels",
        description="Train and sample RealNVP flows and DDPM diffusion models on point data.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and write its figures, checkpoint and metrics")
    models = train.add_subparsers(dest="model_type", required=True)
    for model_type in ("realnvp", "ddpm"):
        named = {"prog": train_prog} if train_prog else {}
        _add_train_options(models.add_parser(model_type, help=f"train {model_type}", **named), model_type)

    sample = sub.add_parser("sample", help="draw samples from a checkpoint into a CSV file")
    sample.add_argument("checkpoint")
    sample.add_argument("-n", type=int, default=10000, help="number of samples (default 10000)")
    sample.add_argument("-o", "--output", required=True, help="CSV file to write ('-': standard output)")
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sample.add_argument("--sampling_steps", type=int, default=0, help="DDPM: reverse steps (0 = all)")
    sample.add_argument("--eta", type=float, default=1.0, help="DDPM DDIM: noise scale in [0, 1]")
    sample.add_argument(
        "--ddim_spacing",
        choices=["quadratic", "linear"],
        help="DDPM DDIM: timestep spacing (default: the checkpoint's sampling.ddim_spacing)",
    )
    _add_speed_options(
        sample,
        "the sampler's precision; default: the checkpoint's sampling.precision",
        "the DDPM network; default: the checkpoint's sampling.compile",
    )

    make = sub.add_parser("make-data", help="write a synthetic 2-D dataset as CSV")
    make.add_argument("name", help="generator: text, two_moons, 8gaussians, checkerboard, pinwheel, ...")
    make.add_argument("-n", type=int, default=65536, help="number of points (default 65536)")
    make.add_argument("--seed", type=_seed, default=0)
    make.add_argument("--text", default=None, help="for 'text': the characters to render (default 689)")
    make.add_argument("-o", "--output", required=True, help="CSV file to write ('-': standard output)")
    _add_evaluate_parser(sub)
    _add_compare_parser(sub)
    _add_plot_parser(sub)
    # Each command's own parser, so that an option it does not know is reported with its usage.
    for command in [*sub.choices.values(), *models.choices.values()]:
        command.set_defaults(command_parser=command)
    return parser


def _train(args: argparse.Namespace) -> int:
    from genmodels.config import config_to_dict, default_config, load_config, with_overrides, yaml_settings
    from genmodels.data import check_data_path
    from genmodels.errors import ConfigError
    from genmodels.fileio import json_text
    from genmodels.run import run_training
    from genmodels.train.acceleration import resolve_device

    model_type = args.model_type
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--output_dir {args.output_dir} is a file; expected a directory (it is created if missing)"
        )
    last = out / "checkpoints" / f"{model_type}_last.pt"
    if args.resume == "auto" and not (last.exists() or last.is_symlink()):
        logging.getLogger("genmodels.run").warning(
            "--resume auto: no %s run to resume in %s (no %s); starting a new one", model_type, out, last
        )
        args.resume = None
    if args.resume is not None:
        # Continue the stored run as it was configured; a --config file and the options given now
        # override only what they set.
        from genmodels.train.checkpoint import load_checkpoint

        resume_path = last if args.resume == "auto" else args.resume
        config = load_checkpoint(resume_path, expected_type=model_type)["config"]
        if args.config is not None:
            config = with_overrides(config, yaml_settings(args.config, model_type), source=args.config)
    elif args.config is not None:
        config = load_config(args.config, model_type)
    elif Path(_SPEC_DEFAULTS[model_type]).is_file():
        config = load_config(_SPEC_DEFAULTS[model_type], model_type)
    else:
        config = default_config(model_type)
    overrides = {
        "training.epochs": args.epochs,
        "training.batch_size": args.batch_size,
        "training.learning_rate": args.lr,
        "training.seed": args.seed,
        "data.path": args.data,
        "data.drop_invalid": True if args.drop_invalid else None,
        "sampling.n_samples": args.n_samples,
        "sampling.sampling_steps": getattr(args, "sampling_steps", None),
        "training.precision": args.precision,
        "sampling.precision": args.precision,
        "training.compile": _compile_setting(args.compile),
        "sampling.compile": _compile_setting(args.compile),
    }
    config = with_overrides(config, overrides)
    stored_path = Path(config.data.path)
    if (
        args.resume is not None
        and args.data is None
        and not stored_path.is_absolute()
        and not stored_path.exists()
    ):
        from genmodels.errors import DataError

        raise DataError(
            f"the run's data file {config.data.path} is not found from this folder ({Path.cwd()}); its "
            "path is relative to where the run was started: resume from there, or pass --data"
        )
    resolve_device(args.device)  # an unavailable device is an error before anything is printed
    check_data_path(config.data.path)  # and so is a missing data file
    # Before training: the samples drawn after it must fit in memory (2 values each at the least).
    _check_sample_memory(config.sampling.n_samples, 2, option="sampling.n_samples (--n_samples)")
    if not args.quiet:
        import yaml

        print(f"effective {model_type} config:")
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip())
    result = run_training(
        config,
        output_dir=args.output_dir,
        device=args.device,
        progress=not args.quiet,
        resume=args.resume,
        fmt=args.format,
        tensorboard=args.tensorboard,
    )
    print(json_text(result.metrics))
    for key in ("results", "loss", "checkpoint", "metrics", "index"):
        print(f"wrote {result.paths[key]}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from genmodels.errors import CheckpointError, ConfigError
    from genmodels.evaluation.sampling import sample_model
    from genmodels.train.acceleration import compiled_network, resolve_device, worth_compiling
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    if args.n < 1:
        raise ConfigError(f"-n must be >= 1 (got {args.n})")
    if args.sampling_steps < 0:
        raise ConfigError(f"--sampling_steps must be >= 0 (got {args.sampling_steps})")
    if not 0.0 <= args.eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1] (got {args.eta})")
    _check_output_file("-o", args.output, args.checkpoint, csv=True)
    device = resolve_device(args.device)
    payload = load_checkpoint(args.checkpoint, map_location=device)
    _check_not_the_runs_own_files("-o", args.output, args.checkpoint, payload)
    _check_sample_memory(args.n, int(payload["dim"]))
    model = model_from_checkpoint(payload, device=device)
    steps = getattr(model, "diffusion_steps", None)
    if args.sampling_steps and (steps is None or args.sampling_steps > steps):
        expected = (
            "applies only to DDPM checkpoints" if steps is None else f"must be at most {steps} (0 = all)"
        )
        raise ConfigError(f"--sampling_steps {args.sampling_steps} {expected}")
    if args.eta != 1.0 and steps is None:
        raise ConfigError(
            f"--eta {args.eta:g} applies only to DDPM checkpoints (the strided sampler's noise)"
        )
    ddim_spacing = args.ddim_spacing
    if steps is not None and args.sampling_steps in (0, steps):  # the ancestral sampler: no DDIM options
        unused = [f"--eta {args.eta:g}"] if args.eta != 1.0 else []
        unused += [f"--ddim_spacing {ddim_spacing}"] if ddim_spacing is not None else []
        if unused:
            warnings.warn(
                f"{' and '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect: "
                f"{'it sets' if len(unused) == 1 else 'they set'} the strided DDIM sampler, and all {steps} "
                f"steps run the ancestral sampler; pass --sampling_steps below {steps} to use it",
                stacklevel=1,
            )
        args.eta, ddim_spacing = 1.0, None  # warned here, not again by DDPM.sample
    stored = payload["config"].sampling  # the run's own settings, unless overridden here
    precision = args.precision or stored.precision
    setting = _compile_setting(args.compile) or stored.compile
    compiled = worth_compiling(setting, model, args.n, args.sampling_steps, precision)
    with compiled_network(model, compiled):
        samples = sample_model(
            model,
            args.n,
            seed=args.seed,
            sampling_steps=args.sampling_steps,
            eta=args.eta,
            precision=precision,
            ddim_spacing=ddim_spacing or stored.ddim_spacing,
        )
    bad = int((~np.isfinite(samples).all(axis=1)).sum())
    if bad:
        raise CheckpointError(
            f"{bad} of {args.n} samples from {args.checkpoint} are not finite (diverged weights?); "
            f"nothing was written to {args.output}"
        )
    _write_points(
        args.output, samples, tuple(payload["columns"]), f"{args.n} samples of {payload['model_type']}"
    )
    return 0


def _make_data(args: argparse.Namespace) -> int:
    from genmodels.data import GENERATORS
    from genmodels.errors import ConfigError

    if args.name not in GENERATORS:
        raise ConfigError(f"unknown dataset {args.name!r}; expected one of {', '.join(sorted(GENERATORS))}")
    if args.n < 1:
        raise ConfigError(f"-n must be >= 1 (got {args.n})")
    _check_sample_memory(args.n, 2, "points")
    _check_output_file("-o", args.output, csv=True)
    kwargs = {}
    if args.text is not None:
        if args.name != "text":
            raise ConfigError("--text applies only to the 'text' dataset")
        kwargs["text"] = args.text
    try:
        points = GENERATORS[args.name](args.n, seed=args.seed, **kwargs)
    except ValueError as error:
        raise ConfigError(f"make-data {args.name}: {error}") from None
    _write_points(args.output, points, ("x", "y"), f"{len(points)} points of {args.name}")
    return 0


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help="CSV of evaluation points (default: the held-out split stored in the checkpoint)"
    )
    parser.add_argument(
        "--drop_invalid", action="store_true", help="drop --data rows with bad cells instead of failing"
    )
    parser.add_argument("-n", type=int, default=3000, help="samples to generate (default 3000)")
    parser.add_argument(
        "--n_eval", type=int, help="points per sample in the two-sample tests (default min(n, N_real/2))"
    )
    parser.add_argument(
        "--ode_points", type=int, help="DDPM: points for the ODE likelihood (default 1000; 0 skips)"
    )
    parser.add_argument(
        "--bound_points", type=int, help="DDPM: points for the variational bound (default 1000)"
    )
    parser.add_argument("--n_boot", type=int, default=10, help="bootstrap replicates (default 10)")
    parser.add_argument(
        "--dataset", help="generator that made the data (e.g. checkerboard), for the exact entropy"
    )
    parser.add_argument("--text", help="text rendered in the data, for mode coverage (default: detect '689')")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument(
        "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device (default cpu)"
    )


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="held-out likelihood, sample quality and mode coverage of a checkpoint"
    )
    evaluate.add_argument("checkpoint")
    _add_evaluation_options(evaluate)
    evaluate.add_argument("--output", help="JSON file for the metrics ('-': standard output)")


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser("compare", help="evaluate runs side by side: compare.md and figures/compare.png")
    compare.add_argument("run_dirs", nargs="*", help="training output directories (their checkpoints/)")
    compare.add_argument("--realnvp", help="a RealNVP checkpoint")
    compare.add_argument("--ddpm", help="a DDPM checkpoint")
    compare.add_argument(
        "--output_dir", help="where compare.md and figures/ go (default: the first RUN_DIR, else .)"
    )
    _add_evaluation_options(compare)


def _evaluation_kwargs(args: argparse.Namespace) -> dict:
    from genmodels.data import GENERATORS
    from genmodels.errors import ConfigError
    from genmodels.evaluation.metrics import MIN_TWO_SAMPLE_POINTS
    from genmodels.train.acceleration import resolve_device

    for name, least in (("n", MIN_TWO_SAMPLE_POINTS), ("n_boot", 2), ("n_eval", MIN_TWO_SAMPLE_POINTS)):
        value = getattr(args, name)
        if value is not None and value < least:
            flag = "-n" if name == "n" else f"--{name}"
            raise ConfigError(f"{flag} must be at least {least} (got {value})")
    if args.text is not None:
        from genmodels.data import glyph_area

        try:
            glyph_area(args.text)
        except ValueError as error:
            raise ConfigError(f"--text: {error}") from None
    for flag in DDPM_EVALUATION_OPTIONS:
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ConfigError(f"--{flag} must be >= 0 (got {value})")
    if args.dataset is not None and args.dataset not in GENERATORS:
        raise ConfigError(
            f"unknown dataset {args.dataset!r}; expected one of {', '.join(sorted(GENERATORS))}"
        )
    given = {"ode": args.ode_points, "bound": args.bound_points}  # not given: evaluate_model's defaults
    return {"n_points": {key: value for key, value in given.items() if value is not None}} | {
        "data": args.data,
        "drop_invalid": args.drop_invalid,
        "device": str(resolve_device(args.device)),
        "n_samples": args.n,
        "n_eval": args.n_eval,
        "n_boot": args.n_boot,
        "dataset": args.dataset,
        "text": args.text,
        "seed": args.seed,
    }


# Options of ``evaluate`` and ``compare`` that only a DDPM's evaluation uses.
DDPM_EVALUATION_OPTIONS = ("ode_points", "bound_points")


def _check_ddpm_options(args: argparse.Namespace) -> None:
    """A ConfigError when ``evaluate`` is given a DDPM-only option for a checkpoint of another model
    (as ``sample --sampling_steps`` is), instead of ignoring it. Looks only when one was given."""
    from genmodels.errors import ConfigError
    from genmodels.train.checkpoint import load_checkpoint

    given = [f"--{flag}" for flag in DDPM_EVALUATION_OPTIONS if getattr(args, flag) is not None]
    if not given:
        return
    model_type = load_checkpoint(args.checkpoint)["model_type"]
    if model_type != "ddpm":
        raise ConfigError(
            f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only to DDPM checkpoints; "
            f"{args.checkpoint} is a {model_type} one"
        )


def _evaluate(args: argparse.Namespace) -> int:
    from genmodels.evaluation.scoring import evaluate_checkpoint, format_report
    from genmodels.fileio import json_text, write_json

    to_stdout = args.output == "-"
    if args.output is not None:
        _check_output_file("--output", args.output, args.checkpoint)
    _check_ddpm_options(args)
    result = evaluate_checkpoint(args.checkpoint, **_evaluation_kwargs(args))
    # With '--output -' the JSON alone goes to standard output, so it can be piped; the report to stderr.
    print(format_report(result.metrics), file=sys.stderr if to_stdout else sys.stdout)
    if to_stdout:
        print(json_text(result.metrics))
    elif args.output is not None:
        write_json(args.output, result.metrics)
        print(f"wrote {args.output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from genmodels.errors import ConfigError
    from genmodels.plots.report import compare_checkpoints, run_checkpoints

    checkpoints = []
    for run_dir in args.run_dirs:
        if not Path(run_dir).exists():
            raise ConfigError(f"RUN_DIR {run_dir} does not exist")
        found = run_checkpoints(run_dir)
        if not found:
            raise ConfigError(f"{run_dir} holds no checkpoints/realnvp.pt or checkpoints/ddpm.pt")
        checkpoints += [(f"{model_type} ({run_dir})", path) for model_type, path in found]
    for model_type in ("realnvp", "ddpm"):
        if getattr(args, model_type):
            from genmodels.train.checkpoint import load_checkpoint

            load_checkpoint(getattr(args, model_type), expected_type=model_type)  # --ddpm x.pt: a DDPM's
            checkpoints.append((f"{model_type} ({getattr(args, model_type)})", getattr(args, model_type)))
    if not checkpoints:
        raise ConfigError("compare needs RUN_DIRs or --realnvp / --ddpm checkpoints")
    output_dir = args.output_dir or (args.run_dirs[0] if args.run_dirs else ".")
    table, paths = compare_checkpoints(checkpoints, output_dir, **_evaluation_kwargs(args))
    print(table)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    plot = sub.add_parser("plot", help="write every figure of a checkpoint's model and the results page")
    plot.add_argument("checkpoint")
    plot.add_argument(
        "--output_dir", help="run directory for figures/ and index.html (default: the checkpoint's run)"
    )
    plot.add_argument("--format", default="png", choices=["png", "svg", "pdf"], help="figure format")
    plot.add_argument("--data", help="CSV of real points (default: the held-out split in the checkpoint)")
    plot.add_argument("--text", help="text rendered in the data, to colour points by glyph (e.g. 689)")
    plot.add_argument("-n", "--n_samples", type=int, default=5000, help="samples to draw (default 5000)")
    plot.add_argument("--seed", type=_seed, default=0)
    plot.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _plot(args: argparse.Namespace) -> int:
    from genmodels.plots.report import plot_checkpoint

    paths = plot_checkpoint(
        args.checkpoint,
        output_dir=args.output_dir,
        fmt=args.format,
        data=args.data,
        text=args.text,
        n_samples=args.n_samples,
        seed=args.seed,
        device=args.device,
    )
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


class _MessageFormatter(logging.Formatter):
    """Log records as their bare message; warnings and errors get the ``warning:`` prefix that
    Python warnings get too."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


# Options naming a file or folder, by attribute; an empty name would silently mean the current folder.
_PATH_OPTIONS = {
    "checkpoint": "CHECKPOINT",
    "run_dirs": "RUN_DIR",
    "config": "--config",
    "resume": "--resume",
    "data": "--data",
    "output_dir": "--output_dir",
    "realnvp": "--realnvp",
    "ddpm": "--ddpm",
}


def _check_no_empty_paths(args: argparse.Namespace) -> None:
    """Raises ConfigError for a path option given as an empty string (``--output_dir ''``)."""
    from genmodels.errors import ConfigError

    for attribute, option in _PATH_OPTIONS.items():
        value = getattr(args, attribute, None)
        if value == "" or (isinstance(value, list) and "" in value):
            raise ConfigError(f"{option} must name a file or folder, got an empty string")


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training failed, 2 bad input, 130 Ctrl-C).

    ``prog``: the name a ``train`` command's usage and errors give it (default ``genmodels train <model>``).
    """
    from genmodels.errors import GenModelsError, TrainingError

    warnings.formatwarning = _format_warning
    handler = logging.StreamHandler()
    handler.setFormatter(_MessageFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args, unknown = build_parser(prog).parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {"train": _train, "sample": _sample, "make-data": _make_data}
    handlers.update(evaluate=_evaluate, compare=_compare)
    handlers["plot"] = _plot
    try:  # from here on, Ctrl-C (even while PyTorch loads) ends with one line, not a traceback
        from genmodels.train.acceleration import tune_allocator

        tune_allocator()
        _check_no_empty_paths(args)
        return handlers[args.command](args)
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except GenModelsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path that cannot be read or written (permissions, a file for a folder)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            last = Path(args.output_dir, "checkpoints", f"{args.model_type}_last.pt")
            if last.is_file():
                where = "" if args.output_dir == "outputs" else f" --output_dir {args.output_dir}"
                hint = f" (continue with --resume auto{where})"
        print(f"interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
