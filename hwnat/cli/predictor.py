"""``hwnat predictor``: fit, apply, evaluate latency predictors and choose which archs to measure.

The verbs and options of ``fit`` and ``predict`` are a contract (DESIGN.md, "Predictor CLI contract").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from hwnat.cli._common import echo_json, err, json_option, space_option

log = logging.getLogger(__name__)

threads_option = click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
                              help="XGBoost threads.")


@click.group()
def predictor() -> None:
    """Learned latency predictors (XGBoost; few-shot transfer from a library of devices).

    \b
    Example:
      hwnat predictor fit --space nasbench201 --data pixel3_10.csv --target pixel3 \\
          --library library.csv --out pixel3.json
    """


@predictor.command()
@space_option
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training CSV: an `arch` column and the --target column of measured ms.")
@click.option("--target", required=True, help="Column of TRAIN.csv with the measured latency (ms).")
@click.option("--library", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV of other devices: `arch` and one column of ms per device (few-shot transfer source); "
                   "default: the library that ships for the space (`hwnat predictor library list`).")
@click.option("--no-library", is_flag=True, help="Fit on the target's samples alone (no transfer).")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Latency table (LUT) of this device; default: latency_tables/<target>/<space>.json if it "
                   "exists.")
@click.option("--no-table", is_flag=True, help="Do not use a latency table even if one exists.")
@click.option("--coverage", type=click.FloatRange(0.5, 0.999), default=0.9, show_default=True,
              help="Central interval coverage.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of folds and XGBoost sampling.")
@threads_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (JSON).")
@json_option
def fit(space, data, target, library, no_library, table, no_table, coverage, seed, threads, out, as_json) -> None:
    """Fit a latency predictor of one device and write it as one JSON file.

    The library (other devices' latencies of many architectures; by default the published dataset that
    ships for the space, less the target's own column) gives the main features (few-shot transfer: 10
    measured samples are a supported case). A latency table of the device adds
    the table sum and per-stage sums; cross-validation then picks residual-over-table or log-latency.
    The library's models are fitted once and kept in ~/.cache/hwnat (or $HWNAT_CACHE) for the next fit.

    \b
    Example:
      hwnat predictor fit --space fbnet --data train.csv --target gold_6240 --out gold.json
    """
    from hwnat.latency.features import ArchFeatures
    from hwnat.latency.library import fit_library, read_library
    from hwnat.latency.predictor import FitSettings, LatencyPredictor, read_latency_csv
    from hwnat.latency.table import LatencyTable, find_table
    from hwnat.spaces import get_space

    if library is not None and no_library:
        raise click.UsageError("--library and --no-library exclude each other")
    sp = get_space(space)
    archs, y, _ = read_latency_csv(data, [target], what="training data")
    ArchFeatures(sp).genomes(archs, str(data))  # a bad arch fails here, before any library is fitted
    lut = None
    if not no_table:
        path = table or find_table(target, sp.name)
        if path is not None:
            lut = LatencyTable.load(path, space=sp.name)
            err(f"using latency table {path}")
    elif table is not None:
        raise click.UsageError("--table and --no-table exclude each other")
    lib = None
    if not no_library:
        lib_data = read_library(sp.name, library, target=target)
        err(f"library {lib_data.source}{' (shipped)' if library is None else ''}: "
            f"{len(lib_data.devices)} device(s) on {len(lib_data.archs)} archs"
            + (f"; left out: {', '.join(lib_data.left_out)} (the target)" if lib_data.left_out else ""))
        lib = fit_library(sp, lib_data, nthread=threads, seed=seed)
    model = LatencyPredictor.fit(sp, archs, y[:, 0], target=target, library=lib, table=lut,
                                 settings=FitSettings(coverage=coverage, nthread=threads, seed=seed),
                                 source=str(data))
    model.save(out)
    cv = model.meta["cv"]
    summary = {"model": str(out), "space": sp.name, "target": target, "n": len(archs), "mode": model.mode,
               "library_devices": model.library.devices if model.library else [],
               "table": lut is not None, "interval_coverage": coverage,
               "interval_half_width_pct": 100.0 * (math.exp(model.interval["half_width_log"]) - 1.0),
               "cv": cv["metrics"]}
    if as_json:
        echo_json(summary)
    else:
        m = cv["metrics"]
        click.echo(f"wrote {out}: {sp.name} on {target}, {len(archs)} samples, mode {model.mode}"
                   + (f", library {','.join(summary['library_devices'])}" if summary["library_devices"] else ""))
        click.echo(f"cross-validated: Spearman {m['spearman']:.3f}, within 10% {100 * m['acc10']:.1f}%, "
                   f"MAPE {m['mape_pct']:.2f}%; {100 * coverage:.0f}% interval +-"
                   f"{summary['interval_half_width_pct']:.1f}%")


@predictor.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file written by `hwnat predictor fit`.")
@click.option("--archs", "archs_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with an `arch` column.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write: arch,latency_ms,latency_ms_lo,latency_ms_hi.")
@click.option("--space", "-s", "space", default=None, help="Refuse a model of any other space.")
@threads_option
def predict(model_path, archs_path, out, space, threads) -> None:
    """Predict the latency (ms) and its central interval for every arch of a CSV.

    \b
    Example:
      hwnat predictor predict --model gold.json --archs candidates.csv --out pred.csv
    """
    import numpy as np
    import pandas as pd

    from hwnat._io import write_atomic
    from hwnat.latency.predictor import LatencyPredictor, read_archs_csv

    model = LatencyPredictor.load(model_path, space=space, nthread=threads)
    archs = read_archs_csv(archs_path)
    p, lo, hi = model.predict(archs, str(archs_path))
    df = pd.DataFrame({"arch": archs, "latency_ms": np.round(p, 6), "latency_ms_lo": np.round(lo, 6),
                       "latency_ms_hi": np.round(hi, 6)})
    write_atomic(Path(out), df.to_csv(index=False).encode())
    cov = model.interval.get("coverage")
    err(f"wrote {out}: {len(archs)} predictions"
        + (f" with {100 * cov:.0f}% intervals" if cov else ""))


@predictor.command(name="eval")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file written by `hwnat predictor fit`.")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Test CSV: `arch` and the --target column of measured ms.")
@click.option("--target", required=True, help="Column of TEST.csv with the measured latency (ms).")
@click.option("--space", "-s", "space", default=None, help="Refuse a model of any other space.")
@click.option("--trim", type=click.FloatRange(0.0, 0.45), default=0.0, show_default=True,
              help="Drop this fraction of the lowest and of the highest measured latencies first (HELP: 0.1).")
@threads_option
@json_option
def eval_(model_path, data, target, space, trim, threads, as_json) -> None:
    """Compare predictions with measured latencies: RMSE, MAPE, +-5/10/15% accuracy, Spearman,
    Kendall, interval coverage.

    \b
    Example:
      hwnat predictor eval --model gold.json --data test.csv --target gold_6240 --json
    """
    import numpy as np

    from hwnat.latency import metrics
    from hwnat.latency.predictor import LatencyPredictor, read_latency_csv

    model = LatencyPredictor.load(model_path, space=space, nthread=threads)
    archs, y, _ = read_latency_csv(data, [target], what="test data")
    p, lo, hi = model.predict(archs, str(data))
    y = y[:, 0]
    keep = metrics.trim_middle(y, trim) if trim > 0 else np.ones(len(y), dtype=bool)
    res = metrics.summary(p[keep], y[keep], lo[keep], hi[keep])
    res["interval_stated"] = model.interval.get("coverage")
    if as_json:
        echo_json(res)
        return
    click.echo(f"{model_path} on {data} ({res['n']} archs{f', trimmed {trim:g}' if trim else ''}):")
    click.echo(f"  RMSE {res['rmse_ms']:.4f} ms  MAPE {res['mape_pct']:.2f}%")
    click.echo(f"  within 5/10/15%: {100 * res['acc5']:.1f}% / {100 * res['acc10']:.1f}% / {100 * res['acc15']:.1f}%")
    click.echo(f"  Spearman {res['spearman']:.4f}  Kendall {res['kendall']:.4f}")
    if res.get("interval_stated"):
        click.echo(f"  {100 * res['interval_stated']:.0f}% interval covers {100 * res['coverage']:.1f}% "
                   f"(mean width {res['interval_width_pct']:.1f}% of the prediction)")


@predictor.command()
@space_option
@click.option("--library", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV of known devices (`arch` + ms columns); the picks come from its archs.")
@click.option("-k", "k", required=True, type=click.IntRange(1, None), help="How many archs to measure.")
@click.option("--pool", type=click.IntRange(1, None), default=20000, show_default=True,
              help="Without --library: candidates sampled from the space.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled pool.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write with an `arch` column (measure these on the new device).")
def suggest(space, library, k, pool, seed, out) -> None:
    """Choose k archs to measure on a new device so that they inform a transfer predictor the most
    (greedy D-optimal design on the first principal components of the library devices' log-latencies,
    among archs of typical latency; without a library, on analytic FLOPs, parameters and per-stage
    activation memory of a sampled pool).

    \b
    Example:
      hwnat predictor suggest --space nasbench201 --library library.csv -k 10 --out measure_these.csv
    """
    import numpy as np
    import pandas as pd

    from hwnat._io import write_atomic
    from hwnat.errors import BadInputError
    from hwnat.latency.features import ArchFeatures
    from hwnat.latency.predictor import read_latency_csv
    from hwnat.latency.transfer import choose
    from hwnat.spaces import get_space

    sp = get_space(space)
    fx = ArchFeatures(sp)
    if library is not None:
        archs, ms, _ = read_latency_csv(library, None, what="library")
        fx.genomes(archs, str(library))  # every pick must parse
        # one row per distinct arch
        _, first = np.unique(np.asarray(archs, dtype=object), return_index=True)
        first = np.sort(first)
        archs, ms = [archs[i] for i in first], ms[first]
        embed, extra = np.log(ms), None
    else:
        g = np.unique(sp.sample_genomes(np.random.default_rng(seed), pool), axis=0)
        X = fx.transform(g)
        names = fx.names
        extra = X[:, [names.index(c) for c in ["flops_m", "params_m"]
                      + [n for n in names if n.startswith("act_k_stage")]]]
        embed = np.zeros((len(g), 0))
        archs = [sp.format(sp.decode(x)) for x in g]
    if k > len(archs):
        raise BadInputError(f"-k {k} exceeds the {len(archs)} candidate archs"
                            + (f" of {library}" if library else ""))
    idx = choose(embed, k, extra)
    write_atomic(Path(out), pd.DataFrame({"arch": [archs[i] for i in idx]}).to_csv(index=False).encode())
    err(f"wrote {out}: {k} archs to measure")


@predictor.group(name="library")
def library_group() -> None:
    """Libraries of known devices (few-shot transfer sources) that ship with hwnat.

    \b
    Example:
      hwnat predictor library list
    """


@library_group.command(name="list")
@json_option
def library_list(as_json) -> None:
    """Show the libraries that ship: space, devices, rows, file (the default --library of `fit`).

    \b
    Example:
      hwnat predictor library list --json
    """
    from hwnat.latency.library import shipped_libraries

    libs = shipped_libraries()
    if as_json:
        echo_json([{"space": lib.space, "devices": list(lib.devices), "rows": lib.rows, "file": str(lib.file)}
                   for lib in libs])
        return
    for lib in libs:
        click.echo(f"{lib.space}\t{len(lib.devices)} devices\t{lib.rows} rows\t{lib.file}")
        click.echo(f"\t{', '.join(lib.devices)}")
