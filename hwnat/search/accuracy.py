"""Accuracy sources the NAT loop evaluates architectures with: the contract, and tabular accuracies.

An ``AccuracySource`` gives the top-1 accuracy (percent) of architectures and, for a supernet, NAT's
online transfer step (Lu et al., "Neural Architecture Transfer", TPAMI 2021: fine-tune the supernet on
subnets drawn from the archive's best encodings, then re-evaluate the archive). ``TableAccuracy`` is the
tabular source for spaces with published accuracies (``--accuracy CSV[:COLUMN]``, e.g. the NAS-Bench-201
table shipped in ``hwnat.data``): an exact lookup that never adapts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hwnat.errors import BadInputError
from hwnat.spaces import SearchSpace

#: the column searched on by default in the shipped NAS-Bench-201 table (validation, never test)
DEFAULT_COLUMNS = {"nasbench201": "cifar100_val_12ep"}


@runtime_checkable
class AccuracySource(Protocol):
    """What the NAT loop calls to know how accurate architectures are."""

    name: str

    def evaluate(self, archs: list[str]) -> np.ndarray:
        """Top-1 accuracy in percent, one per canonical architecture string."""

    def adapt(self, archs: list[str], rng: np.random.Generator) -> bool:
        """NAT's online transfer step on the archive's best encodings; True if weights changed."""

    def state(self) -> dict:
        """Plain data recorded in state.json and the report."""


class TableAccuracy:
    """Exact lookup of published accuracies (percent) by architecture.

    Args:
        space: the search space (archs are matched by genome, so any spelling that parses matches).
        path: CSV with an ``arch`` column and accuracy columns.
        column: the accuracy column; default: the only non-``arch`` column, or the space's usual
            validation column (``DEFAULT_COLUMNS``).

    Raises:
        BadInputError: missing file or column, non-numeric accuracies, unparsable archs, and (for spaces
            small enough to enumerate, <= 100,000 architectures) a table that lacks some of them.
    """

    def __init__(self, space: SearchSpace, path: str | Path, column: str | None = None):
        import pandas as pd

        self.space, self.path = space, Path(path)
        try:
            df = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise BadInputError(f"{self.path}: accuracy file not found") from None
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
            raise BadInputError(f"{self.path}: cannot read accuracy CSV: {str(e).splitlines()[0]}") from None
        if "arch" not in df.columns:
            raise BadInputError(f"{self.path}: no 'arch' column (columns: {', '.join(df.columns) or 'none'})")
        others = [c for c in df.columns if c != "arch"]
        if column is None:
            column = others[0] if len(others) == 1 else DEFAULT_COLUMNS.get(space.name)
            if column not in others:
                raise BadInputError(f"{self.path}: several accuracy columns ({', '.join(others)}); choose one "
                                    "with --accuracy CSV:COLUMN")
        if column not in others:
            raise BadInputError(f"{self.path}: no column {column!r} (columns: {', '.join(others) or 'none'})")
        if not len(df):
            raise BadInputError(f"{self.path}: no data rows")
        self.column = column
        vals = pd.to_numeric(df[column].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(vals))
        if len(bad):
            raise BadInputError(f"{self.path}: row {bad[0] + 1}, column {column!r}: {df[column].iloc[bad[0]]!r} "
                                "is not an accuracy in percent")
        try:
            genomes = space.encode_many(space.parse_many(df["arch"].tolist()))
        except BadInputError as e:
            raise BadInputError(f"{self.path}: {e}") from None
        self._acc = {g.tobytes(): float(v) for g, v in zip(np.ascontiguousarray(genomes), vals, strict=True)}
        self.name = f"table:{self.path.name}:{column}"
        self._check_coverage()

    def _check_coverage(self) -> None:
        lo, hi = (np.asarray(b, dtype=np.int64) for b in self.space.genome_bounds())
        size = float(np.prod((hi - lo + 1).astype(np.float64)))
        if size > 100_000:
            return
        grids = np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        allg = np.ascontiguousarray(np.stack([g.ravel() for g in grids], axis=1).astype(np.int64))
        missing = [g for g in allg if g.tobytes() not in self._acc]
        if missing:
            raise BadInputError(f"{self.path}: column {self.column!r} lacks {len(missing)} of the {len(allg)} "
                                f"{self.space.name} architectures, e.g. "
                                f"{self.space.format(self.space.decode(missing[0]))}")

    def lookup(self, genomes: np.ndarray) -> np.ndarray:
        """Accuracy of genomes ``(n, g)`` (percent)."""
        out = np.empty(len(genomes))
        for i, g in enumerate(np.ascontiguousarray(np.asarray(genomes, dtype=np.int64))):
            v = self._acc.get(g.tobytes())
            if v is None:
                raise BadInputError(f"{self.path}: no accuracy for {self.space.format(self.space.decode(g))} "
                                    f"in column {self.column!r}")
            out[i] = v
        return out

    def evaluate(self, archs: list[str]) -> np.ndarray:
        return self.lookup(self.space.encode_many(self.space.parse_many(archs)))

    def adapt(self, archs: list[str], rng: np.random.Generator) -> bool:
        return False

    def state(self) -> dict:
        return {"kind": "table", "path": str(self.path), "column": self.column, "rows": len(self._acc)}


def parse_accuracy_spec(spec: str) -> tuple[Path, str | None]:
    """``CSV[:COLUMN]`` -> (path, column). A path that exists as given wins over a ``:COLUMN`` split."""
    if Path(spec).expanduser().is_file():
        return Path(spec).expanduser(), None
    path, sep, column = spec.rpartition(":")
    if sep and path:
        return Path(path).expanduser(), column or None
    return Path(spec).expanduser(), None


def open_table_accuracy(space: SearchSpace, spec: str | None) -> TableAccuracy:
    """``--accuracy CSV[:COLUMN]``; ``None``: the dataset shipped for the space (BadInputError if none)."""
    if spec is None:
        from hwnat.data import accuracy_dataset

        return TableAccuracy(space, accuracy_dataset(space.name), DEFAULT_COLUMNS.get(space.name))
    path, column = parse_accuracy_spec(spec)
    return TableAccuracy(space, path, column)
