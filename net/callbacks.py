"""Keras callbacks of a training run: validation retrieval, checkpoints, resume state, NaN guard.

A run directory holds ``last.keras`` and ``best.keras`` (whole models, loadable in safe mode),
``state/`` (weights with the optimizer's variables and ``state.json``: the epoch reached, the best
validation score, the early-stopping counter) and the logs. Every file is written to a temporary
name in the same folder and moved into place (:mod:`net.files`), so a crash at any moment
leaves the previous complete file, never a half-written one. ``state.json`` is written last: it
is the commit point of an epoch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from net.files import atomic_save_model, atomic_save_weights, atomic_write_json, atomic_write_text

STATE_FILE = "state.json"

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
    """

    def __init__(self, validate: Callable[[keras.Model], dict[str, float]], prefix: str = "val_"):
        super().__init__()
        self.validate = validate
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or getattr(self.model, "stop_training_nan", False):
            return
        for name, value in self.validate(self.model).items():
            logs[f"{self.prefix}{name}"] = float(value)


class Throughput(keras.callbacks.Callback):
    """Adds each epoch's speed and wall time to its logs.

    So they reach ``log.csv``, TensorBoard and the epoch line. Logged keys:

    - ``train_images_per_second``: images of the epoch's training steps over the time from the
      epoch's start to the end of its last step;
    - ``embedding_images_per_second``: ``embedded_images`` (the validation images, embedded once
      an epoch) over the time from the last step's end to this callback's ``on_epoch_end``;
      logged when ``embedded_images`` > 0;
    - ``epoch_seconds``: the epoch's wall time up to this callback's ``on_epoch_end`` (training
      and validation; the checkpoint written afterwards is not counted).

    Place it right after the validation callback (whose embedding extraction it times) and
    before the checkpoint, CSV and TensorBoard callbacks. The end of a training step is taken
    at ``on_train_batch_end``, where Keras has already turned the step's outputs into Python
    numbers, i.e. waited for the step to finish.

    Args:
        images_per_step: images of one training step (the global batch).
        embedded_images: images the validation embeds at the end of each epoch; 0 for none.
    """

    def __init__(self, images_per_step: int, embedded_images: int = 0):
        super().__init__()
        self.images_per_step = int(images_per_step)
        self.embedded_images = int(embedded_images)
        self._start = self._last_step_end = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = self._last_step_end = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        self._last_step_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        now = time.perf_counter()
        training = self._last_step_end - self._start
        if self._steps and training > 0:
            logs["train_images_per_second"] = self._steps * self.images_per_step / training
        validation = now - self._last_step_end
        if self.embedded_images and validation > 0:
            logs["embedding_images_per_second"] = self.embedded_images / validation
        logs["epoch_seconds"] = now - self._start


def format_epoch_line(epoch: int, epochs: int, logs: dict[str, Any]) -> str:
    """One line summing up an epoch.

    For example ``Epoch 3/40: 5.2 s, train 45.1 img/s, embedding 812.0 img/s; loss 0.1234,
    val_map@r 0.4123, learning_rate 0.001``.

    Args:
        epoch: the epoch as Keras counts it (from 0); shown from 1, as Keras' progress bar does.
        epochs: the last epoch.
        logs: the epoch's logs.
    """
    speed = []
    if "epoch_seconds" in logs:
        speed.append(f"{logs['epoch_seconds']:.1f} s")
    if "train_images_per_second" in logs:
        speed.append(f"train {logs['train_images_per_second']:.1f} img/s")
    if "embedding_images_per_second" in logs:
        speed.append(f"embedding {logs['embedding_images_per_second']:.1f} img/s")
    skipped = {"epoch_seconds", "train_images_per_second", "embedding_images_per_second"}
    values = [
        f"{name} {float(value):.4g}"
        for name, value in logs.items()
        if name not in skipped and isinstance(value, (int, float))
    ]
    parts = [", ".join(part) for part in (speed, values) if part]
    return f"Epoch {epoch + 1}/{epochs}: " + "; ".join(parts)


class EpochLine(keras.callbacks.Callback):
    """Prints one plain line per epoch (no progress bar, no terminal control codes).

    For output that is not a terminal (CI logs, ``> train.log``), in place of Keras' progress
    bar. Place it last, so the line shows every value the other callbacks logged.

    Args:
        stream: where to print (standard output by default).
    """

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        epochs = self.params.get("epochs", epoch + 1) if self.params else epoch + 1
        print(
            format_epoch_line(epoch, epochs, logs or {}), file=self.stream or sys.stdout, flush=True
        )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to each epoch's logs as ``learning_rate``."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


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
            self.model.stop_training_nan = True


class RunCheckpoint(keras.callbacks.Callback):
    """Saves last/best models and the resume state; early stopping on the monitored metric.

    At the end of every epoch with a finite loss: ``last.keras``; ``best.keras`` when the
    monitored value improved (or every epoch when nothing is monitored); then the weights with the
    optimizer state and ``state.json``. On an epoch whose loss is not finite nothing is written,
    so the files keep the last good epoch.

    Args:
        run_dir: the run directory.
        monitor: log key to maximise (default ``val_`` + :data:`SELECTION_METRIC`), or ``None``.
        patience: epochs without improvement before stopping; 0 never stops.
        state: the state read from a previous, interrupted run, to continue its counters.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        monitor: str | None = f"val_{SELECTION_METRIC}",
        patience: int = 0,
        state: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.patience = patience
        state = state or {}
        self.best = state.get("best", -math.inf)
        self.best_epoch = state.get("best_epoch")
        self.wait = state.get("wait", 0)
        self.stopped_early = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if getattr(self.model, "stop_training_nan", False):
            return
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_model(self.model, self.run_dir / "last.keras")
        current = logs.get(self.monitor) if self.monitor else None
        if self.monitor and current is None:
            raise KeyError(
                f"RunCheckpoint monitors {self.monitor!r}, which is not in the epoch logs "
                f"({', '.join(sorted(logs))})"
            )
        if current is None or current > self.best:
            self.best = -math.inf if current is None else float(current)
            self.best_epoch = epoch + 1
            self.wait = 0
            atomic_save_model(self.model, self.run_dir / "best.keras")
        else:
            self.wait += 1
        self._save_state(epoch + 1)
        if self.patience and self.wait >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True

    def _save_state(self, epochs_done: int) -> None:
        state_dir = self.run_dir / "state"
        state_dir.mkdir(exist_ok=True)
        weights = atomic_save_weights(self.model, state_dir / f"epoch-{epochs_done:04d}.weights.h5")
        state = {
            "epoch": epochs_done,
            "weights": weights.name,
            "best": self.best if math.isfinite(self.best) else None,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "monitor": self.monitor,
        }
        atomic_write_json(state_dir / STATE_FILE, state)
        for old in state_dir.glob("epoch-*.weights.h5"):
            if old != weights:
                old.unlink()


def restore_state(model: keras.Model, run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """Loads the weights and optimizer variables saved by :class:`RunCheckpoint`.

    Args:
        model: the compiled model, built, of the same configuration as the interrupted run.
        run_dir: the run directory.
        state: its ``state.json`` content.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(run_dir) / "state" / state["weights"])


def truncate_csv_log(path: str | os.PathLike, epochs_done: int) -> None:
    """Drops CSV log rows of epochs after ``epochs_done`` (written before a crash)."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    kept = [row for row in rows if row.split(",", 1)[0].strip().isdigit()]
    kept = [row for row in kept if int(row.split(",", 1)[0]) < epochs_done]
    atomic_write_text(path, header + "".join(kept))
