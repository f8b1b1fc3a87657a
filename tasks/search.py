"""Image search with a trained model: index a folder of images, then query it with an image."""

from tasks.common import CONFIG, CONFIG_HELP, ConfigOptions, config_task, fail, integer_option

OPTIONAL_CONFIG_HELP = CONFIG_HELP + "; optional: defaults apply when config.yaml is absent"

DEFAULT_INDEX_NAME = ".cgd_index.npz"


def _config(options: ConfigOptions):
    """The configuration, or None when the default file is absent (search needs no data set)."""
    from pathlib import Path

    absent = not Path(options.path).is_file() and options.path == CONFIG.path
    if absent and not options.profile and not options.overrides:
        from net.quiet import import_tensorflow

        import_tensorflow()  # What load() does for the tasks, here without a configuration.
        return None
    return options.load()


@config_task(
    model_path="a saved .keras model or a run directory (its best.keras); default: the "
    "newest run under output.root with a best.keras",
    images="folder of images to index, searched recursively (jpg, jpeg, png, bmp, gif, webp)",
    index_path=f"index file to write (default: <images>/{DEFAULT_INDEX_NAME})",
    image_size="input side in pixels (default: the model's input size)",
    batch_size="images per batch (default: data.eval_batch_size of the configuration, "
    "or 64 without one)",
    crop_mode="none (plain resize) or pad (pad to a square first); default: the data.crop "
    "of the model's run (else of the configuration), where bbox means none (folder images "
    "have no boxes)",
    skip_bad="leave unreadable images out (and say how many) instead of stopping "
    "(also on when the configuration sets data.skip_bad_images)",
    config_path=OPTIONAL_CONFIG_HELP,
)
def index(
    c,
    images,
    model_path=None,
    index_path=None,
    image_size=None,
    batch_size=None,
    crop_mode=None,
    skip_bad=False,
    options: ConfigOptions = CONFIG,
):
    """Embed every image below a folder with a trained model and save the search index."""
    config = _config(options)
    from pathlib import Path

    from net import search
    from net.runs import ModelFileError, choose_model, saved_config

    try:
        choice = choose_model(model_path, config.output.root if config else "runs")
        print(choice.describe())
        # The run's own crop (the model was trained on it), else the configuration's.
        run_crop = saved_config(choice.run_dir)["data"].get("crop") if choice.run_dir else None
    except ModelFileError as error:
        fail(f"Indexing stopped: {error}")
    if crop_mode is None:
        crop_mode = run_crop or (config.data.crop if config else "none")
        crop_mode = "none" if crop_mode == "bbox" else crop_mode
    skip_bad = bool(skip_bad) or bool(config and config.data.skip_bad_images)
    output = Path(index_path) if index_path else Path(images) / DEFAULT_INDEX_NAME
    try:
        built = search.build_index(
            choice.path,
            images,
            output,
            image_size=integer_option("image_size", image_size, None),
            crop_mode=crop_mode,
            batch_size=integer_option(
                "batch_size", batch_size, config.data.eval_batch_size if config else 64
            ),
            skip_bad=skip_bad,
        )
    except search.SearchError as error:
        fail(f"Indexing stopped: {error}")
    print(
        f"Indexed {len(built)} images of {built.images_root} ({built.embedding_dim}-d, "
        f"{built.image_size} px, crop {built.crop_mode}) with {built.model_path}"
    )
    if built.skipped:
        print(f"Skipped {len(built.skipped)} unreadable images (listed in the log above)")
    print(f"Wrote {output}")


@config_task(
    index="index file written by search.index",
    image="the query image",
    model_path="a saved .keras model or a run directory (default: the model recorded "
    "in the index); must be the model the index was built with",
    top_k="number of nearest images to show (default 8)",
    output_path="figure to write (default: <output.root>/search/<image name>.png, "
    "runs/search/ without a configuration)",
    config_path=OPTIONAL_CONFIG_HELP,
)
def query(
    c, index, image, model_path=None, top_k=None, output_path=None, options: ConfigOptions = CONFIG
):
    """Print the indexed images nearest to a query image and draw them in a figure."""
    config = _config(options)
    from pathlib import Path

    from net import figures, search

    top_k = integer_option("top_k", top_k, 8)
    try:
        loaded = search.load_index(index)
        matches = search.query_index(loaded, model_path or loaded.model_path, image, top_k=top_k)
    except search.SearchError as error:
        fail(f"Search stopped: {error}")
    print(f"Nearest {len(matches)} of {len(loaded)} indexed images to {image}:")
    width = len(str(len(matches)))
    for rank, (path, distance) in enumerate(matches, start=1):
        print(f"  {rank:>{width}}  {distance:.4f}  {path}")
    if output_path:
        figure = Path(output_path)
    else:
        root = Path(config.output.root) if config else Path("runs")
        figure = root / "search" / f"{Path(image).stem}.png"
    figures.plot_query_results(
        image, matches, figure, images_root=loaded.images_root, title=f"query: {Path(image).name}"
    )
    print(f"Wrote {figure}")
