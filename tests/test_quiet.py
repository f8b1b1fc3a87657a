"""Quiet start-up: TensorFlow's C++ start-up notices hidden, everything else kept."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from net import quiet

REPO = Path(__file__).resolve().parents[1]

ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = "I0000 00:00:1795944680.621852    5870 port.cc:153] oneDNN custom operations are on.\n"
CUDA = "I0000 00:00:1795944680.622809    5870 cudart_stub.cc:31] Could not find cuda drivers\n"
WARN = "W0000 00:00:1795944680.622809    5870 some_file.cc:12] a warning\n"
ERROR = "E1129 09:30:51.123456    5870 cuda_dnn.cc:8] an error\n"


def test_lines_shown_follow_the_log_level():
    lines = [ABSL, INFO, CUDA, WARN, ERROR, "Traceback (most recent call last):\n"]
    kept = {level: [line for line in lines if quiet.shown(line, level)] for level in range(4)}
    assert kept[0] == lines
    assert kept[1] == [WARN, ERROR, lines[-1]]
    assert kept[2] == [ERROR, lines[-1]]
    assert kept[3] == [lines[-1]]
    cuinit = "E0000 00:00:1.2 7 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
    assert quiet.shown(cuinit, 2)  # A machine with a driver: a real error.
    assert not quiet.shown(cuinit, 2, no_cuda_driver=True)  # TensorFlow said there is none.
    assert quiet.shown(cuinit, 0, no_cuda_driver=True)


@pytest.mark.parametrize("unset", [None, ""])
def test_tensorflow_imports_without_its_start_up_notices(unset):
    """In a fresh process with no level set (or set empty, `export TF_CPP_MIN_LOG_LEVEL=`):
    none of the start-up lines, the default level 2 in place, and what the program itself
    writes to standard error still there."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if unset is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = unset
    env["PYTHONPATH"] = str(REPO)
    code = (
        "import os, sys; from net import quiet; quiet.import_tensorflow(); "
        "import tensorflow as tf; tf.constant(1.0) + 1; "
        "sys.stderr.write('level ' + os.environ['TF_CPP_MIN_LOG_LEVEL'] + '\\n')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "level 2\n"


def _task_stderr(argv: list[str], cwd: Path) -> str:
    """Standard error of ``invoke ARGV`` run from ``cwd`` in a fresh process, no level set."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "invoke", "--search-root", str(REPO), *argv]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return result.stderr


def test_tasks_that_load_no_configuration_are_quiet_too(tmp_path):
    """visualize-training with --run-dir, and search without a config.yaml, import TensorFlow
    without reading a configuration: still no start-up notice, and their own line kept."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.csv").write_text("epoch,loss,val_map@r\n1,1.0,0.2\n2,0.5,0.3\n")
    curves = _task_stderr(["visualize.visualize-training", "--run-dir", str(run)], tmp_path)
    assert "absl" not in curves and "oneDNN" not in curves and "cuda" not in curves, curves
    # Its figure goes where every figure of a run goes: the run's figures/.
    assert (run / "figures" / "training_curves.html").is_file()
    assert not (run / "training_curves.html").exists()

    searched = _task_stderr(
        ["search.query", "--index", str(tmp_path / "missing.npz"), "--image", "x.jpg"], tmp_path
    )
    assert "absl" not in searched and "oneDNN" not in searched, searched
    assert "missing.npz" in searched  # The task's own one-line failure is still written.
