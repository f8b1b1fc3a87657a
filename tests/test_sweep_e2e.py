"""A real 2 x 2 sweep through ``invoke ml.sweep``: killed after its first run, started again."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: The smallest training that still trains and tests: 32 px, one epoch of one P x K batch.
TINY = [
    "data.image_size=32", "data.classes_per_batch=2", "data.images_per_class=2",
    "data.num_val_classes=0", "data.eval_batch_size=32", "model.embedding_dim=16",
    "training.epochs=1", "training.steps_per_epoch=1", "evaluation.ks=[1, 2]",
]  # fmt: skip
GRID = ["model.descriptors=S,MG", "loss.auxiliary_weight=0,1"]
RUNS = [
    "descriptors=S+auxiliary_weight=0",
    "descriptors=S+auxiliary_weight=1",
    "descriptors=MG+auxiliary_weight=0",
    "descriptors=MG+auxiliary_weight=1",
]


def test_killed_sweep_restarts_without_training_a_finished_run_twice(demo_dataset_root, tmp_path):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["profiles"]["demo"]["data"]["root"] = str(demo_dataset_root)
    raw["profiles"]["demo"]["output"]["root"] = str(tmp_path / "runs")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    command = [
        sys.executable, "-m", "invoke", "--search-root", str(REPO), "ml.sweep",
        "--config-path", str(config), "--profile", "demo", "--name", "grid",
        *[arg for item in TINY for arg in ("--set", item)],
        *[arg for item in GRID for arg in ("--grid", item)],
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    sweep_dir = tmp_path / "runs" / "sweeps" / "grid"
    first = sweep_dir / RUNS[0]

    # Start, and kill -9 the whole job (the sweep and its run) once the first run has finished.
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 300
    record_path = sweep_dir / "sweep.json"

    def status(name):
        return json.loads(record_path.read_text())["runs"][name]["status"]

    while not (record_path.exists() and status(RUNS[1]) == "running"):
        assert process.poll() is None and time.monotonic() < deadline, "the first run stalled"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    stamp = (first / "metrics.json").stat().st_mtime_ns
    assert [status(name) for name in RUNS] == ["finished", "running", "pending", "pending"]

    # The same command again: the first run is skipped, the others are trained (two at a time,
    # each told its own GPU, which saves time on two cores too).
    restarted = subprocess.run(
        [*command, "--parallel", "2"], env=env, capture_output=True, text=True, timeout=600
    )
    output = restarted.stdout + restarted.stderr
    assert restarted.returncode == 0, output[-3000:]
    assert f"[sweep] {RUNS[0]}: finished before, skipped" in output
    assert f"[sweep] {RUNS[1]}: started on GPU 0" in output
    assert f"[sweep] {RUNS[2]}: started on GPU 1" in output
    assert (first / "metrics.json").stat().st_mtime_ns == stamp  # not trained (or tested) again
    assert (first / "sweep.log").read_text().count("Run directory: ") == 1
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert {name: entry["status"] for name, entry in record["runs"].items()} == dict.fromkeys(
        RUNS, "finished"
    )

    # Each run's saved configuration holds its settings over the shared overrides.
    saved = yaml.safe_load((sweep_dir / RUNS[3] / "config.yaml").read_text())
    assert saved["model"]["descriptors"] == "MG" and saved["loss"]["auxiliary_weight"] == 1
    assert saved["data"]["image_size"] == 32 and saved["model"]["backbone"] == "small_cnn"

    # One table of four rows, settings first, sorted by test MAP@R.
    with open(sweep_dir / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    header = list(rows[0])
    assert header[:2] == ["model.descriptors", "loss.auxiliary_weight"]
    assert {"recall@1", "recall@2", "map@r", "time (s)", "images/s", "parameters"} <= set(header)
    assert sorted((r["model.descriptors"], r["loss.auxiliary_weight"]) for r in rows) == sorted(
        [("S", "0"), ("S", "1"), ("MG", "0"), ("MG", "1")]
    )
    scores = [float(row["map@r"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    for row in rows:
        settings = (row["model.descriptors"], row["loss.auxiliary_weight"])
        name = "descriptors={}+auxiliary_weight={}".format(*settings)
        metrics = json.loads((sweep_dir / name / "metrics.json").read_text())
        assert float(row["map@r"]) == metrics["test"]["map@r"]
        assert float(row["time (s)"]) > 0
        assert float(row["images/s"]) > 0  # from the run's log.csv
    # Parameters are read from best.keras without Keras; Keras counts the same.
    from net import experiment

    best = experiment.load_model(sweep_dir / RUNS[3] / "best.keras")
    row = next(
        r for r in rows if r["model.descriptors"] == "MG" and r["loss.auxiliary_weight"] == "1"
    )
    assert int(row["parameters"]) == best.count_params()
    markdown = (sweep_dir / "comparison.md").read_text().splitlines()
    assert markdown[0].startswith("| model.descriptors | loss.auxiliary_weight | recall@1 (%)")
    assert len(markdown) == 2 + 4
    assert (sweep_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (sweep_dir / "comparison.html").read_text()
    assert "| model.descriptors" in output  # the table is printed at the end
