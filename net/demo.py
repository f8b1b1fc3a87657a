"""The demo: generated data, a small CPU model, Recall@K before and after training, rankings."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from net import analysis, experiment, figures, runs
from net.config import Config
from net.demo_data import generate_demo_dataset


def run_demo(config: Config, run_dir: str | os.PathLike | None = None) -> dict:
    """Runs the demo end to end and prints what it measured.

    Generates the demo data set if absent, evaluates the untrained model on the held-out test
    classes, trains (resuming ``run_dir`` if it was interrupted), evaluates the best model, and
    draws the ranking figure.

    Args:
        config: the configuration (the ``demo`` profile).
        run_dir: the run directory; ``None`` makes a new one under ``config.output.root``.

    Returns:
        ``{"untrained": metrics, "trained": metrics, "run_dir": ..., "figures": page}``.
    """
    generate_demo_dataset(config.data.root)
    run_dir = Path(run_dir) if run_dir else runs.make_run_dir(config.output.root)
    splits = experiment.load_splits(config.data)
    if config.training.seed is not None:
        keras.utils.set_random_seed(config.training.seed)
    untrained = experiment.build_model(
        config.model,
        image_size=config.data.image_size,
        num_classes=experiment.auxiliary_classes(config, splits.train),
    )
    before = experiment.evaluate(untrained, splits.test, config, progress=False)
    summary = experiment.train(config, run_dir)
    after = summary["test"]
    print()
    print(analysis.compare_models_table({"untrained": before, "trained": after}))
    page = figures.rankings_on_dataset(
        config, run_dir / "best.keras", run_dir / "figures", num_queries=8, top_k=8, seed=0
    )
    curves = figures.training_curves(run_dir, run_dir / "figures")
    print(f"Ranking figure: {page}\nTraining curves: {curves}\nRun: {run_dir}")
    return {"untrained": before, "trained": after, "run_dir": str(run_dir), "figures": str(page)}
