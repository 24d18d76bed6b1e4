"""Reports of an MTL-NAS search or pruning: ``edges.json``, ``report.json``, ``report.md`` and two plots
(accuracy vs measured latency over a sweep of budgets; gate values over training).

Numbers stay numbers in the JSON files (ms, accuracy as a fraction); formatting happens only in the
markdown table. Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic

#: rows of the accuracy table: (report key, what it is)
NETWORKS = (
    ("single_task", "single-task backbones (no fusion), trained alone"),
    ("all_edges", "all edges, trained with every gate at 1"),
    ("searched", "searched (gates discretised at 0.5, no retraining)"),
    ("pruned", "pruned to the budget (physically rebuilt)"),
)


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if hasattr(o, "tolist"):  # torch tensors
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_plain(obj):
    """The same data as plain JSON types (lists, floats, ...)."""
    return json.loads(json.dumps(obj, default=_plain))


def write_json(path: Path, obj) -> Path:
    """Pretty JSON, atomically."""
    write_atomic(Path(path), (json.dumps(obj, indent=1, default=_plain) + "\n").encode())
    return Path(path)


def write_edges(path: Path, space, gates: np.ndarray, costs, kept: np.ndarray | None) -> Path:
    """``edges.json``: every candidate edge with its final gate, predicted cost (ms) and whether it is kept."""
    rows = []
    for n, e in enumerate(space.edges()):
        rows.append({"edge": str(e), "src_task": e.src_task, "src_layer": e.src_layer, "dst_task": e.dst_task,
                     "dst_layer": e.dst_layer, "gate": float(gates[n]), "searched": bool(gates[n] >= 0.5),
                     "cost_ms": float(costs.cost_ms[n]), "table_cost_ms": float(costs.table_cost_ms[n]),
                     "kept": None if kept is None else bool(kept[n])})
    return write_json(path, {"base_ms": costs.base_ms, "table_base_ms": costs.table_base_ms, "edges": rows})


def write_report(out: Path, report: dict, searched: dict) -> None:
    """``report.json``, ``report.md`` and the plots ``accuracy_vs_latency.png`` and ``gates.png``."""
    out = Path(out)
    plots = {}
    if plot_accuracy_vs_latency(out / "accuracy_vs_latency.png", report):
        plots["accuracy_vs_latency"] = "accuracy_vs_latency.png"
    hist = searched.get("gate_history")
    if hist is not None and len(hist):
        plot_gates(out / "gates.png", np.asarray(searched["history_epochs"]), np.asarray(hist))
        plots["gates"] = "gates.png"
    report["plots"] = plots
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", markdown(report).encode())


def _mean(a) -> float:
    return float(np.mean(a)) if a is not None and len(a) else float("nan")


def markdown(report: dict) -> str:
    """The human-readable report."""
    acc, lat = report.get("accuracy", {}), report.get("latency_ms", {})
    tasks = report.get("tasks") or []
    lines = [f"# MTL-NAS: {report['space']} on {report['task']}, device `{report['device']}`", ""]
    if "budget_ms" in report:
        ok = "within" if report["within_budget"] else "**over**"
        lines += [f"Budget **{report['budget_ms']:.4g} ms**: pruned network predicted "
                  f"{report['predicted_ms']:.4g} ms (table alone {report['table_ms']:.4g} ms), measured "
                  f"**{report['measured_ms']:.4g} ms** ({ok} the budget); the same network with the dropped "
                  f"edges only masked (multiplied by zero) measures {report['masked_ms']:.4g} ms. Kept "
                  f"{report['kept_edges']} of {report['n_edges']} edges: `{report['arch']}`.", ""]
    lines += [f"No fusion edge: {report['no_fusion_ms']:.4g} ms; all {report['n_edges']} edges: "
              f"{report['all_edges_ms']:.4g} ms (measured).", ""]
    head = "| network | measured ms | " + " | ".join(f"acc {t}" for t in tasks) + " | mean |"
    lines += [head, "|" + "---|" * (3 + len(tasks))]
    for key, what in NETWORKS:
        if key in acc:
            a = acc[key]
            ms = lat.get(key)
            ms_s = f"{ms:.4g}" if ms is not None else "-"
            lines.append(f"| {what} | {ms_s} | " + " | ".join(f"{100 * v:.1f}%" for v in a)
                         + f" | {100 * _mean(a):.1f}% |")
    if "searched_relaxed" in acc and "searched" in acc:
        d = _mean(acc["searched"]) - _mean(acc["searched_relaxed"])
        lines += ["", f"Gates within 0.05 of 0 or 1: {100 * report['gates_near_binary']:.1f}%. Mean accuracy "
                      f"with the continuous gates {100 * _mean(acc['searched_relaxed']):.2f}%, discretised "
                      f"{100 * _mean(acc['searched']):.2f}% (change {100 * d:+.2f} points)."]
    else:
        lines += ["", f"Gates within 0.05 of 0 or 1: {100 * report['gates_near_binary']:.1f}%."]
    lines += ["", f"Searched network: `{report['searched_arch']}` (predicted {report['searched_predicted_ms']:.4g} "
                  f"ms, measured {report['searched_ms']:.4g} ms)."]
    if report.get("sweep"):
        lines += ["", "## Sweep of budgets", "",
                  "| budget ms | kept edges | predicted ms | measured ms | error | mean acc |", "|---|---|---|---|---|---|"]
        for r in report["sweep"]:
            err = 100 * (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
            lines.append(f"| {r['budget_ms']:.4g} | {r['kept_edges']} | {r['predicted_ms']:.4g} | "
                         f"{r['measured_ms']:.4g} | {err:+.1f}% | {100 * _mean(r['accuracy']):.1f}% |")
    plots = report.get("plots", {})
    if plots:
        lines += ["", "## Plots", ""]
        if "accuracy_vs_latency" in plots:
            lines.append("![accuracy vs measured latency](accuracy_vs_latency.png)")
        if "gates" in plots:
            lines.append("![gate values over training](gates.png)")
    lines += ["", f"Latency model: {report.get('latency_model', '')}.", ""]
    phases = report.get("phases") or {}
    if phases:
        lines += ["Time per phase (wall s / CPU s): " + ", ".join(
            f"{k} {v['wall_s']:.0f} / {v['cpu_s']:.0f}" for k, v in phases.items()) + ".", ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_latency(path: Path, report: dict) -> bool:
    """Mean accuracy vs measured latency: the budget sweep and the named networks. False: nothing to plot."""
    acc, lat = report.get("accuracy", {}), report.get("latency_ms", {})
    sweep = report.get("sweep") or []
    if not sweep and not any(k in acc and k in lat for k, _ in NETWORKS):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if sweep:
        ax.plot([r["measured_ms"] for r in sweep], [100 * _mean(r["accuracy"]) for r in sweep], "o-",
                color="tab:blue", label="pruned at a sweep of budgets")
    markers = {"single_task": "s", "all_edges": "^", "searched": "D", "pruned": "*"}
    for key, what in NETWORKS:
        if key in acc and key in lat:
            ax.plot([lat[key]], [100 * _mean(acc[key])], markers[key], markersize=9, label=what.split(" (")[0])
    if "budget_ms" in report:
        ax.axvline(report["budget_ms"], color="grey", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel(f"measured latency on {report['device']} (ms)")
    ax.set_ylabel("mean accuracy over tasks (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_gates(path: Path, epochs: np.ndarray, history: np.ndarray) -> None:
    """Every gate ``sigmoid(alpha_e)`` over training (one line per edge)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history, linewidth=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("gate value sigmoid(alpha)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(Path(path), buf.getvalue())
