"""``hwnat latency`` (table sum of one architecture, optionally measured) and ``hwnat measure`` (many
architectures end to end into a CSV, resumable)."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from hwnat.cli._common import device_option, echo_json, err, json_option, space_option
from hwnat.cli._progress import progress_bar
from hwnat.errors import BadInputError


def read_arch_column(path: Path) -> list[str]:
    """The ``arch`` column of a CSV (error names the file when missing)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "arch" not in reader.fieldnames:
                raise BadInputError(f"{path}: no 'arch' column (found {reader.fieldnames})")
            archs = [row["arch"] for row in reader]
    except OSError as e:
        raise BadInputError(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{path}: not a readable CSV: {e}") from None
    if not archs:
        raise BadInputError(f"{path}: no rows")
    return archs


@click.command()
@device_option
@space_option
@click.option("--arch", "-a", required=True, help="Architecture in the space's canonical string form.")
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Latency table [default: latency_tables/<device>/<space>.json].")
@click.option("--predictor", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Predictor JSON [default: <space>.predictor.json next to the table, when present].")
@click.option("--measure", "do_measure", is_flag=True, help="Also measure the architecture end to end.")
@json_option
def latency(device, space, arch, table, predictor, do_measure, as_json):
    """Latency of one architecture on DEVICE: the table sum, a predictor's estimate where one exists,
    and (with --measure) the measured end-to-end latency.

    \b
    Example:
      hwnat latency --device cpu --space nasbench201 \\
        --arch '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
    """
    from hwnat.devices.spec import load_device
    from hwnat.latency.table import LatencyTable, find_table
    from hwnat.spaces import get_space

    spec = load_device(device)
    sp = get_space(space)
    a = sp.parse(arch)
    path = table or find_table(spec.name, sp.name)
    if path is None:
        raise BadInputError(f"no latency table for {sp.name} on {spec.name}; build one with "
                            f"`hwnat profile --device {device} --space {sp.name}` or pass --table")
    lut = LatencyTable.load(path, space=sp.name, device=spec.name)
    result = {"arch": sp.format(a), "space": sp.name, "device": spec.name, "table": str(path),
              "table_ms": lut.sum(sp, a), "flops_m": sp.flops(a) / 1e6, "params_m": sp.params(a) / 1e6}
    result.update(_predicted(Path(path), sp, a, predictor))
    if do_measure:
        import tempfile

        from hwnat.devices.device import open_device
        from hwnat.latency.profiler import measure_module

        with open_device(spec) as dev, tempfile.TemporaryDirectory() as tmp:
            m = measure_module(dev, sp.build(a), sp.input_shape(a), Path(tmp))
        result.update(measured_ms=m.median_ms, measured_p10_ms=m.p10_ms, measured_p90_ms=m.p90_ms,
                      measured_cv=m.cv, table_error=result["table_ms"] / m.median_ms - 1)
    if as_json:
        echo_json(result)
        return
    click.echo(f"table sum   {result['table_ms']:.3f} ms  ({path})")
    if "predicted_ms" in result:
        lo, hi = result.get("predicted_lo_ms"), result.get("predicted_hi_ms")
        band = f"  [{lo:.3f}, {hi:.3f}] ({result.get('interval')})" if lo is not None else ""
        click.echo(f"predicted   {result['predicted_ms']:.3f} ms{band}  ({result['predictor']})")
    if do_measure:
        click.echo(f"measured    {result['measured_ms']:.3f} ms  (p10 {result['measured_p10_ms']:.3f}, "
                   f"p90 {result['measured_p90_ms']:.3f}); table error {100 * result['table_error']:+.1f}%")
    click.echo(f"FLOPs {result['flops_m']:.1f} M, params {result['params_m']:.2f} M")


def _predicted(table_path: Path, space, arch, model: Path | None) -> dict:
    """The predictor's estimate and interval: ``--predictor`` or, next to the table,
    ``<space>.predictor.json`` (fit it with ``hwnat predictor fit`` on ``<space>.subnets.csv``)."""
    from hwnat.latency.predictor import LatencyPredictor

    path = model or table_path.with_name(f"{space.name}.predictor.json")
    if not path.is_file():
        return {}
    pred = LatencyPredictor.load(path, space=space.name)
    ms, lo, hi = pred.predict_genomes(space.encode(arch)[None, :])
    out = {"predictor": str(path), "predicted_ms": float(ms[0])}
    if pred.interval.get("coverage"):
        out.update(predicted_lo_ms=float(lo[0]), predicted_hi_ms=float(hi[0]),
                   interval=f"{100 * float(pred.interval['coverage']):.0f}% interval")
    return out


@click.command()
@device_option
@space_option
@click.option("--archs", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with an 'arch' column.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Result CSV: arch,latency_ms,p10_ms,p90_ms,cv (appended; reruns resume).")
@click.pass_context
def measure(ctx, device, space, archs, out):
    """Measure many architectures end to end on DEVICE (resumable: finished rows are kept).

    \b
    Example:
      hwnat measure --device cpu --space fbnet --archs archs.csv --out measured.csv
    """
    from hwnat.devices.device import open_device
    from hwnat.latency.profiler import check_resumable, measure_archs
    from hwnat.spaces import get_space

    sp = get_space(space)
    rows = read_arch_column(archs)
    sp.parse_many(rows)
    quiet = ctx.find_root().params.get("quiet", False)
    with open_device(device) as dev, progress_bar("archs", not quiet) as cb:
        check_resumable(out, sp, dev, "stats")  # another device's or a foreign file fails here, untouched
        err(f"measuring {len(rows)} {sp.name} architectures on {dev.name} -> {out}")
        measure_archs(sp, dev, rows, out, columns="stats", progress=cb)
    click.echo(f"{out}: {len(rows)} architectures")
