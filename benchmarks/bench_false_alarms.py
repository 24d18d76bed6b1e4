"""How often does `hwnat bench` cry wolf on a busy machine, how often does it catch a real slowdown, and how
often can it give no verdict at all? Two-run compare against the A/B job, on the same machine, same time.

On the `cpu` device, with the default suite's timing protocol (benchmarks/suites/default.yaml):
  - models: conv stacks (hwnat.bench.synthetic) in F families (widths/resolutions); per family a base
    model `a` and one with 10% more layers `b10` (a real slowdown; its measured ratio is reported);
  - a busy neighbour: with --hog, a process that spins on the last CPU for the whole benchmark (on top of
    whatever else the machine runs: the load average is recorded);
  - P rounds of the loop, each: one A/B job (`run_ab`: baseline suite {f-aa: a, f-ab: a}, candidate suite
    {f-aa: a, f-ab: b10}, --ab-rounds passes), then two ordinary runs (`run_suite` of {f-a, f-b10}); the two
    modes alternate so that both see the same neighbours over the benchmark;
  - A/A: two-run: `a` and `b10` each against itself in the other run of its pair; A/B job: `f-aa`.
    A/B (+10%): two-run: `a` of one run against `b10` of the other (through `compare_results`, entries
    renamed); A/B job: `f-ab`;
  - verdicts with the defaults (threshold 5%, alpha 0.01, per-round medians; two-run: contended rounds
    left out, the load gate on), on both clocks (wall = latency; cpu = process CPU time per call); the
    A/B job with the suite's A/B defaults (ab_rounds pairs of ab_runs calls each), and `bench ab`'s
    default clock (`auto`) is named in the output.

Writes JSON (default benchmarks/results/bench_false_alarms_busy.json) and prints a table.

    python benchmarks/bench_false_alarms.py --hog --pairs 25 --two-run-pairs 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from hwnat.bench.compare import INSUFFICIENT, compare_results, round_values
from hwnat.bench.paired import auto_clock, compare_ab
from hwnat.bench.run import run_ab, run_suite
from hwnat.bench.store import load_ab_result, load_result, result_from_dict
from hwnat.bench.suite import LoadedSuite, Suite, SuiteEntry, load_suite
from hwnat.bench.synthetic import write_conv_stack
from hwnat.measure.fingerprint import cpu_model

#: (channels, resolution, base layers) of each family: ~1, ~3 and ~6 ms on one quiet core
FAMILIES = ((32, 32, 10), (48, 32, 20), (64, 40, 20))
CLOCKS = ("wall", "cpu")


def start_hog() -> subprocess.Popen:
    """A process spinning on the last CPU until killed."""
    last = max(os.sched_getaffinity(0))
    code = f"import os\nos.sched_setaffinity(0, {{{last}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def family_list(args) -> list[tuple[int, int, int]]:
    if args.family:
        return [tuple(int(x) for x in args.family.split(","))]
    return list(FAMILIES[:args.families])


def suite_of(base: Suite, name: str, entries: list[dict], rounds: int, seed: int) -> Suite:
    return base.model_copy(update={"name": name, "rounds": rounds, "seed": seed,
                                   "entries": [SuiteEntry(**e) for e in entries]})


def renamed(res, keep: str, as_name: str):
    """A copy of a two-run result holding only entry `keep`, renamed `as_name`."""
    d = res.model_dump()
    d["entries"] = [{**e, "name": as_name} for e in d["entries"] if e["name"] == keep]
    return result_from_dict(d, res.source)


def mean_or_none(x) -> float | None:
    """The mean, or None (JSON null, not NaN) when nothing was measured."""
    return float(np.mean(x)) if len(x) else None


def median_or_none(x) -> float | None:
    """The median, or None (JSON null, not NaN) when nothing was measured."""
    return float(np.median(x)) if len(x) else None


def tally(verdicts: list[str]) -> dict:
    n = len(verdicts)
    return {"n": n, **{k: sum(v == k for v in verdicts) for k in ("regressed", "improved", "unchanged",
                                                                   INSUFFICIENT)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=25, help="loop rounds: one A/B job each")
    ap.add_argument("--two-run-pairs", type=int, default=None,
                    help="pairs of two runs, in the first loop rounds (default: --pairs)")
    ap.add_argument("--families", type=int, default=1, help="model families (<= 3)")
    ap.add_argument("--family", default=None, metavar="CH,SIZE,LAYERS",
                    help="one family of your own instead (e.g. 32,32,20: +10%% layers is ~+10%% time)")
    ap.add_argument("--no-aa", action="store_true", help="A/B jobs without the A/A control entry")
    ap.add_argument("--aa-only", action="store_true", help="A/B jobs with only the A/A entry")
    ap.add_argument("--protocol", type=json.loads, default={},
                    help='overrides of the default suite\'s protocol, as JSON (e.g. \'{"runs": 20}\')')
    ap.add_argument("--rounds", type=int, default=None, help="passes per two-run run; default: the default suite's")
    ap.add_argument("--ab-rounds", type=int, default=None,
                    help="passes (pairs) per A/B job; default: the default suite's ab_rounds")
    ap.add_argument("--hog", action="store_true", help="spin a process on the last CPU throughout")
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--keep", type=Path, default=None, help="also keep every result JSON here")
    ap.add_argument("--from-dir", type=Path, default=None,
                    help="measure nothing: analyse the result JSONs an earlier run kept (--keep)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "bench_false_alarms_busy.json")
    args = ap.parse_args()

    default = load_suite("default").suite
    default = default.model_copy(update={"protocol": {**default.protocol, **args.protocol}})
    rounds = args.rounds or default.rounds
    args.ab_rounds = args.ab_rounds or default.ab_rounds
    n2 = args.pairs if args.two_run_pairs is None else min(args.two_run_pairs, args.pairs)
    t_all = time.perf_counter()
    if args.from_dir is not None:
        abs_ = [load_ab_result(p) for p in sorted(args.from_dir.glob("ab*.json"))]
        runs = [load_result(p) for p in sorted(args.from_dir.glob("run*.json"))]
        runs = runs[:len(runs) // 2 * 2]
        args.pairs, n2 = len(abs_), len(runs) // 2
        args.ab_rounds = abs_[0].rounds
        rounds = runs[0].rounds if runs else rounds
        fams = sorted({(e.name[:-3], None, None) for e in abs_[0].entries})
        walls = {"ab": [r.wall_s for r in abs_], "run": [r.wall_s for r in runs]}
        loads = [r.load_avg["after"][0] for r in abs_]
    else:
        abs_, runs, fams, walls, loads = measure(args, default, rounds, n2)
    analyse(args, abs_, runs, fams, walls, loads, rounds, n2, default, t_all)


def measure(args, default: Suite, rounds: int, n2: int):
    """The loop: A/B jobs and pairs of two runs, alternating, under the hog when asked."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the hog
    hog = start_hog() if args.hog else None
    loads = []
    try:
        with tempfile.TemporaryDirectory(prefix="hwnat-fa-") as tmp:
            d = Path(tmp)
            fams = []
            for f, (ch, size, base_layers) in enumerate(family_list(args)):
                a = write_conv_stack(d / f"f{f}-a.onnx", base_layers, channels=ch, size=size)
                b = write_conv_stack(d / f"f{f}-b10.onnx", int(round(base_layers * 1.1)), channels=ch, size=size)
                fams.append((f"f{f}", str(a), str(b)))
            two_run = [{"name": f"{f}-a", "model": a} for f, a, _ in fams] + \
                      [{"name": f"{f}-b10", "model": b} for f, _, b in fams]
            ab_base = [{"name": f"{f}-{k}", "model": a} for f, a, _ in fams
                       for k in ("aa", "ab") if not (args.no_aa and k == "aa" or args.aa_only and k == "ab")]
            ab_cand = ([] if args.no_aa else [{"name": f"{f}-aa", "model": a} for f, a, _ in fams]) + \
                      ([] if args.aa_only else [{"name": f"{f}-ab", "model": b} for f, _, b in fams])
            runs, abs_, walls = [], [], {"ab": [], "run": []}
            for i in range(args.pairs):
                t0 = time.perf_counter()
                ab = run_ab(LoadedSuite(suite=suite_of(default, "ab", ab_base, args.ab_rounds, i), path=d / "b.yaml"),
                            LoadedSuite(suite=suite_of(default, "ab", ab_cand, args.ab_rounds, i), path=d / "c.yaml"),
                            rounds=args.ab_rounds, commit="bench",
                            out=args.keep / f"ab{i:02d}.json" if args.keep else None)
                walls["ab"].append(time.perf_counter() - t0)
                abs_.append(ab)
                for j in (2 * i, 2 * i + 1) if i < n2 else ():
                    t0 = time.perf_counter()
                    r = run_suite(LoadedSuite(suite=suite_of(default, "two-run", two_run, rounds, 1000 + j),
                                              path=d / "s.yaml"),
                                  commit="bench", out=args.keep / f"run{j:02d}.json" if args.keep else None)
                    walls["run"].append(time.perf_counter() - t0)
                    runs.append(r)
                loads.append(os.getloadavg()[0])
                msg = f"loop {i + 1}/{args.pairs}: A/B job {walls['ab'][-1]:.0f} s"
                if i < n2:
                    cont = sum(len(e.contended_rounds()) for r in runs[-2:] for e in r.entries)
                    msg += (f", runs {walls['run'][-2]:.0f}+{walls['run'][-1]:.0f} s, {cont}/"
                            f"{sum(len(e.rounds_ms) for r in runs[-2:] for e in r.entries)} two-run rounds contended")
                print(f"{msg}, load {loads[-1]:.1f}", flush=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return abs_, runs, fams, walls, loads


def analyse(args, abs_, runs, fams, walls, loads, rounds, n2, default, t_all) -> None:
    kw = dict(threshold=args.threshold, alpha=args.alpha)
    out_modes = {}
    for clock in CLOCKS:
        aa2, ab2, aaab, abab = [], [], [], []
        for i in range(n2):
            x, y = runs[2 * i], runs[2 * i + 1]
            aa2 += [e.verdict for e in compare_results(x, y, clock=clock, **kw).entries]
            for f, _, _ in fams:  # a of one run against b10 of the other, both directions in time
                ab2.append(compare_results(renamed(x, f"{f}-a", f), renamed(y, f"{f}-b10", f), clock=clock,
                                           **kw).entries[0].verdict)
                ab2.append(compare_results(renamed(y, f"{f}-a", f), renamed(x, f"{f}-b10", f), clock=clock,
                                           **kw).entries[0].verdict)
        for i in range(args.pairs):
            comp = {e.name: e.verdict for e in compare_ab(abs_[i], clock=clock, **kw).entries}
            aaab += [comp[f"{f}-aa"] for f, _, _ in fams if f"{f}-aa" in comp]
            abab += [comp[f"{f}-ab"] for f, _, _ in fams if f"{f}-ab" in comp]
        out_modes[clock] = {"two-run": {"aa": tally(aa2), "ab10": tally(ab2)},
                            "ab-job": {"aa": tally(aaab), "ab10": tally(abab)}}
    # A/B jobs under other thresholds: how many regressed, how many were significant (p < alpha)
    sweep = {clock: {f"{thr:g}": {kind: {"regressed": 0, "significant": 0, "n": 0} for kind in ("aa", "ab10")}
                     for thr in (0.0, 0.02, 0.05)} for clock in CLOCKS}
    for clock, by_thr in sweep.items():
        for thr, t in by_thr.items():
            for r in abs_:
                for e in compare_ab(r, clock=clock, threshold=float(thr), alpha=args.alpha).entries:
                    c = t["aa" if e.name.endswith("-aa") else "ab10"]
                    c["n"] += 1
                    c["regressed"] += e.verdict == "regressed"
                    c["significant"] += bool(e.significant)

    # the real size of the slowdown: pooled paired ratios of the A/B jobs
    kind = "aa" if args.aa_only or not any(e.name.endswith("-ab") for e in abs_[0].entries) else "ab"
    ratio = {clock: {f: float(np.exp(np.median(np.concatenate([
        np.log(round_values(e.on_clock("candidate", clock), "median") /
               round_values(e.on_clock("baseline", clock), "median"))
        for r in abs_ for e in r.entries if e.name == f"{f}-{kind}"])))) for f, _, _ in fams} for clock in CLOCKS}
    med = {clock: {f: float(np.median([np.median(round_values(e.on_clock("baseline", clock), "median"))
                                       for r in abs_ for e in r.entries if e.name == f"{f}-{kind}"]))
                   for f, _, _ in fams} for clock in CLOCKS}
    infos = [i for r in runs for e in r.entries for i in e.round_info]
    pinfo = [p for r in abs_ for e in r.entries for p in e.pair_info]
    run_s = mean_or_none(walls["run"])
    out = {
        "date": date.today().isoformat(), "cpu": cpu_model(), "logical_cores": os.cpu_count(),
        "python": platform.python_version(), "hog": args.hog,
        "settings": {"threshold": args.threshold, "alpha": args.alpha, "two_run_rounds": rounds,
                     "ab_rounds": args.ab_rounds, "ab_runs": default.ab_runs, "protocol": default.protocol, "pairs": args.pairs,
                     "two_run_pairs": n2,
                     "families": [dict(zip(("channels", "size", "layers"), fam, strict=True))
                                  for fam in family_list(args)[:len(fams)]]},
        "ab_default_clock": sorted({auto_clock(r) for r in abs_}),
        "measured_slowdown": ratio, "median_ms": med, "verdicts": out_modes, "ab_threshold_sweep": sweep,
        "load": {"load_avg_1min": loads, "load_avg_mean": float(np.mean(loads)),
                 "two_run_rounds_contended": sum(bool(i.get("contended")) for i in infos),
                 "two_run_rounds": len(infos),
                 "two_run_wait_frac_median": median_or_none([i.get("wait_frac", 0) for i in infos]),
                 "two_run_busy_frac_median": median_or_none([i.get("busy_frac", 0) for i in infos]),
                 "ab_pairs_unbalanced": sum(p.get("balanced") is False for p in pinfo), "ab_pairs": len(pinfo)},
        "wall": {"ab_job_s_mean": float(np.mean(walls["ab"])), "run_s_mean": run_s,
                 "ab_s_per_entry_pass": float(np.mean(walls["ab"]) / (2 * len(fams)) / args.ab_rounds),
                 "run_s_per_entry_pass": None if run_s is None else run_s / (2 * len(fams)) / rounds},
        "total_wall_s": (time.perf_counter() - t_all if not args.from_dir
                         else float(sum(r.wall_s or 0 for r in [*abs_, *runs]))),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))

    ld = out["load"]
    print(f"\n{out['cpu']} ({out['logical_cores']} CPUs), hog {'on' if args.hog else 'off'}, load average "
          f"{min(loads):.1f}-{max(loads):.1f} (mean {ld['load_avg_mean']:.1f}); {args.pairs} A/B jobs, {n2} pairs of runs; "
          f"two-run: {rounds} passes/run, A/B job: {args.ab_rounds} pairs; threshold {args.threshold:.0%}, "
          f"alpha {args.alpha:g}; `bench ab --clock auto` chose: {', '.join(out['ab_default_clock'])}")
    if ld["two_run_rounds"]:
        print(f"two-run rounds contended: {ld['two_run_rounds_contended']}/{ld['two_run_rounds']} (median "
              f"wait_frac {ld['two_run_wait_frac_median']:.2f}, busy_frac {ld['two_run_busy_frac_median']:.2f})")
    print(f"A/B pairs unbalanced: {ld['ab_pairs_unbalanced']}/{ld['ab_pairs']}")
    for clock in CLOCKS:
        print(f"-- {clock} clock; measured slowdown " +
              ", ".join(f"{f} {r:.3f}x ({med[clock][f]:.2f} ms)" for f, r in ratio[clock].items()))
        print(f"{'mode':<9} {'A/A regressed':>14} {'A/A no verdict':>15} {'+10% caught':>12} {'+10% no verdict':>16}")
        for mode, t in out_modes[clock].items():
            aa, ab = t["aa"], t["ab10"]
            print(f"{mode:<9} {aa['regressed']:>6}/{aa['n']:<7} {aa[INSUFFICIENT]:>7}/{aa['n']:<7} "
                  f"{ab['regressed']:>5}/{ab['n']:<6} {ab[INSUFFICIENT]:>8}/{ab['n']:<7}")
    print("A/B jobs, regressed (significant) at threshold 0 / 2% / 5%: " + "; ".join(
        f"{clock} {kind} " + " / ".join(f"{sweep[clock][t][kind]['regressed']}({sweep[clock][t][kind]['significant']})"
                                        for t in sweep[clock]) + f" of {sweep[clock]['0'][kind]['n']}"
        for clock in CLOCKS for kind in ("aa", "ab10") if sweep[clock]["0"][kind]["n"]))
    w = out["wall"]
    print(f"wall: A/B job {w['ab_job_s_mean']:.0f} s ({w['ab_s_per_entry_pass']:.2f} s per entry-side per pass)"
          + (f", run {w['run_s_mean']:.0f} s ({w['run_s_per_entry_pass']:.2f} s per entry per pass)"
             if w["run_s_mean"] is not None else ""))
    print(f"wrote {args.out} ({out['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
