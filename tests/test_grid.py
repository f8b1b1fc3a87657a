"""The grid of a sweep: --grid options, grid files, combinations and their names."""

import pytest

from net.config import parse_override
from net.grid import (
    SweepError,
    SweepRun,
    build_grid,
    default_name,
    grid_runs,
    parse_grid_option,
)


def test_grid_options_are_keys_and_yaml_values():
    assert parse_grid_option("model.descriptors=S,M,G,SMG") == (
        "model.descriptors",
        ["S", "M", "G", "SMG"],
    )
    assert parse_grid_option("loss.auxiliary_weight=0,1") == (
        "loss.auxiliary_weight",
        [0, 1],
    )
    assert parse_grid_option("training.learning_rate=1e-4, 3e-4") == (
        "training.learning_rate",
        [1e-4, 3e-4],
    )
    # Commas inside brackets or braces belong to one value.
    assert parse_grid_option("training.schedule.boundaries=[10, 20],[30]") == (
        "training.schedule.boundaries",
        [[10, 20], [30]],
    )
    assert parse_grid_option("loss.params={margin: 0.1, x: 1},{margin: null}")[1] == [
        {"margin": 0.1, "x": 1},
        {"margin": None},
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "no grid: give --grid KEY=V1,V2"),
        (["model.descriptors"], "--grid model.descriptors: expected KEY=V1,V2"),
        (["model.descriptors=S,,G"], "--grid model.descriptors=S,,G: an empty value"),
        (["model.descriptor=S,G"], "--grid model.descriptor: unknown key model.descriptor"),
        (["training.epochs.x=1,2"], "training.epochs is a value, not a section"),
        (["data.ks=[1,2"], "--grid data.ks=[1,2: not a valid YAML value"),
        (["training.epochs=1,2", "training.epochs=3"], "--grid: training.epochs is given twice"),
        (["model.descriptors=S,G,S"], "--grid model.descriptors: the value S is given twice"),
        (["loss.auxiliary_weight=0,1,0"], "--grid loss.auxiliary_weight: the value 0 is given"),
    ],
)
def test_bad_grids_stop_with_one_line_naming_the_key(options, message):
    with pytest.raises(SweepError) as info:
        build_grid(options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_grid_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("model.descriptors: [S, SG]\ntraining.learning_rate: [1e-3]\ndata.crop: pad\n")
    grid = build_grid(["loss.auxiliary_weight=0,1"], grid_file=path)
    assert grid == {
        "model.descriptors": ["S", "SG"],
        "training.learning_rate": [0.001],  # a number, as on the command line
        "data.crop": ["pad"],
        "loss.auxiliary_weight": [0, 1],
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("model.descriptorz: [S]\n")
    with pytest.raises(SweepError, match="unknown key model.descriptorz"):
        build_grid(grid_file=bad)
    bad.write_text("- S\n- G\n")
    with pytest.raises(SweepError, match=f"{bad}: expected a mapping of dotted keys"):
        build_grid(grid_file=bad)
    with pytest.raises(SweepError, match="cannot read the grid file"):
        build_grid(grid_file=tmp_path / "absent.yaml")


def test_every_combination_once_named_after_its_settings():
    grid = {"model.descriptors": ["S", "SG"], "loss.auxiliary_weight": [0, 1.5]}
    runs = grid_runs(grid)
    assert [run.name for run in runs] == [
        "descriptors=S+auxiliary_weight=0",
        "descriptors=S+auxiliary_weight=1.5",
        "descriptors=SG+auxiliary_weight=0",
        "descriptors=SG+auxiliary_weight=1.5",
    ]
    assert runs[3].settings == {"model.descriptors": "SG", "loss.auxiliary_weight": 1.5}
    assert default_name(grid) == "descriptors+auxiliary_weight"
    # Keys sharing a last part keep their whole name; unsafe characters become '-'.
    clash = grid_runs({"data.root": ["a/b c"], "output.root": ["x"]})
    assert clash[0].name == "data.root=a-b-c+output.root=x"
    # Values that would give one name are numbered.
    same = grid_runs({"data.root": ["a/b", "a b"]})
    assert [run.name for run in same] == ["root=a-b", "root=a-b+2"]
    # A negative number keeps its sign (not "epochs=1" for -1).
    signed = grid_runs({"training.epochs": [1, -1], "loss.params.margin": [-0.5]})
    assert [run.name for run in signed] == ["epochs=1+margin=-0.5", "epochs=-1+margin=-0.5"]


@pytest.mark.parametrize("value", ["S", 0, 1.5, 1e-5, None, True, [10, 20], {"margin": None}])
def test_settings_become_overrides_that_read_back_the_same_value(value):
    (override,) = SweepRun("x", {"loss.params": value}).overrides
    assert parse_override(override) == ("loss.params", value)
