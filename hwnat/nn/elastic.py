"""Elastic (weight-sharing) MBConv layers of a Once-for-All supernet.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment", ICLR 2020.

One ``ElasticMBConv`` holds the largest layer's weights (kernel 7, the largest expand ratio) and runs any
(kernel, expand ratio) choice from them:

- **elastic kernel**: OFA's kernel transformation matrices, not a plain centre crop. The 5x5 kernel is the
  centre 5x5 of the shared 7x7 kernel multiplied by a learnt 25x25 matrix; the 3x3 kernel is the centre 3x3
  of that 5x5 kernel multiplied by a learnt 9x9 matrix. Each layer has its own two matrices, shared by
  all its channels, initialised to the identity (so before training the transform *is* a centre crop).
- **elastic expand ratio**: the first ``mid`` channels of the shared expand, depthwise and project weights
  (and of their BatchNorms, and the first ``se_channels(mid)`` of the squeeze-excite bottleneck).
- BatchNorm of a slice uses the slice of the shared statistics (``ElasticBatchNorm2d``); an extracted
  subnet recalibrates them on training batches before it is evaluated.
- **zero-gamma init** of a residual layer's last BatchNorm (Goyal et al., "Accurate, Large Minibatch SGD:
  Training ImageNet in 1 Hour", arXiv 1706.02677, sec. 5.1): every residual layer starts as the identity,
  so a deeper subnet starts out computing what the shallower one does. With the short warm-ups of a CPU
  run (two epochs) this matters: without it the layers only deep subnets use stayed noise, and the
  supernet ranked shallow subnets above deep ones (benchmarks/README.md, supernet warm-up).

``subnet_state(k, e)`` gives the state dict of the plain ``hwnat.nn.mbconv.MBConv`` of that choice, so an
extracted subnet is exactly the module the search space builds (and the latency tables time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnat.nn.costs import make_divisible, se_channels
from hwnat.nn.mbconv import activation


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``x.shape[1]`` of its channels (statistics updated in the shared buffers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        training = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c] if self.running_mean is not None else None,
                            self.running_var[:c] if self.running_var is not None else None,
                            self.weight[:c], self.bias[:c], training, momentum, self.eps)

    def sliced_state(self, c: int) -> dict[str, torch.Tensor]:
        """State dict of a plain ``BatchNorm2d(c)`` holding the first ``c`` channels."""
        return {"weight": self.weight[:c], "bias": self.bias[:c], "running_mean": self.running_mean[:c],
                "running_var": self.running_var[:c], "num_batches_tracked": self.num_batches_tracked}


def expand_width(cin: int, e: int) -> int:
    """Hidden width of an MBConv with input width ``cin`` and expand ratio ``e`` (as the space rounds it)."""
    return make_divisible(round(cin * e), 8)


class ElasticMBConv(nn.Module):
    """An MBConv whose kernel size and expand ratio are chosen at run time (see the module docstring).

    Args:
        cin, cout: input and output widths (fixed).
        stride: depthwise stride.
        act: activation (``relu`` | ``hswish``).
        se: whether the layer has squeeze-and-excitation.
        kernels: kernel sizes offered (a subset of 3, 5, 7; the largest is stored).
        expands: expand ratios offered (the largest is stored).

    Example:
        >>> layer = ElasticMBConv(24, 24, 1, "relu", False)
        >>> layer.set_active(5, 4)
        >>> layer(torch.zeros(1, 24, 8, 8)).shape
        torch.Size([1, 24, 8, 8])
    """

    def __init__(self, cin: int, cout: int, stride: int, act: str, se: bool,
                 kernels: tuple[int, ...] = (3, 5, 7), expands: tuple[int, ...] = (3, 4, 6)):
        super().__init__()
        if max(kernels) != 7 or not set(kernels) <= {3, 5, 7}:
            raise ValueError(f"elastic kernels {kernels}: expected a subset of (3, 5, 7) holding 7")
        self.cin, self.cout, self.stride, self.act_name, self.has_se = cin, cout, stride, act, se
        self.kernels, self.expands = tuple(sorted(kernels)), tuple(sorted(expands))
        self.skip = stride == 1 and cin == cout
        mid = expand_width(cin, max(expands))
        self.max_mid = mid
        self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
        self.expand_bn = ElasticBatchNorm2d(mid)
        self.depthwise_conv = nn.Conv2d(mid, mid, 7, stride, 3, groups=mid, bias=False)
        self.depthwise_bn = ElasticBatchNorm2d(mid)
        # OFA kernel transformation matrices (identity at start): 7 -> 5 and 5 -> 3
        self.kernel_5x5 = nn.Parameter(torch.eye(25))
        self.kernel_3x3 = nn.Parameter(torch.eye(9))
        if se:
            smid = se_channels(mid)
            self.se_reduce = nn.Conv2d(mid, smid, 1, bias=True)
            self.se_expand = nn.Conv2d(smid, mid, 1, bias=True)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        if self.skip:  # zero-gamma: a residual layer starts as the identity (module docstring)
            nn.init.zeros_(self.project_bn.weight)
        self.act = activation(act)
        self.active_kernel, self.active_expand = max(kernels), max(expands)

    def set_active(self, kernel: int, expand: int) -> None:
        """Choose the kernel size and expand ratio that ``forward`` runs."""
        if kernel not in self.kernels or expand not in self.expands:
            raise ValueError(f"kernel {kernel} / expand {expand}: expected one of {self.kernels} / {self.expands}")
        self.active_kernel, self.active_expand = kernel, expand

    def mid(self, expand: int | None = None) -> int:
        """Hidden width at ``expand`` (default: the active one)."""
        return expand_width(self.cin, self.active_expand if expand is None else expand)

    def kernel(self, k: int, mid: int) -> torch.Tensor:
        """Depthwise weight ``(mid, 1, k, k)`` of kernel size ``k``: centre crops + transformation matrices."""
        w = self.depthwise_conv.weight[:mid]
        if k == 7:
            return w
        w5 = w[:, :, 1:6, 1:6]
        w5 = (w5.reshape(mid, 25) @ self.kernel_5x5).reshape(mid, 1, 5, 5)
        if k == 5:
            return w5
        w3 = w5[:, :, 1:4, 1:4]
        return (w3.reshape(mid, 9) @ self.kernel_3x3).reshape(mid, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, mid = self.active_kernel, self.mid()
        y = self.act(self.expand_bn(F.conv2d(x, self.expand_conv.weight[:mid])))
        y = F.conv2d(y, self.kernel(k, mid), None, self.stride, k // 2, 1, mid)
        y = self.act(self.depthwise_bn(y))
        if self.has_se:
            s = se_channels(mid)
            g = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), self.se_reduce.weight[:s, :mid],
                                self.se_reduce.bias[:s]))
            g = F.hardsigmoid(F.conv2d(g, self.se_expand.weight[:mid, :s], self.se_expand.bias[:mid]))
            y = y * g
        y = self.project_bn(F.conv2d(y, self.project_conv.weight[:, :mid]))
        return x + y if self.skip else y

    def subnet_state(self, kernel: int, expand: int) -> dict[str, torch.Tensor]:
        """State dict of the plain ``MBConv(cin, cout, mid, kernel, stride, act, se, skip)`` of this choice."""
        mid = self.mid(expand)
        state = {"expand.0.weight": self.expand_conv.weight[:mid],
                 "depthwise.0.weight": self.kernel(kernel, mid),
                 "project.0.weight": self.project_conv.weight[:, :mid]}
        for prefix, bn in (("expand.1.", self.expand_bn), ("depthwise.1.", self.depthwise_bn)):
            state.update({prefix + n: t for n, t in bn.sliced_state(mid).items()})
        state.update({"project.1." + n: t for n, t in self.project_bn.state_dict().items()})
        if self.has_se:
            s = se_channels(mid)
            state.update({"se.reduce.weight": self.se_reduce.weight[:s, :mid],
                          "se.reduce.bias": self.se_reduce.bias[:s],
                          "se.expand.weight": self.se_expand.weight[:mid, :s],
                          "se.expand.bias": self.se_expand.bias[:mid]})
        return {n: t.detach().clone() for n, t in state.items()}
