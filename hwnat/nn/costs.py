"""Channel rounding and analytic costs of the MobileNet-style blocks in ``hwnat.nn.mbconv``, and the layer
shapes of a conv stack (no torch import).

FLOPs are 2 x multiply-accumulates of convolutions and linear layers (the convention of torch's
FlopCounterMode); parameters include BatchNorm's affine weights.
"""

from __future__ import annotations


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going below 90% of ``v``
    (the MobileNet channel rounding rule)."""
    new_v = max(min_value or divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def se_channels(channels: int) -> int:
    """Hidden width of the SE bottleneck (reduction 4, multiple of 8)."""
    return make_divisible(channels // 4, 8)


# ---- analytic cost of the same blocks (FLOPs = 2 x MACs of conv/linear; params incl. BN affine) ----

def conv_cost(cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bias: bool = False,
              bn: bool = True) -> tuple[float, float]:
    """(FLOPs, params) of a conv layer (+ BN) with a square output of side ``out_hw``."""
    macs = cout * out_hw * out_hw * (cin // groups) * k * k
    params = cout * (cin // groups) * k * k + (cout if bias else 0) + (2 * cout if bn else 0)
    return 2.0 * macs, float(params)


def mbconv_cost(cin: int, cout: int, mid: int, k: int, stride: int, in_hw: int, se: bool):
    """(FLOPs, params) of an ``MBConv``."""
    out_hw = -(-in_hw // stride)
    f = p = 0.0
    if mid != cin:
        a, b = conv_cost(cin, mid, 1, in_hw)
        f, p = f + a, p + b
    a, b = conv_cost(mid, mid, k, out_hw, groups=mid)
    f, p = f + a, p + b
    if se:
        s = se_channels(mid)
        a, b = conv_cost(mid, s, 1, 1, bias=True, bn=False)
        c, d = conv_cost(s, mid, 1, 1, bias=True, bn=False)
        f, p = f + a + c, p + b + d
    a, b = conv_cost(mid, cout, 1, out_hw)
    return f + a, p + b


def head_cost(cin: int, feature: int, classes: int) -> tuple[float, float]:
    """(FLOPs, params) of a ``ClassifierHead``."""
    a, b = conv_cost(cin, feature, 1, 1, bn=False)
    return a + 2.0 * feature * classes, b + feature * classes + classes


def layer_shapes(in_shape, widths, strides) -> list[tuple[int, int, int]]:
    """``(C, H, W)`` after each layer of a stack of 3x3 convs with padding 1 (a side ``h`` becomes
    ``ceil(h / s)``), for an input ``(C, H, W)``, per-layer output channels and strides."""
    _, h, w = (int(v) for v in in_shape)
    out = []
    for c, s in zip(widths, strides, strict=True):
        h, w = -(-h // int(s)), -(-w // int(s))
        out.append((int(c), h, w))
    return out
