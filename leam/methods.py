"""Per-layer relevance methods: pure functions (A, G) -> M.

A is a layer's activation and G = d score / d A, both (N, C, h, w); M is the raw map (N, h, w), >= 0, in the
layer's own spatial grid. Upsampling and normalisation into a distribution happen in `relevance.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .registry import Registry

MapFn = Callable[[Tensor, Tensor], Tensor]

METHODS: Registry[MapFn] = Registry("LEAM method")


@METHODS("gradcam")
def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM: alpha_c = mean_hw G_c;  M = ReLU(sum_c alpha_c A_c)."""
    alpha = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * activations).sum(dim=1))


@METHODS("layercam")
def layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM: M = ReLU(sum_c ReLU(G_c) * A_c), a per-position weight, sharper in early layers."""
    return torch.relu((torch.relu(gradients) * activations).sum(dim=1))


@METHODS("gradxact")
def gradxact(activations: Tensor, gradients: Tensor) -> Tensor:
    """Gradient × activation: M = |sum_c G_c * A_c| (first-order contribution of each position, either sign)."""
    return (gradients * activations).sum(dim=1).abs()
