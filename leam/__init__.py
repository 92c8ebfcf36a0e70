"""LEAM engine: layer-wise relevance maps of face-recognition models (torch only; no faces, files or CLI here).

    from leam import compute_relevance, reference_target, topk_mask
    target = reference_target(embeddings)                  # leave-this-photo-out centroid per photo
    rel = compute_relevance(model, crops, target, layers)  # rel.overall (N, H, W), rel.layer_maps (N, L, H, W)
    mask = topk_mask(rel.overall, 1.0)                     # the top 1 % pixels of each crop

See docs/LEAM.md for the method and which of its choices are facecloak's own.
"""

from __future__ import annotations

from .capture import INPUT_LAYER, Capture, capture
from .errors import LayerCaptureError, LeamError, ProfileError, UnknownLayerError, ZeroGradientTargetError
from .methods import METHODS
from .metrics import (
    bhattacharyya,
    identity_permutation_p,
    layer_diversity,
    mann_whitney_p,
    mask_overlap_bc,
    permutation_p,
)
from .profile import Profile, build_profile, ensemble_maps, load_profile, save_profile
from .relevance import Relevance, compute_relevance
from .select import SELECTORS, sampled_mask, selection_count, stratified_mask, topk_mask
from .targets import Contrast, CosineTo, SelfCosine, Target, embed, flip_target, reference_target

__all__ = [
    "INPUT_LAYER",
    "METHODS",
    "SELECTORS",
    "Capture",
    "Contrast",
    "CosineTo",
    "LayerCaptureError",
    "LeamError",
    "Profile",
    "ProfileError",
    "Relevance",
    "SelfCosine",
    "Target",
    "UnknownLayerError",
    "ZeroGradientTargetError",
    "bhattacharyya",
    "build_profile",
    "capture",
    "compute_relevance",
    "embed",
    "ensemble_maps",
    "flip_target",
    "identity_permutation_p",
    "layer_diversity",
    "load_profile",
    "mann_whitney_p",
    "mask_overlap_bc",
    "permutation_p",
    "reference_target",
    "sampled_mask",
    "save_profile",
    "selection_count",
    "stratified_mask",
    "topk_mask",
]
