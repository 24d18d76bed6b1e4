"""How often does `hwnat bench compare` cry wolf, and how often does it catch a real slowdown?

On the `cpu` device, with the timing protocol and rounds of the default suite (benchmarks/suites/default.yaml):
  - models: conv stacks (hwnat.bench.synthetic) in F families (widths/resolutions); per family a base
    model `a` and two heavier models with 10% and 20% more layers (`b10`, `b20`): a real slowdown of
    known size, whose measured ratio is reported (pooled over every run);
  - 2P independent runs of one suite holding all 3F models (each run: interleaved passes, fresh sessions);
    runs are paired (0,1), (2,3), ... and never reused across pairs;
  - A/A: every model against itself in the other run of its pair (3F comparisons per pair);
    A/B: `a` of one run against `b10`/`b20` of the other run, both directions (2F per size per pair);
  - verdicts with the defaults (threshold 5%, alpha 0.01, per-round medians, contended rounds left out),
    and three ablations on the same data: raw samples as the unit, contended rounds kept, and a bare
    "median changed by more than 5%" rule with no test;
  - wall time per entry of the default protocol; with --default-suite, the wall time of running the
    default suite and comparing it with a baseline (run twice: the second run is timed with its compare).

Writes JSON (default benchmarks/results/bench_false_alarms.json) and prints a table.

    python benchmarks/bench_false_alarms.py --pairs 6 --default-suite
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from hwnat.bench.compare import REGRESSED, compare_results, compare_samples, round_values
from hwnat.bench.run import run_suite
from hwnat.bench.store import result_from_dict
from hwnat.bench.suite import LoadedSuite, Suite, load_suite
from hwnat.bench.synthetic import write_conv_stack
from hwnat.measure.fingerprint import cpu_model

#: (channels, resolution, base layers) of each family: ~1, ~3 and ~6 ms on one 2023 Xeon core
FAMILIES = ((32, 32, 10), (48, 32, 20), (64, 40, 20))
VARIANTS = (("a", 1.0), ("b10", 1.1), ("b20", 1.2))


def build_models(d: Path, families) -> list[dict]:
    entries = []
    for f, (ch, size, base) in enumerate(families):
        for v, scale in VARIANTS:
            blocks = int(round(base * scale))
            path = write_conv_stack(d / f"f{f}-{v}.onnx", blocks, channels=ch, size=size)
            entries.append({"name": f"f{f}-{v}", "model": str(path), "blocks": blocks})
    return entries


def units(entry, unit: str, include_contended: bool) -> np.ndarray:
    rounds = entry.rounds_ms if include_contended else entry.clean_rounds_ms()
    if unit == "round":
        return round_values(rounds, "median")
    return np.concatenate([np.asarray(r) for r in rounds]) if rounds else np.array([])


def judge(base, cand, method: str, threshold: float, alpha: float) -> tuple[str, bool]:
    """(verdict, significant) of one comparison with one method."""
    if method == "naive":  # median of all samples moved by more than the threshold: no test at all
        b, c = units(base, "sample", True), units(cand, "sample", True)
        r = np.median(c) / np.median(b) - 1
        return (REGRESSED if r > threshold else ("improved" if r < -threshold else "unchanged")), abs(r) > threshold
    unit, incl = {"default": ("round", False), "raw-samples": ("sample", False),
                  "with-contended": ("round", True)}[method]
    e = compare_samples("x", units(base, unit, incl), units(cand, unit, incl), threshold=threshold, alpha=alpha)
    return e.verdict, e.significant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=6, help="independent run pairs (2 runs each)")
    ap.add_argument("--families", type=int, default=3, help="model families (<= 3)")
    ap.add_argument("--rounds", type=int, default=None, help="passes per run; default: the default suite's")
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--default-suite", action="store_true", help="also time the default suite run + compare")
    ap.add_argument("--keep", type=Path, default=None, help="also keep every run's result JSON here")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_false_alarms.json")
    args = ap.parse_args()

    default = load_suite("default").suite
    rounds = args.rounds or default.rounds
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hwnat-fa-") as tmp:
        d = Path(tmp)
        models = build_models(d, FAMILIES[:args.families])
        suite = Suite(name="false-alarms", device="cpu", rounds=rounds, protocol=default.protocol,
                      shuffle=True, cooldown_s=default.cooldown_s, max_wait_frac=default.max_wait_frac,
                      contention_retries=default.contention_retries,
                      contention_backoff_s=default.contention_backoff_s,
                      entries=[{"name": m["name"], "model": m["model"]} for m in models])
        results, walls = [], []
        for i in range(2 * args.pairs):
            s = suite.model_copy(update={"seed": i})
            t0 = time.perf_counter()
            keep = args.keep / f"run{i:02d}.json" if args.keep else None
            res = run_suite(LoadedSuite(suite=s, path=d / "suite.yaml"), commit="bench", out=keep)
            walls.append(time.perf_counter() - t0)
            results.append(res)
            cont = sum(len(e.contended_rounds()) for e in res.entries)
            print(f"run {i + 1}/{2 * args.pairs}: {walls[-1]:.1f} s, {cont} of "
                  f"{sum(len(e.rounds_ms) for e in res.entries)} rounds contended", flush=True)

        # ---- the real size of the slowdowns, pooled over all runs
        fam = sorted({m["name"].split("-")[0] for m in models})
        pooled = {m["name"]: np.median(np.concatenate([units(r.entries[k], "round", False) for r in results]))
                  for k, m in enumerate(models)}
        ratios = {f: {v: float(pooled[f"{f}-{v}"] / pooled[f"{f}-a"]) for v, _ in VARIANTS[1:]} for f in fam}

        # ---- comparisons: disjoint run pairs (independent), and every ordered pair of runs (more
        # comparisons, not independent of each other; the rates stay unbiased)
        methods = ("default", "raw-samples", "with-contended", "naive")
        n_runs = len(results)
        byname = [{e.name: e for e in r.entries} for r in results]
        schemes = {"disjoint": [(2 * p, 2 * p + 1) for p in range(args.pairs)],
                   "all": [(i, j) for i in range(n_runs) for j in range(n_runs) if i != j]}
        tallies = {sc: {m: {"aa": [], "aa_sig": [], "b10": [], "b20": []} for m in methods} for sc in schemes}
        suite_alarm = {m: 0 for m in methods}
        for sc, pairs in schemes.items():
            for i, j in pairs:
                x, y = byname[i], byname[j]
                for meth in methods:
                    t = tallies[sc][meth]
                    if sc == "disjoint" or i < j:  # A/A is symmetric: each unordered pair once
                        aa = [judge(x[n], y[n], meth, args.threshold, args.alpha) for n in x]
                        t["aa"] += [v for v, _ in aa]
                        t["aa_sig"] += [sig for _, sig in aa]
                        if sc == "disjoint":
                            suite_alarm[meth] += any(v == REGRESSED for v, _ in aa)
                    for v in ("b10", "b20"):
                        for f in fam:
                            t[v].append(judge(x[f"{f}-a"], y[f"{f}-{v}"], meth, args.threshold, args.alpha)[0])
                            if sc == "disjoint":  # the other direction in time, too
                                t[v].append(judge(y[f"{f}-a"], x[f"{f}-{v}"], meth, args.threshold, args.alpha)[0])

        # cross-check: the library's file-level compare agrees with the per-entry calls on A/A
        c0 = compare_results(result_from_dict(results[0].model_dump()), result_from_dict(results[1].model_dump()),
                             threshold=args.threshold, alpha=args.alpha)
        assert [e.verdict for e in c0.entries] == tallies["disjoint"]["default"]["aa"][:len(models)]

        def rate(vs, what=REGRESSED):
            return {"n": len(vs), "count": sum(v == what for v in vs), "rate": sum(v == what for v in vs) / len(vs)}

        out = {
            "date": date.today().isoformat(), "cpu": cpu_model(), "python": platform.python_version(),
            "settings": {"threshold": args.threshold, "alpha": args.alpha, "rounds": rounds,
                         "protocol": suite.protocol, "pairs": args.pairs, "families": fam,
                         "models": [{k: v for k, v in m.items() if k != "model"} for m in models]},
            "measured_slowdown": ratios,
            "median_ms": {k: float(v) for k, v in pooled.items()},
            "methods": {sc: {m: {"false_alarm": rate(t["aa"]),
                                 "significant_aa": {"n": len(t["aa_sig"]), "count": int(sum(t["aa_sig"])),
                                                    "rate": float(np.mean(t["aa_sig"]))},
                                 "false_improved": rate(t["aa"], "improved"),
                                 "insufficient_aa": rate(t["aa"], "insufficient data"),
                                 "detect_10": rate(t["b10"]), "detect_20": rate(t["b20"]),
                                 "insufficient_ab": rate(t["b10"] + t["b20"], "insufficient data")}
                             for m, t in tallies[sc].items()} for sc in schemes},
            "suite_false_alarm": {m: {"n": args.pairs, "count": suite_alarm[m], "rate": suite_alarm[m] / args.pairs}
                                  for m in methods},
            "wall": {"run_s_mean": float(np.mean(walls)), "entries_per_run": len(models),
                     "per_entry_s": float(np.mean(walls) / len(models)),
                     "per_entry_pass_s": float(np.mean(walls) / len(models) / rounds),
                     "contended_rounds": int(sum(len(e.contended_rounds()) for r in results for e in r.entries)),
                     "rounds_total": int(sum(len(e.rounds_ms) for r in results for e in r.entries)),
                     "load_avg": [r.load_avg for r in results]},
        }

    if args.default_suite:
        with tempfile.TemporaryDirectory(prefix="hwnat-fa-default-") as tmp:
            d = Path(tmp)
            loaded = load_suite("default")
            t0 = time.perf_counter()
            run_suite(loaded, out=d / "base.json")
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_suite(loaded, out=d / "cand.json")
            from hwnat.bench.store import load_result
            comp = compare_results(load_result(d / "base.json"), load_result(d / "cand.json"))
            out["default_suite"] = {"run_s": first, "run_plus_compare_s": time.perf_counter() - t0,
                                    "entries": len(loaded.suite.entries), "rounds": loaded.suite.rounds,
                                    "aa_verdicts": {e.name: e.verdict for e in comp.entries},
                                    "aa_changes": {e.name: e.change for e in comp.entries}}
    out["total_wall_s"] = time.perf_counter() - t_all

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\n{out['cpu']}, {rounds} rounds/run, {args.pairs} run pairs, threshold {args.threshold:.0%}, "
          f"alpha {args.alpha:g}")
    print("measured slowdowns: " + ", ".join(f"{f}: b10 {r['b10']:.3f}x, b20 {r['b20']:.3f}x" for f, r in ratios.items()))
    for sc, label in (("disjoint", "independent run pairs"), ("all", "every pair of runs")):
        print(f"-- {label}")
        print(f"{'method':<15} {'false alarms':>16} {'p<alpha in A/A':>16} {'detect ~10%':>14} {'detect ~20%':>14} "
              f"{'insufficient':>12}")
        for m, r in out["methods"][sc].items():
            fa, sg, d10, d20 = r["false_alarm"], r["significant_aa"], r["detect_10"], r["detect_20"]
            ins = r["insufficient_aa"]["count"] + r["insufficient_ab"]["count"]
            print(f"{m:<15} {fa['count']:>4}/{fa['n']:<4} {fa['rate']:6.1%} {sg['count']:>4}/{sg['n']:<4} {sg['rate']:6.1%} "
                  f"{d10['count']:>3}/{d10['n']:<3} {d10['rate']:6.1%} {d20['count']:>3}/{d20['n']:<3} {d20['rate']:6.1%} "
                  f"{ins:>12}")
    print("suite-level false alarms (any entry of a disjoint pair): " +
          ", ".join(f"{m} {r['count']}/{r['n']}" for m, r in out["suite_false_alarm"].items()))
    w = out["wall"]
    print(f"wall: {w['run_s_mean']:.1f} s per run of {w['entries_per_run']} entries = {w['per_entry_s']:.2f} s per "
          f"entry ({w['per_entry_pass_s']:.3f} s per entry per pass); contended rounds "
          f"{w['contended_rounds']}/{w['rounds_total']}")
    if "default_suite" in out:
        ds = out["default_suite"]
        print(f"default suite ({ds['entries']} entries x {ds['rounds']} rounds): run {ds['run_s']:.1f} s; "
              f"run + compare {ds['run_plus_compare_s']:.1f} s; A/A verdicts: "
              f"{sorted(set(ds['aa_verdicts'].values()))}")
    print(f"wrote {args.out} ({out['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
