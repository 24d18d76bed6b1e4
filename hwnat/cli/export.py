"""``hwnat export``: an architecture (or one of its blocks) to a model file a device runs."""

from __future__ import annotations

from pathlib import Path

import click

from hwnat.cli._common import space_option
from hwnat.errors import BadInputError


@click.command()
@space_option
@click.option("--arch", "-a", required=True, help="Architecture in the space's canonical string form.")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--block", type=int, default=None,
              help="Export only block number N of the architecture (0-based, see `hwnat spaces blocks`).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-check", is_flag=True, help="Skip the numerical check against torch in ONNX Runtime.")
def export(space, arch, fmt, block, out, no_check):
    """Export a subnet (or one block) to ONNX and check it against torch.

    \b
    Example:
      hwnat export --space fbnet --arch k3_e1-k3_e3-k5_e6-skip-k3_e1-k3_e1-k5_e3-k3_e6-k3_e1_g2-k5_e1-skip-k3_e3-k3_e6-k5_e6-k3_e1-k5_e1_g2-k3_e3-k3_e6-k5_e3-skip-k3_e1-k5_e6 --out fbnet.onnx
    """
    from hwnat.export import check_onnx, export_onnx
    from hwnat.spaces import get_space

    sp = get_space(space)
    a = sp.parse(arch)
    if block is None:
        module, shape = sp.build(a), sp.input_shape(a)
        what = "subnet"
    else:
        blocks = sp.blocks(a)
        if not 0 <= block < len(blocks):
            raise BadInputError(f"--block {block}: this architecture has blocks 0..{len(blocks) - 1}")
        b = blocks[block]
        module, shape, what = sp.build_block(b), (1, *b.in_shape), b.key
    export_onnx(module, shape, out)
    msg = f"{out}: {what}, input {list(shape)}"
    if not no_check:
        diff = check_onnx(module, out, shape)
        msg += f"; ONNX Runtime matches torch (max abs diff {diff:.2e})"
    click.echo(msg)
