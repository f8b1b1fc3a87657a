"""Tests for net.data: Cars196 layouts, generic layouts, split and up-front validation."""

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from net.data import (
    DataError,
    Records,
    metric_learning_split,
    read_cars196,
    read_csv_manifest,
    read_dataset,
    read_image_folder,
    validate_records,
)

# A tiny "Cars196": 6 classes, (class, test flag, 1-based inclusive box) per image; sizes vary.
CLASS_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 2012", "B", "C", "D"]
ANNOTATIONS = [
    # class, test, (x1, y1, x2, y2) 1-based inclusive, (width, height)
    (1, 0, (1, 1, 40, 30), (40, 30)),
    (1, 1, (5, 6, 20, 25), (32, 28)),
    (2, 0, (2, 3, 30, 20), (30, 24)),
    (2, 1, (1, 1, 10, 10), (36, 20)),
    (2, 0, (3, 3, 33, 18), (36, 20)),
    (3, 1, (10, 2, 25, 19), (26, 22)),
    (3, 0, (1, 1, 26, 22), (26, 22)),
    (4, 0, (4, 4, 16, 16), (20, 20)),
    (4, 1, (2, 2, 9, 9), (24, 16)),
    (5, 1, (1, 2, 3, 4), (30, 30)),
    (5, 0, (7, 7, 21, 21), (30, 30)),
    (6, 0, (2, 2, 20, 12), (28, 14)),
    (6, 1, (2, 2, 12, 20), (14, 28)),
]


def _write_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


def _matlab_struct(rows: list[dict], matlab_types: bool) -> np.ndarray:
    """A 1 x N struct array; MATLAB stores each scalar as a 1 x 1 array (uint8/uint16/double)."""
    names = list(rows[0])
    if matlab_types:
        array = np.zeros((1, len(rows)), dtype=[(n, object) for n in names])
        for i, row in enumerate(rows):
            array[0, i] = tuple(
                np.array([v]) if isinstance(v, str) else np.array([[v]], np.uint16)
                for v in row.values()
            )
        return array
    # Plain scipy.io.savemat of a structured array with native fields.
    dtype = [(n, "U64" if isinstance(rows[0][n], str) else np.float64) for n in names]
    return np.array([tuple(row.values()) for row in rows], dtype=dtype)


def _cell(names: list[str]) -> np.ndarray:
    cell = np.empty((1, len(names)), dtype=object)
    cell[0, :] = names
    return cell


def write_cars196(root: Path, layout: str, matlab_types: bool = True) -> None:
    """Writes the tiny data set in the official all-in-one or devkit layout."""
    if layout == "annos":
        rows = []
        for i, (cls, test, box, (w, h)) in enumerate(ANNOTATIONS):
            _write_jpeg(root / f"car_ims/{i + 1:06d}.jpg", w, h, seed=i)
            rows.append(
                {"relative_im_path": f"car_ims/{i + 1:06d}.jpg"}
                | dict(zip(("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"), box, strict=True))
                | {"class": cls, "test": test}
            )
        scipy.io.savemat(
            root / "cars_annos.mat",
            {"annotations": _matlab_struct(rows, matlab_types), "class_names": _cell(CLASS_NAMES)},
        )
        return
    (root / "devkit").mkdir(parents=True)
    scipy.io.savemat(root / "devkit/cars_meta.mat", {"class_names": _cell(CLASS_NAMES)})
    for test, folder, annos in (
        (0, "cars_train", "devkit/cars_train_annos.mat"),
        (1, "cars_test", "cars_test_annos_withlabels.mat"),
    ):
        rows = []
        for i, (cls, flag, box, (w, h)) in enumerate(ANNOTATIONS):
            if flag != test:
                continue
            fname = f"{len(rows) + 1:05d}.jpg"
            _write_jpeg(root / folder / fname, w, h, seed=i)
            rows.append(
                dict(zip(("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"), box, strict=True))
                | {"class": cls, "fname": fname}
            )
        scipy.io.savemat(root / annos, {"annotations": _matlab_struct(rows, matlab_types)})


def _content_keys(records: Records) -> list[tuple]:
    """(label, box, image file hash) per record, sorted: layout-independent identity."""
    return sorted(
        (int(label), tuple(box.tolist()), hashlib.sha1(Path(path).read_bytes()).hexdigest())
        for path, label, box in zip(records.paths, records.labels, records.bboxes, strict=True)
    )


@pytest.mark.parametrize("matlab_types", [True, False])
def test_both_cars196_layouts_give_the_same_records(tmp_path, matlab_types):
    write_cars196(tmp_path / "annos", "annos", matlab_types)
    write_cars196(tmp_path / "devkit", "devkit", matlab_types)
    annos = read_cars196(tmp_path / "annos")  # layout="auto"
    devkit = read_cars196(tmp_path / "devkit")
    assert len(annos) == len(devkit) == len(ANNOTATIONS)
    assert annos.class_names == devkit.class_names == tuple(CLASS_NAMES)
    assert _content_keys(annos) == _content_keys(devkit)
    # File order of the all-in-one file; 1-based inclusive boxes -> 0-based half-open:
    # (5, 6, 20, 25) covers columns 4..19 and rows 5..24, i.e. [4, 5, 20, 25).
    assert annos.labels.tolist() == [cls - 1 for cls, *_ in ANNOTATIONS]
    assert annos.bboxes[1].tolist() == [4, 5, 20, 25]
    assert annos.bboxes[0].tolist() == [0, 0, 40, 30]  # the whole 40 x 30 image
    assert annos.paths[0] == str((tmp_path / "annos/car_ims/000001.jpg").resolve())
    assert annos.labels.dtype == np.int64 and annos.bboxes.shape == (len(ANNOTATIONS), 4)
    # Every box lies inside its image, so the data set passes validation unchanged.
    assert validate_records(annos) is annos
    assert validate_records(devkit) is devkit


def test_explicit_layouts_and_single_annotation(tmp_path):
    write_cars196(tmp_path, "annos")
    assert len(read_cars196(tmp_path, layout="annos")) == len(ANNOTATIONS)
    with pytest.raises(DataError, match="cars_meta.mat"):
        read_cars196(tmp_path, layout="devkit")
    with pytest.raises(ValueError, match="layout"):
        read_cars196(tmp_path, layout="kaggle")
    # A struct array of one element squeezes to a 0-d array in loadmat.
    one = tmp_path / "one"
    _write_jpeg(one / "car_ims/000001.jpg", 10, 10, 0)
    row = {"relative_im_path": "car_ims/000001.jpg", "bbox_x1": 1, "bbox_y1": 2, "bbox_x2": 9}
    row |= {"bbox_y2": 10, "class": 2, "test": 0}
    scipy.io.savemat(
        one / "cars_annos.mat",
        {"annotations": _matlab_struct([row], True), "class_names": _cell(["a", "b"])},
    )
    records = read_cars196(one)
    assert records.labels.tolist() == [1] and records.bboxes.tolist() == [[0, 1, 9, 10]]


def test_unreadable_annotation_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"cars_meta\.mat"):
        read_cars196(tmp_path)  # nothing there: auto -> devkit -> missing meta file
    (tmp_path / "cars_annos.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(DataError, match=r"Cannot read annotation file .*cars_annos\.mat"):
        read_cars196(tmp_path)
    scipy.io.savemat(tmp_path / "cars_annos.mat", {"class_names": _cell(["a"])})
    with pytest.raises(DataError, match=r"cars_annos\.mat lacks variable\(s\) \['annotations'\]"):
        read_cars196(tmp_path)
    rows = [{"relative_im_path": "car_ims/1.jpg", "bbox_x1": 1, "class": 1}]
    scipy.io.savemat(
        tmp_path / "cars_annos.mat",
        {"annotations": _matlab_struct(rows, True), "class_names": _cell(["a"])},
    )
    with pytest.raises(DataError, match=r"cars_annos\.mat: annotations lack field 'bbox_y1'"):
        read_cars196(tmp_path)
    # Devkit without the labelled test annotations points at the file to get.
    write_cars196(tmp_path / "dk", "devkit")
    (tmp_path / "dk/cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DataError, match="cars_test_annos_withlabels.mat"):
        read_cars196(tmp_path / "dk")


def test_class_numbers_outside_class_names_are_rejected(tmp_path):
    rows = [
        {"relative_im_path": "car_ims/000001.jpg", "bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 2}
        | {"bbox_y2": 2, "class": 3, "test": 0}
    ]
    scipy.io.savemat(
        tmp_path / "cars_annos.mat",
        {"annotations": _matlab_struct(rows, True), "class_names": _cell(["a", "b"])},
    )
    with pytest.raises(DataError, match=r"class numbers must lie in 1\.\.2"):
        read_cars196(tmp_path)


def _records(labels: list[int], num_names: int | None = None) -> Records:
    n = len(labels)
    return Records(
        paths=np.array([f"/x/{i}.jpg" for i in range(n)]),
        labels=np.array(labels),
        bboxes=np.full((n, 4), -1),
        class_names=tuple(f"c{i}" for i in range(num_names or max(labels) + 1)),
    )


def test_metric_learning_split_sizes_and_disjointness():
    # Class c has c + 2 images: 10 classes, 2 + 3 + ... + 11 = 65 images.
    labels = [c for c in range(10) for _ in range(c + 2)]
    records = _records(labels)
    split = metric_learning_split(records)  # first half: classes 0-4 train, 5-9 test
    assert len(split.train) == 2 + 3 + 4 + 5 + 6 == 20
    assert len(split.test) == 7 + 8 + 9 + 10 + 11 == 45
    assert len(split.val) == 0
    split = metric_learning_split(records, num_train_classes=6, num_val_classes=2)
    assert split.train.classes.tolist() == [0, 1, 2, 3]  # contiguous 0..n-1
    assert split.val.classes.tolist() == [4, 5]
    assert split.test.classes.tolist() == [6, 7, 8, 9]
    assert (len(split.train), len(split.val), len(split.test)) == (14, 13, 38)
    all_paths = np.concatenate([split.train.paths, split.val.paths, split.test.paths])
    assert sorted(all_paths.tolist()) == sorted(records.paths.tolist())
    assert split.train.class_names == records.class_names
    for bad in ({"num_train_classes": 10}, {"num_train_classes": 0}):
        with pytest.raises(ValueError, match="num_train_classes"):
            metric_learning_split(records, **bad)
    with pytest.raises(ValueError, match="num_val_classes"):
        metric_learning_split(records, num_train_classes=3, num_val_classes=3)


def test_cars196_sized_split_uses_98_training_classes():
    # Half of 196 class names, whatever the labels present.
    records = _records([0, 0, 97, 97, 98, 98, 195, 195], num_names=196)
    split = metric_learning_split(records)
    # Training labels are dense (classes 1-96 have no images): 0 and 1, keeping their names.
    assert split.train.classes.tolist() == [0, 1]
    assert split.train.class_names == ("c0", "c97")
    assert split.test.classes.tolist() == [98, 195]


def test_records_checks_and_subset():
    records = _records([0, 0, 1, 1, 2])
    assert len(records) == 5 and records.num_classes == 3
    sub = records.subset(np.array([True, False, True, False, True]))
    assert sub.paths.tolist() == ["/x/0.jpg", "/x/2.jpg", "/x/4.jpg"]
    assert sub.labels.tolist() == [0, 1, 2] and sub.class_names == records.class_names
    assert records.subset([4, 4]).labels.tolist() == [2, 2]
    with pytest.raises(ValueError, match="mask"):
        records.subset(np.array([True, False]))
    with pytest.raises(ValueError, match="differ in length"):
        Records(np.array(["a"]), np.array([0, 0]), np.full((1, 4), -1), ("x",))
    with pytest.raises(ValueError, match="labels must lie"):
        Records(np.array(["a"]), np.array([1]), np.full((1, 4), -1), ("x",))


def test_image_folder_layout(tmp_path):
    for cls, count in (("zebra", 2), ("ant", 3)):
        for i in range(count):
            _write_jpeg(tmp_path / cls / f"{i}.JPG", 8, 8, i)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "ant" / "sub" / "x.png"), np.zeros((4, 4, 3), np.uint8))
    records = read_image_folder(tmp_path)
    assert records.class_names == ("ant", "zebra")  # sorted folder names
    assert records.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert Path(records.paths[3]).name == "x.png" and Path(records.paths[3]).is_absolute()
    assert (records.bboxes == -1).all()
    assert len(read_dataset("image_folder", tmp_path)) == 6
    with pytest.raises(DataError, match="No images"):
        read_image_folder(tmp_path / "zebra")


def test_csv_manifest(tmp_path):
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        _write_jpeg(tmp_path / name, 10, 8, 0)
    (tmp_path / "manifest.csv").write_text(
        "path,label,x1,y1,x2,y2\na.jpg,sedan,1,2,9,8\n\nb.jpg,coupe\nsub/c.jpg,sedan,,,,\n"
    )
    records = read_csv_manifest(tmp_path / "manifest.csv")
    assert records.class_names == ("coupe", "sedan")
    assert records.labels.tolist() == [1, 0, 1]
    assert records.bboxes.tolist() == [[1, 2, 9, 8], [-1, -1, -1, -1], [-1, -1, -1, -1]]
    assert records.paths[2] == str((tmp_path / "sub/c.jpg").resolve())
    # read_dataset accepts the folder holding manifest.csv and validates: "coupe" has one image.
    with pytest.raises(DataError, match=r"b\.jpg: only image of class 'coupe'"):
        read_dataset("csv", tmp_path)
    assert len(read_dataset("csv", tmp_path, skip_bad=True)) == 2
    assert len(read_dataset("csv", tmp_path / "manifest.csv", validate=False)) == 3
    # Integer labels: distinct values in increasing order become 0, 1, ...
    (tmp_path / "ints.csv").write_text("a.jpg,10\nb.jpg,3\nsub/c.jpg,10\n")
    records = read_csv_manifest(tmp_path / "ints.csv")
    assert records.labels.tolist() == [1, 0, 1] and records.class_names == ("3", "10")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.jpg,x,1,2\n", r"bad\.csv, line 1: expected 'path,label'"),
        ("a.jpg,x\nb.jpg,y,1,2,x2,4\n", r"bad\.csv, line 2: x2 'x2' is not an integer"),
        ("a.jpg,\n", r"bad\.csv, line 1: empty path or label"),
        ("path,label\n", r"bad\.csv lists no images"),
    ],
)
def test_csv_manifest_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_csv_manifest(tmp_path / "bad.csv")


def test_read_dataset_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="Unknown data set layout 'coco'"):
        read_dataset("coco", tmp_path)
    with pytest.raises(DataError, match="CSV manifest not found"):
        read_dataset("csv", tmp_path / "missing.csv")


def _bad_data_set(root: Path) -> tuple[Records, dict[str, str]]:
    """Good images plus one of each kind of bad input, with the message each must produce."""
    root.mkdir(parents=True, exist_ok=True)
    files, labels, boxes = [], [], []

    def add(name, label, box=(-1, -1, -1, -1)):
        files.append(str(root / name))
        labels.append(label)
        boxes.append(box)

    for i in range(4):
        _write_jpeg(root / f"good{i}.jpg", 20, 10, i)
        add(f"good{i}.jpg", i // 2, (0, 0, 20, 10))
    cv2.imwrite(str(root / "good.png"), np.zeros((6, 6, 3), np.uint8))
    add("good.png", 1)
    add("missing.jpg", 0)
    (root / "empty.jpg").write_bytes(b"")
    add("empty.jpg", 0)
    _write_jpeg(root / "big.jpg", 200, 100, 5)  # header well before the cut, as in real files
    data = (root / "big.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    add("truncated.jpg", 0)
    png = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(png[:-12])  # IEND chunk cut off
    add("truncated.png", 1)
    (root / "garbage.jpg").write_bytes(b"GIF89 no, this is text, not an image" * 3)
    add("garbage.jpg", 1)
    _write_jpeg(root / "box.jpg", 20, 10, 7)
    add("box.jpg", 1, (5, 0, 30, 10))  # x2 = 30 > width 20 + tolerance 2
    _write_jpeg(root / "flat_box.jpg", 20, 10, 8)
    add("flat_box.jpg", 1, (5, 5, 5, 9))  # empty: x2 == x1
    _write_jpeg(root / "loner.jpg", 20, 10, 9)
    add("loner.jpg", 2)  # the only image of class 2
    _write_jpeg(root / "orphan.jpg", 20, 10, 10)
    add("orphan.jpg", 3)  # class 3's other image is missing, so it is left alone
    add("missing_too.jpg", 3)
    _write_jpeg(root / "tolerated.jpg", 20, 10, 11)
    add("tolerated.jpg", 1, (0, 0, 22, 10))  # two pixels too wide: clamped later, accepted
    expected = {
        "missing.jpg": "file not found",
        "missing_too.jpg": "file not found",
        "empty.jpg": "empty file (0 bytes)",
        "truncated.jpg": "truncated JPEG (no end-of-image marker)",
        "truncated.png": "truncated PNG (no IEND chunk)",
        "garbage.jpg": "not a decodable image",
        "box.jpg": "bounding box [x1, y1, x2, y2) = [5, 0, 30, 10) lies outside the 20x10 image",
        "flat_box.jpg": "empty bounding box [x1, y1, x2, y2) = [5, 5, 5, 9)",
        "loner.jpg": "only image of class 'c2' (label 2)",
        "orphan.jpg": "only image of class 'c3' (label 3)",
    }
    records = Records(np.array(files), np.array(labels), np.array(boxes), ("c0", "c1", "c2", "c3"))
    return records, expected


def test_validation_reports_every_bad_file_in_one_message(tmp_path):
    records, expected = _bad_data_set(tmp_path)
    with pytest.raises(DataError) as info:
        validate_records(records)
    message = str(info.value)
    assert message.startswith(f"{len(expected)} of {len(records)} images are unusable:")
    lines = message.splitlines()
    for name, reason in expected.items():
        line = next(line for line in lines if line.strip().startswith(str(tmp_path / name) + ":"))
        assert reason in line, (name, line)
    for good in ("good0.jpg", "good.png", "tolerated.jpg"):
        assert str(tmp_path / good) + ":" not in message
    assert "skip_bad" in message


def test_validation_skips_bad_files_and_says_how_many(tmp_path, caplog):
    records, expected = _bad_data_set(tmp_path)
    with caplog.at_level(logging.WARNING, logger="net.record_checks"):
        kept = validate_records(records, skip_bad=True)
    assert sorted(Path(p).name for p in kept.paths) == sorted(
        ["good0.jpg", "good1.jpg", "good2.jpg", "good3.jpg", "good.png", "tolerated.jpg"]
    )
    assert f"Skipped {len(expected)} of {len(records)} images" in caplog.text
    # Full decoding accepts the same files.
    assert len(validate_records(records, skip_bad=True, full_decode=True)) == len(kept)


def test_validation_full_decode_finds_corrupt_data_the_cheap_check_misses(tmp_path):
    """A JPEG with a corrupt Huffman table has a fine header and end marker: only decoding fails."""
    _write_jpeg(tmp_path / "a.jpg", 200, 100, 0)
    _write_jpeg(tmp_path / "b.jpg", 200, 100, 1)
    data = bytearray((tmp_path / "b.jpg").read_bytes())
    table = data.find(b"\xff\xc4")  # DHT marker; its 16 code-length counts follow at +5
    data[table + 5 : table + 21] = b"\xff" * 16
    (tmp_path / "b.jpg").write_bytes(bytes(data))
    records = Records(
        np.array([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]),
        np.array([0, 0]),
        np.full((2, 4), -1),
        ("c0",),
    )
    assert validate_records(records) is records
    with pytest.raises(DataError, match=r"b\.jpg: not a decodable image \(TensorFlow"):
        validate_records(records, full_decode=True)


def _corrupt_huffman_table(path: Path) -> None:
    """A fine header and end marker, a DHT whose code-length counts are all 255: only a full
    decode fails."""
    data = bytearray(path.read_bytes())
    table = data.find(b"\xff\xc4")
    data[table + 5 : table + 21] = b"\xff" * 16
    path.write_bytes(bytes(data))


def test_a_decoding_failure_reads_as_tensorflows_reason_not_name(tmp_path):
    from net.data import check_image, tensorflow_reason, undecodable_error, undecodable_images

    _write_jpeg(tmp_path / "good.jpg", 40, 30, 0)
    _write_jpeg(tmp_path / "bad.jpg", 40, 30, 1)
    _corrupt_huffman_table(tmp_path / "bad.jpg")
    problem, _ = check_image(str(tmp_path / "bad.jpg"), full_decode=True)
    assert problem.startswith("not a decodable image (TensorFlow: jpeg::Uncompress failed")
    assert "name:" not in problem and "function_node" not in problem and "[Op:" not in problem
    found = undecodable_images([str(tmp_path / "good.jpg"), str(tmp_path / "bad.jpg")])
    assert found == [f"{tmp_path / 'bad.jpg'}: {problem}"]
    message = str(undecodable_error(found, skip_bad=False))
    assert "\n" not in message and message.startswith(found[0])
    assert "data.decode_check: true and data.skip_bad_images: true" in message
    assert "data.decode_check: true" in str(undecodable_error(found, skip_bad=True))

    class FakeOpError(Exception):
        message = "{{function_node __wrapped__X}} disk on fire. [Op:DecodeImage] name: "

    assert tensorflow_reason(FakeOpError()) == "disk on fire."


def test_many_problems_give_the_count_then_twenty_then_how_many_more(tmp_path, caplog):
    """An empty car_ims: one line with the count first, 20 files, "… and N more" (not a list of
    every missing file)."""
    files = [str(tmp_path / f"{i:06d}.jpg") for i in range(30)]
    records = Records(
        np.array(files), np.arange(30) // 3, np.full((30, 4), -1), tuple("abcdefghij")
    )
    with pytest.raises(DataError) as info:
        validate_records(records)
    lines = str(info.value).splitlines()
    assert lines[0] == "none of the 30 images exists (is data.root right?):"
    assert lines[1:21] == [f"  {path}: file not found" for path in files[:20]]
    assert lines[21] == "  … and 10 more"
    assert lines[22] == (
        "Fix or remove them, or set data.skip_bad_images: true to leave them out and continue."
    )


def test_skipping_says_how_many_in_plain_words(tmp_path, caplog):
    for i in range(4):
        _write_jpeg(tmp_path / f"{i}.jpg", 20, 10, i)
    files = [str(tmp_path / f"{i}.jpg") for i in range(4)] + [str(tmp_path / "gone.jpg")]
    records = Records(np.array(files), np.array([0, 0, 1, 1, 1]), np.full((5, 4), -1),
                      (np.str_("first"), np.str_("second")))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="net.record_checks"):
        validate_records(records, skip_bad=True)
    assert "Skipped 1 of 5 images (unusable):" in caplog.text
    assert "are unusable" not in caplog.text and "np.str_" not in caplog.text
    records = Records(np.array(files[:3]), np.array([0, 0, 1]), np.full((3, 4), -1),
                      (np.str_("first"), np.str_("second")))  # fmt: skip
    with pytest.raises(DataError) as info:
        validate_records(records)
    assert "only image of class 'second' (label 1)" in str(info.value)
    assert "np.str_" not in str(info.value)


def test_an_undecodable_file_is_named_without_np_str(tmp_path):
    """PIL repeats the path it was given: a NumPy string showed as np.str_('...')."""
    for i in range(3):
        _write_jpeg(tmp_path / f"{i}.jpg", 20, 10, i)
    (tmp_path / "2.jpg").write_bytes(b"garbage")
    files = np.array([str(tmp_path / f"{i}.jpg") for i in (0, 1, 2, 0)])
    records = Records(files, np.array([0, 0, 1, 1]), np.full((4, 4), -1), ("a", "b"))
    with pytest.raises(DataError) as info:
        validate_records(records)
    assert f"{tmp_path / '2.jpg'}: not a decodable image (UnidentifiedImageError" in str(info.value)
    assert "np.str_" not in str(info.value)


def test_a_non_mat_annotation_file_says_so(tmp_path):
    (tmp_path / "cars_annos.mat").write_text("hello, not a mat file\n")
    (tmp_path / "car_ims").mkdir()
    with pytest.raises(DataError) as info:
        read_cars196(tmp_path)
    assert str(info.value).startswith(
        f"Cannot read annotation file {tmp_path / 'cars_annos.mat'}: not a MATLAB .mat file; "
    )
