"""``hwnat profile``: build a device's latency table for a space (resumable), optionally with a dataset of
end-to-end measured random subnets."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from hwnat.cli._common import device_option, err, space_option
from hwnat.cli._progress import progress_bar

log = logging.getLogger(__name__)


def space_with_resolutions(name: str, resolutions: tuple[int, ...]):
    """``get_space`` with ``--resolution`` values applied: a set for spaces that search resolution
    (``resolutions=``), one value for spaces built at a chosen input size (``resolution=``)."""
    import inspect

    from hwnat.errors import BadInputError
    from hwnat.spaces import get_space

    space = get_space(name)
    if not resolutions:
        return space
    opts = inspect.signature(type(space).__init__).parameters
    shown = " ".join(str(r) for r in resolutions)
    if "resolutions" in opts:
        return get_space(name, resolutions=tuple(resolutions))
    if "resolution" in opts and len(set(resolutions)) == 1:
        return get_space(name, resolution=resolutions[0])
    fixed = getattr(space, "resolution", None)
    if fixed is not None and set(resolutions) == {fixed}:
        return space
    what = "one --resolution" if "resolution" in opts else "--resolution"
    raise BadInputError(f"space {space.name!r} takes {what} only, got --resolution {shown}"
                        + (f" (its input is fixed at {fixed})" if "resolution" not in opts and fixed else ""))


@click.command()
@device_option
@space_option
@click.option("--resolution", "-r", "resolutions", type=int, multiple=True,
              help="Input resolution(s) to profile (repeatable); default: the space's search resolutions.")
@click.option("--subnets", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also measure N random subnets end to end into a dataset CSV next to the table.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random subnets.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Table path [default: latency_tables/<device>/<space>.json].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Measure at most this many missing blocks in this run (the rest on a rerun).")
@click.pass_context
def profile(ctx, device, space, resolutions, subnets, seed, out, limit):
    """Profile every unique block of SPACE on DEVICE into a latency table (LUT).

    The table is saved after every block, so an interrupted run resumes where it stopped.

    \b
    Example:
      hwnat profile --device cpu --space ofa-mbv3 --resolution 224 --subnets 100
    """
    from hwnat.devices.device import open_device
    from hwnat.latency.profiler import (
        check_resumable,
        distinct_sample,
        measure_archs,
        open_table,
        profile_blocks,
        table_vs_measured,
    )

    sp = space_with_resolutions(space, resolutions)
    quiet = ctx.find_root().params.get("quiet", False)
    with open_device(device) as dev:
        out = out or Path("latency_tables") / dev.name / f"{sp.name}.json"
        open_table(out, sp, dev)  # a foreign, corrupt or unwritable table fails here, before any output
        blocks = sp.all_blocks()
        err(f"profiling {len(blocks)} unique {sp.name} blocks on {dev.name} -> {out}")
        if limit is not None:
            from hwnat.latency.table import LatencyTable

            have = set(LatencyTable.load(out).entries) if out.exists() else set()
            missing = [b for b in blocks if b.key not in have]
            blocks = [b for b in blocks if b.key in have] + missing[:limit]
        with progress_bar("blocks", not quiet) as cb:
            table = profile_blocks(sp, dev, blocks, out, progress=cb)
        unstable = sum(bool(e.get("unstable")) for e in table.entries.values())
        click.echo(f"{out}: {len(table.entries)} entries ({unstable} flagged unstable)")
        if subnets:
            archs = distinct_sample(sp, subnets, seed)
            data = out.with_name(out.stem + ".subnets.csv")
            check_resumable(data, sp, dev, "dataset")
            with progress_bar("subnets", not quiet) as cb:
                measure_archs(sp, dev, archs, data, columns="dataset", progress=cb)
            click.echo(f"{data}: {len(archs)} distinct subnets measured end to end")
            m = table_vs_measured(sp, table, data, dev.name)
            click.echo(f"table sum vs measured ({m['n']} subnets): within 10%: {100 * m['acc10']:.0f}%, "
                       f"MAPE {m['mape_pct']:.1f}%, mean bias {m['bias_pct']:+.1f}%, Spearman {m['spearman']:.3f}")
