"""The cub200, sop and inshop profiles end to end on official-format fixtures, at 32 px.

Each profile of config.yaml is used as it is, except for the fixture's root and class counts
and what makes it cheap (small_cnn, 32 px, two training steps); the test checks that
``data.check`` reports the splits, that ``ml.train`` trains and tests with the profile's
Recall@K set, and that In-shop's queries are searched in its gallery with no flags.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_task
from official_layouts import write_cub200, write_inshop, write_sop

REPO = Path(__file__).resolve().parents[1]

# Fixture per profile: the writer and the number of training classes it writes.
FIXTURES = {
    "cub200": (lambda root: write_cub200(root, images_per_class=5), 2),  # test: 10 images
    "sop": (lambda root: write_sop(root, test_sizes=[3] * 334), 4),  # test: 1,002 images
    "inshop": (lambda root: write_inshop(root, test_items=26), 3),  # gallery: 52 images
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A configuration whose three profiles point at the fixtures, made cheap."""
    root = tmp_path_factory.mktemp("profiles")
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    for name, (writer, num_train_classes) in FIXTURES.items():
        writer(root / name)
        profile = raw["profiles"][name]
        profile["data"].update(
            root=str(root / name),
            num_train_classes=num_train_classes,
            num_val_classes=0,
            image_size=32,
            classes_per_batch=2,
            eval_batch_size=128,
        )
        profile["model"] = {
            **profile.get("model", {}),
            "backbone": "small_cnn",
            "weights": None,
            "last_stride": 2,
            "embedding_dim": 32,
        }
        profile["training"].update(epochs=1, steps_per_epoch=2)
        profile["output"]["root"] = str(root / "runs" / name)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return {"root": root, "config": config, "raw": raw}


@pytest.mark.parametrize("profile", sorted(FIXTURES))
def test_profile_checks_trains_and_tests_with_its_recall_set(workspace, profile, capsys):
    config = str(workspace["config"])
    run_task("data.check", "--config-path", config, "--profile", profile)
    report = capsys.readouterr().out
    assert f"Data set: {profile} at {workspace['root'] / profile}" in report
    assert "DIFFERS" in report  # a fixture is not the official data set
    assert "Read and checked" in report

    run_dir = workspace["root"] / "runs" / profile / "run"
    run_task("ml.train", "--config-path", config, "--profile", profile, "--run-dir", str(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ks = workspace["raw"]["profiles"][profile]["evaluation"]["ks"]
    recalls = sorted(int(key[7:]) for key in metrics["test"] if key.startswith("recall@"))
    assert recalls == ks
    assert metrics["steps_per_epoch"] == 2 and metrics["epochs_done"] == 1
    log = [line.split(",") for line in (run_dir / "log.csv").read_text().splitlines()]
    assert len(log) == 2  # header and the one epoch


def _loop_recall(queries, query_labels, gallery, gallery_labels, ks):
    """Recall@K by plain loops: sort each query's distances to the whole gallery."""
    hits = {k: 0 for k in ks}
    for query, label in zip(queries, query_labels, strict=True):
        distances = [float(np.sum((query - item) ** 2)) for item in gallery]
        order = sorted(range(len(gallery)), key=lambda i: (distances[i], i))
        for k in ks:
            hits[k] += any(gallery_labels[i] == label for i in order[:k])
    return {k: hits[k] / len(queries) for k in ks}


def test_inshop_is_evaluated_query_to_gallery_with_no_flags(workspace, capsys):
    config = str(workspace["config"])
    run_dir = workspace["root"] / "runs" / "inshop" / "run"
    if not (run_dir / "best.keras").exists():
        pytest.skip("needs the inshop training run of the test above")
    output = workspace["root"] / "inshop_analysis.json"
    run_task(
        "analysis.analyze-model-performance", "--model-path", str(run_dir),
        "--config-path", config, "--profile", "inshop", "--output-path", str(output),
    )  # fmt: skip
    metrics = json.loads(output.read_text())
    assert metrics["num_queries"] == 52 and metrics["num_gallery"] == 52

    from net import experiment
    from net.config import load_config

    loaded = load_config(workspace["config"], "inshop")
    test = experiment.load_splits(loaded.data).test
    model = experiment.load_model(run_dir)
    query_embeddings, query_labels = experiment.embed(model, test.queries(), loaded.data, False)
    gallery_embeddings, gallery_labels = experiment.embed(model, test.gallery(), loaded.data, False)
    expected = _loop_recall(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, loaded.evaluation.ks
    )
    for k, value in expected.items():
        assert metrics[f"recall@{k}"] == pytest.approx(value, abs=1e-9)


def test_sop_scale_benchmark_runs_on_tiny_sizes(capsys):
    """The benchmark's two parts at tiny sizes: the synthetic layout passes the real reader
    with the official class counts it was asked for, and the evaluation's recalls rise with K."""
    from benchmarks import sop

    results = sop.main(["--quick", "--methods", "exact"])
    assert results["check_images"] == 1100
    recalls = [results["exact"]["metrics"][f"recall@{k}"] for k in (1, 10, 100)]
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("bounds (issue 13): ")
