"""``hwnat export``: an architecture (or one of its blocks) to a model file a device runs."""

from __future__ import annotations

from pathlib import Path

import click

from hwnat.cli._common import space_option
from hwnat.errors import BadInputError
from hwnat.export import list_formats


@click.command()
@space_option
@click.option("--arch", "-a", required=True, help="Architecture in the space's canonical string form.")
@click.option("--format", "fmt", type=click.Choice(list_formats()), default="onnx", show_default=True,
              help="onnx (ONNX Runtime, TensorRT), torch (TorchScript, the torch runtime) or tflite (LiteRT; "
                   "needs `pip install litert-torch`).")
@click.option("--block", type=int, default=None,
              help="Export only block number N of the architecture (0-based, see `hwnat spaces blocks`).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-check", is_flag=True,
              help="Skip the numerical check against torch (in ONNX Runtime, torch.jit or LiteRT, by format).")
def export(space, arch, fmt, block, out, no_check):
    """Export a subnet (or one block) to a model file and check it against torch.

    \b
    Examples:
      hwnat export --space fbnet --arch k3_e1-k3_e3-k5_e6-skip-k3_e1-k3_e1-k5_e3-k3_e6-k3_e1_g2-k5_e1-skip-k3_e3-k3_e6-k5_e6-k3_e1-k5_e1_g2-k3_e3-k3_e6-k5_e3-skip-k3_e1-k5_e6 --out fbnet.onnx
      hwnat export --space nasbench201 --arch '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|' --format tflite --out nb201.tflite
    """
    from hwnat.errors import DeviceError
    from hwnat.export import get_exporter
    from hwnat.spaces import get_space

    exporter = get_exporter(fmt)
    others = {get_exporter(f).suffix: f for f in list_formats() if f != fmt}
    if out.suffix in others:
        raise BadInputError(f"--out {out}: {out.suffix} is the suffix of {others[out.suffix]} files; a {fmt} "
                            f"file is written (use a name ending in {exporter.suffix})")
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
        module, shape, what = sp.build_block(b), b.batch_input(), b.key
    exporter.export(module, shape, out)
    shown = [list(s) for s in shape] if isinstance(shape[0], tuple) else list(shape)  # several inputs: a list each
    msg = f"{out}: {what}, {fmt}, input {shown}"
    if not no_check:
        try:
            diff = exporter.check(module, out, shape)
        except DeviceError as e:  # the checking runtime is not installed: the file is still good to use
            msg += f"; not checked ({e})"
        else:
            msg += f"; {exporter.checked_by} matches torch (max abs diff {diff:.2e})"
    click.echo(msg)
