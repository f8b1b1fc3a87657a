"""Sweeps: a grid of configuration overrides trained as independent runs, compared in one table.

A sweep is a folder ``<output.root>/sweeps/<name>/`` holding one run directory per combination
of the grid, named after its settings (``descriptors=SG+auxiliary_weight=0``), and
``sweep.json``, the sweep's record: the base command (configuration file, profile, overrides),
the grid, and each run's status (``pending``, ``running``, ``finished``, ``failed`` with its
message, ``interrupted``) and wall time.

Each run is its own process, the same ``invoke ml.train ... --set KEY=VALUE --run-dir DIR``
command line that :func:`run_commands` prints for job runners (Slurm arrays, ``xargs -P``), so
a sweep started again with the same arguments skips the finished runs, and an interrupted run
resumes through the run directory's own resume machinery. :mod:`net.grid` makes the
combinations; :mod:`net.comparison` turns a sweep into one table. This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from net.config import ConfigError, load_config
from net.files import atomic_write_json
from net.grid import SweepError, SweepRun, grid_runs

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The record of a sweep, in its folder.
RECORD_NAME = "sweep.json"

#: Exit codes of a process stopped by SIGINT or SIGTERM through a shell or invoke (128 + n).
_INTERRUPTED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class SweepBase:
    """What every run of a sweep shares: the ``ml.train`` arguments besides the grid.

    Attributes:
        config_path: the configuration file.
        profile: its profile, or ``None``.
        overrides: ``KEY=VALUE`` overrides applied before the grid's settings.
    """

    config_path: str
    profile: str | None = None
    overrides: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Commands and the record
# --------------------------------------------------------------------------------------------


def train_command(
    base: SweepBase, run: SweepRun, run_dir: str | os.PathLike, program: Sequence[str]
) -> list[str]:
    """The ``ml.train`` command line of one run.

    Args:
        base: the shared arguments.
        run: the combination.
        run_dir: its run directory.
        program: how to call invoke (``["invoke"]``, or ``[python, "-m", "invoke", ...]``).
    """
    command = [*program, "ml.train", "--config-path", str(base.config_path)]
    if base.profile:
        command += ["--profile", base.profile]
    for override in (*base.overrides, *run.overrides):
        command += ["--set", override]
    return command + ["--run-dir", str(run_dir)]


def _invoke_program() -> list[str]:
    return [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT)]


def run_commands(base: SweepBase, runs: Sequence[SweepRun], sweep_dir: Path) -> list[str]:
    """The runs' command lines, shell-quoted, one a line (for a Slurm array or ``xargs -P``)."""
    return [shlex.join(train_command(base, run, sweep_dir / run.name, ["invoke"])) for run in runs]


def commands_to_run(
    base: SweepBase,
    grid: Mapping[str, Sequence[Any]],
    sweep_dir: str | os.PathLike,
    *,
    retry_failed: bool = False,
    out: TextIO | None = None,
) -> list[str]:
    """The command lines of the runs still to train (``ml.sweep --print-commands``).

    As :func:`run_sweep` decides, without training: finished runs and runs that failed before
    are left out, and a run whose settings the configuration rejects is recorded as failed
    (its line goes to ``out``, default standard error) instead of being handed to a job runner
    that would only see it fail. The record is written for ``analysis.compare-sweep``.
    """
    sweep_dir = Path(sweep_dir)
    record = open_sweep(base, grid, sweep_dir)
    queue = _runs_to_train(base, grid, sweep_dir, record, retry_failed, out or sys.stderr)
    atomic_write_json(sweep_dir / RECORD_NAME, record)
    return run_commands(base, queue, sweep_dir)


def read_record(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """A sweep's ``sweep.json``.

    Raises:
        SweepError: the folder holds no sweep record, or an unreadable one.
    """
    path = Path(sweep_dir) / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise SweepError(f"{sweep_dir}: not a sweep folder (no {RECORD_NAME})") from error
    except (OSError, ValueError) as error:
        raise SweepError(f"{path}: unreadable sweep record ({error})") from error
    if not isinstance(record, dict) or not isinstance(record.get("runs"), dict):
        raise SweepError(f"{path}: not a sweep record (no runs)")
    bad = next(
        (name for name, entry in record["runs"].items() if not isinstance(entry, dict)), None
    )
    if bad is not None:
        raise SweepError(f"{path}: not a sweep record (run {bad!r} is not a mapping)")
    return record


def open_sweep(
    base: SweepBase, grid: Mapping[str, Sequence[Any]], sweep_dir: str | os.PathLike
) -> dict[str, Any]:
    """Creates or continues a sweep's record (``sweep.json``), with every run of the grid.

    Args:
        base: the arguments every run shares.
        grid: ``{dotted key: values}``.
        sweep_dir: the sweep's folder (created).

    Returns:
        The record as written: runs new to it are ``pending``.

    Raises:
        SweepError: the folder holds a sweep of another configuration.
    """
    sweep_dir = Path(sweep_dir)
    stored_base = {
        "config_path": str(Path(base.config_path).resolve()),
        "profile": base.profile,
        "overrides": list(base.overrides),
    }
    record = {"base": stored_base, "grid": {}, "runs": {}}
    if (sweep_dir / RECORD_NAME).exists():
        record = read_record(sweep_dir)
        if record.get("base") != stored_base:
            raise SweepError(
                f"{sweep_dir} holds a sweep of another configuration ({record.get('base')}); "
                "give the same --config-path, --profile and --set, or another --name"
            )
    record["grid"] = {**record.get("grid", {}), **{key: list(v) for key, v in grid.items()}}
    for run in grid_runs(grid):
        entry = record["runs"].setdefault(run.name, {"status": "pending", "seconds": 0.0})
        entry["settings"] = run.settings
    atomic_write_json(sweep_dir / RECORD_NAME, record)
    return record


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    """The last non-empty line of a process's output (progress bars' carriage returns cut)."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    for line in reversed(text.replace("\r", "\n").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _stop_with_parent() -> None:
    """Makes a run's process (on Linux) get SIGTERM when the sweep dies, even by ``kill -9``.

    No run trains on unseen; it resumes from its last epoch when the sweep is started again.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Process:
    """A running run: its process, the reader thread copying its output, the output's tail."""

    def __init__(self, run: SweepRun, command: list[str], log_path: Path, env, echo: TextIO | None):
        self.run, self.started = run, time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("ab")
        self.tail = b""
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            preexec_fn=_stop_with_parent,
        )
        self.reader = threading.Thread(target=self._copy, args=(echo,), daemon=True)
        self.reader.start()

    def _copy(self, echo: TextIO | None) -> None:
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):
            self.log.write(chunk)
            self.log.flush()
            self.tail = (self.tail + chunk)[-4096:]
            if echo is not None:
                echo.write(chunk.decode(errors="replace"))
                echo.flush()

    def finish(self) -> tuple[int, str, float]:
        """Waits for the output; returns the exit code, the last output line and the time."""
        code = self.process.wait()
        self.reader.join()
        self.log.close()
        return code, _last_line(self.tail.decode(errors="replace")), self.seconds()

    def seconds(self) -> float:
        return time.monotonic() - self.started


def _devices(parallel: int, environ: Mapping[str, str]) -> list[str | None]:
    """The GPU of each of ``parallel`` slots; ``None`` (no change) when one run at a time.

    The visible GPUs (``CUDA_VISIBLE_DEVICES``, else 0 to N - 1), one a slot.
    """
    if parallel == 1:
        return [None]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(parallel)]
    devices = [d.strip() for d in visible.split(",") if d.strip()]
    if len(devices) < parallel:
        raise SweepError(
            f"--parallel {parallel} needs one GPU each, but CUDA_VISIBLE_DEVICES={visible!r} "
            f"names {len(devices)}"
        )
    return devices[:parallel]


def run_sweep(
    base: SweepBase,
    grid: Mapping[str, Sequence[Any]],
    sweep_dir: str | os.PathLike,
    *,
    parallel: int = 1,
    retry_failed: bool = False,
    command: Callable[[SweepBase, SweepRun, Path], list[str]] | None = None,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Trains every combination of a grid not finished yet, each as its own process.

    Finished runs (``metrics.json`` in their folder) are skipped; an interrupted run is run
    again with the same command, which resumes it from its last saved epoch; a run whose
    settings the configuration rejects, or whose process fails, is recorded as failed with its
    message (and skipped next time unless ``retry_failed``), and the sweep goes on. Each run's
    output goes to ``<run dir>/sweep.log`` (and to ``out`` when one run at a time).

    Args:
        base: the arguments every run shares.
        grid: ``{dotted key: values}``.
        sweep_dir: the sweep's folder.
        parallel: runs at once; with more than one, each run sees one GPU
            (``CUDA_VISIBLE_DEVICES``).
        retry_failed: run again the runs that failed before.
        command: the command line of a run (default: ``ml.train`` in this repository).
        out: where progress lines go (default: standard output).

    Returns:
        The sweep's record (as written to ``sweep.json``).

    Raises:
        SweepError: ``parallel`` below 1 or more than the visible GPUs, or the folder holds a
            sweep of another configuration.
    """
    out = out or sys.stdout
    if parallel < 1:
        raise SweepError(f"--parallel must be at least 1, got {parallel}")
    devices = _devices(parallel, os.environ)
    sweep_dir = Path(sweep_dir)
    record = open_sweep(base, grid, sweep_dir)
    queue = _runs_to_train(base, grid, sweep_dir, record, retry_failed, out)
    atomic_write_json(sweep_dir / RECORD_NAME, record)
    _train(
        queue,
        base,
        sweep_dir,
        record,
        devices=devices,
        command=command or (lambda b, r, d: train_command(b, r, d, _invoke_program())),
        out=out,
    )
    return record


def _runs_to_train(
    base: SweepBase,
    grid: Mapping[str, Sequence[Any]],
    sweep_dir: Path,
    record: dict[str, Any],
    retry_failed: bool,
    out: TextIO,
) -> list[SweepRun]:
    """The runs still to train; the record notes those finished and those the config rejects."""
    queue = []
    for run in grid_runs(grid):
        entry = record["runs"][run.name]
        if (sweep_dir / run.name / "metrics.json").is_file():
            entry["status"] = "finished"
            print(f"[sweep] {run.name}: finished before, skipped", file=out)
            continue
        if entry["status"] == "failed" and not retry_failed:
            print(f"[sweep] {run.name}: failed before ({entry.get('message')}), skipped "
                  "(--retry-failed runs it again)", file=out)  # fmt: skip
            continue
        try:
            load_config(base.config_path, base.profile, overrides=[*base.overrides, *run.overrides])
        except ConfigError as error:
            entry.update(status="failed", message=str(error))
            print(f"[sweep] {run.name}: failed: {error}", file=out)
            continue
        queue.append(run)
    return queue


def _train(
    queue: list[SweepRun],
    base: SweepBase,
    sweep_dir: Path,
    record: dict[str, Any],
    *,
    devices: list[str | None],
    command: Callable[[SweepBase, SweepRun, Path], list[str]],
    out: TextIO,
) -> None:
    """Runs the queue, ``len(devices)`` processes at once, saving the record at each change."""

    def save() -> None:
        atomic_write_json(sweep_dir / RECORD_NAME, record)

    free, running = list(devices), []
    total, done = len(queue), 0
    try:
        while queue or running:
            while queue and free:
                run, device = queue.pop(0), free.pop(0)
                env = dict(os.environ)
                if device is not None:
                    env["CUDA_VISIBLE_DEVICES"] = device
                line = command(base, run, sweep_dir / run.name)
                gpu = "" if device is None else f" on GPU {device}"
                print(f"[sweep] {run.name}: started{gpu}: {shlex.join(line)}", file=out)
                out.flush()
                echo = out if len(devices) == 1 else None
                process = _Process(run, line, sweep_dir / run.name / "sweep.log", env, echo)
                running.append((process, device))
                record["runs"][run.name].update(status="running", message=None)
                save()
            for process, device in [(p, d) for p, d in running if p.process.poll() is not None]:
                running.remove((process, device))
                free.append(device)
                done += 1
                entry = _record_outcome(record["runs"][process.run.name], process, sweep_dir)
                message = f" ({entry['message']})" if entry["message"] else ""
                print(f"[sweep] {process.run.name}: {entry['status']}{message} [{done}/{total}]",
                      file=out)  # fmt: skip
                save()
            if running:
                time.sleep(0.2)
    except BaseException:  # Ctrl-C, or an error of the sweep itself: stop the runs, say so
        for process, _ in running:
            process.process.terminate()
        for process, _ in running:
            process.finish()
            entry = record["runs"][process.run.name]
            entry.update(status="interrupted", message="the sweep was stopped")
            entry["seconds"] = round(entry.get("seconds", 0.0) + process.seconds(), 1)
        save()
        raise


def _record_outcome(entry: dict[str, Any], process: _Process, sweep_dir: Path) -> dict[str, Any]:
    """Notes how a finished process ended: finished, interrupted (a signal) or failed."""
    code, last, seconds = process.finish()
    entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 1)
    if code == 0 and (sweep_dir / process.run.name / "metrics.json").is_file():
        entry.update(status="finished", message=None)
    elif code < 0 or code in _INTERRUPTED_CODES:
        signal_number = -code if code < 0 else code - 128
        entry.update(status="interrupted", message=f"killed by signal {signal_number}")
    else:
        entry.update(status="failed", message=last or f"exit code {code}")
    return entry
