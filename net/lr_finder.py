"""The learning-rate range test (Smith 2017; fastai's ``lr_find``, Lightning's ``lr_find``).

A compiled model trains for at most ``steps`` batches while the learning rate grows
exponentially from ``start`` to ``end``, one value per batch, and the loss of each batch is
recorded. The curve is smoothed by a debiased exponential moving average; the sweep stops early
when the smoothed loss exceeds ``divergence`` times its minimum so far, or when a loss is not
finite (NaN or infinite: the sweep ends there, cleanly, with what it has).

The suggestion is one tenth of the learning rate at the smoothed loss's minimum. The other
common rule, the steepest descent of the smoothed curve, is reported too, but not suggested: it
is a derivative of a noisy curve (a P x K metric-learning batch gives a noisy loss), so it jumps
between runs, while the minimum is stable, and a tenth of it keeps a margin below the rates at
which training stops improving (the moving average also lags, shifting the curve to higher
rates). Either is a starting point for ``training.learning_rate``, not a tuned value.

The model's weights change in memory only: nothing here writes a file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from net import charts, experiment, training, visualize
from net.config import Config
from net.files import atomic_write_text


@dataclass(frozen=True)
class RangeTestResult:
    """What a range test measured.

    Attributes:
        learning_rates: (n,) the learning rate of each completed batch.
        losses: (n,) its training loss (finite).
        smoothed: (n,) the debiased moving average of ``losses``.
        stopped: why the sweep ended: ``"end"`` (all steps), ``"diverged"`` (smoothed loss
            above ``divergence`` times its minimum) or ``"not finite"`` (a NaN or infinite loss,
            not recorded).
        start: the first learning rate of the sweep.
        end: the last learning rate the sweep would have reached.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    stopped: str
    start: float
    end: float

    @property
    def minimum_lr(self) -> float:
        """The learning rate at the smoothed loss's minimum."""
        return float(self.learning_rates[int(np.argmin(self.smoothed))])

    @property
    def steepest_lr(self) -> float:
        """The learning rate where the smoothed loss falls fastest against log(rate).

        Searched between the first tenth of the batches (skipped, as Lightning does: the
        moving average is still settling there) and the minimum; the minimum's rate when that
        leaves too few batches.
        """
        stop = int(np.argmin(self.smoothed)) + 1
        skip = len(self.smoothed) // 10
        if stop - skip < 3:
            return self.minimum_lr
        slope = np.gradient(self.smoothed[skip:stop], np.log10(self.learning_rates[skip:stop]))
        return float(self.learning_rates[skip + int(np.argmin(slope))])

    @property
    def suggestion(self) -> float:
        """One tenth of :attr:`minimum_lr`, kept inside the swept range."""
        return float(np.clip(self.minimum_lr / 10.0, self.start, self.end))

    @property
    def loss_fell(self) -> bool:
        """Whether the smoothed loss fell at all (its minimum is not the first batch)."""
        return int(np.argmin(self.smoothed)) > 0


def learning_rates(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` rates growing exponentially from ``start`` to ``end`` (both included).

    Raises:
        ValueError: unless ``0 < start < end`` and ``steps >= 2``.
    """
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start < end):
        raise ValueError(f"need 0 < start < end, got start={start:g}, end={end:g}")
    if steps < 2:
        raise ValueError(f"need at least 2 steps, got {steps}")
    return start * (end / start) ** (np.arange(steps) / (steps - 1))


def smooth(losses: np.ndarray, beta: float) -> np.ndarray:
    """The debiased exponential moving average of ``losses`` (fastai's smoothing).

    ``a_t = beta a_(t-1) + (1 - beta) x_t`` from ``a_0 = 0``, divided by ``1 - beta^t``.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"the smoothing factor must be in [0, 1), got {beta}")
    out = np.empty(len(losses))
    average = 0.0
    for t, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * float(loss)
        out[t - 1] = average / (1 - beta**t)
    return out


class LearningRateRangeTest(keras.callbacks.Callback):
    """Sets each batch's learning rate and records the batch's loss; stops on divergence.

    The loss Keras reports to a callback is the mean since the epoch began, so the metrics are
    reset before each batch: what ``on_train_batch_end`` sees is that batch's loss.

    Args:
        rates: the learning rate of each batch.
        smoothing: ``beta`` of :func:`smooth`.
        divergence: stop when the smoothed loss exceeds this multiple of its minimum.
    """

    def __init__(self, rates: np.ndarray, *, smoothing: float, divergence: float):
        super().__init__()
        if divergence <= 1:
            raise ValueError(f"the divergence multiple must be above 1, got {divergence}")
        smooth([], smoothing)  # checks the smoothing factor
        self.rates = np.asarray(rates, dtype=np.float64)
        self.smoothing = smoothing
        self.divergence = divergence
        self.recorded_rates: list[float] = []
        self.losses: list[float] = []
        self.stopped = "end"
        self._average = 0.0
        self._best = math.inf

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.model.reset_metrics()
        self.model.optimizer.learning_rate = float(self.rates[batch])

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {})["loss"])
        if not math.isfinite(loss):
            self.stopped = "not finite"
            self.model.stop_training = True
            return
        self.recorded_rates.append(float(self.rates[batch]))
        self.losses.append(loss)
        t = len(self.losses)
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing**t)
        self._best = min(self._best, smoothed)
        if smoothed > self.divergence * self._best:
            self.stopped = "diverged"
            self.model.stop_training = True


def range_test(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.98,
    divergence: float = 4.0,
) -> RangeTestResult:
    """Runs the range test on a compiled model with a constant (float) learning rate.

    Args:
        model: the compiled model (its optimiser's learning rate a float, not a schedule); it
            is trained in place.
        dataset: endless ``(inputs, targets)`` batches, as ``model.fit`` takes them.
        start: the first learning rate.
        end: the last learning rate.
        steps: batches, one learning rate each.
        smoothing: ``beta`` of the moving average (0.98, as fastai and Lightning).
        divergence: stop when the smoothed loss exceeds this multiple of its minimum (4, as
            fastai and Lightning).

    Returns:
        The recorded curve.

    Raises:
        ValueError: bad arguments, or not a single finite loss was recorded.
    """
    rates = learning_rates(start, end, steps)
    recorder = LearningRateRangeTest(rates, smoothing=smoothing, divergence=divergence)
    model.fit(
        dataset, epochs=1, steps_per_epoch=steps, callbacks=[recorder], verbose=0, shuffle=False
    )
    if not recorder.losses:
        raise ValueError(
            f"the loss was not finite from the first batch (learning rate {start:g}); check the "
            "data and the loss, or start lower"
        )
    losses = np.array(recorder.losses)
    return RangeTestResult(
        learning_rates=np.array(recorder.recorded_rates),
        losses=losses,
        smoothed=smooth(losses, smoothing),
        stopped=recorder.stopped,
        start=float(start),
        end=float(end),
    )


def find_learning_rate(
    config: Config,
    output_dir: str | os.PathLike,
    *,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.98,
    divergence: float = 4.0,
) -> tuple[RangeTestResult, Path]:
    """The range test of the configured model, data pipeline, losses and optimiser.

    Exactly what ``ml.train`` builds (model, augmented P x K batches, losses, Adam or AdamW,
    seeds, mixed precision, XLA), on one device, with a constant learning rate that the test
    sets per batch. Writes ``lr_finder.png``, ``lr_finder.csv`` and ``lr_finder.html`` to
    ``output_dir``, nothing else: no run directory, no weights.

    Args:
        config: the configuration.
        output_dir: where the plot, the CSV and the page go.
        start: the first learning rate.
        end: the last learning rate.
        steps: batches, one learning rate each.
        smoothing: ``beta`` of the moving average.
        divergence: stop when the smoothed loss exceeds this multiple of its minimum.

    Returns:
        The result and the HTML page.
    """
    rates = learning_rates(start, end, steps)  # bad arguments fail before any work
    experiment.apply_global_settings(config.training)
    splits = experiment.load_splits(config.data)
    net = experiment.build_training_model(config, splits.train)
    experiment.compile_for_training(net, config, learning_rate=float(rates[0]))
    dataset = training.with_targets(
        experiment.training_batches(splits.train, config.data, seed=config.training.seed),
        training.output_names(net),
    )
    result = range_test(
        net,
        dataset,
        start=start,
        end=end,
        steps=steps,
        smoothing=smoothing,
        divergence=divergence,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"{rate:.6g},{loss:.6g},{smoothed:.6g}\n"
        for rate, loss, smoothed in zip(
            result.learning_rates, result.losses, result.smoothed, strict=True
        )
    )
    atomic_write_text(output_dir / "lr_finder.csv", "learning_rate,loss,smoothed_loss\n" + rows)
    png = charts.plot_lr_range_test(
        result.learning_rates,
        result.losses,
        result.smoothed,
        output_dir / "lr_finder.png",
        suggestion=result.suggestion,
        minimum_lr=result.minimum_lr,
        steepest_lr=result.steepest_lr,
        title=f"Learning-rate range test: {config.model.backbone}, {config.loss.name}",
    )
    page = visualize.write_html_report(
        "Learning-rate range test",
        [("Loss against learning rate", [png])],
        output_dir / "lr_finder.html",
        notes=summary(result, config.source),
    )
    return result, page


def summary(result: RangeTestResult, source: str = "") -> str:
    """What the range test found, in a few lines (printed by the task and on the page)."""
    last = result.learning_rates[-1]
    reason = {
        "end": "ran all steps",
        "diverged": "stopped: the smoothed loss passed the divergence multiple of its minimum",
        "not finite": "stopped: the loss became NaN or infinite",
    }[result.stopped]
    lines = [
        f"Swept {len(result.losses)} batches, learning rate {result.start:.2g} to {last:.2g} "
        f"({reason}){' for ' + source if source else ''}.",
        f"Smoothed loss lowest at {result.minimum_lr:.2g}; steepest descent at "
        f"{result.steepest_lr:.2g}.",
        f"Suggested training.learning_rate: {result.suggestion:.2g} (a tenth of the rate at the "
        "smoothed minimum; a starting point, not a tuned value).",
    ]
    if not result.loss_fell:
        lines.append(
            "Warning: the smoothed loss never fell below its first value: start lower "
            "(--start), run more steps, or check the data and the loss."
        )
    return "\n".join(lines)
