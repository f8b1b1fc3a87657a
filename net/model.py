"""Model builders: the CGD embedding model and a simple baseline.

Both builders return an uncompiled functional model with one input named ``images`` (float32 RGB
in [0, 255], shape (B, H, W, 3)) and a dict of outputs: ``embeddings`` (B, D), unit L2 norm,
and, when ``num_classes > 0``, ``logits`` (B, num_classes) of the auxiliary classifier. The
backbone's preprocessing is the first layer after the input, so a saved model is self-contained.

CGD head (Jun et al. 2019), for a descriptor string such as "SG" with n letters::

    feature map -> descriptor_i (SPoC / MAC / GeM) -> Dense(D / n, no bias) -> L2   (i = 1..n)
    concat(n branches) -> L2 -> "embeddings"
    descriptor_1 (raw) -> BatchNorm -> Dense(num_classes) -> "logits"
"""

from __future__ import annotations

import os
from typing import Any

import keras

from net.backbones import build_backbone, get_backbone_spec
from net.descriptors import DESCRIPTOR_NAMES, parse_descriptors
from net.layers import ImagePreprocessing, L2Normalization, global_descriptor

#: Name of the model input.
INPUT_NAME = "images"
#: Output names.
EMBEDDINGS = "embeddings"
LOGITS = "logits"


def _check_positive_int(key: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def _backbone_features(
    backbone: str,
    weights: str | os.PathLike | None,
    image_size: int,
    last_stride: int,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Input, preprocessing and backbone: returns (images input, feature map (B, h, w, C))."""
    image_size = _check_positive_int("image_size", image_size)
    spec = get_backbone_spec(backbone)
    input_shape = (image_size, image_size, 3)
    images = keras.Input(shape=input_shape, name=INPUT_NAME, dtype="float32")
    x = ImagePreprocessing(**spec.preprocessing, name="preprocessing")(images)
    net = build_backbone(
        backbone, input_shape=input_shape, weights=weights, last_stride=last_stride
    )
    return images, net(x)


def _logits_head(descriptor: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(name="auxiliary_bn")(descriptor)
    return keras.layers.Dense(num_classes, name=LOGITS, dtype="float32")(x)


def build_cgd_model(
    *,
    backbone: str = "resnet50",
    weights: str | os.PathLike | None = None,
    image_size: int = 224,
    last_stride: int = 1,
    descriptors: str = "SG",
    embedding_dim: int = 1536,
    num_classes: int = 0,
    gem_p: float = 3.0,
    trainable_gem_p: bool = False,
) -> keras.Model:
    """Build the CGD embedding model (uncompiled).

    Args:
        backbone: Registered backbone name ("resnet50", "small_cnn", ...).
        weights: Backbone weights: None, "imagenet" or a local weights file.
        image_size: Side of the square input images, pixels.
        last_stride: 1 removes the backbone's last downsampling (CGD), 2 keeps it.
        descriptors: Descriptor string of S/M/G letters, e.g. "SG" (see `parse_descriptors`).
        embedding_dim: Total embedding dimension D, divisible by the number of descriptors.
        num_classes: Classes of the auxiliary classifier; 0 leaves it (and "logits") out.
        gem_p: GeM exponent.
        trainable_gem_p: Learn the GeM exponent.

    Returns:
        Model with input "images" (B, H, W, 3) float32 in [0, 255] and outputs
        {"embeddings": (B, D) unit-norm, "logits": (B, num_classes)} ("logits" only when
        ``num_classes > 0``).

    Raises:
        ValueError: Bad descriptor string, ``embedding_dim`` not divisible by the number of
            descriptors, non-positive sizes, or backbone errors (see `build_backbone`).
        FileNotFoundError: If ``weights`` names a missing file.
    """
    try:
        letters = parse_descriptors(descriptors)
    except ValueError as error:
        raise ValueError(f"descriptors: {error}") from None
    embedding_dim = _check_positive_int("embedding_dim", embedding_dim)
    num_classes = _check_positive_int("num_classes", num_classes, allow_zero=True)
    if embedding_dim % len(letters):
        raise ValueError(
            f"embedding_dim={embedding_dim} is not divisible by the {len(letters)} descriptors "
            f"of descriptors={descriptors!r}"
        )
    branch_dim = embedding_dim // len(letters)

    images, features = _backbone_features(backbone, weights, image_size, last_stride)
    branches = []
    logits = None
    for index, letter in enumerate(letters):
        kind = DESCRIPTOR_NAMES[letter]
        descriptor = global_descriptor(letter, p=gem_p, trainable_p=trainable_gem_p)(features)
        if index == 0 and num_classes:
            logits = _logits_head(descriptor, num_classes)
        x = keras.layers.Dense(branch_dim, use_bias=False, name=f"{kind}_fc")(descriptor)
        branches.append(L2Normalization(name=f"{kind}_l2", dtype="float32")(x))
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    embeddings = L2Normalization(name=EMBEDDINGS, dtype="float32")(x)

    outputs = {EMBEDDINGS: embeddings}
    if logits is not None:
        outputs[LOGITS] = logits
    return keras.Model(images, outputs, name=f"cgd_{backbone}_{''.join(letters)}")


def build_simple_model(
    *,
    backbone: str = "resnet50",
    weights: str | os.PathLike | None = None,
    image_size: int = 224,
    last_stride: int = 1,
    pooling: str = "S",
    hidden_dim: int | None = None,
    embedding_dim: int = 1536,
    num_classes: int = 0,
    gem_p: float = 3.0,
    trainable_gem_p: bool = False,
) -> keras.Model:
    """Build the baseline embedding model (uncompiled).

    ``backbone -> pooling -> Dense(hidden) -> BatchNorm -> ReLU -> Dense(D) -> L2`` gives the
    "embeddings"; with ``num_classes > 0`` the pooled descriptor also feeds the same auxiliary
    classifier as CGD (BatchNorm -> Dense), so training treats both models alike.

    Args:
        backbone: Registered backbone name.
        weights: Backbone weights: None, "imagenet" or a local weights file.
        image_size: Side of the square input images, pixels.
        last_stride: Stride of the backbone's last stage, 1 or 2.
        pooling: One descriptor letter: "S" (mean), "M" (max) or "G" (GeM).
        hidden_dim: Width of the hidden layer; None uses the backbone's channel count.
        embedding_dim: Embedding dimension D.
        num_classes: Classes of the auxiliary classifier; 0 leaves it out.
        gem_p: GeM exponent (``pooling="G"``).
        trainable_gem_p: Learn the GeM exponent.

    Returns:
        Model with input "images" and outputs {"embeddings": (B, D), "logits": (B, C)}
        ("logits" only when ``num_classes > 0``).

    Raises:
        ValueError: ``pooling`` not one of S/M/G, non-positive sizes, or backbone errors.
        FileNotFoundError: If ``weights`` names a missing file.
    """
    letters = parse_descriptors(pooling)
    if len(letters) != 1:
        raise ValueError(f"pooling must be one of S, M, G, got {pooling!r}")
    embedding_dim = _check_positive_int("embedding_dim", embedding_dim)
    num_classes = _check_positive_int("num_classes", num_classes, allow_zero=True)
    if hidden_dim is not None:
        hidden_dim = _check_positive_int("hidden_dim", hidden_dim)

    images, features = _backbone_features(backbone, weights, image_size, last_stride)
    descriptor = global_descriptor(letters[0], p=gem_p, trainable_p=trainable_gem_p)(features)
    width = hidden_dim or int(features.shape[-1])
    x = keras.layers.Dense(width, name="hidden_fc")(descriptor)
    x = keras.layers.BatchNormalization(name="hidden_bn")(x)
    x = keras.layers.ReLU(name="hidden_relu")(x)
    x = keras.layers.Dense(embedding_dim, name="embedding_fc")(x)
    outputs = {EMBEDDINGS: L2Normalization(name=EMBEDDINGS, dtype="float32")(x)}
    if num_classes:
        outputs[LOGITS] = _logits_head(descriptor, num_classes)
    return keras.Model(images, outputs, name=f"simple_{backbone}_{letters[0]}")


#: Architecture name -> builder, for `build_model`.
ARCHITECTURES = {"cgd": build_cgd_model, "simple": build_simple_model}


def build_model(architecture: str, **kwargs: Any) -> keras.Model:
    """Build a model by architecture name.

    Args:
        architecture: "cgd" or "simple".
        **kwargs: Keyword arguments of the chosen builder.

    Returns:
        The uncompiled model.

    Raises:
        ValueError: If ``architecture`` is unknown (the message lists the valid ones), or the
            builder rejects its arguments.
    """
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}: valid architectures are "
            f"{sorted(ARCHITECTURES)}"
        ) from None
    return builder(**kwargs)


def embedding_model(model: keras.Model) -> keras.Model:
    """Take the images -> embeddings sub-model out of a (possibly loaded) model.

    Args:
        model: A model from this module (built or loaded from ``.keras``) with a layer named
            "embeddings".

    Returns:
        Model mapping "images" (B, H, W, 3) to the embeddings (B, D); it shares the layers
        (and weights) of ``model``.

    Raises:
        ValueError: If ``model`` has no layer named "embeddings".
    """
    try:
        layer = model.get_layer(EMBEDDINGS)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named {EMBEDDINGS!r}") from None
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, layer.output, name=f"{model.name}_embedding")
