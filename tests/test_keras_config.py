"""Tests for net.keras_config: every serializable class saves each constructor argument."""

import inspect

import keras
import pytest

from net import layers, losses
from net.keras_config import AttributeConfig

CLASSES = [
    layers.SPoCPooling2D,
    layers.MACPooling2D,
    layers.GeneralizedMeanPooling2D,
    layers.L2Normalization,
    layers.ImagePreprocessing,
    losses.BatchHardTripletLoss,
    losses.HardAwarePointToSetLoss,
    losses.AuxiliaryClassificationLoss,
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_the_config_holds_every_constructor_argument(cls):
    assert issubclass(cls, AttributeConfig)
    base = keras.layers.Layer if issubclass(cls, keras.layers.Layer) else keras.losses.Loss
    arguments = {
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and parameter.kind is not parameter.VAR_KEYWORD
    }
    config = cls().get_config()
    assert arguments <= set(config)
    assert set(config) - arguments <= set(base().get_config()) | {"name"}


def test_a_config_written_by_hand_as_older_files_store_it_loads():
    gem = layers.GeneralizedMeanPooling2D.from_config(
        {"name": "gem", "p": 4.5, "trainable_p": True, "epsilon": 1e-5, "keepdims": True}
    )
    assert (gem.initial_p, gem.trainable_p, gem.epsilon, gem.keepdims) == (4.5, True, 1e-5, True)
    config = gem.get_config()
    assert (config["p"], config["trainable_p"], config["epsilon"]) == (4.5, True, 1e-5)
    hap2s = losses.HardAwarePointToSetLoss.from_config(
        {"name": "h", "weighting": "exponential", "alpha": 2.0, "sigma": 0.25, "margin": 0.1}
    )
    assert hap2s.get_config() | {"reduction": None, "dtype": None} == {
        "name": "h",
        "weighting": "exponential",
        "alpha": 2.0,
        "sigma": 0.25,
        "margin": 0.1,
        "reduction": None,
        "dtype": None,
    }
