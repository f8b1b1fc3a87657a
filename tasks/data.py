"""Data sets: the generated demo data, and checks of a configured data set."""

from tasks.common import CONFIG, DEMO_CONFIG, PROFILE_HELP, ConfigOptions, config_task, fail


@config_task(profile=PROFILE_HELP + " (default: demo)")
def generate_demo(c, options: ConfigOptions = DEMO_CONFIG):
    """Write the synthetic demo data set (Cars196 file format) to the profile's data.root.

    Does nothing when a complete data set made with the same parameters is already there.
    """
    config = options.load(tensorflow=False)
    from net.demo_data import generate_demo_dataset

    root = generate_demo_dataset(config.data.root)
    print(f"Demo data set in {root}")


@config_task()
def check(c, options: ConfigOptions = CONFIG):
    """Check every file of the configured data set; print split sizes beside the official ones."""
    config = options.load()
    import time

    from net import experiment
    from net.data import DataError
    from net.demo_data import is_demo_dataset
    from net.layouts import detect_layout, split_counts_table

    start = time.perf_counter()
    try:
        layout = config.data.layout
        if layout == "auto":
            layout = detect_layout(config.data.root)
        splits = experiment.load_splits(config.data)
    except DataError as error:
        fail(f"Data check failed: {error}")
    seconds = time.perf_counter() - start
    total = len(splits.train) + len(splits.val) + len(splits.test)
    check = "decoding every image" if config.data.decode_check else "headers and end markers"
    if layout == "cars196" and is_demo_dataset(config.data.root):
        # The generated demo set has Cars196's file format, not its counts: nothing to compare.
        print(f"Data set: the generated demo data set (Cars196 format) at {config.data.root}")
        layout = "demo"
    else:
        print(f"Data set: {layout} at {config.data.root}")
    print(split_counts_table(splits, layout, config.data.images_per_class))
    print(f"Read and checked {total:,} images in {seconds:.1f} s ({check}).")
