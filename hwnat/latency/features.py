"""Named, vectorised architecture features for latency predictors, derived from the search-space contract.

Every feature comes from the space API (``hwnat.spaces._base``): the integer genome, the slot scheme
(``slots``/``slot_blocks``: which block each network position runs), the analytic ``flops_many`` /
``params_many``, and, when a latency table (LUT) for the device exists, its sum and per-stage sums. No
space is special-cased, so a new space gets features for free.

Feature groups (names are stored with every model, so a model refuses features it was not fitted on):

- ``g{i}``: genome position ``i`` as an integer; ``g{i}={v}``: its one-hot (positions with 3..16 values);
- ``flops_m``, ``params_m``: analytic FLOPs and parameters, in millions;
- ``act_k``, ``act_k_stage{s}``: activation memory, the output elements of every block (thousands,
  batch 1), in total and per stage;
- ``c{j}_{p}``: per network position ``j`` (slot column), the numeric hyper-parameters of the block that
  runs there (kernel ``k``, mid channels ``mid``, stride ``s``, groups ``g``, ``se``, ``skip``) and its
  output size ``act_k``; 0 where the position is inactive. Duplicate columns (the repeated cells of
  NAS-Bench-201) are dropped;
- ``table_ms``, ``table_ms_stage{s}``: the table sum and per-stage table sums (only with a table);
  ``table_ms_stage{s}:{op}``: the stage's table sum split by block type where a stage runs several
  types (NAS-Bench-201's convolutions, pools and skips each pay a different share of per-call overhead
  when timed alone, so a linear base needs one weight per type to undo it).

Block counts (``count_names``/``counts``, not part of ``names``: the library models do not see them):
``n_blocks``, the number of blocks an architecture runs, and ``n_{op}``, how many of each block type. They
add up over blocks like a table whose every entry is 1 ms, and they are what a per-call overhead scales
with: a batch-1 GPU runs FBNet's 22 positions in a time set by how many are not skips, which FLOPs do
not tell (measured on the shipped data, k = 10, no library: FBNet mean Spearman 0.61 -> 0.73).

A *stage* is a run of consecutive slot columns whose block writes the same number of channels (found on
reference genomes, so it depends on the space only): the stem and the stages of a MobileNet-like network,
the three cell stages of NAS-Bench-201.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from hwnat.errors import BadInputError
from hwnat.spaces import SearchSpace, get_space

log = logging.getLogger(__name__)

#: numeric block hyper-parameters turned into per-position features
BLOCK_PARAMS = ("k", "mid", "s", "g", "se", "skip")
#: genome positions with at most this many values also get a one-hot
MAX_ONEHOT = 16


class ArchFeatures:
    """Feature extractor of one space (and optionally one latency table).

    Args:
        space: a ``SearchSpace`` or its registered name.
        table: a ``hwnat.latency.table.LatencyTable`` (or ``None``): adds ``table_ms`` and per-stage sums.

    Example:
        >>> fx = ArchFeatures("nasbench201")
        >>> X = fx.transform(fx.genomes(["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"]))
        >>> X.shape == (1, len(fx.names))
        True
    """

    def __init__(self, space: SearchSpace | str, table=None):
        self.space = get_space(space) if isinstance(space, str) else space
        self.table = table
        lo, hi = self.space.genome_bounds()
        self._lo, self._hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)

    # ---- parsing -------------------------------------------------------------------------------
    def genomes(self, archs: Sequence[str], source: str = "archs") -> np.ndarray:
        """Parse canonical strings and encode them, ``(n, g)`` int64.

        Raises:
            BadInputError: an unparsable string; the message names ``source`` and the 0-based row.
        """
        out = np.empty((len(archs), len(self._lo)), dtype=np.int64)
        for i, a in enumerate(archs):
            if not isinstance(a, str) or not a.strip():
                raise BadInputError(f"{source}: data row {i + 1}: empty or missing arch")
            try:
                out[i] = self.space.encode(self.space.parse(a))
            except BadInputError as e:
                raise BadInputError(f"{source}: data row {i + 1}: {e}") from None
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise BadInputError(f"{source}: data row {i + 1}: cannot parse arch {a!r} as {self.space.name}: "
                                    f"{e}") from None
        return out

    # ---- structure (depends on the space only) ---------------------------------------------------
    @cached_property
    def _reference_genomes(self) -> np.ndarray:
        lo, hi = self._lo, self._hi
        refs = [lo, hi] + [np.clip(np.full_like(lo, v), lo, hi) for v in range(int(hi.max()) + 1)]
        return np.stack(refs)

    @cached_property
    def stage_of_column(self) -> np.ndarray:
        """Stage index of every slot column: a new stage starts where, on any reference genome, the output
        channels change between consecutive active columns."""
        ids = self.space.slots(self._reference_genomes)
        blocks = self.space.slot_blocks()
        m = ids.shape[1]
        starts = np.zeros(m, dtype=bool)
        for row in ids:
            prev = None
            for j, i in enumerate(row):
                b = blocks[i]
                if b is None:
                    continue
                if prev is not None and b.out_shape[0] != prev:
                    starts[j] = True
                prev = b.out_shape[0]
        return np.cumsum(starts).astype(np.int64)

    @property
    def n_stages(self) -> int:
        return int(self.stage_of_column.max()) + 1

    @cached_property
    def _slot_numeric(self) -> dict[str, np.ndarray]:
        """Per slot id: output kilo-elements and each numeric block parameter (0 for a free slot)."""
        blocks = self.space.slot_blocks()
        tabs = {"act_k": np.zeros(len(blocks))}
        for p in BLOCK_PARAMS:
            tabs[p] = np.zeros(len(blocks))
        for i, b in enumerate(blocks):
            if b is None:
                continue
            tabs["act_k"][i] = float(np.prod(b.out_shape)) / 1e3
            for p in BLOCK_PARAMS:
                v = b.param(p)
                if isinstance(v, (bool, int, float, np.integer, np.floating)):
                    tabs[p][i] = float(v)
        return tabs

    @cached_property
    def _probe_genomes(self) -> np.ndarray:
        """The reference genomes and 512 seeded random ones: which feature columns exist is decided on
        these, so it depends on the space only."""
        rng = np.random.default_rng(12345)
        return np.concatenate([self._reference_genomes,
                               rng.integers(self._lo, self._hi + 1, size=(512, len(self._lo)), dtype=np.int64)])

    @cached_property
    def _column_features(self) -> list[tuple[str, int, str]]:
        """(name, column, param) of the per-position features kept after dropping constant and duplicate
        columns on a fixed probe set of genomes (a function of the space only)."""
        ids = self.space.slots(self._probe_genomes)
        seen: set[bytes] = set()
        keep = []
        for p in ("act_k",) + BLOCK_PARAMS:
            vals = self._slot_numeric[p][ids]
            for j in range(ids.shape[1]):
                col = vals[:, j]
                if np.ptp(col) == 0:
                    continue
                key = col.tobytes()
                if key in seen:
                    continue
                seen.add(key)
                keep.append((f"c{j}_{p}", j, p))
        return keep

    @cached_property
    def _genome_features(self) -> list[tuple[str, int, int | None]]:
        out = []
        for i, (a, b) in enumerate(zip(self._lo, self._hi, strict=True)):
            if b <= a:
                continue
            out.append((f"g{i}", i, None))
            if 3 <= b - a + 1 <= MAX_ONEHOT:
                out += [(f"g{i}={v}", i, int(v)) for v in range(int(a), int(b) + 1)]
        return out

    @property
    def has_table(self) -> bool:
        return self.table is not None

    @cached_property
    def names(self) -> list[str]:
        """Names of the columns ``transform`` returns, in order."""
        names = [n for n, _, v in self._genome_features if v is None]
        names += [n for n, _, v in self._genome_features if v is not None]
        names += ["flops_m", "params_m", "act_k"] + self._eager_names
        names += [f"act_k_stage{s}" for s in range(self.n_stages)]
        names += [n for n, _, _ in self._column_features]
        if self.has_table:
            names += ["table_ms"] + [f"table_ms_stage{s}" for s in range(self.n_stages)]
            names += [name for name, _, _ in self._stage_op_groups]
        return names

    @property
    def _eager_names(self) -> list[str]:
        """Spaces whose exported networks drop ops that eager PyTorch still runs (NAS-Bench-201's dead
        edges) also give the eager network's costs: data measured either way can be fitted."""
        return ["flops_eager_m", "params_eager_m"] if hasattr(self.space, "eager_costs_many") else []

    @cached_property
    def _slot_op(self) -> np.ndarray:
        """Per slot id: index into ``_ops`` of its block type (-1 for a free slot)."""
        blocks = self.space.slot_blocks()
        return np.array([-1 if b is None else self._ops.index(b.op) for b in blocks], dtype=np.int64)

    @cached_property
    def _ops(self) -> list[str]:
        return sorted({b.op for b in self.space.slot_blocks() if b is not None})

    @cached_property
    def _stage_op_groups(self) -> list[tuple[str, int, int]]:
        """(name, stage, op index) of the per-stage, per-block-type table sums: only for stages whose
        positions can run more than one block type (elsewhere it would repeat the stage sum)."""
        ops = self._slot_op[self.space.slots(self._probe_genomes)]
        out = []
        for st in range(self.n_stages):
            present = np.unique(ops[:, self.stage_of_column == st])
            present = [int(o) for o in present if o >= 0]
            if len(present) > 1:
                out += [(f"table_ms_stage{st}:{self._ops[o]}", st, o) for o in present]
        return out

    @cached_property
    def _count_groups(self) -> list[tuple[str, int | None]]:
        """(name, op index or None for every block) of the block counts that vary on the probe genomes."""
        ops = self._slot_op[self.space.slots(self._probe_genomes)]
        out = []
        for name, o in [("n_blocks", None)] + [(f"n_{op}", i) for i, op in enumerate(self._ops)]:
            c = (ops >= 0 if o is None else ops == o).sum(axis=1)
            if np.ptp(c) > 0:
                out.append((name, o))
        return out

    def count_names(self) -> list[str]:
        """Names of the ``counts`` columns."""
        return [name for name, _ in self._count_groups]

    def counts(self, genomes) -> np.ndarray:
        """Block counts ``(n, len(count_names()))`` (float64): blocks run, and blocks of each type.

        Example:
            >>> fx = ArchFeatures("fbnet")
            >>> fx.count_names()[0], fx.counts(fx.space.sample_genomes(np.random.default_rng(0), 2)).shape[0]
            ('n_blocks', 2)
        """
        ops = self._slot_op[self.space.slots(self.check_genomes(genomes))]
        out = np.zeros((len(ops), len(self._count_groups)))
        for j, (_, o) in enumerate(self._count_groups):
            out[:, j] = (ops >= 0 if o is None else ops == o).sum(axis=1)
        return out

    #: the features that add up over blocks: the linear base of a predictor uses these (in ms-like units)
    def additive_names(self) -> list[str]:
        names = ["flops_m", "params_m", "act_k"] + self._eager_names
        if self.has_table:
            names += ["table_ms"] + [f"table_ms_stage{s}" for s in range(self.n_stages)]
            names += [name for name, _, _ in self._stage_op_groups]
        return names

    # ---- values ----------------------------------------------------------------------------------
    def check_genomes(self, genomes) -> np.ndarray:
        g = np.asarray(genomes)
        if g.ndim != 2 or g.shape[1] != len(self._lo):
            raise BadInputError(f"{self.space.name}: genomes must have shape (n, {len(self._lo)}), got {g.shape}")
        g = g.astype(np.int64, copy=False)
        if g.size and ((g < self._lo).any() or (g > self._hi).any()):
            r, c = np.argwhere((g < self._lo) | (g > self._hi))[0]
            raise BadInputError(f"{self.space.name}: genome row {r} position {c} = {g[r, c]} is outside "
                                f"{self._lo[c]}..{self._hi[c]}")
        return g

    def flops_params(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Analytic FLOPs and parameters (raw counts) of many genomes, vectorised where the space can."""
        sp = self.space
        if hasattr(sp, "flops_many") and hasattr(sp, "params_many"):
            return (np.asarray(sp.flops_many(genomes), dtype=np.float64),
                    np.asarray(sp.params_many(genomes), dtype=np.float64))
        archs = [sp.decode(g) for g in genomes]
        return (np.array([sp.flops(a) for a in archs], dtype=np.float64),
                np.array([sp.params(a) for a in archs], dtype=np.float64))

    def table_columns(self, genomes: np.ndarray) -> np.ndarray:
        """Table latency of every slot column ``(n, m)`` in ms (needs ``table``; a missing block raises)."""
        if self.table is None:
            raise BadInputError("no latency table was given for table features")
        per_col = self.table.stage_sums(self.space, genomes)  # (n, m) ms, NaN where a block is missing
        if np.isnan(per_col).any():
            self.table.sum_many(self.space, genomes)  # raises with the missing block's key
        return per_col

    def table_sums(self, genomes: np.ndarray, per_col: np.ndarray | None = None) -> np.ndarray:
        """Per-stage table sums ``(n, n_stages)`` in ms (needs ``table``); ``per_col``: ``table_columns``."""
        per_col = self.table_columns(genomes) if per_col is None else per_col
        out = np.zeros((len(genomes), self.n_stages))
        for s in range(self.n_stages):
            out[:, s] = per_col[:, self.stage_of_column == s].sum(axis=1)
        return out

    def table_op_sums(self, genomes: np.ndarray, ids: np.ndarray | None = None,
                      per_col: np.ndarray | None = None) -> np.ndarray:
        """The ``table_ms_stage{s}:{op}`` columns ``(n, groups)`` in ms (needs ``table``); ``ids``: the
        genomes' slots, ``per_col``: their ``table_columns`` (both computed when not given)."""
        ids = self.space.slots(genomes) if ids is None else ids
        per_col = self.table_columns(genomes) if per_col is None else per_col
        ops = self._slot_op[ids]
        out = np.zeros((len(genomes), len(self._stage_op_groups)))
        for k, (_, st, o) in enumerate(self._stage_op_groups):
            mask = (ops == o) & (self.stage_of_column == st)[None, :]
            out[:, k] = np.where(mask, per_col, 0.0).sum(axis=1)
        return out

    def transform(self, genomes, table_stage_ms: np.ndarray | None = None) -> np.ndarray:
        """Feature matrix ``(n, len(names))`` (float32) of many genomes.

        Args:
            genomes: ``(n, g)`` integer genomes.
            table_stage_ms: optional precomputed per-stage table sums ``(n, n_stages)``; by default they
                come from ``table``.
        """
        g = self.check_genomes(genomes)
        n = len(g)
        gi, oi, ov = self._genome_index
        fl, pa = self.flops_params(g)
        ids = self.space.slots(g)
        act = self._slot_numeric["act_k"][ids]
        out = np.empty((n, len(self.names)), dtype=np.float32)
        c = 0

        def put(block: np.ndarray) -> None:
            nonlocal c
            w = block.shape[1]
            out[:, c:c + w] = block
            c += w

        put(g[:, gi])
        put(g[:, oi] == ov)
        put(np.column_stack([fl / 1e6, pa / 1e6, act.sum(axis=1)]))
        if self._eager_names:
            put(np.column_stack([v / 1e6 for v in self.space.eager_costs_many(g)]))
        put(act @ self._stage_matrix)
        for p, js in self._column_index:
            put(self._slot_numeric32[p][ids[:, js]])
        if self.has_table:
            per_col = self.table_columns(g) if table_stage_ms is None or self._stage_op_groups else None
            ts = (self.table_sums(g, per_col) if table_stage_ms is None
                  else np.asarray(table_stage_ms, dtype=np.float64))
            if ts.shape != (n, self.n_stages):
                raise BadInputError(f"table_stage_ms must have shape ({n}, {self.n_stages}), got {ts.shape}")
            put(np.column_stack([ts.sum(axis=1), ts]))
            if self._stage_op_groups:
                put(self.table_op_sums(g, ids, per_col))
        assert c == out.shape[1]
        return out

    @cached_property
    def _slot_numeric32(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in self._slot_numeric.items()}

    @cached_property
    def _genome_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Genome positions of the integer features; positions and values of the one-hot features."""
        ints = [i for _, i, v in self._genome_features if v is None]
        oh = [(i, v) for _, i, v in self._genome_features if v is not None]
        return (np.asarray(ints, dtype=np.int64), np.asarray([i for i, _ in oh], dtype=np.int64),
                np.asarray([v for _, v in oh], dtype=np.int64))

    @cached_property
    def _stage_matrix(self) -> np.ndarray:
        """``(m, n_stages)`` 0/1 matrix summing slot columns into stages."""
        return (self.stage_of_column[:, None] == np.arange(self.n_stages)[None, :]).astype(np.float64)

    @cached_property
    def _column_index(self) -> list[tuple[str, np.ndarray]]:
        """The per-position features grouped by parameter, in ``names`` order."""
        groups: list[tuple[str, list[int]]] = []
        for _, j, p in self._column_features:
            if not groups or groups[-1][0] != p:
                groups.append((p, []))
            groups[-1][1].append(j)
        return [(p, np.asarray(js, dtype=np.int64)) for p, js in groups]
