"""Figures: training batches, rankings, training curves (PNG files and one HTML page each)."""

from tasks.common import CONFIG, ConfigOptions, config_task, fail, integer_option, model_for_task

MODEL_HELP = (
    "a saved .keras model or a run directory (its best.keras); default: the newest run under "
    "output.root with a best.keras"
)
OUTPUT_HELP = "output folder (default: <output.root>/figures)"
MODEL_OUTPUT_HELP = (
    "output folder (default: the model's run directory's figures/, or <output.root>/figures "
    "for a model file outside a run)"
)


def _output_dir(config, output_dir, run_dir=None):
    from pathlib import Path

    if output_dir:
        path = Path(output_dir)
    elif run_dir is not None:
        path = Path(run_dir) / "figures"
    else:
        path = Path(config.output.root) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _model_figure(config, model_path, overrides, output_dir, draw):
    """Resolves the model (and its run's data settings), then draws; errors in one line."""
    from net.data import DataError
    from net.neighbours import TooFewNeighboursError
    from net.runs import ModelFileError

    try:
        choice, config = model_for_task(config, model_path, overrides)
        page = draw(config, choice.path, _output_dir(config, output_dir, choice.run_dir))
    except (DataError, ModelFileError, TooFewNeighboursError) as error:
        fail(f"Figure stopped: {error}")
    print(f"Wrote {page}")


@config_task(
    batches="number of training batches to draw (default 2)",
    output_dir=OUTPUT_HELP,
    seed="seed of the batch sampling and augmentation (default 0)",
)
def visualize_data(c, batches=None, output_dir=None, seed=None, options: ConfigOptions = CONFIG):
    """Training batches as the pipeline delivers them, and each configured augmentation alone."""
    batches = integer_option("batches", batches, 2)
    seed = integer_option("seed", seed, 0, minimum=0)
    config = options.load()
    from net import figures
    from net.data import DataError

    out = _output_dir(config, output_dir)
    try:
        page = figures.training_batches(config, out, num_batches=batches, seed=seed)
    except DataError as error:
        fail(f"Figure stopped: {error}")
    print(f"Wrote {page}")


@config_task(
    model_path=MODEL_HELP,
    batches="number of P x K test batches (default 3)",
    output_dir=MODEL_OUTPUT_HELP,
    seed="seed of the query choice (default 0)",
)
def visualize_predictions_on_batches(
    c, model_path=None, batches=None, output_dir=None, seed=None, options: ConfigOptions = CONFIG
):
    """For a random query in each of a few test batches, that batch ranked by distance."""
    batches = integer_option("batches", batches, 3)
    seed = integer_option("seed", seed, 0, minimum=0)
    config = options.load()
    from net import figures

    def draw(config, model_file, out):
        return figures.rankings_on_batches(config, model_file, out, num_batches=batches, seed=seed)

    _model_figure(config, model_path, options.overrides, output_dir, draw)


@config_task(
    model_path=MODEL_HELP,
    queries="number of random queries (default 8)",
    top_k="neighbours shown per query (default 8)",
    output_dir=MODEL_OUTPUT_HELP,
    seed="seed of the query choice (default 0)",
)
def visualize_predictions_on_dataset(
    c,
    model_path=None,
    options: ConfigOptions = CONFIG,
    queries=None,
    top_k=None,
    output_dir=None,
    seed=None,
):
    """For random test queries, their top matches across the whole test set."""
    queries = integer_option("queries", queries, 8)
    top_k = integer_option("top_k", top_k, 8)
    seed = integer_option("seed", seed, 0, minimum=0)
    config = options.load()
    from net import figures

    def draw(config, model_file, out):
        return figures.rankings_on_dataset(
            config, model_file, out, num_queries=queries, top_k=top_k, seed=seed
        )

    _model_figure(config, model_path, options.overrides, output_dir, draw)


@config_task(
    run_dir="the run directory (default: the newest run under output.root)",
    output_dir="output folder (default: the run's figures/)",
)
def visualize_training(c, options: ConfigOptions = CONFIG, run_dir=None, output_dir=None):
    """Training curves (losses, validation Recall@K and MAP@R, learning rate) of a run."""
    from pathlib import Path

    from net.quiet import import_tensorflow

    import_tensorflow()  # net.figures imports TensorFlow, and --run-dir loads no configuration.
    from net import figures, runs

    try:
        if run_dir is None:
            run_dir = runs.latest_run_dir(options.load().output.root)
            print(f"Run: {run_dir} (the newest run with a training log)")
        elif not (Path(run_dir) / "log.csv").is_file():
            raise runs.ModelFileError(
                f"{run_dir} has no log.csv (not a run directory, or the run stopped before its "
                "first epoch)"
            )
        page = figures.training_curves(Path(run_dir), Path(output_dir) if output_dir else None)
    except (runs.ModelFileError, ValueError) as error:
        fail(f"Figure stopped: {error}")
    print(f"Wrote {page}")
