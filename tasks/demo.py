"""The demo: the main job on the embedded default (generated data, CPU, a few minutes)."""

from tasks.common import config_task, load


@config_task(
    profile="profile of the configuration file (default: demo)",
    run_dir="run directory (default: a new one under the profile's output.root)",
)
def demo(c, config_path="config.yaml", profile="demo", run_dir=None, set_=None):
    """Generate demo data, train on CPU, compare Recall@K untrained vs trained, draw rankings."""
    config = load(config_path, profile, set_)
    from net import demo as demo_lib

    demo_lib.run_demo(config, run_dir=run_dir)
