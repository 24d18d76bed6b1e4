"""``hwnat mtl search | prune``: MTL-NAS fusion search with minimum-entropy gates and latency-aware pruning."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hwnat.cli._common import device_option, err
from hwnat.cli._progress import progress_bar

budget_option = click.option("--latency-ms", "budget_ms", type=float, default=None,
                             help="Latency budget (ms) on the device; the pruned network must measure within it.")
table_option = click.option("--table", type=click.Path(dir_okay=False, path_type=Path), default=None,
                            help="Latency table of mtl-vgg on the device [default: latency_tables/<device>/"
                                 "mtl-vgg.json; missing blocks are profiled first].")
out_option = click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
                          help="Output directory (rerun the same command to resume).")
no_sweep_option = click.option("--no-sweep", is_flag=True,
                               help="Skip the sweep of 5 budgets for the accuracy-vs-latency plot.")


@click.group()
def mtl() -> None:
    """MTL-NAS: search cross-task fusion edges, prune them to a device latency budget.

    \b
    Example:
      hwnat mtl search --latency-ms 0.9 --out runs/mtl
      hwnat mtl prune --model runs/mtl/searched.pt --latency-ms 0.8 --out runs/mtl_0.8
    """


def _summary(report: dict) -> None:
    """Key numbers on stderr; the full report is in the output directory."""
    acc = report.get("accuracy", {})
    for key in ("single_task", "all_edges", "searched", "pruned"):
        if key in acc:
            shown = " ".join(f"{100 * a:.1f}%" for a in acc[key])
            err(f"{key:>12}: accuracy {shown}  latency {report['latency_ms'].get(key, float('nan')):.4g} ms")
    if "budget_ms" in report:
        err(f"budget {report['budget_ms']:g} ms: predicted {report['predicted_ms']:.4g} ms, measured "
            f"{report['measured_ms']:.4g} ms (masked network: {report['masked_ms']:.4g} ms)")


@mtl.command("search")
@click.option("--task", "-t", default="multimnist", show_default=True,
              help="'multimnist' (built in) or a .npz with x and one label array per task.")
@device_option
@budget_option
@click.option("--quick", is_flag=True, help="Small data (4,000 training pairs) and 2 epochs: a smoke run.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs of the search and of each baseline [default: 4, --quick: 2].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data splits, weights and gates.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads for training [default: every core; 1 on a machine other jobs load].")
@table_option
@no_sweep_option
@out_option
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_context
def search(ctx, task, device, budget_ms, quick, epochs, seed, threads, table, no_sweep, out, as_json):
    """Train single-task and all-edges baselines, search the fusion gates, and (with --latency-ms)
    prune the searched network to the budget, export it and measure it on the device.

    Writes OUT/searched.pt, edges.json, report.json, report.md and plots; with a budget also
    pruned.onnx and pruned.pt. Exits 1 when the pruned network measures over the budget.

    \b
    Example:
      hwnat mtl search --latency-ms 0.9 --device cpu --out runs/mtl
    """
    from hwnat.mtl.pipeline import EPOCHS, QUICK_EPOCHS, run_search
    from hwnat.mtl.search import SearchSettings

    settings = SearchSettings(epochs=epochs or (QUICK_EPOCHS if quick else EPOCHS), seed=seed)
    with progress_bar("mtl search", enabled=ctx.find_root().params.get("quiet") is not True) as bar:
        report = run_search(task=task, device=device, budget_ms=budget_ms, out=out, quick=quick, seed=seed,
                            settings=settings, table=table, progress=bar, sweep=not no_sweep, threads=threads)
    _summary(report)
    err(f"wrote {out}/report.md")
    if as_json:
        click.echo(json.dumps(report, indent=1))


@mtl.command("prune")
@click.option("--model", "-m", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="searched.pt written by `hwnat mtl search`.")
@click.option("--latency-ms", "budget_ms", type=float, required=True, help="Latency budget (ms) on the device.")
@device_option
@table_option
@no_sweep_option
@out_option
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_context
def prune(ctx, model, budget_ms, device, table, no_sweep, out, as_json):
    """Prune a searched network to a latency budget: exact knapsack over its edges, physical rebuild,
    ONNX export (OUT/pruned.onnx) and measurement on the device. Exits 1 when it measures over budget.

    \b
    Example:
      hwnat mtl prune --model runs/mtl/searched.pt --latency-ms 0.8 --device cpu --out runs/mtl_0.8
    """
    from hwnat.mtl.pipeline import run_prune

    with progress_bar("mtl prune", enabled=ctx.find_root().params.get("quiet") is not True) as bar:
        report = run_prune(model, budget_ms, device=device, out=out, table=table, progress=bar,
                           sweep=not no_sweep)
    _summary(report)
    err(f"wrote {out}/report.md")
    if as_json:
        click.echo(json.dumps(report, indent=1))
