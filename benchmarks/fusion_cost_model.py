"""How well the per-edge cost model of ``hwnat.mtl.prune`` predicts the measured latency of pruned MTL
networks on a device (default ``cpu``: this machine, ONNX Runtime, one thread).

Profiles the ``mtl-vgg`` space's blocks into a table, then measures end to end (export to ONNX + the
device's protocol) the network with no edge, with every edge, random edge sets of every density and the
knapsack choices at budgets spread between the two, and compares three predictions with the measurements:

* ``linear``: ``base_ms + sum(cost_ms[kept])`` from ``edge_costs_ms`` (what the search's expected-latency
  term and the knapsack use);
* ``table``: the exact table sum (each layer's fusion op with exactly its kept sources);
* ``anchored``: the linear model anchored to the two measured end points (no-edge and all-edge networks):
  ``measured_none + sum(cost_ms[kept]) * (measured_all - measured_none) / sum(cost_ms)``.

Each network is measured ``--repeats`` times, interleaved, and the least median is kept (on a shared
machine load only adds time). Also reports the time pruning saves: each pruned network vs the all-edges network with the dropped edges
only masked (gates 0: it runs every fusion op at full width, as the released MTL-NAS code does).

Usage:
    PYTHONPATH=. python benchmarks/fusion_cost_model.py [--device cpu] [--widths 16 32 32 64] [--random 10]

Writes ``benchmarks/results/fusion_cost_model[_TAG].json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--widths", type=int, nargs="+", default=None)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--random", type=int, default=10, help="random edge sets to measure")
    ap.add_argument("--budgets", type=int, default=5, help="knapsack budgets between no-edge and all-edge")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved measurements of each network")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall: the device's protocol (host clock); thread: ONNX Runtime in this process, one "
                         "thread, timed by the thread's CPU time (time spent descheduled by other load excluded)")
    ap.add_argument("--runs", type=int, default=200, help="--clock thread: timed runs per median")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    import torch

    from hwnat.devices.device import open_device
    from hwnat.export import export_onnx
    from hwnat.mtl.prune import edge_costs_ms, knapsack
    from hwnat.spaces import get_space

    torch.set_num_threads(1)
    opts = {"resolution": args.resolution}
    if args.widths:
        opts["widths"] = tuple(args.widths)
    sp = get_space("mtl-vgg", **opts)
    rng = np.random.default_rng(args.seed)
    out = Path(__file__).parent / "results" / f"fusion_cost_model{'_' + args.tag if args.tag else ''}.json"
    t0, load0 = time.time(), list(os.getloadavg())
    with open_device(args.device) as dev, tempfile.TemporaryDirectory() as tmp:
        if args.clock == "thread":
            def time_ms(path, shape) -> float:
                return thread_time_ms(path, shape, args.runs)
        else:
            def time_ms(path, shape) -> float:
                return dev.measure(str(path), shape).median_ms

        def table_of_blocks() -> dict[str, float]:
            lut = {}
            for b in sp.all_blocks():
                f = export_onnx(sp.build_block(b), b.batch_input(), Path(tmp) / "block.onnx")
                lut[b.key] = time_ms(f, b.batch_input())
            return lut

        # the table twice, least of the two per block (load only adds time)
        lut = {k: min(a, b) for (k, a), b in zip(table_of_blocks().items(), table_of_blocks().values(),
                                                  strict=True)}
        base, cost = edge_costs_ms(sp, lut)
        n = len(sp.edges())
        sets = {"none": np.zeros(n, bool), "all": np.ones(n, bool)}
        for r in range(args.random):
            sets[f"random{r}"] = rng.random(n) < rng.uniform(0.1, 0.9)

        def export(name, kept):
            return export_onnx(sp.build(sp.decode(kept.astype(np.int64))), sp.input_shape(), Path(tmp) / f"{name}.onnx")

        files = {name: export(name, k) for name, k in sets.items()}
        # knapsack picks at budgets between the end points, with costs anchored to a first measurement of them
        lo0, hi0 = (time_ms(files[k], sp.input_shape()) for k in ("none", "all"))
        scale0 = (hi0 - lo0) / float(cost.sum())
        gates = rng.random(n)  # stand-in gate values for the knapsack's objective
        budgets = {}
        for k in range(args.budgets):
            budget = lo0 + (hi0 - lo0) * (k + 1) / (args.budgets + 1)
            sets[f"budget{k}"] = knapsack(gates, cost * scale0, budget - lo0)
            budgets[f"budget{k}"] = budget
            files[f"budget{k}"] = export(f"budget{k}", sets[f"budget{k}"])
        # every network measured --repeats times, interleaved; the least median is kept
        meds = {name: [] for name in sets}
        for _ in range(args.repeats):
            for name in sets:
                meds[name].append(time_ms(files[name], sp.input_shape()))
        fp = dev.fingerprint()
    rows = []
    for name, kept in sets.items():
        a = sp.decode(kept.astype(np.int64))
        row = {"name": name, "edges": int(kept.sum()), "arch": sp.format(a), "repeat_medians_ms": meds[name], "linear_ms": base + float(cost[kept].sum()),
               "table_ms": float(sum(lut[b.key] for b in sp.blocks(a))), "flops_m": sp.flops(a) / 1e6}
        if name in budgets:
            row["budget_ms"] = budgets[name]
        rows.append(row)
    drift = {"none_repeats_ms": meds["none"], "all_repeats_ms": meds["all"],
             "loadavg_end": list(os.getloadavg())}
    inner = [r for r in rows if r["name"] not in ("none", "all")]
    summary = {}
    # two readings of the repeats: the least median (load only adds time) and the median of the medians
    for stat, fn in (("min", np.min), ("median", np.median)):
        lo, hi = float(fn(meds["none"])), float(fn(meds["all"]))
        scale = (hi - lo) / float(cost.sum()) if cost.sum() > 0 else 0.0
        for r in rows:
            kept = sp.encode(sp.parse(r["arch"])).astype(bool)
            meas = float(fn(r["repeat_medians_ms"]))
            r[f"measured_{stat}_ms"] = meas
            r[f"anchored_{stat}_ms"] = lo + float(cost[kept].sum()) * scale  # both end points measured
            r[f"none_plus_costs_{stat}_ms"] = lo + float(cost[kept].sum())  # measured base + raw table costs
            r[f"saving_vs_masked_{stat}_pct"] = 100.0 * (1 - meas / hi)  # vs all edges run with gates 0
            for m in ("linear", "table", f"anchored_{stat}", f"none_plus_costs_{stat}"):
                r[f"{m}_err_{stat}_pct"] = 100.0 * (r[f"{m}_ms"] / meas - 1)
        for m in ("linear", "table", "anchored", "none_plus_costs"):
            key = m if m in ("linear", "table") else f"{m}_{stat}"
            errs = np.abs([r[f"{key}_err_{stat}_pct"] for r in inner])
            summary[f"{m}/{stat}"] = {"mape_pct": float(errs.mean()), "max_abs_err_pct": float(errs.max()),
                                      "within_10pct": float((errs <= 10).mean())}
        summary[f"scale/{stat}"] = scale
    lo, hi = min(meds["none"]), min(meds["all"])
    res = {"space_options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
           "device": args.device, "base_ms": base, "edge_cost_ms": cost.tolist(),
           "edges": [str(e) for e in sp.edges()], "measured_none_ms": lo, "measured_all_ms": hi,
           "clock": args.clock, "repeats": args.repeats, "drift": drift, "loadavg_start": load0, "rows": rows, "summary": summary, "wall_s": round(time.time() - t0, 1),
           "fingerprint": {k: fp.get(k) for k in ("cpu_model", "logical_cores", "runtime", "runtime_version",
                                                  "threads")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"{'net':10} {'edges':>5} {'meas ms':>8} {'linear':>8} {'table':>8} {'anchor':>8}  err% lin/tab/anc "
          "(least median of the repeats)")
    for r in rows:
        print(f"{r['name']:10} {r['edges']:5d} {r['measured_min_ms']:8.4f} {r['linear_ms']:8.4f} {r['table_ms']:8.4f} "
              f"{r['anchored_min_ms']:8.4f}  {r['linear_err_min_pct']:+6.1f} {r['table_err_min_pct']:+6.1f} "
              f"{r['anchored_min_err_min_pct']:+6.1f}")
    for k, v in summary.items():
        print(f"{k:24} {json.dumps(v)}")
    print("end points over repeats:", drift)
    print(f"-> {out}")


def thread_time_ms(path, shape, runs: int) -> float:
    """Median CPU time (ms) of the calling thread per ONNX Runtime run (one intra-op thread, sequential:
    the graph runs on this thread), after a warm-up. Unlike the host clock it does not count time the
    process waits for a core, so it is usable on a loaded machine; it still sees cache interference."""
    import onnxruntime as ort

    from hwnat._shapes import as_shapes

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {i.name: rng.standard_normal(s).astype(np.float32) for i, s in zip(sess.get_inputs(), as_shapes(shape),
                                                                            strict=True)}
    for _ in range(max(3, runs // 10)):
        sess.run(None, feed)
    samples = []
    for _ in range(runs):
        a = time.thread_time_ns()
        sess.run(None, feed)
        samples.append((time.thread_time_ns() - a) / 1e6)
    return float(np.median(samples))


if __name__ == "__main__":
    main()
