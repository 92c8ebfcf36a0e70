"""LEAM on faces: crops in each source model's template -> relevance -> maps in one common template -> masks.

The LEAM engine (`leam`) knows nothing of faces; this module feeds it aligned crops, builds the identity
targets from reference embeddings, brings every model's maps into a common template (so several models can be
averaged, the "ensemble"), and selects the pixels to change, optionally only inside the parsed face region.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import leam
from facecloak.errors import ConfigError
from facecloak.faces.align import TEMPLATES, warp_between_templates
from facecloak.masking.impostors import impostors_for
from facecloak.models import embed_crops as embed_crops  # re-exported: callers import it from here
from facecloak.models import get_spec, model_device, to_tensor

TARGETS = ("auto", "reference", "flip", "contrast")


def check_budget(budget: float) -> float:
    """`budget` as a float if it is a percentage in (0, 100], else `ConfigError`: the one check of a budget, used
    by `LeamSettings` and by the shells that take a budget before they build settings (a range, a web query)."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ConfigError(f"budget must be a percentage in (0, 100], got {budget!r}") from None
    if not 0 < value <= 100:  # also refuses NaN
        raise ConfigError(f"budget must be a percentage in (0, 100], got {budget}")
    return value


@dataclass(frozen=True)
class LeamSettings:
    """How relevance is computed and pixels are selected. Defaults are documented in docs/leam.md.

    budget            percent of the face-region pixels of the common template to select (0, 100].
    layers            "default" (each model's spec) or explicit dotted names (applied to every model; "input"
                      is the gradient x input pseudo-layer), or a mapping model id -> names.
    target            contrast (default: reference minus impostor centroids; without references the mirrored
                      crop is the reference, without impostors the bundled bank of `facecloak.masking.impostors`),
                      auto (reference when references are given, else flip), reference, flip.
    selection         topk, stratified (grid cells in proportion to relevance), sampled (probability ~ P^gamma).
    restrict_to_face  select only inside the parsed face region.
    """

    method: str = "layercam"
    layers: str | tuple[str, ...] | Mapping[str, tuple[str, ...]] = "default"
    target: str = "contrast"
    selection: str = "topk"
    budget: float = 1.0
    restrict_to_face: bool = True
    common_template: str = "arcface112"
    grid: int = 8
    gamma: float = 1.0
    batch_size: int = 16
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_budget(self.budget)
        if self.target not in TARGETS:
            raise ConfigError(f"unknown LEAM target {self.target!r}; choose one of {', '.join(TARGETS)}")
        leam.METHODS.get(self.method)
        leam.SELECTORS.get(self.selection)
        TEMPLATES.get(self.common_template)

    def layers_for(self, model_id: str) -> tuple[str, ...]:
        if isinstance(self.layers, str):
            return get_spec(model_id).default_layers if self.layers == "default" else (self.layers,)
        if isinstance(self.layers, Mapping):
            return tuple(self.layers.get(model_id, get_spec(model_id).default_layers))
        return tuple(self.layers)


@dataclass(frozen=True)
class ModelMaps:
    """One model's LEAM maps of N faces, warped into the common template (each map a distribution)."""

    model: str
    layers: tuple[str, ...]
    layer_maps: np.ndarray  # (N, L, S, S) float32
    overall: np.ndarray  # (N, S, S) float32
    empty: tuple[tuple[int, str], ...]
    scores: np.ndarray  # (N,) target scores


def make_target(
    kind: str,
    model: nn.Module,
    x: torch.Tensor,
    references: torch.Tensor | None,
    impostors: torch.Tensor | None,
) -> leam.Target:
    """Identity target for the crops `x`: references are (N, D) per-face identity embeddings (not this photo's).

    contrast without references uses the mirrored crop's embedding as the identity reference.
    """
    if kind == "auto":
        kind = "reference" if references is not None else "flip"
    if kind == "flip":
        return leam.flip_target(model, x)
    if kind == "contrast" and references is None:
        references = leam.flip_target(model, x).reference
    if references is None:
        raise ConfigError(f"LEAM target {kind!r} needs reference embeddings (other photos of the person)")
    if kind == "reference":
        return leam.CosineTo(references)
    if impostors is None or len(impostors) == 0:
        raise ConfigError("LEAM target 'contrast' needs impostor centroids (photos of other people)")
    return leam.Contrast(references, impostors)


def model_maps(
    model_id: str,
    model: nn.Module,
    crops: np.ndarray | torch.Tensor,
    settings: LeamSettings,
    *,
    references: torch.Tensor | None = None,
    impostors: torch.Tensor | None = None,
) -> ModelMaps:
    """LEAM maps of `crops` in the common template (numpy, on the CPU).

    crops: uint8 (N, s, s, 3) RGB in the model's template (moved to the model's device), or the model input itself,
    float32 (N, 3, s, s) in 0-255 on the model's device (see `facecloak.models.to_tensor`). References and impostors
    move to that device.
    """
    spec = get_spec(model_id)
    x = crops if isinstance(crops, torch.Tensor) else to_tensor(crops).to(model_device(model))
    references = references.to(x.device) if references is not None else None
    impostors = impostors.to(x.device) if impostors is not None else None
    if settings.target == "contrast" and impostors is None:
        refs = references if references is not None else leam.flip_target(model, x).reference
        impostors = impostors_for(model_id, model, refs)
        references = refs
    target = make_target(settings.target, model, x, references, impostors)
    layers = settings.layers_for(model_id)
    rel = leam.compute_relevance(model, x, target, layers, settings.method, batch_size=settings.batch_size)
    layer_maps = rel.layer_maps.cpu().numpy()
    overall = rel.overall.cpu().numpy()
    if spec.template != settings.common_template:
        layer_maps = np.stack(
            [np.stack([_warp(m, spec.template, settings.common_template) for m in per]) for per in layer_maps]
        )
        overall = np.stack([_warp(m, spec.template, settings.common_template) for m in overall])
    return ModelMaps(model_id, layers, layer_maps.astype(np.float32), overall.astype(np.float32), rel.empty,
                     rel.scores.cpu().numpy())


def _warp(p: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Warp a distribution between templates and renormalise (mass outside the destination crop is lost)."""
    q = np.clip(warp_between_templates(p, src, dst), 0, None)
    total = q.sum()
    return (q / total).astype(np.float32) if total > 0 else q.astype(np.float32)


def ensemble(maps: Sequence[ModelMaps]) -> np.ndarray:
    """Equal-weight mean of several models' overall maps (N, S, S), each face renormalised."""
    if not maps:
        raise ConfigError("an ensemble needs at least one source model")
    return np.stack([leam.ensemble_maps([m.overall[i] for m in maps]) for i in range(len(maps[0].overall))])


def select_pixels(
    overall: np.ndarray,
    settings: LeamSettings,
    *,
    region: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Boolean masks (N, S, S) of the selected pixels of each map, in the common template: `settings.budget`
    percent of each face's region (of the whole template when `restrict_to_face` is off or `region` is None)."""
    p = torch.from_numpy(np.ascontiguousarray(overall, dtype=np.float32))
    reg = None if region is None or not settings.restrict_to_face else torch.from_numpy(np.asarray(region, bool))
    selector = leam.SELECTORS.get(settings.selection)
    # Each selector takes the options it declares (grid, gamma, a seeded generator); a new registered selector
    # gets them the same way.
    offered = {
        "grid": (settings.grid, settings.grid),
        "gamma": settings.gamma,
        "generator": torch.Generator().manual_seed(seed),
    }
    accepted = inspect.signature(selector).parameters
    options = {name: value for name, value in offered.items() if name in accepted}
    mask = selector(p, settings.budget, region=reg, **options)
    return np.asarray(mask, dtype=bool)
