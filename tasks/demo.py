"""The demo: the main job on the embedded default (generated data, CPU, a few minutes)."""

from invoke import task

from tasks.common import CONFIG_HELP, SET_HELP, load


@task(
    iterable=["set_"],
    help={
        "config_path": CONFIG_HELP,
        "profile": "profile of the configuration file (default: demo)",
        "set_": SET_HELP,
        "run_dir": "run directory (default: a new one under the profile's output.root)",
    },
)
def demo(c, config_path="config.yaml", profile="demo", run_dir=None, set_=None):
    """Generate demo data, train on CPU, compare Recall@K untrained vs trained, draw rankings."""
    config = load(config_path, profile, set_)
    from net import demo as demo_lib

    demo_lib.run_demo(config, run_dir=run_dir)
