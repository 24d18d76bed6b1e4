"""Published datasets that ship inside the package (gzip-compressed CSV; provenance in README.md here).

``latency/<space>.csv.gz``: end-to-end latency in ms of many architectures on real devices (HELP,
NeurIPS 2021; HW-NAS-Bench, ICLR 2021), one column per device setting. ``accuracy/nasbench201.csv.gz``:
published NAS-Bench-201 accuracies (Dong et al., ICLR 2020). Nothing here is read at import time.

Example:
    >>> from hwnat.data import latency_dataset
    >>> latency_dataset("nasbench201").name
    'nasbench201.csv.gz'
"""

from __future__ import annotations

from pathlib import Path

from hwnat.errors import BadInputError

ROOT = Path(__file__).resolve().parent

#: space registry name -> file stem of its latency dataset
LATENCY = {"nasbench201": "nasbench201", "fbnet": "fbnet", "ofa-mbv3": "ofa_mbv3"}
#: space registry name -> file stem of its accuracy dataset
ACCURACY = {"nasbench201": "nasbench201"}


def latency_dataset(space: str) -> Path:
    """Path of the shipped latency dataset of ``space`` (``arch`` + one ms column per device)."""
    if space not in LATENCY:
        raise BadInputError(f"no latency dataset ships for space {space!r}; available: {sorted(LATENCY)}")
    return ROOT / "latency" / f"{LATENCY[space]}.csv.gz"


def accuracy_dataset(space: str) -> Path:
    """Path of the shipped accuracy dataset of ``space`` (``arch`` + accuracy columns in percent)."""
    if space not in ACCURACY:
        raise BadInputError(f"no accuracy dataset ships for space {space!r}; available: {sorted(ACCURACY)}")
    return ROOT / "accuracy" / f"{ACCURACY[space]}.csv.gz"
