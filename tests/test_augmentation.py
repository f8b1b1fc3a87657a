"""Tests for net.augmentation: the forms of ``data.augment`` and one message per mistake."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from helpers import DEFAULT_AUGMENT_LONG_FORM

from net.augmentation import DEFAULT, Augmentation, as_mapping, parse_augmentation
from net.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_true_false_and_the_long_form_of_the_defaults():
    assert parse_augmentation(True) == DEFAULT
    assert parse_augmentation(False) is None and parse_augmentation(None) is None
    assert parse_augmentation(DEFAULT_AUGMENT_LONG_FORM) == DEFAULT


def test_short_forms_apply_always_and_omitted_operations_are_off():
    settings = parse_augmentation(
        {"flip": 0, "scale": [0.9, 1.1], "translate": [-0.05, 0.2], "rotate": 10, "grayscale": 0.1}
    )
    on = {  # operation: (probability, range); everything else stays off
        "scale": (1.0, (0.9, 1.1)),
        "translate": (1.0, (-0.05, 0.2)),
        "rotate": (1.0, (-10.0, 10.0)),
        "grayscale": (0.1, (0.2, 1.0)),
    }
    fields = {}
    for op, (p, bounds) in on.items():
        fields |= {f"{op}_p": p, f"{op}_range": bounds}
    assert settings == Augmentation(**fields)
    assert settings.operations == ("scale", "translate", "rotate", "grayscale")
    assert settings.max_ops is None and settings.shear_p == 0.0
    assert parse_augmentation({}).operations == ()
    assert parse_augmentation({"rotate": 5, "shear": 3, "max_ops": 2}).max_ops == 2


def test_an_identity_range_is_off_and_not_counted_by_max_ops():
    """``rotate: 0`` turns rotation off (not a rotation by 0 that max_ops would choose)."""
    settings = parse_augmentation({"rotate": 0, "shear": {"p": 0.5, "range": [0, 0]},
                                   "scale": [1, 1], "translate": 0.1, "max_ops": 1})  # fmt: skip
    assert settings.operations == ("translate",)
    with pytest.raises(ValueError, match="max_ops: 2 is more than the 1 non-flip operations"):
        parse_augmentation({"rotate": 0, "translate": 0.1, "max_ops": 2})
    config = load_config(REPO / "config.yaml", overrides=["data.augment.rotate=0"])
    assert config.data.augmentation.operations == (
        "flip",
        "scale",
        "translate",
        "shear",
        "grayscale",
    )


def test_the_mapping_form_of_true_and_false_parses_back_the_same():
    assert parse_augmentation(as_mapping(True)) == DEFAULT
    assert as_mapping(False) == as_mapping(None) == {}
    seed_like = {"flip": 0.5, "scale": [0.8, 1.2], "rotate": 15, "max_ops": 2}
    assert as_mapping(seed_like) is seed_like


def test_one_operation_set_over_true_keeps_the_other_defaults():
    """``--set data.augment.flip=0`` on ``augment: true``: the defaults without the flip."""
    config = load_config(REPO / "config.yaml", overrides=["data.augment.flip=0"])
    assert config.data.augmentation == dataclasses.replace(DEFAULT, flip_p=0.0)
    assert config.data.augment["flip"] == 0  # the saved config.yaml holds the mapping
    # Over false, the one operation set is the only one on.
    only = load_config(
        REPO / "config.yaml", overrides=["data.augment=false", "data.augment.rotate=10"]
    )
    assert only.data.augmentation == dataclasses.replace(
        Augmentation(), rotate_p=1.0, rotate_range=(-10.0, 10.0)
    )
    with pytest.raises(ConfigError, match=r"--set data.augment.blur=1: data.augment.blur: unknown"):
        load_config(REPO / "config.yaml", overrides=["data.augment.blur=1"])


def test_only_keeps_one_operation():
    alone = DEFAULT.only("rotate")
    assert alone.operations == ("rotate",)
    assert alone == dataclasses.replace(
        Augmentation(), rotate_p=0.25, rotate_range=(-15.0, 15.0), scale_range=(0.8, 1.2),
        translate_range=(-0.1, 0.1), shear_range=(-10.0, 10.0),
    )  # fmt: skip
    assert not DEFAULT.only("grayscale").geometric and DEFAULT.only("flip").geometric
    assert "rotate: [-15, 15] degrees, p = 0.25" in DEFAULT.describe()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "data.augment: expected true, false or a mapping"),
        ({"blur": 1}, "data.augment.blur: unknown operation (operations: flip, scale,"),
        ({"flip": 1.5}, "data.augment.flip: a probability must be in [0, 1], got 1.5"),
        ({"flip": "half"}, "data.augment.flip: expected a number, got 'half'"),
        ({"scale": 1.2}, "data.augment.scale: expected a range [low, high], got 1.2"),
        ({"scale": [1.2, 0.8]}, "data.augment.scale: the range [low, high] is inverted"),
        ({"scale": [0, 1.2]}, "data.augment.scale: scale factors must be positive"),
        ({"scale": [0.8, 1.2, 1.4]}, "data.augment.scale: expected a range [low, high]"),
        ({"translate": -0.1}, "data.augment.translate: expected a magnitude of 0 or more"),
        ({"translate": 1.5}, "data.augment.translate: must stay within 1 in magnitude"),
        ({"rotate": 200}, "data.augment.rotate: must stay within 180 in magnitude"),
        ({"shear": [-5, 85]}, "data.augment.shear: must stay within 80 in magnitude"),
        ({"grayscale": [0.2, 1]}, "data.augment.grayscale: expected a number"),
        ({"grayscale": {"range": [0, 2]}}, "data.augment.grayscale.range: blend strengths"),
        ({"rotate": {"p": 0.5}}, "data.augment.rotate: the long form needs a range"),
        ({"rotate": {"p": 0.5, "range": 5, "q": 1}}, "data.augment.rotate.q: unknown setting"),
        ({"rotate": {"p": -1, "range": 5}}, "data.augment.rotate.p: a probability must be"),
        ({"rotate": 5, "max_ops": 0}, "data.augment.max_ops: expected a positive integer"),
        ({"rotate": 5, "max_ops": 1.5}, "data.augment.max_ops: expected a positive integer"),
        (
            {"flip": 0.5, "rotate": 5, "max_ops": 2},
            "data.augment.max_ops: 2 is more than the 1 non-flip operations configured (rotate)",
        ),
        ({"max_ops": 1}, "data.augment.max_ops: 1 is more than the 0 non-flip operations"),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(value, message):
    with pytest.raises(ValueError) as info:
        parse_augmentation(value)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_configuration_file_names_itself_and_a_profile_replaces_the_mapping(tmp_path):
    raw = {
        "data": {"augment": {"flip": 0.5, "rotate": 10}},
        "profiles": {
            "text": {"data": {"augment": {"scale": [0.9, 1.1]}}},
            "bad": {"data": {"augment": {"rotate": "lots"}}},
        },
    }
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    shipped.pop("profiles")
    shipped["data"]["augment"] = raw["data"]["augment"]
    shipped["profiles"] = raw["profiles"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(shipped))
    config = load_config(path)
    assert config.data.augmentation.operations == ("flip", "rotate")
    # An overlay's mapping replaces the base mapping: what it leaves out is off.
    assert load_config(path, profile="text").data.augmentation.operations == ("scale",)
    with pytest.raises(ConfigError, match=r"profile bad\): data.augment.rotate: expected a number"):
        load_config(path, profile="bad")
    # The resolved configuration round-trips (a run directory's config.yaml).
    assert config.to_dict()["data"]["augment"] == {"flip": 0.5, "rotate": 10}


def test_set_overrides_one_operation_of_a_mapping(tmp_path):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["data"]["augment"] = {"flip": 0.5, "rotate": 10}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, overrides=["data.augment.flip=0", "data.augment.shear=5"])
    assert config.data.augment == {"flip": 0, "rotate": 10, "shear": 5}
    whole = load_config(path, overrides=["data.augment={grayscale: 0.1}"])
    assert whole.data.augmentation.operations == ("grayscale",)
    with pytest.raises(ConfigError, match=r"data.augment.blur: unknown operation"):
        load_config(path, overrides=["data.augment.blur=1"])
