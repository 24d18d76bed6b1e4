"""Wall time of ``hwnat search --latency-ms 20`` with no other option (cpu, ofa-mbv3, MNIST; supernet
warm-up, search and verification of the picks on this CPU) and of the same with ``--quick``.

Targets (issue 10): <= 15 min and <= 3 min on a 2-core CPU. Each run starts in a fresh output folder
and a fresh working folder, so no warmed-up supernet is reused (the search caches them in
``./supernets``): the warm-up is inside the time. The device's latency table is the expensive one-off
of a new device (ofa-mbv3 on cpu: 868 blocks over 17 resolutions); with ``--table-from DIR`` the working
folder gets ``DIR/latency_tables`` (default: the one ``search_budget_cpu.py`` profiled), else the run
profiles it first. Both are recorded, with the machine's load average before and after: on a shared
machine the wall time measures the load as much as the code.

Run: ``python benchmarks/search_time.py [--only quick|default]``. Writes ``benchmarks/results/search_time.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _search_runs import RESULTS, WORK, machine, read_csv, save, search  # noqa: E402

TARGET_S = {"quick": 180.0, "default": 900.0}
LUT = Path("latency_tables") / "cpu" / "ofa-mbv3.json"
RESULTS_FILE = RESULTS / "search_time.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(TARGET_S), default=None)
    ap.add_argument("--budget-ms", type=float, default=20.0)
    ap.add_argument("--work", type=Path, default=WORK / "time")
    ap.add_argument("--search-args", default="", help="Extra options (one string), recorded in the command.")
    ap.add_argument("--table-from", type=Path, default=WORK,
                    help="A folder whose latency_tables/ the runs use (none: profile the table first).")
    a = ap.parse_args(argv)
    prev = RESULTS_FILE.read_text() if RESULTS_FILE.exists() else None
    res = json.loads(prev)["runs"] if prev else {}
    for mode in ([a.only] if a.only else ["quick", "default"]):
        cwd = a.work / f"{mode}_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        shutil.rmtree(cwd, ignore_errors=True)
        cwd.mkdir(parents=True)
        table = a.table_from / LUT
        if table.exists():
            (cwd / LUT).parent.mkdir(parents=True)
            shutil.copy2(table, cwd / LUT)
        lut_before = len(json.loads((cwd / LUT).read_text())["entries"]) if (cwd / LUT).exists() else 0
        out = cwd / "out"
        before = machine()
        args = ["--latency-ms", a.budget_ms, *(["--quick"] if mode == "quick" else []), *a.search_args.split()]
        run = search(out, args, rerun=True, cwd=cwd)
        picks = read_csv(out / "picks.csv")
        state = json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}
        res[mode] = {"command": "hwnat search " + " ".join(map(str, args)),
                     "rc": run["rc"], "wall_s": run["wall_s"], "target_s": TARGET_S[mode],
                     "within_target": run["rc"] == 0 and run["wall_s"] <= TARGET_S[mode],
                     "table_entries_before": lut_before, "machine_before": before, "machine_after": machine(),
                     "out": str(out), "picks": None if picks is None else picks.to_dict(orient="records"),
                     "settings": state.get("settings")}
        print(f"{res[mode]['command']}: exit {run['rc']}, {run['wall_s']:.0f} s (target <= {TARGET_S[mode]:.0f} s), "
              f"load average before {before['load_average']}, after {res[mode]['machine_after']['load_average']}"
              + f"; {lut_before} latency table entries there before", flush=True)
    path = save("time", {"runs": res})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
