"""Training."""

from tasks.common import CONFIG, SET_HELP, ConfigOptions, config_task, fail, integer_option


@config_task(
    run_dir="run directory; an interrupted run given here resumes (default: a new one "
    "under output.root)",
)
def train(c, options: ConfigOptions = CONFIG, run_dir=None):
    """Train the configured model; writes models, logs and test metrics to the run directory."""
    config = options.load()
    from net import experiment
    from net.config import ConfigError
    from net.data import DataError
    from net.neighbours import TooFewNeighboursError
    from net.training import TrainingDivergedError

    run_dir = run_dir or experiment.make_run_dir(config.output.root)
    try:  # experiment.train prints the run directory once it is made (after the data checks)
        summary = experiment.train(config, run_dir)
    except ConfigError as error:  # found only when the model is built (model.feature_layer)
        fail(f"Configuration error: {error}", code=2)
    except (DataError, TrainingDivergedError, experiment.RunDirectoryError) as error:
        fail(f"Training stopped: {error}")
    except TooFewNeighboursError as error:  # evaluation.method: faiss_ivf, nprobe too small
        fail(f"Evaluation stopped: {error}; the models saved so far are in {run_dir}")
    except OSError as error:  # a full disk (net.callbacks.RunSaveError) or another file error
        fail(f"Training stopped: {error}")
    from net.analysis import format_metrics_table

    print(format_metrics_table(summary["test"]))
    print(f"Models, logs and metrics.json are in {run_dir}")


@config_task(
    start="first learning rate (default 1e-7)",
    end="last learning rate (default 1)",
    steps="batches, one learning rate each, growing exponentially (default 100)",
    output_dir="where lr_finder.png/.html/.csv go (default: <output.root>/lr_finder)",
)
def find_lr(c, options: ConfigOptions = CONFIG, start="1e-7", end="1", steps=None, output_dir=None):
    """Learning-rate range test of the configured training; prints a suggested learning rate."""
    steps = integer_option("steps", steps, 100, minimum=2)
    config = options.load()
    from pathlib import Path

    from net import lr_finder
    from net.config import ConfigError
    from net.data import DataError

    output_dir = Path(output_dir) if output_dir else Path(config.output.root) / "lr_finder"
    rates = {}
    for name, value in (("start", start), ("end", end)):
        try:
            rates[name] = float(value)
        except ValueError:
            fail(f"--{name}: expected a number such as 1e-7, got {value!r}", code=2)
    start, end = rates["start"], rates["end"]
    try:
        result, page = lr_finder.find_learning_rate(
            config, output_dir, start=start, end=end, steps=steps
        )
    except ConfigError as error:
        fail(f"Configuration error: {error}", code=2)
    except (DataError, ValueError) as error:
        fail(f"Learning-rate range test stopped: {error}")
    print(lr_finder.summary(result))
    print(f"Plot: {page} (and lr_finder.png, lr_finder.csv beside it)")


@config_task(
    iterable=("grid",),
    grid="KEY=V1,V2,... : one key of the grid and its values (YAML); repeatable, every "
    "combination is trained, e.g. --grid model.descriptors=S,M,G --grid "
    "loss.auxiliary_weight=0,1",
    grid_file="YAML file of the grid instead of (or besides) --grid: {dotted key: [values]}",
    name="the sweep's folder under <output.root>/sweeps/ (default: the grid's keys)",
    set_=SET_HELP + "; applies to every run",
    parallel="runs at once (default 1); each sees one GPU via CUDA_VISIBLE_DEVICES",
    print_commands="print the ml.train command line of each run still to train (for a Slurm "
    "array or xargs -P), one a line, and write the sweep's record; train nothing",
    retry_failed="run again the runs that failed in an earlier start",
)
def sweep(
    c,
    grid=None,
    grid_file=None,
    name=None,
    options: ConfigOptions = CONFIG,
    parallel=None,
    print_commands=False,
    retry_failed=False,
):
    """Train every combination of a grid of overrides, one run each; resumable; one table."""
    config = options.load()
    from pathlib import Path

    from net import comparison
    from net import grid as grids
    from net import sweep as sweeps

    parallel = integer_option("parallel", parallel, 1)
    try:
        grid = grids.build_grid(grid or [], grid_file)
        name = name or grids.default_name(grid)
        if grids.safe_name(name) != name or name in (".", ".."):
            fail(f"--name {name!r}: use letters, digits and . _ = + - only", code=2)
        sweep_dir = Path(config.output.root) / "sweeps" / name
        base = sweeps.SweepBase(
            str(Path(options.path).resolve()), options.profile or None, options.overrides
        )
        if print_commands:
            commands = sweeps.commands_to_run(base, grid, sweep_dir, retry_failed=retry_failed)
            if commands:
                print("\n".join(commands))
            return
        print(f"Sweep {sweep_dir}: {len(grids.grid_runs(grid))} combinations")
        record = sweeps.run_sweep(base, grid, sweep_dir, parallel=parallel,
                                  retry_failed=retry_failed)  # fmt: skip
    except grids.SweepError as error:
        fail(f"Sweep error: {error}", code=2)
    except KeyboardInterrupt:
        fail(f"Sweep stopped; the same command resumes it ({sweep_dir})", code=130)
    paths = comparison.write_comparison(sweep_dir)
    print(paths["markdown"].read_text())
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
    failed = [run for run, entry in record["runs"].items() if entry["status"] != "finished"]
    if failed:
        fail(f"{len(failed)} of {len(record['runs'])} runs did not finish: {', '.join(failed)}")
