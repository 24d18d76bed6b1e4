"""Torch blocks of the FBNet search space (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via
Differentiable Neural Architecture Search", CVPR 2019): the grouped inverted-residual block, the skip
block, conv-BN-ReLU, the classifier, and the network that chains them.

Imported lazily by ``hwnat.spaces.fbnet`` (it imports torch).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """``k x k`` convolution (no bias, padding ``k // 2``) + BatchNorm + optional ReLU.

    Args:
        cin: input channels.
        cout: output channels.
        k: kernel size.
        s: stride.
        groups: convolution groups (``cin`` and ``cout`` must divide by it).
        relu: append a ReLU.
    """

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: ``(N, g*c, H, W) -> (N, c*g, H, W)`` so that the next grouped conv
    sees channels from every group.

    Args:
        groups: the number of groups of the preceding grouped convolution.
    """

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class FBNetBlock(nn.Module):
    """FBNet's searchable block (paper Fig. 3): 1x1 group conv expand + BN + ReLU, channel shuffle when
    grouped, ``k x k`` depthwise conv (stride ``s``) + BN + ReLU, 1x1 group conv project + BN; the input
    is added when ``s == 1`` and ``cin == cout``.

    Args:
        cin: input channels.
        mid: expanded channels (``cin * e``).
        cout: output channels.
        k: depthwise kernel size (3 or 5).
        s: depthwise stride (1 or 2).
        g: groups of both 1x1 convolutions (1 or 2).

    Example:
        >>> FBNetBlock(16, 48, 24, k=3, s=2, g=1)(torch.zeros(1, 16, 112, 112)).shape
        torch.Size([1, 24, 56, 56])
    """

    def __init__(self, cin: int, mid: int, cout: int, k: int, s: int, g: int = 1):
        super().__init__()
        self.expand = ConvBNReLU(cin, mid, 1, groups=g)
        self.shuffle = ChannelShuffle(g) if g > 1 else nn.Identity()
        self.depthwise = ConvBNReLU(mid, mid, k, s=s, groups=mid)
        self.project = ConvBNReLU(mid, cout, 1, groups=g, relu=False)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.shuffle(self.expand(x))))
        return x + y if self.residual else y


class FBNetSkip(nn.Module):
    """FBNet's ``skip`` block: the identity when the shape is kept; otherwise a 1x1 conv (stride ``s``)
    + BN + ReLU projection, as FBNet's reference implementation (``Identity`` in maskrcnn-benchmark's
    FBNet builder, used by HW-NAS-Bench) does.

    Args:
        cin: input channels.
        cout: output channels.
        s: stride.
    """

    def __init__(self, cin: int, cout: int, s: int = 1):
        super().__init__()
        self.proj = ConvBNReLU(cin, cout, 1, s=s) if (cin != cout or s != 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.proj is None else self.proj(x)


class Classifier(nn.Module):
    """Global average pool + linear layer: ``(N, C, H, W) -> (N, classes)``.

    Args:
        cin: input channels.
        classes: number of classes.
    """

    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class FBNet(nn.Module):
    """An FBNet network: stem, the searchable layers, 1x1 head conv, classifier.

    Args:
        stem: first 3x3 stride-2 conv.
        layers: the searchable layers, in order (``nn.Identity`` for a shape-keeping ``skip``).
        head: the 1x1 conv to 1984 channels.
        classifier: pooling and the linear layer.
    """

    def __init__(self, stem: nn.Module, layers: list[nn.Module], head: nn.Module, classifier: nn.Module):
        super().__init__()
        self.stem = stem
        self.layers = nn.Sequential(*layers)
        self.head = head
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.layers(self.stem(x))))
