"""The demo: the main job on the embedded default (generated data, CPU, a few minutes)."""

from tasks.common import DEMO_CONFIG, ConfigOptions, config_task


@config_task(
    profile="profile of the configuration file (default: demo)",
    run_dir="run directory (default: a new one under the profile's output.root)",
)
def demo(c, options: ConfigOptions = DEMO_CONFIG, run_dir=None):
    """Generate demo data, train on CPU, compare Recall@K untrained vs trained, draw rankings."""
    config = options.load()
    from net import demo as demo_lib

    demo_lib.run_demo(config, run_dir=run_dir)
