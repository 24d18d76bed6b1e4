"""A search's human-readable outputs: ``pareto.png`` (accuracy vs latency with the budget line, predicted
and measured picks) and ``report.md`` (settings, sources, constraint activity, surrogate choice and
hypervolume per iteration, picks with predicted vs measured latency, how much of the budget the best pick
uses and whether accuracy could tell a slower network apart)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic


def plot_pareto(search, picks: list[dict], path: Path) -> Path:
    """Accuracy vs latency on the first device: archive, front, picks (predicted o, measured x), budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = next(iter(search.obj.models))
    rows = search.archive.rows
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if rows:
        ax.scatter([r[f"latency_ms_{d}"] for r in rows], [r["accuracy"] for r in rows], s=10, c="0.7",
                   label=f"archive ({len(rows)})")
    front = sorted(search.pareto_rows(), key=lambda r: r[f"latency_ms_{d}"])
    if front:
        ax.plot([r[f"latency_ms_{d}"] for r in front], [r["accuracy"] for r in front], "-", c="C0", lw=1,
                label="front")
    if picks:
        ax.scatter([p[f"latency_ms_{d}"] for p in picks], [p["accuracy"] for p in picks], marker="o",
                   facecolors="none", edgecolors="C1", s=50, label="picks (predicted)")
        meas = [p for p in picks if f"measured_ms_{d}" in p]
        if meas:
            ax.scatter([p[f"measured_ms_{d}"] for p in meas], [p["accuracy"] for p in meas], marker="x",
                       c="C3", s=50, label="picks (measured)")
    b = search.obj.budgets_ms.get(d)
    if b is not None:
        ax.axvline(b, color="k", ls="--", lw=1, label=f"budget {b:g} ms")
    ax.set_xlabel(f"latency on {d} (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{search.space.name}: {search.acc.name}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def constraint_activity(search) -> list[str]:
    """One sentence per budgeted device: never active (every architecture of the space is within budget),
    or how many archived architectures exceed it."""
    lines = []
    for d, b in search.obj.budgets_ms.items():
        e = search.extremes.get(d, {})
        slow = e.get("slowest_ms")
        over = sum(1 for r in search.archive.rows if search.obj.constrained_ms(
            {k: np.asarray([r[k]]) for k in r if k.startswith("latency_ms")}, d)[0] > b)
        if slow is not None and slow <= b:
            lines.append(f"- **{d}: the constraint was never active**: every {search.space.name} architecture is "
                         f"within {b:g} ms on {d} (slowest {slow:.4g} ms by the {e.get('method')}); the budget "
                         f"did not shape this search.")
        else:
            lines.append(f"- {d}: budget {b:g} ms is active: the space spans {e.get('fastest_ms', float('nan')):.4g}"
                         f"..{slow if slow is not None else float('nan'):.4g} ms; {over} of {len(search.archive)} "
                         "archived architectures exceed it.")
    return lines


def noise_band(best: tuple[float, float], others: list[tuple[float, float]], n_val: int) -> dict:
    """The binomial standard error ``sqrt(p (1 - p) / n_val)`` (points) of the best pick's accuracy, and
    the latencies of the ``others`` (``(accuracy %, predicted ms)``) scoring within it (``near``), of those
    slower than the best pick (``near_slower``), and of every slower one (``slower``)."""
    acc, pred_ms = best
    p = min(max(acc / 100.0, 0.0), 1.0)
    se = 100.0 * math.sqrt(p * (1.0 - p) / n_val)
    near = [lat for a, lat in others if a >= acc - se]
    return {"se": se, "near": near, "near_slower": [lat for lat in near if lat > pred_ms],
            "slower": [lat for _, lat in others if lat > pred_ms]}


def budget_use(best: tuple[float, float], budget_ms: float, others: list[tuple[float, float]],
               n_val: int | None, device: str, measured_ms: float | None = None) -> list[str]:
    """What the best pick leaves of the budget, and whether a slower network was measurably more accurate.

    Args:
        best: the best pick's ``(accuracy %, predicted latency ms)`` on ``device``.
        others: ``(accuracy %, predicted latency ms)`` of every other archived architecture within the budget.
        n_val: validation images each accuracy was measured on; None for exact (tabular) accuracies.
        measured_ms: the best pick's latency as measured on the device (the slack is computed from it).

    Returns:
        Markdown lines. With ``n_val``, accuracies within one binomial standard error
        ``sqrt(p (1 - p) / n_val)`` of the best count as indistinguishable from it: when slower
        architectures within the budget are that close, which of them is most accurate is validation
        noise (the slack is the task's flat accuracy, not the search's); when none is, the smaller
        network is measurably better.
        E.g. best (90.0, 5.0), budget 10, others [(89.5, 9.0), (80.0, 3.0)], 1000 images: slack 50%, one
        other architecture within one standard error (0.95 points), slower (9 ms): within the noise.
    """
    acc, pred_ms = best
    ms = pred_ms if measured_ms is None else measured_ms
    slack = 100.0 * (budget_ms - ms) / budget_ms
    lines = [f"- {device}: the best pick runs in {ms:.4g} ms ({'predicted' if measured_ms is None else 'measured'}) "
             f"of the {budget_ms:g} ms budget: slack {slack:.1f}%."]
    if not n_val:
        return lines
    band = noise_band(best, others, n_val)
    se, near, near_slower, slower = band["se"], band["near"], band["near_slower"], band["slower"]
    if near:
        n = len(near)
        lines.append(f"- {n} other archived architecture{'s' if n != 1 else ''} within the budget "
                     f"score{'' if n != 1 else 's'} within one standard error of it ({se:.2g} points at "
                     f"{n_val} validation images), predicted at {min(near):.3g}..{max(near):.3g} ms.")
    if near_slower:
        lines.append(f"- {len(near_slower)} of them {'is' if len(near_slower) == 1 else 'are'} slower (up to "
                     f"{max(near_slower):.3g} ms): which is most accurate is within the validation noise.")
        if slack > 10:
            lines.append("- If accuracy should grow with size on this task, more warm-up (`--warmup-epochs`, "
                         "`--max-train`) and a larger validation split (`--max-val`) let the search tell the "
                         "larger networks apart.")
    elif slower:
        who = "The one slower architecture" if len(slower) == 1 else f"Each of the {len(slower)} slower architectures"
        lines.append(f"- {who} within the budget scores more than one standard error below it: on this task "
                     "the smaller network is measurably better.")
    return lines


def write_report(search, picks: list[dict], path: Path, verified: bool, wall_s: float, extra: dict | None = None) -> Path:
    """``report.md`` of a finished search."""
    s = search.s
    conf = f", constraint on the upper bound at confidence {s.confidence}" if s.confidence is not None else ""
    L = [f"# hwnat search: {s.space}", "",
         f"- accuracy source: `{search.acc.name}`" + (f" (proxy scale {s.proxy_scale})" if s.proxy_scale != 1 else ""),
         f"- objectives: {', '.join(search.obj.names)}",
         f"- budgets: {', '.join(f'{d} <= {b:g} ms' for d, b in s.budgets_ms.items())}{conf}",
         f"- latency models: {', '.join(f'{d}: {m.kind}' for d, m in search.obj.models.items())}",
         f"- initial archive {s.initial}, {s.iterations} iterations x {s.candidates} candidates, NSGA-III "
         f"population {s.pop_size} x {s.generations} generations, seed {s.seed}",
         f"- archive: {len(search.archive)} evaluated architectures; wall time of this run {wall_s:.0f} s"]
    for k, v in (extra or {}).items():
        L.append(f"- {k}: {v}")
    L += ["", "## Latency constraint", ""] + constraint_activity(search)
    for d, e in search.extremes.items():
        L.append(f"- {d}: fastest {e['fastest_ms']:.4g} ms, slowest {e['slowest_ms']:.4g} ms ({e['method']})")
    L += ["", "## Iterations", "",
          "| iteration | surrogate | Kendall tau (cv) of each | archive | feasible | front | best feasible acc. | "
          "hypervolume | adapted | seconds (propose / evaluate / adapt+re-evaluate) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    ini = search.front.get("initial")
    if ini:
        L.append(f"| 0 (initial) | - | - | {ini['archive_size']} | {ini['feasible']} | {ini['front_size']} | "
                 f"{_num(ini['best_feasible_accuracy'])} | {ini['hypervolume']:.4g} | - | "
                 f"- / {ini.get('evaluate_s', '-')} / - |")
    for h in search.history:
        taus = ", ".join(f"{k} {v:.3f}" for k, v in h["taus"].items())
        L.append(f"| {h['iteration']} | **{h['surrogate']}** | {taus} | {h.get('archive_size', '')} | "
                 f"{h.get('feasible', '')} | {h.get('front_size', '')} | {_num(h.get('best_feasible_accuracy'))} | "
                 f"{h.get('hypervolume', float('nan')):.4g} | {h.get('adapted', '-')} | "
                 f"{h.get('propose_s', '-')} / {h.get('evaluate_s', '-')} / {h.get('adapt_s', '-')} |")
    d0 = next(iter(search.obj.models))
    L += ["", "## Picks", ""]
    if not picks:
        L.append("No archived architecture is predicted within the budget.")
    else:
        L.append("The first pick is the most accurate architecture predicted within the budget; the others are "
                 "spread along the feasible front.")
        L.append("")
        head = ["#", "accuracy %"]
        for d in search.obj.models:
            head += [f"predicted ms ({d})"] + (["upper bound ms"] if s.confidence is not None else []) \
                + ([f"measured ms ({d})"] if verified else [])
        head += ["MFLOPs", "within budget (measured)" if verified else "within budget (predicted)", "arch"]
        L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, p in enumerate(picks):
            cells = [str(i), f"{p['accuracy']:.2f}"]
            for d in search.obj.models:
                cells.append(f"{p[f'latency_ms_{d}']:.4g}")
                if s.confidence is not None:
                    cells.append(f"{p[f'latency_ms_hi_{d}']:.4g}")
                if verified:
                    cells.append(f"{p.get(f'measured_ms_{d}', float('nan')):.4g}")
            ok = p.get("within_budget") if verified else p["feasible"]
            cells += [f"{p['flops_m']:.1f}", "yes" if ok else "**no**", f"`{p['arch']}`"]
            L.append("| " + " | ".join(cells) + " |")
        if verified:
            n_ok = sum(bool(p.get("within_budget")) for p in picks)
            errs = [p[f"latency_ms_{d0}"] / p[f"measured_ms_{d0}"] - 1 for p in picks if f"measured_ms_{d0}" in p]
            L += ["", f"Measured on the device: {n_ok} of {len(picks)} picks meet the budget; predicted vs "
                  f"measured on {d0}: mean error {100 * float(np.mean(errs)):+.1f}%, worst "
                  f"{100 * float(np.max(np.abs(errs))):.1f}%."]
        else:
            L += ["", "Not verified on the device (--no-verify): latencies above are the model's."]
        L += ["", "## Budget use", ""]
        best, n_val = picks[0], getattr(search.acc, "n_val", None)
        for d, b in search.obj.budgets_ms.items():
            others = [(r["accuracy"], r[f"latency_ms_{d}"]) for r in search.archive.rows
                      if r["feasible"] and r["arch"] != best["arch"] and r["arch"] not in search.rejected]
            L += budget_use((best["accuracy"], best[f"latency_ms_{d}"]), b, others, n_val, d,
                            best.get(f"measured_ms_{d}") if verified else None)
    L += ["", "Files: archive.csv, pareto.csv, picks.csv, picks/*.onnx, pareto.png, state.json"
          + (", supernet.pt" if (search.out / "supernet.pt").exists() else "") + "."]
    write_atomic(Path(path), ("\n".join(L) + "\n").encode())
    return Path(path)


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"
