"""The recognition-model zoo: one registry of `ModelSpec`s, created by name (timm-style).

Each architecture lives in its own module and registers itself on import below.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn

from facecloak.models.spec import ModelSpec, Source, SourceFile
from leam.registry import Registry

MODELS: Registry[ModelSpec] = Registry("recognition model")


def get_spec(model_id: str) -> ModelSpec:
    return MODELS.get(model_id)


def load_model(model_id: str) -> nn.Module:
    """Build the module, load verified cached weights, put it in eval mode with frozen parameters (channels-last
    where the spec says so)."""
    from facecloak.models.pull import load_state

    spec = get_spec(model_id)
    module = spec.build()
    module.load_state_dict(load_state(spec), strict=True)
    if spec.channels_last:  # what `Module.to(memory_format=...)` does, which its typed signature does not offer
        for p in module.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@cache
def cached_model(model_id: str, device: str | None = None) -> nn.Module:
    """`load_model` once per process and device (the transform's DataLoader workers each load their own copy
    lazily). `device`: a torch device name ("cuda", "cuda:1"); None is the CPU (one cache entry for the CPU)."""
    module = load_model(model_id)
    return module if device is None or device == "cpu" else module.to(device)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) RGB crops -> float32 (N, 3, S, S) in [0, 255], the models' input contract."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Raw embeddings (N, D) of float32 (N, 3, S, S) model inputs, in batches, without gradients."""
    out = [model(x[s : s + batch_size]) for s in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def embed_crops(model: nn.Module, crops: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """Raw embeddings (N, D), on the CPU, of uint8 (N, S, S, 3) RGB crops aligned to the model's template; the crops
    go to the model's device."""
    return embed(model, to_tensor(crops).to(model_device(model)), batch_size).cpu()


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s weights are (the CPU for a model without any)."""
    weight = next(model.parameters(), None)
    return weight.device if weight is not None else torch.device("cpu")


# Architectures register themselves; keep this list in the order `models list` shows them.
from facecloak.models import dlib_r29, hse_mnv1, mbf_arc, mbf_tf, mobileface  # noqa: E402,F401

__all__ = [
    "MODELS",
    "ModelSpec",
    "Source",
    "SourceFile",
    "cached_model",
    "embed",
    "embed_crops",
    "get_spec",
    "load_model",
    "model_device",
    "to_tensor",
]
