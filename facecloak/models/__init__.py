"""The recognition-model zoo: one registry of `ModelSpec`s, created by name (timm-style).

Each architecture lives in its own module and registers itself on import below.
"""

from __future__ import annotations

from functools import cache

from torch import nn

from facecloak.models.spec import ModelSpec, Source, SourceFile
from leam.registry import Registry

MODELS: Registry[ModelSpec] = Registry("recognition model")


def get_spec(model_id: str) -> ModelSpec:
    return MODELS.get(model_id)


def load_model(model_id: str) -> nn.Module:
    """Build the module, load verified cached weights, put it in eval mode with frozen parameters."""
    from facecloak.models.pull import load_state

    spec = get_spec(model_id)
    module = spec.build()
    module.load_state_dict(load_state(spec), strict=True)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@cache
def cached_model(model_id: str) -> nn.Module:
    """`load_model` once per process (the transform's DataLoader workers each load their own copy lazily)."""
    return load_model(model_id)


# Architectures register themselves; keep this list in the order `models list` shows them.
from facecloak.models import dlib_r29, hse_mnv1, mbf_arc, mbf_tf, mobileface  # noqa: E402,F401

__all__ = ["MODELS", "ModelSpec", "Source", "SourceFile", "cached_model", "get_spec", "load_model"]
