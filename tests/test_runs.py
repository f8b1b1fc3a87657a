"""Run directories: the default model (the newest run with a best.keras) and a run's data."""

import os
from pathlib import Path

import pytest
import yaml

from net import runs
from net.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, name: str, *, model: bool, log: bool = True, age: float = 0.0) -> Path:
    """A fake run directory; ``age`` seconds old (its files' modification times)."""
    run = root / name
    run.mkdir(parents=True)
    files = ["config.yaml"] + (["best.keras"] if model else []) + (["log.csv"] if log else [])
    for file in files:
        (run / file).write_text("x")
        stamp = 1_800_000_000 - age
        os.utime(run / file, (stamp, stamp))
    return run


def test_the_default_model_is_the_newest_run_with_a_best_keras(tmp_path):
    _run(tmp_path, "old", model=True, age=300)
    newest = _run(tmp_path, "new", model=True, age=100)
    _run(tmp_path, "failed", model=False, age=0)  # newer, but holds only config.yaml
    (tmp_path / "figures").mkdir()  # not a run
    choice = runs.choose_model(None, tmp_path)
    assert choice == runs.ModelChoice(newest / "best.keras", newest, newest=True)
    assert "the newest run" in choice.describe() and str(newest / "best.keras") in choice.describe()


def test_no_run_is_one_line_saying_how_to_train_one(tmp_path):
    _run(tmp_path, "failed", model=False)
    with pytest.raises(runs.NoRunError) as error:
        runs.choose_model(None, tmp_path)
    message = str(error.value)
    assert message.startswith(f"no trained model: no run under {tmp_path} holds a best.keras")
    assert "invoke ml.train" in message and "--model-path" in message and "\n" not in message
    with pytest.raises(runs.NoRunError, match="no run under"):
        runs.choose_model(None, tmp_path / "missing")


def test_an_explicit_model_path_keeps_working(tmp_path):
    run = _run(tmp_path, "run", model=True)
    assert runs.choose_model(str(run), tmp_path / "elsewhere") == runs.ModelChoice(
        run / "best.keras", run
    )
    loose = tmp_path / "model.keras"
    loose.write_text("x")
    assert runs.choose_model(loose, tmp_path) == runs.ModelChoice(loose, None)


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_missing_model_or_a_folder_without_best_keras_is_one_line(tmp_path, kind):
    path = tmp_path / "nothing"
    if kind == "folder":
        _run(tmp_path, "nothing", model=False)
    with pytest.raises(runs.ModelFileError) as error:
        runs.choose_model(str(path), tmp_path)
    expected = "is a folder without a best.keras" if kind == "folder" else "no saved model at"
    assert expected in str(error.value) and str(path) in str(error.value)


def test_visualize_training_takes_the_newest_run_with_a_log_and_a_model(tmp_path):
    good = _run(tmp_path, "good", model=True, age=100)
    _run(tmp_path, "failed", model=False, log=True, age=0)
    _run(tmp_path, "started", model=False, log=False, age=0)
    assert runs.latest_run_dir(tmp_path) == good
    with pytest.raises(runs.NoRunError, match="no run under .* has a training log"):
        runs.latest_run_dir(tmp_path / "empty")


def _saved_run(tmp_path, **data):
    config = load_config(REPO / "config.yaml", "demo")
    raw = config.to_dict()
    raw["data"].update(data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    return config, run


def test_a_runs_data_settings_replace_the_configurations_with_a_warning(tmp_path):
    config, run = _saved_run(
        tmp_path, image_size=32, crop="none", root="/elsewhere/data", num_val_classes=4
    )
    changed, notes = runs.with_run_data(config, run)
    assert changed.data.image_size == 32 and changed.data.crop == "none"
    assert changed.data.root == "/elsewhere/data" and changed.data.num_val_classes == 4
    assert changed.model == config.model and changed.data.augment == config.data.augment
    assert notes[0].startswith(f"Data settings of the run ({run / 'config.yaml'}): root ")
    warnings = notes[1:]
    assert len(warnings) == 2
    assert "data.image_size 64, the run 32; using the run's" in warnings[0]
    assert "data.crop 'bbox', the run 'none'" in warnings[1]


def test_data_keys_set_on_the_command_line_win_over_the_run(tmp_path):
    config, run = _saved_run(tmp_path, image_size=32, crop="none")
    changed, notes = runs.with_run_data(config, run, keep=runs.set_keys(["data.image_size=64"]))
    assert changed.data.image_size == 64 and changed.data.crop == "none"
    assert any("data.image_size is 64 (--set) but the run was trained with 32" in n for n in notes)


def test_an_unreadable_run_configuration_is_one_line(tmp_path):
    config, run = _saved_run(tmp_path)
    (run / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(runs.ModelFileError, match="cannot read the run's configuration"):
        runs.with_run_data(config, run)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"image_size": "big"}}))
    with pytest.raises(runs.ModelFileError, match="data.image_size"):
        runs.with_run_data(config, run)


def test_make_run_dir_names_by_time_unless_named(tmp_path):
    assert runs.make_run_dir(tmp_path, "a") == tmp_path / "a"
    assert runs.make_run_dir(tmp_path).parent == tmp_path


def test_check_same_config_allows_only_more_epochs(tmp_path):
    config = {"model": {"embedding_dim": 8}, "training": {"epochs": 2}}
    runs.check_same_config(config, tmp_path)
    runs.check_same_config({**config, "training": {"epochs": 5}}, tmp_path)
    with pytest.raises(runs.RunDirectoryError, match=r"differences: model\.embedding_dim"):
        runs.check_same_config({**config, "model": {"embedding_dim": 16}}, tmp_path)


def test_a_run_started_before_evaluation_nprobe_existed_resumes_with_its_value(tmp_path):
    """A config.yaml saved before the key was added lacks it: the value that does what the run
    did (16, the search's fixed nprobe then) resumes it; another value does not."""
    old = {"evaluation": {"method": "exact"}, "training": {"epochs": 2}}
    runs.check_same_config(old, tmp_path)
    runs.check_same_config({**old, "evaluation": {"method": "exact", "nprobe": 16}}, tmp_path)
    (tmp_path / runs.RUN_CONFIG).write_text(yaml.safe_dump(old))
    with pytest.raises(runs.RunDirectoryError, match=r"differences: evaluation\.nprobe"):
        runs.check_same_config({**old, "evaluation": {"method": "exact", "nprobe": 64}}, tmp_path)


class _Resolver:
    def __init__(self, task_type, task_id, jobs):
        self.task_type, self.task_id, self._jobs = task_type, task_id, jobs

    def cluster_spec(self):
        return type("Spec", (), {"as_dict": lambda _: {job: ["host"] for job in self._jobs}})()


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


@pytest.mark.parametrize(
    "resolver, expected",
    [
        (None, "run"),
        (_Resolver("worker", 0, ["worker"]), "run"),
        (_Resolver("worker", 1, ["worker"]), "run/.workers/worker-1"),
        (_Resolver("chief", 0, ["chief", "worker"]), "run"),
        (_Resolver("worker", 0, ["chief", "worker"]), "run/.workers/worker-0"),
    ],
)
def test_worker_run_dir_only_the_chief_writes_the_run(resolver, expected):
    assert runs.worker_run_dir(_Strategy(resolver), Path("run")) == Path(expected)


def test_the_model_line_says_when_its_run_is_unfinished(tmp_path):
    """A run with a best.keras counts as a trained model even while it is in progress or after
    it failed (its best model so far), and the line says so."""
    run = _run(tmp_path, "run", model=True)
    runs.mark_run(run, runs.RUN_FAILED, "No space left on device")
    line = runs.choose_model(None, tmp_path).describe()
    assert line == (
        f"Model: {run / 'best.keras'} (the newest run with a best.keras; its run failed: "
        "the best model so far)"
    )
    runs.mark_run(run, runs.RUN_COMPLETE)
    assert runs.choose_model(run, tmp_path).describe() == f"Model: {run / 'best.keras'}"
