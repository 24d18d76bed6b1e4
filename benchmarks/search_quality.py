"""Search quality where the truth is known: ``hwnat search`` on NAS-Bench-201 versus the exhaustive Pareto
front and versus random search with the same number of evaluated architectures.

Setting (issue 10, "Search quality"): latency from a published dataset (``--latency-model csv:`` = the
shipped HELP / HW-NAS-Bench table, exact lookup), accuracy from the shipped NAS-Bench-201 table
(``--accuracy <shipped>:cifar100_val_12ep``), a latency budget at a percentile of the device's latencies.
For each device, budget and seed:

- the search's returned front (``pareto.csv``) is looked up in the truth tables and its hypervolume in
  (error %, latency ms), both minimised, is divided by that of the exhaustive front of all 15,625 cells
  within the budget (``hwnat.search.metrics``); the reference point is the exhaustive front's nadir pushed
  out by 10% of its range, the same for every front compared;
- ``evaluated`` = distinct architectures whose accuracy the search looked up (rows of ``archive.csv``);
  target: ratio >= 99% with ``evaluated`` <= 300;
- random search: ``evaluated`` distinct architectures drawn uniformly, their front within the budget,
  the same ratio; mean over ``--random-repeats`` draws per run;
- also the best validation accuracy within the budget found, against the exhaustive best.

The searches run through the CLI's command object in ``--workers`` parallel processes, picks not exported
(see ``_search_runs._in_process``). Run: ``python benchmarks/search_quality.py --search-args "--initial 100
--iterations 10 --candidates 20 --picks 0"`` (3 devices, median budget, seeds 0..2: 300 evaluations each).
Writes ``benchmarks/results/search_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _search_runs import WORK, machine, read_csv, save, search_many  # noqa: E402

from hwnat.data import accuracy_dataset  # noqa: E402
from hwnat.search.metrics import (  # noqa: E402
    hypervolume,
    load_truth,
    objectives,
    pareto_mask,
    percentile_budgets,
    reference_point,
)

ACCURACY_COLUMN = "cifar100_val_12ep"


def front_quality(truth, rows: np.ndarray, budget_ms: float, ref: np.ndarray, hv_best: float) -> dict:
    """Hypervolume ratio and best accuracy of the archs at ``rows`` of the truth, within the budget."""
    rows = rows[truth.latency_ms[rows] <= budget_ms]
    if not len(rows):
        return {"n_within_budget": 0, "hv_ratio": 0.0, "best_accuracy": None}
    F = objectives(truth.accuracy[rows], truth.latency_ms[rows])
    F = F[pareto_mask(F)]
    return {"n_within_budget": int(len(rows)), "hv_ratio": hypervolume(F, ref) / hv_best,
            "best_accuracy": float(truth.accuracy[rows].max())}


def random_search(truth, n: int, budget_ms: float, ref, hv_best: float, rng) -> dict:
    """``n`` distinct archs drawn uniformly from the table (what random search evaluates)."""
    rows = rng.choice(len(truth.archs), size=min(n, len(truth.archs)), replace=False)
    return front_quality(truth, rows, budget_ms, ref, hv_best)


def job(device: str, q: float, budget_ms: float, seed: int, extra: list[str], work: Path) -> tuple[Path, list]:
    """Output folder and arguments of one search."""
    out = (work / f"{device}_p{q:g}_s{seed}").resolve()
    return out, ["--space", "nasbench201", "--device", device, "--latency-model", "csv:",
                 "--accuracy", f"{accuracy_dataset('nasbench201')}:{ACCURACY_COLUMN}",
                 "--latency-ms", f"{budget_ms:.6g}", "--no-verify", "--seed", seed, *extra]


def one_run(truth, device: str, q: float, budget_ms: float, seed: int, out: Path, run: dict, repeats: int) -> dict:
    rows_best = truth.front(budget_ms)
    F_best = objectives(truth.accuracy[rows_best], truth.latency_ms[rows_best])
    ref = reference_point(F_best)
    hv_best = hypervolume(F_best, ref)
    rec = {"device": device, "percentile": q, "budget_ms": budget_ms, "seed": seed, "rc": run["rc"],
           "wall_s": run["wall_s"], "out": str(out), "exhaustive_front_size": int(len(rows_best)),
           "exhaustive_best_accuracy": float(truth.accuracy[rows_best].max()),
           "reference_point": ref.tolist(), "hv_exhaustive": hv_best}
    archive, pareto = read_csv(out / "archive.csv"), read_csv(out / "pareto.csv")
    if archive is None:
        rec["error"] = f"no archive.csv (exit {run['rc']}); see {out}.log"
        return rec
    evaluated = truth.index(list(dict.fromkeys(archive["arch"])), what=str(out / "archive.csv"))
    rec["evaluated"] = int(len(evaluated))
    rec["archive"] = front_quality(truth, evaluated, budget_ms, ref, hv_best)
    if pareto is not None:
        rec["front"] = front_quality(truth, truth.index(list(pareto["arch"]), what=str(out / "pareto.csv")),
                                     budget_ms, ref, hv_best)
        rec["front"]["size"] = int(len(pareto))
    state = out / "state.json"
    if state.exists():  # the surrogate chosen each iteration (adaptive switching) and its CV Kendall tau
        hist = json.loads(state.read_text()).get("history", [])
        rec["surrogates"] = [{"iteration": h["iteration"], "chosen": h["surrogate"],
                              "tau": h["taus"][h["surrogate"]]} for h in hist if "surrogate" in h]
    rng = np.random.default_rng(1000 + seed)
    rs = [random_search(truth, len(evaluated), budget_ms, ref, hv_best, rng) for _ in range(repeats)]
    rec["random"] = {"hv_ratio_mean": float(np.mean([r["hv_ratio"] for r in rs])),
                     "hv_ratio_min": float(np.min([r["hv_ratio"] for r in rs])),
                     "hv_ratio_max": float(np.max([r["hv_ratio"] for r in rs])),
                     "best_accuracy_mean": float(np.mean([r["best_accuracy"] or 0.0 for r in rs])),
                     "repeats": repeats}
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs="+", default=["pixel3", "gold_6240", "titanx_256"])
    ap.add_argument("--percentiles", nargs="+", type=float, default=[50.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--random-repeats", type=int, default=20)
    ap.add_argument("--search-args", default="", help="Extra options for every `hwnat search` (one string).")
    ap.add_argument("--work", type=Path, default=WORK / "quality")
    ap.add_argument("--workers", type=int, default=2, help="Searches run in parallel (in process).")
    a = ap.parse_args(argv)
    extra = a.search_args.split()
    todo, jobs = [], []
    truths = {d: load_truth("nasbench201", d, ACCURACY_COLUMN) for d in a.devices}
    for device, truth in truths.items():
        for q, budget in zip(a.percentiles, percentile_budgets(truth.latency_ms, a.percentiles), strict=True):
            for seed in a.seeds:
                out, args = job(device, q, float(budget), seed, extra, a.work)
                todo.append((device, q, float(budget), seed, out))
                jobs.append((out, args))
    done = search_many(jobs, workers=a.workers)
    runs = []
    for device, q, budget, seed, out in todo:
        r = one_run(truths[device], device, q, budget, seed, out, done[str(out)], a.random_repeats)
        runs.append(r)
        if "error" in r:
            print(f"{device} p{q:g} seed {seed}: {r['error']}", flush=True)
            continue
        f = r.get("front", r["archive"])
        print(f"{device} p{q:g} ({budget:.3f} ms) seed {seed}: {r['evaluated']} evaluated, "
              f"front HV {100 * f['hv_ratio']:.2f}% of exhaustive (archive "
              f"{100 * r['archive']['hv_ratio']:.2f}%), random {100 * r['random']['hv_ratio_mean']:.2f}%; "
              f"best acc {f['best_accuracy']} vs {r['exhaustive_best_accuracy']:.3f}; "
              f"{r['wall_s']:.0f} s", flush=True)
    ok = [r for r in runs if "error" not in r]
    summary = {}
    if ok:
        hv = np.array([r.get("front", r["archive"])["hv_ratio"] for r in ok])
        rnd = np.array([r["random"]["hv_ratio_mean"] for r in ok])
        ev = np.array([r["evaluated"] for r in ok])
        summary = {"runs": len(ok), "failed": len(runs) - len(ok),
                   "hv_ratio_mean": float(hv.mean()), "hv_ratio_min": float(hv.min()),
                   "runs_hv_ge_99pct": int((hv >= 0.99).sum()),
                   "evaluated_max": int(ev.max()), "evaluated_mean": float(ev.mean()),
                   "random_hv_ratio_mean": float(rnd.mean()),
                   "runs_search_above_random": int((hv > rnd).sum()),
                   "best_accuracy_gap_mean": float(np.mean([r["exhaustive_best_accuracy"]
                                                            - (r.get("front", r["archive"])["best_accuracy"] or 0)
                                                            for r in ok]))}
        print(f"\nsummary: HV ratio mean {100 * summary['hv_ratio_mean']:.2f}% (min "
              f"{100 * summary['hv_ratio_min']:.2f}%), {summary['runs_hv_ge_99pct']}/{len(ok)} runs >= 99%, "
              f"<= {summary['evaluated_max']} evaluated; random search {100 * summary['random_hv_ratio_mean']:.2f}%; "
              f"search above random in {summary['runs_search_above_random']}/{len(ok)}")
    path = save("quality", {"setting": {"space": "nasbench201", "accuracy_column": ACCURACY_COLUMN,
                                        "devices": a.devices, "percentiles": a.percentiles, "seeds": a.seeds,
                                        "search_args": extra, "random_repeats": a.random_repeats},
                            "machine": machine(), "summary": summary, "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
