"""Tests for net.search and tasks.search: index a generated folder, query it, refuse mismatches."""

import dataclasses
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from invoke import Collection, Program

from net import figures, search
from net.model import build_cgd_model
from net.pipeline import load_image
from tasks import search as search_tasks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SIZE = 32


def tiny_model(seed):
    keras.utils.set_random_seed(seed)
    return build_cgd_model(
        backbone="small_cnn",
        weights=None,
        image_size=IMAGE_SIZE,
        last_stride=2,
        descriptors="SG",
        embedding_dim=16,
    )


def shape_image(kind, colour, size, offset):
    """A (H, W, 3) BGR uint8 image: a filled circle or square of a colour on a grey background."""
    height, width = size
    image = np.full((height, width, 3), 90, np.uint8)
    cx, cy = width // 2 + offset, height // 2 - offset
    if kind == "circle":
        cv2.circle(image, (cx, cy), min(height, width) // 3, colour, -1)
    else:
        half = min(height, width) // 3
        cv2.rectangle(image, (cx - half, cy - half), (cx + half, cy + half), colour, -1)
    return image


def write_tree(root):
    """Two class folders (one nested deeper), mixed suffixes, plus files that are not indexed.

    Returns the relative paths that find_images must list, in sorted order.
    """
    files = {
        "circles/a.jpg": shape_image("circle", (30, 30, 220), (40, 48), 0),
        "circles/b.PNG": shape_image("circle", (40, 200, 40), (48, 40), 4),
        "circles/deep/c.bmp": shape_image("circle", (220, 60, 20), (36, 36), -3),
        "squares/d.png": shape_image("square", (30, 30, 220), (44, 52), 2),
        "squares/e.jpeg": shape_image("square", (200, 200, 30), (40, 40), -5),
        "squares/f.png": shape_image("square", (150, 40, 160), (50, 38), 6),
    }
    for relative, image in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
    (root / "squares" / "notes.txt").write_text("not an image")
    (root / "squares" / ".hidden.png").write_bytes((root / "squares" / "d.png").read_bytes())
    (root / ".cache").mkdir()
    shutil.copy(root / "squares" / "d.png", root / ".cache" / "x.png")
    return sorted(files)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A saved tiny model, a generated folder and its index, built once for the module."""
    base = tmp_path_factory.mktemp("search")
    images = base / "images"
    expected = write_tree(images)
    model_path = base / "model.keras"
    tiny_model(0).save(model_path)
    index_path = images / ".cgd_index.npz"
    index = search.build_index(model_path, images, index_path, batch_size=4, progress=False)
    return {
        "base": base,
        "images": images,
        "expected": expected,
        "model_path": model_path,
        "index_path": index_path,
        "index": index,
    }


def test_find_images_is_recursive_sorted_and_skips_hidden_and_other_files(setup):
    assert search.find_images(setup["images"]) == setup["expected"]
    with pytest.raises(search.SearchError, match="image folder not found"):
        search.find_images(setup["base"] / "nowhere")
    empty = setup["base"] / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(search.SearchError, match="no images under"):
        search.find_images(empty)


def test_find_images_takes_every_suffix_the_data_readers_take(tmp_path):
    """WebP and GIF images, which training reads, are indexed too (any case)."""
    for name in ("a.webp", "b.GIF", "c.JPG", "d.txt", ".e.png"):
        (tmp_path / name).write_bytes(b"x")
    assert search.find_images(tmp_path) == ["a.webp", "b.GIF", "c.JPG"]


def test_index_rows_are_the_model_embeddings_of_their_files(setup):
    """Row i of the index equals the model applied to file i, loaded alone, eagerly."""
    index = setup["index"]
    assert list(index.paths) == setup["expected"]
    assert index.images_root == setup["images"].resolve()
    assert index.image_size == IMAGE_SIZE and index.crop_mode == "none"
    assert index.model_path == str(setup["model_path"].resolve())
    assert index.embeddings.shape == (6, 16) and index.skipped == ()
    model = keras.saving.load_model(setup["model_path"])
    images = tf.stack(
        [
            load_image(
                tf.constant(str(setup["images"] / p)),
                tf.constant([-1, -1, -1, -1]),
                image_size=IMAGE_SIZE,
                crop_mode="none",
            )
            for p in setup["expected"]
        ]
    )
    reference = model(images, training=False)["embeddings"].numpy()
    np.testing.assert_allclose(index.embeddings, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)

    loaded = search.load_index(setup["index_path"])
    np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
    assert list(loaded.paths) == list(index.paths)
    assert loaded.model_fingerprint == index.model_fingerprint == search.model_fingerprint(model)
    assert (loaded.images_root, loaded.image_size, loaded.crop_mode) == (
        index.images_root,
        index.image_size,
        index.crop_mode,
    )
    # The atomic write leaves no temporary file behind.
    assert sorted(p.name for p in setup["images"].iterdir() if p.is_file()) == [".cgd_index.npz"]


def test_query_with_an_indexed_image_returns_it_first(setup):
    """Each indexed image finds itself at distance ~0; the ranking is the brute-force one."""
    index, model = setup["index"], keras.saving.load_model(setup["model_path"])
    for position, relative in enumerate(setup["expected"]):
        matches = search.query_index(index, model, setup["images"] / relative, top_k=4)
        assert len(matches) == 4
        assert matches[0].path == str(setup["images"].resolve() / relative)
        assert matches[0].distance < 1e-3 < matches[1].distance
        brute = np.linalg.norm(index.embeddings - index.embeddings[position], axis=1)
        order = np.argsort(brute, kind="stable")[:4]
        assert [m.path for m in matches] == [index.absolute_path(i) for i in order]
        np.testing.assert_allclose([m.distance for m in matches], brute[order], atol=1e-3)
    # top_k larger than the index returns every image once; a bad top_k is refused.
    everything = search.query_index(index, setup["model_path"], setup["images"] / "squares/d.png")
    assert sorted(m.path for m in everything) == sorted(
        index.absolute_path(i) for i in range(len(index))
    )
    with pytest.raises(search.SearchError, match="top_k"):
        search.query_index(index, model, setup["images"] / "squares/d.png", top_k=0)


def test_another_model_or_a_retrained_one_is_refused(setup, tmp_path):
    index = setup["index"]
    query = setup["images"] / "circles/a.jpg"
    other = tiny_model(1)
    with pytest.raises(search.SearchError, match="another model") as caught:
        search.query_index(index, other, query)
    assert search.model_fingerprint(other)[:16] in str(caught.value)
    assert index.model_fingerprint[:16] in str(caught.value)

    # Compiling changes the saved config but not the fingerprint.
    compiled = keras.saving.load_model(setup["model_path"])
    compiled.compile(optimizer="adam", loss=None)
    assert search.model_fingerprint(compiled) == index.model_fingerprint

    # Same architecture, one weight changed, saved again: a retrained model is detected.
    retrained_path = tmp_path / "model.keras"
    model = keras.saving.load_model(setup["model_path"])
    model.weights[-1].assign(model.weights[-1].numpy() + 1e-3)
    model.save(retrained_path)
    with pytest.raises(search.SearchError, match=str(retrained_path)):
        search.query_index(index, retrained_path, query)
    with pytest.raises(search.SearchError, match="no saved model"):
        search.query_index(index, tmp_path / "missing.keras", query)


def test_unreadable_query_images_are_named(setup, tmp_path):
    index, model = setup["index"], keras.saving.load_model(setup["model_path"])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    with pytest.raises(search.SearchError, match="cannot read the query image .*garbage.jpg"):
        search.query_index(index, model, garbage)
    with pytest.raises(search.SearchError, match="missing.png: file not found"):
        search.query_index(index, model, tmp_path / "missing.png")


def test_corrupt_or_foreign_index_files_are_refused(setup, tmp_path):
    good = setup["index_path"].read_bytes()
    cases = {
        "garbage.npz": b"\x00\x01 not a zip file at all",
        "truncated.npz": good[: len(good) // 2],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(search.SearchError, match=f"cannot read the search index .*{name}"):
            search.load_index(tmp_path / name)
    np.savez(tmp_path / "foreign.npz", embeddings=np.zeros((2, 3)))
    with pytest.raises(search.SearchError, match=r"foreign.npz is not a search index.*paths"):
        search.load_index(tmp_path / "foreign.npz")
    with pytest.raises(search.SearchError, match="no search index at"):
        search.load_index(tmp_path / "absent.npz")


def test_index_moved_with_its_folder_still_finds_the_images(setup, tmp_path):
    """Saved inside its folder, the index falls back to the root relative to itself."""
    folder = tmp_path / "before"
    shutil.copytree(setup["images"], folder)
    moved = dataclasses.replace(setup["index"], images_root=folder)
    search.save_index(moved, folder / "index.npz")
    folder.rename(tmp_path / "after")
    loaded = search.load_index(tmp_path / "after" / "index.npz")
    assert loaded.images_root == (tmp_path / "after").resolve()
    assert os.path.isfile(loaded.absolute_path(0))


def corrupt_png_body(path):
    """Flips bytes inside the IDAT chunk of a PNG: the header and IEND stay valid, so only a
    full decode notices (bad CRC / zlib data)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
    path.write_bytes(bytes(data))


def test_bad_images_are_listed_or_skipped(setup, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(setup["images"], images)
    (images / ".cgd_index.npz").unlink()
    (images / "circles" / "empty.jpg").write_bytes(b"")
    jpeg = (images / "circles" / "a.jpg").read_bytes()
    (images / "squares" / "cut.jpg").write_bytes(jpeg[:-2])  # No end-of-image marker.
    with pytest.raises(search.SearchError, match="2 of 8 images cannot be read") as caught:
        search.build_index(setup["model_path"], images, tmp_path / "i.npz", progress=False)
    assert "empty.jpg: empty file" in str(caught.value)
    assert "cut.jpg: truncated JPEG" in str(caught.value)
    assert not (tmp_path / "i.npz").exists()

    # A body corruption the cheap check misses is found when TensorFlow fails to decode it.
    corrupt_png_body(images / "squares" / "f.png")
    assert not search.image_problems([str(images / "squares" / "f.png")], full_decode=False)
    index = search.build_index(
        setup["model_path"], images, tmp_path / "i.npz", progress=False, skip_bad=True
    )
    assert index.skipped == ("circles/empty.jpg", "squares/cut.jpg", "squares/f.png")
    assert list(index.paths) == [p for p in setup["expected"] if p != "squares/f.png"]
    keep = [setup["expected"].index(p) for p in index.paths]
    np.testing.assert_allclose(index.embeddings, setup["index"].embeddings[keep], atol=1e-5)
    assert search.load_index(tmp_path / "i.npz").skipped == index.skipped


def test_build_index_rejects_bad_settings(setup, tmp_path):
    args = (setup["model_path"], setup["images"], tmp_path / "i.npz")
    with pytest.raises(search.SearchError, match="image_size=48 but the model .* takes 32x32"):
        search.build_index(*args, image_size=48, progress=False)
    with pytest.raises(search.SearchError, match="crop_mode must be one of"):
        search.build_index(*args, crop_mode="bbox", progress=False)
    with pytest.raises(search.SearchError, match="batch_size"):
        search.build_index(*args, batch_size=0, progress=False)
    with pytest.raises(search.SearchError, match="no saved model"):
        search.build_index(tmp_path / "none.keras", setup["images"], tmp_path / "i.npz")


def test_folder_labels_name_the_class_folder(setup, tmp_path):
    root = setup["images"]
    assert figures.folder_label(root / "circles/deep/c.bmp", root) == "circles"
    assert figures.folder_label(root / "circles/deep/c.bmp") == "deep"
    assert figures.folder_label(tmp_path / "elsewhere/q.jpg", root) == "elsewhere"
    assert figures.folder_label(root / "top.jpg", root) == root.name


def test_plot_query_results_writes_a_png(setup, tmp_path):
    query = setup["images"] / "circles/a.jpg"
    matches = search.query_index(setup["index"], setup["model_path"], query, top_k=3)
    matches.append(search.Match(str(tmp_path / "deleted.png"), 1.5))  # Drawn as a grey tile.
    path = figures.plot_query_results(
        query, matches, tmp_path / "fig" / "q.png", images_root=setup["images"]
    )
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(search.SearchError, match="no matches"):
        figures.plot_query_results(query, [], tmp_path / "none.png")


def test_tasks_through_the_invoke_command_line(setup, tmp_path, capsys, monkeypatch):
    """`invoke search.index` then `invoke search.query`, parsed by invoke as on the shell."""
    monkeypatch.chdir(tmp_path)  # No config.yaml here: the built-in defaults apply.
    program = Program(namespace=Collection(search=Collection.from_module(search_tasks)))
    images, model_path = setup["images"], str(setup["model_path"])
    index_path = tmp_path / "idx.npz"
    argv = ["invoke", "search.index", "--model-path", model_path, "--images", str(images)]
    program.run(argv + ["--index-path", str(index_path), "--batch-size", "3"], exit=False)
    out = capsys.readouterr().out
    assert f"Indexed 6 images of {images.resolve()} (16-d, 32 px, crop none)" in out
    assert f"Wrote {index_path}" in out
    np.testing.assert_allclose(
        search.load_index(index_path).embeddings, setup["index"].embeddings, atol=1e-5
    )

    query = images / "squares" / "e.jpeg"
    figure = tmp_path / "out" / "e.png"
    argv = ["invoke", "search.query", "--index", str(index_path), "--image", str(query)]
    program.run(argv + ["--top-k", "3", "--output-path", str(figure)], exit=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Nearest 3 of 6 indexed images to {query}:"
    rank, distance, path = lines[1].split()
    assert (rank, path) == ("1", str(query.resolve())) and float(distance) < 1e-3
    assert len(lines) == 5 and lines[-1] == f"Wrote {figure}"
    assert figure.read_bytes().startswith(PNG_SIGNATURE)

    # A model that does not match the index stops the task with the reason, no traceback.
    other = tmp_path / "other.keras"
    tiny_model(2).save(other)
    argv += ["--model-path", str(other)]
    program.run(argv, exit=False)
    captured = capsys.readouterr()
    assert "Search stopped: the index was built with another model" in captured.err
    assert "Traceback" not in captured.err
