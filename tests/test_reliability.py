"""Nothing lost, nothing silently wrong: skipped data, kills, a full disk, run states."""

import logging
from pathlib import Path

import cv2
import numpy as np
from helpers import TINY_DATA, compiled_triplet_model

from net import data, experiment
from net.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, classes: list[str], per_class: int, empty: set[str]) -> Path:
    """An image-folder data set; every image of the classes in ``empty`` is a 0-byte file."""
    rng = np.random.default_rng(0)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            path = folder / f"{i}.png"
            if name in empty:
                path.write_bytes(b"")
            else:
                cv2.imwrite(str(path), rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
    return root


def test_skipping_that_empties_a_middle_class_leaves_dense_labels(tmp_path, caplog):
    """Class b (a training class between a and c) loses every image: the training labels are
    renumbered 0..2 keeping each image's class name, b is reported, the head has 3 outputs."""
    classes = ["a", "b", "c", "d", "e", "f"]
    root = _image_folder(tmp_path / "set", classes, per_class=3, empty={"b"})
    with caplog.at_level(logging.WARNING, logger="net.record_checks"):
        records = data.read_dataset("image_folder", root, skip_bad=True)
    assert "Dropped 1 class(es) left with fewer than two usable images: 'b' (label 1)" in (
        caplog.text
    )
    split = data.metric_learning_split(records, num_train_classes=4)
    train = split.train
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]
    assert train.class_names == ("a", "c", "d")
    for path, label in zip(train.paths, train.labels, strict=True):
        assert Path(path).parent.name == train.class_names[label]
    # The split's class positions are the data set's: e and f stay the test classes.
    assert sorted({Path(p).parent.name for p in split.test.paths}) == ["e", "f"]
    config = load_config(REPO / "config.yaml", profile="demo")
    assert config.loss.auxiliary_weight > 0
    assert experiment.auxiliary_classes(config, train) == 3


def test_dense_records_without_a_hole_are_unchanged():
    records = data.Records(
        paths=np.array(["x", "y", "z"]),
        labels=np.array([1, 0, 1]),
        bboxes=np.full((3, 4), -1),
        class_names=("p", "q"),
    )
    assert records.dense() is records
    gap = records.subset([0, 2])  # only class q (label 1) remains
    dense = gap.dense()
    assert dense.labels.tolist() == [0, 0] and dense.class_names == ("q",)


# --------------------------------------------------------------------------------------------
# Kill -9 and resume: the same run as an uninterrupted one
# --------------------------------------------------------------------------------------------

#: Logged columns that measure time, so differ between any two runs.
TIMING_COLUMNS = {"epoch_seconds", "train_images_per_second", "embedding_images_per_second"}

#: Run in a subprocess: trains, and dies like kill -9 (os._exit, no clean-up) at the moment the
#: state of epoch 2 is about to be committed: epoch 2's log row and weights are written.
KILLED_RUN = """
import os, sys
import yaml
from net import callbacks, experiment
from net.config import config_from_dict

original = callbacks.atomic_write_json

def write(path, data):
    if path.name == callbacks.STATE_FILE and data["epoch"] == 2:
        os._exit(9)
    return original(path, data)

callbacks.atomic_write_json = write
config = config_from_dict(yaml.safe_load(open(sys.argv[1])))
experiment.train(config, sys.argv[2], verbose=0)
"""


def reliability_config(root, **training_changes):
    """The demo profile shrunk to seconds: 32 px, 2 x 2 batches, 3 epochs of 2 steps, seeded,
    deterministic, with a plateau schedule (whose counters and lowered rate must resume)."""
    import dataclasses

    config = load_config(REPO / "config.yaml", profile="demo")
    data_config = dataclasses.replace(config.data, root=str(root), **TINY_DATA, cache=False)
    model = dataclasses.replace(config.model, embedding_dim=16)
    schedule = dataclasses.replace(config.training.schedule, kind="plateau", patience=1)
    changes = {"epochs": 3, "steps_per_epoch": 2, "seed": 5, "deterministic": True}
    train = dataclasses.replace(
        config.training, schedule=schedule, **{**changes, **training_changes}
    )
    evaluation = dataclasses.replace(config.evaluation, ks=[1, 2])
    return dataclasses.replace(
        config, data=data_config, model=model, training=train, evaluation=evaluation
    )


def _log_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "log.csv").open(newline="") as handle:
        return [
            {k: v for k, v in row.items() if k not in TIMING_COLUMNS}
            for row in csv.DictReader(handle)
        ]


def test_a_run_killed_before_its_commit_resumes_to_the_uninterrupted_result(
    demo_dataset_root, tmp_path
):
    import json
    import os
    import subprocess
    import sys

    import yaml

    from net import callbacks, runs

    config = reliability_config(demo_dataset_root)
    uninterrupted = experiment.train(config, tmp_path / "whole", verbose=0)

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(config_path), str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == 9, killed.stderr[-3000:]
    # Killed between epoch 2's log row and its commit: the state is epoch 1's, the log has a
    # row the state does not (dropped on resume), last.keras is not ahead of the state.
    assert callbacks.read_state(run_dir)["epoch"] == 1
    assert [row["epoch"] for row in _log_rows(run_dir)] == ["1", "2"]
    assert runs.run_status(run_dir) == runs.RUN_IN_PROGRESS

    resumed = experiment.train(config, run_dir, verbose=0)
    assert resumed["resumed_from_epoch"] == 1
    assert {**resumed, "resumed_from_epoch": 0} == uninterrupted
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert {**saved, "resumed_from_epoch": 0} == json.loads(
        (tmp_path / "whole" / "metrics.json").read_text()
    )
    assert _log_rows(run_dir) == _log_rows(tmp_path / "whole")
    assert [row["epoch"] for row in _log_rows(run_dir)] == ["1", "2", "3"]
    assert b"\r" not in (run_dir / "log.csv").read_bytes()
    assert runs.run_status(run_dir) == runs.RUN_COMPLETE
    # One numbering: best_epoch is a log.csv epoch, the one with the highest val_map@r.
    rows = _log_rows(run_dir)
    best = max(rows, key=lambda row: float(row["val_map@r"]))
    assert int(best["epoch"]) == resumed["best_epoch"]


# --------------------------------------------------------------------------------------------
# A full disk, leftovers of a killed process, run status
# --------------------------------------------------------------------------------------------


def _fit(root, run_dir, epochs):
    """training.fit of a fresh small model (as a new process would build it), 2 steps an epoch."""
    import keras

    from net import pipeline, training

    keras.utils.set_random_seed(1)
    config = reliability_config(root)
    splits = experiment.load_splits(config.data)
    model = compiled_triplet_model(config.model, learning_rate=1e-3)

    def batches(initial_epoch):
        return pipeline.train_dataset(
            splits.train,
            classes_per_batch=2,
            images_per_class=2,
            image_size=32,
            seed=0,
            start_batch=2 * initial_epoch,
        )

    return training.fit(
        model, batches, run_dir=run_dir, epochs=epochs, steps_per_epoch=2, verbose=0
    )


def _weights(path):
    import keras

    return keras.saving.load_model(path).get_weights()


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_full_disk_stops_in_one_line_and_keeps_the_last_complete_save(
    demo_dataset_root, tmp_path, monkeypatch
):
    import errno

    import pytest

    from net import callbacks, files

    run_dir = tmp_path / "run"
    _fit(demo_dataset_root, run_dir, epochs=1)
    after_one = _weights(run_dir / "last.keras")
    log_after_one = (run_dir / "log.csv").read_bytes()

    # 1. The free-space check: too little room for another save stops before writing anything.
    monkeypatch.setattr(callbacks, "free_bytes", lambda folder: 2 * 2**20)
    with pytest.raises(callbacks.RunSaveError) as info:
        _fit(demo_dataset_root, run_dir, epochs=2)
    message = str(info.value)
    assert "\n" not in message
    assert f"not enough free space in {run_dir} to save epoch 2: 2.0 MB free" in message
    assert "MB needed; the save of epoch 1 is kept" in message
    assert callbacks.read_state(run_dir)["epoch"] == 1
    assert _same(_weights(run_dir / "last.keras"), after_one)
    assert (run_dir / "log.csv").read_bytes() == log_after_one
    monkeypatch.undo()

    # 2. The disk fills while the state's weights are written: one line, the state of epoch 1.
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(callbacks, "atomic_save_weights", no_space)
    with pytest.raises(callbacks.RunSaveError, match=r"could not save epoch 2 in .*run \(No space"):
        _fit(demo_dataset_root, run_dir, epochs=2)
    assert callbacks.read_state(run_dir)["epoch"] == 1
    assert _same(_weights(run_dir / "last.keras"), after_one)
    monkeypatch.undo()

    # 3. It fills after the commit, while last.keras is written: last.keras is behind the state
    # (never ahead); the resume rewrites it from the state.
    original = files.atomic_save_model
    monkeypatch.setattr(callbacks, "atomic_save_model", no_space)
    with pytest.raises(callbacks.RunSaveError, match="the save of epoch 2 is kept"):
        _fit(demo_dataset_root, run_dir, epochs=2)
    assert callbacks.read_state(run_dir)["epoch"] == 2
    assert _same(_weights(run_dir / "last.keras"), after_one)
    monkeypatch.setattr(callbacks, "atomic_save_model", original)
    result = _fit(demo_dataset_root, run_dir, epochs=2)  # nothing to train; models rewritten
    assert result.epochs_done == 2
    assert not _same(_weights(run_dir / "last.keras"), after_one)
    assert [int(row["epoch"]) for row in _log_rows(run_dir)] == [1, 2]
    assert not [p for p in (run_dir.iterdir()) if files.is_temporary(p)]


def test_the_training_task_reports_a_full_disk_in_one_line(monkeypatch, capsys, tmp_path):
    import pytest
    from invoke import Context
    from invoke.exceptions import Exit

    from net import callbacks
    from tasks import ml

    def full(config, run_dir, **kwargs):
        raise callbacks.RunSaveError(f"not enough free space in {run_dir} to save epoch 3")

    monkeypatch.setattr(experiment, "train", full)
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "config.yaml").read_text())
    with pytest.raises(Exit) as info:
        ml.train(Context(), config_path=str(config), run_dir=str(tmp_path / "run"))
    assert info.value.code == 1
    assert str(info.value.message) == (
        f"Training stopped: not enough free space in {tmp_path / 'run'} to save epoch 3"
    )


def test_a_resume_removes_the_leftovers_of_the_killed_process(demo_dataset_root, tmp_path):
    from net import files

    run_dir = tmp_path / "run"
    _fit(demo_dataset_root, run_dir, epochs=1)
    leftovers = [
        run_dir / ".last.keras.4242.tmp.keras",
        run_dir / ".log.csv.4242.tmp",
        run_dir / "state" / ".epoch-0002.weights.h5.4242.tmp.weights.h5",
        run_dir / "state" / "epoch-0002.weights.h5",  # written, never committed
    ]
    other_worker = run_dir / ".workers" / "worker-1" / ".last.keras.77.tmp.keras"
    for path in [*leftovers, other_worker]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    assert _fit(demo_dataset_root, run_dir, epochs=1).epochs_done == 1  # resumes, trains nothing
    for path in leftovers:
        assert not path.exists(), path
    assert other_worker.exists()  # another process's folder is not ours to clean
    assert sorted(p.name for p in (run_dir / "state").iterdir()) == [
        "epoch-0001.weights.h5",
        "state.json",
    ]
    assert not [p for p in run_dir.iterdir() if files.is_temporary(p)]


def test_run_status_complete_in_progress_failed(demo_dataset_root, tmp_path):
    import dataclasses

    import pytest

    from net import runs
    from net.config import ConfigError

    assert runs.run_status(tmp_path) is None  # not a run directory
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.yaml").write_text("data: {}\n")
    assert runs.run_status(legacy) == runs.RUN_FAILED  # only config.yaml: died before epoch 1
    (legacy / "state").mkdir()
    (legacy / "state" / "state.json").write_text("{}")
    assert runs.run_status(legacy) == runs.RUN_IN_PROGRESS
    (legacy / "metrics.json").write_text("{}")
    assert runs.run_status(legacy) == runs.RUN_COMPLETE

    # A run that fails (here: when its model is built) is marked failed, with the reason.
    config = reliability_config(demo_dataset_root)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, feature_layer="no_such_layer")
    )
    run_dir = tmp_path / "failed"
    with pytest.raises(ConfigError):
        experiment.train(config, run_dir, verbose=0)
    assert runs.run_status(run_dir) == runs.RUN_FAILED
    import json

    status = json.loads((run_dir / runs.STATUS_FILE).read_text())
    assert "no_such_layer" in status["message"] and "\n" not in status["message"]
    assert runs.newest_model_run(tmp_path) is None  # a failed run is never "the newest run"
