"""Several ``genmodels`` commands at once, each in its own process on an equal share of the CPU cores:
how ``make run`` trains RealNVP and DDPM side by side (docs/speed.md: two small models gain less from a
second thread each than from a core each).

``python -m genmodels.side_by_side "train realnvp --config configs/realnvp.yaml" "train ddpm ..."``

The first command runs in the foreground, its progress on this terminal; the others write theirs to
``<log_dir>/<model>.log`` (``tail -f`` shows it), whose closing lines are shown when all have ended.
When a command ends, its threads go to the first one still running (which then computes on more cores).
Ctrl-C reaches every process (each saves a resumable checkpoint, as alone).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["run_side_by_side", "take_freed_cores"]

# In each command's environment: the threads it starts with, which it adds again each time it is told
# (SIGUSR1) that a neighbour has ended.
SHARE_VARIABLE = "GENMODELS_THREAD_SHARE"
_FREED = getattr(signal, "SIGUSR1", None)  # POSIX only; elsewhere the threads stay as they started


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_side_by_side(
    commands: Sequence[Sequence[str]], log_dir: str | Path, *, cores: int | None = None
) -> int:
    """Run each ``genmodels`` argument list in its own process, ``cores // len(commands)`` threads each (at
    least 1); returns 0, 130 after a Ctrl-C, or the first non-zero exit status."""
    threads = max(1, (cores or available_cores()) // max(1, len(commands)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), SHARE_VARIABLE: str(threads)}
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
    processes: list[tuple[subprocess.Popen, TextIO | None]] = []
    interrupts: list[int] = []  # Ctrl-Cs: every process has them too, saves its checkpoint and stops
    try:
        _start(commands, env, logs, processes)
        codes = _wait_all([process for process, _ in processes], titles, where, interrupts)
    except KeyboardInterrupt:  # while starting them, or a second Ctrl-C: wait for those started
        interrupts, codes = [signal.SIGINT], [process.wait() for process, _ in processes]
    finally:
        for _, output in processes:
            if output is not None:
                output.close()
    for title, log, code in zip(titles, logs, codes[1:], strict=False):
        _show_summary(title, log, code)
    return 130 if interrupts or 130 in codes else next((code for code in codes if code), 0)


def _start(
    commands: Sequence[Sequence[str]],
    env: dict[str, str],
    logs: Sequence[Path],
    processes: list[tuple[subprocess.Popen, TextIO | None]],
) -> None:
    """Start each command, appending it and its log file (None: the terminal) to ``processes``; they start
    ignoring the freed-cores signal until they can take the cores (its default action would end them)."""
    previous = signal.signal(_FREED, signal.SIG_IGN) if _FREED else None
    try:
        for i, args in enumerate(commands):
            output = open(logs[i - 1], "w", encoding="utf-8") if i else None  # noqa: SIM115 - closed by the caller
            command = [sys.executable, "-m", "genmodels", *args]
            processes.append((subprocess.Popen(command, env=env, stdout=output, stderr=output), output))
    finally:
        if previous is not None:  # None: not set from Python, so it cannot be put back
            signal.signal(_FREED, previous)


def _wait_all(
    processes: Sequence[subprocess.Popen], titles: Sequence[str], where: Sequence[str], interrupts: list[int]
) -> list[int]:
    """Wait for every process and return their exit statuses. Each time one ends, the first still running
    is told to take its threads; when the first (foreground) one ends, say which are still running, and
    when a background one ends before it, say so (``titles``, ``where``: the background ones'). A Ctrl-C is
    noted in ``interrupts`` (the processes stop by themselves); a second one raises KeyboardInterrupt."""

    def note(signum: int, frame: object) -> None:
        if interrupts:
            raise KeyboardInterrupt
        interrupts.append(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, note) if in_main_thread else None
    codes: list[int | None] = [None] * len(processes)
    try:
        while None in codes:
            for i, process in enumerate(processes):
                if codes[i] is not None or (code := process.poll()) is None:
                    continue
                codes[i] = code
                running = [j for j, other in enumerate(codes) if other is None]
                if i == 0 and running:
                    print(f"waiting for: {'; '.join(where[j - 1] for j in running)}", flush=True)
                elif i and 0 in running and not interrupts:  # on its own line, under the foreground's bar
                    print(f"\n{titles[i - 1]} has ended; its closing lines come at the end", flush=True)
                if running and _FREED and not interrupts:
                    with contextlib.suppress(ProcessLookupError):  # it has just ended too
                        os.kill(processes[running[0]].pid, _FREED)
            time.sleep(0.2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return codes


def take_freed_cores() -> None:
    """In a command started by :func:`run_side_by_side`: on each freed-cores signal (a neighbour ended),
    compute on its share of threads too. Elsewhere, nothing."""
    share = os.environ.get(SHARE_VARIABLE, "")
    if not (_FREED and share.isdigit()):
        return
    from genmodels.train import acceleration

    def grow(signum: int, frame: object) -> None:
        acceleration.offer_threads(int(share))  # compiled training takes them where that pays

    signal.signal(_FREED, grow)
    # Python restores a handled signal's default action (to end the process) as it exits: ignore it then.
    atexit.register(signal.signal, _FREED, signal.SIG_IGN)


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
