"""MobileNetV3-style building blocks: conv-BN-activation, squeeze-and-excitation, inverted residual (MBConv).

Follows the MobileNetV3 paper (Howard et al., ICCV 2019) as the Once-for-All space instantiates it
(Cai et al., ICLR 2020): SE reduction 4 with channels rounded to a multiple of 8, hard-sigmoid gate,
h-swish where MobileNetV3 uses it.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnat.nn.costs import make_divisible, se_channels  # noqa: F401  (re-exported)


def activation(name: str) -> nn.Module:
    """``relu`` | ``relu6`` | ``hswish`` | ``none`` -> module."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected relu, relu6, hswish or none")


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + activation; padding keeps ``ceil(H / stride)``."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: str = "relu"):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            activation(act),
        )


class SqueezeExcite(nn.Module):
    """x * hsigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)."""

    def __init__(self, channels: int):
        super().__init__()
        mid = se_channels(channels)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(y))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand-BN-act] -> kxk depthwise-BN-act -> [SE] -> 1x1 project-BN, with an
    identity shortcut when ``skip``. The expand conv is absent when ``mid == cin`` (expand ratio 1)."""

    def __init__(self, cin: int, cout: int, mid: int, k: int, stride: int, act: str, se: bool, skip: bool):
        super().__init__()
        self.expand = ConvBNAct(cin, mid, 1, 1, act=act) if mid != cin else None
        self.depthwise = ConvBNAct(mid, mid, k, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid) if se else None
        self.project = ConvBNAct(mid, cout, 1, 1, act="none")
        if skip and (stride != 1 or cin != cout):
            raise ValueError("an identity shortcut needs stride 1 and equal channels")
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.skip else y


class ClassifierHead(nn.Module):
    """MobileNetV3 head: global average pool -> 1x1 conv (no BN, no bias) -> act -> linear."""

    def __init__(self, cin: int, feature: int, classes: int, act: str = "hswish"):
        super().__init__()
        self.mix = nn.Conv2d(cin, feature, 1, bias=False)
        self.act = activation(act)
        self.fc = nn.Linear(feature, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.mix(x.mean((2, 3), keepdim=True)))
        return self.fc(torch.flatten(x, 1))
