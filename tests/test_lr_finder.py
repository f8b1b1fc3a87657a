"""Tests for net.lr_finder: the learning-rate range test, its suggestion and the ml.find-lr task."""

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from invoke import Context
from invoke.exceptions import Exit

from net import lr_finder
from net.config import load_config
from net.lr_finder import RangeTestResult, learning_rates, range_test, smooth

REPO = Path(__file__).resolve().parents[1]


def test_learning_rates_grow_exponentially_from_start_to_end():
    np.testing.assert_allclose(learning_rates(1e-3, 10.0, 5), [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    for start, end, steps in [(1.0, 0.1, 10), (0.0, 1.0, 10), (1e-7, 1.0, 1), (1e-7, math.inf, 5)]:
        with pytest.raises(ValueError, match="need"):
            learning_rates(start, end, steps)


def test_smoothing_is_the_debiased_moving_average():
    """beta 0.5 on (0, 1): a_1 = 0.5 * 0 = 0, / (1 - 0.5) = 0; a_2 = 0.5 * 0 + 0.5 * 1 = 0.5,
    / (1 - 0.25) = 2/3. A constant stays that constant from the first value."""
    np.testing.assert_allclose(smooth(np.array([0.0, 1.0]), 0.5), [0.0, 2 / 3])
    np.testing.assert_allclose(smooth(np.full(5, 2.0), 0.98), np.full(5, 2.0))
    np.testing.assert_allclose(smooth(np.array([3.0, 1.0]), 0.0), [3.0, 1.0])
    with pytest.raises(ValueError, match="smoothing factor"):
        smooth(np.ones(2), 1.0)


def _result(smoothed, start=1e-5, end=1.0):
    rates = learning_rates(start, end, len(smoothed))
    smoothed = np.asarray(smoothed, dtype=np.float64)
    return RangeTestResult(rates, smoothed, smoothed, "end", start, end)


def test_suggestion_is_a_tenth_of_the_minimum_and_steepest_descent_is_reported():
    # Rates 1e-5, 1e-4, ..., 1 (one decade a step); the curve is lowest at 1e-1.
    result = _result([5.0, 4.9, 4.7, 3.2, 2.7, 4.7])
    assert result.minimum_lr == pytest.approx(1e-1)
    assert result.suggestion == pytest.approx(1e-2)
    # np.gradient over the points before the minimum (1e-5 .. 1e-1): central differences
    # (4.7 - 5.0) / 2 = -0.15, (3.2 - 4.9) / 2 = -0.85, (2.7 - 4.7) / 2 = -1.0 at 1e-2.
    assert result.steepest_lr == pytest.approx(1e-2)
    assert result.loss_fell
    # A loss that only rises: the minimum is the first rate, the suggestion stays in range.
    rising = _result([1.0, 2.0, 3.0, 4.0])
    assert rising.suggestion == pytest.approx(rising.start) and not rising.loss_fell
    assert "never fell" in lr_finder.summary(rising)


def _linear_problem(nan_batch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 3.0, 0.5], "float32"))[:, None]
    if nan_batch is not None:
        x[nan_batch * 8] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    return model, dataset, x, y


def test_each_recorded_loss_is_that_batchs_loss_at_that_rate():
    """With rates far too small to move the weights, batch i's loss is the initial model's
    MSE on batch i (Keras's reported loss, a mean since the epoch began, would differ)."""
    model, dataset, x, y = _linear_problem()
    w, b = (v.numpy() for v in model.weights)
    result = range_test(model, dataset, start=1e-12, end=1e-11, steps=12, smoothing=0.5)
    expected = [
        np.mean((x[i * 8 : i * 8 + 8] @ w + b - y[i * 8 : i * 8 + 8]) ** 2) for i in range(8)
    ]
    np.testing.assert_allclose(result.losses[:8], expected, rtol=1e-4)
    np.testing.assert_allclose(result.learning_rates, learning_rates(1e-12, 1e-11, 12))
    assert result.stopped == "end" and len(result.losses) == 12
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-11)


def test_divergence_stops_the_sweep_early():
    model, dataset, _, _ = _linear_problem()
    result = range_test(model, dataset, start=1e-4, end=100.0, steps=80, smoothing=0.9)
    # SGD on least squares diverges above 2 / (largest Hessian eigenvalue), about 1 here.
    assert result.stopped == "diverged" and len(result.losses) < 80
    assert result.smoothed[-1] > 4 * result.smoothed.min()
    running_min = np.minimum.accumulate(result.smoothed)
    assert (result.smoothed[:-1] <= 4 * running_min[:-1]).all()  # it stopped at the first
    assert 1e-4 <= result.suggestion <= 100.0 and result.loss_fell


def test_a_nan_loss_ends_the_sweep_cleanly():
    model, dataset, _, _ = _linear_problem(nan_batch=5)
    result = range_test(model, dataset, start=1e-6, end=1e-3, steps=20)
    assert result.stopped == "not finite" and len(result.losses) == 5
    assert np.isfinite(result.losses).all() and np.isfinite(result.suggestion)
    model, dataset, _, _ = _linear_problem(nan_batch=0)
    with pytest.raises(ValueError, match="not finite from the first batch"):
        range_test(model, dataset, start=1e-6, end=1e-3, steps=20)


def _config_path(tmp_path, root, **model):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = raw["profiles"]["demo"]
    demo["data"].update(root=str(root), image_size=32, classes_per_batch=2, images_per_class=2)
    demo["model"].update(embedding_dim=32, **model)
    demo["output"]["root"] = str(tmp_path / "runs")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"model": {"architecture": "simple"}, "loss": {"name": "hap2s", "params": {}}},
    ],
)
def test_find_lr_on_demo_data_suggests_a_rate_and_saves_no_weights(
    tmp_path, demo_dataset_root, change
):
    path = _config_path(tmp_path, demo_dataset_root)
    raw = yaml.safe_load(path.read_text())
    for section, values in change.items():
        raw["profiles"]["demo"].setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, profile="demo")
    out = tmp_path / "runs" / "lr_finder"
    result, page = lr_finder.find_learning_rate(config, out, start=1e-6, end=10.0, steps=30)
    assert math.isfinite(result.suggestion) and 1e-6 <= result.suggestion <= 10.0
    assert np.isfinite(result.losses).all() and len(result.losses) >= 10
    assert page == out / "lr_finder.html" and "Suggested training.learning_rate" in page.read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "lr_finder.csv",
        "lr_finder.html",
        "lr_finder.png",
    ]
    # No run directory, no weights: the output root holds the plot folder only.
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["lr_finder"]
    rows = (out / "lr_finder.csv").read_text().splitlines()
    assert rows[0] == "learning_rate,loss,smoothed_loss" and len(rows) == len(result.losses) + 1


def test_find_lr_task_stops_with_one_line_on_a_bad_range(tmp_path, demo_dataset_root):
    from tasks.ml import find_lr

    path = _config_path(tmp_path, demo_dataset_root)
    with pytest.raises(Exit) as info:
        find_lr(Context(), config_path=str(path), profile="demo", start="1", end="0.1")
    assert "need 0 < start < end, got start=1, end=0.1" in str(info.value.message)
    with pytest.raises(Exit, match="--start: expected a number such as 1e-7, got 'abc'"):
        find_lr(Context(), config_path=str(path), profile="demo", start="abc")
    assert not (tmp_path / "runs").exists()
