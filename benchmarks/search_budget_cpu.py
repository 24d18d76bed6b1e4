"""Budget honoured on this machine: ``hwnat search`` on ``cpu`` (ONNX Runtime), ofa-mbv3, MNIST, with
every pick exported and measured end to end (the search's own verification).

1. ``hwnat spaces sample`` draws ``--subnets`` (30) random ofa-mbv3 subnets and ``hwnat measure --device
   cpu`` times them end to end: the space's measured latency distribution on this device;
2. budgets at its 25th, 50th and 75th percentiles; for each budget and each of 3 seeds one search
   (``hwnat search --latency-ms B --seed S`` over all the space's resolutions; ``--quick`` with its
   settings pinned (``QUICK_ARGS``) unless ``--full``);
3. from ``picks.csv`` (``measured_ms`` = the verification measurement): the share of all picks measuring
   <= budget (target >= 95%), and per budget the median over seeds of the best pick's slack
   (budget - measured) / budget (target <= 5% at the two lower budgets: the pick uses the budget).

Run: ``python benchmarks/search_budget_cpu.py [--full]``. Writes ``benchmarks/results/search_budget_cpu.json``.
End-to-end timings on a shared machine drift by several percent (benchmarks/README.md); the load
average is recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _search_runs import WORK, hwnat, machine, read_csv, save, search  # noqa: E402

from hwnat.search.metrics import BUDGET_PERCENTILES, percentile_budgets  # noqa: E402
from hwnat.spaces import get_space  # noqa: E402

#: ``--quick`` settings of the search CLI when this benchmark was written, pinned
QUICK_ARGS = ["--initial", "8", "--iterations", "2", "--candidates", "4", "--population", "24",
              "--generations", "8", "--warmup-epochs", "1", "--picks", "2"]


def measured_space(work: Path, n: int, seed: int) -> pd.DataFrame:
    """``n`` random ofa-mbv3 subnets measured on cpu (resumable: ``hwnat measure`` keeps finished rows)."""
    work.mkdir(parents=True, exist_ok=True)
    archs, out = work / "space_sample.csv", work / "space_measured.csv"
    if not archs.exists():
        import subprocess

        text = subprocess.run([sys.executable, "-m", "hwnat.cli.main", "spaces", "sample", "--space", "ofa-mbv3",
                               "-n", str(n), "--seed", str(seed)], check=True, capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1]).stdout
        archs.write_text(text)
    rc, wall = hwnat(["measure", "--device", "cpu", "--space", "ofa-mbv3", "--archs", archs, "--out", out],
                     work / "space_measured.log")
    if rc != 0:
        raise SystemExit(f"hwnat measure failed (exit {rc}); see {work / 'space_measured.log'}")
    return pd.read_csv(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subnets", type=int, default=30)
    ap.add_argument("--percentiles", nargs="+", type=float, default=list(BUDGET_PERCENTILES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--full", action="store_true", help="Default search settings instead of --quick.")
    ap.add_argument("--search-args", default="", help="Extra options for every `hwnat search` (one string).")
    ap.add_argument("--work", type=Path, default=WORK / "budget_cpu")
    a = ap.parse_args(argv)
    space = measured_space(a.work, a.subnets, seed=0)
    lat = space["latency_ms"].to_numpy(dtype=float)
    budgets = percentile_budgets(lat, a.percentiles)
    print(f"{len(lat)} random ofa-mbv3 subnets on cpu: {lat.min():.2f}..{lat.max():.2f} ms; budgets "
          + ", ".join(f"p{q:g} {b:.2f} ms" for q, b in zip(a.percentiles, budgets)), flush=True)
    # the budgets come from subnets over all of the space's resolutions, so the search covers them too
    # (--quick alone searches 224 only); the quick settings are pinned so that runs stay comparable
    mode = [] if a.full else ["--quick", *QUICK_ARGS]
    for r in get_space("ofa-mbv3").resolutions:
        mode += ["--resolution", str(r)]
    runs = []
    for q, budget in zip(a.percentiles, budgets):
        budget = float(budget)
        for seed in a.seeds:
            out = a.work / ("full" if a.full else "quick") / f"p{q:g}_s{seed}"
            run = search(out, ["--latency-ms", f"{budget:.4f}", "--seed", seed, *mode, *a.search_args.split()])
            rec = {"percentile": q, "budget_ms": budget, "seed": seed, "rc": run["rc"], "wall_s": run["wall_s"],
                   "out": str(out)}
            picks = read_csv(out / "picks.csv")
            if picks is None or "measured_ms" not in picks.columns:
                rec["error"] = f"no verified picks.csv (exit {run['rc']}); see {out}.log"
                print(f"p{q:g} seed {seed}: {rec['error']}", flush=True)
                runs.append(rec)
                continue
            m = picks["measured_ms"].to_numpy(dtype=float)
            rec["picks"] = [{"arch": r["arch"], "predicted_ms": float(r["latency_ms"]), "measured_ms": float(r["measured_ms"]),
                             "accuracy": float(r["accuracy"])} for _, r in picks.iterrows()]
            rec["within_budget"] = int((m <= budget).sum())
            rec["best_slack_pct"] = 100.0 * (budget - m[0]) / budget
            runs.append(rec)
            print(f"p{q:g} ({budget:.2f} ms) seed {seed}: {rec['within_budget']}/{len(m)} picks within budget; "
                  f"best pick predicted {picks['latency_ms'].iloc[0]:.2f} ms, measured {m[0]:.2f} ms "
                  f"(slack {rec['best_slack_pct']:+.1f}%), acc {picks['accuracy'].iloc[0]:.2f}; {run['wall_s']:.0f} s",
                  flush=True)
    ok = [r for r in runs if "error" not in r]
    n_picks = sum(len(r["picks"]) for r in ok)
    summary = {"searches": len(ok), "failed": len(runs) - len(ok), "picks": n_picks,
               "picks_within_budget": int(sum(r["within_budget"] for r in ok)),
               "share_within_budget": (sum(r["within_budget"] for r in ok) / n_picks) if n_picks else None,
               "best_pick_median_slack_pct": {}}
    for q in a.percentiles:
        s = [r["best_slack_pct"] for r in ok if r["percentile"] == q]
        summary["best_pick_median_slack_pct"][f"p{q:g}"] = float(np.median(s)) if s else None
    print(f"summary: {summary['picks_within_budget']}/{n_picks} picks measure within budget; best pick median "
          f"slack {summary['best_pick_median_slack_pct']}")
    path = save("budget_cpu", {"setting": {"space": "ofa-mbv3", "device": "cpu", "task": "default (mnist)",
                                           "mode": "default" if a.full else "quick", "seeds": a.seeds,
                                           "search_mode_args": mode,
                                           "percentiles": a.percentiles, "search_args": a.search_args.split()},
                               "machine": machine(),
                               "space_latency_ms": {"n": int(len(lat)), "min": float(lat.min()),
                                                    "median": float(np.median(lat)), "max": float(lat.max()),
                                                    "budgets": budgets.tolist()},
                               "summary": summary, "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
