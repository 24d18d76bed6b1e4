"""``hwnat spaces``: list spaces, sample architectures, show an architecture's blocks and costs."""

from __future__ import annotations

import click
import numpy as np

from hwnat.cli._common import echo_json, json_option


@click.group()
def spaces():
    """Search spaces: list, sample, inspect.

    \b
    Example:
      hwnat spaces sample --space nasbench201 -n 5
    """


@spaces.command("list")
def list_cmd():
    """Registered search spaces.

    \b
    Example:
      hwnat spaces list
    """
    from hwnat.spaces import list_spaces

    for name in list_spaces():
        click.echo(name)


@spaces.command()
@click.option("--space", "-s", required=True)
@click.option("-n", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(space, n, seed):
    """Print N random architectures as a CSV with an 'arch' column.

    \b
    Example:
      hwnat spaces sample --space ofa-mbv3 -n 100 > archs.csv
    """
    import csv
    import sys

    from hwnat.spaces import get_space

    sp = get_space(space)
    w = csv.writer(sys.stdout)
    w.writerow(["arch"])
    for a in sp.sample(np.random.default_rng(seed), n):
        w.writerow([sp.format(a)])


@spaces.command()
@click.option("--space", "-s", required=True)
@click.option("--arch", "-a", required=True)
@json_option
def blocks(space, arch, as_json):
    """An architecture's blocks (the units a latency table sums), FLOPs and params.

    \b
    Example:
      hwnat spaces blocks --space nasbench201 --arch '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|'
    """
    from hwnat.spaces import get_space

    sp = get_space(space)
    a = sp.parse(arch)
    keys = [b.key for b in sp.blocks(a)]
    if as_json:
        echo_json({"arch": sp.format(a), "blocks": keys, "flops": sp.flops(a), "params": sp.params(a)})
        return
    for i, k in enumerate(keys):
        click.echo(f"{i:3d} {k}")
    click.echo(f"FLOPs {sp.flops(a) / 1e6:.1f} M, params {sp.params(a) / 1e6:.3f} M")
