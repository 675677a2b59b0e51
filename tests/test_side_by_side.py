"""Commands side by side (``make run``): each in its own process on its share of the cores, taking a
neighbour's share when it ends; a background command's log and closing lines; a failure named; Ctrl-C
reaching every process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from genmodels import side_by_side
from genmodels.side_by_side import run_side_by_side
from genmodels.train.checkpoint import load_checkpoint
from test_resilience import _default_sigint

TINY = {
    "realnvp": {"model": {"n_coupling_layers": 2, "hidden_units": 16}},
    "ddpm": {"model": {"diffusion_steps": 10, "hidden_units": 16, "n_blocks": 1}},
}


def test_two_commands_run_side_by_side_on_a_share_of_the_cores(tmp_path: Path, capfd, monkeypatch) -> None:
    started = []
    real_popen = subprocess.Popen

    def recording_popen(command, **kwargs):
        started.append(kwargs["env"]["OMP_NUM_THREADS"])
        return real_popen(command, **kwargs)

    monkeypatch.setattr(side_by_side.subprocess, "Popen", recording_popen)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    commands = [
        ["make-data", "two_moons", "-n", "50", "-o", str(a)],
        ["make-data", "circles", "-n", "70", "-o", str(b)],
    ]
    assert run_side_by_side(commands, tmp_path / "logs", cores=5) == 0
    assert started == ["2", "2"]  # 5 cores // 2 commands
    assert len(pd.read_csv(a)) == 50 and len(pd.read_csv(b)) == 70
    out = capfd.readouterr().out
    log = tmp_path / "logs" / "make-data.log"
    assert f"progress in {log}" in out and f"make-data circles done (its log: {log})" in out
    closing = f"wrote 70 points of circles to {b}"
    assert closing in log.read_text() and f"  {closing}" in out  # the closing lines, shown at the end

    started.clear()  # three commands on one core: one thread each; two of a kind get numbered logs
    assert run_side_by_side([commands[0], *commands], tmp_path / "more", cores=1) == 0
    assert started == ["1", "1", "1"]
    assert sorted(path.name for path in (tmp_path / "more").iterdir()) == [
        "make-data-1.log",
        "make-data-2.log",
    ]


def test_the_foreground_command_s_end_says_which_are_still_running_and_frees_its_cores(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    class Job:  # the foreground ends at once; the background one after a few more looks
        def __init__(self, command, **kwargs) -> None:
            self.pid, self.polls_left = (2, 3) if kwargs["stdout"] is not None else (1, 0)

        def poll(self) -> int | None:
            self.polls_left -= 1
            return 0 if self.polls_left < 0 else None

    told = []
    monkeypatch.setattr(side_by_side.subprocess, "Popen", Job)
    monkeypatch.setattr(side_by_side.os, "kill", lambda pid, signum: told.append((pid, signum)))
    monkeypatch.setattr(side_by_side.time, "sleep", lambda seconds: None)
    assert run_side_by_side([["train", "realnvp"], ["train", "ddpm"]], tmp_path, cores=2) == 0
    out = capsys.readouterr().out
    assert f"waiting for: train ddpm (progress in {tmp_path / 'ddpm.log'})" in out
    assert out.index("waiting for") < out.index("train ddpm done")
    assert told == [(2, signal.SIGUSR1)]  # the background job, once: nobody is left when it ends
    assert "has ended" not in out

    # the other way round: the background job ends first, says so, and the foreground takes its threads
    class Quick(Job):
        def __init__(self, command, **kwargs) -> None:
            self.pid, self.polls_left = (2, 0) if kwargs["stdout"] is not None else (1, 3)

    told.clear()
    monkeypatch.setattr(side_by_side.subprocess, "Popen", Quick)
    assert run_side_by_side([["train", "realnvp"], ["train", "ddpm"]], tmp_path, cores=2) == 0
    out = capsys.readouterr().out
    assert "train ddpm has ended" in out and "waiting for" not in out
    assert told == [(1, signal.SIGUSR1)]


def test_a_command_takes_a_neighbour_s_threads_when_told_and_ignores_the_signal_until_it_can(
    tmp_path: Path, monkeypatch
) -> None:
    import torch

    before, threads = signal.getsignal(signal.SIGUSR1), torch.get_num_threads()
    monkeypatch.setenv(side_by_side.SHARE_VARIABLE, "2")
    try:
        side_by_side.take_freed_cores()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)  # Python runs the handler at its next instruction
        assert torch.get_num_threads() == threads + 2
    finally:
        signal.signal(signal.SIGUSR1, before)
        torch.set_num_threads(threads)
    # told while it is still starting (before it can take the cores), a command goes on
    processes = []
    out = tmp_path / "a.csv"
    side_by_side._start(
        [["make-data", "two_moons", "-n", "50", "-o", str(out)]], dict(os.environ), [], processes
    )
    os.kill(processes[0][0].pid, signal.SIGUSR1)
    assert processes[0][0].wait(timeout=120) == 0 and len(pd.read_csv(out)) == 50
    assert signal.getsignal(signal.SIGUSR1) is before  # this process's own handling is as it was


def test_a_failing_background_command_is_named_with_its_error(tmp_path: Path, capfd) -> None:
    good = tmp_path / "a.csv"
    commands = [
        ["make-data", "two_moons", "-n", "50", "-o", str(good)],
        ["make-data", "no_such", "-o", "x.csv"],
    ]
    assert run_side_by_side(commands, tmp_path / "logs", cores=2) == 2
    out = capfd.readouterr().out
    assert "make-data no_such ended with exit status 2" in out and "no_such" in out.split("exit status 2")[1]
    assert good.exists()


def test_ctrl_c_reaches_every_process_and_each_saves_its_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    assert subprocess.run([sys.executable, "-m", "genmodels", "make-data", "two_moons", "-n", "400", "-o", data],
                          capture_output=True).returncode == 0  # fmt: skip
    commands = []
    for name, settings in TINY.items():
        config = tmp_path / f"{name}.yaml"
        training = {"epochs": 100000, "batch_size": 100, "checkpoint_every": 1, "eval_every": 1000}
        config.write_text(yaml.safe_dump({**settings, "training": training}))
        commands.append(
            f"train {name} --config {config} --data {data} --output_dir {tmp_path / name} --quiet"
        )
    env = dict(os.environ, MPLBACKEND="Agg")
    with open(tmp_path / "out.txt", "w") as out:
        # as from a terminal, also where the tests run in a background job (which ignores SIGINT)
        job = subprocess.Popen([sys.executable, "-m", "genmodels.side_by_side", *commands, "--log_dir", tmp_path],
                               stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                               preexec_fn=_default_sigint)  # fmt: skip
    try:
        last = [tmp_path / name / "checkpoints" / f"{name}_last.pt" for name in TINY]
        deadline = time.monotonic() + 180
        while not all(path.exists() for path in last) and time.monotonic() < deadline:
            assert job.poll() is None, (tmp_path / "out.txt").read_text()
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
        try:
            code = job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            logs = [tmp_path / "out.txt", tmp_path / "ddpm.log"]
            pytest.fail(
                "still running 120 s after Ctrl-C:\n" + "\n".join(log.read_text()[-2000:] for log in logs)
            )
        assert code == 130
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    printed = (tmp_path / "out.txt").read_text() + (tmp_path / "ddpm.log").read_text()
    assert printed.count("--resume auto") >= 2  # each run says how to go on
    for name, path in zip(TINY, last, strict=True):
        assert load_checkpoint(path, expected_type=name)["trainer"]["epoch"] >= 1
