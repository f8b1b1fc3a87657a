"""The Embedding Projector export: files in the projector's format that load back."""

import numpy as np
import pytest
from tensorboard.backend.event_processing import io_wrapper
from tensorboard.plugins.projector import projector_plugin

from net import projector


def example(count=7, dim=5, side=4):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(count, dim)).astype(np.float32)
    thumbnails = rng.integers(0, 256, size=(count, side, side, 3), dtype=np.uint8)
    metadata = [(str(i % 3 + 1), f"class\t{i % 3}", f"images/{i}.jpg") for i in range(count)]
    return embeddings, metadata, thumbnails


def test_sprite_puts_thumbnails_row_major_on_a_square_grid():
    """7 thumbnails -> a 3 x 3 grid; thumbnail 4 is row 1, column 1; cells 7 and 8 are black."""
    _, _, thumbnails = example()
    sprite = projector.sprite_image(thumbnails)
    assert sprite.shape == (12, 12, 3) and sprite.dtype == np.uint8
    assert np.array_equal(sprite[4:8, 4:8], thumbnails[4])
    assert np.array_equal(sprite[8:12, 0:4], thumbnails[6])
    assert not sprite[8:12, 4:12].any()


def test_tile_size_keeps_the_sprite_within_the_projectors_limit():
    assert projector.sprite_tile_size(100, 64) == 64  # 10 x 10 x 64 = 640 px
    assert projector.sprite_tile_size(8131, 64) == 64  # 91 columns x 64 = 5824 px
    assert projector.sprite_tile_size(60502, 64) == 8192 // 246  # SOP's test set: 33 px
    assert projector.sprite_tile_size(1, 0) == 1


def test_written_files_load_back_as_the_projector_reads_them(tmp_path):
    embeddings, metadata, thumbnails = example()
    folder = tmp_path / "run" / "tensorboard" / "projector"
    config_path = projector.write_projector(
        folder, embeddings, metadata, thumbnails=thumbnails, description="seven points"
    )
    assert config_path == folder / "projector_config.pbtxt"
    back = projector.read_projector(folder)
    np.testing.assert_array_equal(back.embeddings, embeddings)
    assert back.header == ["class id", "class name", "file"]
    # A tab inside a name would add a column: it becomes a space.
    assert back.metadata[4] == ["2", "class 1", "images/4.jpg"]
    assert len(back.metadata) == len(embeddings)
    (embedding,) = back.config.embeddings
    assert list(embedding.sprite.single_image_dim) == [4, 4]
    assert np.array_equal(back.sprite, projector.sprite_image(thumbnails))

    # TensorBoard's own projector plugin finds the configuration and the checkpoint, and the
    # event file makes the folder a run under the run directory.
    configs, _ = projector_plugin.ProjectorPlugin._read_latest_config_files(
        None, [("projector", str(folder))]
    )
    assert configs["projector"].model_checkpoint_path.endswith("embeddings.ckpt-1")
    runs = list(io_wrapper.GetLogdirSubdirectories(str(tmp_path / "run")))
    assert str(folder) in runs


def test_writing_again_replaces_the_previous_export(tmp_path):
    embeddings, metadata, thumbnails = example()
    projector.write_projector(tmp_path, embeddings, metadata, thumbnails=thumbnails)
    projector.write_projector(tmp_path, embeddings[:3] * 2, metadata[:3])
    back = projector.read_projector(tmp_path)
    np.testing.assert_array_equal(back.embeddings, embeddings[:3] * 2)
    assert back.sprite is None and not (tmp_path / "sprite.png").exists()
    assert len(back.metadata) == 3


def test_counts_must_agree(tmp_path):
    embeddings, metadata, thumbnails = example()
    with pytest.raises(ValueError, match="metadata rows"):
        projector.write_projector(tmp_path, embeddings, metadata[:-1])
    with pytest.raises(ValueError, match="thumbnails"):
        projector.write_projector(tmp_path, embeddings, metadata, thumbnails=thumbnails[:2])
    with pytest.raises(FileNotFoundError, match="projector configuration"):
        projector.read_projector(tmp_path / "missing")
