"""Model builders: the CGD embedding model, a simple baseline and the seed's second model.

The builders return an uncompiled functional model with one input named ``images`` (float32 RGB
in [0, 255], shape (B, H, W, 3)) and a dict of outputs: ``embeddings`` (B, D), unit L2 norm,
and, when ``num_classes > 0``, ``logits`` (B, num_classes) of the auxiliary classifier. The
backbone's preprocessing is the first layer after the input, so a saved model is self-contained.

CGD head (Jun et al. 2019), for a descriptor string such as "SG" with n letters::

    feature map -> descriptor_i (SPoC / MAC / GeM) -> Dense(D / n, no bias) -> L2   (i = 1..n)
    concat(n branches) -> L2 -> "embeddings"

Auxiliary classifier (``auxiliary_head``):

- ``paper`` (the CGD paper): descriptor_1 (raw) -> BatchNorm -> Dense(num_classes) -> "logits";
- ``seed`` (the seed repository's): L2-normalised branch 1 -> Dense(num_classes, swish) ->
  BatchNorm -> Dense(num_classes) -> "logits".

The other architectures feed their head from one fixed tensor (the pooled descriptor of
``simple``, the pre-normalisation embedding of ``conv_flatten_fc``) and ``auxiliary_head`` only
chooses the layers.
"""

from __future__ import annotations

import dataclasses
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
#: Kinds of auxiliary classification head (see the module docstring).
AUXILIARY_HEADS = ("paper", "seed")


def _check_positive_int(key: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class BackboneOptions:
    """The input and backbone options that every builder takes as keyword arguments.

    Attributes:
        backbone: Registered backbone name ("resnet50", "small_cnn", ...).
        weights: Backbone weights: None, "imagenet" or a local weights file.
        image_size: Side of the square input images, pixels.
        last_stride: 1 removes the backbone's last downsampling (CGD), 2 keeps it.
        feature_layer: None (the backbone's last feature map) or the name of the backbone
            layer whose output the head uses (the backbone is cut there).
    """

    backbone: str = "resnet50"
    weights: str | os.PathLike | None = None
    image_size: int = 224
    last_stride: int = 1
    feature_layer: str | None = None

    def features(self) -> tuple[keras.KerasTensor, keras.KerasTensor]:
        """Input, preprocessing and backbone: (images input, feature map (B, h, w, C)).

        Raises:
            ValueError: A non-positive ``image_size`` or backbone errors (see `build_backbone`;
                an unknown ``feature_layer`` raises `net.backbones.UnknownLayerError`).
            FileNotFoundError: If ``weights`` names a missing file.
        """
        size = _check_positive_int("image_size", self.image_size)
        spec = get_backbone_spec(self.backbone)
        images = keras.Input(shape=(size, size, 3), name=INPUT_NAME, dtype="float32")
        x = ImagePreprocessing(**spec.preprocessing, name="preprocessing")(images)
        net = build_backbone(
            self.backbone,
            input_shape=(size, size, 3),
            weights=self.weights,
            last_stride=self.last_stride,
            feature_layer=self.feature_layer,
        )
        return images, net(x)


def _check_auxiliary_head(auxiliary_head: str) -> str:
    if auxiliary_head not in AUXILIARY_HEADS:
        raise ValueError(
            f"auxiliary_head must be one of {list(AUXILIARY_HEADS)}, got {auxiliary_head!r}"
        )
    return auxiliary_head


def _check_head(embedding_dim: int, num_classes: int, auxiliary_head: str) -> tuple[int, int, str]:
    """The options of every builder's outputs, checked: (embedding_dim, num_classes, head)."""
    return (
        _check_positive_int("embedding_dim", embedding_dim),
        _check_positive_int("num_classes", num_classes, allow_zero=True),
        _check_auxiliary_head(auxiliary_head),
    )


def _logits_head(
    features: keras.KerasTensor, num_classes: int, auxiliary_head: str = "paper"
) -> keras.KerasTensor:
    """The auxiliary classifier on ``features`` (B, F): "logits" (B, num_classes), float32.

    ``paper``: BatchNorm -> Dense. ``seed``: Dense(num_classes, swish) -> BatchNorm -> Dense.
    """
    x = features
    if auxiliary_head == "seed":
        x = keras.layers.Dense(num_classes, activation="swish", name="auxiliary_fc")(x)
    x = keras.layers.BatchNormalization(name="auxiliary_bn")(x)
    return keras.layers.Dense(num_classes, name=LOGITS, dtype="float32")(x)


def _embedding_model(
    images: keras.KerasTensor,
    embedding: keras.KerasTensor,
    logits: keras.KerasTensor | None,
    name: str,
) -> keras.Model:
    """The model of ``images``: its "embeddings" (``embedding`` L2-normalised) and "logits".

    ``logits`` (from `_logits_head`, or None without an auxiliary classifier) is made by the
    caller where its architecture makes it: the order in which layers are made decides, under
    a fixed seed, which initial weights each layer draws.
    """
    outputs = {EMBEDDINGS: L2Normalization(name=EMBEDDINGS, dtype="float32")(embedding)}
    if logits is not None:
        outputs[LOGITS] = logits
    return keras.Model(images, outputs, name=name)


def build_cgd_model(
    *,
    descriptors: str = "SG",
    embedding_dim: int = 1536,
    num_classes: int = 0,
    gem_p: float = 3.0,
    trainable_gem_p: bool = False,
    auxiliary_head: str = "paper",
    **backbone: Any,
) -> keras.Model:
    """Build the CGD embedding model (uncompiled).

    Args:
        descriptors: Descriptor string of S/M/G letters, e.g. "SG" (see `parse_descriptors`).
        embedding_dim: Total embedding dimension D, divisible by the number of descriptors.
        num_classes: Classes of the auxiliary classifier; 0 leaves it (and "logits") out.
        gem_p: GeM exponent.
        trainable_gem_p: Learn the GeM exponent.
        auxiliary_head: "paper" or "seed" (see the module docstring).
        **backbone: `BackboneOptions`: ``backbone`` ("resnet50"), ``weights`` (None),
            ``image_size`` (224), ``last_stride`` (1), ``feature_layer`` (None: the
            descriptors pool the backbone's last feature map).

    Returns:
        Model with input "images" (B, H, W, 3) float32 in [0, 255] and outputs
        {"embeddings": (B, D) unit-norm, "logits": (B, num_classes)} ("logits" only when
        ``num_classes > 0``).

    Raises:
        ValueError: Bad descriptor string, ``embedding_dim`` not divisible by the number of
            descriptors, non-positive sizes, an unknown ``auxiliary_head``, or backbone errors
            (see `BackboneOptions.features`).
        TypeError: An unknown keyword argument.
        FileNotFoundError: If ``weights`` names a missing file.
    """
    options = BackboneOptions(**backbone)
    try:
        letters = parse_descriptors(descriptors)
    except ValueError as error:
        raise ValueError(f"descriptors: {error}") from None
    embedding_dim, num_classes, auxiliary_head = _check_head(
        embedding_dim, num_classes, auxiliary_head
    )
    if embedding_dim % len(letters):
        raise ValueError(
            f"embedding_dim={embedding_dim} is not divisible by the {len(letters)} descriptors "
            f"of descriptors={descriptors!r}"
        )
    branch_dim = embedding_dim // len(letters)

    images, features = options.features()
    branches = []
    logits = None
    for letter in letters:
        kind = DESCRIPTOR_NAMES[letter]
        descriptor = global_descriptor(letter, p=gem_p, trainable_p=trainable_gem_p)(features)
        x = keras.layers.Dense(branch_dim, use_bias=False, name=f"{kind}_fc")(descriptor)
        branches.append(L2Normalization(name=f"{kind}_l2", dtype="float32")(x))
        if len(branches) == 1 and num_classes:
            # The first descriptor, raw or as its branch, feeds the head, made here (before
            # the other branches) so that a seed gives the same weights as it always did.
            head_input = branches[0] if auxiliary_head == "seed" else descriptor
            logits = _logits_head(head_input, num_classes, auxiliary_head)
    x = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name="concat")(branches)
    name = f"cgd_{options.backbone}_{''.join(letters)}"
    return _embedding_model(images, x, logits, name)


def build_simple_model(
    *,
    pooling: str = "S",
    gem_p: float = 3.0,
    trainable_gem_p: bool = False,
    hidden_dim: int | None = None,
    embedding_dim: int = 1536,
    num_classes: int = 0,
    auxiliary_head: str = "paper",
    **backbone: Any,
) -> keras.Model:
    """Build this repository's baseline embedding model (uncompiled; not the seed's).

    ``backbone -> pooling -> Dense(hidden) -> BatchNorm -> ReLU -> Dense(D) -> L2`` gives the
    "embeddings"; with ``num_classes > 0`` the pooled descriptor also feeds an auxiliary
    classifier, so training treats every model alike.

    Args:
        pooling: One descriptor letter: "S" (mean), "M" (max) or "G" (GeM).
        gem_p: GeM exponent (``pooling="G"``).
        trainable_gem_p: Learn the GeM exponent.
        hidden_dim: Width of the hidden layer; None uses the backbone's channel count.
        embedding_dim: Embedding dimension D.
        num_classes: Classes of the auxiliary classifier; 0 leaves it out.
        auxiliary_head: "paper" or "seed": the layers of the classifier on the pooled
            descriptor.
        **backbone: `BackboneOptions` (as in `build_cgd_model`).

    Returns:
        Model with input "images" and outputs {"embeddings": (B, D), "logits": (B, C)}
        ("logits" only when ``num_classes > 0``).

    Raises:
        ValueError: ``pooling`` not one of S/M/G, non-positive sizes, an unknown
            ``auxiliary_head``, or backbone errors.
        TypeError: An unknown keyword argument.
        FileNotFoundError: If ``weights`` names a missing file.
    """
    options = BackboneOptions(**backbone)
    letters = parse_descriptors(pooling)
    if len(letters) != 1:
        raise ValueError(f"pooling must be one of S, M, G, got {pooling!r}")
    embedding_dim, num_classes, auxiliary_head = _check_head(
        embedding_dim, num_classes, auxiliary_head
    )
    if hidden_dim is not None:
        hidden_dim = _check_positive_int("hidden_dim", hidden_dim)

    images, features = options.features()
    descriptor = global_descriptor(letters[0], p=gem_p, trainable_p=trainable_gem_p)(features)
    width = hidden_dim or int(features.shape[-1])
    x = keras.layers.Dense(width, name="hidden_fc")(descriptor)
    x = keras.layers.BatchNormalization(name="hidden_bn")(x)
    x = keras.layers.ReLU(name="hidden_relu")(x)
    x = keras.layers.Dense(embedding_dim, name="embedding_fc")(x)
    logits = _logits_head(descriptor, num_classes, auxiliary_head) if num_classes else None
    return _embedding_model(images, x, logits, f"simple_{options.backbone}_{letters[0]}")


def build_conv_flatten_fc_model(
    *,
    embedding_dim: int = 512,
    num_classes: int = 0,
    reduce_filters: tuple[int, int] = (512, 128),
    hidden_dim: int = 1024,
    auxiliary_head: str = "seed",
    **backbone: Any,
) -> keras.Model:
    """Build the seed repository's second model, ``ImagesSimilarityComputer`` (uncompiled).

    No global pooling: the feature map's channels are reduced by two 1 x 1 convolutions and
    the map is flattened, so the embedding sees where things are::

        feature map -> Conv 1x1 (512, swish) -> Conv 1x1 (128, swish) -> Flatten
          -> Dense(1024, swish) -> BatchNorm -> Dense(D) -> L2 -> "embeddings"
        Dense(D) output -> auxiliary classifier -> "logits"

    The seed used the Dense(D) output as the embedding without normalising it; here it is
    L2-normalised like every model of this module, so that Euclidean and cosine rankings agree.
    The flattened size, and with it the parameter count, grows with the image size (7 x 7 x 128
    = 6,272 inputs to the Dense(1024) at 224 px with a stride-32 backbone).

    Args:
        embedding_dim: Embedding dimension D (512 in the seed).
        num_classes: Classes of the auxiliary classifier; 0 leaves it out.
        reduce_filters: Filters of the two 1 x 1 convolutions.
        hidden_dim: Width of the hidden Dense layer.
        auxiliary_head: "seed" (the seed's Dense(C, swish) -> BatchNorm -> Dense(C)) or "paper"
            (BatchNorm -> Dense), both on the Dense(D) output.
        **backbone: `BackboneOptions` (as in `build_cgd_model`), except that ``last_stride``
            defaults to 2, as the seed kept it.

    Returns:
        Model with input "images" and outputs {"embeddings": (B, D), "logits": (B, C)}
        ("logits" only when ``num_classes > 0``).

    Raises:
        ValueError: Non-positive sizes, an unknown ``auxiliary_head``, or backbone errors.
        TypeError: An unknown keyword argument.
        FileNotFoundError: If ``weights`` names a missing file.
    """
    options = BackboneOptions(**{"last_stride": 2, **backbone})
    embedding_dim, num_classes, auxiliary_head = _check_head(
        embedding_dim, num_classes, auxiliary_head
    )
    hidden_dim = _check_positive_int("hidden_dim", hidden_dim)
    filters = [_check_positive_int("reduce_filters", f) for f in reduce_filters]

    images, x = options.features()
    for index, width in enumerate(filters, start=1):
        x = keras.layers.Conv2D(width, 1, activation="swish", name=f"reduce{index}_conv")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden_dim, activation="swish", name="hidden_fc")(x)
    x = keras.layers.BatchNormalization(name="hidden_bn")(x)
    x = keras.layers.Dense(embedding_dim, name="embedding_fc")(x)
    logits = _logits_head(x, num_classes, auxiliary_head) if num_classes else None
    return _embedding_model(images, x, logits, f"conv_flatten_fc_{options.backbone}")


#: Architecture name -> builder, for `build_model`.
ARCHITECTURES = {
    "cgd": build_cgd_model,
    "simple": build_simple_model,
    "conv_flatten_fc": build_conv_flatten_fc_model,
}


def build_model(architecture: str, **kwargs: Any) -> keras.Model:
    """Build a model by architecture name.

    Args:
        architecture: "cgd", "simple" or "conv_flatten_fc".
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
