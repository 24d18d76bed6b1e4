"""The local `cpu` predictor check: table sum versus table + residual predictor on subnets measured here.

Runs ``predictor_accuracy.cpu_table_residual`` (5 random splits: ``--n-train`` subnets to fit, the rest held
out; a ``<space>.remeasured.csv`` next to the data gives the re-measurement floor) for one table and its
measured subnets, with the code of this checkout or of another one (``--tree``, e.g. a ``git worktree`` of
an older commit, to compare two block schemes on the same measurements). Prints and writes JSON.

    hwnat profile --device cpu --space nasbench201 --subnets 420 --out T/nasbench201.json
    hwnat measure --device cpu --space nasbench201 --archs T/nasbench201.subnets.csv --out T/nasbench201.remeasured.csv
    python benchmarks/local_cpu_check.py T/nasbench201.json T/nasbench201.subnets.csv --out result.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("table", help="latency table JSON of the device")
    ap.add_argument("data", help="measured subnets CSV (arch + the target column)")
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]),
                    help="checkout whose hwnat and benchmarks/ to use (default: this one)")
    ap.add_argument("--out", default=None, help="JSON file to write (default: stdout only)")
    a = ap.parse_args(argv)
    tree = str(Path(a.tree).resolve())
    sys.path[:0] = [tree, tree + "/benchmarks"]
    import torch

    torch.set_num_threads(1)
    import predictor_accuracy

    import hwnat

    if not hwnat.__file__.startswith(tree):
        raise SystemExit(f"hwnat imported from {hwnat.__file__}, not from --tree {tree}")
    res = predictor_accuracy.cpu_table_residual(a.table, a.data, target=a.target, n_train=a.n_train,
                                                seeds=a.seeds, threads=1)
    res["tree"] = tree
    text = json.dumps(res, indent=1, default=float)
    if a.out:
        Path(a.out).write_text(text)
    for m in ("table_sum", "table_calibrated", "residual", "log", "predictor"):
        r = res[m]
        print(f"{m:17s} within 10%: {100 * r['acc10']:5.1f}%  Spearman {r['spearman']:.3f}  MAPE {r['mape_pct']:.2f}%",
              file=sys.stderr)
    if "remeasure" in res:
        print(f"re-measured: {100 * res['remeasure']['acc10']:.1f}% within 10% ({res['remeasure']['n']} subnets)",
              file=sys.stderr)
    if not a.out:
        print(text)


if __name__ == "__main__":
    main()
