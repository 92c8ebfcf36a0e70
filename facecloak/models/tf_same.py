"""TensorFlow's 'SAME' convolution padding, for the models converted from TF graphs (`mbf-tf`, `hse-mnv1`).

TF pads a 'SAME' convolution by (kernel - 1) in total along each axis, minus what the stride skips, and puts
the odd pixel at the end: a 3x3 stride-2 conv on an even input pads (0, 1), where torch's symmetric
`padding=1` would pad (1, 1) and shift every output by half a stride (the embeddings would drift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) along one axis of length `size`."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class TFSameConv2d(nn.Conv2d):
    """`nn.Conv2d` with TF 'SAME' padding. At stride 1 with an odd kernel the padding is symmetric and the same
    for every input size, so it is the convolution's own `padding` (no padded copy of the input, forward or
    backward); otherwise the input is zero-padded per call, the odd pixel bottom/right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True) -> None:
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias,
                         padding=(kernel_size - 1) // 2 if symmetric else 0)
        self.pads_per_call = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads_per_call:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)
