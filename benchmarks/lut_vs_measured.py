"""How well does a latency table (sum of separately timed blocks) predict measured end-to-end latency?

On the `cpu` device (ONNX Runtime), for `ofa-mbv3` at r=224 and `nasbench201`:
  - profile every unique block twice (wall time, entries, run-to-run drift of the two profiles),
  - measure N random subnets end to end,
  - compare table sum vs measured: within +-10%, MAPE, Spearman, mean/median bias, a linear fit,
  - time the vectorised table sum over 100,000 architectures.
With --full-range, also profile ofa-mbv3 over NAT's whole resolution range (192..256 step 4).

Writes JSON (default benchmarks/results/lut_vs_measured.json) and prints a table. Resumable: the tables
and CSVs in --workdir are reused by a rerun.

    python benchmarks/lut_vs_measured.py --subnets 100
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
from scipy import stats

from hwnat.devices.device import open_device
from hwnat.latency.profiler import measure_archs, profile_blocks
from hwnat.latency.table import LatencyTable
from hwnat.measure.fingerprint import cpu_model
from hwnat.spaces import get_space


def _profile(space, dev, path: Path) -> tuple[LatencyTable, float]:
    t0 = time.perf_counter()
    table = profile_blocks(space, dev, space.all_blocks(), path)
    return table, time.perf_counter() - t0


def drift(a: LatencyTable, b: LatencyTable) -> dict:
    """Run-to-run drift between two profiles of the same blocks."""
    keys = sorted(set(a.entries) & set(b.entries))
    r = np.array([b.entries[k]["median_ms"] / a.entries[k]["median_ms"] for k in keys])
    rel = np.abs(r - 1)
    return {"entries": len(keys), "within_5pct": float((rel <= 0.05).mean()),
            "within_10pct": float((rel <= 0.10).mean()), "median_abs_pct": float(100 * np.median(rel)),
            "p90_abs_pct": float(100 * np.percentile(rel, 90))}


def compare(table_ms: np.ndarray, measured_ms: np.ndarray) -> dict:
    """Table sum vs measured end-to-end latency."""
    ratio = table_ms / measured_ms
    err = ratio - 1
    slope, intercept = np.polyfit(measured_ms, table_ms, 1)
    return {
        "n": int(len(measured_ms)),
        "within_10pct": float((np.abs(err) <= 0.10).mean()),
        "mape_pct": float(100 * np.abs(err).mean()),
        "spearman": float(stats.spearmanr(table_ms, measured_ms).statistic),
        "mean_bias_pct": float(100 * err.mean()),
        "median_bias_pct": float(100 * np.median(err)),
        "mean_bias_ms": float((table_ms - measured_ms).mean()),
        "fit_table_vs_measured": {"slope": float(slope), "intercept_ms": float(intercept)},
        "measured_ms_range": [float(measured_ms.min()), float(measured_ms.max())],
    }


def sum_throughput(space, table: LatencyTable, n: int = 100_000) -> dict:
    g = space.sample_genomes(np.random.default_rng(0), n)
    table.sum_many(space, g[:10])  # build the slot vector once
    t0 = time.perf_counter()
    table.sum_many(space, g)
    dt = time.perf_counter() - t0
    return {"archs": n, "seconds": dt, "archs_per_s": n / dt}


def run_space(name: str, opts: dict, dev, workdir: Path, subnets: int) -> dict:
    space = get_space(name, **opts)
    res = {"space": name, "options": opts, "unique_blocks": len(space.all_blocks())}
    a, ta = _profile(space, dev, workdir / f"{name}.A.json")
    b, tb = _profile(space, dev, workdir / f"{name}.B.json")
    res["profile_wall_s"] = [ta, tb]  # 0 on a resumed run for what was already measured
    res["drift"] = drift(a, b)
    archs = [space.format(x) for x in space.sample(np.random.default_rng(0), subnets)]
    out = workdir / f"{name}.measured.csv"
    t0 = time.perf_counter()
    measure_archs(space, dev, archs, out, columns="stats")
    res["measure_wall_s"] = time.perf_counter() - t0
    with open(out) as f:
        rows = {r["arch"]: float(r["latency_ms"]) for r in csv.DictReader(f)}
    measured = np.array([rows[s] for s in archs])
    g = space.encode_many(space.parse_many(archs))
    res["vs_table_A"] = compare(a.sum_many(space, g), measured)
    res["vs_table_B"] = compare(b.sum_many(space, g), measured)
    res["table_sum_throughput"] = sum_throughput(space, a)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--subnets", type=int, default=100)
    ap.add_argument("--workdir", type=Path, default=Path("benchmarks/results/lut_work"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lut_vs_measured.json"))
    ap.add_argument("--full-range", action="store_true", help="also profile ofa-mbv3 at 192..256 step 4")
    ap.add_argument("--spaces", nargs="+", default=["ofa-mbv3", "nasbench201"])
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {"date": date.today().isoformat(), "machine": f"{cpu_model()}, {platform.machine()}",
               "device": args.device, "spaces": []}
    with open_device(args.device) as dev:
        results["protocol"] = dev.spec.measure.model_dump()
        results["threads"] = dev.spec.runtime.threads
        for name in args.spaces:
            opts = {"resolutions": (224,)} if name == "ofa-mbv3" else {}
            results["spaces"].append(run_space(name, opts, dev, args.workdir, args.subnets))
        if args.full_range:
            space = get_space("ofa-mbv3")
            t, wall = _profile(space, dev, args.workdir / "ofa-mbv3.nat-range.json")
            results["ofa_nat_range"] = {"resolutions": list(space.resolutions), "entries": len(t.entries),
                                        "wall_s": wall,
                                        "sum_of_entry_wall_s": sum(e.get("wall_s", 0) for e in t.entries.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'space':<12} {'blocks':>6} {'prof s':>7} {'drift<=5%':>9} {'n':>4} {'+-10%':>6} {'MAPE%':>6} "
          f"{'rho':>6} {'bias%':>6} {'Marchs/s':>8}")
    for r in results["spaces"]:
        c = r["vs_table_A"]
        print(f"{r['space']:<12} {r['unique_blocks']:>6} {r['profile_wall_s'][0]:>7.1f} "
              f"{100 * r['drift']['within_5pct']:>8.1f}% {c['n']:>4} {100 * c['within_10pct']:>5.1f}% "
              f"{c['mape_pct']:>6.1f} {c['spearman']:>6.3f} {c['mean_bias_pct']:>+6.1f} "
              f"{r['table_sum_throughput']['archs_per_s'] / 1e6:>8.2f}")
    if "ofa_nat_range" in results:
        f = results["ofa_nat_range"]
        print(f"ofa-mbv3 NAT range 192..256: {f['entries']} entries in {f['wall_s']:.0f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
