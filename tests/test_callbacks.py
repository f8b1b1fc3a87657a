"""Callbacks of a training run that need no training: throughput and the epoch line."""

import io

from net import callbacks, epoch_logs


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_throughput_logs_images_per_second_and_wall_time(monkeypatch):
    """An epoch starting at t = 0 s whose 3 steps of 8 images end at 1, 2 and 4 s, and whose
    validation (10 images) ends at 6 s: training 3 x 8 / 4 = 6 img/s, embedding 10 / (6 - 4) =
    5 img/s, 6 s in all. The next epoch starts its own count."""
    clock = FakeClock()
    monkeypatch.setattr(epoch_logs.time, "perf_counter", clock)
    throughput = callbacks.Throughput(images_per_step=8, embedded_images=10)
    throughput.on_epoch_begin(0)
    for step, end in enumerate((1.0, 2.0, 4.0)):
        clock.now = end
        throughput.on_train_batch_end(step, {"loss": 1.0})
    clock.now = 6.0
    logs = {"loss": 0.5}
    throughput.on_epoch_end(0, logs)
    assert logs == {
        "loss": 0.5,
        "train_images_per_second": 6.0,
        "embedding_images_per_second": 5.0,
        "epoch_seconds": 6.0,
    }
    clock.now = 10.0
    throughput.on_epoch_begin(1)
    clock.now = 12.0
    throughput.on_train_batch_end(0, {})
    clock.now = 12.5
    logs = {}
    throughput.on_epoch_end(1, logs)
    assert logs["train_images_per_second"] == 4.0  # 1 x 8 images in 2 s
    assert logs["embedding_images_per_second"] == 20.0  # 10 images in 0.5 s
    assert logs["epoch_seconds"] == 2.5


def test_without_validation_no_embedding_speed_is_logged(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(epoch_logs.time, "perf_counter", clock)
    throughput = callbacks.Throughput(images_per_step=4)
    throughput.on_epoch_begin(0)
    clock.now = 2.0
    throughput.on_train_batch_end(0, {})
    logs = {}
    throughput.on_epoch_end(0, logs)
    assert logs == {"train_images_per_second": 2.0, "epoch_seconds": 2.0}


def test_the_epoch_line_is_one_plain_line_counting_epochs_from_one():
    logs = {
        "loss": 0.123456,
        "val_map@r": 0.5,
        "learning_rate": 0.001,
        "train_images_per_second": 45.12,
        "embedding_images_per_second": 812.0,
        "epoch_seconds": 5.24,
    }
    line = callbacks.format_epoch_line(2, 40, logs)
    assert line == (
        "Epoch 3/40: 5.2 s, train 45.1 img/s, embedding 812.0 img/s; "
        "loss 0.1235, val_map@r 0.5, learning_rate 0.001"
    )
    stream = io.StringIO()
    printer = callbacks.EpochLine(stream=stream)
    printer.set_params({"epochs": 4})
    printer.on_epoch_end(0, {"loss": 1.0})
    assert stream.getvalue() == "Epoch 1/4: loss 1\n"
