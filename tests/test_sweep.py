"""Sweeps without training: commands, the record, failures, parallel runs, the table.

Runs here are tiny Python processes standing in for ``ml.train`` (``command=``): they write a
``metrics.json`` or fail, so the bookkeeping is tested in seconds; ``test_sweep_e2e.py`` runs a
real sweep.
"""

import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from net import comparison, sweep
from net.grid import grid_runs
from net.sweep import SweepBase, SweepError

REPO = Path(__file__).resolve().parents[1]
BASE = SweepBase(str(REPO / "config.yaml"), "demo", ("training.epochs=1",))


def test_run_commands_are_ml_train_lines_for_a_job_runner(tmp_path):
    runs = grid_runs({"model.descriptors": ["S", "SG"]})
    lines = sweep.run_commands(BASE, runs, tmp_path / "sweep")
    assert len(lines) == 2
    assert shlex.split(lines[1]) == [
        "invoke", "ml.train", "--config-path", str(REPO / "config.yaml"), "--profile", "demo",
        "--set", "training.epochs=1", "--set", "model.descriptors=SG",
        "--run-dir", str(tmp_path / "sweep" / "descriptors=SG"),
    ]  # fmt: skip


# --- Running ------------------------------------------------------------------------------------

#: A stand-in run: records its GPU, then fails when its descriptors are "M", else writes metrics.
FAKE_RUN = """
import json, os, sys
run_dir, settings = sys.argv[1], json.loads(sys.argv[2])
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "attempts.txt"), "a") as f:
    f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "-") + "\\n")
print("training...")
if settings["model.descriptors"] == "M":
    print("Training stopped: training diverged: the loss became nan", file=sys.stderr)
    sys.exit(1)
score = {"S": 0.5, "G": 0.7, "SG": 0.6}[settings["model.descriptors"]]
metrics = {"test": {"recall@1": score + 0.1, "recall@2": score + 0.2, "map@r": score},
           "epochs_done": 2, "best_val_map@r": score}
json.dump(metrics, open(os.path.join(run_dir, "metrics.json"), "w"))
"""


def fake_command(base, run, run_dir):
    return [sys.executable, "-c", FAKE_RUN, str(run_dir), json.dumps(run.settings)]


def attempts(run_dir):
    return (run_dir / "attempts.txt").read_text().split()


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    grid = {"model.descriptors": ["S", "M", "G"]}
    record = sweep.run_sweep(BASE, grid, tmp_path, command=fake_command)
    status = {name: (e["status"], e.get("message")) for name, e in record["runs"].items()}
    assert status == {
        "descriptors=S": ("finished", None),
        "descriptors=M": (
            "failed",
            "Training stopped: training diverged: the loss became nan",
        ),
        "descriptors=G": ("finished", None),
    }
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"] == record["runs"]
    # One run at a time: the run's output is shown and kept in its folder.
    assert "training..." in capsys.readouterr().out
    assert "training..." in (tmp_path / "descriptors=G" / "sweep.log").read_text()

    # Started again: finished and failed runs are skipped; a new value of the grid is run.
    grid["model.descriptors"].append("SG")
    record = sweep.run_sweep(BASE, grid, tmp_path, command=fake_command)
    assert [len(attempts(tmp_path / f"descriptors={d}")) for d in "S M G".split()] == [1, 1, 1]
    assert record["runs"]["descriptors=SG"]["status"] == "finished"
    assert "descriptors=M: failed before" in capsys.readouterr().out
    # --retry-failed runs the failed one again (and only it).
    sweep.run_sweep(BASE, grid, tmp_path, command=fake_command, retry_failed=True)
    assert len(attempts(tmp_path / "descriptors=M")) == 2
    assert len(attempts(tmp_path / "descriptors=S")) == 1


def test_a_combination_the_configuration_rejects_fails_without_a_process(tmp_path):
    # The demo profile's 128-d embedding cannot be split over three descriptors.
    grid = {"model.descriptors": ["SMG", "S"]}
    record = sweep.run_sweep(BASE, grid, tmp_path, command=fake_command)
    entry = record["runs"]["descriptors=SMG"]
    assert entry["status"] == "failed"
    assert "model.embedding_dim: 128 is not divisible by the 3 descriptors" in entry["message"]
    assert not (tmp_path / "descriptors=SMG").exists()
    assert record["runs"]["descriptors=S"]["status"] == "finished"
    # In the table it has no time: nothing ran (not "0").
    rows = {row["name"]: row for row in comparison.sweep_results(tmp_path)}
    assert rows["descriptors=SMG"]["seconds"] is None


def test_parallel_runs_get_one_gpu_each(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    grid = {"model.descriptors": ["S", "G", "SG"]}
    sweep.run_sweep(BASE, grid, tmp_path, command=fake_command, parallel=2)
    gpus = [attempts(tmp_path / f"descriptors={d}")[0] for d in ("S", "G", "SG")]
    assert gpus[:2] == ["0", "1"] and gpus[2] in ("0", "1")
    # The GPUs already visible to the sweep (e.g. a Slurm allocation) are the ones shared out.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    sweep.run_sweep(BASE, {"model.descriptors": ["S", "G", "M"]}, tmp_path, command=fake_command,
                    parallel=2, retry_failed=True)  # fmt: skip
    assert attempts(tmp_path / "descriptors=M")[0] in ("4", "6")
    with pytest.raises(SweepError, match="--parallel 3 needs one GPU each, but"):
        sweep.run_sweep(BASE, grid, tmp_path, command=fake_command, parallel=3)
    with pytest.raises(SweepError, match="--parallel must be at least 1"):
        sweep.run_sweep(BASE, grid, tmp_path, command=fake_command, parallel=0)


def test_a_folder_of_another_sweep_is_refused(tmp_path):
    sweep.run_sweep(BASE, {"model.descriptors": ["S"]}, tmp_path, command=fake_command)
    other = SweepBase(BASE.config_path, "demo", ("training.epochs=3",))
    with pytest.raises(SweepError, match="holds a sweep of another configuration"):
        sweep.run_sweep(other, {"model.descriptors": ["S"]}, tmp_path, command=fake_command)


def test_a_killed_run_is_interrupted_not_failed(tmp_path):
    def killed(base, run, run_dir):
        return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]

    record = sweep.run_sweep(BASE, {"model.descriptors": ["S"]}, tmp_path, command=killed)
    assert record["runs"]["descriptors=S"]["status"] == "interrupted"

    # Stopped through invoke or a shell (exit status 128 + SIGINT): interrupted too.
    def stopped(base, run, run_dir):
        return [sys.executable, "-c", "import sys; sys.exit(130)"]

    record = sweep.run_sweep(BASE, {"model.descriptors": ["S"]}, tmp_path, command=stopped)
    assert record["runs"]["descriptors=S"] == {
        **record["runs"]["descriptors=S"],
        "status": "interrupted",
        "message": "killed by signal 2",
    }
    # Interrupted runs are run again (they resume) when the sweep starts again.
    record = sweep.run_sweep(BASE, {"model.descriptors": ["S"]}, tmp_path, command=fake_command)
    assert record["runs"]["descriptors=S"]["status"] == "finished"


# --- The comparison -----------------------------------------------------------------------------


def test_comparison_table_best_first_with_settings_first(tmp_path):
    grid = {"model.descriptors": ["S", "M", "G", "SG"], "loss.auxiliary_weight": [0]}
    sweep.run_sweep(BASE, grid, tmp_path, command=fake_command)
    with open(tmp_path / "descriptors=G+auxiliary_weight=0" / "log.csv", "w") as handle:
        # As Keras' CSVLogger writes it: columns sorted, the validation's embedding speed first.
        handle.write(
            "epoch,embedding_images_per_second,epoch_seconds,loss,train_images_per_second\n"
            "0,500,3.5,1.0,10\n1,700,2,0.5,30\n"
        )
    paths = comparison.write_comparison(tmp_path)
    assert sorted(paths) == ["csv", "html", "markdown", "png"]
    with open(paths["csv"], newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "model.descriptors", "loss.auxiliary_weight", "recall@1", "recall@2", "map@r", "epochs",
        "time (s)", "images/s", "parameters", "status",
    ]  # fmt: skip
    assert [row[0] for row in rows[1:]] == ["G", "SG", "S", "M"]  # MAP@R 0.7 > 0.6 > 0.5
    g = dict(zip(rows[0], rows[1], strict=True))
    assert float(g["map@r"]) == pytest.approx(0.7)
    assert float(g["images/s"]) == pytest.approx(20.0)  # mean of the log's epochs
    assert float(g["time (s)"]) == pytest.approx(5.5)  # sum of the epochs' seconds
    assert g["status"] == "finished" and g["parameters"] == ""  # no best.keras here
    assert rows[4][-1].startswith("failed: Training stopped: training diverged")
    (tmp_path / "descriptors=S+auxiliary_weight=0" / "metrics.json").write_text("{trunc")
    rows = {row["name"]: row for row in comparison.sweep_results(tmp_path)}
    assert rows["descriptors=S+auxiliary_weight=0"]["status"].startswith("finished, but ")
    markdown = paths["markdown"].read_text().splitlines()
    assert markdown[0] == (
        "| model.descriptors | loss.auxiliary_weight | recall@1 (%) | recall@2 (%) | map@r (%) "
        "| epochs | time (s) | images/s | parameters | status |"
    )
    assert markdown[2].startswith("| G | 0 | 80.00 | 90.00 | 70.00 | 2 | 6 | 20.0 |  | finished")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "| G | 0 | 80.00" in page


def test_compare_needs_a_sweep_folder(tmp_path):
    with pytest.raises(SweepError, match="not a sweep folder"):
        comparison.write_comparison(tmp_path)
    (tmp_path / "sweep.json").write_text('{"runs": {"descriptors=S": 3}}')
    with pytest.raises(SweepError, match=r"not a sweep record \(run 'descriptors=S' is not a"):
        comparison.write_comparison(tmp_path)


def test_saved_model_parameters_match_keras(tmp_path):
    import keras

    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")  # optimizer variables are saved too, and not counted
    model.fit(np.zeros((2, 6, 6, 3)), np.zeros((2, 5)), verbose=0)
    model.save(tmp_path / "m.keras")
    # 3*3*3*4 + 4 (conv) + 4*4 (batch norm) + 4*5 + 5 (dense) = 153
    assert model.count_params() == 153
    assert comparison.saved_model_parameters(tmp_path / "m.keras") == 153
    assert comparison.saved_model_parameters(tmp_path / "absent.keras") is None
    (tmp_path / "bad.keras").write_text("not a zip")
    assert comparison.saved_model_parameters(tmp_path / "bad.keras") is None


def test_print_commands_task_prints_one_line_per_run(capsys, tmp_path):
    from invoke import Program

    from tasks.collection import ns

    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["output"]["root"] = str(tmp_path / "runs")
    config.write_text(yaml.safe_dump(raw))
    Program(namespace=ns).run(
        ["invoke", "ml.sweep", "--config-path", str(config), "--print-commands",
         "--grid", "model.descriptors=S,M,G,SM,SG,MG,SMG", "--grid", "loss.auxiliary_weight=0,1"],
        exit=False,
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 14
    sweep_dir = tmp_path / "runs" / "sweeps" / "descriptors+auxiliary_weight"
    assert lines[0].endswith(f"--run-dir {sweep_dir / 'descriptors=S+auxiliary_weight=0'}")
    # Nothing is run; the record lets analysis.compare-sweep tabulate what the job runner did.
    assert [p.name for p in sweep_dir.iterdir()] == ["sweep.json"]
    record = sweep.read_record(sweep_dir)
    assert len(record["runs"]) == 14
    assert {entry["status"] for entry in record["runs"].values()} == {"pending"}

    # A combination the configuration rejects is not handed to the job runner: it is recorded
    # as failed, with its line on standard error; a finished run is not printed again.
    def print_commands(*grid):
        Program(namespace=ns).run(
            ["invoke", "ml.sweep", "--config-path", str(config), "--print-commands",
             "--name", "mixed", *grid],
            exit=False,
        )  # fmt: skip
        captured = capsys.readouterr()
        return captured.out.strip().splitlines(), captured.err

    lines, err = print_commands("--grid", "model.descriptors=S,Q,G")
    mixed = tmp_path / "runs" / "sweeps" / "mixed"
    assert [line.rsplit("/", 1)[-1] for line in lines] == ["descriptors=S", "descriptors=G"]
    assert "[sweep] descriptors=Q: failed: " in err and "'Q' has 'Q'" in err
    assert sweep.read_record(mixed)["runs"]["descriptors=Q"]["status"] == "failed"
    (mixed / "descriptors=S").mkdir()
    (mixed / "descriptors=S" / "metrics.json").write_text("{}")
    lines, err = print_commands("--grid", "model.descriptors=S,Q,G")
    assert [line.rsplit("/", 1)[-1] for line in lines] == ["descriptors=G"]
    assert "[sweep] descriptors=S: finished before, skipped" in err


def test_the_sweep_process_imports_no_tensorflow(tmp_path):
    """The sweep only starts processes and reads files: TensorFlow stays in the runs."""
    code = (
        "import sys\n"
        "from net import comparison, grid, sweep\n"
        f"base = sweep.SweepBase({BASE.config_path!r}, 'demo')\n"
        "g = grid.build_grid(['model.descriptors=S,SG'])\n"
        f"sweep.open_sweep(base, g, {str(tmp_path)!r})\n"
        f"comparison.write_comparison({str(tmp_path)!r})\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert (tmp_path / "comparison.md").read_text().count("\n") == 2 + 2  # two pending rows
