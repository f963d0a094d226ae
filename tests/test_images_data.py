"""Image data: folders with class sub-folders, .npz, IDX, the embedded digits, the cache, and every bad input
as a one-line error naming the file (exit 2)."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from selfsup.cli import main
from selfsup.data.images import ImageDataConfig, load_images
from selfsup.errors import SelfsupError


def _png(path, size=(12, 10), mode="L", value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 20, 200)).save(path)


def test_folder_with_class_subfolders_resizes_and_labels(tmp_path):
    _png(tmp_path / "cats" / "a.png", (12, 10))
    _png(tmp_path / "cats" / "b.jpg", (40, 40))
    _png(tmp_path / "dogs" / "c.png", (5, 7), value=250)
    s = load_images([str(tmp_path)], ImageDataConfig(image_size=8))
    assert s.images.shape == (3, 1, 8, 8) and s.images.dtype == np.uint8
    assert s.labels.tolist() == [0, 0, 1] and s.classes == ["cats", "dogs"]
    assert abs(int(s.images[2].mean()) - 250) <= 1
    rgb = load_images([str(tmp_path)], ImageDataConfig(image_size=8, channels=3))
    assert rgb.images.shape == (3, 3, 8, 8)


def test_flat_folder_has_no_labels_and_rgb_is_kept(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", mode="RGB")
    s = load_images([str(tmp_path)], ImageDataConfig(image_size=6))
    assert s.images.shape == (3, 3, 6, 6) and (s.labels == -1).all() and not s.has_labels
    assert s.images[0, 2].mean() == pytest.approx(200, abs=1)


def test_npz_idx_and_digits(tmp_path):
    x = np.random.default_rng(0).random((5, 9, 9))  # floats in [0, 1]
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    s = load_images([str(tmp_path / "d.npz")], ImageDataConfig(image_size=9))
    assert s.images.shape == (5, 1, 9, 9) and s.labels.tolist() == [0, 1, 2, 3, 4]
    assert np.abs(s.images[:, 0].astype(float) - x * 255).max() <= 1
    imgs = np.random.default_rng(1).integers(0, 256, (4, 6, 6), dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 4, 6, 6) + imgs.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 4) + bytes([3, 1, 4, 1]))
    s = load_images([str(tmp_path / "t10k-images-idx3-ubyte.gz")], ImageDataConfig(image_size=6))
    assert np.array_equal(s.images[:, 0], imgs) and s.labels.tolist() == [3, 1, 4, 1]
    d = load_images(["sklearn:digits"], ImageDataConfig(image_size=8))
    assert d.images.shape == (1797, 1, 8, 8) and d.images.max() == 255 and d.num_classes == 10
    again = load_images(["sklearn:digits"], ImageDataConfig(image_size=8))
    assert isinstance(again.images, np.memmap) or again.images.base is not None  # memory-mapped cache


def _bad_inputs(tmp_path):
    (tmp_path / "corrupt").mkdir()
    _png(tmp_path / "corrupt" / "ok.png")
    (tmp_path / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _png(tmp_path / "mixed" / "a.png", mode="L")
    _png(tmp_path / "mixed" / "b.png", mode="RGB")
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 4, 4)))
    np.savez(tmp_path / "badx.npz", x=np.zeros((2, 4, 4, 2)))
    return {"corrupt": ("corrupt", "broken.png: not a readable image"),
            "empty": ("empty", "folder has no images"),
            "mixed": ("mixed", "b.png: 3-channel image, but"),
            "nox": ("nox.npz", "no array named 'x'"),
            "badx": ("badx.npz", "expected images of shape"),
            "missing": ("nowhere", "no such file or folder")}


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, capsys):
    for source, message in _bad_inputs(tmp_path).values():
        with pytest.raises(SelfsupError, match=message.replace("(", r"\(")):
            load_images([str(tmp_path / source)], ImageDataConfig(image_size=8))
        out = tmp_path / f"run-{source}"
        code = main(["pretrain", "simclr", "--data", str(tmp_path / source), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("selfsup: error:") and "\n" not in err, err
        assert str(tmp_path / source) in err and not out.exists()


def test_bad_input_exit_status_in_a_real_process(tmp_path):
    source, _ = _bad_inputs(tmp_path)["corrupt"]
    r = run_cli("pretrain", "simclr", "--data", str(tmp_path / source), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "broken.png" in r.stderr
    r = run_cli("evaluate", "--model", str(tmp_path / "nomodel"), "--probe", "knn", "--train", "sklearn:digits",
                "--eval", "sklearn:digits")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nomodel" in r.stderr


def test_float_pixels_on_another_scale_are_flagged(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 17, (6, 8, 8)).astype(np.float32)  # scikit-learn's raw digits scale
    np.savez(tmp_path / "raw.npz", x=x, y=np.arange(6) % 2)
    s = load_images([str(tmp_path / "raw.npz")], ImageDataConfig(image_size=8))
    err = capsys.readouterr().err
    assert "float pixels reach only 16" in err and "raw.npz" in err and s.images.max() == 16
    np.savez(tmp_path / "fine.npz", x=x * 15, y=np.arange(6) % 2)  # 0..240 floats: the 0..255 convention
    load_images([str(tmp_path / "fine.npz")], ImageDataConfig(image_size=8))
    assert "warning" not in capsys.readouterr().err
