"""Tests of net.files: atomic writes keep the old file on failure and leave no temporary."""

import json

import numpy as np
import pytest

from net import files


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_text_bytes_json_npz_round_trip(tmp_path):
    files.atomic_write_text(tmp_path / "a" / "t.txt", "héllo\n")
    files.atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff")
    files.atomic_write_json(
        tmp_path / "m.json",
        {"x": np.float32(0.5), "n": np.int64(3), "v": np.arange(2), "p": tmp_path},
    )
    files.atomic_write_npz(tmp_path / "e.npz", {"e": np.eye(2, dtype=np.float32)})
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "x": 0.5,
        "n": 3,
        "v": [0, 1],
        "p": str(tmp_path),
    }
    with np.load(tmp_path / "e.npz") as stored:
        np.testing.assert_array_equal(stored["e"], np.eye(2))
    assert _listing(tmp_path) == ["a", "b.bin", "e.npz", "m.json"]


def test_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    files.atomic_write_json(target, {"epoch": 1})
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        files.atomic_write_json(target, {"epoch": object()})
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert _listing(tmp_path) == ["m.json"]


def test_atomic_path_removes_the_temporary_when_the_body_raises(tmp_path):
    target = tmp_path / "w.weights.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_path(target, suffix=".tmp.weights.h5") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".h5")
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["w.weights.h5"]
