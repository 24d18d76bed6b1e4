"""Latency-aware fusion pruning, measured: ``hwnat mtl prune`` of one search result at 5 budgets spread
between the no-edge and the all-edge network's measured latency on the device.

For each budget: does the pruned network measure within it, how far is the predicted latency from the
measured one (the per-fusion-op table costs fitted to 6 measured networks, and the raw table sum), and
what does physical pruning save against the same network with the dropped edges only masked (multiplied
by zero, the full network's cost: what MTL-NAS's released code runs). Each ``hwnat mtl prune`` refits the
latency model on fresh measurements, keeps the fit's RMS residual as a margin below the budget, and times
the pruned and masked networks in 3 interleaved rounds (least median kept).

Usage:
    PYTHONPATH=. python benchmarks/mtl_prune.py --model benchmarks/results/mtl_work/seed_0/searched.pt

Writes ``benchmarks/results/mtl_prune.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=RESULTS / "mtl_work" / "seed_0" / "searched.pt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budgets", type=int, default=5)
    ap.add_argument("--work", type=Path, default=RESULTS / "mtl_work" / "prune")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    import torch

    from hwnat.errors import CheckFailedError
    from hwnat.mtl.pipeline import run_prune

    torch.set_num_threads(1)
    os.chdir(ROOT)  # the default latency table path is relative to the working directory
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.time()
    # first call: anchors only (a budget at the all-edges latency keeps every searched edge it can)
    probe = run_prune(args.model, 1e9, device=args.device, out=args.work, sweep=False)
    # budgets from the run's start-of-run measurements of the two end networks (what the budget check reads;
    # the report's no_fusion_ms / all_edges_ms are each prune's own fresh re-measurements)
    anchors = json.loads((args.work / "latency.json").read_text())["networks"]
    no_ms, all_ms = anchors["none"]["median_ms"], anchors["all"]["median_ms"]
    fracs = (np.arange(args.budgets) + 1) / (args.budgets + 1)
    for f in fracs:
        budget = no_ms + f * (all_ms - no_ms)
        try:
            rep = run_prune(args.model, budget, device=args.device, out=args.work, sweep=False)
        except CheckFailedError:
            rep = json.loads((args.work / "report.json").read_text())
        shutil.copy(args.work / "report.json", args.work / f"report_{f:.3f}.json")
        rows.append({"frac": float(f), "budget_ms": budget, "kept_edges": rep["kept_edges"],
                     "predicted_ms": rep["predicted_ms"], "table_ms": rep["table_ms"],
                     "predicted_by_choosing_model_ms": rep.get("predicted_by_choosing_model_ms"),
                     "measured_ms": rep["measured_ms"], "masked_ms": rep["masked_ms"],
                     "within_budget": rep["within_budget"],
                     "error_pct": 100 * (rep["predicted_ms"] - rep["measured_ms"]) / rep["measured_ms"],
                     "table_error_pct": 100 * (rep["table_ms"] - rep["measured_ms"]) / rep["measured_ms"],
                     "saving_vs_masked_pct": 100 * (1 - rep["measured_ms"] / rep["masked_ms"]),
                     "margin_ms": rep["latency_margin_ms"], "measured_repeats_ms": rep["measured_repeats_ms"],
                     "load_avg": os.getloadavg()[0],
                     "accuracy": rep["accuracy"]["pruned"], "arch": rep["arch"]})
    summary = {"model": str(args.model), "device": args.device, "no_fusion_ms": no_ms, "all_edges_ms": all_ms,
               "searched_arch": probe["searched_arch"], "n_edges": probe["n_edges"],
               "wall_s": time.time() - t0, "load_avg": os.getloadavg()[0], "rows": rows,
               "all_within_budget": all(r["within_budget"] for r in rows),
               "within_10pct": float(np.mean([abs(r["error_pct"]) <= 10 for r in rows])),
               "choosing_model_within_10pct": float(np.mean([
                   abs(r["predicted_by_choosing_model_ms"] - r["measured_ms"]) <= 0.1 * r["measured_ms"]
                   for r in rows if r["predicted_by_choosing_model_ms"] is not None] or [np.nan])),
               "fingerprint": probe["fingerprint"]}
    out = RESULTS / f"mtl_prune{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"no fusion {no_ms:.4g} ms, all edges {all_ms:.4g} ms (measured); searched: {probe['searched_arch']}")
    print("| budget ms | kept | predicted ms | margin ms | table ms | measured ms | within | error | "
          "choosing model's prediction | masked ms | saving |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget_ms']:.4g} | {r['kept_edges']} | {r['predicted_ms']:.4g} | {r['margin_ms']:.3f} | "
              f"{r['table_ms']:.4g} | "
              f"{r['measured_ms']:.4g} | {'yes' if r['within_budget'] else 'NO'} | {r['error_pct']:+.1f}% | "
              f"{r['predicted_by_choosing_model_ms'] or float('nan'):.4g} | {r['masked_ms']:.4g} | {r['saving_vs_masked_pct']:.1f}% |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
