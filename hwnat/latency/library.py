"""Libraries of known devices for few-shot latency transfer: which ship, and how one is assembled.

A library is a latency dataset (``arch`` + one column of milliseconds per device) of many architectures
on devices other than the target; ``hwnat.latency.transfer.Library`` fits one model per device column.
The published datasets that ship with hwnat (``hwnat.data``: HELP, Lee et al., NeurIPS 2021, with
HW-NAS-Bench columns, Li et al., ICLR 2021) are the default library of their space; a user's CSV of the
same form replaces them. The target device's own column is never part of its library.

Example:
    >>> from hwnat.latency.library import shipped_libraries
    >>> [lib.space for lib in shipped_libraries()]
    ['fbnet', 'nasbench201', 'ofa-mbv3']
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnat.data import LATENCY, latency_dataset
from hwnat.errors import BadInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibraryFile:
    """A latency dataset usable as a library.

    Attributes:
        space: search space name.
        devices: its device columns (ms).
        rows: number of architectures.
        file: path of the CSV (``.csv`` or ``.csv.gz``).
    """

    space: str
    devices: tuple[str, ...]
    rows: int
    file: Path


def shipped_library(space: str) -> LibraryFile:
    """The library that ships for ``space`` (its published latency dataset).

    Raises:
        BadInputError: no dataset ships for the space (names the ones that do).
    """
    path = latency_dataset(space)
    with gzip.open(path, "rt", newline="") as f:
        header = f.readline().rstrip("\r\n").split(",")
        rows = sum(1 for line in f if line.strip())
    return LibraryFile(space, tuple(c for c in header if c != "arch"), rows, path)


def shipped_libraries() -> list[LibraryFile]:
    """Every shipped library, sorted by space name."""
    return [shipped_library(s) for s in sorted(LATENCY)]


@dataclass(frozen=True)
class LibraryData:
    """The rows and columns of a library, ready to fit: ``latency_ms[i, j]`` is ``archs[i]`` on
    ``devices[j]`` (ms); ``source`` names the file for messages and model metadata; ``left_out``: the
    file's columns that are not in the library (the target's own, ``exclude``)."""

    archs: list[str]
    latency_ms: np.ndarray
    devices: list[str]
    source: str
    left_out: tuple[str, ...] = ()


def read_library(space: str, path: str | Path | None = None, target: str | None = None,
                 exclude: tuple[str, ...] = ()) -> LibraryData:
    """The library columns of a CSV, or of the shipped dataset of ``space`` when ``path`` is None.

    Args:
        space: search space name (chooses the shipped dataset).
        path: a user's library CSV (``arch`` + ms columns), or None for the shipped one.
        target: the device being predicted: its column, when present, is left out.
        exclude: further columns to leave out.

    Raises:
        BadInputError: an unreadable CSV or bad value (names the file, column and row), or no column left.
    """
    from hwnat.latency.predictor import read_latency_csv

    src = Path(path) if path is not None else shipped_library(space).file
    archs, ms, cols = read_latency_csv(src, None, what="library")
    drop = set(exclude) | ({target} if target else set())
    keep = [j for j, c in enumerate(cols) if c not in drop]
    if not keep:
        raise BadInputError(f"{src}: no library device besides {', '.join(sorted(drop & set(cols)))}")
    return LibraryData(archs, ms[:, keep], [cols[j] for j in keep], str(src),
                       tuple(c for c in cols if c in drop))


def cache_dir() -> Path:
    """Where fitted libraries are kept: ``$HWNAT_CACHE``, else ``$XDG_CACHE_HOME/hwnat``, else
    ``~/.cache/hwnat``."""
    if os.environ.get("HWNAT_CACHE"):
        return Path(os.environ["HWNAT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwnat"


def _cache_key(data: LibraryData, feature_names: list[str], seed: int) -> str:
    """Everything the fitted models depend on: the rows and values, the devices, the features, the seed,
    the library settings and the versions of hwnat and XGBoost."""
    import xgboost

    import hwnat
    from hwnat.latency.transfer import LIBRARY_MAX_ROUNDS, LIBRARY_PARAMS

    h = hashlib.sha256()
    for part in (data.archs, data.devices, feature_names, seed, sorted(LIBRARY_PARAMS.items()), LIBRARY_MAX_ROUNDS,
                 hwnat.__version__, xgboost.__version__):
        h.update(json.dumps(part, default=str).encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(data.latency_ms, dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


def fit_library(space, data: LibraryData, nthread: int = 2, seed: int = 0, cache: bool = True):
    """The transfer library (one XGBoost model per device column) of ``data``, fitted or, when the same
    library was fitted before, read back from ``cache_dir()`` (XGBoost's JSON; the key covers the data,
    devices, features, seed, settings and versions, so a stale file is never used).

    Args:
        space: a ``SearchSpace`` (or its name); the library's archs must parse in it.
        data: from ``read_library``.
        cache: read and write the cache (an unwritable cache is skipped with a warning).

    Returns:
        ``hwnat.latency.transfer.Library``.
    """
    from hwnat._io import write_atomic
    from hwnat.latency.features import ArchFeatures
    from hwnat.latency.transfer import Library

    fx = ArchFeatures(space)
    path = cache_dir() / "libraries" / f"{fx.space.name}-{_cache_key(data, fx.names, seed)}.json" if cache else None
    if path is not None and path.is_file():
        try:
            lib = Library.from_dict(json.loads(path.read_text())["library"], nthread, str(path))
            log.info("library of %d device(s) read from %s", len(lib.devices), path)
            return lib
        except (OSError, ValueError, KeyError, TypeError, BadInputError) as e:
            log.warning("ignoring unreadable library cache %s (%s); fitting again", path, e)
    X = fx.transform(fx.genomes(data.archs, data.source))
    log.info("fitting library models of %d device(s) on %d archs from %s", len(data.devices), len(data.archs),
             data.source)
    lib = Library.fit(X, data.latency_ms, data.devices, fx.names, nthread=nthread, seed=seed)
    if path is not None:
        try:
            write_atomic(path, json.dumps({"source": data.source, "space": fx.space.name, "seed": seed,
                                           "library": lib.to_dict()}).encode())
        except BadInputError as e:
            log.warning("library cache not written: %s", e)
    return lib
