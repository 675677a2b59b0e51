"""The ``genmodels`` command line (train, sample, make-data, evaluate, compare, plot); ``train_realnvp.py``
and ``train_ddpm.py`` call :func:`main` with ``train realnvp`` / ``train ddpm``."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genmodels import fileio
from genmodels.errors import CheckpointError, ConfigError, DataError, GenModelsError, TrainingError
from genmodels.side_by_side import take_freed_cores

if TYPE_CHECKING:
    import numpy as np

    from genmodels.config import RunConfig, SamplingConfig
    from genmodels.models import ModelSpec

__all__ = ["main", "build_parser"]


def _seed(text: str) -> int:
    """argparse type of ``--seed`` where no config checks it."""
    from genmodels.config import MAX_SEED

    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^32), got {seed}")
    return seed


# Files a points CSV must not replace: a run's own outputs (metrics, figures, configs, pages) and code.
_NOT_CSV_EXTENSIONS = set("json pt pth png gif jpg jpeg pdf svg yaml yml md html py toml gz zip".split())


def _check_output_file(option: str, output: str, checkpoint: str | None = None, *, csv: bool = False) -> None:
    """A ConfigError naming ``option`` unless ``output`` is a writable place for a new file (``csv``: a CSV)."""
    if not output:
        raise ConfigError(f"{option} must name a file, got an empty string")
    if output == "-" or (fileio.is_special_path(output) and os.path.exists(output)):
        return  # standard output, a device or a pipe is written into, not replaced
    try:
        resolved = Path(output).resolve()
    except (RuntimeError, OSError) as error:  # a loop of symbolic links
        raise ConfigError(f"{option} {output} cannot be followed to a file ({error})") from None
    blocker, is_file, suffix = fileio.path_in_the_way(resolved), resolved.is_file(), resolved.suffix.lower()
    if output.endswith(("/", os.sep)) or blocker == resolved:
        problem = " is a folder; expected the file to write"
    elif blocker is not None:
        problem = f": {blocker} is a file, not a folder"
    elif checkpoint is not None and resolved == Path(checkpoint).resolve():
        problem = " is the checkpoint itself; write to another file"
    elif is_file and not resolved.stat().st_mode & 0o222:
        problem = " is read-only; make it writable (chmod u+w) or write to another file"
    elif (unwritable := fileio.folder_problem(resolved.parent)) is not None:
        problem = f": {unwritable}"
    elif is_file and zipfile.is_zipfile(resolved):
        problem = " is a zip archive (as PyTorch checkpoints are); write to another file, or remove it first if it is to be replaced"
    elif csv and is_file and suffix[1:] in _NOT_CSV_EXTENSIONS:
        problem = f" exists and is a {suffix} file, not a CSV file; write the points to a .csv file, or remove it first if it is to be replaced"
    else:
        return
    raise ConfigError(f"{option} {output}{problem}")


def _check_not_the_runs_own_files(output: str, checkpoint: str, payload: dict) -> None:
    """Refuse to write samples over the data the checkpoint was trained on, or its run's ``metrics/`` files."""
    if not Path(output).is_file():
        return
    trained_on = (payload.get("data") or {}).get("path") or payload["config"].data.path
    with contextlib.suppress(OSError):  # the data file is not found from here
        if os.path.samefile(output, trained_on):
            raise ConfigError(f"-o {output} is the data {checkpoint} was trained on (resuming and evaluating "
                              "the run read it again); write the samples to another file")  # fmt: skip
    folder = Path(checkpoint).resolve().parent  # OUTPUT_DIR/checkpoints/<model>.pt
    if folder.name == "checkpoints" and Path(output).resolve().parent == folder.parent / "metrics":
        raise ConfigError(f"-o {output} is one of the run's metrics files; write the samples to another file")


# Memory per sampled value on the way to the CSV file (written in chunks), with room to spare.
_BYTES_PER_SAMPLED_VALUE = 80


def _check_sample_memory(n: int, dim: int, what: str = "samples", option: str = "-n") -> None:
    """A ConfigError naming ``option`` where ``n`` points of ``dim`` values would not fit in memory."""
    from genmodels.models.resources import memory_problem

    if problem := memory_problem(n * dim * _BYTES_PER_SAMPLED_VALUE, f"writing {n} {what} of {dim} values"):
        raise ConfigError(f"{option} {n}: {problem}; ask for fewer (for more, run the command several times "
                          "with different --seed values)")  # fmt: skip


def _write_points(output: str, points: np.ndarray, columns: tuple[str, ...], what: str,
                  labels: np.ndarray | None = None) -> None:  # fmt: skip
    """Write ``points`` (and ``labels`` as a last column) as CSV to ``output`` ('-': standard output)."""
    from genmodels.data import save_csv, write_csv

    if output == "-":
        try:
            write_csv(sys.stdout, points, columns, labels)
            sys.stdout.flush()
        except BrokenPipeError:
            # Later writes to the closed pipe (at exit, too) go nowhere instead of raising again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise OSError(errno.EPIPE, f"standard output was closed before all {what} were written") from None
        print(f"wrote {what} to standard output", file=sys.stderr)
        return
    save_csv(output, points, columns, labels)
    where = "standard output" if fileio.stream_descriptor(output) == 1 else output
    print(f"wrote {what} to {where}", file=sys.stderr if fileio.is_special_path(output) else sys.stdout)


# The options of ``train`` that set config keys: option -> (type, the keys it sets, help).
_TRAIN_KEYS = {
    "epochs": (int, ("training.epochs",), "training epochs"),
    "batch_size": (int, ("training.batch_size",), "training batch size"),
    "lr": (float, ("training.learning_rate",), "learning rate"),
    "seed": (int, ("training.seed",), "random seed"),
    "data": (str, ("data.path",), "CSV dataset"),
    "n_samples": (int, ("sampling.n_samples",), "samples to draw after training"),
    "sampling_steps": (int, ("sampling.sampling_steps",), "reverse steps (0 = all; fewer: the DDIM sampler)"),
    "drop_invalid": (None, ("data.drop_invalid",), "drop CSV rows with bad cells (counted)"),
    "condition": (str, ("data.condition",), "categorical column to condition on: train p(x | label)"),
    "guidance_scale": (float, ("sampling.guidance_scale",), "classifier-free guidance of the run's samples"),
    "precision": (None, ("training.precision", "sampling.precision"), ""),
    "compile": (None, ("training.compile", "sampling.compile"), "default auto: where it was measured faster"),
}
_DEVICE = {"default": "auto", "choices": ["auto", "cpu", "cuda"]}
_FORMAT = {"default": "png", "choices": ["png", "svg", "pdf"]}
_SEED = {"type": _seed, "default": 0}
_CSV_OUTPUT = "CSV file to write ('-': standard output)"


def _add_train_options(parser: argparse.ArgumentParser, model_type: str) -> None:
    from genmodels.config import config_to_dict, default_config
    from genmodels.models import get_spec

    add, defaults = parser.add_argument, config_to_dict(default_config(model_type))
    add("--config", help=f"YAML config (default: configs/{model_type}.yaml if it exists, else the defaults)")
    takes = {f"sampling.{key}" for key in get_spec(model_type).sample_options.values()}
    for option, (kind, keys, text) in _TRAIN_KEYS.items():
        section, key = keys[0].split(".")
        if kind is not None and (section != "sampling" or key == "n_samples" or keys[0] in takes):
            add(f"--{option}", type=kind, help=f"{text} ({keys[0]}; default {defaults[section][key]})")
    add("--drop_invalid", action="store_const", const=True, help=_TRAIN_KEYS["drop_invalid"][2])
    _add_speed_options(parser, "training.precision and sampling.precision", _TRAIN_KEYS["compile"][2])
    add("--device", help="device (default auto)", **_DEVICE)
    add("--output_dir", default="outputs", help="where outputs are written (default outputs)")
    add("--resume", help="continue from a checkpoint, or 'auto': OUTPUT_DIR's latest one (a new run if none)")
    add("--quiet", action="store_true", help="no progress bars or config printout")
    add("--format", help="figure format (default png)", **_FORMAT)
    add("--tensorboard", action="store_true", help="log to OUTPUT_DIR/tensorboard (pip install tensorboard)")


def _add_speed_options(parser: argparse.ArgumentParser, precision_keys: str, compile_default: str) -> None:
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], help=(
        "bfloat16: mixed-precision matrix products; auto (default): bfloat16 where the CPU (AVX-512 BF16, "
        f"AMX) or GPU computes it natively, float32 elsewhere ({precision_keys})"))  # fmt: skip
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help=f"use torch.compile, or not ({compile_default}; see docs/speed.md)")  # fmt: skip


def build_parser(train_prog: str | None = None) -> argparse.ArgumentParser:
    """The ``genmodels`` argument parser; ``train_prog`` names the ``train <model>`` commands."""
    from genmodels.models import model_names

    about = "Train and sample flows and diffusion models on point data."
    parser = argparse.ArgumentParser(prog=train_prog or "genmodels", description=about, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model and write its figures, checkpoint and metrics")
    models = train.add_subparsers(dest="model_type", required=True)
    for model_type in model_names():
        named = {"prog": train_prog} if train_prog else {}
        _add_train_options(models.add_parser(model_type, help=f"train {model_type}", **named), model_type)
    add = sub.add_parser("sample", help="draw samples from a checkpoint into a CSV file").add_argument
    add("checkpoint")
    add("-n", type=int, default=10000, help="number of samples (default 10000)")
    add("-o", "--output", required=True, help=_CSV_OUTPUT)
    add("--seed", **_SEED)
    add("--device", **_DEVICE)
    add("--sampling_steps", type=int, help="DDPM: reverse steps (default 0 = all)")
    add("--eta", type=float, help="DDPM DDIM: noise scale in [0, 1] (default 1)")
    add("--ddim_spacing", choices=["quadratic", "linear"], help="DDPM DDIM: default: the checkpoint's")
    add("--ddim_order", type=int, choices=[1, 2], help="DDPM DDIM: 2 (default): second-order step, 1: plain")
    add("--label", help="conditional checkpoint: draw from p(x | LABEL) (default: the training proportions)")
    add("--guidance_scale", type=float, help="conditional DDPM: classifier-free guidance w (default 1)")
    _add_speed_options(sub.choices["sample"], "default: the checkpoint's", "default: the checkpoint's")
    add = sub.add_parser("make-data", help="write a synthetic 2-D dataset as CSV").add_argument
    from genmodels.data.generators import GENERATORS  # numpy only

    add("name", help=f"generator: {', '.join(GENERATORS)}")
    add("-n", type=int, default=65536, help="number of points (default 65536)")
    add("--seed", **_SEED)
    add("--text", help="for 'text': the characters to render (default 689)")
    fonts = "hand-drawn pen digits, or DejaVu Sans (default auto: pen for digits)"
    add("--font", choices=("auto", "pen", "dejavu"), help=f"for 'text': {fonts}")
    add("--labels", action="store_true", help="also write each point's component as a column 'label'")
    add("-o", "--output", required=True, help=_CSV_OUTPUT)
    _add_evaluation_parsers(sub)
    add = sub.add_parser("plot", help="write a checkpoint's figures and results page").add_argument
    add("checkpoint")
    add("--output_dir", help="run directory for figures/ and index.html (default: the checkpoint's run)")
    add("--format", help="figure format", **_FORMAT)
    add("--data", help="CSV of real points (default: the held-out split in the checkpoint)")
    add("--text", help="text rendered in the data, to colour points by glyph (e.g. 689)")
    add("-n", "--n_samples", type=int, default=5000, help="samples to draw (default 5000)")
    add("--seed", **_SEED)
    add("--device", **_DEVICE)
    # Each command's own parser (an unknown option is reported with its usage); no abbreviations ("--epoch").
    for command in [*sub.choices.values(), *models.choices.values()]:
        command.set_defaults(command_parser=command)
        command.allow_abbrev = False
    return parser


def _add_evaluation_parsers(sub: argparse._SubParsersAction) -> None:
    from genmodels.models import get_spec, model_names

    evaluate = sub.add_parser("evaluate", help="held-out likelihood, sample quality and mode coverage")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--output", help="JSON file for the metrics ('-': standard output)")
    compare = sub.add_parser("compare", help="evaluate runs side by side: compare.md and figures/compare.png")
    add = compare.add_argument
    add("run_dirs", nargs="*", help="training output directories (their checkpoints/)")
    for name in model_names():
        add(f"--{name}", help=f"a {get_spec(name).title} checkpoint")
    add("--output_dir", help="where compare.md and figures/ go (default: first RUN_DIR, else .)")
    for add in (evaluate.add_argument, compare.add_argument):
        add("--data", help="CSV of evaluation points (default: the held-out split stored in the checkpoint)")
        add("--drop_invalid", action="store_true", help="drop --data rows with bad cells instead of failing")
        add("-n", type=int, default=3000, help="samples to generate (default 3000)")
        add("--n_eval", type=int, help="points per sample in the two-sample tests (default min(n, N_real/2))")
        add("--ode_points", type=int, help="DDPM: points for the ODE likelihood (default 1000; 0 skips)")
        add("--bound_points", type=int, help="DDPM: points for the variational bound (default 1000)")
        add("--n_boot", type=int, default=10, help="bootstrap replicates (default 10)")
        add("--dataset", help="generator that made the data (e.g. checkerboard), for the exact entropy")
        add("--text", help="text rendered in the data, for mode coverage (default: detect '689')")
        add("--seed", **_SEED)
        add("--device", default="cpu", choices=_DEVICE["choices"], help="device (default cpu)")


def _train_config(args: argparse.Namespace) -> RunConfig:
    """The resumed run's config, or ``--config``, ``configs/<model>.yaml`` or the defaults; then the options."""
    from genmodels.config import default_config, load_config, with_overrides, yaml_settings
    from genmodels.run import OUTPUTS, resume_path
    from genmodels.train.checkpoint import load_checkpoint

    model_type = args.model_type
    last = Path(args.output_dir, OUTPUTS["last"].format(model_type))
    args.resume = resume_path(args.resume, last, model_type)
    shipped = Path(f"configs/{model_type}.yaml")
    if args.resume is not None:  # the stored run as it was configured; --config changes what it sets
        config = load_checkpoint(args.resume, expected_type=model_type)["config"]
        if args.config is not None:
            config = with_overrides(config, yaml_settings(args.config, model_type), source=args.config)
    elif args.config is not None or shipped.is_file():
        config = load_config(args.config or shipped, model_type)
    else:
        config = default_config(model_type)
    keys = {key: option for option, (_, keys, _) in _TRAIN_KEYS.items() for key in keys}
    overrides = {key: getattr(args, option, None) for key, option in keys.items()}
    return with_overrides(config, overrides, options={key: f"--{option}" for key, option in keys.items()})


def _train(args: argparse.Namespace) -> int:
    import yaml

    from genmodels.config import config_to_dict
    from genmodels.data import check_data_path
    from genmodels.run import run_training
    from genmodels.train.acceleration import resolve_device

    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise ConfigError(f"--output_dir {args.output_dir} is a file; expected a directory (made if missing)")
    config = _train_config(args)
    stored = Path(config.data.path)
    if args.resume is not None and args.data is None and not stored.is_absolute() and not stored.exists():
        raise DataError(f"the run's data file {config.data.path} is not found from this folder ({Path.cwd()}); "
                        "its path is relative to where the run was started: resume there, or pass --data")  # fmt: skip
    resolve_device(args.device)  # an unavailable device is an error before anything is printed
    check_data_path(config.data.path)  # and so is a missing data file
    _check_sample_memory(config.sampling.n_samples, 2, option="sampling.n_samples (--n_samples)")

    def show(config: RunConfig) -> None:  # once the data are read: a bad file's error comes alone
        print(f"effective {config.model_type} config:")
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip())

    given = {key: getattr(args, key) for key in ("output_dir", "device", "resume", "tensorboard")}
    result = run_training(
        config, progress=not args.quiet, fmt=args.format, show=None if args.quiet else show, **given
    )
    if result.metrics:  # empty in a process of several but rank 0, which writes the outputs
        keys = ("results", "checkpoint", "metrics", "samples", "index")
        wrote = [f"wrote {result.paths[key]}" for key in keys]
        figures = sum(path.parent.name == "figures" for path in result.paths.values())
        wrote[-1] += f" (the results page, with this run's {figures} figures)"
        print(fileio.json_text(result.metrics), *wrote, sep="\n")
    return 0


def _refuse_options_the_model_lacks(given: dict[str, str], model_type: str, checkpoint: str,
                                    offers: Callable[[ModelSpec], Collection[str]]) -> None:  # fmt: skip
    """A ConfigError where an option given (``{option: what it needs}``) needs what the model lacks."""
    from genmodels.models import get_spec, model_names

    if lacking := {shown: need for shown, need in given.items() if need not in offers(get_spec(model_type))}:
        needs = set(lacking.values())
        owners = [get_spec(n).title for n in model_names() if needs <= set(offers(get_spec(n)))]
        raise ConfigError(f"{' and '.join(lacking)} {'applies' if len(lacking) == 1 else 'apply'} only to "
                          f"{' or '.join(owners) or 'other'} checkpoints; {checkpoint} is a {model_type} one")  # fmt: skip


# Options of ``sample`` that set a sampling key some models' samplers take (spec.sample_options).
_SAMPLER_OPTIONS = ("sampling_steps", "eta", "ddim_spacing", "ddim_order", "guidance_scale")


def _sampling_settings(args: argparse.Namespace, payload: dict) -> SamplingConfig:
    """The checkpoint's sampling settings with ``sample``'s options laid over them (all steps, eta 1)."""
    from genmodels.config import with_overrides

    given = {key: getattr(args, key) for key in _SAMPLER_OPTIONS if getattr(args, key) is not None}
    shown = {f"--{key} {value}": key for key, value in given.items()}
    _refuse_options_the_model_lacks(shown, payload["model_type"], args.checkpoint,
                                    lambda spec: spec.sample_options.values())  # fmt: skip
    values = {"sampling_steps": 0, "eta": 1.0, **given, "n_samples": args.n}
    values |= {"precision": args.precision, "compile": args.compile}
    options = {f"sampling.{key}": "-n" if key == "n_samples" else f"--{key}" for key in values}
    overrides = {f"sampling.{key}": value for key, value in values.items()}
    return with_overrides(payload["config"], overrides, options=options).sampling


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from genmodels.evaluation.sampling import draw_labels, sample_model
    from genmodels.train import distributed
    from genmodels.train.acceleration import compiled_network, resolve_device, sampling_plan
    from genmodels.train.checkpoint import load_checkpoint, model_from_checkpoint

    main = distributed.is_main()  # under torchrun, every process draws a share; rank 0 writes
    if main:
        _check_output_file("-o", args.output, args.checkpoint, csv=True)
    device = resolve_device(args.device)
    payload = load_checkpoint(args.checkpoint, map_location=device)
    settings = _sampling_settings(args, payload)
    _check_not_the_runs_own_files(args.output, args.checkpoint, payload)
    _check_sample_memory(args.n, int(payload["dim"]))
    label, names = _requested_label(args, payload)
    model = model_from_checkpoint(payload, device=device)
    labels = draw_labels(model, args.n, args.seed) if label is None else np.full(args.n, label)
    compiled, precision = sampling_plan(settings.compile, settings.precision, model, args.n,
                                        settings.sampling_steps)  # fmt: skip
    options = {key: getattr(settings, key) for key in _SAMPLER_OPTIONS}
    with compiled_network(model, compiled):
        samples = sample_model(model, args.n, seed=args.seed, precision=precision, label=labels, progress=main,
                               **options)  # fmt: skip
    if bad := int((~np.isfinite(samples).all(axis=1)).sum()):
        raise CheckpointError(f"{bad} of {args.n} samples from {args.checkpoint} are not finite (diverged "
                              f"weights?); nothing was written to {args.output}")  # fmt: skip
    if main:
        given = f" given label {args.label}" if args.label else ""
        what = f"{args.n} samples of {payload['model_type']}{given}"
        _write_points(args.output, samples, tuple(payload["columns"]), what,
                      None if labels is None else names[labels])  # fmt: skip
    return 0


def _requested_label(args: argparse.Namespace, payload: dict) -> tuple[int | None, np.ndarray | None]:
    """The index of ``--label`` among the checkpoint's label names (None without it), and the names."""
    import numpy as np

    info = payload.get("labels")
    names = None if info is None else np.asarray(info["names"])
    if args.label is None:
        return None, names
    if info is None:
        raise ConfigError(f"--label {args.label}: {args.checkpoint} was trained without a condition "
                          "(data.condition, --condition); sample it without --label")  # fmt: skip
    if args.label.strip() not in info["names"]:
        raise ConfigError(f"--label {args.label}: {args.checkpoint} was trained on the labels "
                          f"{', '.join(info['names'])} of column {info['column']!r}; expected one of them")  # fmt: skip
    return info["names"].index(args.label.strip()), names


def _check_dataset(name: str) -> None:
    from genmodels.data import GENERATORS

    if name not in GENERATORS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {', '.join(sorted(GENERATORS))}")


def _make_data(args: argparse.Namespace) -> int:
    from genmodels.data import GENERATORS, LABELLED

    _check_dataset(args.name)
    if args.n < 1:
        raise ConfigError(f"-n must be >= 1 (got {args.n})")
    _check_sample_memory(args.n, 2, "points")
    _check_output_file("-o", args.output, csv=True)
    if (args.text is not None or args.font is not None) and args.name != "text":
        raise ConfigError("--text and --font apply only to the 'text' dataset")
    if args.labels and args.name not in LABELLED:
        raise ConfigError(f"--labels: {args.name!r} has no natural components; expected one of "
                          f"{', '.join(LABELLED)}")  # fmt: skip
    given = {"text": args.text, "font": args.font, "labels": args.labels or None}
    kwargs = {key: value for key, value in given.items() if value is not None}
    try:
        points = GENERATORS[args.name](args.n, seed=args.seed, **kwargs)
    except ValueError as error:
        raise ConfigError(f"make-data {args.name}: {error}") from None
    points, labels = points if args.labels else (points, None)
    _write_points(args.output, points, ("x", "y"), f"{len(points)} points of {args.name}", labels)
    return 0


# Options of ``evaluate`` and ``compare`` that set a likelihood estimate: option -> spec.likelihoods key.
_LIKELIHOOD_OPTIONS = {"ode_points": "ode", "bound_points": "bound"}


def _evaluation_kwargs(args: argparse.Namespace) -> dict:
    from genmodels.data import glyph_area
    from genmodels.evaluation.metrics import MIN_TWO_SAMPLE_POINTS
    from genmodels.train.acceleration import resolve_device

    for flag, least in (("-n", MIN_TWO_SAMPLE_POINTS), ("--n_boot", 2), ("--n_eval", MIN_TWO_SAMPLE_POINTS)):
        if (value := getattr(args, flag.lstrip("-"))) is not None and value < least:
            raise ConfigError(f"{flag} must be at least {least} (got {value})")
    if args.text is not None:
        try:
            glyph_area(args.text)
        except ValueError as error:
            raise ConfigError(f"--text: {error}") from None
    for flag in _LIKELIHOOD_OPTIONS:
        if (value := getattr(args, flag)) is not None and value < 0:
            raise ConfigError(f"--{flag} must be >= 0 (got {value})")
    if args.dataset is not None:
        _check_dataset(args.dataset)
    # The ODE and the bound cost L network passes per point: 1000 points each unless asked.
    n_points = {name: getattr(args, flag) for flag, name in _LIKELIHOOD_OPTIONS.items()}
    n_points = {name: 1000 if n is None else n for name, n in n_points.items()}
    kwargs = {name: getattr(args, name) for name in ("data", "drop_invalid", "n_eval", "n_boot", "dataset")}
    kwargs |= {"text": args.text, "seed": args.seed, "n_points": n_points, "n_samples": args.n}
    return kwargs | {"device": str(resolve_device(args.device))}


def _evaluate(args: argparse.Namespace) -> int:
    from genmodels.evaluation.scoring import evaluate_checkpoint, format_report
    from genmodels.train.checkpoint import load_checkpoint

    if args.output is not None:
        _check_output_file("--output", args.output, args.checkpoint)
    given = {f"--{opt}": name for opt, name in _LIKELIHOOD_OPTIONS.items() if getattr(args, opt) is not None}
    if given:
        model_type = load_checkpoint(args.checkpoint)["model_type"]
        _refuse_options_the_model_lacks(given, model_type, args.checkpoint, lambda spec: spec.likelihoods)
    result = evaluate_checkpoint(args.checkpoint, **_evaluation_kwargs(args))
    # With '--output -' the JSON alone goes to standard output, so it can be piped; the report to stderr.
    print(format_report(result.metrics), file=sys.stderr if args.output == "-" else sys.stdout)
    if args.output == "-":
        print(fileio.json_text(result.metrics))
    elif args.output is not None:
        fileio.write_json(args.output, result.metrics)
        print(f"wrote {args.output}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from genmodels.models import model_names
    from genmodels.plots.report import compare_checkpoints, run_checkpoints
    from genmodels.train.checkpoint import load_checkpoint

    checkpoints = []
    for run_dir in args.run_dirs:
        if not Path(run_dir).exists():
            raise ConfigError(f"RUN_DIR {run_dir} does not exist")
        if not (found := run_checkpoints(run_dir)):
            names = " or ".join(f"checkpoints/{name}.pt" for name in model_names())
            raise ConfigError(f"{run_dir} holds no {names}")
        checkpoints += [(f"{model_type} ({run_dir})", path) for model_type, path in found]
    for model_type in model_names():
        if path := getattr(args, model_type):
            load_checkpoint(path, expected_type=model_type)  # --ddpm x.pt: a DDPM's
            checkpoints.append((f"{model_type} ({path})", path))
    if not checkpoints:
        options = " / ".join(f"--{name}" for name in model_names())
        raise ConfigError(f"compare needs RUN_DIRs or {options} checkpoints")
    output_dir = args.output_dir or (args.run_dirs[0] if args.run_dirs else ".")
    table, paths = compare_checkpoints(checkpoints, output_dir, **_evaluation_kwargs(args))
    print(table, *(f"wrote {path}" for path in paths.values()), sep="\n")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from genmodels.plots.report import plot_checkpoint

    given = {key: getattr(args, key) for key in ("output_dir", "data", "text", "n_samples", "seed", "device")}
    for path in plot_checkpoint(args.checkpoint, fmt=args.format, **given).values():
        print(f"wrote {path}")
    return 0


class _MessageFormatter(logging.Formatter):
    """Log records as their bare message; warnings and errors with the ``warning:`` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


def _check_no_empty_paths(args: argparse.Namespace) -> None:
    """A ConfigError for a path option given as an empty string (it would mean the current folder)."""
    from genmodels.models import model_names

    options = {"checkpoint": "CHECKPOINT", "run_dirs": "RUN_DIR"}
    options |= {name: f"--{name}" for name in ("config", "resume", "data", "output_dir", *model_names())}
    for attribute, option in options.items():
        value = getattr(args, attribute, None)
        if value == "" or (isinstance(value, list) and "" in value):
            raise ConfigError(f"{option} must name a file or folder, got an empty string")


def _did_you_mean(args: argparse.Namespace, unknown: Sequence[str]) -> str:
    """A hint naming the command's options closest to the unknown ones (``--batch-size``: ``--batch_size``)."""
    options = list(args.command_parser._option_string_actions)  # argparse keeps no public list
    typed = ["--" + word[2:].split("=")[0].replace("-", "_") for word in unknown if word.startswith("--")]
    close = [match for word in typed for match in difflib.get_close_matches(word, options, n=1, cutoff=0.75)]
    return f" (did you mean {' or '.join(dict.fromkeys(close))}?)" if close else ""


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training failed, 2 bad input, 130 Ctrl-C)."""
    # OpenMP's idle threads spin 1,000 rounds, then sleep (why: docs/speed.md); set before torch loads.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    handler = logging.StreamHandler()
    handler.setFormatter(_MessageFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args, unknown = build_parser(prog).parse_known_args(argv)
    if unknown:
        hint = _did_you_mean(args, unknown)
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    handlers = {"train": _train, "sample": _sample, "make-data": _make_data, "evaluate": _evaluate}
    handlers |= {"compare": _compare, "plot": _plot}
    rank = ""  # "rank 1: " before the errors of one process of several (torchrun)
    try:  # from here on, Ctrl-C (even while PyTorch loads) ends with one line, not a traceback
        from genmodels.train import distributed
        from genmodels.train.acceleration import tune_allocator

        tune_allocator()
        take_freed_cores()  # started by genmodels.side_by_side: grow onto a neighbour's cores when it ends
        _check_no_empty_paths(args)
        with distributed.session(getattr(args, "device", "auto")):
            rank = distributed.rank_label()
            if args.command in ("train", "sample") or distributed.is_main():
                return handlers[args.command](args)
            return 0  # the other commands run in rank 0 alone
    except (GenModelsError, OSError) as error:  # OSError: a path that cannot be read or written
        print(f"{rank}error: {error}", file=sys.stderr)
        return 1 if isinstance(error, TrainingError) else 2
    except KeyboardInterrupt:
        hint = ""
        last = args.command == "train" and Path(args.output_dir, "checkpoints", f"{args.model_type}_last.pt")
        if last and last.is_file():
            where = "" if args.output_dir == "outputs" else f" --output_dir {args.output_dir}"
            hint = f" (continue with --resume auto{where})"
        print(f"interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
