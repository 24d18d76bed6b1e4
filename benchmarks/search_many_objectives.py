"""Many objectives: a 4-objective ``hwnat search`` (error, latency on two devices, FLOPs) on NAS-Bench-201,
with the hypervolume of its archive's front after every iteration.

Latency on both devices comes from two columns of the shipped published dataset (``--latency-model
csv:``), accuracy from the shipped NAS-Bench-201 table (``cifar100_val_12ep``), FLOPs from the space's
analytic count; a budget on each device at its 75th latency percentile. After each iteration the
archive's architectures (``archive.csv``, column ``iteration``) within both budgets are looked up in the
truth tables; the hypervolume of their 4-D front (all objectives minimised) is divided by that of the
exhaustive front of all 15,625 cells within the budgets, with one fixed reference point (the exhaustive
front's nadir pushed out by 10% of its range).

The search runs through the CLI's command object in a worker process, picks not exported (see
``_search_runs._in_process``). Run: ``python benchmarks/search_many_objectives.py --search-args
"--initial 16 --iterations 8 --candidates 6"``. Writes ``benchmarks/results/search_many_objectives.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _search_runs import WORK, machine, read_csv, save, search_many  # noqa: E402

from hwnat.data import accuracy_dataset  # noqa: E402
from hwnat.search.metrics import hypervolume, load_truth, pareto_mask, percentile_budgets, reference_point  # noqa: E402
from hwnat.spaces import get_space  # noqa: E402

ACCURACY_COLUMN = "cifar100_val_12ep"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs=2, default=["pixel3", "gold_6240"])
    ap.add_argument("--percentile", type=float, default=75.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--search-args", default="", help="Extra options for `hwnat search` (one string).")
    ap.add_argument("--work", type=Path, default=WORK / "many_objectives")
    a = ap.parse_args(argv)
    d1, d2 = a.devices
    t1, t2 = (load_truth("nasbench201", d, ACCURACY_COLUMN) for d in a.devices)
    assert (t1.archs == t2.archs).all()
    sp = get_space("nasbench201")
    genomes = np.stack([sp.encode(sp.parse(s)) for s in t1.archs])
    flops_m = sp.flops_many(genomes) / 1e6
    # every objective minimised: error %, latency on each device (ms), MFLOPs
    F_all = np.column_stack([100.0 - t1.accuracy, t1.latency_ms, t2.latency_ms, flops_m])
    b1, b2 = (float(percentile_budgets(t.latency_ms, [a.percentile])[0]) for t in (t1, t2))
    feasible = (t1.latency_ms <= b1) & (t2.latency_ms <= b2)
    rows = np.flatnonzero(feasible)
    best = rows[pareto_mask(F_all[rows])]
    ref = reference_point(F_all[best])
    hv_best = hypervolume(F_all[best], ref)
    print(f"exhaustive 4-objective front within {d1} <= {b1:.3f} ms and {d2} <= {b2:.3f} ms: "
          f"{len(best)} of {len(rows)} feasible cells; HV {hv_best:.4g}", flush=True)

    out = (a.work / f"seed{a.seed}").resolve()
    args = ["--space", "nasbench201", "--objective", "error", "--objective", "latency", "--objective", "flops",
            "--device", d1, "--device", d2, "--latency-model", "csv:",
            "--accuracy", f"{accuracy_dataset('nasbench201')}:{ACCURACY_COLUMN}",
            "--latency-ms", f"{d1}={b1:.6g}", "--latency-ms", f"{d2}={b2:.6g}", "--no-verify",
            "--seed", a.seed, *a.search_args.split()]
    run = search_many([(out, args)])[str(out)]
    res = {"setting": {"space": "nasbench201", "devices": a.devices, "budgets_ms": [b1, b2],
                       "percentile": a.percentile, "accuracy_column": ACCURACY_COLUMN, "seed": a.seed,
                       "objectives": ["error_pct", f"latency_{d1}_ms", f"latency_{d2}_ms", "flops_m"],
                       "search_args": a.search_args.split()},
           "machine": machine(), "rc": run["rc"], "wall_s": run["wall_s"], "out": str(out),
           "exhaustive": {"front_size": int(len(best)), "feasible": int(len(rows)), "hv": hv_best,
                          "reference_point": ref.tolist()}}
    archive, pareto = read_csv(out / "archive.csv"), read_csv(out / "pareto.csv")
    if archive is None:
        res["error"] = f"no archive.csv (exit {run['rc']}); see {out}.log"
        print(res["error"])
    else:
        it_col = "iteration" if "iteration" in archive.columns else None
        iters = sorted(archive[it_col].unique()) if it_col else [0]
        per_iter = []
        for it in iters:
            seen = archive if it_col is None else archive[archive[it_col] <= it]
            r = t1.index(list(dict.fromkeys(seen["arch"])), what=str(out / "archive.csv"))
            r_ok = r[feasible[r]]
            F = F_all[r_ok][pareto_mask(F_all[r_ok])] if len(r_ok) else np.zeros((0, 4))
            hv = hypervolume(F, ref)
            per_iter.append({"iteration": int(it), "evaluated": int(len(r)), "front_size": int(len(F)),
                             "hv": hv, "hv_ratio": hv / hv_best})
            print(f"iteration {it}: {len(r)} evaluated, front {len(F)}, HV {100 * hv / hv_best:.2f}% of "
                  f"exhaustive", flush=True)
        res["per_iteration"] = per_iter
        if pareto is not None:
            r = t1.index(list(pareto["arch"]), what=str(out / "pareto.csv"))
            r_ok = r[feasible[r]]
            F = F_all[r_ok][pareto_mask(F_all[r_ok])] if len(r_ok) else np.zeros((0, 4))
            res["returned_front"] = {"size": int(len(pareto)), "within_budgets": int(len(r_ok)),
                                     "hv_ratio": hypervolume(F, ref) / hv_best,
                                     "columns": list(pareto.columns)}
            print(f"returned front: {len(pareto)} archs, HV {100 * res['returned_front']['hv_ratio']:.2f}% "
                  f"of exhaustive; wall {run['wall_s']:.0f} s")
    path = save("many_objectives", res)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
