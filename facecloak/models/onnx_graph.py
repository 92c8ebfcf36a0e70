"""Read the parameters of a small Conv/PReLU ONNX graph in execution order, without running it.

Used by converters that map an ONNX file onto an explicit `nn.Module`: the graph's Conv and PRelu nodes are
listed in the order the graph runs them, each with its attributes, so the converter can check every one
against the module's layer before copying weights (no silent shape or stride drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecloak.errors import PullError


@dataclass(frozen=True)
class OnnxConv:
    """One Conv node: weight (O, I/groups, kH, kW), bias (O,) and its geometry."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # ONNX order: top, left, bottom, right
    groups: int
    dilation: tuple[int, int]


@dataclass(frozen=True)
class OnnxPRelu:
    """One PRelu node: per-channel negative slopes, flattened to (C,)."""

    name: str
    slope: np.ndarray


@dataclass(frozen=True)
class OnnxParams:
    """Conv and PRelu nodes in graph (execution) order, plus the op types present and the input shape."""

    convs: tuple[OnnxConv, ...]
    prelus: tuple[OnnxPRelu, ...]
    op_types: frozenset[str]
    input_shape: tuple[int | str, ...]


def read_conv_prelu_params(path: Path) -> OnnxParams:
    """List the Conv and PRelu parameters of an ONNX file in node order (ONNX stores nodes topologically)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends; make it actionable
        raise PullError(f"{path} is not a readable ONNX file ({exc}); run `facecloak models pull --force`") from exc
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs: list[OnnxConv] = []
    prelus: list[OnnxPRelu] = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            weight = init[node.input[1]].astype(np.float32)
            bias = (
                init[node.input[2]].astype(np.float32)
                if len(node.input) > 2 and node.input[2]
                else np.zeros(weight.shape[0], np.float32)
            )
            pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
            convs.append(
                OnnxConv(
                    name=node.output[0],
                    weight=weight,
                    bias=bias,
                    stride=_pair(attrs.get("strides", (1, 1))),
                    pads=(pads[0], pads[1], pads[2], pads[3]),
                    groups=int(attrs.get("group", 1)),
                    dilation=_pair(attrs.get("dilations", (1, 1))),
                )
            )
        elif node.op_type == "PRelu":
            prelus.append(OnnxPRelu(name=node.output[0], slope=init[node.input[1]].astype(np.float32).reshape(-1)))
    inputs = [i for i in graph.input if i.name not in init]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)
    return OnnxParams(tuple(convs), tuple(prelus), frozenset(n.op_type for n in graph.node), shape)


def _pair(values) -> tuple[int, int]:
    a, b = (int(v) for v in values)
    return a, b
