"""The tasks' edges, through invoke: the default model (the newest run), the run's own data
settings and figures folder, and bad input stopped in one line (no traceback, non-zero exit)."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from helpers import failing_task, run_task

REPO = Path(__file__).resolve().parents[1]

#: The cheap demo run: trained at 32 px without crops, evaluated by tasks whose demo profile
#: says 64 px and bounding-box crops.
TRAIN_SETTINGS = [
    "training.epochs=1", "training.steps_per_epoch=2", "data.image_size=32", "data.crop=none",
    "data.classes_per_batch=2", "data.images_per_class=2", "data.eval_batch_size=16",
    "model.embedding_dim=16",
]  # fmt: skip


def _config(root: Path, dataset: Path, runs: Path) -> Path:
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["profiles"]["demo"]["data"]["root"] = str(dataset)
    raw["profiles"]["demo"]["output"]["root"] = str(runs)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def trained(demo_dataset_root, tmp_path_factory):
    """``ml.train --profile demo`` (shrunk with --set) and the run it made."""
    root = tmp_path_factory.mktemp("edges")
    config = _config(root, demo_dataset_root, root / "runs")
    sets = [arg for setting in TRAIN_SETTINGS for arg in ("--set", setting)]
    run_task("ml.train", "--config-path", str(config), "--profile", "demo", *sets)
    (run,) = [p for p in (root / "runs").iterdir() if (p / "best.keras").is_file()]
    return {"config": config, "run": run, "root": root, "common": [
        "--config-path", str(config), "--profile", "demo"]}  # fmt: skip


def test_analysis_defaults_to_the_newest_run_and_uses_its_data_settings(trained, capsys):
    run = trained["run"]
    run_task("analysis.analyze-model-performance", *trained["common"])
    out = capsys.readouterr().out
    assert f"Model: {run / 'best.keras'} (the newest run with a best.keras)" in out
    assert f"Data settings of the run ({run / 'config.yaml'}):" in out
    assert "data.image_size 64, the run 32; using the run's" in out
    assert "data.crop 'bbox', the run 'none'; using the run's" in out
    metrics = json.loads((run / "analysis.json").read_text())
    # The run's own test evaluation (32 px, no crop) gives the same numbers.
    expected = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["map@r"] == pytest.approx(expected["map@r"], abs=1e-6)
    assert metrics["recall@1"] == pytest.approx(expected["recall@1"], abs=1e-6)


def test_figures_default_to_the_newest_run_and_go_to_its_figures_folder(trained, tmp_path):
    run = trained["run"]
    run_task("visualize.visualize-predictions-on-batches", *trained["common"], "--batches", "1")
    run_task("visualize.visualize-predictions-on-dataset", *trained["common"], "--queries", "2")
    pages = sorted(p.name for p in (run / "figures").glob("*.html"))
    assert pages == ["rankings_on_batches.html", "rankings_on_dataset.html"]
    assert not (trained["root"] / "runs" / "figures").exists()
    run_task("visualize.visualize-predictions-on-dataset", *trained["common"],
             "--queries", "2", "--output-dir", str(tmp_path))  # fmt: skip
    assert (tmp_path / "rankings_on_dataset.html").is_file()


def test_search_index_defaults_to_the_newest_run(trained, demo_dataset_root, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((demo_dataset_root / "car_ims").iterdir())[:3]:
        shutil.copy(path, images)
    run_task("search.index", *trained["common"], "--images", str(images))
    out = capsys.readouterr().out
    assert f"Model: {trained['run'] / 'best.keras'} (the newest run" in out
    assert "Indexed 3 images" in out and "32 px, crop none" in out


def _one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Traceback" not in error, error
    return error


@pytest.mark.parametrize(
    "task",
    [
        "analysis.analyze-model-performance",
        "visualize.visualize-predictions-on-batches",
        "visualize.visualize-predictions-on-dataset",
        "search.index",
        "visualize.visualize-training",
    ],
)
def test_no_run_is_one_line_saying_how_to_train_one(demo_dataset_root, tmp_path, capsys, task):
    config = _config(tmp_path, demo_dataset_root, tmp_path / "runs")
    (tmp_path / "runs" / "failed").mkdir(parents=True)
    (tmp_path / "runs" / "failed" / "config.yaml").write_text("{}")
    extra = ["--images", str(tmp_path)] if task == "search.index" else []
    code = failing_task(task, "--config-path", str(config), "--profile", "demo", *extra)
    assert code == 1
    error = _one_line_error(capsys)
    assert f"no run under {tmp_path / 'runs'}" in error and "invoke ml.train" in error


def test_a_good_then_a_bad_model_reports_the_good_one_then_the_error(trained, tmp_path, capsys):
    output = tmp_path / "analysis.json"
    code = failing_task(
        "analysis.analyze-model-performance", *trained["common"],
        "--model-path", f"{trained['run']},{tmp_path / 'missing.keras'}",
        "--output-path", str(output),
    )  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "map@r" in captured.out  # the first model's table
    assert json.loads(output.read_text())["map@r"] >= 0
    error = captured.err.strip().splitlines()[-1]  # after the first model's progress bars
    assert error == f"Analysis stopped: no saved model at {tmp_path / 'missing.keras'}"


@pytest.mark.parametrize("task", ["analysis.analyze-model-performance",
                                  "visualize.visualize-predictions-on-dataset"])  # fmt: skip
def test_a_folder_without_best_keras_is_one_line(trained, tmp_path, capsys, task):
    code = failing_task(task, *trained["common"], "--model-path", str(tmp_path))
    assert code == 1
    assert f"{tmp_path} is a folder without a best.keras" in _one_line_error(capsys)


def test_split_val_without_validation_classes_is_one_line(trained, capsys):
    code = failing_task(
        "analysis.analyze-model-performance", *trained["common"],
        "--split", "val", "--set", "data.num_val_classes=0",
    )  # fmt: skip
    assert code == 1
    error = _one_line_error(capsys)
    assert error.startswith("Analysis stopped: the val split is empty: data.num_val_classes is 0")


def test_an_image_size_other_than_the_models_is_one_line(trained, capsys):
    code = failing_task(
        "analysis.analyze-model-performance", *trained["common"], "--set", "data.image_size=48"
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "data.image_size is 48 (--set) but the run was trained with 32" in captured.out
    error = captured.err.strip()
    assert "\n" not in error
    assert error.endswith(
        "takes 32x32 images but data.image_size is 48; evaluate it at its size "
        "(--set data.image_size=32)"
    )


def _foreign(path: Path, size: int, output: str) -> Path:
    inputs = keras.Input((size, size, 3), name="images")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, {output: keras.layers.Dense(4, name=output)(pooled)}).save(path)
    return path


@pytest.mark.parametrize(
    ("size", "output", "message"),
    [
        (224, "embeddings", "takes 224x224 images but data.image_size is 64"),
        (64, "logits", "has no 'embeddings' output (outputs: logits)"),
    ],
)
def test_a_foreign_model_is_refused_in_one_line(trained, tmp_path, capsys, size, output, message):
    model = _foreign(tmp_path / "foreign.keras", size, output)
    tasks = ("analysis.analyze-model-performance", "visualize.visualize-predictions-on-batches")
    for task in tasks:
        code = failing_task(task, *trained["common"], "--model-path", str(model))
        assert code == 1
        assert message in _one_line_error(capsys)


def test_a_corrupt_keras_file_is_not_reported_as_missing(trained, tmp_path, capsys):
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    code = failing_task("analysis.analyze-model-performance", *trained["common"],
                        "--model-path", str(bad))  # fmt: skip
    assert code == 1
    error = _one_line_error(capsys)
    assert f"cannot load the model {bad}: not a .keras file" in error
    assert "not found" not in error


def test_visualize_training_skips_a_failed_newest_run(trained, tmp_path, capsys):
    failed = trained["root"] / "runs" / "zz-failed"
    failed.mkdir()
    (failed / "config.yaml").write_text("{}")
    try:
        run_task("visualize.visualize-training", *trained["common"], "--output-dir", str(tmp_path))
        assert f"Run: {trained['run']}" in capsys.readouterr().out
        assert (tmp_path / "training_curves.html").is_file()
        code = failing_task("visualize.visualize-training", *trained["common"],
                            "--run-dir", str(failed))  # fmt: skip
        assert code == 1
        assert f"{failed} has no log.csv" in _one_line_error(capsys)
    finally:
        shutil.rmtree(failed)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.classes_per_batch=3", "data.classes_per_batch: P = 3 classes per batch, but only 2"),
        ("data.num_val_classes=4", "data.num_val_classes must lie in [0, 3]"),
        ("data.root=nowhere", "Data set not found: "),
    ],
)
def test_classes_that_do_not_fit_stop_training_in_one_line_leaving_no_run(
    demo_dataset_root, tmp_path, capsys, setting, message
):
    """num_train_classes null: the counts are known only once the data set is read."""
    config = _config(tmp_path, demo_dataset_root, tmp_path / "runs")
    code = failing_task("ml.train", "--config-path", str(config), "--profile", "demo",
                        "--set", setting)  # fmt: skip
    assert code == 1
    output = capsys.readouterr()
    error = output.err.strip()
    assert "\n" not in error and "Traceback" not in error, error
    assert error.startswith("Training stopped: ") and message in error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert "Run directory" not in output.out  # no directory named that is never made


class _RunsCode:
    """Unpickling this would call print(): what a malicious checkpoint does with os.system."""

    def __reduce__(self):
        return print, ("pwned",)


def test_an_unsafe_checkpoint_as_model_weights_is_one_line(demo_dataset_root, tmp_path, capsys):
    import collections
    import pickle
    import zipfile

    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as archive:
        graph = collections.OrderedDict({"stem.weight": _RunsCode()})
        archive.writestr("archive/data.pkl", pickle.dumps(graph, protocol=2))
    config = _config(tmp_path, demo_dataset_root, tmp_path / "runs")
    code = failing_task(
        "ml.train", "--config-path", str(config), "--profile", "demo",
        "--set", "model.backbone=efficientnet_lite0", "--set", f"model.weights={evil}",
        "--set", "data.image_size=32", "--set", "data.classes_per_batch=2",
    )  # fmt: skip
    assert code == 2
    error = _one_line_error(capsys)
    assert error.startswith(f"Configuration error: {config} (profile demo) with --set ")
    assert f"model.weights: {evil}: refusing to load global '" in error and "print'" in error


@pytest.mark.parametrize("skip", [False, True])
def test_a_jpeg_corrupt_inside_its_data_is_named_when_training_stops(
    demo_dataset_root, tmp_path, capsys, skip
):
    """decode_check false (the default): the header and end marker are fine, so the up-front
    check passes, and TensorFlow's decoder stops the pipeline without naming the file."""
    dataset = tmp_path / "data"
    shutil.copytree(demo_dataset_root, dataset)
    bad = sorted((dataset / "car_ims").iterdir())[-1]  # a test-class image
    content = bytearray(bad.read_bytes())
    table = content.find(b"\xff\xc4")
    content[table + 5 : table + 21] = b"\xff" * 16
    bad.write_bytes(bytes(content))
    config = _config(tmp_path, dataset, tmp_path / "runs")
    sets = [arg for setting in TRAIN_SETTINGS for arg in ("--set", setting)]
    code = failing_task(
        "ml.train", "--config-path", str(config), "--profile", "demo", *sets,
        "--set", f"data.skip_bad_images={str(skip).lower()}",
    )  # fmt: skip
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(
        f"Training stopped: {bad}: not a decodable image (TensorFlow: jpeg::Uncompress failed"
    )
    assert "data.decode_check: true" in error


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.root=nowhere", "Data set not found: "),
        ("data.classes_per_batch=3", "data.classes_per_batch: P = 3 classes per batch"),
    ],
)
def test_visualize_data_stops_in_one_line(demo_dataset_root, tmp_path, capsys, setting, message):
    config = _config(tmp_path, demo_dataset_root, tmp_path / "runs")
    code = failing_task("visualize.visualize-data", "--config-path", str(config),
                        "--profile", "demo", "--set", setting)  # fmt: skip
    assert code == 1
    error = _one_line_error(capsys)
    assert error.startswith("Figure stopped: ") and message in error


def test_data_check_does_not_compare_the_demo_data_with_the_official_counts(
    demo_dataset_root, tmp_path, capsys
):
    """The generated demo set has Cars196's format but not its counts: no "DIFFERS"."""
    config = _config(tmp_path, demo_dataset_root, tmp_path / "runs")
    run_task("data.check", "--config-path", str(config), "--profile", "demo")
    report = capsys.readouterr().out
    assert "the generated demo data set" in report
    assert "DIFFERS" not in report and "8,054" not in report


@pytest.mark.parametrize(
    ("task", "patched", "stopped"),
    [
        ("analysis.analyze-model-performance", "net.experiment.evaluate", "Analysis stopped"),
        ("visualize.visualize-predictions-on-dataset", "net.figures.rankings_on_dataset",
         "Figure stopped"),
    ],
)  # fmt: skip
def test_an_ivf_search_short_of_neighbours_is_one_line(
    trained, tmp_path, capsys, monkeypatch, task, patched, stopped
):
    """evaluation.method: faiss_ivf with too small an evaluation.nprobe (the demo's test set is
    too small for IVF cells, so the search's own error is raised here; its raising is tested in
    tests/test_neighbours.py)."""
    from net.neighbours import TooFewNeighboursError

    def short(*args, **kwargs):
        raise TooFewNeighboursError("the ivf index found fewer than k=100 neighbours for query 0")

    monkeypatch.setattr(patched, short)
    code = failing_task(task, *trained["common"], "--output-dir" if "visualize" in task
                        else "--output-path", str(tmp_path / "out"))  # fmt: skip
    assert code == 1
    error = _one_line_error(capsys)
    assert error == f"{stopped}: the ivf index found fewer than k=100 neighbours for query 0"
