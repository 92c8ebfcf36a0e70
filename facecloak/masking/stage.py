"""The one masking stage: which pixels of each face to change, shared by `protect` and `explain`.

Steps, each with one representation of its data:

1. `align_faces`: each face's photo -> crop matrix is estimated once per template (`template_matrix`, five
   points, no warp) and each crop is warped once per template that a model needs, straight into the models'
   input tensor (float32 (F, 3, S, S), 0-255, on the device);
2. `face_maps`: LEAM maps of every model (`leamface.model_maps`), in the common template, numpy (F, S, S);
3. `ensemble` of the models' overall maps (the person's profile may stand in for their face);
4. `template_labels`: the parser's regions rasterised directly in the common template (F, S, S) uint8;
5. selection through `leam.SELECTORS` (`leamface.select_pixels`), restricted to the face region;
6. mapping back to the photo (`FaceMasks.union_in_photo`, `FaceMasks.mask_in_photo`): only the photo rectangle
   each face's crop covers is touched.

Coordinates: matrices map photo pixels -> crop pixels (OpenCV convention, see `facecloak.faces.align`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from facecloak.errors import ConfigError
from facecloak.faces.align import TEMPLATES, template_matrix, warp_crop, warp_to_photo
from facecloak.faces.face import Face
from facecloak.faces.parse import FaceParser, face_region, template_labels
from facecloak.masking.leamface import LeamSettings, ModelMaps, ensemble, model_maps, select_pixels
from facecloak.models import cached_model, embed, get_spec

ModelLoader = Callable[[str], nn.Module]


# ----------------------------------------------------------------------------------------------------------
# Devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; otherwise the named device (refused when it is not available).
    A CUDA device comes back with its index ("cuda" -> "cuda:0"), as tensors on it report it, so every cache keyed
    by device sees one name. On CUDA, TF32 convolutions and matmuls are turned off: the thresholds and the
    measured figures are float32 (cuDNN allows TF32 by default)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type != "cuda":
        return resolved
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return _indexed(resolved)


def _indexed(device: torch.device) -> torch.device:
    """"cuda" -> "cuda:<current>"; any other device as it is."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def model_on(model_id: str, device: torch.device, load_model: ModelLoader = cached_model) -> nn.Module:
    """A recognition model on `device`: CPU models are shared (`cached_model`), others cached per device (one entry
    per indexed device: "cuda" and "cuda:0" are the same)."""
    device = _indexed(torch.device(device))
    if load_model is cached_model:
        return cached_model(model_id) if device.type == "cpu" else cached_model(model_id, str(device))
    return load_model(model_id).to(device)


# ----------------------------------------------------------------------------------------------------------
# Step 1: alignment, once per template


@dataclass(frozen=True)
class AlignedBatch:
    """The faces of one photo in every template the stage needs.

    faces     the detections, in the order of every array below.
    matrices  template name -> (F, 2, 3) float64 photo -> crop matrices.
    inputs    template name -> float32 (F, 3, S, S) crops in 0-255 RGB on the device (the models' input contract);
              only for templates some model takes.
    """

    faces: tuple[Face, ...]
    matrices: Mapping[str, np.ndarray]
    inputs: Mapping[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.faces)

    def for_model(self, model_id: str) -> torch.Tensor:
        return self.inputs[get_spec(model_id).template]


def align_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    templates: Iterable[str],
    *,
    crop_templates: Iterable[str] = (),
    device: torch.device | str = "cpu",
    matrices: Mapping[str, np.ndarray] | None = None,
) -> AlignedBatch:
    """Matrices of `faces` in each template, and crops for each of `crop_templates` (uint8 RGB (H, W, 3) photo).

    Given `matrices` (from an earlier batch of the same faces, e.g. to measure a protected copy of the photo), they
    are reused, so both copies are cut out exactly alike.
    """
    faces = tuple(faces)
    crop_set = tuple(dict.fromkeys(crop_templates))
    names = tuple(dict.fromkeys([*templates, *crop_set]))
    mats: dict[str, np.ndarray] = {}
    for name in names:
        if matrices is not None and name in matrices:
            mats[name] = np.asarray(matrices[name], np.float64)
        else:
            template = TEMPLATES.get(name)
            mats[name] = np.stack([template_matrix(f, template) for f in faces]) if faces else np.zeros((0, 2, 3))
    inputs = {}
    for name in crop_set:
        size = TEMPLATES.get(name).size
        crops = np.stack([warp_crop(image, m, size) for m in mats[name]]) if faces else np.zeros((0, size, size, 3))
        inputs[name] = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()
    return AlignedBatch(faces, mats, inputs)


def model_templates(models: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(get_spec(m).template for m in models))


def embed_batch(
    batch: AlignedBatch, models: Sequence[str], device: torch.device, load_model: ModelLoader = cached_model
) -> dict[str, torch.Tensor]:
    """Raw embeddings (F, D) of each face under each model, on the device."""
    return {m: embed(model_on(m, device, load_model), batch.for_model(m)) for m in models}


# ----------------------------------------------------------------------------------------------------------
# Step 2: LEAM maps per model (faces with and without references)


def _with_target(settings: LeamSettings, target: str) -> LeamSettings:
    """`target` is what the face allows (reference with other photos, else flip). The contrast target works with
    both (it falls back to the mirrored crop and the bundled impostor bank), so it is kept as chosen."""
    if settings.target == "contrast":
        return settings
    if settings.target not in ("auto", target) and settings.target == "reference":
        raise ConfigError("the reference target needs other photos of the person: give several and --person")
    return LeamSettings(**{**settings.__dict__, "target": target})


def maps_for(
    model_id: str,
    model: nn.Module,
    x: torch.Tensor,
    settings: LeamSettings,
    references: torch.Tensor | None,
) -> ModelMaps:
    """Maps of all faces; faces with a reference row use the reference target, the others the flip target.

    references: (F, D) identity embeddings, a row of NaN for a face without one, or None for no face.
    """
    if references is None:
        return model_maps(model_id, model, x, _with_target(settings, "flip"))
    known = ~torch.isnan(references).any(dim=1).cpu()
    if bool(known.all()):
        return model_maps(model_id, model, x, _with_target(settings, "reference"), references=references)
    # Mixed: e.g. the person's face and a bystander in one photo. Two calls, results put back in face order.
    flags = known.numpy()
    parts = {
        flag: model_maps(
            model_id, model, x[torch.from_numpy(idx).to(x.device)],
            _with_target(settings, "reference" if flag else "flip"),
            references=references[torch.from_numpy(idx).to(references.device)] if flag else None,
        )
        for flag, idx in ((True, flags), (False, ~flags))
        if idx.any()
    }
    order = np.concatenate([np.flatnonzero(flags), np.flatnonzero(~flags)])
    inverse = np.argsort(order)
    first = next(iter(parts.values()))
    cat = {k: np.concatenate([getattr(p, k) for p in parts.values()])[inverse]
           for k in ("layer_maps", "overall", "scores")}
    offset = {True: 0, False: int(flags.sum())}
    empty = tuple((int(order[offset[flag] + i]), name) for flag, p in parts.items() for i, name in p.empty)
    return ModelMaps(model_id, first.layers, cat["layer_maps"], cat["overall"], empty, cat["scores"])


def face_maps(
    batch: AlignedBatch,
    models: Sequence[str],
    settings: LeamSettings,
    *,
    references: Mapping[str, torch.Tensor | None] | None = None,
    device: torch.device,
    load_model: ModelLoader = cached_model,
) -> list[ModelMaps]:
    """Each model's LEAM maps of the batch's faces, in the common template."""
    refs = references or {}
    return [maps_for(m, model_on(m, device, load_model), batch.for_model(m), settings, refs.get(m)) for m in models]


# ----------------------------------------------------------------------------------------------------------
# The whole stage


@dataclass(frozen=True)
class FaceMasks:
    """What the masking stage decided for the faces of one photo (template space unless named otherwise).

    batch           the faces aligned in every template used (matrices and model inputs).
    maps            per model, its LEAM maps (layer maps and overall map) in the common template.
    overall         (F, S, S) float32 ensemble map per face (a distribution), after any profile override.
    labels          (F, S, S) uint8 parser labels (codes of `facecloak.faces.parse.REGIONS`).
    template_masks  (F, S, S) bool: the selected pixels.
    common          name of the common template.
    """

    batch: AlignedBatch
    maps: tuple[ModelMaps, ...]
    overall: np.ndarray
    labels: np.ndarray
    template_masks: np.ndarray
    common: str

    @property
    def common_matrices(self) -> np.ndarray:
        """(F, 2, 3) photo -> common-template matrices."""
        return np.asarray(self.batch.matrices[self.common])

    def mask_in_photo(self, index: int, shape: tuple[int, ...]) -> np.ndarray:
        """Face `index`'s selection as a (H, W) bool mask of the photo."""
        return warp_to_photo(self.template_masks[index], self.common_matrices[index], shape, interpolation="nearest")

    def union_in_photo(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(mask (H, W) bool: union over faces, heatmap (H, W) float32 in [0, 1]: max over faces of each face's
        overall map scaled by its peak, per face the flat photo indices of its mask).

        One full-resolution map at a time: 20 faces on a 48 MP photo must not hold 20 full-size masks and maps.
        """
        mask = np.zeros(shape[:2], bool)
        heat = np.zeros(shape[:2], np.float32)
        face_pixels: list[np.ndarray] = []
        for i, (o, matrix) in enumerate(zip(self.overall, self.common_matrices, strict=True)):
            face_mask = self.mask_in_photo(i, shape)
            face_pixels.append(np.flatnonzero(face_mask))
            mask |= face_mask
            del face_mask
            face_heat = warp_to_photo(o / max(o.max(), 1e-12), matrix, shape, interpolation="bilinear")
            np.maximum(heat, face_heat, out=heat)
            del face_heat
        return mask, heat, face_pixels


def mask_faces(
    image: np.ndarray,
    batch: AlignedBatch,
    *,
    models: Sequence[str],
    parser: FaceParser,
    settings: LeamSettings,
    references: Mapping[str, torch.Tensor | None] | None = None,
    overall_override: Mapping[int, np.ndarray] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    load_model: ModelLoader = cached_model,
) -> FaceMasks:
    """LEAM maps -> ensemble -> face region -> selection for the faces of `batch` (aligned from `image`).

    references:        model id -> (F, D) identity embeddings (NaN rows: no reference for that face), or None.
    overall_override:  face index -> (S, S) distribution used instead of the ensemble (a person's saved profile).
    """
    if not len(batch):
        raise ConfigError("the masking stage needs at least one face")
    common = settings.common_template
    if common not in batch.matrices:
        raise ConfigError(f"the aligned batch has no matrices for the common template {common!r}")
    dev = torch.device(device)
    maps = face_maps(batch, models, settings, references=references, device=dev, load_model=load_model)
    overall = ensemble(maps)
    for index, profile in (overall_override or {}).items():
        overall[index] = profile
    size = TEMPLATES.get(common).size
    labels = np.stack([
        template_labels(parser, image, face, matrix, size)
        for face, matrix in zip(batch.faces, batch.matrices[common], strict=True)
    ])
    template_masks = select_pixels(overall, settings, region=face_region(labels), seed=seed)
    return FaceMasks(batch, tuple(maps), overall, labels, template_masks, common)
