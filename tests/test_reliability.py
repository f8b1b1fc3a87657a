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
