"""Figure recipes: which images, queries and neighbours each visualisation task shows.

:mod:`net.visualize` draws; this module picks the data (from a configuration, a saved model and
the pipelines) and writes one PNG per figure plus one self-contained HTML page per task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from PIL import Image

from net import (
    analysis,
    charts,
    experiment,
    inference,
    pipeline,
    projector,
    runs,
    visualize,
)
from net.augmentation import Augmentation
from net.callbacks import SELECTION_METRIC
from net.config import Config
from net.data import Records, class_id
from net.neighbours import nearest_neighbours
from net.search import SearchError
from net.visualize import PathLike

if TYPE_CHECKING:
    import keras


def _model_and_test_split(config: Config, model_path: PathLike) -> tuple[keras.Model, Records]:
    """The saved model (input at ``data.image_size``) and the configured test split."""
    model = runs.load_model(model_path, image_size=config.data.image_size)
    return model, experiment.load_splits(config.data).test


def _images(records: Records, indices: np.ndarray, config: Config) -> np.ndarray:
    """The evaluation-pipeline images (float RGB in [0, 255]) of some records, in that order."""
    subset = records.subset(np.asarray(indices).reshape(-1))
    dataset = pipeline.eval_dataset(
        subset,
        batch_size=config.data.eval_batch_size,
        image_size=config.data.image_size,
        crop_mode=config.data.crop,
    )
    return np.concatenate([images.numpy() for images, _ in dataset], axis=0)


def training_batches(
    config: Config, output_dir: PathLike, *, num_batches: int = 2, seed: int = 0
) -> Path:
    """Grids of training batches exactly as the training pipeline delivers them.

    With augmentation configured, one more grid shows a few images unchanged and then with
    each configured operation alone (always applied there, at random strengths in its range),
    and the page lists the settings.

    Returns:
        The HTML page.
    """
    output_dir = Path(output_dir)
    splits = experiment.load_splits(config.data)
    experiment.check_batches_fit(splits, config.data)
    settings = config.data.augmentation
    shape = {
        "classes_per_batch": config.data.classes_per_batch,
        "images_per_class": config.data.images_per_class,
        "image_size": config.data.image_size,
        "crop_mode": config.data.crop,
        "seed": seed,
        "class_sampling": config.data.class_sampling,
    }
    dataset = pipeline.train_dataset(splits.train, augment=settings, **shape)
    pngs = []
    for number, (images, labels) in enumerate(dataset.take(num_batches), start=1):
        pngs.append(
            visualize.plot_image_grid(
                images.numpy(),
                labels.numpy(),
                output_dir / f"training_batch_{number}.png",
                class_names=splits.train.class_names,
                columns=config.data.images_per_class,
                title=f"Training batch {number}: {config.data.classes_per_batch} classes x "
                f"{config.data.images_per_class} images"
                + (" (augmented)" if settings is not None and settings.operations else ""),
            )
        )
    sections = [("Training batches", pngs)]
    notes = "Augmentation (data.augment): " + (settings.describe() if settings else "off")
    if settings is not None and settings.operations:
        plain = pipeline.train_dataset(splits.train, augment=False, **shape)
        images = next(iter(plain))[0].numpy()[:: config.data.images_per_class][:6]
        sections.append(
            ("Augmentation operations", [_operations_grid(images, settings, output_dir, seed)])
        )
    return visualize.write_html_report(
        "Training batches", sections, output_dir / "training_batches.html", notes=notes
    )


def _operations_grid(
    images: np.ndarray, settings: Augmentation, output_dir: Path, seed: int
) -> Path:
    """A row of original images, then one row per configured operation applied alone."""
    rows, labels = [images], ["original"] * len(images)
    for op in settings.operations:
        alone = dataclasses.replace(settings.only(op), **{f"{op}_p": 1.0})
        rows.append(
            np.stack(
                [
                    pipeline.augment_image(
                        tf.constant(image), tf.constant([seed, i], tf.int64), alone
                    ).numpy()
                    for i, image in enumerate(images)
                ]
            )
        )
        labels += [op] * len(images)
    return visualize.plot_image_grid(
        np.concatenate(rows),
        labels,
        output_dir / "augmentation_operations.png",
        columns=len(images),
        title="Each augmentation alone (always applied here)",
    )


def rankings_on_batches(
    config: Config,
    model_path: PathLike,
    output_dir: PathLike,
    *,
    num_batches: int = 3,
    seed: int = 0,
) -> Path:
    """The seed's batch figure: a random query and its whole P x K batch of test classes ranked.

    The batches come from the training sampler over the test classes (P and K and the class
    sampling of the configuration, P capped at the number of test classes; no augmentation).
    Each figure shows the query, then every other image of its batch by distance, same-class
    images marked green, and its title gives the average ranking position of the query's
    same-class images (ranks from 1; (R + 1) / 2 is perfect).

    Returns:
        The HTML page (its notes list the average ranking position of each batch).
    """
    output_dir = Path(output_dir)
    model, test = _model_and_test_split(config, model_path)
    classes = min(config.data.classes_per_batch, test.num_classes)
    per_class = config.data.images_per_class
    batches = pipeline.train_dataset(
        test,
        classes_per_batch=classes,
        images_per_class=per_class,
        image_size=config.data.image_size,
        crop_mode=config.data.crop,
        augment=False,
        seed=seed,
        class_sampling=config.data.class_sampling,
    )
    rng = np.random.default_rng(seed)
    pngs, lines = [], []
    for number, (images, labels) in enumerate(batches.take(num_batches), start=1):
        images, labels = images.numpy(), labels.numpy()
        # Embed the images already loaded rather than reading the batch a second time.
        embeddings, _ = inference.compute_embeddings(
            model, tf.data.Dataset.from_tensors((images, labels)), progress=False
        )
        query = int(rng.integers(len(images)))
        neighbours, distances = nearest_neighbours(
            embeddings[[query]], embeddings, k=len(images) - 1, exclude_indices=np.array([query])
        )
        matches = labels[neighbours] == labels[query]
        position = analysis.average_ranking_position_from_matches(matches)
        best = (int(matches.sum()) + 1) / 2
        line = (
            f"batch {number}: average ranking position {position:.2f} of the query's "
            f"{int(matches.sum())} same-class images among {len(images) - 1} (best {best:.1f})"
        )
        lines.append(line)
        pngs.append(
            visualize.plot_batch_ranking(
                images[query],
                labels[query],
                images[neighbours[0]],
                labels[neighbours[0]],
                distances[0],
                output_dir / f"ranking_batch_{number}.png",
                class_names=test.class_names,
                columns=16,
                title=f"Test batch {number} ({classes} classes x {per_class} images), ranked by "
                f"distance to the query: {line.split(': ', 1)[1]}",
            )
        )
    return visualize.write_html_report(
        "Rankings within test batches",
        [("Rankings within P x K test batches", pngs)],
        output_dir / "rankings_on_batches.html",
        notes="\n".join(lines),
    )


def rankings_on_dataset(
    config: Config,
    model_path: PathLike,
    output_dir: PathLike,
    *,
    num_queries: int = 8,
    top_k: int = 8,
    seed: int = 0,
) -> Path:
    """Random test queries and their top matches across the whole test set.

    Returns:
        The HTML page (with the metrics of the model on the test set as notes).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, test = _model_and_test_split(config, model_path)
    embeddings, labels = experiment.embed(model, test, config.data)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(len(test), size=min(num_queries, len(test)), replace=False))
    neighbours, distances = nearest_neighbours(
        embeddings[queries], embeddings, k=min(top_k, len(test) - 1), exclude_indices=queries
    )
    needed = np.unique(np.concatenate([queries, neighbours.reshape(-1)]))
    images = dict(zip(needed.tolist(), _images(test, needed, config), strict=True))
    png = visualize.plot_rankings(
        np.stack([images[i] for i in queries]),
        labels[queries],
        np.stack([np.stack([images[j] for j in row]) for row in neighbours]),
        labels[neighbours],
        distances,
        output_dir / "rankings_on_dataset.png",
        class_names=test.class_names,
        title=f"{len(queries)} random test queries (blue) and their top {neighbours.shape[1]} "
        "of the whole test set (green: same class, red: other)",
    )
    metrics = analysis.retrieval_metrics(
        embeddings,
        labels,
        ks=tuple(config.evaluation.ks),
        block_size=config.evaluation.block_size,
        method=config.evaluation.method,
        nprobe=config.evaluation.nprobe,
    )
    return visualize.write_html_report(
        "Rankings on the test set",
        [("Rankings on the test set", [png])],
        output_dir / "rankings_on_dataset.html",
        notes=f"Model: {model_path}\n\n" + analysis.format_metrics_table(metrics),
    )


def training_curves(run_dir: PathLike, output_dir: PathLike | None = None):
    """Curves of a run's CSV log (losses, validation Recall@K and MAP@R, learning rate).

    Validation MAP@R, the metric that selects ``best.keras``, is drawn thick with its best
    epoch marked.

    Args:
        run_dir: the run directory (its ``log.csv``).
        output_dir: where the figure goes; None: the run's ``figures/``, as every figure of a run.

    Returns:
        The HTML page.
    """
    run_dir = Path(run_dir)
    output_dir = Path(output_dir) if output_dir else run_dir / "figures"
    output_dir.mkdir(parents=True, exist_ok=True)
    png = charts.plot_training_curves(
        run_dir / "log.csv",
        output_dir / "training_curves.png",
        selection_metric=f"val_{SELECTION_METRIC}",
    )
    return visualize.write_html_report(
        f"Training curves of {run_dir.name}",
        [("Training curves", [png])],
        output_dir / "training_curves.html",
    )


def projector_export(
    config: Config, model_path: PathLike, output_dir: PathLike, *, thumbnail_size: int = 64
) -> Path:
    """The test split's embeddings, metadata and thumbnails for TensorBoard's projector.

    Writes the files of :func:`net.projector.write_projector` into ``output_dir``: one row of
    metadata per test image (the data set's class id, the class name, the image file relative
    to ``data.root`` when it lies below it) and a sprite of thumbnails cropped as the
    evaluation crops them (smaller than ``thumbnail_size`` when the test set is too large for
    the projector's 8192-pixel sprite).

    Returns:
        The path of ``projector_config.pbtxt``.
    """
    model, test = _model_and_test_split(config, model_path)
    embeddings, labels = experiment.embed(model, test, config.data)
    side = projector.sprite_tile_size(len(test), thumbnail_size)
    thumbnails = pipeline.eval_dataset(
        test, batch_size=config.data.eval_batch_size, image_size=side, crop_mode=config.data.crop
    )
    thumbnails = np.concatenate(
        [np.clip(np.round(images.numpy()), 0, 255).astype(np.uint8) for images, _ in thumbnails]
    )
    root = Path(config.data.root).resolve()
    rows = []
    for label, path in zip(labels.tolist(), test.paths.tolist(), strict=True):
        path = Path(path)
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        rows.append((class_id(label, test.class_names), test.class_names[label], str(shown)))
    return projector.write_projector(
        output_dir,
        embeddings,
        rows,
        thumbnails=thumbnails,
        description=f"Test-split embeddings of {model_path}: {len(test)} images of "
        f"{test.num_classes} classes, {embeddings.shape[1]} dimensions.",
    )


# --------------------------------------------------------------------------------------------
# Image search results
# --------------------------------------------------------------------------------------------


def folder_label(image_path: PathLike, images_root: PathLike | None = None) -> str:
    """The folder an image is shown under: its class folder in a folder-per-class layout.

    Args:
        image_path: The image file.
        images_root: The indexed folder, or None.

    Returns:
        The first folder of the path below ``images_root`` when the image lies in a sub-folder
        of it, else the name of the image's own folder.
    """
    image = Path(image_path).resolve()
    if images_root is not None:
        root = Path(images_root).resolve()
        if image.is_relative_to(root) and len(image.relative_to(root).parts) > 1:
            return image.relative_to(root).parts[0]
    return image.parent.name or "."


def _thumbnail(path: str, size: int) -> tuple[np.ndarray, bool]:
    """Reads an image for display, longest side ``size``; a grey tile when unreadable.

    Returns:
        (image (h, w, 3) uint8 RGB, whether it was read).
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            return np.asarray(image), True
    except (OSError, ValueError):
        return np.full((size, size, 3), 128, dtype=np.uint8), False


def plot_query_results(
    query_image: PathLike,
    matches: Sequence[tuple[str, float]],
    path: PathLike,
    *,
    images_root: PathLike | None = None,
    title: str | None = None,
    thumbnail_size: int = 192,
) -> Path:
    """Draws the query and its matches with their distances as one PNG row.

    Each image is labelled with its folder: the top-level folder below ``images_root`` for an
    image inside it (the class, in a folder-per-class layout), else the folder's own name. A
    match labelled like the query is framed green, any other red (see
    :func:`net.visualize.plot_rankings`). An image that can no longer be read shows as a grey
    tile marked "unreadable".

    Args:
        query_image: The query image file.
        matches: ``(path, distance)`` pairs, nearest first, as from :func:`net.search.query_index`.
        path: The PNG to write; parent folders are created.
        images_root: The indexed folder (:attr:`net.search.SearchIndex.images_root`), or None.
        title: Figure title; default: the query's file name.
        thumbnail_size: Longest side of each displayed image, pixels.

    Returns:
        The path written.

    Raises:
        SearchError: If there are no matches.
    """
    if not matches:
        raise SearchError("no matches to plot")

    def label(image_path: str, readable: bool) -> str:
        name = folder_label(image_path, images_root)
        return name if readable else f"{name} (unreadable)"

    query, query_ok = _thumbnail(str(query_image), thumbnail_size)
    shown = [_thumbnail(str(p), thumbnail_size) for p, _ in matches]
    return visualize.plot_rankings(
        [query],
        [label(str(query_image), query_ok)],
        [[image for image, _ in shown]],
        [[label(str(p), ok) for (p, _), (_, ok) in zip(matches, shown, strict=True)]],
        [[float(d) for _, d in matches]],
        path,
        title=title or Path(query_image).name,
    )
