"""``hwnat search``: hardware-aware NAS (Neural Architecture Transfer) under device latency budgets."""

from __future__ import annotations

import time
from pathlib import Path

import click

from hwnat.cli._common import err
from hwnat.cli._progress import progress_bar
from hwnat.errors import BadInputError
from hwnat.search.run import FULL, QUICK


def _d(key: str) -> str:
    """``[full default; quick default]`` for a help text."""
    f, q = FULL[key], QUICK[key]
    return f"[{'all' if f is None else f}; quick {q}]"


def _per_device(values: tuple[str, ...], option: str, number: bool = False) -> tuple[dict, object]:
    """``VALUE`` (every device) or ``DEVICE=VALUE`` items -> ({device: value}, value for all or None)."""
    per, common = {}, None
    for v in values:
        dev, sep, val = v.partition("=")
        if not sep or dev.startswith("csv:") or not dev:
            dev, val = None, v
        if number:
            try:
                val = float(val)
            except ValueError:
                raise BadInputError(f"{option} {v!r}: expected a number of ms > 0, or DEVICE=MS") from None
            if not val > 0 or val == float("inf"):
                raise BadInputError(f"{option} {v!r}: expected a number of ms > 0, or DEVICE=MS")
        if dev is None:
            common = val
        else:
            per[dev] = val
    return per, common


def _fill(devices, per: dict, common, option: str) -> dict:
    unknown = [d for d in per if d not in devices]
    if unknown:
        raise BadInputError(f"{option} {unknown[0]}=...: {unknown[0]!r} is not one of the --device values "
                            f"({', '.join(devices)})")
    return {d: per.get(d, common) for d in devices if per.get(d, common) is not None}


@click.command()
@click.option("--space", "-s", default="ofa-mbv3", show_default=True, help="Search space (`hwnat spaces list`).")
@click.option("--device", "-d", "devices", multiple=True, default=("cpu",), show_default=True,
              help="Device (repeatable): one latency objective and budget each. A dataset column name works "
                   "with --latency-model csv:... and --no-verify.")
@click.option("--latency-ms", "budgets", multiple=True, required=True,
              help="Latency budget in ms on every device, or DEVICE=MS per device (repeatable).")
@click.option("--latency-model", "latency_models", multiple=True,
              help="table (default: the device's LUT, profiled if missing) | predictor | measure | "
                   "csv:PATH:COLUMN (PATH empty: the dataset shipped for the space); DEVICE=... per device.")
@click.option("--predictor", "predictors", multiple=True,
              help="Predictor JSON for --latency-model predictor (PATH or DEVICE=PATH).")
@click.option("--confidence", type=float, default=None,
              help="Constrain the predictor's upper bound: the budget holds with this probability (e.g. 0.9).")
@click.option("--objective", "objectives", multiple=True, type=click.Choice(["error", "latency", "flops", "params"]),
              help="Objective (repeatable) [default: error and latency on each device].")
@click.option("--accuracy", default=None,
              help="Accuracy table CSV[:COLUMN] (arch + accuracy columns, percent) [default: the table shipped "
                   "for the space (nasbench201: cifar100_val_12ep), else the ofa-mbv3 supernet on --task].")
@click.option("--task", default="mnist", show_default=True,
              help="Supernet task: mnist | digits | fashion-mnist | a folder of class subfolders or IDX files | "
                   "an .npz with x_train, y_train[, x_val, y_val].")
@click.option("--supernet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this supernet checkpoint instead of warming one up.")
@click.option("--proxy-scale", type=float, default=None,
              help="Supernet train/eval input scale (0.15 on CPU, 1.0 on CUDA); latency is always at full size.")
@click.option("--width", type=click.Choice(["1.0", "1.2"]), default="1.0", show_default=True,
              help="Supernet width multiplier (one supernet per width, as NAT).")
@click.option("--resolution", "-r", "resolutions", type=int, multiple=True,
              help="Restrict the resolutions searched (spaces that search them; ofa-mbv3: 192..256 step 4).")
@click.option("--iterations", type=click.IntRange(min=0), default=None, help=f"NAT iterations {_d('iterations')}.")
@click.option("--initial", type=click.IntRange(min=4), default=None, help=f"Initial archive size {_d('initial')}.")
@click.option("--candidates", type=click.IntRange(min=1), default=None,
              help=f"Architectures evaluated per iteration {_d('candidates')}.")
@click.option("--picks", type=click.IntRange(min=0), default=None,
              help=f"Picks besides the most accurate one, spread along the front {_d('picks')}.")
@click.option("--population", type=click.IntRange(min=4), default=None, help=f"NSGA-III population {_d('pop_size')}.")
@click.option("--generations", type=click.IntRange(min=1), default=None,
              help=f"NSGA-III generations per iteration {_d('generations')}.")
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=None, help=f"Supernet warm-up epochs {_d('warmup_epochs')}.")
@click.option("--max-train", type=click.IntRange(min=1), default=None,
              help=f"Train the supernet on at most this many task images {_d('max_train')}.")
@click.option("--max-val", type=click.IntRange(min=1), default=None,
              help=f"Evaluate subnets on at most this many validation images {_d('max_val')}.")
@click.option("--adapt-steps", type=click.IntRange(min=0), default=None,
              help=f"Supernet fine-tuning steps of each online adaptation (0: none) {_d('adapt_steps')}.")
@click.option("--calibrate", type=click.IntRange(min=0), default=None,
              help=f"Whole networks measured on the device to calibrate a table (0: off) {_d('calibrate')}.")
@click.option("--quick", is_flag=True,
              help="Small settings for a smoke test (ofa-mbv3: one resolution, 224, unless --resolution).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--no-verify", "no_verify", is_flag=True, help="Do not export and measure the picks on the devices.")
@click.option("--torch-device", default="cpu", show_default=True, help="Where the supernet trains (cpu, cuda).")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: runs/search-<timestamp>]; rerun with the same one to resume.")
@click.pass_context
def search(ctx, space, devices, budgets, latency_models, predictors, confidence, objectives, accuracy, task,
           supernet, proxy_scale, width, resolutions, iterations, initial, candidates, picks, population,
           generations, warmup_epochs, max_train, max_val, adapt_steps, calibrate, quick, seed, no_verify, torch_device, out):
    """Search SPACE for accurate architectures within a latency budget on each device (NAT: supernet or
    accuracy table, surrogate, NSGA-III), then export the picks and measure them on the devices.

    Writes OUT/picks.csv (first row: the most accurate architecture predicted within the budget),
    archive.csv, pareto.csv, pareto.png, report.md, picks/*.onnx, state.json and supernet.pt. Exit 1 when
    no pick meets the budget when measured.

    \b
    Examples:
      hwnat search --latency-ms 20 --out runs/mnist20
      hwnat search --space nasbench201 --device cpu --latency-ms 3 --quick --out runs/nb201
    """
    from hwnat.search.run import SearchRequest, run_search

    devices = tuple(dict.fromkeys(devices))
    per, common = _per_device(budgets, "--latency-ms", number=True)
    budgets_ms = _fill(devices, per, common, "--latency-ms")
    per, common = _per_device(latency_models, "--latency-model")
    models = _fill(devices, per, common or "table", "--latency-model")
    per, common = _per_device(predictors, "--predictor")
    preds = _fill(devices, per, common, "--predictor")
    if confidence is not None and not 0.5 <= confidence < 1:
        raise BadInputError(f"--confidence {confidence}: expected a probability in [0.5, 1)")
    out = out or Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")
    overrides = {"iterations": iterations, "initial": initial, "candidates": candidates, "picks": picks,
                 "pop_size": population, "generations": generations, "warmup_epochs": warmup_epochs,
                 "max_train": max_train, "max_val": max_val, "adapt_steps": adapt_steps,
                 "calibrate": calibrate}
    req = SearchRequest(space=space, devices=devices, budgets_ms=budgets_ms, latency_models=models,
                        predictors=preds, confidence=confidence,
                        objectives=tuple(objectives) or ("error", "latency"), accuracy=accuracy, task=task,
                        supernet=str(supernet) if supernet else None, proxy_scale=proxy_scale, width=float(width),
                        resolutions=tuple(resolutions), quick=quick, verify=not no_verify, seed=seed,
                        torch_device=torch_device, out=out, overrides=overrides)
    quiet = ctx.find_root().params.get("quiet", False)
    err(f"search {space} on {', '.join(devices)} -> {out}")
    try:
        result, s = run_search(req, phase=lambda name: progress_bar(name, not quiet))
    except Exception:
        if (Path(out) / "report.md").exists():
            err(f"report: {Path(out) / 'report.md'}")
        raise
    _print_picks(result.picks, s, out)


def _print_picks(picks, s, out: Path) -> None:
    d0 = next(iter(s.obj.models))
    click.echo(f"{out / 'picks.csv'}: {len(picks)} picks ({len(s.archive)} architectures evaluated, "
               f"{result_wall(s)}); report: {out / 'report.md'}")
    for i, p in enumerate(picks):
        meas = p.get(f"measured_ms_{d0}")
        m = f", measured {meas:.3f} ms" if meas is not None else ""
        click.echo(f"  {i}: accuracy {p['accuracy']:.2f}%  predicted {p[f'latency_ms_{d0}']:.3f} ms{m}  {p['arch']}")


def result_wall(s) -> str:
    return f"{s.done_iteration} iterations"
