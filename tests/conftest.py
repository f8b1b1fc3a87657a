"""Shared test fixtures: a small demo data set generated once per test session."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from net.demo_data import generate_demo_dataset  # noqa: E402

#: Size of the shared demo data set: 8 classes x 6 images, 64-96 px (about 0.2 s to write).
DEMO_NUM_CLASSES = 8
DEMO_IMAGES_PER_CLASS = 6


@pytest.fixture(scope="session")
def demo_dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Cars196-format demo data set (``cars_annos.mat`` + ``car_ims/``), shared read-only."""
    return generate_demo_dataset(
        tmp_path_factory.mktemp("demo_data"),
        num_classes=DEMO_NUM_CLASSES,
        images_per_class=DEMO_IMAGES_PER_CLASS,
        seed=0,
        min_size=64,
        max_size=96,
    )
