"""Nothing lost, nothing silently wrong: skipped data, kills, a full disk, run states."""

import logging
from pathlib import Path

import cv2
import numpy as np

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
    with caplog.at_level(logging.WARNING, logger="net.data"):
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
    data_config = dataclasses.replace(
        config.data,
        root=str(root),
        image_size=32,
        num_val_classes=2,
        classes_per_batch=2,
        images_per_class=2,
        eval_batch_size=16,
        cache=False,
    )
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

    from net import callbacks

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
    assert callbacks.run_status(run_dir) == callbacks.RUN_IN_PROGRESS

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
    assert callbacks.run_status(run_dir) == callbacks.RUN_COMPLETE
    # One numbering: best_epoch is a log.csv epoch, the one with the highest val_map@r.
    rows = _log_rows(run_dir)
    best = max(rows, key=lambda row: float(row["val_map@r"]))
    assert int(best["epoch"]) == resumed["best_epoch"]
