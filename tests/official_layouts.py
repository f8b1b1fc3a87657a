"""Small data sets written in the exact official file formats of CUB-200-2011, Stanford Online
Products and In-shop Clothes (header lines, number formats, column padding), with real JPEGs.

Each writer returns the expected content as ``[(relative path, class name, box, role)]`` in
the order the reader should give, so tests compare the reader against an independent record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
               "004.Groove_billed_Ani"]  # fmt: skip


def write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    """A small real JPEG: a colour gradient with noise, different for each seed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    ramp = np.linspace(0, 120, width)[None, :, None]
    pixels = (base + ramp + rng.normal(0, 20, (height, width, 3))).clip(0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG", quality=85)


def write_cub200(root: Path, images_per_class: int = 3) -> list[tuple]:
    """``root/CUB_200_2011/`` with 4 classes (1-2 train, 3-4 test), float boxes.

    Returns:
        ``[(path under CUB_200_2011, class name, (x1, y1, x2, y2) half-open, role)]``.
    """
    base = root / "CUB_200_2011"
    images, labels, boxes, split, expected = [], [], [], [], []
    image_id = 0
    for class_id, name in enumerate(CUB_CLASSES, start=1):
        species = name.split(".", 1)[1]
        for j in range(images_per_class):
            image_id += 1
            relative = f"{name}/{species}_{j + 1:04d}_{7960 + image_id}.jpg"
            width, height = 48 + 4 * j, 40 + 2 * class_id
            write_jpeg(base / "images" / relative, width, height, seed=image_id)
            x, y, w, h = 2.0 + j, 3.0, width - 10.5, height - 8.0
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            boxes.append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}")
            split.append(f"{image_id} {j % 2}")
            box = (int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h)))
            expected.append((f"images/{relative}", name, box, 0))
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text(
        "\n".join(f"{i} {name}" for i, name in enumerate(CUB_CLASSES, start=1)) + "\n"
    )
    return expected


def write_sop(root: Path, test_sizes: list[int] | None = None) -> list[tuple]:
    """``root/Stanford_Online_Products/`` with 4 training classes of 2-4 images and test
    classes of ``test_sizes`` images (default 4 classes of 2-4).

    Returns:
        ``[(path, class name, box, role)]`` (no boxes: all ``-1``).
    """
    base = root / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path"
    expected = []
    sizes = [2, 3, 4, 2, *(test_sizes or [3, 2, 4, 2])]
    categories = [("bicycle_final", 1), ("cabinet_final", 2)]
    product = 111085122870
    for split, classes in (("train", range(1, 5)), ("test", range(5, len(sizes) + 1))):
        lines = [header]
        image_id = 0
        for class_id in classes:
            folder, super_id = categories[class_id % 2]
            product += 7
            for j in range(sizes[class_id - 1]):
                image_id += 1
                relative = f"{folder}/{product}_{j}.JPG"
                write_jpeg(base / relative, 40 + 3 * j, 36, seed=100 * class_id + j)
                lines.append(f"{image_id} {class_id} {super_id} {relative}")
                category = folder.removesuffix("_final")
                expected.append((relative, f"{category}/{class_id}", (-1, -1, -1, -1), 0))
        (base / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    (base / "Ebay_info.txt").write_text("image_id class_id super_class_id path\n")
    return expected


_INSHOP_NAME_WIDTH = 72
_INSHOP_ITEM_WIDTH = 24


def _inshop_line(*fields: str) -> str:
    name, item, rest = fields[0], fields[1], fields[2:]
    return name.ljust(_INSHOP_NAME_WIDTH) + item.ljust(_INSHOP_ITEM_WIDTH) + " ".join(rest)


def write_inshop(root: Path, with_boxes: bool = True, test_items: int = 3) -> list[tuple]:
    """``root/In-shop Clothes Retrieval Benchmark/`` with 3 training items (3 images each) and
    ``test_items`` test items (2 queries, 2 gallery images each), DeepFashion's two header
    lines and padded columns, and ``Anno/list_bbox_inshop.txt`` with zero-padded coordinates.

    Returns:
        ``[(path, item id, box, role)]`` in file order (role 0 train, 1 query, 2 gallery).
    """
    base = root / "In-shop Clothes Retrieval Benchmark"
    rows, expected, box_rows = [], [], []
    plan = [("train", 3)] * 3 + [("test", 4)] * test_items
    for number, (part, count) in enumerate(plan, start=1):
        item = f"id_{number:08d}"
        kind = "WOMEN/Dresses" if number % 2 else "MEN/Denim"
        for j in range(count):
            status = "train" if part == "train" else ("query" if j < 2 else "gallery")
            view = ["front", "side", "back", "full"][j]
            name = f"img/{kind}/{item}/{j + 1:02d}_{j + 1}_{view}.jpg"
            write_jpeg(base / name, 44, 52, seed=1000 + 10 * number + j)
            rows.append(_inshop_line(name, item, status))
            box = (3 + j, 4, 40, 50 - j)
            box_rows.append(_inshop_line(name, "1", str(1 + j % 3), *(f"{v:03d}" for v in box)))
            role = {"train": 0, "query": 1, "gallery": 2}[status]
            expected.append((name, item, box if with_boxes else (-1, -1, -1, -1), role))
    (base / "Eval").mkdir(parents=True, exist_ok=True)
    partition = [str(len(rows)), "image_name item_id evaluation_status", *rows]
    (base / "Eval" / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    if with_boxes:
        (base / "Anno").mkdir(parents=True, exist_ok=True)
        header = "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2"
        text = "\n".join([str(len(box_rows)), header, *box_rows]) + "\n"
        (base / "Anno" / "list_bbox_inshop.txt").write_text(text)
    return expected
