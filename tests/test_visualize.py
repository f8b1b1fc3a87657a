"""Tests for net.visualize: PNG figures and the self-contained HTML report."""

import base64
import re

import numpy as np
import pytest
from PIL import Image

from net import charts, visualize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def grey_images(count, size=12, seed=0):
    """Grey-only images (R = G = B), so any saturated pixel in a figure comes from the markers."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(0, 255, size=(count, size, size, 1)).astype(np.float32)
    return np.repeat(grey, 3, axis=-1)


def colour_pixels(path, hex_colour):
    """Number of pixels in a PNG exactly equal to the given #rrggbb colour."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((rgb == target).all(axis=-1).sum())


def test_plot_image_grid_writes_png(tmp_path):
    images = grey_images(10)
    images[0] = 300.0  # Out of range values are clipped, not an error.
    path = visualize.plot_image_grid(
        images,
        np.arange(10) % 3,
        tmp_path / "sub" / "grid.png",
        class_names=["a", "b", "c"],
        columns=4,
        title="batch 0",
    )
    assert path == tmp_path / "sub" / "grid.png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    width, height = Image.open(path).size
    assert width > height  # 4 columns x 3 rows of near-square cells.


def test_plot_image_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        visualize.plot_image_grid(grey_images(3), [0, 1], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"images\[0\] must have shape"):
        visualize.plot_image_grid(np.zeros((1, 4, 4)), [0], tmp_path / "x.png")


def test_plot_rankings_marks_query_matches_and_mismatches(tmp_path):
    """Row 0: ranks 1-2 share the query's class (green), rank 3 does not (red); row 1: all match.
    The borders are drawn in the exact marker colours, the images are grey, so exact-colour pixel
    counts tell which markers are present."""
    queries = grey_images(2, seed=1)
    ranked = grey_images(6, seed=2).reshape(2, 3, 12, 12, 3)
    mixed = visualize.plot_rankings(
        queries,
        [5, 7],
        ranked,
        [[5, 5, 1], [7, 7, 7]],
        [[0.1, 0.25, 0.5], [0.0, 0.3, 0.4]],
        tmp_path / "rankings.png",
        title="top 3",
    )
    assert mixed.read_bytes().startswith(PNG_SIGNATURE)
    assert colour_pixels(mixed, visualize.QUERY_COLOR) > 100
    assert colour_pixels(mixed, visualize.MATCH_COLOR) > 100
    assert colour_pixels(mixed, visualize.MISMATCH_COLOR) > 100

    all_match = visualize.plot_rankings(
        queries, [5, 7], ranked, [[5, 5, 5], [7, 7, 7]], np.zeros((2, 3)), tmp_path / "ok.png"
    )
    assert colour_pixels(all_match, visualize.MATCH_COLOR) > 100
    assert colour_pixels(all_match, visualize.MISMATCH_COLOR) == 0


def test_plot_rankings_rejects_mismatched_rows(tmp_path):
    with pytest.raises(ValueError, match="Q rows"):
        visualize.plot_rankings(
            grey_images(2), [0, 1], grey_images(3)[None], [[0, 0, 0]], [[0, 0, 0]], tmp_path / "r"
        )
    with pytest.raises(ValueError, match="row 0"):
        visualize.plot_rankings(
            grey_images(1), [0], grey_images(3)[None], [[0, 0]], [[0, 0, 0]], tmp_path / "r"
        )


CSV_LOG = """epoch,embeddings_loss,learning_rate,logits_loss,loss,val_loss,val_recall@1
0,0.30,0.0001,4.5,4.8,4.9,0.10
1,0.20,0.0001,3.5,3.7,3.9,0.25
2,0.15,0.00001,3.0,3.15,,0.31
"""


def test_plot_training_curves_from_csv_logger_file(tmp_path):
    csv_path = tmp_path / "log.csv"
    csv_path.write_text(CSV_LOG)
    path = charts.plot_training_curves(csv_path, tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    width, height = Image.open(path).size
    assert width >= 3 * height  # Three panels: losses, retrieval, learning rate.

    losses_only = tmp_path / "losses.csv"
    losses_only.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    narrow = charts.plot_training_curves(losses_only, tmp_path / "losses.png")
    assert Image.open(narrow).size[0] < width


def test_training_curves_draw_the_metric_that_selects_the_best_model(tmp_path):
    """The log of a real run holds val_map@r, the selection metric: it is drawn in the
    retrieval panel beside Recall@K, and its best epoch (the first highest value) is marked."""
    columns = ["epoch", "loss", "val_loss", "val_map@r", "val_recall@1", "val_r_precision"]
    panels = charts.training_curve_panels(columns + ["learning_rate"], "val_map@r")
    assert panels == [
        ("losses", ["loss", "val_loss"]),
        ("retrieval", ["val_map@r", "val_recall@1", "val_r_precision"]),
        ("learning rate", ["learning_rate"]),
    ]
    # The selection metric is drawn even under a name the patterns do not know.
    assert charts.training_curve_panels(["loss", "val_score"], "val_score")[1] == (
        "retrieval",
        ["val_score"],
    )
    assert charts.best_epoch(np.array([0.1, 0.3, np.nan, 0.3, 0.2])) == 1
    assert charts.best_epoch(np.array([np.nan, np.nan])) is None
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("epoch,loss,val_map@r\n0,1.0,0.1\n1,0.8,0.3\n2,0.7,0.2\n")
    png = charts.plot_training_curves(csv_path, tmp_path / "curves.png")
    width, height = Image.open(png).size
    assert width >= 2 * height  # losses and retrieval


def test_plot_training_curves_rejects_bad_logs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        charts.plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="no rows"):
        charts.plot_training_curves(empty, tmp_path / "x.png")
    other = tmp_path / "other.csv"
    other.write_text("epoch,accuracy\n0,0.5\n")
    with pytest.raises(ValueError, match="accuracy"):
        charts.plot_training_curves(other, tmp_path / "x.png")


def test_html_report_embeds_every_image_and_references_nothing_else(tmp_path):
    first = visualize.plot_image_grid(grey_images(2), [0, 1], tmp_path / "a.png")
    second = visualize.plot_image_grid(grey_images(3), [1, 2, 3], tmp_path / "b.png")
    jpeg = tmp_path / "c.jpg"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(jpeg)
    page = visualize.write_html_report(
        "Report <1>",
        [("Batches & data", [first, second]), ("Photo", [str(jpeg)])],
        tmp_path / "out" / "report.html",
        notes="recall@1  92.40",
    )
    text = page.read_text(encoding="utf-8")
    assert "<title>Report &lt;1&gt;</title>" in text and "Batches &amp; data" in text
    assert "<pre>recall@1  92.40</pre>" in text
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert len(sources) == 3 and all(src.startswith("data:image/") for src in sources)
    assert "url(" not in text and "http" not in text
    decoded = [base64.b64decode(src.split(",", 1)[1]) for src in sources]
    assert decoded == [first.read_bytes(), second.read_bytes(), jpeg.read_bytes()]
    assert sources[2].startswith("data:image/jpeg;base64,")


def test_html_report_rejects_missing_or_unsupported_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        visualize.write_html_report("t", [("s", [tmp_path / "nope.png"])], tmp_path / "r.html")
    gif = tmp_path / "x.gif"
    gif.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="x.gif"):
        visualize.write_html_report("t", [("s", [gif])], tmp_path / "r.html")


def test_class_text_shows_the_data_sets_own_numbering():
    """Label 15 is the data set's 16th class (Cars196 and folder data sets count from 1); a
    class named by an integer (a CSV manifest's own ids) is shown by that id."""
    names = [f"class{i}" for i in range(15)] + ["animals/fish"]
    assert visualize.class_text(15, names) == "16: animals/fish"
    assert visualize.class_text(np.int64(0), names) == "1: class0"
    assert visualize.class_text(1, ["7", "42"]) == "42"
    assert visualize.class_text("cat", names) == "cat"
    assert visualize.class_text(99, names) == "99"  # Outside the names: the label itself.
    assert visualize.class_text(3, None) == "3"


def test_labels_keep_names_with_a_shared_prefix_apart():
    """Cutting the end turned four classes into "animals/mamma…"; the middle is cut instead and
    the text wraps onto two lines, so every label stays different and within its width."""
    names = [
        "animals/mammals/marine/whale_blue",
        "animals/mammals/marine/whale_humpback",
        "animals/mammals/marine/dolphin_bottlenose",
        "animals/mammals/marine/dolphin_spinner",
    ]
    texts = [visualize._label_text(label, names, width=18) for label in range(4)]
    assert len(set(texts)) == 4
    for label, text in enumerate(texts):
        lines = text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 18 for line in lines)
        assert text.replace("\n", "").startswith(f"{label + 1}: animals")
        assert text.replace("\n", "").endswith(names[label][-5:])
    short = visualize._label_text(0, ["car"], width=18)
    assert short == "1: car"
    assert visualize.shorten_middle("abcdefghij", 5) == "ab\u2026ij"
    # Wrapped at spaces when that fits on two lines, else at exact widths: nothing is lost.
    assert visualize.wrap_label("1: Audi S5 Convertible", 12) == "1: Audi S5\nConvertible"
    assert visualize.wrap_label("Audi S5 Convertible 2012", 12) == "Audi S5 Conv\nertible 2012"
    # Folder-like names break after a "/".
    assert visualize.wrap_label("3: animals/mammals/marine/whale_humpback", 28) == (
        "3: animals/mammals/marine/\nwhale_humpback"
    )


def test_plot_batch_ranking_draws_the_whole_batch_in_a_grid(tmp_path):
    """A 4 x 4 batch: the query and its 15 others, 6 to a row, make 3 rows."""
    labels = np.repeat(np.arange(4), 4)[1:]
    path = visualize.plot_batch_ranking(
        grey_images(1)[0], 0, grey_images(15), labels, np.linspace(0.1, 1.5, 15),
        tmp_path / "batch.png", columns=6, title="batch 1",
    )  # fmt: skip
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    width, height = Image.open(path).size
    assert 1.2 < width / height < 2.5  # 6 columns x 3 rows of cells
    with pytest.raises(ValueError, match="N >= 1"):
        visualize.plot_batch_ranking(grey_images(1)[0], 0, [], [], [], tmp_path / "x.png")
    with pytest.raises(ValueError, match="15, 14, 15"):
        visualize.plot_batch_ranking(
            grey_images(1)[0], 0, grey_images(15), labels[:-1], np.ones(15), tmp_path / "x.png"
        )
