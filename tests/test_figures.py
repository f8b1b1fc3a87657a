"""Tests for net.figures: what the visualisation tasks put on their pages."""

import html
from pathlib import Path

import yaml

from net import figures
from net.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, root, augment):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["profiles"]["demo"]["data"].update(
        root=str(root), image_size=32, classes_per_batch=2, images_per_class=2, augment=augment
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, profile="demo")


def test_training_batches_show_the_configured_augmentations(tmp_path, demo_dataset_root):
    augment = {"flip": 0, "rotate": 10, "grayscale": 0.5}
    out = tmp_path / "with"
    page = figures.training_batches(_config(tmp_path, demo_dataset_root, augment), out, seed=1)
    text = html.unescape(page.read_text())
    assert "rotate: [-10, 10] degrees, p = 1" in text and "grayscale: [0.2, 1]" in text
    assert "flip" not in text.split("Augmentation")[1]  # flip 0 is off, so not listed
    assert (out / "augmentation_operations.png").is_file()
    assert len(list(out.glob("training_batch_*.png"))) == 2
    off = tmp_path / "without"
    page = figures.training_batches(_config(tmp_path, demo_dataset_root, False), off, seed=1)
    assert "Augmentation (data.augment): off" in html.unescape(page.read_text())
    assert not (off / "augmentation_operations.png").exists()
