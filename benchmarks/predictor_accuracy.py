"""Accuracy, interval coverage and throughput of hwnat's latency predictors on measured latencies.

Data: the published latency datasets that ship with hwnat (``hwnat.data.latency_dataset(space)``: HELP,
Lee et al. NeurIPS 2021, with HW-NAS-Bench columns). Protocols, per space and target device (column):

- ``lodo`` (leave one device out): the target's measurements are hidden except k random samples
  (k = 10, 20, 50, 1000; seeds 0..S-1, one seed at k >= 500 by default: the fits re-run the whole
  procedure per fold); the library is every other column of the same file (``--strict-library`` also
  drops columns of the same hardware at another batch size);
- ``lofo`` (leave one family out): the same, but every device of the target's family (desktop GPUs,
  server CPUs, phones) is removed from the library; not run on ofa-mbv3, whose devices are all GPUs;
- ``none``: no library (architecture features only), the bar ``lofo`` must not fall under;
- evaluation on every other architecture after dropping the top and bottom 10% of the target's measured
  latency (as HELP does): Spearman, Kendall, +-5/10/15%, MAPE; interval coverage and mean relative width
  (``(hi - lo) / predicted``) of the stated 90% interval on all held-out architectures (the training
  picks are random, so they are exchangeable with those) and on the trimmed ones;
- with the library, k = 10 and 20 are also run with the architectures ``hwnat predictor suggest`` picks;
- ``--ceiling``: 80% of the architectures for training (with library), the other 20% for evaluation;
- noise floor (NAS-Bench-201): an op on edge 0->2 and an op on edge 0->3 read the same tensor and write
  the same shape, as do edges 1->2 and 1->3; swapping the two ops keeps every operator and every shape,
  so a swap pair is two measurements of the same amount of work. The pair's +-10% agreement is what a
  re-measurement achieves (an upper bound of the noise: a swap also changes which adds wait for which).
  For the whole-millisecond phones on FBNet (no such pairs), the NAS-Bench-201 relative noise of the same
  phone is assumed and two rounded re-measurements are simulated (a model, labelled as such);
- throughput: batched prediction of 100,000 genomes (and strings), table sum of 100,000 genomes.

The library models' predictions of every architecture of a space are computed once per worker and looked
up (``CachedLibrary``: the same numbers as ``Library.predict_log``, not recomputed per fit).

``cpu_table_residual`` (table sum versus table + residual predictor on a measured CSV of the local
device) is separate: once ``hwnat profile --subnets N`` has written a table and its ``.subnets.csv``, run
``python benchmarks/predictor_accuracy.py --render-only --cpu-table T.json --cpu-data T.subnets.csv``
(repeat the pair for several tables; adds one README table each, next to the existing results) or call
the function.

Run: ``python benchmarks/predictor_accuracy.py`` (about 1-2 h on 2 busy cores; ``--quick`` for a smoke
run; ``--cache DIR`` keeps the fitted libraries between runs). Writes
``benchmarks/results/predictor_accuracy.json``, PNG scatter plots next to it, and the "Predictor
accuracy" section of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnat.data import latency_dataset  # noqa: E402
from hwnat.latency import metrics  # noqa: E402
from hwnat.latency.features import ArchFeatures  # noqa: E402
from hwnat.latency.predictor import FitSettings, LatencyPredictor  # noqa: E402
from hwnat.latency.transfer import Library, choose  # noqa: E402

log = logging.getLogger("predictor_accuracy")

RESULTS = ROOT / "benchmarks" / "results"
SPACES = {"nasbench201": "nasbench201", "fbnet": "fbnet", "ofa-mbv3": "ofa_mbv3"}
KS = (10, 20, 50, 1000)
#: from this k on, one seed unless --seeds-large says otherwise
LARGE_K = 500
GPU = re.compile(r"^(1080ti|2080ti|titanx|titan_xp|titan_rtx|v100)_")
CPU = re.compile(r"^(silver|gold)_")


def device_kind(col: str) -> str:
    """The family, ``gpu`` (desktop GPUs), ``cpu`` (server CPUs) or ``phone``, of a column of the
    published data."""
    return "gpu" if GPU.match(col) else "cpu" if CPU.match(col) else "phone"


def hardware(col: str) -> str:
    """The hardware of a column without its batch suffix (``titanx_32`` -> ``titanx``)."""
    return re.sub(r"_\d+$", "", col)


def load(space: str):
    """Measured table, genomes and features of one space."""
    df = pd.read_csv(latency_dataset(space))
    fx = ArchFeatures(space)
    g = fx.genomes(df["arch"].tolist(), f"{SPACES[space]}.csv")
    devices = [c for c in df.columns if c != "arch"]
    whole = [c for c in devices if np.allclose(df[c], np.round(df[c]))]
    return df, fx, g, devices, whole


# ---- the leave-one-device-out and leave-one-family-out protocols ----------------------------------------
class CachedLibrary(Library):
    """A ``Library`` whose predictions of the space's published architectures are computed once (rows
    are looked up by their feature bytes; any other row is predicted as usual)."""

    def __init__(self, lib: Library, X_all: np.ndarray, L_all: np.ndarray | None = None,
                 rows: dict | None = None):
        super().__init__(lib.devices, lib.boosters, lib.feature_names, lib.stats)
        self._L = lib.predict_log(X_all) if L_all is None else L_all
        self._rows = rows if rows is not None else {x.tobytes(): i for i, x in enumerate(X_all)}
        self._X_all = X_all

    def select(self, devices):
        sub = super().select(devices)
        cols = [self.devices.index(d) for d in devices]
        return CachedLibrary(sub, self._X_all, self._L[:, cols], self._rows)

    def predict_log(self, X):
        idx = [self._rows.get(np.ascontiguousarray(x).tobytes()) for x in X]
        if any(i is None for i in idx):
            return super().predict_log(X)
        return self._L[np.asarray(idx, dtype=np.int64)]


def _evaluate(model, g, y, train_idx):
    p, lo, hi = model.predict_genomes(g)
    held = np.ones(len(y), dtype=bool)
    held[train_idx] = False
    trim = metrics.trim_middle(y) & held
    s = metrics.summary(p[trim], y[trim], lo[trim], hi[trim])
    s["coverage_trimmed"] = s.pop("coverage")
    s["width_pct_trimmed"] = s.pop("interval_width_pct")
    s["coverage"] = metrics.coverage(lo[held], hi[held], y[held])
    s["interval_width_pct"] = float(100.0 * np.mean((hi[held] - lo[held]) / p[held]))
    return s, p, trim


def library_of(protocol: str, target: str, devices: list[str], strict: bool) -> list[str] | None:
    """The library devices of a run: ``lodo`` every other device (``strict``: and not the target's
    hardware at another batch size), ``lofo`` the devices of other families, ``none`` no library."""
    if protocol == "none":
        return None
    out = [c for c in devices if c != target and not (strict and hardware(c) == hardware(target))]
    if protocol == "lofo":
        out = [c for c in out if device_kind(c) != device_kind(target)]
    return out


_SPACE_CACHE: dict = {}


def _space_data(space: str, threads: int, cache: str | None):
    """Per process: the space's data, features and its full library (all devices), fitted once (or
    read from ``cache``)."""
    if space not in _SPACE_CACHE:
        df, fx, g, devices, _ = load(space)
        X = fx.transform(g)
        t0 = time.time()
        cached = Path(cache) / f"library_{space}.json" if cache else None
        if cached is not None and cached.exists():
            full = Library.from_dict(json.loads(cached.read_text()), threads)
        else:
            full = Library.fit(X, df[devices].to_numpy(dtype=np.float64), devices, fx.names, nthread=threads)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{mp.current_process().pid}.tmp")
                tmp.write_text(json.dumps(full.to_dict()))
                tmp.replace(cached)
        _SPACE_CACHE[space] = (df, fx, g, devices, CachedLibrary(full, X))
        log.info("%s: library of %d devices ready in %.1fs", space, len(devices), time.time() - t0)
    return _SPACE_CACHE[space]


def _worker(args):
    """One (space, target, k) job, or the ceiling run (k = None); results kept in ``parts`` (resume)."""
    space, target, k, seeds, threads, strict, cache, parts = args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("hwnat").setLevel(logging.WARNING)
    part = Path(parts) / f"{space}__{target}__{k or 'ceiling'}__s{seeds}{'_strict' if strict else ''}.json" \
        if parts else None
    if part is not None and part.exists():
        d = json.loads(part.read_text())
        return d["records"], d["scatter"]
    df, fx, g, devices, full_lib = _space_data(space, threads, cache)
    families = {device_kind(c) for c in devices}
    y = df[target].to_numpy(dtype=np.float64)
    records, scatter = [], {}

    def run(idx, proto, pick, seed):
        lib_devs = library_of(proto, target, devices, strict)
        lib = full_lib.select(lib_devs) if lib_devs else None
        t = time.time()
        model = LatencyPredictor.fit(space, None, y[idx], genomes=g[idx], target=target, library=lib,
                                     settings=FitSettings(nthread=threads, seed=seed))
        fit_s = time.time() - t
        s, p, trim = _evaluate(model, g, y, idx)
        cv = model.meta["cv"]
        records.append({"space": space, "target": target, "kind": device_kind(target), "k": len(idx),
                        "seed": seed, "protocol": proto, "library": lib is not None, "pick": pick,
                        "mode": model.mode, "blend": cv["chosen"], "weight_lib": cv["weight_lib"],
                        "library_devices": len(lib_devs or []),
                        "library_used": model.library.devices if model.library else [],
                        "interval_central": model.interval["central"], "fit_s": fit_s, **s})
        return p, trim

    if k is None:  # the ceiling: 80% of the archs for training
        run(np.random.default_rng(0).permutation(len(y))[: int(0.8 * len(y))], "lodo", "ceiling-80%", 0)
    else:
        protocols = ["lodo", "none"] + (["lofo"] if len(families) > 1 else [])
        for seed in range(seeds):
            for proto in protocols:
                p, trim = run(np.random.default_rng(seed).choice(len(y), k, replace=False), proto, "random", seed)
                if seed == 0 and proto == "lodo" and k in (10, 1000):
                    keep = np.flatnonzero(trim)
                    keep = keep[np.random.default_rng(1).permutation(len(keep))[:1500]]
                    scatter[f"{space}|{target}|{k}"] = (y[keep].tolist(), p[keep].tolist())
        if k <= 20:
            lib_devs = library_of("lodo", target, devices, strict)
            run(choose(np.log(df[lib_devs].to_numpy(dtype=np.float64)), k), "lodo", "suggest", 0)
    log.info("%s %s k=%s done", space, target, k)
    if part is not None:
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_suffix(".tmp")
        tmp.write_text(json.dumps({"records": records, "scatter": scatter}, default=float))
        tmp.replace(part)
    return records, scatter


# ---- noise floor ----------------------------------------------------------------------------------------
def nb201_swap_pairs(g: np.ndarray) -> np.ndarray:
    """Index pairs of NAS-Bench-201 genomes that differ by swapping the ops of edges (0->2, 0->3) or
    (1->2, 1->3): same operators on same-shaped tensors. Genome order: edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1,
    3<-2 (the canonical string's order)."""
    key = {tuple(x): i for i, x in enumerate(g.tolist())}
    pairs = []
    for a, b in ((1, 3), (2, 4)):
        for i, x in enumerate(g.tolist()):
            if x[a] < x[b]:
                y = list(x)
                y[a], y[b] = x[b], x[a]
                j = key.get(tuple(y))
                if j is not None:
                    pairs.append((i, j))
    return np.asarray(pairs, dtype=np.int64)


def noise_floor(df: pd.DataFrame, g: np.ndarray, devices: list[str]) -> dict:
    """Per device: re-measurement +-10% accuracy and relative noise from NAS-Bench-201 swap pairs (both
    members inside the trimmed evaluation range)."""
    pairs = nb201_swap_pairs(g)
    out = {}
    for c in devices:
        y = df[c].to_numpy(dtype=np.float64)
        keep = metrics.trim_middle(y)
        P = pairs[keep[pairs[:, 0]] & keep[pairs[:, 1]]]
        a, b = y[P[:, 0]], y[P[:, 1]]
        agree = np.concatenate([np.abs(b - a) <= 0.1 * a, np.abs(a - b) <= 0.1 * b])
        out[c] = {"pairs": int(len(P)), "remeasure_acc10": float(agree.mean()),
                  "noise_rel_sd": float(np.std(np.log(a / b)) / math.sqrt(2))}
    return out


def simulated_floor(y: np.ndarray, rel_sd: float, whole_ms: bool, seed: int = 0) -> float:
    """+-10% agreement of two simulated re-measurements ``round(t * exp(rel_sd * e))`` around the measured
    values ``t`` (a model: multiplicative noise as measured elsewhere, whole-ms rounding)."""
    rng = np.random.default_rng(seed)
    t = np.repeat(y, 20)
    m1 = t * np.exp(rel_sd * rng.standard_normal(t.size))
    m2 = t * np.exp(rel_sd * rng.standard_normal(t.size))
    if whole_ms:
        m1, m2 = np.maximum(np.round(m1), 1), np.maximum(np.round(m2), 1)
    return float(np.mean(np.abs(m2 - m1) <= 0.1 * m1))


# ---- throughput -------------------------------------------------------------------------------------------
def throughput(n: int = 100_000, threads: int = 2) -> dict:
    """Batched prediction (genomes and strings) and table sums of ``n`` architectures per space."""
    from hwnat.latency.table import LatencyTable

    out = {}
    for space in SPACES:
        df, fx, g, devices, _ = load(space)
        target = devices[0]
        y = df[target].to_numpy(dtype=np.float64)
        idx = np.random.default_rng(0).choice(len(y), 1000, replace=False)
        single = LatencyPredictor.fit(space, None, y[idx], genomes=g[idx], target=target,
                                      settings=FitSettings(nthread=threads))
        X = fx.transform(g)
        lib = Library.fit(X, df[devices[1:]].to_numpy(dtype=np.float64), devices[1:], fx.names, nthread=threads)
        transfer = LatencyPredictor.fit(space, None, y[idx[:10]], genomes=g[idx[:10]], target=target,
                                        library=lib, settings=FitSettings(nthread=threads))
        sp = fx.space
        G = sp.sample_genomes(np.random.default_rng(1), n)
        res = {"n": n, "threads": threads}
        for name, model in (("single_device_k1000", single), ("transfer_k10", transfer)):
            model.predict_genomes(G[:100])
            dt = _median_time(model.predict_genomes, G)
            res[name] = {"archs_per_s": n / dt, "mode": model.mode, "rounds": _rounds(model),
                         "library_devices": len(model.library.devices) if model.library else 0}
        strings = [sp.format(sp.decode(x)) for x in G[:20000]]
        res["single_device_from_strings_archs_per_s"] = len(strings) / _median_time(single.predict, strings)
        # a table holding every block of the space (values are irrelevant to the speed)
        keys = sorted({b.key for b in sp.slot_blocks() if b is not None})
        rng = np.random.default_rng(2)
        table = LatencyTable(sp.name, "synthetic", entries={k: {"median_ms": float(v)}
                                                             for k, v in zip(keys, rng.random(len(keys)), strict=True)})
        table.sum_many(sp, G[:100])
        res["table_sum_archs_per_s"] = n / _median_time(table.sum_many, sp, G)
        out[space] = res
        log.info("throughput %s: %s", space, res)
    return out


def _median_time(fn, *args, repeats: int = 3) -> float:
    """Median wall time (s) of ``repeats`` calls ``fn(*args)`` (the first also pays for fresh memory pages)."""
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _rounds(model) -> int:
    return sum(int(c.booster.num_boosted_rounds()) for _, c in model.blend if c.booster is not None)


# ---- the local device: table sum versus table + residual ---------------------------------------------
def cpu_table_residual(lut_path, measured_csv, target: str = "cpu", n_train: int = 200, seeds: int = 5,
                       threads: int = 2) -> dict:
    """Table sum versus table + residual predictor on measured subnets of one device.

    Args:
        lut_path: the device's latency table (``latency_tables/cpu/<space>.json``); its ``space`` is used.
        measured_csv: ``arch`` + ``target`` column of end-to-end measured ms (``hwnat profile --subnets``).
        target: the latency column.
        n_train: training subnets per seed (<= 200); every other row is held out (needs >= 200).
        seeds: random splits.

    Returns:
        Per method (``table_sum``, ``table_calibrated``, ``predictor`` (modes chosen by CV), ``residual``,
        ``log``): mean metrics over seeds, and the modes chosen.

    Example:
        >>> cpu_table_residual("latency_tables/cpu/ofa-mbv3.json", "cpu_subnets.csv")  # doctest: +SKIP
    """
    from hwnat.latency.predictor import read_latency_csv
    from hwnat.latency.table import LatencyTable

    table = LatencyTable.load(lut_path)
    archs, ms, _ = read_latency_csv(measured_csv, [target], what="measured subnets")
    y = ms[:, 0]
    if len(y) - n_train < 200:
        log.warning("only %d held-out subnets (the issue asks for >= 200)", len(y) - n_train)
    fx = ArchFeatures(table.space, table=table)
    g = fx.genomes(archs, str(measured_csv))
    tsum = table.sum_many(fx.space, g)
    per = {m: [] for m in ("table_sum", "table_calibrated", "predictor", "residual", "log")}
    chosen = []
    for seed in range(seeds):
        perm = np.random.default_rng(seed).permutation(len(y))
        tr, te = perm[:n_train], perm[n_train:]
        per["table_sum"].append(metrics.summary(tsum[te], y[te]))
        for name, modes in (("table_calibrated", ("base",)), ("predictor", None), ("residual", ("residual",)),
                            ("log", ("log",))):
            model = LatencyPredictor.fit(table.space, None, y[tr], genomes=g[tr], target=target, table=table,
                                         settings=FitSettings(modes=modes, nthread=threads, seed=seed))
            p, lo, hi = model.predict_genomes(g[te])
            per[name].append(metrics.summary(p, y[te], lo, hi))
            if name == "predictor":
                chosen.append(model.mode)
    out = {"space": table.space, "lut": str(lut_path), "data": str(measured_csv), "target": target,
           "n_train": n_train,
           "n_heldout": int(len(y) - n_train), "seeds": seeds, "predictor_modes": chosen}
    for m, rows in per.items():
        out[m] = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    # noise floor: the same subnets measured again (`hwnat measure` -> <space>.remeasured.csv), if present
    again = Path(str(measured_csv).replace(".subnets.csv", ".remeasured.csv"))
    if again.exists() and again != Path(measured_csv):
        a2, ms2, _ = read_latency_csv(again, ["latency_ms"], what="re-measured subnets")
        first = dict(zip(archs, y, strict=True))
        pairs = np.array([(first[a], m) for a, m in zip(a2, ms2[:, 0], strict=True) if a in first])
        r = pairs[:, 1] / pairs[:, 0] - 1
        out["remeasure"] = {"file": str(again), "n": len(pairs), "acc10": float(np.mean(np.abs(r) <= 0.1)),
                            "mape_pct": float(100 * np.mean(np.abs(r)))}
    return out


# ---- report ------------------------------------------------------------------------------------------------
def aggregate(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    return (df.groupby(["space", "target", "kind", "k", "protocol", "library", "pick"], as_index=False)
              .agg(spearman=("spearman", "mean"), kendall=("kendall", "mean"), acc10=("acc10", "mean"),
                   acc5=("acc5", "mean"), mape=("mape_pct", "mean"), coverage=("coverage", "mean"),
                   coverage_trimmed=("coverage_trimmed", "mean"), width_pct=("interval_width_pct", "mean"),
                   weight_lib=("weight_lib", "mean"), runs=("seed", "count"), fit_s=("fit_s", "mean"),
                   residual_share=("mode", lambda s: float(np.mean([m != "base" for m in s])))))


def plot(scatter: dict, out_dir: Path, tag: str = "") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    by_space: dict = {}
    for key, v in scatter.items():
        space, target, k = key.split("|")
        by_space.setdefault((space, int(k)), []).append((target, v))
    for (space, k), items in sorted(by_space.items()):
        items.sort()
        n = len(items)
        cols = 5
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
        for ax, (target, (y, p)) in zip(axes.flat, items, strict=False):
            y, p = np.asarray(y), np.asarray(p)
            ax.scatter(y, p, s=3, alpha=0.4)
            lo, hi = min(y.min(), p.min()), max(y.max(), p.max())
            xs = np.array([lo, hi])
            ax.plot(xs, xs, "k-", lw=0.8)
            ax.plot(xs, 1.1 * xs, "k:", lw=0.6)
            ax.plot(xs, 0.9 * xs, "k:", lw=0.6)
            ax.set_title(f"{target} (rho={metrics.spearman(p, y):.3f})", fontsize=8)
            ax.tick_params(labelsize=6)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(f"{space}: predicted vs measured ms, k={k} with library, seed 0 (dotted: +-10%)", fontsize=9)
        fig.supxlabel("measured ms", fontsize=8)
        fig.supylabel("predicted ms", fontsize=8)
        fig.tight_layout()
        path = out_dir / f"predictor_scatter_{space}_k{k}{tag}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    return files


def markdown(result: dict) -> str:
    agg = pd.DataFrame(result["aggregate"])
    if "protocol" not in agg:  # results of an older run
        agg["protocol"] = np.where(agg["library"], "lodo", "none")
    cfg = result["config"]
    L = ["## Predictor accuracy", "",
         "`python benchmarks/predictor_accuracy.py` on the published latency data that ships with hwnat "
         "(`hwnat.data`, HELP / HW-NAS-Bench measurements). `lodo` (leave one device out): library = every "
         "other column of the file; `lofo` (leave one family out): every device of the target's family "
         "(desktop GPUs, server CPUs, phones) removed from the library too; `none`: no library (architecture "
         f"features only). k random target samples, seeds 0..{cfg['seeds'] - 1} "
         f"(k >= {cfg.get('large_k', LARGE_K)}: {cfg.get('seeds_large', cfg['seeds'])} seed(s)"
         + (f" and only the devices {cfg['targets_large']} present in the space" if cfg.get("targets_large") else "")
         + "); evaluation on "
         "all other archs after dropping the top and bottom 10% of measured latency (HELP's protocol). "
         "Spearman / +-10% accuracy are means over seeds; coverage and mean relative width are of the "
         "stated 90% interval on all held-out archs. Raw numbers: `benchmarks/results/predictor_accuracy.json`; "
         "scatter plots: `benchmarks/results/predictor_scatter_*.png`.", ""]
    rnd = agg[agg["pick"] == "random"]
    for space in cfg["spaces"]:
        s = rnd[rnd["space"] == space]
        if s.empty:
            continue
        ks = sorted(s["k"].unique())
        protos = [p for p in ("lodo", "lofo", "none") if p in set(s["protocol"])]
        cols = [(k, p) for p in protos for k in ks]
        L += [f"### {space}", "", "| device | " + " | ".join(f"k={k} {p}" for k, p in cols) + " |",
              "|---" * (1 + len(cols)) + "|"]
        for target in sorted(s["target"].unique()):
            row = [target]
            for k, p in cols:
                r = s[(s["target"] == target) & (s["k"] == k) & (s["protocol"] == p)]
                row.append(f"{r['spearman'].iloc[0]:.3f} / {100 * r['acc10'].iloc[0]:.1f}%" if len(r) else "-")
            L.append("| " + " | ".join(row) + " |")
        row = ["**mean**"]
        for k, p in cols:
            r = s[(s["k"] == k) & (s["protocol"] == p)]
            row.append(f"**{r['spearman'].mean():.3f} / {100 * r['acc10'].mean():.1f}%**")
        L += ["| " + " | ".join(row) + " |", "", "Cells: Spearman / +-10% accuracy.", ""]
    L += ["### Intervals: coverage of the stated 90% interval and its mean width", "",
          "Jackknife+ (k <= 20) / CV conformal centred on the shipped model (10 folds up to 300 samples, 3 "
          "above) on out-of-fold log residuals of the whole fitting procedure (every choice re-made without the "
          "fold); central (separate lower and upper ranks) from 19 samples on, symmetric below. Guarantees: "
          "jackknife+ >= 1 - 2 alpha (Barber et al. 2021, Theorem 1); the CV interval has none "
          "distribution-free (its expected coverage is 1 - alpha to 1 - alpha + 1/(n+1) only insofar as the "
          "shipped model's errors are like the fold models'). Mean over devices and seeds, all held-out archs; "
          "width = mean of (hi - lo) / predicted.", "",
          "| space | protocol | " + " | ".join(f"k={k}" for k in sorted(rnd["k"].unique())) + " |",
          "|---|---" + "|---" * rnd["k"].nunique() + "|"]
    for (space, proto), r in rnd.groupby(["space", "protocol"], sort=False):
        cells = []
        for k in sorted(rnd["k"].unique()):
            q = r[r["k"] == k]
            cells.append(f"{100 * q['coverage'].mean():.1f}% / {q['width_pct'].mean():.0f}%" if len(q) and
                         "width_pct" in q else "-")
        L.append(f"| {space} | {proto} | " + " | ".join(cells) + " |")
    cov = rnd.groupby("k")["coverage"].agg(["mean", "min", "max"])
    L += ["", "Cells: coverage / mean width. Over all spaces, protocols and devices: "
          + ", ".join(f"k={k} {100 * v['mean']:.1f}% (devices {100 * v['min']:.0f}..{100 * v['max']:.0f}%)"
                      for k, v in cov.iterrows()), ""]
    lofo = _lofo_vs_none(rnd, result.get("records"))
    if lofo is not None:
        L += ["### Leave one family out versus no library (Spearman, same k and seeds)", "",
              "A device's difference is the mean over seeds of lofo - none (paired: the same k samples); "
              "s.e. is its standard error over the seeds.", "",
              "| space | k | lofo mean | none mean | devices lofo < none | of them by more than 2 s.e. | "
              "worst lofo - none (s.e.) |", "|---|---|---|---|---|---|---|"]
        for (space, k), r in lofo.groupby(["space", "k"]):
            w = r.loc[r["diff"].idxmin()]
            worse = r[r["diff"] < 0]
            se = "" if np.isnan(w["se"]) else f", s.e. {w['se']:.3f}"
            L.append(f"| {space} | {k} | {r['lofo'].mean():.3f} | {r['none'].mean():.3f} | "
                     f"{len(worse)}/{len(r)} | {int((worse['diff'] < -2 * worse['se']).sum())} | "
                     f"{w['diff']:+.3f} ({w['target']}{se}) |")
        L.append("")
    sug = agg[agg["pick"] == "suggest"]
    if not sug.empty:
        L += ["### Choosing the k archs (`hwnat predictor suggest`) versus random, with library", "",
              "| space | k | Spearman random | Spearman suggest | +-10% random | +-10% suggest |", "|---|---|---|---|---|---|"]
        for (space, k), r in sug.groupby(["space", "k"]):
            q = rnd[(rnd["space"] == space) & (rnd["k"] == k) & (rnd["protocol"] == "lodo")]
            L.append(f"| {space} | {k} | {q['spearman'].mean():.3f} | {r['spearman'].mean():.3f} | "
                     f"{100 * q['acc10'].mean():.1f}% | {100 * r['acc10'].mean():.1f}% |")
        L.append("")
    strict = result.get("strict_library_aggregate")
    if strict:
        st = pd.DataFrame(strict)
        st = st[(st["pick"] == "random") & (st["library"]) & (st.get("protocol", "lodo") == "lodo")]
        L += ["### Stricter library: the target hardware's other batch sizes left out too (an earlier run, "
              "`predictor_accuracy_strict.json`, not re-run with this predictor version)", "",
              "Same protocol, but for target `titanx_32` the library also lacks `titanx_1` and `titanx_256` "
              "(HELP's test devices are unseen hardware). Mean over devices, Spearman / +-10%:", "",
              "| space | " + " | ".join(f"k={k}" for k in sorted(st["k"].unique())) + " |",
              "|---" * (1 + st["k"].nunique()) + "|"]
        for space, r in st.groupby("space", sort=False):
            cells = [f"{g['spearman'].mean():.3f} / {100 * g['acc10'].mean():.1f}%" for _, g in r.groupby("k")]
            L.append(f"| {space} | " + " | ".join(cells) + " |")
        L.append("")
    ceil = agg[agg["pick"] == "ceiling-80%"]
    nf = result.get("noise_floor", {})
    if not ceil.empty:
        L += ["### What the data allows: ceiling and noise floor", "",
              "Ceiling: 80% of the archs for training (with library), 20% evaluated. Re-measurement: "
              "+-10% agreement of NAS-Bench-201 swap pairs (same operators, same shapes; see the script's "
              "docstring); for FBNet whole-ms phones a simulation from the same phone's NAS-Bench-201 noise "
              "(model-based).", "",
              "| space | device | ceiling Spearman | ceiling +-10% | k=1000 +-10% (lib) | re-measurement +-10% |",
              "|---|---|---|---|---|---|"]
        for _, r in ceil.iterrows():
            k1000 = rnd[(rnd["space"] == r["space"]) & (rnd["target"] == r["target"]) & (rnd["k"] == 1000)
                        & (rnd["protocol"] == "lodo")]
            fl = nf.get(r["space"], {}).get(r["target"], {})
            fv = fl.get("remeasure_acc10", fl.get("simulated_remeasure_acc10"))
            L.append(f"| {r['space']} | {r['target']} | {r['spearman']:.3f} | {100 * r['acc10']:.1f}% | "
                     + (f"{100 * k1000['acc10'].iloc[0]:.1f}% | " if len(k1000) else "- | ")
                     + (f"{100 * fv:.1f}%{' (sim.)' if 'simulated_remeasure_acc10' in fl else ''} |"
                        if fv is not None else "- |"))
        L.append("")
    cp = result.get("ceiling_previous_run")
    if cp:
        c = pd.DataFrame(cp["rows"])
        L += ["### Ceiling quoted from the previous run (previous predictor version)", "",
              "80% of the archs for training, with library, 20% evaluated (trimmed); not re-run here (the nested "
              "fits of thousands of samples are too slow on 2 shared cores). What k = 10 is measured against:", "",
              "| space | mean ceiling Spearman | devices |", "|---|---|---|"]
        for space, r in c.groupby("space"):
            L.append(f"| {space} | {r['spearman'].mean():.3f} | "
                     + ", ".join(f"{t} {v:.3f}" for t, v in zip(r["target"], r["spearman"], strict=True)) + " |")
        L.append("")
    tp = result.get("throughput")
    if tp:
        L += ["### Throughput (this machine: 2 shared cores, 2 XGBoost threads; 100,000 random archs, median of 3)", "",
              "| space | predictor, genomes (archs/s) | transfer k=10, genomes | predictor from strings | table sum |",
              "|---|---|---|---|---|"]
        for space, r in tp.items():
            L.append(f"| {space} | {r['single_device_k1000']['archs_per_s']:,.0f} | "
                     f"{r['transfer_k10']['archs_per_s']:,.0f} ({r['transfer_k10']['library_devices']} lib. models) | "
                     f"{r['single_device_from_strings_archs_per_s']:,.0f} | {r['table_sum_archs_per_s']:,.0f} |")
        L.append("")
    for c in _cpu_results(result):
        L += [f"### Local device `{c['target']}`, {c.get('space', '')}: table sum vs table + residual "
              f"({c['n_train']} training, {c['n_heldout']} held-out subnets, {c['seeds']} seeds)", "",
              "| method | +-10% | Spearman | MAPE | 90% coverage |", "|---|---|---|---|---|"]
        for m in ("table_sum", "table_calibrated", "residual", "log", "predictor"):
            r = c[m]
            L.append(f"| {m} | {100 * r['acc10']:.1f}% | {r['spearman']:.3f} | {r['mape_pct']:.2f}% | "
                     + (f"{100 * r['coverage']:.1f}% |" if "coverage" in r else "- |"))
        L += ["", f"Modes chosen by cross-validation: {', '.join(c['predictor_modes'])}."]
        if c.get("remeasure"):
            r = c["remeasure"]
            L += [f"Noise floor: the same {r['n']} subnets measured again agree within +-10% for "
                  f"{100 * r['acc10']:.1f}% (MAPE {r['mape_pct']:.1f}%), so what the predictor misses is model error."]
        L += [""]
    if result.get("targets"):
        L += ["### Targets (issues 3 and 9)", ""] + [f"- {t}" for t in result["targets"]] + [""]
    L += ["### Method", "",
          "- Model (`hwnat/latency/predictor.py`): components = a non-negative least-squares base in ms over "
          "additive terms (side `lib`: library devices' predicted latencies plus the features; side `feat`: FLOPs, "
          "params, activation memory, table sums) and optionally XGBoost in log space (residual over the base, or "
          "log-latency; above 20 samples); the `feat` side also has block counts (blocks run, per type); the "
          "`one` component is a log-log line on the single library device that explains the samples best "
          "(chosen by leave-one-out). Cross-validation (leave-one-out up to 20 samples, else 10 or 3 folds) "
          "scores every component; the best `lib` component, `one` and the best `feat` component are blended in "
          "log space with weights on a grid of quarters, the lowest out-of-fold error winning and a tie going "
          "to the library-free component: the k samples decide how much to trust the library.",
          "- Transfer (`hwnat/latency/transfer.py`): one XGBoost model per library device (arch features -> "
          "log ms) gives every arch a denoised 'hardware embedding' (HELP's idea, without meta-learning); the base "
          "mixes the devices that explain the k samples.",
          "- `suggest`: greedy D-optimal design on the first 3 principal components of the library's log-latencies, "
          "among archs whose mean library latency is in the middle 80%.",
          "- Intervals: jackknife+ up to 20 samples (Barber et al., Ann. Statist. 2021; guarantee >= 1 - 2 alpha), "
          "CV conformal centred on the shipped model above (split-conformal ranks on out-of-fold residuals; no "
          "distribution-free guarantee, expected coverage near 1 - alpha when the fold models err like the "
          "shipped one; CV+ at 5/3 folds covered 93%/92% for 90% stated). The fold models are the whole "
          "procedure re-run without the fold, so no calibration residual chose anything; central ranks from 19 "
          "samples on; measured above.",
          "- Noise floor: NAS-Bench-201 swap pairs (ops on edges 0->2/0->3, or 1->2/1->3, exchanged: the same "
          "operators on the same tensor shapes) are two measurements of the same work; the share of pairs that "
          "agree within +-10% is what a re-measurement achieves. It is an upper bound of the noise (a swap also "
          "reorders the adds): on 1080ti_256 the pairs differ by 0.1-0.2%. The FBNet whole-ms phones have no such "
          "pairs; their floor is simulated from the same phone's NAS-Bench-201 relative noise with whole-ms "
          "rounding (an assumption: noise relative, not absolute).", ""]
    return "\n".join(L)


def _lofo_vs_none(rnd: pd.DataFrame, records: list[dict] | None = None) -> pd.DataFrame | None:
    """Per space, k and device: mean Spearman of ``lofo`` and of ``none`` and their difference; with the
    per-seed ``records``, also the standard error of the difference (paired by seed; NaN for one seed)."""
    a = rnd[rnd["protocol"] == "lofo"].set_index(["space", "k", "target"])["spearman"]
    b = rnd[rnd["protocol"] == "none"].set_index(["space", "k", "target"])["spearman"]
    if a.empty:
        return None
    d = pd.DataFrame({"lofo": a, "none": b}).dropna()
    d["diff"] = d["lofo"] - d["none"]
    d["se"] = np.nan
    if records:
        r = pd.DataFrame(records)
        r = r[r["pick"] == "random"].pivot_table(index=["space", "k", "target", "seed"], columns="protocol",
                                                 values="spearman")
        if {"lofo", "none"} <= set(r.columns):
            per = (r["lofo"] - r["none"]).dropna().groupby(["space", "k", "target"])
            d["se"] = per.std(ddof=1) / np.sqrt(per.count())
    return d.reset_index()


def local_results(tables: list[str], data: list[str]) -> list[dict]:
    """``cpu_table_residual`` for each (table, measured CSV) pair given on the command line."""
    if len(tables) != len(data):
        raise SystemExit(f"--cpu-table given {len(tables)} times but --cpu-data {len(data)} times: give them in pairs")
    return [cpu_table_residual(t, d) for t, d in zip(tables, data, strict=True)]


def _cpu_results(result: dict) -> list[dict]:
    """The local-device results of a run (one dict per table; older files hold a single dict)."""
    c = result.get("cpu") or []
    return [c] if isinstance(c, dict) else list(c)


def targets_text(result: dict) -> list[str]:
    agg = pd.DataFrame(result["aggregate"])
    if "protocol" not in agg:
        agg["protocol"] = np.where(agg["library"], "lodo", "none")
    rnd = agg[(agg["pick"] == "random") & (agg["protocol"] == "lodo")]
    whole = result["whole_ms"]
    out = []

    def mean_sp(space, k, pick="random"):
        r = agg[(agg["space"] == space) & (agg["k"] == k) & (agg["protocol"] == "lodo") & (agg["pick"] == pick)]
        return r["spearman"].mean() if len(r) else float("nan")

    ceiling = {}
    if result.get("ceiling_previous_run"):
        c = pd.DataFrame(result["ceiling_previous_run"]["rows"])
        ceiling = c.groupby("space")["spearman"].mean().to_dict()
    for space, goal in (("nasbench201", 0.96), ("fbnet", 0.95)):
        v, vs = mean_sp(space, 10), mean_sp(space, 10, "suggest")
        out.append(f"k=10 mean Spearman {space} (lodo): {v:.3f} random picks, {vs:.3f} suggested picks "
                   f"(target >= {goal}: {'met' if max(v, vs) >= goal else 'MISSED'})"
                   + (f"; for scale, 80% of the archs for training reached {ceiling[space]:.3f} in a previous run"
                      if space in ceiling else ""))
    r = rnd[(rnd["k"] == 50) & ~rnd.apply(lambda x: x["target"] in whole.get(x["space"], []), axis=1)]
    if len(r):
        out.append(f"k=50 +-10% on non-whole-ms devices: mean {100 * r['acc10'].mean():.1f}%, "
                   f"{int((r['acc10'] >= 0.9).sum())}/{len(r)} devices >= 90%")
    allr = agg[agg["pick"] == "random"]
    cov = allr.groupby("k").agg(c=("coverage", "mean"), w=("width_pct", "mean") if "width_pct" in allr else
                                ("coverage", "size"))
    out.append("90% interval coverage by k (mean over spaces, devices and protocols; target 88-92%): "
               + ", ".join(f"k={k}: {100 * v['c']:.1f}% (width {v['w']:.0f}%)"
                           + ("" if 0.88 <= v["c"] <= 0.92 else " MISSED") for k, v in cov.iterrows()))
    lofo = _lofo_vs_none(allr, result.get("records"))
    if lofo is not None:
        for k, r in lofo.groupby("k"):
            worse = r[r["diff"] < 0]
            out.append(f"k={k} leave-one-family-out vs no library: worse on {len(worse)}/{len(r)} devices"
                       f" ({int((worse['diff'] < -2 * worse['se']).sum())} by more than 2 s.e. over seeds)"
                       + (f" (worst {worse['diff'].min():+.3f} Spearman on {worse.loc[worse['diff'].idxmin(), 'space']}/"
                          f"{worse.loc[worse['diff'].idxmin(), 'target']})" if len(worse) else "")
                       + f"; mean {r['lofo'].mean():.3f} vs {r['none'].mean():.3f}"
                       + (" (target: no worse on any device: met)" if worse.empty else " (target: MISSED)"))
    for c in _cpu_results(result):
        r = c["predictor"]
        out.append(f"local `{c['target']}` {c.get('space', '')}: table + residual {100 * r['acc10']:.1f}% within "
                   f"+-10% of measured ({c['n_heldout']} held-out subnets, {c['n_train']} training; table sum "
                   f"{100 * c['table_sum']['acc10']:.1f}%) (target >= 95%: "
                   f"{'met' if r['acc10'] >= 0.95 else 'MISSED'})")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seeds-large", type=int, default=1, help="seeds at k >= --large-from")
    ap.add_argument("--large-from", type=int, default=LARGE_K,
                    help="k from which --seeds-large and --targets-large apply")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="XGBoost threads per worker")
    ap.add_argument("--strict-library", action="store_true",
                    help="also leave out the target hardware's other batch sizes from the library")
    ap.add_argument("--ceiling", action="store_true", help="also fit on 80%% of the archs (slow)")
    ap.add_argument("--cache", default=None,
                    help="directory for fitted libraries and finished jobs (a rerun resumes from it)")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 devices per space, 1 seed, k=10,50")
    ap.add_argument("--targets", default=None, help="comma-separated device columns (default: all)")
    ap.add_argument("--targets-large", default=None,
                    help="comma-separated device columns run at k >= --large-from, in this order of priority "
                         "(default: the same as at small k)")
    ap.add_argument("--out", default=str(RESULTS / "predictor_accuracy.json"))
    ap.add_argument("--readme", default=str(ROOT / "benchmarks" / "README.md"))
    ap.add_argument("--cpu-table", action="append", default=[],
                    help="LUT of the local device: run cpu_table_residual too (repeatable, with --cpu-data)")
    ap.add_argument("--cpu-data", action="append", default=[], help="measured subnets CSV for each --cpu-table")
    ap.add_argument("--no-readme", action="store_true", help="do not touch benchmarks/README.md")
    ap.add_argument("--throughput-only", action="store_true", help="with --render-only: re-measure throughput")
    ap.add_argument("--from-parts", action="store_true",
                    help="with --cache: assemble the results from the jobs finished so far, run nothing")
    ap.add_argument("--previous-ceiling", default=None,
                    help="an older results JSON whose ceiling-80%% rows are quoted (labelled as such)")
    ap.add_argument("--render-only", action="store_true",
                    help="only rewrite the README section (and targets) from an existing --out JSON")
    a = ap.parse_args(argv)
    if a.render_only:
        result = json.loads(Path(a.out).read_text())
        if a.throughput_only:
            result["throughput"] = throughput(threads=2)
        if a.cpu_table:
            result["cpu"] = local_results(a.cpu_table, a.cpu_data)
        strict_path = Path(a.out).with_name(Path(a.out).stem + "_strict.json")
        if strict_path.exists():
            result["strict_library_aggregate"] = json.loads(strict_path.read_text())["aggregate"]
        result["targets"] = targets_text(result)
        Path(a.out).write_text(json.dumps(result, indent=1, default=float))
        update_readme(Path(a.readme), markdown(result))
        print("\n".join(result["targets"]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("hwnat").setLevel(logging.WARNING)
    spaces = a.spaces.split(",")
    ks = tuple(int(k) for k in a.ks.split(","))
    seeds = a.seeds
    if a.quick:
        ks, seeds = (10, 50), 1
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    jobs, whole_ms, floors = [], {}, {}
    parts = str(Path(a.cache) / "parts") if a.cache else None
    for space in spaces:
        df, fx, g, devices, whole = load(space)
        whole_ms[space] = whole
        targets = devices[:2] if a.quick else devices
        if a.targets:
            targets = [t for t in a.targets.split(",") if t in devices]
        for k in ks:
            n_seeds = a.seeds_large if k >= a.large_from else seeds
            ts = [t for t in a.targets_large.split(",") if t in devices] if a.targets_large and k >= a.large_from \
                else targets
            jobs += [(space, t, k, n_seeds, a.threads, a.strict_library, a.cache, parts) for t in ts]
        if a.ceiling:
            jobs += [(space, t, None, 1, a.threads, a.strict_library, a.cache, parts) for t in targets]
        if space == "nasbench201":
            floors[space] = noise_floor(df, g, devices)
    # small k first (partial runs cover every device), then targets in order of priority, spaces interleaved
    prio = {t: i for i, t in enumerate((a.targets_large or "").split(","))}
    jobs.sort(key=lambda j: (j[2] is None, j[2] or 0, prio.get(j[1], len(prio)), spaces.index(j[0])))
    if "fbnet" in spaces and "nasbench201" in floors:
        df, _, _, devices, whole = load("fbnet")
        floors["fbnet"] = {}
        for c in whole:
            if c in floors["nasbench201"]:
                y = df[c].to_numpy(dtype=np.float64)
                y = y[metrics.trim_middle(y)]
                sd = floors["nasbench201"][c]["noise_rel_sd"]
                floors["fbnet"][c] = {"assumed_noise_rel_sd": sd,
                                      "simulated_remeasure_acc10": simulated_floor(y, sd, True)}
    records, scatter = [], {}
    if a.from_parts:
        for space, t, k, n_seeds, _, strict, _, _ in jobs:
            part = Path(parts) / f"{space}__{t}__{k or 'ceiling'}__s{n_seeds}{'_strict' if strict else ''}.json"
            if part.exists():
                d = json.loads(part.read_text())
                records += d["records"]
                scatter.update(d["scatter"])
            else:
                log.warning("not finished: %s %s k=%s", space, t, k)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(a.workers) as pool:
            for recs, sc in pool.imap_unordered(_worker, jobs, chunksize=1):
                records += recs
                scatter.update(sc)
    result = {"config": {"spaces": spaces, "ks": list(ks), "seeds": seeds, "seeds_large": a.seeds_large,
                         "large_k": a.large_from, "targets_large": a.targets_large, "strict_library": a.strict_library, "data": "hwnat.data (shipped)",
                         "protocol": "lodo / lofo / none, HELP trimming 10%/10%",
                         "elapsed_s": None},
              "whole_ms": whole_ms, "noise_floor": floors, "records": records,
              "aggregate": aggregate(records).to_dict(orient="records")}
    if a.previous_ceiling:
        prev = pd.DataFrame(json.loads(Path(a.previous_ceiling).read_text())["aggregate"])
        prev = prev[prev["pick"] == "ceiling-80%"]
        result["ceiling_previous_run"] = {"file": a.previous_ceiling,
                                          "rows": prev[["space", "target", "k", "spearman", "acc10"]]
                                          .to_dict(orient="records")}
    if not a.no_throughput:
        result["throughput"] = throughput(threads=2)
    if a.cpu_table:
        result["cpu"] = local_results(a.cpu_table, a.cpu_data)
    result["plots"] = plot(scatter, out.parent, "_strict" if a.strict_library else "")
    result["targets"] = targets_text(result)
    result["config"]["elapsed_s"] = time.time() - t0
    out.write_text(json.dumps(result, indent=1, default=float))
    log.info("wrote %s in %.0fs", out, time.time() - t0)
    if not (a.quick or a.no_readme):
        update_readme(Path(a.readme), markdown(result))
    print("\n".join(result["targets"]))


def update_readme(path: Path, section: str) -> None:
    """Replace (or append) the "## Predictor accuracy" section of the benchmarks README."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find("## Predictor accuracy")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        nxt = text.find("\n## ", start + 5)
        text = text[:start] + section + ("\n" + text[nxt + 1:] if nxt >= 0 else "\n")
    path.write_text(text)


if __name__ == "__main__":
    main()
