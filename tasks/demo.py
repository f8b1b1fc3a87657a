"""The demo: the main job on the embedded default (generated data, CPU, a few minutes)."""

from invoke import task

from tasks.common import CONFIG_HELP, load


@task(
    help={
        "config_path": CONFIG_HELP,
        "profile": "profile of the configuration file (default: demo)",
        "run_dir": "run directory (default: a new one under the profile's output.root)",
    }
)
def demo(c, config_path="config.yaml", profile="demo", run_dir=None):
    """Generate demo data, train on CPU, compare Recall@K untrained vs trained, draw rankings."""
    config = load(config_path, profile)
    from net import demo as demo_lib

    demo_lib.run_demo(config, run_dir=run_dir)
