"""The CUB-200-2011, Stanford Online Products and In-shop readers on official-format fixtures."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from official_layouts import write_cub200, write_inshop, write_sop

from net.data import (
    ROLE_BOTH,
    ROLE_GALLERY,
    ROLE_QUERY,
    DataError,
    Records,
    metric_learning_split,
    read_dataset,
)
from net.layouts import base_folder, detect_layout

WRITERS = {"cub200": write_cub200, "sop": write_sop, "inshop": write_inshop}
BASES = {
    "cub200": "CUB_200_2011",
    "sop": "Stanford_Online_Products",
    "inshop": "In-shop Clothes Retrieval Benchmark",
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """One pristine fixture per layout (tests that break files copy them first)."""
    roots = {}
    for layout, writer in WRITERS.items():
        root = tmp_path_factory.mktemp(layout)
        roots[layout] = (root, writer(root))
    return roots


def _content(records):
    return [
        (path, records.class_names[label], tuple(box), int(role))
        for path, label, box, role in zip(
            records.paths, records.labels, records.bboxes.tolist(), records.roles, strict=True
        )
    ]


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_reader_gives_the_files_content(fixtures, layout):
    root, expected = fixtures[layout]
    base = root / BASES[layout]
    want = [(str(base / path), name, box, role) for path, name, box, role in expected]
    for given_root in (root, base):  # the unpacked folder or the folder it was unpacked in
        assert detect_layout(given_root) == layout
        for name in (layout, "auto"):
            assert _content(read_dataset(name, given_root)) == want


def test_cub200_protocol_and_boxes(fixtures):
    root, _ = fixtures["cub200"]
    records = read_dataset("cub200", root)
    # Class k of classes.txt is label k - 1; the fixture's first box is "1 2.0 3.0 37.5 34.0".
    assert records.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert records.bboxes[0].tolist() == [2, 3, 40, 37]
    split = metric_learning_split(records, num_train_classes=2)
    assert split.train.classes.tolist() == [0, 1] and split.test.classes.tolist() == [2, 3]


def test_sop_split_follows_the_files(fixtures):
    root, _ = fixtures["sop"]
    records = read_dataset("sop", root)
    split = metric_learning_split(records, num_train_classes=4)
    base = root / BASES["sop"]
    train_lines = (base / "Ebay_train.txt").read_text().splitlines()[1:]
    assert [str(base / line.split()[3]) for line in train_lines] == split.train.paths.tolist()
    assert split.test.classes.tolist() == [4, 5, 6, 7]
    assert records.paths[0].endswith(".JPG")


def test_inshop_items_roles_and_query_gallery(fixtures):
    root, _ = fixtures["inshop"]
    records = read_dataset("inshop", root)
    split = metric_learning_split(records, num_train_classes=3)
    assert split.train.class_names[:3] == ("id_00000001", "id_00000002", "id_00000003")
    assert (split.train.roles == ROLE_BOTH).all() and not split.train.has_query_gallery
    test = split.test
    assert test.has_query_gallery
    assert (test.queries().roles == ROLE_QUERY).all() and len(test.queries()) == 6
    assert (test.gallery().roles == ROLE_GALLERY).all() and len(test.gallery()) == 6
    # Boxes are optional: without the file every box is the whole image.
    bare = write_inshop(root.parent / "inshop_bare", with_boxes=False)
    records = read_dataset("inshop", root.parent / "inshop_bare")
    assert (records.bboxes == -1).all() and len(records) == len(bare)


def _copy(fixtures, layout, tmp_path) -> Path:
    import shutil

    source, _ = fixtures[layout]
    shutil.copytree(source, tmp_path / layout)
    return tmp_path / layout / BASES[layout]


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _line(path: Path, number: int) -> str:
    return path.read_text().splitlines()[number - 1]


# (layout, file, line number, change of the line's fields, expected message part)
MALFORMED = [
    ("cub200", "bounding_boxes.txt", 2, lambda f: [f[0], "abc", *f[2:]], "numbers, got"),
    ("cub200", "bounding_boxes.txt", 3, lambda f: [f[0], f[1], f[2], "-4.0", f[4]], "empty"),
    ("cub200", "image_class_labels.txt", 4, lambda f: [f[0], "3"], "lies in folder"),
    ("cub200", "image_class_labels.txt", 5, lambda f: [f[0], "9"], "is not a class id"),
    ("cub200", "images.txt", 6, lambda f: ["x1", f[1]], "is not an integer"),
    ("cub200", "images.txt", 7, lambda f: [*f, "extra"], "expected '<image id> <relative"),
    ("cub200", "classes.txt", 2, lambda f: ["1", f[1]], "listed twice"),
    ("sop", "Ebay_train.txt", 3, lambda f: [f[0], "one", *f[2:]], "must be integers"),
    ("sop", "Ebay_train.txt", 4, lambda f: f[:3], "expected 4 fields, got 3"),
    ("sop", "Ebay_test.txt", 2, lambda f: [f[0], "1", *f[2:]], "must be disjoint"),
    ("sop", "Ebay_test.txt", 3, lambda f: ["1", *f[1:]], "image_id 1 repeats line 2"),
    ("inshop", "Eval/list_eval_partition.txt", 1, lambda f: ["99"], "says 99 entries"),
    ("inshop", "Eval/list_eval_partition.txt", 4, lambda f: [f[0], f[1], "test"], "is not train"),
    ("inshop", "Eval/list_eval_partition.txt", 13, lambda f: [f[0], "id_00000001", f[2]],
     "must be disjoint"),
    ("inshop", "Anno/list_bbox_inshop.txt", 5, lambda f: [*f[:3], "0x3", *f[4:]], "integers"),
    ("inshop", "Anno/list_bbox_inshop.txt", 6, lambda f: [*f[:5], "001", f[6]], "empty"),
]  # fmt: skip


@pytest.mark.parametrize(
    "layout, name, number, change, message",
    MALFORMED,
    ids=[f"{m[0]}-{m[1].split('/')[-1]}-{m[2]}" for m in MALFORMED],
)
def test_malformed_lines_are_named_by_file_and_line(
    fixtures, tmp_path, layout, name, number, change, message
):
    base = _copy(fixtures, layout, tmp_path)
    path = base / name
    _replace_line(path, number, " ".join(change(_line(path, number).split())))
    with pytest.raises(DataError) as error:
        read_dataset(layout, base.parent)
    text = str(error.value)
    assert f"{path}, line {number}: " in text
    assert message in text.split(f"{path}, line {number}: ")[1].splitlines()[0]


@pytest.mark.parametrize(
    "layout, name, line, header",
    [
        ("sop", "Ebay_train.txt", 1, "image_id class_id path"),
        ("inshop", "Eval/list_eval_partition.txt", 1, "image_name item_id evaluation_status"),
        ("inshop", "Eval/list_eval_partition.txt", 2, "image_name item evaluation_status"),
        ("inshop", "Anno/list_bbox_inshop.txt", 2, "image_name x_1 y_1 x_2 y_2"),
    ],
)
def test_wrong_header_lines_stop_at_once(fixtures, tmp_path, layout, name, line, header):
    base = _copy(fixtures, layout, tmp_path)
    _replace_line(base / name, line, header)
    with pytest.raises(DataError, match=re.escape(f"{base / name}, line {line}: expected")):
        read_dataset(layout, base.parent)


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_missing_annotation_file_is_named(fixtures, tmp_path, layout):
    base = _copy(fixtures, layout, tmp_path)
    name = {"cub200": "image_class_labels.txt", "sop": "Ebay_test.txt"}.get(
        layout, "Eval/list_eval_partition.txt"
    )
    (base / name).unlink()
    with pytest.raises(DataError, match=re.escape(f"Annotation file not found: {base / name}")):
        read_dataset(layout, base)


def test_every_problem_in_one_message_or_skipped(fixtures, tmp_path, caplog):
    base = _copy(fixtures, "cub200", tmp_path)
    images = (base / "images.txt").read_text().splitlines()
    missing = base / "images" / images[0].split()[1]
    missing.unlink()  # listed, not there
    extra = base / "images" / "004.Groove_billed_Ani" / "unlisted.jpg"
    extra.write_bytes((base / "images" / images[1].split()[1]).read_bytes())
    corrupt = base / "images" / images[2].split()[1]
    corrupt.write_bytes(corrupt.read_bytes()[:-100])  # truncated JPEG
    boxes = base / "bounding_boxes.txt"
    _replace_line(boxes, 4, "4 2.0 3.0 400.0 30.0")  # beyond the 48-pixel-wide image
    _replace_line(base / "image_class_labels.txt", 5, "5 nine")
    with pytest.raises(DataError) as error:
        read_dataset("cub200", tmp_path / "cub200")
    text = str(error.value)
    assert f"{base / 'images.txt'}, line 1: image {missing} not found" in text
    assert "1 image(s) not listed in" in text and "004.Groove_billed_Ani/unlisted.jpg" in text
    assert f"{corrupt}: truncated JPEG" in text
    assert "lies outside the 48x44 image" in text
    assert f"{base / 'image_class_labels.txt'}, line 5: class 'nine'" in text
    with caplog.at_level(logging.WARNING):
        records = read_dataset("cub200", tmp_path / "cub200", skip_bad=True)
    # 4 bad images, one dropped line, and then the two classes left with one image each.
    assert len(records) == 12 - 5 - 1
    assert sorted(set(records.labels.tolist())) == [2, 3]
    assert "Skipped" in caplog.text
    assert str(missing) not in records.paths and str(corrupt) not in records.paths


def test_base_folder_is_root_when_ambiguous(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Ebay_train.txt").write_text("")
    assert base_folder(tmp_path, "sop") == tmp_path
    assert base_folder(tmp_path / "a", "sop") == tmp_path / "a"


def test_records_roles_follow_subsets_and_are_checked():
    records = Records(
        np.array(["a", "b", "c"]), np.array([0, 0, 1]), np.full((3, 4), -1), ("x", "y"),
        roles=np.array([ROLE_QUERY, ROLE_GALLERY, ROLE_BOTH]),
    )  # fmt: skip
    assert records.subset([2, 0]).roles.tolist() == [ROLE_BOTH, ROLE_QUERY]
    assert records.queries().paths.tolist() == ["a", "c"]
    assert records.gallery().paths.tolist() == ["b", "c"]
    assert Records(records.paths, records.labels, records.bboxes, ("x", "y")).roles.tolist() == [
        0,
        0,
        0,
    ]
    with pytest.raises(ValueError, match="roles"):
        Records(records.paths, records.labels, records.bboxes, ("x", "y"), roles=[0, 3, 0])


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_missing_data_set_folder_says_what_to_place_there(tmp_path, layout):
    with pytest.raises(DataError, match=re.escape(f"Data set folder not found: {tmp_path / 'x'}")):
        read_dataset(layout, tmp_path / "x")


def test_a_partial_download_lists_the_count_then_20_missing_images(tmp_path):
    """Tens of thousands of missing SOP images: the count, the first 20, "… and N more"."""
    write_sop(tmp_path, test_sizes=[3] * 9)
    base = tmp_path / BASES["sop"]
    test_lines = (base / "Ebay_test.txt").read_text().splitlines()[1:]
    for line in test_lines:
        (base / line.split()[3]).unlink()
    with pytest.raises(DataError) as error:
        read_dataset("sop", tmp_path)
    lines = str(error.value).splitlines()
    assert lines[0] == "27 problem(s) in the annotation files:"
    assert all(line.endswith("not found") for line in lines[1:21])
    assert lines[21] == "  … and 7 more"
    assert len(lines) == 23  # then the hint


def test_missing_images_are_reported_in_the_order_the_files_list_them(tmp_path):
    """File by file, line by line, whatever the hash seed: SOP's two lists can both miss an
    image on the same line number (sorted by line alone, their order was the set's)."""
    from net.annotation_files import Problems, check_image_files

    (tmp_path / "bicycle_final").mkdir()
    (tmp_path / "bicycle_final" / "kept.JPG").write_bytes(b"")
    train, test = tmp_path / "Ebay_train.txt", tmp_path / "Ebay_test.txt"
    listed = {
        "bicycle_final/b.JPG": (train, 5),
        "bicycle_final/kept.JPG": (train, 6),
        "bicycle_final/a.JPG": (test, 3),
        "bicycle_final/c.JPG": (test, 5),
    }
    problems = Problems()
    missing = check_image_files(tmp_path, "", listed, problems)
    assert missing == {"bicycle_final/a.JPG", "bicycle_final/b.JPG", "bicycle_final/c.JPG"}
    assert [line.split(": ")[0] for line in problems.lines] == [
        f"{train}, line 5",
        f"{test}, line 3",
        f"{test}, line 5",
    ]
