"""`dlib-r29`: dlib's ResNet-29 face descriptor (`dlib_face_recognition_resnet_model_v1`) as a PyTorch module.

The weights come from face-api's uint8-quantised copy (`@vladmandic/face-api`, a TFJS weights manifest plus one
`.bin`). The architecture follows dlib's `anet_type` (dnn_face_recognition_ex.cpp) as face-api re-implements it:

    stem      7x7/2 conv -> affine -> ReLU -> 3x3/2 max-pool                      (32, 35, 35)
    stage32   3 residual blocks                                                   (32, 35, 35)
    stage64   1 down-sampling block + 3 residual blocks                           (64, 17, 17)
    stage128  1 down-sampling block + 2 residual blocks                           (128, 8, 8)
    stage256  1 down-sampling block + 2 residual blocks + 1 down-sampling block   (256, 2, 2)
    global average pool -> fully connected 256 -> 128 (no bias)

Every conv has a bias and is followed by dlib's `affine` layer (the frozen batch norm: per-channel scale and shift),
called "scale" in face-api. Sizes above are for the 150x150 input.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecloak.errors import PullError
from facecloak.models import MODELS
from facecloak.models.spec import ModelSpec, Source, SourceFile

INPUT_SIZE = 150
EMBEDDING_DIM = 128
# dlib's input_rgb_image_sized<150>: (pixel - mean) / 256. face-api divides by 255 instead; native dlib is the
# reference, so this follows dlib (the two differ by < 1e-5 in cosine to native dlib, measured on 20 LFW faces).
MEAN_RGB = (122.782, 117.001, 104.298)
PIXEL_DIVISOR = 256.0

MANIFEST_PATH = "package/model/face_recognition_model-weights_manifest.json"
BIN_PATH = "package/model/face_recognition_model.bin"

SOURCE = Source(
    registry="npm",
    package="@vladmandic/face-api",
    version="1.7.15",
    files=(
        SourceFile(MANIFEST_PATH, "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b"),
        SourceFile(BIN_PATH, "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"),
    ),
)


# ---------------------------------------------------------------------------------------------------------------
# Architecture


class ConvAffine(nn.Module):
    """Conv (with bias) followed by dlib's per-channel affine `y = x * scale.weight + scale.bias`, optional ReLU.

    Padding follows dlib: `k // 2` for stride 1 ("same"), none for stride 2 ("valid").
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, relu: bool) -> None:
        super().__init__()
        padding = kernel_size // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=True)
        self.scale = ChannelAffine(out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scale(self.conv(x))
        return F.relu(out) if self.relu else out


class ChannelAffine(nn.Module):
    """dlib's `affine` layer: a per-channel multiply and add (batch norm with frozen statistics folded in)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ResidualBlock(nn.Module):
    """`relu(x + affine(conv(relu(affine(conv(x))))))`, both convs 3x3 stride 1, same width in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvAffine(channels, channels, 3, stride=1, relu=True)
        self.conv2 = ConvAffine(channels, channels, 3, stride=1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + x)


class DownBlock(nn.Module):
    """Down-sampling residual block: the first conv is 3x3 stride 2 without padding.

    The shortcut is a 2x2/2 average pool of the input. Where the branch and shortcut differ in channels or size
    (dlib's `add_prev`), the smaller one is zero-padded at the end of the channel axis and at the bottom/right,
    so the two are added top-left aligned.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvAffine(in_channels, out_channels, 3, stride=2, relu=True)
        self.conv2 = ConvAffine(out_channels, out_channels, 3, stride=1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv2(self.conv1(x))
        shortcut = F.avg_pool2d(x, kernel_size=2, stride=2)
        return F.relu(_pad_to(branch, shortcut.shape) + _pad_to(shortcut, branch.shape))


def _pad_to(x: torch.Tensor, other_shape: torch.Size) -> torch.Tensor:
    """Zero-pad (N, C, H, W) at the end of C, H and W up to the elementwise max of both shapes."""
    _, c, h, w = x.shape
    extra_c = max(other_shape[1] - c, 0)
    extra_h = max(other_shape[2] - h, 0)
    extra_w = max(other_shape[3] - w, 0)
    if extra_c == extra_h == extra_w == 0:
        return x
    return F.pad(x, (0, extra_w, 0, extra_h, 0, extra_c))


class DlibResNet29(nn.Module):
    """dlib's face descriptor network.

    Input: float32 RGB in [0, 255], (N, 3, 150, 150), a dlib face chip (`dlib150` template).
    Output: raw 128-d descriptors (N, 128). Native dlib returns these unnormalised too (their norm is close to 1).
    """

    mean: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.stem = ConvAffine(3, 32, 7, stride=2, relu=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.stage32 = _stage(32, 32, downsample=False, residuals=3)
        self.stage64 = _stage(32, 64, downsample=True, residuals=3)
        self.stage128 = _stage(64, 128, downsample=True, residuals=2)
        self.stage256 = _stage(128, 256, downsample=True, residuals=2)
        self.stage256.add_module("down_out", DownBlock(256, 256))
        self.fc = nn.Linear(256, EMBEDDING_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / PIXEL_DIVISOR
        x = self.pool(self.stem(x))
        x = self.stage256(self.stage128(self.stage64(self.stage32(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _stage(in_channels: int, out_channels: int, *, downsample: bool, residuals: int) -> nn.Sequential:
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    if downsample:
        blocks["down"] = DownBlock(in_channels, out_channels)
    for i in range(1, residuals + 1):
        blocks[f"res{i}"] = ResidualBlock(out_channels)
    return nn.Sequential(blocks)


# ---------------------------------------------------------------------------------------------------------------
# Weights: TFJS weights manifest + .bin -> state dict


def read_tfjs_weights(manifest_path: Path, bin_dir: Path) -> dict[str, np.ndarray]:
    """Read a TFJS weights manifest and its shard files into float32 arrays, by tensor name, in TF layout.

    Quantised entries are dequantised as `q * scale + min` (TFJS affine uint8/uint16 quantisation).
    """
    try:
        groups = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PullError(f"cannot read weights manifest {manifest_path}: {exc}") from exc
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        blob = b"".join((bin_dir / Path(p).name).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            array, offset = _decode_entry(entry, blob, offset)
            tensors[entry["name"]] = array
        if offset != len(blob):
            raise PullError(f"{manifest_path.name}: {len(blob) - offset} bytes left over after the last tensor")
    return tensors


_PLAIN_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_QUANTISED_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2")}


def _decode_entry(entry: Mapping, blob: bytes, offset: int) -> tuple[np.ndarray, int]:
    shape = tuple(int(d) for d in entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    quant = entry.get("quantization")
    stored_name = quant["dtype"] if quant else entry["dtype"]
    stored = (_QUANTISED_DTYPES if quant else _PLAIN_DTYPES).get(stored_name)
    if stored is None:
        raise PullError(f"tensor {entry['name']!r}: unsupported stored dtype {stored_name!r}")
    end = offset + count * stored.itemsize
    if end > len(blob):
        raise PullError(f"tensor {entry['name']!r} runs past the end of the weights file")
    raw = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
    values = raw.astype(np.float64) * quant["scale"] + quant["min"] if quant else raw
    return values.astype(np.float32).reshape(shape), end


def _face_api_to_torch_names() -> dict[str, str]:
    """face-api layer prefix -> dotted module path in `DlibResNet29`."""
    names = {"conv32_down": "stem"}
    layout = {32: ("", 3), 64: ("down", 3), 128: ("down", 2), 256: ("down", 2)}
    for width, (down, residuals) in layout.items():
        if down:
            names[f"conv{width}_down"] = f"stage{width}.down"
        for i in range(1, residuals + 1):
            names[f"conv{width}_{i}"] = f"stage{width}.res{i}"
    names["conv256_down_out"] = "stage256.down_out"
    return names


_LEAF_NAMES = {
    ("conv", "filters"): "conv.weight",
    ("conv", "bias"): "conv.bias",
    ("scale", "weights"): "scale.weight",
    ("scale", "biases"): "scale.bias",
}


def state_from_face_api(tensors: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map face-api tensor names and TF layouts onto `DlibResNet29`'s state dict.

    Names look like `conv32_down/conv/filters` (the stem) or `conv64_1/conv2/scale/weights` (a block's conv).
    Conv filters go HWIO -> OIHW; face-api's `fc` is (256, 128) used as `x @ fc`, so torch's weight is its transpose.
    """
    blocks = _face_api_to_torch_names()
    state: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if name == "fc":
            state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(value.T))
            continue
        parts = name.split("/")
        leaf = _LEAF_NAMES.get((parts[-2], parts[-1])) if len(parts) in (3, 4) else None
        if leaf is None or parts[0] not in blocks:
            raise PullError(f"unexpected tensor {name!r} in the face-api manifest")
        key = ".".join([blocks[parts[0]], *parts[1:-2], leaf])
        array = value.transpose(3, 2, 0, 1) if leaf == "conv.weight" else value
        state[key] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def convert(files: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Pull-time converter: verified original files (by path inside the package) -> state dict."""
    manifest = files[MANIFEST_PATH]
    bin_file = files[BIN_PATH]
    if manifest.parent != bin_file.parent:
        raise PullError("the face-api manifest and its .bin must sit in the same folder")
    return state_from_face_api(read_tfjs_weights(manifest, manifest.parent))


SPEC = ModelSpec(
    id="dlib-r29",
    architecture="dlib ResNet-29 face descriptor (dlib_face_recognition_resnet_model_v1), uint8-quantised copy",
    input_size=INPUT_SIZE,
    template="dlib150",
    embedding_dim=EMBEDDING_DIM,
    mean=MEAN_RGB,
    std=(PIXEL_DIVISOR, PIXEL_DIVISOR, PIXEL_DIVISOR),
    # Outputs of whole stages: 35x35 (early), 17x17, 8x8 (middle), and the last 4x4 map before the final
    # down-sampling block (late; the network's own last map is only 2x2).
    default_layers=("stage32", "stage64", "stage128", "stage256.res2"),
    sources=(SOURCE,),
    licence="weights: dlib model by Davis King (CC0 / public domain); face-api conversion: MIT",
    build=DlibResNet29,
    convert=convert,
    notes="Expects dlib face chips (dlib.get_face_chip, size 150, padding 0.25); "
    "AUC drops with the ArcFace template.",
)

MODELS.register(SPEC.id, SPEC)
