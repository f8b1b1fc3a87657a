"""Training."""

from invoke import task

from tasks.common import CONFIG_HELP, PROFILE_HELP, SET_HELP, fail, load


@task(
    iterable=["set_"],
    help={
        "config_path": CONFIG_HELP,
        "profile": PROFILE_HELP,
        "set_": SET_HELP,
        "run_dir": "run directory; an interrupted run given here resumes (default: a new one "
        "under output.root)",
    },
)
def train(c, config_path="config.yaml", profile=None, run_dir=None, set_=None):
    """Train the configured model; writes models, logs and test metrics to the run directory."""
    config = load(config_path, profile, set_)
    from net import experiment
    from net.config import ConfigError
    from net.data import DataError
    from net.training import TrainingDivergedError

    run_dir = run_dir or experiment.make_run_dir(config.output.root)
    print(f"Run directory: {run_dir}")
    try:
        summary = experiment.train(config, run_dir)
    except ConfigError as error:  # found only when the model is built (model.feature_layer)
        fail(f"Configuration error: {error}", code=2)
    except (DataError, TrainingDivergedError, experiment.RunDirectoryError) as error:
        fail(f"Training stopped: {error}")
    from net.analysis import format_metrics_table

    print(format_metrics_table(summary["test"]))
    print(f"Models, logs and metrics.json are in {run_dir}")


@task(
    iterable=["set_"],
    help={
        "config_path": CONFIG_HELP,
        "profile": PROFILE_HELP,
        "set_": SET_HELP,
        "start": "first learning rate (default 1e-7)",
        "end": "last learning rate (default 1)",
        "steps": "batches, one learning rate each, growing exponentially (default 100)",
        "output_dir": "where lr_finder.png/.html/.csv go (default: <output.root>/lr_finder)",
    },
)
def find_lr(
    c,
    config_path="config.yaml",
    profile=None,
    set_=None,
    start="1e-7",
    end="1",
    steps=100,
    output_dir=None,
):
    """Learning-rate range test of the configured training; prints a suggested learning rate."""
    config = load(config_path, profile, set_)
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
    start, end, steps = rates["start"], rates["end"], int(steps)
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
