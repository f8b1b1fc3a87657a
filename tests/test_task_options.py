"""The tasks' integer options through invoke: a value that is not a whole number, or is too
small, stops the task with one line naming the option (invoke's own int conversion answered
``--batches abc`` with a ValueError traceback), before any configuration or model is read."""

import pytest
from invoke import Program

from tasks.collection import ns

CASES = [
    ("visualize.visualize-data", "--batches", "abc", "must be an integer, got 'abc'"),
    ("visualize.visualize-predictions-on-batches", "--batches", "abc", "must be an integer"),
    ("visualize.visualize-predictions-on-batches", "--batches", "0", "must be at least 1, got 0"),
    ("visualize.visualize-predictions-on-batches", "--seed", "-1", "must be at least 0, got -1"),
    ("visualize.visualize-predictions-on-dataset", "--queries", "2.5", "must be an integer"),
    ("visualize.visualize-predictions-on-dataset", "--top-k", "0", "must be at least 1"),
    ("analysis.export-embeddings", "--thumbnail-size", "big", "must be an integer"),
    ("analysis.export-embeddings", "--thumbnail-size", "0", "must be at least 1, got 0"),
    ("ml.find-lr", "--steps", "many", "must be an integer"),
    ("ml.find-lr", "--steps", "1", "must be at least 2, got 1"),
]


@pytest.mark.parametrize(("task", "option", "value", "message"), CASES)
def test_a_bad_integer_option_is_one_line(task, option, value, message, tmp_path, capsys):
    missing = tmp_path / "missing.yaml"  # never read: the option is checked first
    with pytest.raises(SystemExit) as info:
        Program(namespace=ns).run(["invoke", task, "--config-path", str(missing), option, value])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"{option} {message}" or error.startswith(f"{option} {message}"), error
    assert "\n" not in error and "missing.yaml" not in error


def test_search_query_top_k_is_checked_too(tmp_path, capsys):
    argv = ["search.query", "--index", str(tmp_path / "i.npz"), "--image", "x.jpg"]
    with pytest.raises(SystemExit) as info:
        Program(namespace=ns).run(["invoke", *argv, "--top-k", "many"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "--top-k must be an integer, got 'many'"
