"""Serializable Keras layers of the CGD model: global descriptors, normalisation, preprocessing.

Every layer here is a real `keras.layers.Layer` registered under the package ``cgd``, written with
`keras.ops` and free of `Lambda`, so a model built from them saves to the ``.keras`` format and
loads with `keras.saving.load_model` in safe mode without ``custom_objects``.

Global descriptors (Jun et al. 2019, "Combination of Multiple Global Descriptors"):

- SPoC: mean pooling over the spatial positions (`SPoCPooling2D`; the paper's sum pooling and
  the mean differ by a constant factor that the following L2 normalisation removes).
- MAC: max pooling over the spatial positions (`MACPooling2D`).
- GeM: generalized mean ``(mean(x ** p)) ** (1 / p)`` (`GeneralizedMeanPooling2D`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from net.descriptors import DESCRIPTOR_NAMES, parse_descriptors
from net.keras_config import AttributeConfig

_PACKAGE = "cgd"

#: Descriptor letters of the CGD paper and their names.


def _global_pool_output_shape(input_shape: Sequence[int | None], keepdims: bool) -> tuple:
    """Output shape of a global 2D pooling over (B, H, W, C) channels-last inputs."""
    if len(input_shape) != 4:
        raise ValueError(f"expected a 4-D (B, H, W, C) input shape, got {tuple(input_shape)}")
    if keepdims:
        return (input_shape[0], 1, 1, input_shape[3])
    return (input_shape[0], input_shape[3])


class _GlobalPooling2D(AttributeConfig, keras.layers.Layer):
    """Base of the parameter-free global descriptors: a reduction over the spatial axes.

    Args:
        keepdims: Keep the spatial axes as size-1 axes.
        **kwargs: Base `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call args:
        inputs: Feature map, shape (B, H, W, C).

    Returns:
        Descriptor, shape (B, C) (or (B, 1, 1, C) with ``keepdims``).
    """

    _reduce = staticmethod(ops.mean)
    config_attributes = ("keepdims",)

    def __init__(self, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keepdims = bool(keepdims)

    def call(self, inputs):
        return self._reduce(inputs, axis=(1, 2), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        return _global_pool_output_shape(input_shape, self.keepdims)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SPoCPooling2D(_GlobalPooling2D):
    """SPoC descriptor: the mean of a feature map over its spatial positions.

    Args and shapes as in the base: (B, H, W, C) -> (B, C).
    """

    _reduce = staticmethod(ops.mean)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MACPooling2D(_GlobalPooling2D):
    """MAC descriptor: the maximum of a feature map over its spatial positions.

    Args and shapes as in the base: (B, H, W, C) -> (B, C).
    """

    _reduce = staticmethod(ops.max)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GeneralizedMeanPooling2D(AttributeConfig, keras.layers.Layer):
    """GeM descriptor: ``(mean over H, W of max(x, eps) ** p) ** (1 / p)`` per channel.

    p = 1 is SPoC (for non-negative inputs), p -> inf tends to MAC. Inputs are clamped at
    ``epsilon`` before the power, so zeros (ReLU outputs) give finite values and gradients.
    The power is taken of ``x / m`` with ``m`` the per-channel maximum (held constant for the
    gradient; GeM is 1-homogeneous, so the value and gradient are unchanged), which keeps
    ``x ** p`` within float range for large p or large activations.

    Args:
        p: Initial exponent, > 0 (3 in the CGD paper).
        trainable_p: Learn p with the rest of the model (one scalar shared by all channels).
        epsilon: Clamp floor applied to the inputs before the power, > 0.
        keepdims: Keep the spatial axes as size-1 axes.
        **kwargs: Base `keras.layers.Layer` arguments.

    Call args:
        inputs: Feature map, shape (B, H, W, C).

    Returns:
        Descriptor, shape (B, C) (or (B, 1, 1, C) with ``keepdims``).

    Raises:
        ValueError: If ``p`` or ``epsilon`` is not positive.
    """

    config_attributes = ("trainable_p", "epsilon", "keepdims")

    def __init__(
        self,
        p: float = 3.0,
        trainable_p: bool = False,
        epsilon: float = 1e-6,
        keepdims: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not p > 0:
            raise ValueError(f"GeneralizedMeanPooling2D: p must be > 0, got p={p!r}")
        if not epsilon > 0:
            raise ValueError(f"GeneralizedMeanPooling2D: epsilon must be > 0, got {epsilon!r}")
        self.initial_p = float(p)
        self.trainable_p = bool(trainable_p)
        self.epsilon = float(epsilon)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_p),
            trainable=self.trainable_p,
        )
        super().build(input_shape)

    def call(self, inputs):
        p = ops.cast(self.p, inputs.dtype)
        x = ops.maximum(inputs, ops.cast(self.epsilon, inputs.dtype))
        scale = ops.stop_gradient(ops.max(x, axis=(1, 2), keepdims=True))
        pooled = ops.mean(ops.power(x / scale, p), axis=(1, 2), keepdims=True)
        out = scale * ops.power(pooled, 1.0 / p)
        if not self.keepdims:
            out = ops.squeeze(out, axis=(1, 2))
        return out

    def compute_output_shape(self, input_shape):
        return _global_pool_output_shape(input_shape, self.keepdims)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "p": self.initial_p}  # self.p is the weight


@keras.saving.register_keras_serializable(package=_PACKAGE)
class L2Normalization(AttributeConfig, keras.layers.Layer):
    """Scale vectors to unit Euclidean length: ``x / sqrt(max(sum(x ** 2), epsilon))``.

    Signs are kept (negative components stay negative). A zero vector maps to zero with a
    finite gradient, because the squared norm is clamped at ``epsilon`` before the root.

    Args:
        axis: Axis along which to normalise.
        epsilon: Floor of the squared norm, > 0.
        **kwargs: Base `keras.layers.Layer` arguments.

    Call args:
        inputs: Tensor, e.g. shape (B, D).

    Returns:
        Tensor of the input's shape, unit norm along ``axis`` (zero where the input is zero).

    Raises:
        ValueError: If ``epsilon`` is not positive.
    """

    config_attributes = ("axis", "epsilon")

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"L2Normalization: epsilon must be > 0, got {epsilon!r}")
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        squared_norm = ops.sum(ops.square(inputs), axis=self.axis, keepdims=True)
        eps = ops.cast(self.epsilon, inputs.dtype)
        return inputs * ops.rsqrt(ops.maximum(squared_norm, eps))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


_CHANNEL_ORDERS = ("RGB", "BGR")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ImagePreprocessing(AttributeConfig, keras.layers.Layer):
    """A backbone's input normalisation, inside the model: ``(reorder(x) * scale - mean) / std``.

    Images enter as float RGB in [0, 255]. The channels are first put in ``channel_order``,
    then multiplied by ``scale``, then ``mean`` is subtracted and the result divided by ``std``
    (``mean`` and ``std`` per output channel, i.e. in ``channel_order``). Examples:

    - Keras ResNet-50 ("caffe"): ``channel_order="BGR"``, ``scale=1``,
      ``mean=(103.939, 116.779, 123.68)``, ``std=(1, 1, 1)``.
    - torchvision style: ``channel_order="RGB"``, ``scale=1/255``,
      ``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)``.
    - EfficientNet-Lite (TF-Lite): ``channel_order="RGB"``, ``scale=1``, ``mean=127``,
      ``std=128``.

    Args:
        mean: Per-channel mean (3 values) or one value for all channels.
        std: Per-channel standard deviation (3 values) or one value, all > 0.
        channel_order: "RGB" (keep) or "BGR" (reverse the channel axis).
        scale: Factor applied before the mean subtraction, > 0.
        **kwargs: Base `keras.layers.Layer` arguments.

    Call args:
        inputs: Images, float, shape (B, H, W, 3), RGB in [0, 255].

    Returns:
        Normalised images, shape (B, H, W, 3).

    Raises:
        ValueError: On a channel order other than RGB/BGR, a mean/std of the wrong length,
            a non-positive std or scale.
    """

    config_attributes = ("mean", "std", "channel_order", "scale")

    def __init__(
        self,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        channel_order: str = "RGB",
        scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        order = str(channel_order).upper()
        if order not in _CHANNEL_ORDERS:
            raise ValueError(
                f"ImagePreprocessing: channel_order must be one of {_CHANNEL_ORDERS}, "
                f"got {channel_order!r}"
            )
        self.channel_order = order
        self.mean = self._per_channel("mean", mean)
        self.std = self._per_channel("std", std)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImagePreprocessing: std must be > 0, got {self.std}")
        if not scale > 0:
            raise ValueError(f"ImagePreprocessing: scale must be > 0, got {scale!r}")
        self.scale = float(scale)

    @staticmethod
    def _per_channel(key: str, value: float | Sequence[float]) -> list[float]:
        values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
        if len(values) != 3:
            raise ValueError(
                f"ImagePreprocessing: {key} needs 1 or 3 values, got {len(values)}: {value!r}"
            )
        return values

    def call(self, inputs):
        x = ops.flip(inputs, axis=-1) if self.channel_order == "BGR" else inputs
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        inv_std = ops.convert_to_tensor([1.0 / s for s in self.std], dtype=x.dtype)
        return (x * ops.cast(self.scale, x.dtype) - mean) * inv_std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def global_descriptor(
    kind: str, *, name: str | None = None, p: float = 3.0, trainable_p: bool = False
) -> keras.layers.Layer:
    """Make the global-descriptor layer for one CGD letter.

    Args:
        kind: "S" (SPoC, mean), "M" (MAC, max) or "G" (GeM), any case (see
            :func:`net.descriptors.parse_descriptors`).
        name: Layer name; defaults to "spoc", "mac" or "gem".
        p: GeM exponent (only for "G").
        trainable_p: Learn the GeM exponent (only for "G").

    Returns:
        A layer mapping (B, H, W, C) feature maps to (B, C) descriptors. It computes in float32
        whatever the global mixed-precision policy (GeM's cube overflows float16).

    Raises:
        ValueError: If ``kind`` is not one of S, M, G.
    """
    letters = parse_descriptors(kind)
    if len(letters) != 1:
        raise ValueError(f"global_descriptor takes one descriptor letter, got {kind!r}")
    kind = letters[0]
    name = name or DESCRIPTOR_NAMES[kind]
    if kind == "S":
        return SPoCPooling2D(name=name, dtype="float32")
    if kind == "M":
        return MACPooling2D(name=name, dtype="float32")
    return GeneralizedMeanPooling2D(p=p, trainable_p=trainable_p, name=name, dtype="float32")
