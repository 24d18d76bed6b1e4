"""MTL-NAS with the defaults, measured: wall time of ``hwnat mtl search --latency-ms B``, accuracy of the
searched network vs the single-task backbones (same epochs; per task, mean over seeds), how binary the
minimum-entropy gates end, and the accuracy change from discretising them.

Protocol: the latency table of ``mtl-vgg`` on the device is completed first (``hwnat.mtl.pipeline.
ensure_table``), the no-fusion and all-edges networks are measured, and the budget is
``B = no_fusion + frac * (all_edges - no_fusion)``. Then ``hwnat mtl search --latency-ms B --seed S --out
WORK/seed_S`` runs once per seed as a subprocess (``--parallel`` of them at once: their wall times then
include each other's load, so the load average is recorded next to each). Each run's ``report.json``
gives the accuracies, gates and latencies. ``mtl_prune.py`` then prunes seed 0's search at 5 budgets.

Usage:
    PYTHONPATH=. python benchmarks/mtl_search.py [--seeds 0 1 2] [--frac 0.7] [--parallel 1] [--quick]

Writes ``benchmarks/results/mtl_search.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def anchors(device: str, work: Path) -> dict:
    """Complete the table and measure the no-fusion and all-edges networks (ms)."""
    from hwnat.devices.device import open_device
    from hwnat.mtl.pipeline import anchor, open_space
    from hwnat.mtl.tasks import load_task

    data = load_task("multimnist", quick=True)  # only its shape and classes matter here
    space, _ = open_space(data)
    with open_device(device) as dev:
        _, costs, lat = anchor(space, dev, work, None, None)
    return lat


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frac", type=float, default=0.7, help="budget position between no-fusion and all-edges")
    ap.add_argument("--parallel", type=int, default=1, help="searches run at once")
    ap.add_argument("--quick", action="store_true", help="pass --quick to the searches (smoke run)")
    ap.add_argument("--threads", type=int, default=None,
                    help="pass --threads to the searches (1 on a machine other jobs load)")
    ap.add_argument("--work", type=Path, default=RESULTS / "mtl_work")
    ap.add_argument("--tag", default="")
    ap.add_argument("--aggregate-only", action="store_true",
                    help="summarise the runs already in --work (from runs.json) without running anything")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    state_path = args.work / "runs.json"
    if args.aggregate_only:
        state = json.loads(state_path.read_text())
        lat, budget, runs = state["anchors_ms"], state["budget_ms"], {int(k): v for k, v in state["runs"].items()}
        for s, r in runs.items():
            rep_path = args.work / f"seed_{s}" / "report.json"
            r["report"] = json.loads(rep_path.read_text()) if rep_path.exists() else None
        return summarise(args, lat, budget, runs)
    t0 = time.time()
    lat = anchors(args.device, args.work / "anchors")
    budget = lat["no_fusion"] + args.frac * (lat["all_edges"] - lat["no_fusion"])
    print(f"anchors ({time.time() - t0:.0f} s): no fusion {lat['no_fusion']:.4g} ms, all edges "
          f"{lat['all_edges']:.4g} ms -> budget {budget:.4g} ms", flush=True)

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    pending = list(args.seeds)
    running: dict[int, tuple[subprocess.Popen, float, float, object, float]] = {}
    runs = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            s = pending.pop(0)
            out = args.work / f"seed_{s}"
            cmd = [sys.executable, "-m", "hwnat.cli.main", "-q", "mtl", "search", "--latency-ms", f"{budget:.6g}",
                   "--device", args.device, "--seed", str(s), "--out", str(out)] + (["--quick"] if args.quick else [])
            cmd += ["--threads", str(args.threads)] if args.threads else []
            log = open(args.work / f"seed_{s}.log", "w")
            running[s] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                          time.time(), os.getloadavg()[0], log, children_cpu_s())
            print("started:", " ".join(cmd[1:]), flush=True)
        time.sleep(2)
        for s, (p, start, load0, log, cpu0) in list(running.items()):
            if p.poll() is None:
                continue
            log.close()
            wall = time.time() - start
            rep_path = args.work / f"seed_{s}" / "report.json"
            rep = json.loads(rep_path.read_text()) if rep_path.exists() else None
            # CPU seconds (user + sys) of the finished search: exact with --parallel 1 (children's total)
            runs[s] = {"seed": s, "exit_code": p.returncode, "wall_s": wall, "load_avg_start": load0,
                       "load_avg_end": os.getloadavg()[0], "load_avg_15min_end": os.getloadavg()[2],
                       "cpu_s": children_cpu_s() - cpu0 if args.parallel == 1 else None, "report": rep}
            print(f"seed {s}: exit {p.returncode} in {wall:.0f} s", flush=True)
            del running[s]
            state_path.write_text(json.dumps({"anchors_ms": lat, "budget_ms": budget, "runs": {
                k: {kk: vv for kk, vv in v.items() if kk != "report"} for k, v in runs.items()}}, indent=1))
    summarise(args, lat, budget, runs)


def summarise(args, lat: dict, budget: float, runs: dict) -> None:
    """Write the JSON summary and print the table."""
    ok = [r for r in runs.values() if r["report"]]
    summary = {"device": args.device, "budget_ms": budget, "frac": args.frac, "anchors_ms": lat,
               "seeds": sorted(runs), "parallel": args.parallel, "quick": args.quick, "runs": runs}
    if ok:
        acc = {k: np.array([r["report"]["accuracy"][k] for r in ok]) for k in
               ("single_task", "all_edges", "searched_relaxed", "searched", "pruned")
               if all(k in r["report"]["accuracy"] for r in ok)}
        summary["accuracy_mean"] = {k: v.mean(axis=0).tolist() for k, v in acc.items()}
        summary["accuracy_std"] = {k: v.std(axis=0).tolist() for k, v in acc.items()}
        summary["searched_minus_single_task"] = (acc["searched"] - acc["single_task"]).mean(axis=0).tolist()
        summary["gates_near_binary"] = [r["report"]["gates_near_binary"] for r in ok]
        summary["discretise_change"] = (acc["searched"].mean(axis=1) - acc["searched_relaxed"].mean(axis=1)).tolist()
        summary["wall_s"] = [r["wall_s"] for r in ok]
        summary["cpu_s"] = [r.get("cpu_s") for r in ok]
        summary["phases"] = [r["report"].get("phases") for r in ok]
        summary["pruned_ms"] = [r["report"].get("measured_ms") for r in ok]
        summary["pruned_predicted_ms"] = [r["report"].get("predicted_ms") for r in ok]
        summary["within_budget"] = [r["report"].get("within_budget") for r in ok]
    out = RESULTS / f"mtl_search{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nwrote {out}")
    if ok:
        tasks = ok[0]["report"]["tasks"]
        print(f"\nper-task accuracy, mean of {len(ok)} seed(s) (test split):")
        print("network".ljust(22) + "".join(t.rjust(10) for t in tasks))
        for k, v in summary["accuracy_mean"].items():
            print(k.ljust(22) + "".join(f"{100 * a:9.1f}%" for a in v))
        print("searched - single".ljust(22) + "".join(f"{100 * a:+9.1f}" for a in summary["searched_minus_single_task"]))
        print(f"gates within 0.05 of 0/1: {summary['gates_near_binary']}")
        print(f"accuracy change from discretising (mean over tasks, points): "
              f"{[round(100 * d, 2) for d in summary['discretise_change']]}")
        print(f"wall time (s): {[round(w) for w in summary['wall_s']]}; CPU s: {summary['cpu_s']}; "
              f"budget met: {summary['within_budget']}")


if __name__ == "__main__":
    main()
