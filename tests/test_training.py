"""Training runs: resume, NaN handling, atomic checkpoints, determinism (small CNN, tiny data)."""

import dataclasses
import json
import math
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_DATA, compiled_triplet_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from net import callbacks, experiment, finetuning, losses, pipeline, runs, training
from net.config import load_config

REPO = Path(__file__).resolve().parents[1]


def tiny_config(root, **training_changes):
    """The demo profile shrunk to seconds: 32 px, 2 steps an epoch, no validation classes."""
    config = load_config(REPO / "config.yaml", profile="demo")
    data = dataclasses.replace(config.data, root=str(root), **TINY_DATA)
    model = dataclasses.replace(config.model, embedding_dim=32)
    changes = {"epochs": 2, "steps_per_epoch": 2, "seed": 3, **training_changes}
    train = dataclasses.replace(config.training, **changes)
    schedule = dataclasses.replace(train.schedule, boundaries=[1])
    train = dataclasses.replace(train, schedule=schedule)
    evaluation = dataclasses.replace(config.evaluation, ks=[1, 2])
    return dataclasses.replace(
        config, data=data, model=model, training=train, evaluation=evaluation
    )


def csv_epochs(run_dir):
    rows = (Path(run_dir) / "log.csv").read_text().splitlines()[1:]
    return [int(row.split(",")[0]) for row in rows]


def test_run_writes_its_artifacts_and_continues_where_it_stopped(
    demo_dataset_root, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    first = experiment.train(tiny_config(demo_dataset_root, epochs=1), run_dir, verbose=0)
    assert first["epochs_done"] == 1
    for name in ("best.keras", "last.keras", "config.yaml", "metrics.json", "log.csv"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "tensorboard").is_dir()
    assert callbacks.read_state(run_dir)["epoch"] == 1
    weights_after_one = keras.saving.load_model(run_dir / "last.keras").get_weights()

    # Same run directory, a longer run: starts at the second epoch, from the saved weights.
    capsys.readouterr()
    second = experiment.train(tiny_config(demo_dataset_root, epochs=2), run_dir, verbose="line")
    # One plain line for the epoch (no progress bar), with its speed and wall time.
    output = capsys.readouterr().out
    assert re.search(
        r"^Epoch 2/2: [\d.]+ s, train [\d.]+ img/s, embedding [\d.]+ img/s; .*\bloss ", output, re.M
    ), output
    assert "\r" not in output and "\x1b" not in output
    assert second["resumed_from_epoch"] == 1
    assert second["epochs_done"] == 2
    assert csv_epochs(run_dir) == [1, 2]
    log = (run_dir / "log.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "val_recall@1", "val_map@r", "learning_rate"} <= set(log)
    speed = {"train_images_per_second", "embedding_images_per_second", "epoch_seconds"}
    assert speed <= set(log)
    # The step schedule (boundary at epoch 1) has decayed the rate by `factor`.
    rows = [
        dict(zip(log, r.split(","), strict=True))
        for r in (run_dir / "log.csv").read_text().splitlines()[1:]
    ]
    assert float(rows[1]["learning_rate"]) == pytest.approx(float(rows[0]["learning_rate"]) * 0.1)
    assert all(float(row[name]) > 0 for row in rows for name in speed)
    # TensorBoard has them too.
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / "train")).Reload()
    tags = set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
    assert {f"epoch_{name}" for name in speed} <= tags, tags
    weights_after_two = keras.saving.load_model(run_dir / "last.keras").get_weights()
    assert any(
        not np.array_equal(a, b) for a, b in zip(weights_after_one, weights_after_two, strict=True)
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"recall@1", "recall@2", "precision@1", "r_precision", "map@r"}
    assert metrics["test"]["num_queries"] == metrics["test_images"]

    # Nothing left to do: a third call trains nothing.
    third = experiment.train(tiny_config(demo_dataset_root, epochs=2), run_dir, verbose=0)
    assert third["epochs_done"] == 2
    assert csv_epochs(run_dir) == [1, 2]


def test_resuming_with_another_configuration_is_refused(demo_dataset_root, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    config = tiny_config(demo_dataset_root, epochs=1)
    runs.check_same_config(config.to_dict(), run_dir)
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_dim=64))
    with pytest.raises(runs.RunDirectoryError, match="model.embedding_dim"):
        runs.check_same_config(other.to_dict(), run_dir)
    # More epochs is not another configuration: it extends the run.
    longer = dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=5))
    runs.check_same_config(longer.to_dict(), run_dir)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_model(
    demo_dataset_root, tmp_path
):
    config = tiny_config(demo_dataset_root)
    splits = experiment.load_splits(config.data)
    model = compiled_triplet_model(config.model, learning_rate=1e-3)
    steps = 2

    def poisoned(initial_epoch):
        clean = pipeline.train_dataset(
            splits.train, classes_per_batch=2, images_per_class=2, image_size=32, seed=0
        )
        # From the second epoch on the images are NaN, so the loss is too.
        return clean.enumerate().map(
            lambda i, batch: (
                tf.where(i >= steps, tf.fill(tf.shape(batch[0]), math.nan), batch[0]),
                batch[1],
            )
        )

    with pytest.raises(training.TrainingDivergedError, match=r"epoch 2, batch 1.*last.keras"):
        training.fit(model, poisoned, run_dir=tmp_path, epochs=3, steps_per_epoch=steps, verbose=0)
    assert callbacks.read_state(tmp_path)["epoch"] == 1
    kept = keras.saving.load_model(tmp_path / "last.keras")
    assert all(np.isfinite(w).all() for w in kept.get_weights())
    # The log keeps the diverged epoch, so the failure can be seen in it.
    assert csv_epochs(tmp_path) == [1, 2]
    assert "nan" in (tmp_path / "log.csv").read_text().splitlines()[-1]


def test_atomic_save_keeps_the_previous_file_when_saving_fails(tmp_path, monkeypatch):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"embeddings": keras.layers.Dense(2)(inputs)})
    model.compile(optimizer="adam", loss={"embeddings": losses.BatchHardTripletLoss(margin=0.1)})
    path = tmp_path / "last.keras"
    callbacks.atomic_save_model(model, path)
    before = path.read_bytes()

    def crash(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        callbacks.atomic_save_model(model, path)
    assert path.read_bytes() == before
    # The saved model is an uncompiled view: loading needs no loss or optimizer.
    assert keras.saving.load_model(path).compiled is False


def test_truncate_csv_log_drops_rows_after_the_saved_epoch(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"epoch,loss\r\n1,1.0\r\n2,0.9\n3,0.8\n")
    callbacks.truncate_csv_log(path, 2)
    assert path.read_bytes() == b"epoch,loss\n1,1.0\n2,0.9\n"
    # A log of a run from before epochs counted from 1 (first row 0) is renumbered.
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    callbacks.truncate_csv_log(path, 2)
    assert path.read_text() == "epoch,loss\n1,1.0\n2,0.9\n"


def test_same_seed_same_metrics_on_cpu(demo_dataset_root, tmp_path):
    config = tiny_config(demo_dataset_root, epochs=1, deterministic=True)
    a = experiment.train(config, tmp_path / "a", verbose=0)
    b = experiment.train(config, tmp_path / "b", verbose=0)
    assert a["test"] == b["test"]
    assert a["best_val_map@r"] == b["best_val_map@r"]


def test_decode_check_setting_finds_corrupt_jpeg_data(demo_dataset_root, tmp_path):
    """A demo JPEG with a corrupt Huffman table (header and end marker intact): the fast check
    lets it through, `data.decode_check: true` stops with a message naming the file."""
    import shutil

    from net.data import DataError, read_cars196

    root = tmp_path / "data"
    shutil.copytree(demo_dataset_root, root)
    victim = root / "car_ims" / "000003.jpg"
    contents = bytearray(victim.read_bytes())
    table = contents.find(b"\xff\xc4")  # DHT marker; its 16 code-length counts follow at +5
    contents[table + 5 : table + 21] = b"\xff" * 16
    victim.write_bytes(bytes(contents))
    config = tiny_config(root)
    experiment.load_splits(config.data)  # the fast check does not decode
    strict = dataclasses.replace(config.data, decode_check=True)
    with pytest.raises(DataError, match="000003.jpg"):
        experiment.load_splits(strict)
    skipping = dataclasses.replace(strict, skip_bad_images=True)
    splits = experiment.load_splits(skipping)
    total = sum(len(split) for split in (splits.train, splits.val, splits.test))
    assert total == len(read_cars196(demo_dataset_root)) - 1


@pytest.mark.slow
def test_seed_profile_builds_and_trains_two_steps(demo_dataset_root, tmp_path):
    """`--profile seed` as it is, except the data (the demo set), the size (48 px, P x K = 2 x 2)
    and weights null: ResNet-50 cut at conv4_block3_out, SMG, the seed's auxiliary head, HAP2S,
    uniform class sampling, pad to square, plateau schedule on validation MAP@R."""
    config = load_config(REPO / "config.yaml", profile="seed")
    tiny = {**TINY_DATA, "image_size": 48, "num_train_classes": 4}
    data = dataclasses.replace(config.data, root=str(demo_dataset_root), **tiny)
    model = dataclasses.replace(config.model, weights=None)
    train = dataclasses.replace(config.training, epochs=1, steps_per_epoch=2, seed=0)
    config = dataclasses.replace(config, data=data, model=model, training=train)
    run_dir = tmp_path / "seed"
    summary = experiment.train(config, run_dir, verbose=0)
    assert summary["epochs_done"] == 1
    rows = (run_dir / "log.csv").read_text().splitlines()
    assert len(rows) == 2 and math.isfinite(
        float(dict(zip(rows[0].split(","), rows[1].split(","), strict=True))["loss"])
    )
    saved = keras.saving.load_model(run_dir / "best.keras")
    assert saved.get_layer("resnet50").layers[-1].name == "conv4_block3_out"
    assert saved.get_layer("auxiliary_fc").units == 2  # the 2 classes left for training
    assert 0.0 <= summary["test"]["recall@1"] <= 1.0


def test_frozen_backbone_epochs_survive_a_resume(demo_dataset_root, tmp_path):
    """freeze_backbone_epochs=1: the first epoch leaves the backbone (BatchNorm statistics
    included) bit-identical; a run resumed from the run directory for a second epoch, with a
    fresh model as after a crash, trains the backbone."""
    config = tiny_config(demo_dataset_root)
    splits = experiment.load_splits(config.data)

    def compiled():
        return compiled_triplet_model(config.model, learning_rate=1e-2)

    def batches(initial_epoch):
        return pipeline.train_dataset(
            splits.train, classes_per_batch=2, images_per_class=2, image_size=32, seed=0
        )

    def backbone_values(model):
        return [np.array(w) for w in finetuning.backbone_layer(model).get_weights()]

    model = compiled()
    start = backbone_values(model)
    options = {"run_dir": tmp_path, "steps_per_epoch": 2, "verbose": 0}
    training.fit(model, batches, epochs=1, freeze_backbone_epochs=1, **options)
    after_frozen = backbone_values(keras.saving.load_model(tmp_path / "last.keras"))
    assert all(np.array_equal(a, b) for a, b in zip(start, after_frozen, strict=True))

    resumed = compiled()
    result = training.fit(resumed, batches, epochs=2, freeze_backbone_epochs=1, **options)
    assert result.initial_epoch == 1 and result.epochs_done == 2
    after_free = backbone_values(keras.saving.load_model(tmp_path / "last.keras"))
    assert not any(np.array_equal(a, b) for a, b in zip(start, after_free, strict=True))


def test_keras_still_has_the_private_method_the_multi_worker_loop_relies_on():
    """multi_worker.fit_multi_worker calls Model._symbolic_build (the keras#20585 workaround)."""
    import inspect

    method = getattr(keras.Model, "_symbolic_build", None)
    assert method is not None and "data_batch" in inspect.signature(method).parameters, (
        f"Keras {keras.__version__} has no Model._symbolic_build(data_batch=...), which "
        "net.multi_worker.fit_multi_worker calls to build the model before its own loop "
        "(keras-team/keras#20585); check whether Keras' fit now runs under "
        "MultiWorkerMirroredStrategy, or update the workaround"
    )
