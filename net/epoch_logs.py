"""Callbacks that add to or print an epoch's logs.

They log each epoch's speed and wall time and the learning rate, and print one plain line per
epoch. :func:`net.training.fit` places them around the run's checkpoint callbacks
(:mod:`net.callbacks`, which re-exports them): the values they log reach ``log.csv``,
TensorBoard and the epoch line.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import keras


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
