"""Tests for net.pipeline: per-image ops against NumPy, P x K image batches, evaluation order."""

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from helpers import DEFAULT_AUGMENT_LONG_FORM

from net.augmentation import parse_augmentation
from net.data import Records, metric_learning_split, read_cars196
from net.pipeline import (
    augment_image,
    crop_or_pad,
    decode_for_size,
    draw_augmentation,
    eval_dataset,
    load_image,
    steps_per_epoch,
    train_dataset,
)

# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------


def np_pad_to_square(image: np.ndarray) -> np.ndarray:
    """Zero-pads to max(H, W) square, centred; the odd extra row/column goes bottom/right."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side) + image.shape[2:], image.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


def np_crop(image: np.ndarray, box) -> np.ndarray:
    """Crops to a 0-based half-open box clamped to the image; -1s mean the whole image."""
    h, w = image.shape[:2]
    if all(v == -1 for v in box):
        return image
    x1, y1, x2, y2 = box
    x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
    x2, y2 = min(max(x2, x1 + 1), w), min(max(y2, y1 + 1), h)
    return image[y1:y2, x1:x2]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


SHAPES = [(5, 8), (8, 5), (7, 7), (4, 9), (9, 4), (1, 6)]
BOXES = [
    ((5, 8), (1, 2, 6, 4)),  # inside
    ((5, 8), (-3, -1, 20, 30)),  # larger than the image: clamped to all of it
    ((5, 8), (-1, -1, -1, -1)),  # no box
    ((8, 5), (4, 7, 9, 12)),  # sticks out bottom-right: clamped
    ((8, 5), (6, 9, 2, 3)),  # entirely outside and inverted: one pixel survives
    ((7, 7), (3, 3, 3, 3)),  # empty: one pixel
]


@pytest.mark.parametrize("shape", SHAPES)
def test_pad_to_square_matches_numpy_eagerly_and_in_map(shape):
    image = _image(*shape)
    expected = np_pad_to_square(image)
    box = tf.constant([-1, -1, -1, -1])
    np.testing.assert_array_equal(crop_or_pad(tf.constant(image), box, "pad").numpy(), expected)
    mapped = tf.data.Dataset.from_tensors(image).map(lambda x: crop_or_pad(x, box, "pad"))
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), expected)


def test_pad_to_square_hand_computed():
    """A 1 x 3 row pads to 3 x 3 with the row in the middle: top = (3 - 1) // 2 = 1."""
    row = np.array([[[1], [2], [3]]], np.uint8)
    out = crop_or_pad(tf.constant(row), tf.constant([-1] * 4), "pad").numpy()[..., 0]
    np.testing.assert_array_equal(out, [[0, 0, 0], [1, 2, 3], [0, 0, 0]])


@pytest.mark.parametrize(("shape", "box"), BOXES)
def test_bbox_crop_matches_numpy_eagerly_and_in_map(shape, box):
    image = _image(*shape)
    expected = np_crop(image, box)
    assert expected.size > 0
    eager = crop_or_pad(tf.constant(image), tf.constant(box), "bbox").numpy()
    np.testing.assert_array_equal(eager, expected)
    mapped = tf.data.Dataset.from_tensors((image, np.array(box, np.int32))).map(
        lambda x, b: crop_or_pad(x, b, "bbox")
    )
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), expected)


def test_crop_mode_none_and_unknown():
    image = tf.constant(_image(3, 4))
    np.testing.assert_array_equal(crop_or_pad(image, tf.constant([0, 0, 1, 1]), "none"), image)
    with pytest.raises(ValueError, match="crop_mode 'square'"):
        crop_or_pad(image, tf.constant([0, 0, 1, 1]), "square")


# --------------------------------------------------------------------------------------------
# load_image: decode + crop/pad + resize, on files
# --------------------------------------------------------------------------------------------


def _write_png(path: Path, image: np.ndarray) -> str:
    """Writes an RGB, RGBA or grayscale array as PNG (cv2 wants BGR order)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), image)
    return str(path)


def _load_both_ways(path: str, box, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    eager = load_image(tf.constant(path), tf.constant(box), image_size=size, crop_mode=mode)
    mapped = tf.data.Dataset.from_tensors((path, np.array(box, np.int32))).map(
        lambda p, b: load_image(p, b, image_size=size, crop_mode=mode)
    )
    return eager.numpy(), next(iter(mapped)).numpy()


@pytest.mark.parametrize(
    ("mode", "box", "shape"),
    [
        ("pad", (-1, -1, -1, -1), (6, 10)),  # pads to 10 x 10: resize to 10 is the identity
        ("pad", (-1, -1, -1, -1), (9, 4)),
        ("bbox", (2, 1, 8, 7), (9, 12)),  # 6 x 6 crop
        ("bbox", (5, 0, 40, 6), (6, 11)),  # clamped to columns 5..10: 6 x 6
        ("none", (0, 0, 1, 1), (7, 7)),
    ],
)
def test_load_image_matches_numpy_reference(tmp_path, mode, box, shape):
    image = _image(*shape, seed=3)
    path = _write_png(tmp_path / "x.png", image)
    reference = {"pad": np_pad_to_square, "none": lambda x: x}.get(mode, lambda x: np_crop(x, box))(
        image
    )
    size = reference.shape[0]
    assert reference.shape[:2] == (size, size)
    eager, mapped = _load_both_ways(path, box, size, mode)
    for out in (eager, mapped):
        assert out.dtype == np.float32 and out.shape == (size, size, 3)
        np.testing.assert_array_equal(out, reference.astype(np.float32))


def test_load_image_resizes_and_converts_grayscale_and_alpha(tmp_path):
    gray = np.full((8, 4), 77, np.uint8)
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 128
    for path, expected in (
        (_write_png(tmp_path / "gray.png", gray), (77, 77, 77)),
        (_write_png(tmp_path / "rgba.png", rgba), (10, 20, 30)),
    ):
        eager, mapped = _load_both_ways(path, (-1, -1, -1, -1), 5, "none")
        for out in (eager, mapped):
            assert out.shape == (5, 5, 3)
            np.testing.assert_array_equal(out, np.broadcast_to(expected, (5, 5, 3)))
    # Padding the constant 8 x 4 gray image gives columns [0, 0, 77, 77, 77, 77, 0, 0]; the
    # antialiased 8 -> 4 resize is a triangle filter of half-width 2 input pixels. Output
    # column 0 is centred at input x = 1.0: input centres 0.5, 1.5, 2.5 weigh 0.75, 0.75, 0.25
    # (x = -0.5 is outside and dropped), so 0.25 * 77 / 1.75 = 11.0. Column 1 is centred at
    # 3.0: centres 1.5, 2.5, 3.5, 4.5 weigh 0.25, 0.75, 0.75, 0.25, so 1.75 * 77 / 2 = 67.4 -> 67.
    eager, _ = _load_both_ways(str(tmp_path / "gray.png"), (-1, -1, -1, -1), 4, "pad")
    np.testing.assert_array_equal(eager[:, :, 0], np.tile([11, 67, 67, 11], (4, 1)))


def _smooth_jpeg(path: Path, height: int, width: int) -> str:
    """A smooth colour gradient (no detail finer than the smallest output) saved as JPEG."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / width, 255 * y / height, 128 + 0 * x], axis=-1).astype(np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return str(path)


@pytest.mark.parametrize(
    ("mode", "box", "size", "scale"),
    [
        ("pad", (-1, -1, -1, -1), 100, 8),  # padded side 800 >= 8 x 100
        ("pad", (-1, -1, -1, -1), 300, 2),  # 800 / 300 = 2.7
        ("none", (-1, -1, -1, -1), 150, 4),  # limited by the short side: 600 / 150 = 4
        ("bbox", (80, 40, 480, 440), 100, 4),  # a 400 x 400 box: 4 x 100
        ("bbox", (80, 40, 180, 140), 100, 1),  # a 100 x 100 box: full decode
    ],
)
def test_jpegs_decode_at_the_smallest_scale_covering_the_output(tmp_path, mode, box, size, scale):
    """An 800 x 600 JPEG: the DCT scale is the largest power of two keeping the resized region
    at least `size` a side, and the box is scaled with the image (floor / ceiling)."""
    path = _smooth_jpeg(tmp_path / "x.jpg", 600, 800)
    contents = tf.io.read_file(path)
    image, scaled_box = decode_for_size(contents, tf.constant(box), image_size=size, crop_mode=mode)
    assert tuple(image.shape) == (-(-600 // scale), -(-800 // scale), 3)
    if box[0] >= 0:
        expected = (box[0] // scale, box[1] // scale, -(-box[2] // scale), -(-box[3] // scale))
        assert tuple(scaled_box.numpy()) == expected
    else:
        assert tuple(scaled_box.numpy()) == box


@pytest.mark.parametrize("mode", ["pad", "bbox", "none"])
def test_reduced_decoding_matches_a_full_decode_and_antialiased_resize(tmp_path, mode):
    """On a smooth image the fast path (DCT-scaled decode, then a bilinear resize under 2x)
    and the slow one (full decode, crop or pad, antialiased resize) agree to a few grey levels
    on average (the padding's edge may move by half a pixel); also inside Dataset.map."""
    path = _smooth_jpeg(tmp_path / "x.jpg", 600, 800)
    box = (80, 40, 480, 440)
    full = crop_or_pad(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), tf.constant(box), mode)
    reference = tf.image.resize(full, [96, 96], method="bilinear", antialias=True).numpy()
    eager, mapped = _load_both_ways(path, box, 96, mode)
    for out in (eager, mapped):
        difference = np.abs(out - reference)
        assert difference.mean() < 3.0
        interior = difference[16:-16, 16:-16]  # away from the padding's edges
        assert interior.max() < 12.0, interior.max()


# --------------------------------------------------------------------------------------------
# Data sets on files
# --------------------------------------------------------------------------------------------


def _coded_records(tmp_path: Path, labels: list[int]) -> Records:
    """One 4 x 4 PNG per record whose red channel is the record index: images name themselves."""
    paths = []
    for i in range(len(labels)):
        image = np.zeros((4, 4, 3), np.uint8)
        image[..., 0] = i
        image[..., 1] = labels[i]
        paths.append(_write_png(tmp_path / f"{i}.png", image))
    return Records(
        np.array(paths),
        np.array(labels),
        np.full((len(labels), 4), -1),
        tuple(f"c{i}" for i in range(max(labels) + 1)),
    )


@pytest.mark.parametrize("cache", [False, True])
def test_eval_dataset_yields_every_image_once_in_order(tmp_path, cache):
    records = _coded_records(tmp_path, [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    dataset = eval_dataset(records, batch_size=4, image_size=4, crop_mode="none", cache=cache)
    for _ in range(2):  # a second epoch (served from the cache) is the same
        batches = list(dataset)
        assert [images.shape[0] for images, _ in batches] == [4, 4, 3]
        images = np.concatenate([images.numpy() for images, _ in batches])
        labels = np.concatenate([labels.numpy() for _, labels in batches])
        assert images.dtype == np.float32 and labels.dtype == np.int32
        np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(11))
        np.testing.assert_array_equal(labels, records.labels)


def test_train_batches_are_p_classes_of_k_images(tmp_path):
    labels = [c for c, n in enumerate([3, 5, 2, 4, 6, 3]) for _ in range(n)]  # 23 images
    records = _coded_records(tmp_path, labels)
    p, k = 3, 4
    dataset = train_dataset(
        records, classes_per_batch=p, images_per_class=k, image_size=4, crop_mode="none",
        augment=False, seed=7,
    )  # fmt: skip
    for images, batch_labels in dataset.take(6):
        assert images.shape == (p * k, 4, 4, 3) and images.dtype == tf.float32
        assert batch_labels.dtype == tf.int32
        groups = batch_labels.numpy().reshape(p, k)
        assert len(set(groups[:, 0])) == p  # P distinct classes...
        assert (groups == groups[:, :1]).all()  # ...each K consecutive images
        index = images.numpy()[:, 0, 0, 0].astype(int)  # the red channel names the record
        np.testing.assert_array_equal(records.labels[index], batch_labels.numpy())
        # A class with >= K images uses K different ones; class 2 (2 images) repeats them.
        for group in index.reshape(p, k):
            assert len(set(group)) == min(k, np.sum(records.labels == records.labels[group[0]]))


def test_train_dataset_is_deterministic_given_a_seed(tmp_path):
    records = _coded_records(tmp_path, [c for c in range(5) for _ in range(4)])
    kwargs = {"classes_per_batch": 2, "images_per_class": 2, "image_size": 4, "crop_mode": "pad"}

    def take(seed, **extra):
        dataset = train_dataset(records, seed=seed, **kwargs, **extra)
        return [images.numpy() for images, _ in dataset.take(4)]

    first, again, other = take(3), take(3), take(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    # The in-memory cache of decoded images changes nothing (images are whole numbers).
    for a, b in zip(first, take(3, cache=True), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_dataset_rejects_an_unknown_class_sampling(tmp_path):
    records = _coded_records(tmp_path, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="class_sampling 'sizes'"):
        train_dataset(
            records,
            classes_per_batch=2,
            images_per_class=2,
            image_size=32,
            class_sampling="sizes",
        )


def test_steps_per_epoch_and_errors(tmp_path):
    records = _coded_records(tmp_path, [0, 0, 1, 1, 2, 2, 2])
    assert steps_per_epoch(records, 2, 2) == 1  # 7 // 4
    assert steps_per_epoch(records, 1, 2) == 3  # 7 // 2
    with pytest.raises(ValueError, match="classes_per_batch=4 exceeds the 3 classes"):
        steps_per_epoch(records, 4, 2)
    with pytest.raises(ValueError, match="must be >= 1"):
        train_dataset(records, classes_per_batch=2, images_per_class=0, image_size=4)
    with pytest.raises(ValueError, match="crop_mode"):
        eval_dataset(records, batch_size=2, image_size=4, crop_mode="centre")


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


def np_affine(image: np.ndarray, a: np.ndarray, t=(0.0, 0.0)) -> np.ndarray:
    """``out(p) = image(A^-1 (p - c - t) + c)`` about the centre c, bilinear, zeros outside.

    A plain loop over output pixels and the four input neighbours of each sample point.
    """
    h, w = image.shape[:2]
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    inverse = np.linalg.inv(a)
    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            sx, sy = inverse @ (np.array([x, y]) - c - np.asarray(t)) + c
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[y, x] += wy * wx * image[yy, xx]
    return out


def _augment(image: np.ndarray, settings, seed=(1, 2)) -> np.ndarray:
    return augment_image(tf.constant(image), tf.constant(seed, tf.int64), settings).numpy()


def _rad(deg: float) -> float:
    return np.deg2rad(deg)


#: Each operation alone at one fixed strength, and its affine map (x right, y down).
FIXED = [
    ({"flip": 1.0}, np.diag([-1.0, 1.0]), (0, 0)),
    ({"scale": [1.25, 1.25]}, np.diag([1.25, 1.25]), (0, 0)),
    ({"translate": [0.1, 0.1]}, np.eye(2), (2.0, 1.0)),  # 10% of 20 px wide, 10 px high
    (
        {"rotate": [30, 30]},
        np.array([[np.cos(_rad(30)), -np.sin(_rad(30))], [np.sin(_rad(30)), np.cos(_rad(30))]]),
        (0, 0),
    ),
    ({"shear": [20, 20]}, np.array([[1.0, np.tan(_rad(20))], [0.0, 1.0]]), (0, 0)),
]


@pytest.mark.parametrize(("config", "a", "t"), FIXED)
def test_each_geometric_operation_alone_is_exactly_its_affine_map(config, a, t):
    image = _image(10, 20).astype(np.float32)
    out = _augment(image, parse_augmentation(config))
    np.testing.assert_allclose(out, np_affine(image, a, t), atol=1e-2)
    assert not np.array_equal(out, image)


def test_grayscale_alone_blends_towards_luma_by_its_strength():
    image = _image(6, 9).astype(np.float32)
    out = _augment(image, parse_augmentation({"grayscale": {"p": 1, "range": [0.6, 0.6]}}))
    luma = image @ np.array([0.2989, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(out, 0.4 * image + 0.6 * luma[..., None], atol=0.1)
    assert out.shape == image.shape


def test_rotation_is_clockwise_and_a_quarter_turn_is_exact():
    image = _image(7, 7).astype(np.float32)
    out = _augment(image, parse_augmentation({"rotate": [90, 90]}))
    np.testing.assert_allclose(out, np.rot90(image, k=-1), atol=1e-3)  # k=-1: clockwise


IDENTITY = {"flip": 1.0, "sx": 1.0, "sy": 1.0, "tx": 0.0, "ty": 0.0, "theta": 0.0, "shear": 0.0}
DRAWN = {
    "flip": ["flip"],
    "scale": ["sx", "sy"],
    "translate": ["tx", "ty"],
    "rotate": ["theta"],
    "shear": ["shear"],
    "grayscale": ["alpha"],
}


def _draws(settings, n: int = 400, seed: int = 5) -> dict[str, np.ndarray]:
    """Parameters of ``n`` images, drawn inside ``Dataset.map`` as the pipeline does."""
    seeds = np.stack([np.full(n, seed), np.arange(n)], axis=1).astype(np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: draw_augmentation(s, settings)
    )
    draws = list(dataset.batch(n))[0]
    return {name: value.numpy() for name, value in draws.items()}


@pytest.mark.parametrize(
    ("op", "config", "low", "high"),
    [
        ("scale", {"scale": [0.8, 1.2]}, 0.8, 1.2),
        ("translate", {"translate": 0.1}, -0.1, 0.1),
        ("rotate", {"rotate": 10}, -_rad(10), _rad(10)),
        ("shear", {"shear": 5}, -_rad(5), _rad(5)),
        ("grayscale", {"grayscale": 1.0}, 0.2, 1.0),
    ],
)
def test_each_operation_alone_draws_in_its_range_and_changes_nothing_else(op, config, low, high):
    draws = _draws(parse_augmentation(config))
    for name in DRAWN[op]:
        values = draws[name]
        assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
        assert values.max() - values.min() > 0.8 * (high - low)  # spread over the range
    others = {**IDENTITY, "alpha": 0.0}
    for name, identity in others.items():
        if name not in DRAWN[op]:
            np.testing.assert_array_equal(draws[name], identity)


def test_probabilities_and_flip_zero_never_flips():
    n = 2000
    never = _draws(parse_augmentation({"flip": 0.0, "rotate": 15, "grayscale": 0.5}), n)
    assert (never["flip"] == 1.0).all()
    assert (_draws(parse_augmentation({"flip": 1.0}), n)["flip"] == -1.0).all()
    for p in (0.5, 0.1):
        settings = parse_augmentation({"flip": p, "rotate": {"p": p, "range": 10}})
        draws = _draws(settings, n)
        sigma = np.sqrt(n * p * (1 - p))
        assert abs((draws["flip"] == -1).sum() - n * p) < 4 * sigma
        assert abs((draws["theta"] != 0).sum() - n * p) < 4 * sigma
    # On the images: flip 0 with the warp running (an identity rotation) never mirrors.
    image = _image(8, 11).astype(np.float32)
    settings = parse_augmentation({"flip": 0.0, "rotate": [0, 0]})
    seeds = np.stack([np.zeros(300), np.arange(300)], axis=1).astype(np.int64)
    outs = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: augment_image(tf.constant(image), s, settings)
    )
    for out in outs:
        np.testing.assert_allclose(out.numpy(), image, atol=1e-3)


def test_max_ops_applies_a_uniform_count_of_distinct_operations():
    """imgaug's SomeOf((0, 2)) over five operations: counts 0, 1, 2 a third of the time each,
    each operation chosen with probability E[count] / 5 = 1 / 5; the flip stays independent."""
    settings = parse_augmentation(
        {"flip": 0.5, "scale": [0.8, 1.2], "translate": 0.1, "rotate": 15, "shear": 10,
         "grayscale": 1.0, "max_ops": 2}
    )  # fmt: skip
    n = 3000
    draws = _draws(settings, n)
    applied = {
        "scale": draws["sx"] != 1.0,
        "translate": draws["tx"] != 0.0,
        "rotate": draws["theta"] != 0.0,
        "shear": draws["shear"] != 0.0,
        "grayscale": draws["alpha"] != 0.0,
    }
    count = np.sum(list(applied.values()), axis=0)
    assert count.max() == 2
    third = np.sqrt(n * (1 / 3) * (2 / 3))
    assert (np.abs(np.bincount(count, minlength=3) - n / 3) < 4 * third).all()
    fifth = np.sqrt(n * 0.2 * 0.8)
    for op, chosen in applied.items():
        assert abs(chosen.sum() - n / 5) < 4 * fifth, op
    assert abs((draws["flip"] == -1).sum() - n / 2) < 4 * np.sqrt(n / 4)
    # A chosen operation still applies with its own probability.
    halved = parse_augmentation({"rotate": {"p": 0.5, "range": 15}, "max_ops": 1})
    rotated = (_draws(halved, n)["theta"] != 0).sum()
    assert abs(rotated - n / 4) < 4 * np.sqrt(n * 0.25 * 0.75)  # P(count 1) * p


def _bilinear_zero_fill(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Samples ``image`` at the points (x, y) from its four nearest pixels, zero outside it."""
    height, width = image.shape[:2]
    out = np.zeros(x.shape + image.shape[2:])
    for column in (np.floor(x), np.floor(x) + 1):
        for row in (np.floor(y), np.floor(y) + 1):
            weight = (1 - np.abs(x - column)) * (1 - np.abs(y - row))
            inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
            pixel = image[np.clip(row, 0, height - 1).astype(int),
                          np.clip(column, 0, width - 1).astype(int)]  # fmt: skip
            out += np.where(inside, weight, 0.0)[..., None] * pixel
    return out


def _augment_image_before_issue_17(image: np.ndarray, seed: tf.Tensor) -> np.ndarray:
    """The augmentation of ``augment: true`` before per-operation settings, in NumPy (float64).

    The frozen contract: 13 stateless uniforms u decide it; a flip when u0 < 0.5; scale
    (u2, u3 in [0.8, 1.2] for x, y) when u1 < 0.25; a shift of (u5, u10) in [-0.1, 0.1] of the
    width, height when u4 < 0.25; a rotation u7 in [-15, 15] degrees when u6 < 0.25; a shear
    u9 in [-10, 10] degrees when u8 < 0.25; a grayscale blend u12 in [0.2, 1] when u11 < 0.25.
    The warp is composed from its matrices and inverted numerically: each output pixel
    samples the input at A^-1 (out - c - t) + c.
    """
    u = tf.random.stateless_uniform([13], seed=seed, dtype=tf.float32).numpy().astype(float)
    height, width = image.shape[:2]
    deg = np.pi / 180.0
    flip = -1.0 if u[0] < 0.5 else 1.0
    sx, sy = (0.8 + 0.4 * u[2], 0.8 + 0.4 * u[3]) if u[1] < 0.25 else (1.0, 1.0)
    t = (-0.1 + 0.2 * np.array([u[5], u[10]])) * (width, height) if u[4] < 0.25 else (0, 0)
    theta = (-15 + 30 * u[7]) * deg if u[6] < 0.25 else 0.0
    shear = (-10 + 20 * u[9]) * deg if u[8] < 0.25 else 0.0
    alpha = 0.2 + 0.8 * u[12] if u[11] < 0.25 else 0.0
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shearing = np.array([[1.0, np.tan(shear)], [0.0, 1.0]])
    a = rotation @ shearing @ np.diag([flip * sx, sy])
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    rows, columns = np.mgrid[0:height, 0:width]
    out = np.stack([columns, rows], axis=-1) - centre - t  # (H, W, 2) as (x, y)
    source = out @ np.linalg.inv(a).T + centre
    warped = _bilinear_zero_fill(image.astype(float), source[..., 0], source[..., 1])
    gray = warped @ np.array([0.2989, 0.5870, 0.1140])  # ITU-R 601 luma, as TensorFlow's
    return np.clip((1 - alpha) * warped + alpha * gray[..., None], 0.0, 255.0)


def test_augment_true_reproduces_the_earlier_pipeline(tmp_path):
    image = _image(12, 15).astype(np.float32)
    changed = 0
    for i in range(60):
        seed = tf.constant([3, i], tf.int64)
        expected = _augment_image_before_issue_17(image, seed)
        got = augment_image(tf.constant(image), seed).numpy()
        np.testing.assert_allclose(got, expected, atol=0.01, err_msg=f"seed [3, {i}]")
        changed += not np.allclose(expected, image)
    assert changed > 30  # most seeds change the image: the comparison covers the operations
    records = _coded_records(tmp_path, [c for c in range(4) for _ in range(3)])
    kwargs = {"classes_per_batch": 2, "images_per_class": 2, "image_size": 8, "crop_mode": "pad"}
    mapping = DEFAULT_AUGMENT_LONG_FORM
    batches = {
        name: [x.numpy() for x, _ in train_dataset(records, seed=11, augment=a, **kwargs).take(5)]
        for name, a in [
            ("true", True),
            ("mapping", parse_augmentation(mapping)),
            ("plain", False),
        ]
    }
    for step, (true, mapped, plain) in enumerate(zip(*batches.values(), strict=True)):
        np.testing.assert_array_equal(true, mapped)
        ids = step * 4 + np.arange(4)  # the element numbers of this batch's images
        before = [
            _augment_image_before_issue_17(x, tf.constant([12, e], tf.int64))
            for x, e in zip(plain, ids, strict=True)
        ]
        np.testing.assert_allclose(true, np.stack(before), atol=0.01)


def test_augment_is_deterministic_and_the_same_inside_map():
    image = _image(12, 12).astype(np.float32)
    seeds = np.array([[0, i] for i in range(6)], np.int64)
    eager = np.stack([augment_image(tf.constant(image), tf.constant(s)).numpy() for s in seeds])
    mapped = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: augment_image(tf.constant(image), s)
    )
    np.testing.assert_allclose(np.stack([x.numpy() for x in mapped]), eager, atol=1e-4)
    assert eager.min() >= 0 and eager.max() <= 255
    assert len({x.tobytes() for x in eager}) > 1  # different seeds, different images
    off = parse_augmentation({})
    np.testing.assert_array_equal(_augment(image, off), image)  # nothing configured: unchanged


def test_demo_data_through_the_pipeline(demo_dataset_root):
    split = metric_learning_split(read_cars196(demo_dataset_root))
    dataset = eval_dataset(split.test, batch_size=10, image_size=32, crop_mode="bbox")
    labels = np.concatenate([labels.numpy() for _, labels in dataset])
    np.testing.assert_array_equal(labels, split.test.labels)
    train = train_dataset(
        split.train, classes_per_batch=4, images_per_class=2, image_size=32, seed=0
    )
    images, labels = next(iter(train))
    assert images.shape == (8, 32, 32, 3) and set(labels.numpy()) <= set(split.train.classes)
    counts = Counter(labels.numpy().tolist())
    assert sorted(counts.values()) == [2, 2, 2, 2]
