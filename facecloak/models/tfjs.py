"""Read TensorFlow.js model files (graph JSON + weights manifest + `.bin` shards) into numpy, without TF.

A TFJS model is a JSON file and one or more binary shards. The JSON holds a `weightsManifest`: a list of
groups, each with the shard file names (`paths`, concatenated in order) and the tensors packed one after
another into those bytes (`weights`: name, shape, dtype and an optional `quantization`). Every array is
little-endian. Quantised tensors are stored as float16 (read as is), or as uint8/uint16 codes that decode
to `code * scale + min`. Graph models also carry `modelTopology.node`: TensorFlow `NodeDef`s whose string
attributes are base64-encoded.

Only what facecloak's converters need is here; nothing executes a graph.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecloak.errors import PullError

# Byte width and numpy little-endian dtype of every storage type that TFJS writes for numeric tensors.
_STORAGE: dict[str, tuple[int, str]] = {
    "float32": (4, "<f4"),
    "float16": (2, "<f2"),
    "int32": (4, "<i4"),
    "uint8": (1, "u1"),
    "uint16": (2, "<u2"),
    "bool": (1, "u1"),
}


@dataclass(frozen=True)
class GraphNode:
    """One TensorFlow `NodeDef` of a TFJS graph model (Const nodes included; their values are weights)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, Any] = field(default_factory=dict)

    def string_attr(self, key: str) -> str:
        """A string attribute (e.g. `padding`, `data_format`), base64-decoded."""
        return base64.b64decode(self.attr[key]["s"]).decode()

    def ints_attr(self, key: str) -> tuple[int, ...]:
        """A list-of-ints attribute (e.g. `strides`, `dilations`)."""
        return tuple(int(v) for v in self.attr[key]["list"].get("i", []))

    def strings_attr(self, key: str) -> tuple[str, ...]:
        """A list-of-strings attribute (e.g. `fused_ops` of `_FusedConv2D`), base64-decoded."""
        return tuple(base64.b64decode(v).decode() for v in self.attr.get(key, {}).get("list", {}).get("s", []))


@dataclass(frozen=True)
class GraphModel:
    """The parsed content of a TFJS graph model: its nodes by name and its weights as float32/int32 arrays."""

    nodes: Mapping[str, GraphNode]
    weights: Mapping[str, np.ndarray]

    def node(self, name: str) -> GraphNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise PullError(f"graph node {name!r} not found; is this the expected model file?") from None


def _decode(raw: bytes, spec: Mapping[str, Any]) -> np.ndarray:
    """One tensor of the manifest -> numpy array in its original dtype (quantisation undone)."""
    shape = tuple(int(d) for d in spec.get("shape", []))
    quant = spec.get("quantization")
    storage = quant["dtype"] if quant else spec["dtype"]
    if storage not in _STORAGE:
        raise PullError(f"tensor {spec['name']!r} has unsupported TFJS storage dtype {storage!r}")
    values = np.frombuffer(raw, dtype=_STORAGE[storage][1]).reshape(shape)
    if quant is None:
        return values.copy() if spec["dtype"] != "bool" else values.astype(bool)
    if storage == "float16":
        return values.astype(np.float32)
    # Affine quantisation as TFJS decodes it: float = code * scale + min (computed in float32).
    return values.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])


def _byte_size(spec: Mapping[str, Any]) -> int:
    quant = spec.get("quantization")
    storage = quant["dtype"] if quant else spec["dtype"]
    if storage not in _STORAGE:
        raise PullError(f"tensor {spec['name']!r} has unsupported TFJS storage dtype {storage!r}")
    count = int(np.prod([int(d) for d in spec.get("shape", [])], dtype=np.int64))
    return count * _STORAGE[storage][0]


def read_weights(manifest: Sequence[Mapping[str, Any]], shards: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """Decode every tensor of a weights manifest.

    `manifest` is the `weightsManifest` list; `shards` maps each shard file name in its `paths` to the file's
    bytes. Raises `PullError` if a shard is missing or its length does not match the manifest.
    """
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            data = b"".join(shards[p] for p in group["paths"])
        except KeyError as exc:
            raise PullError(f"weights shard {exc.args[0]!r} named in the TFJS manifest is missing") from None
        offset = 0
        for spec in group["weights"]:
            size = _byte_size(spec)
            if offset + size > len(data):
                raise PullError(f"TFJS shards {group['paths']} are shorter than their manifest says")
            out[spec["name"]] = _decode(data[offset : offset + size], spec)
            offset += size
        if offset != len(data):
            raise PullError(f"TFJS shards {group['paths']} hold {len(data) - offset} bytes the manifest does not name")
    return out


def _read_shards(manifest: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, bytes]:
    shards: dict[str, bytes] = {}
    for group in manifest:
        for name in group["paths"]:
            path = folder / name
            if not path.is_file():
                raise PullError(f"weights shard {path} named by the TFJS manifest is missing")
            shards[name] = path.read_bytes()
    return shards


def load_graph_model(json_path: Path, shard_paths: Mapping[str, Path] | None = None) -> GraphModel:
    """Parse a TFJS graph model (`format: graph-model`) and decode its weights.

    Shards are looked up in `shard_paths` by file name when given (the pull step's verified files),
    otherwise next to the JSON file.
    """
    doc = json.loads(Path(json_path).read_text())
    if "modelTopology" not in doc or "weightsManifest" not in doc:
        raise PullError(f"{json_path} is not a TFJS graph model (no modelTopology/weightsManifest)")
    manifest = doc["weightsManifest"]
    if shard_paths is None:
        shards = _read_shards(manifest, Path(json_path).parent)
    else:
        by_name = {Path(p).name: Path(p) for p in shard_paths.values()}
        shards = {}
        for group in manifest:
            for name in group["paths"]:
                if name not in by_name:
                    raise PullError(f"weights shard {name!r} of {Path(json_path).name} was not provided")
                shards[name] = by_name[name].read_bytes()
    nodes = {
        n["name"]: GraphNode(name=n["name"], op=n["op"], inputs=tuple(n.get("input", [])), attr=n.get("attr", {}))
        for n in doc["modelTopology"]["node"]
    }
    return GraphModel(nodes=nodes, weights=read_weights(manifest, shards))


def load_weights_manifest(manifest_path: Path) -> dict[str, np.ndarray]:
    """Decode a standalone `*-weights_manifest.json` (face-api style: a bare list of groups) and its shards."""
    manifest = json.loads(Path(manifest_path).read_text())
    return read_weights(manifest, _read_shards(manifest, Path(manifest_path).parent))


# --- layout helpers: TensorFlow stores NHWC-era kernels; torch wants OIHW -----------------------------------


def conv_kernel(hwio: np.ndarray) -> torch.Tensor:
    """Conv2D kernel (kh, kw, in, out) -> torch (out, in, kh, kw), float32."""
    return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1), dtype=np.float32))


def depthwise_kernel(hwcm: np.ndarray) -> torch.Tensor:
    """DepthwiseConv2dNative kernel (kh, kw, channels, multiplier) -> torch grouped (channels*mult, 1, kh, kw).

    TF orders the output channels as c * multiplier + m, the same order torch uses for groups=channels.
    """
    kh, kw, c, m = hwcm.shape
    grouped = hwcm.reshape(kh, kw, c * m, 1).transpose(2, 3, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(grouped, dtype=np.float32))


def vector(values: np.ndarray) -> torch.Tensor:
    """A 1-D per-channel tensor (bias, scale, PReLU slope) as contiguous float32."""
    return torch.from_numpy(np.ascontiguousarray(values.reshape(-1), dtype=np.float32))


def scalar(values: np.ndarray) -> float:
    """A scalar constant of the graph (clip bounds, normalisation constants) as a Python float."""
    if values.size != 1:
        raise PullError(f"expected a scalar constant, got shape {values.shape}")
    return float(values.reshape(-1)[0])
