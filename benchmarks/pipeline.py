"""Input pipeline: ``net.pipeline.train_dataset`` vs the seed's Python-generator loader.

Both produce the same thing from the same JPEGs: class-balanced P x K batches of float32 RGB
images, padded to a square and resized to ``--image-size``, without augmentation (the seed's
augmentations were Python code too; leaving them out of both measures the loading alone). The
seed's way, re-created faithfully: a Python generator that picks P classes and K images each,
and per image calls ``cv2.imread``, converts BGR to RGB, ``np.pad``s to a square and
``cv2.resize``s, wrapped by ``tf.data.Dataset.from_generator`` and batched. Ours: tf.data ops in
``Dataset.map(num_parallel_calls=AUTOTUNE)``. Also shown, not in the ratio: ours with the
training augmentations, ours with the in-memory cache, and a variant of ours that decodes every
JPEG at full size and then resizes with antialiasing, to show what decoding at a reduced DCT
scale (``net.pipeline.decode_for_size``) gains.

    python -m benchmarks.pipeline [--quick] [--data-dir DIR]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import common


def seed_dataset(
    records, *, classes_per_batch: int, images_per_class: int, image_size: int, seed: int
):
    """The seed repository's loader: per-image OpenCV/NumPy work in a Python generator.

    Args:
        records: ``net.data.Records`` to sample from.
        classes_per_batch: P.
        images_per_class: K.
        image_size: Side S of the square output.
        seed: Sampling seed.

    Returns:
        An infinite ``tf.data.Dataset`` of (images (P*K, S, S, 3) float32 RGB in [0, 255],
        labels (P*K,) int32).
    """
    import cv2
    import numpy as np
    import tensorflow as tf

    by_class = {c: np.flatnonzero(records.labels == c) for c in np.unique(records.labels)}
    classes = np.array(sorted(by_class))

    def generate() -> Iterator[tuple[np.ndarray, np.int32]]:
        rng = np.random.default_rng(seed)
        while True:
            for c in rng.choice(classes, classes_per_batch, replace=False):
                members = by_class[c]
                picks = rng.choice(
                    members, images_per_class, replace=len(members) < images_per_class
                )
                for i in picks:
                    image = cv2.cvtColor(cv2.imread(records.paths[i]), cv2.COLOR_BGR2RGB)
                    h, w = image.shape[:2]
                    side = max(h, w)
                    top, left = (side - h) // 2, (side - w) // 2
                    image = np.pad(image, ((top, side - h - top), (left, side - w - left), (0, 0)))
                    image = cv2.resize(image, (image_size, image_size))
                    yield image.astype(np.float32), np.int32(records.labels[i])

    signature = (
        tf.TensorSpec((image_size, image_size, 3), tf.float32),
        tf.TensorSpec((), tf.int32),
    )
    return (
        tf.data.Dataset.from_generator(generate, output_signature=signature)
        .batch(classes_per_batch * images_per_class)
        .prefetch(tf.data.AUTOTUNE)
    )


def images_per_second(dataset, *, warmup: int, batches: int) -> float:
    """Images per second of a batched dataset over ``batches`` batches after ``warmup``."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def load_image_full_decode(path, bbox, *, image_size: int, crop_mode: str = "bbox"):
    """``net.pipeline.load_image`` without DCT-scaled decoding: full decode, antialiased resize."""
    import tensorflow as tf

    from net.pipeline import crop_or_pad, decode_image

    image = crop_or_pad(decode_image(tf.io.read_file(path)), bbox, crop_mode)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
    image.set_shape([image_size, image_size, 3])
    return image


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and prints its table and ratio; returns the numbers."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="where to write (or reuse) the JPEGs; default a temp dir")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--images-per-class-on-disk", type=int)
    p.add_argument("--min-size", type=int)
    p.add_argument("--max-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--classes-per-batch", type=int)
    p.add_argument("--images-per-class", type=int)
    p.add_argument("--batches", type=int)
    p.add_argument("--warmup", type=int)
    args = common.sizes(
        p.parse_args(argv),
        quick=dict(
            num_classes=4,
            images_per_class_on_disk=6,
            min_size=64,
            max_size=128,
            image_size=64,
            classes_per_batch=2,
            images_per_class=2,
            batches=3,
            warmup=1,
        ),
        full=dict(
            num_classes=26,
            images_per_class_on_disk=20,
            min_size=200,
            max_size=500,
            image_size=224,
            classes_per_batch=8,
            images_per_class=4,
            batches=40,
            warmup=3,
        ),
    )
    from unittest import mock

    from net import pipeline
    from net.data import read_cars196
    from net.demo_data import generate_demo_dataset
    from net.pipeline import train_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_dir or tmp)
        generate_demo_dataset(
            root,
            num_classes=args.num_classes,
            images_per_class=args.images_per_class_on_disk,
            min_size=args.min_size,
            max_size=args.max_size,
            seed=0,
        )
        records = read_cars196(root)
        shape = dict(
            classes_per_batch=args.classes_per_batch,
            images_per_class=args.images_per_class,
            image_size=args.image_size,
        )
        timing = dict(warmup=args.warmup, batches=args.batches)
        print(
            f"{len(records)} JPEGs of {args.min_size}-{args.max_size} px, "
            f"{records.num_classes} classes; batches of "
            f"{args.classes_per_batch} x {args.images_per_class} at {args.image_size} px; "
            f"{args.batches} batches timed after {args.warmup}"
        )
        seed_rate = images_per_second(seed_dataset(records, seed=0, **shape), **timing)
        ours = train_dataset(records, crop_mode="pad", augment=False, seed=0, **shape)
        ours_rate = images_per_second(ours, **timing)
        augmented = train_dataset(records, crop_mode="pad", augment=True, seed=0, **shape)
        augmented_rate = images_per_second(augmented, **timing)
        cached = train_dataset(records, crop_mode="pad", augment=True, seed=0, cache=True, **shape)
        cached_rate = images_per_second(cached, **timing)
        # The same train_dataset, its per-image loader swapped for a full decode.
        with mock.patch.object(pipeline, "load_image", load_image_full_decode):
            plain = train_dataset(records, crop_mode="pad", augment=False, seed=0, **shape)
            plain_rate = images_per_second(plain, **timing)

    rows = [
        ("seed: cv2 + np.pad in from_generator", seed_rate),
        ("ours: train_dataset (no augment)", ours_rate),
        ("ours: + augmentation", augmented_rate),
        ("ours: + augmentation, cache=True", cached_rate),
        ("variant: ours, full decode + antialiased resize", plain_rate),
    ]
    common.print_table(
        ["loader", "images/s", "vs seed"],
        [[name, f"{rate:.0f}", f"{rate / seed_rate:.2f}x"] for name, rate in rows],
    )
    ratio = ours_rate / seed_rate
    print(common.ratio_line(ratio, 3.0))
    return {
        "seed": seed_rate,
        "ours": ours_rate,
        "ours_augmented": augmented_rate,
        "ours_cached": cached_rate,
        "variant_full_decode": plain_rate,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
