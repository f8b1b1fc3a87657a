"""A small synthetic "vehicles" data set in Stanford Cars196's official file format.

:func:`generate_demo_dataset` writes ``car_ims/NNNNNN.jpg`` and ``cars_annos.mat`` exactly as
the real Cars196 download lays them out, so every reader, check and pipeline of the project runs
on it unchanged and nothing has to be downloaded. Each class is a distinct combination of body
shape (sedan, hatchback, SUV, pickup, sports car, van), markings (stripes, a door emblem, a
checker band, diagonal bands) and a usual body colour; shape and marking identify the class
(up to 36 classes), while half of a class's images are painted in any other colour, so colour
alone does not give a class away and an untrained network retrieves poorly. Each image varies
the image size and aspect ratio, the vehicle's size, position and direction, the body colour
and shade, the background (sky/ground gradient and colourful clutter), the lighting and the
noise, and comes with the vehicle's exact bounding box.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from net.data import DataError

# Body outlines and windows in vehicle units: x along the body (0 = front, 1 = rear), y up from
# the ground, both in units of the body length. Wheels: (x of each axle, radius). Band: the
# y-range of the lower body where markings go.
_SHAPES: dict[str, dict] = {
    "sedan": {
        "body": [(0, 0.10), (0, 0.26), (0.05, 0.30), (0.25, 0.32), (0.35, 0.48), (0.68, 0.48),
                 (0.80, 0.32), (1, 0.29), (1, 0.10)],
        "windows": [[(0.37, 0.33), (0.42, 0.45), (0.66, 0.45), (0.76, 0.33)]],
        "wheels": ((0.2, 0.8), 0.09), "band": (0.13, 0.27),
    },
    "hatchback": {
        "body": [(0, 0.10), (0, 0.28), (0.25, 0.33), (0.38, 0.56), (0.92, 0.56), (1, 0.38),
                 (1, 0.10)],
        "windows": [[(0.40, 0.35), (0.44, 0.52), (0.90, 0.52), (0.95, 0.36)]],
        "wheels": ((0.18, 0.82), 0.10), "band": (0.13, 0.30),
    },
    "suv": {
        "body": [(0, 0.12), (0, 0.38), (0.12, 0.42), (0.20, 0.68), (0.97, 0.68), (1, 0.60),
                 (1, 0.12)],
        "windows": [[(0.23, 0.45), (0.28, 0.63), (0.58, 0.63), (0.58, 0.45)],
                    [(0.62, 0.45), (0.62, 0.63), (0.94, 0.63), (0.95, 0.45)]],
        "wheels": ((0.18, 0.80), 0.12), "band": (0.16, 0.38),
    },
    "pickup": {
        "body": [(0, 0.12), (0, 0.36), (0.15, 0.40), (0.25, 0.66), (0.52, 0.66), (0.55, 0.40),
                 (1, 0.40), (1, 0.12)],
        "windows": [[(0.28, 0.43), (0.31, 0.61), (0.50, 0.61), (0.50, 0.43)]],
        "wheels": ((0.18, 0.80), 0.12), "band": (0.16, 0.37),
    },
    "sports": {
        "body": [(0, 0.08), (0, 0.18), (0.30, 0.26), (0.45, 0.38), (0.68, 0.38), (0.88, 0.28),
                 (1, 0.26), (1, 0.08)],
        "windows": [[(0.47, 0.28), (0.50, 0.35), (0.66, 0.35), (0.80, 0.28)]],
        "wheels": ((0.2, 0.8), 0.085), "band": (0.10, 0.22),
    },
    "van": {
        "body": [(0, 0.10), (0, 0.50), (0.08, 0.75), (1, 0.75), (1, 0.10)],
        "windows": [[(0.10 + 0.18 * i, 0.52), (0.10 + 0.18 * i, 0.68), (0.22 + 0.18 * i, 0.68),
                     (0.22 + 0.18 * i, 0.52)] for i in range(5)],
        "wheels": ((0.15, 0.85), 0.10), "band": (0.16, 0.46),
    },
}  # fmt: skip

_COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (205, 30, 35),
    "blue": (30, 70, 210),
    "green": (35, 165, 60),
    "yellow": (235, 205, 30),
    "orange": (245, 125, 20),
    "purple": (135, 45, 170),
    "white": (238, 238, 238),
    "black": (35, 35, 40),
}

_MARKINGS = ("plain", "stripe", "two stripes", "emblem", "checker band", "diagonal bands")


def _class_designs(num_classes: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Picks distinct (shape, colour, marking) class designs.

    Shape and marking together identify a class wherever possible (36 pairs): colour is only the
    class's usual colour (see :data:`USUAL_COLOUR_PROBABILITY`), so a model has to learn shapes
    and markings rather than colour histograms. Past 36 classes, pairs repeat with another
    colour.
    """
    combos = list(itertools.product(_SHAPES, _COLOURS, _MARKINGS))
    if num_classes > len(combos):
        raise ValueError(f"At most {len(combos)} demo classes are available, got {num_classes}")
    pairs = list(itertools.product(_SHAPES, _MARKINGS))
    colours = list(_COLOURS)
    chosen: list[tuple[str, str, str]] = []
    while len(chosen) < num_classes:
        for index in rng.permutation(len(pairs)):
            shape, marking = pairs[index]
            free = [c for c in colours if (shape, c, marking) not in chosen]
            if free and len(chosen) < num_classes:
                chosen.append((shape, free[int(rng.integers(len(free)))], marking))
    return chosen


#: Probability that an image shows its class's usual colour; otherwise any colour.
USUAL_COLOUR_PROBABILITY = 0.5


def _to_pixels(points, x0: float, ground: float, length: float, facing_left: bool) -> np.ndarray:
    """Maps vehicle units to (int32) pixel coordinates, mirrored when facing left."""
    pts = np.asarray(points, dtype=np.float64)
    x = pts[:, 0] if facing_left else 1.0 - pts[:, 0]
    return np.stack([x0 + x * length, ground - pts[:, 1] * length], axis=1).round().astype(np.int32)


def _marking_polygons(marking: str, low: float, high: float) -> list[list[tuple[float, float]]]:
    """The filled polygons, in vehicle units, of a marking on the band from ``low`` to ``high``.

    Stripes run the body's length, the checker band's squares alternate between the band's
    lower and upper half, diagonal bands lean towards the rear; a plain body and the emblem (a
    circle, drawn apart) have none.
    """
    mid, span = (low + high) / 2, high - low

    def rectangle(x_lo: float, x_hi: float, y_lo: float, y_hi: float) -> list[tuple[float, float]]:
        return [(x_lo, y_lo), (x_lo, y_hi), (x_hi, y_hi), (x_hi, y_lo)]

    if marking == "stripe":
        return [rectangle(0, 1, mid - 0.2 * span, mid + 0.2 * span)]
    if marking == "two stripes":
        centres = (low + 0.25 * span, low + 0.75 * span)
        return [rectangle(0, 1, c - 0.1 * span, c + 0.1 * span) for c in centres]
    if marking == "checker band":  # ten squares, alternately in the lower and upper half
        half = span / 2
        return [
            rectangle(i / 10, (i + 1) / 10, low + i % 2 * half, low + (i % 2 + 1) * half)
            for i in range(10)
        ]
    if marking == "diagonal bands":
        starts = (0.25, 0.45, 0.65)
        return [[(x, low), (x + 0.12, high), (x + 0.2, high), (x + 0.08, low)] for x in starts]
    return []


def _draw_vehicle(
    image: np.ndarray,
    mask: np.ndarray,
    design: tuple[str, str, str],
    body_rgb: np.ndarray,
    x0: float,
    ground: float,
    length: float,
    facing_left: bool,
) -> None:
    """Draws one vehicle into ``image`` (RGB) and its silhouette into ``mask``, in place."""
    shape_name, _, marking = design
    shape = _SHAPES[shape_name]

    def px(points):
        return _to_pixels(points, x0, ground, length, facing_left)

    body = px(shape["body"])
    colour = tuple(int(c) for c in body_rgb)
    cv2.fillPoly(image, [body], colour, cv2.LINE_AA)
    cv2.fillPoly(mask, [body], 255)
    luminance = 0.299 * body_rgb[0] + 0.587 * body_rgb[1] + 0.114 * body_rgb[2]
    contrast = (20, 20, 25) if luminance > 140 else (245, 245, 245)
    low, high = shape["band"]
    if marking == "emblem":
        centre = tuple(int(v) for v in px([(0.5, (low + high) / 2)])[0])
        cv2.circle(
            image, centre, max(2, int(0.4 * (high - low) * length)), contrast, -1, cv2.LINE_AA
        )
    for polygon in _marking_polygons(marking, low, high):
        cv2.fillPoly(image, [px(polygon)], contrast)
    for window in shape["windows"]:
        cv2.fillPoly(image, [px(window)], (150, 185, 210), cv2.LINE_AA)
    axles, radius = shape["wheels"]
    for axle in axles:
        centre = tuple(int(v) for v in px([(axle, radius)])[0])
        r = max(2, int(round(radius * length)))
        cv2.circle(image, centre, r, (25, 25, 25), -1, cv2.LINE_AA)
        cv2.circle(image, centre, max(1, r // 2), (170, 170, 170), -1, cv2.LINE_AA)
        cv2.circle(mask, centre, r, 255, -1)


def _render(
    design: tuple[str, str, str], rng: np.random.Generator, min_size: int, max_size: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Renders one image of a class.

    Returns:
        ``(image, box)``: (H, W, 3) uint8 RGB and the vehicle's 0-based half-open
        ``(x1, y1, x2, y2)`` box.
    """
    width, height = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    # Background: a sky-to-ground gradient in a random muted tone, plus clutter.
    horizon = rng.uniform(0.35, 0.7) * height
    sky, earth = rng.uniform(90, 210, size=3), rng.uniform(60, 160, size=3)
    rows = np.arange(height)[:, None]
    tone = np.where(rows < horizon, sky + (rows / height) * 30, earth - (rows / height) * 30)
    image = np.broadcast_to(tone[:, None, :], (height, width, 3)).astype(np.float64)
    image = np.ascontiguousarray(image.clip(0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(float(v) for v in rng.uniform(30, 230, size=3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(3, max(4, min(width, height) // 3)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + size, y + 2 * size), colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), size // 2 + 1, colour, -1, cv2.LINE_AA)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 3)), cv2.LINE_AA)

    shape = _SHAPES[design[0]]
    tallest = max(y for _, y in shape["body"])
    length = rng.uniform(0.5, 0.9) * width
    length = min(length, 0.85 * height / tallest)
    x0 = rng.uniform(0, width - length)
    ground = rng.uniform(tallest * length, height - 1)
    colour = design[1] if rng.uniform() < USUAL_COLOUR_PROBABILITY else rng.choice(list(_COLOURS))
    body_rgb = (np.array(_COLOURS[colour]) + rng.uniform(-18, 18, size=3)).clip(0, 255)
    mask = np.zeros((height, width), np.uint8)
    _draw_vehicle(image, mask, design, body_rgb, x0, ground, length, bool(rng.integers(2)))

    # Lighting: brightness, contrast and a linear light falloff; then sensor noise.
    gain = rng.uniform(0.7, 1.25) * (
        1 + rng.uniform(-0.2, 0.2) * np.linspace(-1, 1, width)[None, :, None]
    )
    out = (image.astype(np.float64) - 128) * rng.uniform(0.8, 1.15) + 128
    out = out * gain + rng.normal(0, rng.uniform(1, 5), size=out.shape)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return out.clip(0, 255).astype(np.uint8), box


def is_demo_dataset(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds the data set :func:`generate_demo_dataset` writes.

    Its ``cars_annos.mat`` carries ``demo_parameters``, which the official file does not (only
    the variable names are read).
    """
    try:
        variables = scipy.io.whosmat(Path(root) / "cars_annos.mat")
    except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError):
        return False
    return any(name == "demo_parameters" for name, _, _ in variables)


def generate_demo_dataset(
    root: str | os.PathLike,
    *,
    num_classes: int = 36,
    images_per_class: int = 24,
    seed: int = 0,
    min_size: int = 64,
    max_size: int = 128,
) -> Path:
    """Writes a synthetic vehicles data set in Cars196's ``cars_annos.mat`` + ``car_ims/`` format.

    ``cars_annos.mat`` holds ``annotations`` (a 1 x N struct array with ``relative_im_path``,
    ``bbox_x1``, ``bbox_y1``, ``bbox_x2``, ``bbox_y2`` (1-based, inclusive), ``class``
    (1-based), ``test``), ``class_names`` (1 x C) and, beyond the official file, the generator's
    parameters in ``demo_parameters`` (a JSON string). Images are JPEGs of ``min_size`` to
    ``max_size`` pixels a side. The output depends only on the arguments. The call does nothing
    when ``root`` already holds a complete data set made with the same arguments; the
    annotation file is written last, so an interrupted run is redone.

    Args:
        root: output folder (created).
        num_classes: number of classes, at most 288; split like Cars196 (first half train).
        images_per_class: images per class (at least 2).
        seed: random seed.
        min_size: smallest image side in pixels (at least 32).
        max_size: largest image side in pixels.

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: for out-of-range arguments.
        DataError: if ``root`` holds a ``cars_annos.mat`` not written by this generator.
    """
    if num_classes < 2 or images_per_class < 2:
        raise ValueError(
            f"Need at least 2 classes and 2 images per class, got {num_classes} and "
            f"{images_per_class}"
        )
    if not 32 <= min_size <= max_size:
        raise ValueError(f"Need 32 <= min_size <= max_size, got {min_size} and {max_size}")
    root = Path(root)
    annotations_path = root / "cars_annos.mat"
    parameters = json.dumps(
        {
            "num_classes": num_classes,
            "images_per_class": images_per_class,
            "seed": seed,
            "min_size": min_size,
            "max_size": max_size,
            "version": 2,
        },
        sort_keys=True,
    )
    count = num_classes * images_per_class
    if annotations_path.is_file() and _existing_is_complete(root, parameters, count):
        return root

    rng = np.random.default_rng(seed)
    designs = _class_designs(num_classes, rng)
    (root / "car_ims").mkdir(parents=True, exist_ok=True)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, count), dtype=[(name, object) for name in fields])
    for i, (label, k) in enumerate(itertools.product(range(num_classes), range(images_per_class))):
        relative = f"car_ims/{i + 1:06d}.jpg"
        image_rng = np.random.default_rng([seed, label, k])
        box = _write_image(root, relative, designs[label], image_rng, min_size, max_size)
        annotations[0, i] = _annotation(relative, box, label, k)
    class_names = np.empty((1, num_classes), dtype=object)
    for label, (shape, colour, marking) in enumerate(designs):
        class_names[0, label] = f"{colour} {shape}, {marking}"
    temporary = root / "cars_annos.partial.mat"
    scipy.io.savemat(
        temporary,
        {"annotations": annotations, "class_names": class_names, "demo_parameters": parameters},
    )
    temporary.replace(annotations_path)
    return root


def _existing_is_complete(root: Path, parameters: str, count: int) -> bool:
    """Whether the demo data set in ``root`` was made with ``parameters`` and has every image.

    An incomplete or differently made one has its annotation file removed, to be written again.

    Args:
        root: the data set folder, which holds a ``cars_annos.mat``.
        parameters: the generator's parameters as the JSON string the file records.
        count: the number of images.

    Returns:
        Whether the data set can be used as it is.

    Raises:
        DataError: the ``cars_annos.mat`` cannot be read or was not written by the generator.
    """
    annotations_path = root / "cars_annos.mat"
    try:
        existing = scipy.io.loadmat(annotations_path, squeeze_me=True)
    except Exception as error:
        raise DataError(f"Cannot read existing {annotations_path}: {error}") from error
    if "demo_parameters" not in existing:
        raise DataError(
            f"{annotations_path} exists and was not written by the demo generator; "
            "refusing to overwrite it"
        )
    complete = all((root / f"car_ims/{i:06d}.jpg").is_file() for i in range(1, count + 1))
    if str(existing["demo_parameters"]) == parameters and complete:
        return True
    annotations_path.unlink()
    return False


def _write_image(
    root: Path,
    relative: str,
    design: tuple[str, str, str],
    rng: np.random.Generator,
    min_size: int,
    max_size: int,
) -> tuple[int, int, int, int]:
    """Renders one vehicle and writes it as a JPEG of random quality.

    Args:
        root: the data set folder.
        relative: the image's path below ``root``.
        design: the class's ``(shape, colour, marking)``.
        rng: the image's own generator (drawn from for the picture, then the quality).
        min_size: smallest image side in pixels.
        max_size: largest image side in pixels.

    Returns:
        The vehicle's box ``(x1, y1, x2, y2)``, 0-based with exclusive ends.
    """
    image, box = _render(design, rng, min_size, max_size)
    quality = int(rng.integers(85, 96))
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {relative}")
    (root / relative).write_bytes(encoded.tobytes())
    return box


def _annotation(relative: str, box: tuple[int, int, int, int], label: int, k: int) -> tuple:
    """One image's row of ``annotations``, as MATLAB-style 1 x 1 arrays.

    Args:
        relative: the image's path below the data set folder.
        box: the vehicle's 0-based half-open ``(x1, y1, x2, y2)`` box.
        label: the 0-based class.
        k: the image's number within its class; odd numbers are test images.

    Returns:
        The row, with the box 1-based inclusive and the class 1-based like the real file.
    """
    x1, y1, x2, y2 = box
    return (
        np.array([relative]),
        np.array([[x1 + 1]], np.uint16),
        np.array([[y1 + 1]], np.uint16),
        np.array([[x2]], np.uint16),
        np.array([[y2]], np.uint16),
        np.array([[label + 1]], np.uint16),
        np.array([[k % 2]], np.uint8),
    )
