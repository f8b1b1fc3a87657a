"""Data sets: the generated demo data, and checks of a configured data set."""

from invoke import task

from tasks.common import CONFIG_HELP, PROFILE_HELP, SET_HELP, fail, load


@task(
    iterable=["set_"],
    help={
        "config_path": CONFIG_HELP,
        "profile": PROFILE_HELP + " (default: demo)",
        "set_": SET_HELP,
    },
)
def generate_demo(c, config_path="config.yaml", profile="demo", set_=None):
    """Write the synthetic demo data set (Cars196 file format) to the profile's data.root.

    Does nothing when a complete data set made with the same parameters is already there.
    """
    config = load(config_path, profile, set_)
    from net.demo_data import generate_demo_dataset

    root = generate_demo_dataset(config.data.root)
    print(f"Demo data set in {root}")


@task(
    help={"config_path": CONFIG_HELP, "profile": PROFILE_HELP, "set_": SET_HELP}, iterable=["set_"]
)
def check(c, config_path="config.yaml", profile=None, set_=None):
    """Open the configured data set, check every file, and print the split sizes."""
    config = load(config_path, profile, set_)
    from net import experiment
    from net.data import DataError

    try:
        splits = experiment.load_splits(config.data)
    except DataError as error:
        fail(f"Data check failed: {error}")
    for name in ("train", "val", "test"):
        records = getattr(splits, name)
        print(f"{name:>5}: {len(records):6d} images, {records.num_classes:4d} classes")
