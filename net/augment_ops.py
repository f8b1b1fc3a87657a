"""Augmentation as TensorFlow ops: draw one image's parameters from a seed, then apply them.

:func:`draw_augmentation` draws the flip, scale, translation, rotation, shear and grayscale
parameters deterministically from a stateless seed, under the settings of
:mod:`net.augmentation`; :func:`augment_image` applies them (one affine warp, then the blend
towards grayscale). :mod:`net.pipeline` maps it over the training images and re-exports both.
"""

from __future__ import annotations

import math

import tensorflow as tf

from net.augmentation import CHOOSABLE, DEFAULT, Augmentation


def draw_augmentation(seed: tf.Tensor, settings: Augmentation) -> dict[str, tf.Tensor]:
    """Draws one image's augmentation parameters, deterministically given ``seed``.

    Thirteen stateless uniforms ``u`` decide everything: ``u[0]`` the flip; ``u[1]``, ``u[4]``,
    ``u[6]``, ``u[8]`` and ``u[11]`` whether scale, translate, rotate, shear and grayscale
    apply (each below its probability); ``u[2]``, ``u[3]`` the x and y scale factors, ``u[5]``,
    ``u[10]`` the x and y shifts, ``u[7]`` the angle, ``u[9]`` the shear, ``u[12]`` the blend
    strength, each mapped linearly onto its range. With ``max_ops`` a second stream (the seed
    folded with 1) draws the count and the choice of operations (see :mod:`net.augmentation`).

    Args:
        seed: (2,) int stateless random seed.
        settings: the augmentation settings.

    Returns:
        Scalars: ``flip`` (-1 flips, 1 does not), ``sx``, ``sy`` (scale factors), ``tx``,
        ``ty`` (shifts as fractions of width and height), ``theta``, ``shear`` (radians) and
        ``alpha`` (grayscale blend strength); an operation not applied has its identity value.
    """
    u = tf.random.stateless_uniform([13], seed=seed, dtype=tf.float32)
    gates = {
        "scale": u[1] < settings.scale_p,
        "translate": u[4] < settings.translate_p,
        "rotate": u[6] < settings.rotate_p,
        "shear": u[8] < settings.shear_p,
        "grayscale": u[11] < settings.grayscale_p,
    }
    if settings.max_ops is not None:
        chosen = _choose_operations(seed, settings)
        gates = {op: gate & chosen[op] if op in chosen else gate for op, gate in gates.items()}

    def between(index: int, bounds: tuple[float, float]) -> tf.Tensor:
        low, high = bounds
        return low + (high - low) * u[index]

    deg = math.pi / 180.0
    return {
        "flip": tf.where(u[0] < settings.flip_p, -1.0, 1.0),
        "sx": tf.where(gates["scale"], between(2, settings.scale_range), 1.0),
        "sy": tf.where(gates["scale"], between(3, settings.scale_range), 1.0),
        "tx": tf.where(gates["translate"], between(5, settings.translate_range), 0.0),
        "ty": tf.where(gates["translate"], between(10, settings.translate_range), 0.0),
        "theta": tf.where(gates["rotate"], between(7, settings.rotate_range) * deg, 0.0),
        "shear": tf.where(gates["shear"], between(9, settings.shear_range) * deg, 0.0),
        "alpha": tf.where(gates["grayscale"], between(12, settings.grayscale_range), 0.0),
    }


def _choose_operations(seed: tf.Tensor, settings: Augmentation) -> dict[str, tf.Tensor]:
    """A uniform count in 0..max_ops, then that many distinct operations (imgaug's SomeOf)."""
    ops = [op for op in settings.operations if op in CHOOSABLE]
    v = tf.random.stateless_uniform(
        [len(ops) + 1], seed=tf.random.experimental.stateless_fold_in(seed, 1), dtype=tf.float32
    )
    count = tf.minimum(tf.cast(v[0] * (settings.max_ops + 1), tf.int32), settings.max_ops)
    rank = tf.argsort(tf.argsort(v[1:]))  # a uniformly random order of the operations
    return {op: rank[i] < count for i, op in enumerate(ops)}


def augment_image(image: tf.Tensor, seed: tf.Tensor, settings: Augmentation = DEFAULT) -> tf.Tensor:
    """Augments one image as configured, deterministically given ``seed``.

    The parameters come from :func:`draw_augmentation`. Flip, scaling, translation, rotation
    and shear make one affine warp about the image centre (bilinear, zeros outside):
    ``out = R(theta) Sh(shear) diag(flip * sx, sy) (in - c) + c + t``, so a positive angle
    turns the image clockwise on screen and a positive shift moves it right and down; then
    the blend towards grayscale ``(1 - alpha) * image + alpha * gray``. An image with neither
    a geometric operation nor grayscale configured passes through unchanged.

    Args:
        image: (H, W, 3) float32 RGB in [0, 255].
        seed: (2,) int stateless random seed.
        settings: which operations, how likely and how strong (see :mod:`net.augmentation`);
            :data:`net.augmentation.DEFAULT` is ``data.augment: true``.

    Returns:
        (H, W, 3) float32 RGB in [0, 255].
    """
    params = draw_augmentation(seed, settings)
    out = image
    if settings.geometric:
        out = _warp(image, params)
    if settings.grayscale_p > 0:
        alpha = params["alpha"]
        out = (1.0 - alpha) * out + alpha * tf.image.rgb_to_grayscale(out)
    out = tf.clip_by_value(out, 0.0, 255.0)
    out.set_shape(image.shape)
    return out


def _warp(image: tf.Tensor, params: dict[str, tf.Tensor]) -> tf.Tensor:
    """The affine warp of :func:`augment_image`."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    flip, sx, sy = params["flip"], params["sx"], params["sy"]
    tx, ty = params["tx"] * width, params["ty"] * height
    cos, sin, tan = tf.cos(params["theta"]), tf.sin(params["theta"]), tf.tan(params["shear"])
    a00, a01 = cos * flip * sx, (cos * tan - sin) * sy
    a10, a11 = sin * flip * sx, (sin * tan + cos) * sy
    det = a00 * a11 - a01 * a10
    # The op wants the inverse map, output pixel -> input pixel: in = A^-1 (out - c - t) + c.
    m00, m01, m10, m11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    ox, oy = cx + tx, cy + ty
    transform = tf.stack(
        [m00, m01, cx - m00 * ox - m01 * oy, m10, m11, cy - m10 * ox - m11 * oy, 0.0, 0.0]
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
