"""Tests for net.figures: what the visualisation tasks put on their pages."""

import dataclasses
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


def test_rankings_on_batches_rank_whole_p_by_k_batches_of_test_classes(
    tmp_path, demo_dataset_root, monkeypatch
):
    """The seed's figure: each batch holds P = 3 test classes x K = 2 images; one query per batch
    and the other 5 images ranked by distance; the title's average ranking position is the mean
    1-based rank of the query's same-class images, recomputed here in a plain loop."""
    import numpy as np

    from net import experiment, visualize

    config = _config(tmp_path, demo_dataset_root, False)
    data = dataclasses.replace(config.data, classes_per_batch=3)
    config = dataclasses.replace(config, data=data)
    test = experiment.load_splits(config.data).test
    model = experiment.build_model(config.model, image_size=32, num_classes=0)
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    drawn = []
    real = visualize.plot_batch_ranking

    def spy(query_image, query_label, images, labels, distances, path, **kwargs):
        drawn.append((query_label, np.asarray(labels), np.asarray(distances), kwargs["title"]))
        return real(query_image, query_label, images, labels, distances, path, **kwargs)

    monkeypatch.setattr(visualize, "plot_batch_ranking", spy)
    page = figures.rankings_on_batches(config, model_path, tmp_path / "out", num_batches=2)
    assert len(drawn) == 2 and len(list((tmp_path / "out").glob("ranking_batch_*.png"))) == 2
    notes = html.unescape(page.read_text())
    for query_label, labels, distances, title in drawn:
        assert len(labels) == 3 * 2 - 1  # the whole batch but the query
        batch = np.append(labels, query_label)
        assert len(set(batch)) == 3 and all((batch == c).sum() == 2 for c in set(batch))
        assert set(batch) <= set(np.unique(test.labels))
        assert np.all(np.diff(distances) >= 0)  # nearest first
        ranks = [rank for rank, label in enumerate(labels, start=1) if label == query_label]
        expected = f"average ranking position {sum(ranks) / len(ranks):.2f}"
        assert expected in title and expected in notes
