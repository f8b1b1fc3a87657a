"""Retrieval evaluation of a model, from a configuration: embed a split, then its metrics.

:func:`evaluate` embeds a split (:func:`embed`) and computes its retrieval metrics by the
split's protocol (:func:`split_metrics`: the split searches itself, or its queries search its
gallery); :func:`evaluate_query_gallery` does the same for separate query and gallery
manifests. A decoding error of the input pipeline becomes one naming the image
(:func:`naming_undecodable_images`). :mod:`net.experiment` re-exports these names.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from net import analysis, data, inference
from net.config import Config, DataConfig
from net.records import ROLE_GALLERY, ROLE_QUERY


@contextlib.contextmanager
def naming_undecodable_images(paths: Callable[[], Sequence[str]], config: DataConfig):
    """Turns the pipeline's decoding error, which names no file, into one that names it.

    TensorFlow stops the input pipeline on an image it cannot decode with an op error that does
    not say which file; when that happens, every image of ``paths()`` is decoded once to find
    it (:func:`net.data.undecodable_images`).

    Raises:
        net.data.DataError: naming the undecodable images, when some are found (else the
            original error goes on).
    """
    try:
        yield
    except tf.errors.OpError:
        try:
            problems = data.undecodable_images(paths())
        except data.DataError:
            problems = []
        if not problems:
            raise
        raise data.undecodable_error(problems, skip_bad=config.skip_bad_images) from None


def evaluate(
    net: keras.Model,
    records: data.Records,
    config: Config,
    progress: bool = True,
    *,
    ranking: bool = False,
):
    """Retrieval metrics of a model on a split.

    The split is both query set and gallery (each query excluded from its own neighbours),
    unless its records mark queries and gallery items (In-shop's test split): then its
    queries search its gallery, as the data set's protocol prescribes.

    Returns:
        ``{"recall@1": ..., "precision@1": ..., "r_precision": ..., "map@r": ...,
        "num_queries": ..., "embedding_dim": ...}``, plus ``num_gallery`` for a query/gallery
        split and ``average_ranking_position`` with ``ranking``.
    """
    embeddings, labels = embed(net, records, config.data, progress)
    return split_metrics(records, embeddings, labels, config, ranking=ranking)


def split_metrics(
    records: data.Records,
    embeddings: np.ndarray,
    labels: np.ndarray,
    config: Config,
    *,
    ranking: bool = False,
) -> dict:
    """Retrieval metrics of a split's embeddings (in record order), by the split's protocol.

    Args:
        records: the split (its ``roles`` say which images are queries and gallery items).
        embeddings: (N, D) embeddings of ``records``, in order.
        labels: (N,) their labels.
        config: the configuration (``evaluation`` section).
        ranking: also the average ranking position (ranks the whole gallery).
    """
    options = {
        "ks": tuple(config.evaluation.ks),
        "block_size": config.evaluation.block_size,
        "method": config.evaluation.method,
        "nprobe": config.evaluation.nprobe,
        "ranking": ranking,
    }
    if not records.has_query_gallery:
        return analysis.retrieval_metrics(embeddings, labels, **options)
    query = records.roles != ROLE_GALLERY
    gallery = records.roles != ROLE_QUERY
    metrics = analysis.retrieval_metrics(
        embeddings[gallery],
        labels[gallery],
        query_embeddings=embeddings[query],
        query_labels=labels[query],
        **options,
    )
    metrics["num_gallery"] = int(gallery.sum())
    return metrics


def embed(
    net: keras.Model, records: data.Records, config: DataConfig, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of every image of a split, in order.

    Raises:
        net.data.DataError: naming an image TensorFlow cannot decode.
    """
    with naming_undecodable_images(lambda: records.paths.tolist(), config):
        return inference.embed_records(
            net,
            records,
            image_size=config.image_size,
            crop_mode=config.crop,
            batch_size=config.eval_batch_size,
            cache=config.cache,
            progress=progress,
        )


def evaluate_query_gallery(
    net: keras.Model,
    queries: str | os.PathLike,
    gallery: str | os.PathLike,
    config: Config,
    progress: bool = True,
    *,
    ranking: bool = False,
) -> dict:
    """Retrieval metrics of a separate query set against a gallery (In-shop style).

    Args:
        net: the model.
        queries: CSV manifest of the query images.
        gallery: CSV manifest of the gallery images.
        config: the configuration (image size, crop, batch size, metrics).
        progress: show progress bars.
        ranking: also the average ranking position (ranks the whole gallery).
    """
    query_records = data.read_dataset("csv", queries, skip_bad=config.data.skip_bad_images)
    gallery_records = data.read_dataset("csv", gallery, skip_bad=config.data.skip_bad_images)
    query_embeddings, query_labels = embed(net, query_records, config.data, progress)
    gallery_embeddings, gallery_labels = embed(net, gallery_records, config.data, progress)
    # Labels are per-manifest indices; compare by class name so both manifests agree.
    names = sorted(set(query_records.class_names) | set(gallery_records.class_names))
    index = {name: i for i, name in enumerate(names)}
    query_labels = np.array([index[query_records.class_names[i]] for i in query_labels])
    gallery_labels = np.array([index[gallery_records.class_names[i]] for i in gallery_labels])
    return analysis.retrieval_metrics(
        gallery_embeddings,
        gallery_labels,
        ks=tuple(config.evaluation.ks),
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=config.evaluation.block_size,
        method=config.evaluation.method,
        nprobe=config.evaluation.nprobe,
        ranking=ranking,
    )
