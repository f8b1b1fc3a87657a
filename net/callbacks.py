"""Keras callbacks of a training run: validation retrieval, checkpoints, resume state, NaN guard.

A run directory holds ``last.keras`` and ``best.keras`` (whole models, loadable in safe mode),
``state/`` (weights with the optimizer's variables and ``state.json``: the epoch reached, the best
validation score, the early-stopping and plateau counters), ``log.csv`` (one row per epoch),
``status.json`` (complete, in progress or failed; :func:`net.runs.run_status`) and the
TensorBoard logs.

Every file is written to a temporary name in the same folder and moved into place
(:mod:`net.files`), so a crash at any moment leaves the previous complete file, never a
half-written one. An epoch is saved in this order: the free space is checked, the epoch's
``log.csv`` row, the weights, then ``state.json`` -- the commit point of the epoch -- and only
then ``last.keras`` and ``best.keras``. So ``log.csv`` never lacks a committed epoch's row (rows
after the committed epoch are dropped on resume), and ``last.keras`` is never ahead of the state;
a resume rewrites ``last.keras`` (and ``best.keras`` when the committed epoch was the best) from
the state in case the process died before writing them.

Epochs are counted from 1 everywhere (``log.csv``'s ``epoch`` column, ``state.json``'s ``epoch``
and ``best_epoch``, ``metrics.json``, TensorBoard's step, messages): epoch N is the N-th epoch
trained, and the state after it says N epochs are done.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from net.epoch_logs import (  # noqa: F401 (re-exported: they live there)
    EpochLine,
    LearningRateLogger,
    Throughput,
    format_epoch_line,
)
from net.files import (
    atomic_save_model,
    atomic_save_weights,
    atomic_write_json,
    atomic_write_text,
    free_bytes,
)

STATE_FILE = "state.json"
LOG_FILE = "log.csv"

#: Free space asked for beyond the size of the previous save: 1 MiB plus 10 %.
SPACE_MARGIN_BYTES = 1 << 20
SPACE_MARGIN_FRACTION = 0.1


class RunSaveError(OSError):
    """An epoch could not be saved (a full disk); the last complete save is kept."""


#: The validation metric that selects the best model and drives early stopping and plateaus:
#: MAP@R rather than Recall@1, which saturates far earlier on a few validation classes.
SELECTION_METRIC = "map@r"


def read_state(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The resume state of a run directory, or ``None`` when it holds no completed epoch."""
    path = Path(run_dir) / "state" / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


class ValidationMetrics(keras.callbacks.Callback):
    """Adds validation metrics (e.g. ``val_recall@1``) to each epoch's logs.

    Placed before the checkpoint, schedule and logging callbacks in the callback list, so that
    model selection, early stopping and the CSV log see the metrics.

    Args:
        validate: function returning ``{name: value}`` for the current model.
        prefix: prefix of the logged names.
        guard: the run's :class:`NaNGuard`; an epoch it stopped is not validated.
    """

    def __init__(
        self,
        validate: Callable[[keras.Model], dict[str, float]],
        prefix: str = "val_",
        guard: NaNGuard | None = None,
    ):
        super().__init__()
        self.validate = validate
        self.prefix = prefix
        self.guard = guard

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or (self.guard is not None and self.guard.diverged):
            return
        for name, value in self.validate(self.model).items():
            logs[f"{self.prefix}{name}"] = float(value)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite batch loss and remembers where it happened."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure: dict[str, Any] | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = {"epoch": self.epoch + 1, "batch": batch + 1, "loss": float(loss)}
            self.model.stop_training = True

    @property
    def diverged(self) -> bool:
        """Whether a batch loss was not finite (training was then stopped)."""
        return self.failure is not None


class RunCheckpoint(keras.callbacks.Callback):
    """Saves the epoch's log row, resume state and last/best models; early stopping.

    At the end of every epoch with a finite loss, in this order (see the module docstring): the
    free space is checked (at least the previous save's size plus a margin), the ``log.csv`` row,
    the weights with the optimizer state, ``state.json`` (the commit), ``last.keras``, and
    ``best.keras`` when the monitored value improved (or every epoch when nothing is monitored).
    On an epoch whose loss is not finite only the log row is written, so the other files keep
    the last good epoch (and the row is dropped when the run resumes).

    Args:
        run_dir: the run directory.
        monitor: log key to maximise (default ``val_`` + :data:`SELECTION_METRIC`), or ``None``.
        patience: epochs without improvement before stopping; 0 never stops.
        state: the state read from a previous, interrupted run, to continue its counters.
        components: callbacks whose own state (``get_state``/``set_state``, e.g.
            :class:`ResumablePlateau`) is saved with the run's, by name.
        guard: the run's :class:`NaNGuard`; an epoch it stopped is not committed.

    Raises:
        RunSaveError: (from ``on_epoch_end``) the disk is too full for the save, or a write
            failed; the message names the folder and the space needed, and the last complete
            save is kept.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        monitor: str | None = f"val_{SELECTION_METRIC}",
        patience: int = 0,
        state: dict[str, Any] | None = None,
        components: dict[str, Any] | None = None,
        guard: NaNGuard | None = None,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.guard = guard
        self.monitor = monitor
        self.patience = patience
        self.components = components or {}
        state = state or {}
        self.best = -math.inf if state.get("best") is None else state["best"]
        self.best_epoch = state.get("best_epoch")
        self.wait = state.get("wait", 0)
        self.committed_epoch = state.get("epoch", 0)
        for name, saved in (state.get("components") or {}).items():
            if name in self.components:
                self.components[name].set_state(saved)
        self.stopped_early = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        number = epoch + 1
        log_path = self.run_dir / LOG_FILE
        loss = logs.get("loss")
        diverged = (self.guard is not None and self.guard.diverged) or (
            loss is not None and not math.isfinite(float(loss))
        )
        if diverged:  # Logged so the failure shows, never committed.
            self._guarded(number, lambda: append_log_row(log_path, number, logs))
            return
        current = logs.get(self.monitor) if self.monitor else None
        if self.monitor and current is None:
            raise KeyError(
                f"RunCheckpoint monitors {self.monitor!r}, which is not in the epoch logs "
                f"({', '.join(sorted(logs))})"
            )
        improved = current is None or current > self.best
        best = (-math.inf if current is None else float(current)) if improved else self.best
        best_epoch = number if improved else self.best_epoch
        wait = 0 if improved else self.wait + 1
        state_dir = self.run_dir / "state"

        def commit() -> None:
            self._check_space(number)
            append_log_row(log_path, number, logs)
            state_dir.mkdir(parents=True, exist_ok=True)
            weights = atomic_save_weights(self.model, state_dir / f"epoch-{number:04d}.weights.h5")
            state = {
                "epoch": number,
                "weights": weights.name,
                "best": best if math.isfinite(best) else None,
                "best_epoch": best_epoch,
                "wait": wait,
                "monitor": self.monitor,
                "components": {name: c.get_state() for name, c in self.components.items()},
            }
            atomic_write_json(state_dir / STATE_FILE, state)

        self._guarded(number, commit)
        self.committed_epoch = number
        self.best, self.best_epoch, self.wait = best, best_epoch, wait
        self._guarded(number, lambda: save_models(self.model, self.run_dir, best=improved))
        for old in state_dir.glob("epoch-*.weights.h5"):
            if old.name != f"epoch-{number:04d}.weights.h5":
                old.unlink(missing_ok=True)
        if self.patience and self.wait >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True

    def _check_space(self, number: int) -> None:
        """Stops before writing when the disk cannot hold the save (see :func:`save_size`)."""
        needed = save_size(self.model, self.run_dir)
        needed += SPACE_MARGIN_BYTES + int(SPACE_MARGIN_FRACTION * needed)
        free = free_bytes(self.run_dir)
        if free < needed:
            raise RunSaveError(
                f"not enough free space in {self.run_dir} to save epoch {number}: "
                f"{_megabytes(free)} free, about {_megabytes(needed)} needed; "
                f"{self._kept()}. Free some space and run the same command to resume."
            )

    def _kept(self) -> str:
        if self.committed_epoch:
            return f"the save of epoch {self.committed_epoch} is kept"
        return "no epoch had been saved"

    def _guarded(self, number: int, write: Callable[[], None]) -> None:
        """Runs a write; an ``OSError`` (a full disk) becomes one :class:`RunSaveError` line."""
        try:
            write()
        except RunSaveError:
            raise
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise RunSaveError(
                f"could not save epoch {number} in {self.run_dir} ({reason}); {self._kept()}. "
                "Free some space and run the same command to resume."
            ) from None


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def save_models(model: keras.Model, run_dir: str | os.PathLike, *, best: bool) -> None:
    """Writes ``last.keras`` and, when ``best``, ``best.keras`` (atomically)."""
    run_dir = Path(run_dir)
    atomic_save_model(model, run_dir / "last.keras")
    if best:
        atomic_save_model(model, run_dir / "best.keras")


def save_size(model: keras.Model, run_dir: str | os.PathLike) -> int:
    """Bytes an epoch's save writes: the previous save's files, or an estimate before the first.

    Each file is written in full beside the one it replaces, so this much must be free. The
    estimate, before any file exists, is the model's and optimizer's variables (the state's
    weights) plus the model's twice (``last.keras`` and ``best.keras``).
    """
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    files = [run_dir / "last.keras", run_dir / "best.keras", run_dir / LOG_FILE]
    if state is not None:
        files.append(run_dir / "state" / state["weights"])
    sizes = [path.stat().st_size for path in files if path.is_file()]
    if state is not None and len(sizes) == len(files):
        return sum(sizes)
    model_bytes = _variable_bytes(model.weights)
    optimizer = getattr(model, "optimizer", None)
    optimizer_bytes = _variable_bytes(optimizer.variables) if optimizer is not None else 0
    return max(sum(sizes), 3 * model_bytes + optimizer_bytes)


def _variable_bytes(variables) -> int:
    total = 0
    for variable in variables:
        try:
            itemsize = np.dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize
        except TypeError:  # bfloat16 and other types NumPy does not know
            itemsize = 4
        total += math.prod(int(d) for d in variable.shape) * itemsize
    return total


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` whose counters are saved with the run, so a resume continues them.

    Keras resets the counters when training begins; the state given to :meth:`set_state` (by
    :class:`RunCheckpoint`, from the run's ``state.json``) is applied after that. The lowered
    learning rate itself is an optimizer variable, saved with the weights.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._restored: dict[str, Any] | None = None

    def get_state(self) -> dict[str, Any]:
        best = float(self.best)
        return {
            "wait": int(self.wait),
            "cooldown_counter": int(self.cooldown_counter),
            "best": best if math.isfinite(best) else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._restored = dict(state)

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._restored is not None:
            self.wait = self._restored["wait"]
            self.cooldown_counter = self._restored["cooldown_counter"]
            if self._restored["best"] is not None:
                self.best = self._restored["best"]


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with epoch summaries at step N for epoch N (from 1).

    So TensorBoard's step axis numbers epochs as ``log.csv`` and the messages do.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch + 1, logs)


def restore_state(model: keras.Model, run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """Loads the weights and optimizer variables saved by :class:`RunCheckpoint`.

    Then writes ``last.keras`` (and ``best.keras`` when the committed epoch was the best) from
    them again if it is older than the state: the interrupted process died (or its disk
    filled) after committing the state but before writing the models.

    Args:
        model: the compiled model, built, of the same configuration as the interrupted run.
        run_dir: the run directory.
        state: its ``state.json`` content.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    run_dir = Path(run_dir)
    model.load_weights(run_dir / "state" / state["weights"])
    committed = (run_dir / "state" / STATE_FILE).stat().st_mtime_ns

    def behind(name: str) -> bool:
        path = run_dir / name
        return not path.is_file() or path.stat().st_mtime_ns < committed

    if behind("last.keras"):
        atomic_save_model(model, run_dir / "last.keras")
    if state.get("best_epoch") == state["epoch"] and behind("best.keras"):
        atomic_save_model(model, run_dir / "best.keras")


def append_log_row(path: str | os.PathLike, epoch: int, logs: dict[str, Any]) -> None:
    """Adds an epoch's row to a CSV log (rewritten atomically, newline line endings).

    The columns are ``epoch`` then the logged names, sorted; a name not yet in the header adds a
    column (blank in earlier rows). Non-numeric values are left out.
    """
    path = Path(path)
    header, rows = _read_log(path)
    values = {"epoch": str(epoch)}
    for name, value in logs.items():
        if isinstance(value, (int, float)) or hasattr(value, "item"):
            try:
                values[name] = repr(float(value))
            except (TypeError, ValueError):
                continue
    new = sorted(name for name in values if name not in header and name != "epoch")
    header = (header or ["epoch"]) + new
    rows.append(values)
    _write_log(path, header, rows)


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if (row.get("epoch") or "").strip().isdigit()]
        return list(reader.fieldnames or []), rows


def _write_log(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def truncate_csv_log(path: str | os.PathLike, epochs_done: int) -> None:
    """Keeps the CSV log rows of epochs 1 .. ``epochs_done`` (later ones were not committed).

    Rewrites the file with LF line endings. A log written before epochs were counted from 1
    (its first row is epoch 0) is renumbered.
    """
    path = Path(path)
    header, rows = _read_log(path)
    if not header:
        return
    if rows and int(rows[0]["epoch"]) == 0:
        for row in rows:
            row["epoch"] = str(int(row["epoch"]) + 1)
    kept = [row for row in rows if int(row["epoch"]) <= epochs_done]
    _write_log(path, header, kept)
