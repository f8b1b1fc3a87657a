"""Retrieval analysis of saved models."""

from invoke import task

from tasks.common import CONFIG, ConfigOptions, config_task, fail, integer_option, model_for_task


@config_task(
    model_path="a saved .keras model or a run directory (its best.keras); several, "
    "comma-separated, are compared in one table (default: the newest run under output.root "
    "with a best.keras)",
    split="the split to evaluate on: test (default), val or train",
    queries="CSV manifest of a separate query set (In-shop style); needs --gallery",
    gallery="CSV manifest of the gallery searched by --queries",
    output_path="JSON file to write (default: analysis.json beside the first model)",
    ranking="also the average ranking position, the seed's metric (default; "
    "--no-ranking skips its ranking of the whole gallery, slow on SOP-scale sets)",
)
def analyze_model_performance(
    c,
    model_path=None,
    options: ConfigOptions = CONFIG,
    split="test",
    queries=None,
    gallery=None,
    output_path=None,
    ranking=True,
):
    """Recall@K, Precision@1, R-Precision, MAP@R, average ranking position of saved models."""
    config = options.load()
    from pathlib import Path

    from net import analysis, experiment
    from net.data import DataError
    from net.neighbours import TooFewNeighboursError
    from net.runs import ModelFileError

    if bool(queries) != bool(gallery):
        fail("--queries and --gallery go together", code=2)
    if split not in ("train", "val", "test"):
        fail(f"--split must be train, val or test, not {split!r}", code=2)
    results, errors, first = {}, [], None
    for name in [p for p in (model_path or "").split(",") if p] or [None]:
        try:
            choice, model_config = model_for_task(config, name, options.overrides)
            model = experiment.load_model(choice.path, image_size=model_config.data.image_size)
            if queries:
                metrics = experiment.evaluate_query_gallery(
                    model, queries, gallery, model_config, ranking=ranking
                )
            else:
                records = experiment.split_records(model_config.data, split)
                metrics = experiment.evaluate(model, records, model_config, ranking=ranking)
        except (DataError, ModelFileError, TooFewNeighboursError) as error:
            errors.append(str(error))
            continue
        results[str(choice.path)] = metrics
        first = first or choice.path
    if results:
        if len(results) == 1:
            print(analysis.format_metrics_table(next(iter(results.values()))))
        else:
            print(analysis.compare_models_table(results))
        output = Path(output_path) if output_path else first.parent / "analysis.json"
        from net.files import atomic_write_json as write_json

        write_json(output, results[str(first)] if len(results) == 1 else results)
        print(f"Wrote {output}")
    if errors:
        fail("\n".join(f"Analysis stopped: {error}" for error in errors))


@config_task(
    model_path="a run directory (its best.keras) or a saved .keras model (default: the "
    "newest run under output.root with a best.keras)",
    output_dir="folder to write (default: the run's tensorboard/projector; for a .keras file "
    "outside a run, tensorboard/projector beside it)",
    thumbnail_size="side of the sprite's thumbnails in pixels (default 64; smaller for large sets)",
)
def export_embeddings(
    c, model_path=None, options: ConfigOptions = CONFIG, output_dir=None, thumbnail_size=None
):
    """Test-split embeddings, metadata.tsv and a sprite for TensorBoard's Embedding Projector."""
    thumbnail_size = integer_option("thumbnail_size", thumbnail_size, 64)
    config = options.load()
    from pathlib import Path

    from net import experiment, figures
    from net.data import DataError

    try:
        choice, config = model_for_task(config, model_path, options.overrides)
        model_file = choice.path
        output = Path(output_dir) if output_dir else model_file.parent / "tensorboard" / "projector"
        written = figures.projector_export(
            config, model_file, output, thumbnail_size=thumbnail_size
        )
    except (DataError, experiment.ModelFileError) as error:
        fail(f"Export stopped: {error}")
    print(f"Wrote {written.parent}; see it with: tensorboard --logdir {model_file.parent}")


@task(help={"sweep_dir": "the sweep's folder (<output.root>/sweeps/<name>)"})
def compare_sweep(c, sweep_dir):
    """One table of a sweep's test metrics (Markdown, CSV, bar chart PNG + HTML), best first."""
    from net import comparison
    from net.grid import SweepError

    try:
        paths = comparison.write_comparison(sweep_dir)
    except SweepError as error:
        fail(f"Comparison stopped: {error}")
    print(paths["markdown"].read_text())
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
