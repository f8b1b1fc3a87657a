"""End to end through the invoke tasks: train (killed and resumed), analyse, visualise."""

import base64
import csv
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY_DATA, failing_task, run_task

from tasks.collection import ns

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4


@pytest.fixture(scope="module")
def workspace(demo_dataset_root, tmp_path_factory):
    """A configuration file (the demo profile, shrunk) and a finished, once-killed run."""
    root = tmp_path_factory.mktemp("e2e")
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = raw["profiles"]["demo"]
    demo["data"].update(root=str(demo_dataset_root), **TINY_DATA)
    demo["model"]["embedding_dim"] = 32
    demo["training"].update(epochs=EPOCHS, steps_per_epoch=8, schedule={"boundaries": [3]})
    demo["output"]["root"] = str(root / "runs")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = root / "runs" / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [
        sys.executable, "-m", "invoke", "--search-root", str(REPO), "ml.train",
        "--config-path", str(config), "--profile", "demo", "--run-dir", str(run_dir),
        "--set", "evaluation.ks=[1, 2]", "--set", "model.descriptors=GS",
    ]  # fmt: skip
    # Kill -9 the first run as soon as an epoch is committed.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = run_dir / "state" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = json.loads(state.read_text())["epoch"]
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return {"config": config, "run_dir": run_dir, "killed_after": killed_after, "log": resumed}


def test_killed_run_resumes_at_the_next_epoch(workspace):
    run_dir, killed_after = workspace["run_dir"], workspace["killed_after"]
    output = workspace["log"].stdout
    assert 1 <= killed_after < EPOCHS
    assert f"Resuming {run_dir} after epoch {killed_after} of {EPOCHS}." in output
    assert f"Epoch {killed_after + 1}/{EPOCHS}" in output
    assert "Epoch 1/" not in output  # nothing repeated
    # Output to a pipe: one plain line per epoch, no progress bars, no TensorFlow start-up noise.
    epoch_lines = [line for line in output.splitlines() if line.startswith("Epoch ")]
    assert len(epoch_lines) == EPOCHS - killed_after
    assert all(" img/s" in line for line in epoch_lines)
    assert "\x1b[" not in output and "\r" not in output
    assert "absl::InitializeLog" not in output and "cudart_stub" not in output
    rows = (run_dir / "log.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(1, EPOCHS + 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_done"] == EPOCHS
    assert metrics["resumed_from_epoch"] == killed_after
    assert "recall@1" in output  # the metrics table


def test_the_run_saves_the_configuration_with_the_overrides(workspace):
    saved = yaml.safe_load((workspace["run_dir"] / "config.yaml").read_text())
    assert saved["evaluation"]["ks"] == [1, 2]
    assert saved["model"]["descriptors"] == "GS"
    assert saved["model"]["backbone"] == "small_cnn"  # the profile under the overrides
    # The saved file alone reproduces the run's configuration.
    from net.config import config_from_dict, load_config

    expected = load_config(
        workspace["config"], "demo", overrides=["evaluation.ks=[1, 2]", "model.descriptors=GS"]
    )
    assert config_from_dict(saved) == expected
    metrics = json.loads((workspace["run_dir"] / "metrics.json").read_text())["test"]
    assert set(k for k in metrics if k.startswith("recall@")) == {"recall@1", "recall@2"}


def _walk(collection, prefix=""):
    for name, task in collection.tasks.items():
        yield prefix + name, task
    for name, sub in collection.collections.items():
        yield from _walk(sub, f"{prefix}{name}.")


def test_every_task_that_reads_a_configuration_applies_set(capsys):
    """Each task that takes --config-path takes --set and applies it: a bad key stops it with
    the configuration error naming the key."""
    import inspect

    config = REPO / "config.yaml"
    reading = {
        name: task
        for name, task in _walk(ns)
        if "config_path" in inspect.signature(task.body).parameters
    }
    assert {"ml.train", "ml.sweep", "data.check", "demo", "search.index", "docker.run"} <= set(
        reading
    )
    for name, task in reading.items():
        assert "set_" in task.iterable, name
        argv = [name, "--config-path", str(config), "--set", "model.descriptor=S"]
        for param in list(inspect.signature(task.body).parameters.values())[1:]:
            if param.default is inspect.Parameter.empty:
                argv += [f"--{param.name.replace('_', '-')}", REQUIRED_ARGUMENTS[param.name]]
        if name == "docker.run":
            argv.append("--dry-run")
        assert failing_task(*argv) == 2, name
        error = capsys.readouterr().err
        assert f"{config}: --set model.descriptor=S: unknown key model.descriptor" in error, name


def test_a_bad_override_stops_the_task_with_one_line_naming_the_key(workspace, capsys):
    run_task(
        "data.check", "--config-path", str(workspace["config"]), "--profile", "demo",
        "--set", "model.descriptor=S",
    )  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"Configuration error: {workspace['config']}: --set model.descriptor=S:"
    )
    assert "unknown key model.descriptor" in error and "\n" not in error


def test_analyze_model_performance_writes_the_metrics(workspace, tmp_path, capsys):
    output = tmp_path / "analysis.json"
    run_task(
        "analysis.analyze-model-performance",
        "--config-path", str(workspace["config"]), "--profile", "demo",
        "--model-path", str(workspace["run_dir"]), "--output-path", str(output),
    )  # fmt: skip
    metrics = json.loads(output.read_text())
    expected = {"recall@1", "recall@2", "precision@1", "r_precision", "map@r"}
    assert expected | {"num_queries", "embedding_dim", "average_ranking_position"} <= set(metrics)
    # Printed next to Recall@K, as a rank: at least (R + 1) / 2 = 3 (the demo's classes hold 6
    # images, R = 5) and below the number of test images.
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("average_ranking"))
    assert row.split()[-1] == f"{metrics['average_ranking_position']:.2f}"
    assert 3.0 <= metrics["average_ranking_position"] < metrics["num_queries"]
    assert metrics["embedding_dim"] == 32
    assert metrics["precision@1"] == metrics["recall@1"]
    # Same numbers as the run's own test evaluation of best.keras.
    run_metrics = json.loads((workspace["run_dir"] / "metrics.json").read_text())["test"]
    assert metrics["map@r"] == pytest.approx(run_metrics["map@r"], abs=1e-6)


def test_several_models_compare_in_one_table(workspace, tmp_path, capsys):
    run_dir = workspace["run_dir"]
    output = tmp_path / "comparison.json"
    run_task(
        "analysis.analyze-model-performance",
        "--config-path", str(workspace["config"]), "--profile", "demo",
        "--model-path", f"{run_dir / 'best.keras'},{run_dir / 'last.keras'}",
        "--output-path", str(output),
    )  # fmt: skip
    table = capsys.readouterr().out
    assert "best.keras" in table and "last.keras" in table and "map@r" in table
    results = json.loads(output.read_text())
    assert sorted(Path(name).name for name in results) == ["best.keras", "last.keras"]


def test_separate_query_and_gallery_sets(workspace, demo_dataset_root, tmp_path):
    """In-shop style: CSV manifests of queries and gallery (every test image's first two per
    class are queries, the rest gallery), compared by class name across the two files."""
    from net.data import read_cars196

    records = read_cars196(demo_dataset_root)
    test = records.subset(records.labels >= records.labels.max() // 2 + 1)
    rows = {"queries": [], "gallery": []}
    seen = {}
    for path, label in zip(test.paths, test.labels, strict=True):
        seen[label] = seen.get(label, 0) + 1
        name = test.class_names[label]
        rows["queries" if seen[label] <= 2 else "gallery"].append((path, name))
    for kind, lines in rows.items():
        with open(tmp_path / f"{kind}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([("path", "label"), *lines])  # names hold commas
    output = tmp_path / "inshop.json"
    run_task(
        "analysis.analyze-model-performance",
        "--config-path", str(workspace["config"]), "--profile", "demo",
        "--model-path", str(workspace["run_dir"]),
        "--queries", str(tmp_path / "queries.csv"), "--gallery", str(tmp_path / "gallery.csv"),
        "--output-path", str(output),
    )  # fmt: skip
    metrics = json.loads(output.read_text())
    assert metrics["num_queries"] == len(rows["queries"])
    # Brute force: every query against every gallery image, classes compared by name.
    from net import experiment
    from net.config import load_config
    from net.data import read_dataset

    config = load_config(workspace["config"], profile="demo")
    model = experiment.load_model(workspace["run_dir"])
    sets = {}
    for kind in rows:
        kind_records = read_dataset("csv", tmp_path / f"{kind}.csv")
        embeddings, labels = experiment.embed(model, kind_records, config.data, progress=False)
        sets[kind] = (embeddings, np.array(kind_records.class_names)[labels])
    (q, q_names), (g, g_names) = sets["queries"], sets["gallery"]
    distances = ((q[:, None] - g[None]) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1, kind="stable")
    for k in (1, 2):
        hits = (g_names[nearest[:, :k]] == q_names[:, None]).any(axis=1).mean()
        assert metrics[f"recall@{k}"] == pytest.approx(hits, abs=1e-9)


def test_visualisation_tasks_write_pngs_and_self_contained_pages(workspace, tmp_path):
    common = ["--config-path", str(workspace["config"]), "--profile", "demo"]
    model = ["--model-path", str(workspace["run_dir"])]
    run_task("visualize.visualize-data", *common, "--output-dir", str(tmp_path))
    run_task("visualize.visualize-predictions-on-batches", *common, *model,
             "--output-dir", str(tmp_path))  # fmt: skip
    run_task("visualize.visualize-predictions-on-dataset", *common, *model,
             "--output-dir", str(tmp_path), "--queries", "3")  # fmt: skip
    run_task("visualize.visualize-training", *common, "--run-dir", str(workspace["run_dir"]),
             "--output-dir", str(tmp_path))  # fmt: skip
    pages = sorted(p.name for p in tmp_path.glob("*.html"))
    assert pages == [
        "rankings_on_batches.html",
        "rankings_on_dataset.html",
        "training_batches.html",
        "training_curves.html",
    ]
    assert len(list(tmp_path.glob("*.png"))) >= 4
    for page in tmp_path.glob("*.html"):
        sources = re.findall(r'src="([^"]*)"', page.read_text())
        assert sources, page
        for source in sources:
            assert source.startswith("data:image/png;base64,"), (page, source[:40])
            assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_embeddings_writes_the_projector_files_into_the_runs_tensorboard(workspace):
    """The test split's embeddings (those of best.keras), one metadata row per test image with
    the data set's class number, and a sprite, read back as the projector reads them."""
    from net import experiment, projector
    from net.config import load_config

    run_dir = workspace["run_dir"]
    run_task(
        "analysis.export-embeddings", "--config-path", str(workspace["config"]),
        "--profile", "demo", "--model-path", str(run_dir), "--thumbnail-size", "16",
    )  # fmt: skip
    back = projector.read_projector(run_dir / "tensorboard" / "projector")
    config = load_config(workspace["config"], profile="demo")
    test = experiment.load_splits(config.data).test
    embeddings, labels = experiment.embed(
        experiment.load_model(run_dir), test, config.data, progress=False
    )
    np.testing.assert_allclose(back.embeddings, embeddings, atol=1e-6)
    assert len(back.metadata) == len(test)
    first = back.metadata[0]
    assert first[0] == str(labels[0] + 1)  # Cars196 numbers its classes from 1.
    assert first[1] == test.class_names[labels[0]]
    assert first[2].startswith("car_ims/")
    columns = int(np.ceil(np.sqrt(len(test))))
    assert back.sprite.shape == (16 * columns, 16 * columns, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"descriptors": "SQ"}}, "model.descriptors: 'SQ' has 'Q'"),
        ({"data": {"classes_per_batch": 200}}, "P = 200 classes per batch"),
        ({"training": {"epochz": 3}}, "unknown key training.epochz"),
    ],
)
def test_configuration_errors_stop_the_task_with_the_key(workspace, tmp_path, change, message):
    raw = yaml.safe_load(workspace["config"].read_text())
    for section, values in change.items():
        raw[section].update(values)
    if "classes_per_batch" in change.get("data", {}):
        raw["data"]["num_train_classes"] = 98
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    completed = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "ml.train",
         "--config-path", str(bad)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert completed.returncode == 2
    assert f"Configuration error: {bad}: " in completed.stderr
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_wrong_feature_layer_stops_training_with_one_line(workspace, tmp_path, capsys):
    raw = yaml.safe_load(workspace["config"].read_text())
    raw["profiles"]["demo"]["model"]["feature_layer"] = "stage3_b_rleu"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    code = failing_task(
        "ml.train", "--config-path", str(bad), "--profile", "demo",
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"Configuration error: {bad} (profile demo): model.feature_layer: ")
    assert "'stage3_b_rleu'" in error and "close names: stage3_b_relu" in error
    assert "\n" not in error


#: Tasks that read no configuration file.
NO_CONFIG_TASKS = {
    "docker.build-app-base-container",
    "docker.build-app-container",
    "analysis.compare-sweep",  # reads a sweep's folder (its runs' saved files)
}
#: Placeholder values for the required arguments of the tasks (never reached).
REQUIRED_ARGUMENTS = {
    "model_path": "no-model",
    "images": "no-images",
    "index": "no-index",
    "image": "no-image.jpg",
}


def _task_names(collection, prefix=""):
    for name in collection.tasks:
        yield prefix + name
    for name, sub in collection.collections.items():
        yield from _task_names(sub, f"{prefix}{name}.")


def test_every_task_that_reads_a_configuration_takes_config_path(tmp_path, capsys):
    """The seed passes --config-path to every task: each task that reads a configuration takes
    it and reads that file (an unreadable YAML file stops it, naming the file)."""
    bad = tmp_path / "broken.yaml"
    bad.write_text("data: [unclosed\n")
    checked = []
    for name in _task_names(ns):
        if name.split(".")[0] in ("bench", "tests") or name in NO_CONFIG_TASKS:
            continue
        body = ns[name].body
        params = list(inspect.signature(body).parameters.values())[1:]
        argv = [name, "--config-path", str(bad)]
        for param in params:
            if param.default is inspect.Parameter.empty:
                argv += [f"--{param.name.replace('_', '-')}", REQUIRED_ARGUMENTS[param.name]]
        if name == "docker.run":
            argv.append("--dry-run")
        code = failing_task(*argv)
        error = capsys.readouterr().err
        assert code not in (0, None), name
        assert str(bad) in error and "Traceback" not in error, (name, error)
        checked.append(name)
    assert {
        "ml.train",
        "analysis.analyze-model-performance",
        "visualize.visualize-predictions-on-batches",
        "visualize.visualize-predictions-on-dataset",
        "visualize.visualize-data",
        "visualize.visualize-training",
        "data.check",
        "search.index",
        "demo",
        "docker.run",
    } <= set(checked)


def test_the_seed_commands_run_without_a_model_path(workspace, capsys):
    """The seed's README commands, as written (no --model-path), after `invoke ml.train
    --profile demo`: each takes the newest run with a best.keras under output.root, says so,
    and writes its output there."""
    common = ["--config-path", str(workspace["config"]), "--profile", "demo"]
    root = workspace["run_dir"].parent
    runs = [path.parent for path in root.glob("*/best.keras")]
    newest = max(runs, key=lambda run: run.stat().st_mtime)
    for command in (
        "analysis.analyze-model-performance",
        "visualize.visualize-predictions-on-batches",
        "visualize.visualize-predictions-on-dataset",
    ):
        run_task(command, *common)
        printed = capsys.readouterr().out
        assert f"Model: {newest / 'best.keras'} (the newest run with a best.keras)" in printed
    assert (newest / "analysis.json").is_file()
    for page in ("rankings_on_batches.html", "rankings_on_dataset.html"):
        assert (newest / "figures" / page).is_file()
