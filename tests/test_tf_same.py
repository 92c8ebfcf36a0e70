"""TensorFlow 'SAME' padding of the TF-converted models (`facecloak.models.tf_same`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facecloak.models.tf_same import TFSameConv2d, same_padding


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (224, 3, 2, (0, 1)),  # TF puts the odd pixel of stride-2 padding at the bottom/right
    (112, 3, 2, (0, 1)),
    (225, 3, 2, (1, 1)),
    (5, 3, 2, (1, 1)),
    (7, 3, 1, (1, 1)),
    (56, 3, 1, (1, 1)),
    (7, 7, 1, (3, 3)),
    (14, 1, 1, (0, 0)),
    (5, 4, 1, (1, 2)),
])
def test_same_padding_matches_tensorflow(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, kernel, stride) == expected


def test_tf_same_conv_pads_only_bottom_right_for_stride_2() -> None:
    conv = TFSameConv2d(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left tap of every window
    x = torch.arange(16.0).reshape(1, 1, 4, 4) + 1
    out = conv(x)
    # No top/left padding: window (0, 0) starts at input pixel (0, 0), window (1, 1) at (2, 2).
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[1.0, 3.0], [9.0, 11.0]]


@pytest.mark.parametrize(("kernel", "stride", "groups"), [(3, 1, 1), (3, 1, 4), (1, 1, 1), (3, 2, 4), (4, 1, 1)])
def test_tf_same_conv_equals_an_explicit_tf_pad_then_an_unpadded_conv(kernel: int, stride: int, groups: int) -> None:
    """At stride 1 with an odd kernel the padding is the convolution's own; every case gives TF's result."""
    gen = torch.Generator().manual_seed(0)
    conv = TFSameConv2d(4, 8, kernel, stride=stride, groups=groups)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    assert conv.pads_per_call == (stride != 1 or kernel % 2 == 0)
    for h, w in [(9, 12), (14, 14)]:
        x = torch.randn(2, 4, h, w, generator=gen)
        (top, bottom), (left, right) = same_padding(h, kernel, stride), same_padding(w, kernel, stride)
        expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride=stride, groups=groups)
        assert torch.allclose(conv(x), expected, atol=1e-5), (h, w)
