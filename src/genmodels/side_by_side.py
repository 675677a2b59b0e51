"""Several ``genmodels`` commands at once, each in its own process on an equal share of the CPU cores:
how ``make run`` trains RealNVP and DDPM side by side (docs/speed.md: two small models gain less from a
second thread each than from a core each).

``python -m genmodels.side_by_side "train realnvp --config configs/realnvp.yaml" "train ddpm ..."``

The first command runs in the foreground, its progress on this terminal; the others write theirs to
``<log_dir>/<model>.log`` (``tail -f`` shows it), whose closing lines are shown when all have ended.
Ctrl-C reaches every process (each saves a resumable checkpoint, as alone).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run_side_by_side"]


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_side_by_side(
    commands: Sequence[Sequence[str]], log_dir: str | Path, *, cores: int | None = None
) -> int:
    """Run each ``genmodels`` argument list in its own process, ``cores // len(commands)`` threads each (at
    least 1); returns 0, 130 after a Ctrl-C, or the first non-zero exit status."""
    threads = max(1, (cores or available_cores()) // max(1, len(commands)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    names = [args[1] if args[0] == "train" and len(args) > 1 else args[0] for args in commands[1:]]
    logs = [
        Path(log_dir) / f"{name}{'' if names.count(name) == 1 else f'-{i + 1}'}.log"
        for i, name in enumerate(names)
    ]
    titles = [" ".join(args[:2]) for args in commands[1:]]
    where = [f"{title} (progress in {log})" for title, log in zip(titles, logs, strict=True)]
    if logs:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        print(f"running {len(commands)} jobs side by side, {threads} thread(s) each; meanwhile: {'; '.join(where)}",
              flush=True)  # fmt: skip
    processes, interrupted = [], False
    try:
        for i, args in enumerate(commands):
            output = open(logs[i - 1], "w", encoding="utf-8") if i else None  # noqa: SIM115 - closed below
            command = [sys.executable, "-m", "genmodels", *args]
            processes.append((subprocess.Popen(command, env=env, stdout=output, stderr=output), output))
        codes = [processes[0][0].wait()]
        if running := [
            text for (process, _), text in zip(processes[1:], where, strict=True) if process.poll() is None
        ]:
            print(f"waiting for: {'; '.join(running)}", flush=True)
        codes += [process.wait() for process, _ in processes[1:]]
    except KeyboardInterrupt:  # every process had the Ctrl-C too: let them save their checkpoints
        interrupted, codes = True, [process.wait() for process, _ in processes]
    finally:
        for _, output in processes:
            if output is not None:
                output.close()
    for title, log, code in zip(titles, logs, codes[1:], strict=False):
        _show_summary(title, log, code)
    return 130 if interrupted or 130 in codes else next((code for code in codes if code), 0)


def _show_summary(name: str, log: Path, code: int) -> None:
    """The closing lines of a background run's log, or its last lines where it failed."""
    lines = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    closing = [line for line in lines if " run done in " in line or line.startswith(("wrote ", "warning"))]
    shown = closing if code == 0 else lines[-15:]
    status = "done" if code == 0 else f"ended with exit status {code}"
    print(f"{name} {status} (its log: {log}):", *(f"  {line}" for line in shown), sep="\n", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m genmodels.side_by_side", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "commands", nargs="+", help='genmodels commands, each one quoted argument, e.g. "train ddpm"'
    )
    parser.add_argument("--log_dir", default="outputs/logs", help="where the background commands' logs go")
    args = parser.parse_args(argv)
    return run_side_by_side([shlex.split(command) for command in args.commands], args.log_dir)


if __name__ == "__main__":
    sys.exit(main())
