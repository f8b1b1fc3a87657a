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


def _flags(task):
    """Each option of a task as its sorted names, e.g. ['config-path', 'c']."""
    import copy

    return [sorted(argument.names) for argument in copy.deepcopy(task).get_arguments()]


def test_the_configuration_options_stand_where_the_task_declares_them():
    # The three options replace the task's ConfigOptions parameter in place, so invoke's short
    # flags follow the declared order: -s is --seed where --seed comes first, else --set.
    data = ns.collections["visualize"].tasks["visualize-data"]
    assert _flags(data) == [
        ["b", "batches"],
        ["o", "output-dir"],
        ["s", "seed"],
        ["c", "config-path"],
        ["p", "profile"],
        ["e", "set"],
    ]
    dataset = ns.collections["visualize"].tasks["visualize-predictions-on-dataset"]
    assert _flags(dataset)[:4] == [
        ["m", "model-path"],
        ["c", "config-path"],
        ["p", "profile"],
        ["s", "set"],
    ]
    demo = ns.tasks["demo"]
    assert [argument.default for argument in demo.get_arguments()][:3] == [
        "config.yaml",
        "demo",
        [],
    ]


def test_a_task_gets_its_configuration_options_as_one_value():
    from invoke import Collection, Context

    from tasks.common import CONFIG, ConfigOptions, config_task

    given = []

    @config_task(size="a size")
    def probe(c, size=None, options: ConfigOptions = CONFIG):
        """Keeps what it was given."""
        given.append((size, options))

    probe(Context())
    probe(Context(), size="3", config_path="x.yaml", profile="demo", set_=["a.b=1"])
    argv = ["invoke", "probe", "-s", "4", "-c", "y.yaml", "-e", "a=1", "--set", "b=2"]
    Program(namespace=Collection(probe)).run(argv, exit=False)
    assert given == [
        (None, ConfigOptions("config.yaml", None, ())),
        ("3", ConfigOptions("x.yaml", "demo", ("a.b=1",))),
        ("4", ConfigOptions("y.yaml", None, ("a=1", "b=2"))),
    ]
