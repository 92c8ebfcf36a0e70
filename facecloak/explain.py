"""`facecloak explain`, library part: LEAM heatmaps, the selected pixels and their facial regions, per face.

Pure with respect to files: takes a photo and its detected faces, returns arrays (the CLI writes the PNGs and
JSON). Coordinate spaces:

- template space: the common template of `LeamSettings` (ArcFace 112 by default); every model's maps are warped
  into it, so models can be averaged and masks and parser labels line up pixel for pixel;
- photo space: the input photo's (H, W); maps go back with `warp_to_photo` (bilinear for heatmaps, nearest for the
  mask), using the photo -> template matrix of the alignment.

Heatmaps in photo space are scaled to [0, 1] by their maximum (for display); the distributions themselves (sum 1
over the template's pixels) stay in `FaceExplanation.template_overall` and `template_layers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facecloak.errors import ConfigError, ImageError
from facecloak.faces.align import warp_to_photo
from facecloak.faces.face import Face
from facecloak.faces.parse import FaceParser, face_region, region_shares
from facecloak.masking.leamface import LeamSettings
from facecloak.masking.stage import align_faces, mask_faces, model_templates, resolve_device
from facecloak.models import cached_model

ModelLoader = Callable[[str], nn.Module]


@dataclass(frozen=True)
class FaceExplanation:
    """LEAM explanation of one face.

    layer_heatmaps   "model/layer" -> (H, W) float32 in [0, 1], photo space (each layer map scaled by its max).
    model_heatmaps   model id -> (H, W) float32 in [0, 1]: that model's overall map, photo space.
    heatmap          (H, W) float32 in [0, 1]: the ensemble of the models' overall maps, photo space.
    mask             (H, W) bool: the selected pixels (top-k % of the face region by default), photo space.
    template_overall (S, S) float32 distribution: the ensemble map in the common template.
    template_layers  "model/layer" -> (S, S) float32 distribution (all zeros for an empty layer).
    template_mask    (S, S) bool: the selection in the common template.
    template_labels  (S, S) uint8 parser labels in the common template (codes of `facecloak.faces.parse.REGIONS`).
    region_shares    region name -> fraction of the template mask's pixels in that region (sums to 1).
    target           the LEAM target used: "reference" (other photos of the person) or "flip".
    empty_layers     "model/layer" names whose relevance was all zero (left out of the overall map).
    """

    face: Face
    models: tuple[str, ...]
    layer_heatmaps: dict[str, np.ndarray]
    model_heatmaps: dict[str, np.ndarray]
    heatmap: np.ndarray
    mask: np.ndarray
    template_overall: np.ndarray
    template_layers: dict[str, np.ndarray]
    template_mask: np.ndarray
    template_labels: np.ndarray
    region_shares: dict[str, float]
    target: str
    empty_layers: tuple[str, ...] = ()

    @property
    def face_region_pixels(self) -> int:
        """Pixels of the parsed face region in the common template (the budget is a percentage of these)."""
        return int(face_region(self.template_labels).sum())

    def summary(self, budget: float) -> dict[str, object]:
        """JSON-ready facts about this face (no maps, no embeddings)."""
        return {
            "box": [round(v, 2) for v in self.face.box],
            "score": round(self.face.score, 4),
            "models": list(self.models),
            "target": self.target,
            "budget_percent": budget,
            "mask_pixels_template": int(self.template_mask.sum()),
            "face_region_pixels_template": self.face_region_pixels,
            "mask_pixels_photo": int(self.mask.sum()),
            "region_shares": self.region_shares,
            "empty_layers": list(self.empty_layers),
        }


def to_heatmap(p: np.ndarray, matrix: np.ndarray, photo_shape: tuple[int, ...]) -> np.ndarray:
    """A (S, S) template map -> (H, W) float32 in [0, 1] on the photo: scaled by its max, warped bilinearly.

    `matrix` is the photo -> template matrix of the face's alignment. An all-zero map stays all zero.
    """
    peak = float(np.max(p)) if p.size else 0.0
    scaled = np.asarray(p, np.float32) / peak if peak > 0 else np.zeros_like(p, np.float32)
    return np.clip(warp_to_photo(scaled, matrix, photo_shape, interpolation="bilinear"), 0.0, 1.0)


def heat_overlay(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """The photo (uint8 RGB (H, W, 3)) blended with a heatmap in [0, 1] (H, W) through the inferno colour map."""
    import matplotlib

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected a uint8 RGB photo (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if heat.shape != rgb.shape[:2]:
        raise ImageError(f"heatmap shape {heat.shape} does not match the photo's {rgb.shape[:2]}")
    colours = matplotlib.colormaps["inferno"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    mixed = (1.0 - opacity) * rgb.astype(np.float32) + opacity * colours.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A bool mask (H, W) as a black-and-white uint8 RGB image (selected pixels white)."""
    gray = np.where(np.asarray(mask, bool), np.uint8(255), np.uint8(0))
    return np.repeat(gray[..., None], 3, axis=2)


def explain_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    *,
    models: Sequence[str],
    parser: FaceParser,
    settings: LeamSettings | None = None,
    references: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    load_model: ModelLoader = cached_model,
    device: str | torch.device = "cpu",
) -> list[FaceExplanation]:
    """Explain each face of a uint8 RGB photo (H, W, 3) with the given recognition models.

    references: optional model id -> (F, D) identity embeddings, one row per face (a row of NaN: no reference for
                that face). A face with a reference is explained against it (the "reference" target: e.g. the
                centroid of the person's other photos); a face without one against its mirrored crop ("flip").
    seed:       for the `sampled` selection strategy.
    device:     where the recognition models run ("cpu", "cuda", "cuda:N" or "auto").
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"explain expects a uint8 RGB photo (H, W, 3), got {image.dtype} {image.shape}")
    models = tuple(models)
    if not models:
        raise ConfigError("explain needs at least one recognition model")
    if not faces:
        return []
    settings = settings or LeamSettings()
    dev = resolve_device(device)
    refs: dict[str, torch.Tensor | None] = {}
    for m in models:
        row = None if references is None or m not in references else np.asarray(references[m], np.float32)
        if row is not None and row.shape[0] != len(faces):
            raise ConfigError(f"references for {m} have {row.shape[0]} rows for {len(faces)} faces")
        refs[m] = None if row is None else torch.from_numpy(row)
    batch = align_faces(image, faces, (settings.common_template,), crop_templates=model_templates(models), device=dev)
    stage = mask_faces(image, batch, models=models, parser=parser, settings=settings, references=refs, seed=seed,
                       device=dev, load_model=load_model)
    maps, overall, labels, template_masks = stage.maps, stage.overall, stage.labels, stage.template_masks

    out: list[FaceExplanation] = []
    shape = image.shape[:2]
    for i, (face, matrix) in enumerate(zip(faces, stage.common_matrices, strict=True)):
        template_layers = {f"{mm.model}/{layer}": mm.layer_maps[i, j] for mm in maps for j, layer in
                           enumerate(mm.layers)}
        has_ref = [refs[m] is not None and not bool(torch.isnan(refs[m][i]).any()) for m in models]  # type: ignore[index]
        out.append(FaceExplanation(
            face=face,
            models=models,
            layer_heatmaps={k: to_heatmap(v, matrix, shape) for k, v in template_layers.items()},
            model_heatmaps={mm.model: to_heatmap(mm.overall[i], matrix, shape) for mm in maps},
            heatmap=to_heatmap(overall[i], matrix, shape),
            mask=stage.mask_in_photo(i, shape),
            template_overall=overall[i],
            template_layers=template_layers,
            template_mask=template_masks[i],
            template_labels=labels[i],
            region_shares=region_shares(template_masks[i], labels[i]),
            target="reference" if all(has_ref) else "flip",
            empty_layers=tuple(f"{mm.model}/{layer}" for mm in maps for index, layer in mm.empty if index == i),
        ))
    return out


def leave_one_out_references(embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per model, (N, D) embeddings of N >= 2 photos of one person -> (N, D) leave-this-photo-out centroids.

    Rows that are NaN (no face in that photo) stay NaN and are left out of the others' centroids.
    """
    import leam

    out: dict[str, np.ndarray] = {}
    for m, emb in embeddings.items():
        e = np.asarray(emb, np.float32)
        ok = ~np.isnan(e).any(axis=1)
        if ok.sum() < 2:
            raise ConfigError("a person's reference needs at least two photos in which a face was found")
        refs = np.full_like(e, np.nan)
        refs[ok] = leam.reference_target(torch.from_numpy(e[ok])).reference.numpy()
        out[m] = refs
    return out
