"""`facecloak.protect` (defined here, in `facecloak.protection`): detect faces, find the pixels that recognition
relies on most, change only those.

Pure with respect to files: takes and returns arrays. The CLI and the albumentations transform are thin shells.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

import leam
from facecloak.align import align, warp_to_photo
from facecloak.cloak import CloakSettings, SourceModel, cloak
from facecloak.errors import ConfigError
from facecloak.fills import FILLS
from facecloak.leamface import LeamSettings, ModelMaps, embed_crops, ensemble, model_maps, select_pixels
from facecloak.models import cached_model, get_spec
from facecloak.parse import face_region, labels_in_template
from facecloak.thresholds import load_thresholds
from facecloak.types import Face

DEFAULT_MODELS = ("mbf-arc", "mbf-tf", "mobileface")
FILL_NAMES = (*FILLS.names(), "cloak")


@dataclass(frozen=True)
class Person:
    """Who the photos show: per-model identity centroids (L2-normalised, kept in memory only) and,
    optionally, a saved LEAM profile whose mean map is reused as the person-specific relevance."""

    name: str
    references: dict[str, np.ndarray]  # model id -> (D,)
    profile_overall: np.ndarray | None = None  # (S, S) distribution in the common template
    n_photos: int = 0


@dataclass(frozen=True)
class FaceOutcome:
    face: Face
    pixels_changed: int
    cosine_before: dict[str, float]  # model id -> cosine of the clean face to the reference
    cosine_after: dict[str, float]  # model id -> cosine of the protected face to the reference
    person_match: bool = False  # this face was matched to the given person


@dataclass(frozen=True)
class ProtectResult:
    image: np.ndarray  # uint8 (H, W, 3) RGB, protected
    mask: np.ndarray  # bool (H, W): the pixels the fill was allowed to change
    faces: tuple[FaceOutcome, ...]
    heatmap: np.ndarray | None  # float32 (H, W) in [0, 1]: LEAM relevance over the photo (max over faces)
    fill: str
    budget: float
    models: tuple[str, ...]
    cloak_steps: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Identity references per model (F, D), kept in memory only so callers can re-measure decoded outputs.
    references: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pixels_changed(self) -> int:
        return int(self.mask.sum())


@lru_cache(maxsize=1)
def default_detector():
    """MTCNN with default settings, loaded once per process."""
    from facecloak.detect import load_detector

    return load_detector("mtcnn")


@lru_cache(maxsize=1)
def default_parser():
    """The FaceMesh parser, loaded once per process."""
    from facecloak.parse import get_parser

    return get_parser("facemesh")


def _clean_references(models: Sequence[str], crops: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {m: embed_crops(cached_model(m), crops[m]) for m in models}


def _person_refs(person: Person, model: str, n_faces: int) -> torch.Tensor:
    if model not in person.references:
        raise ConfigError(f"person {person.name!r} has no reference for model {model!r}; rebuild the profile")
    return torch.from_numpy(np.asarray(person.references[model], np.float32))[None].expand(n_faces, -1)


def _match_person(person: Person, clean: dict[str, torch.Tensor]) -> int:
    """Index of the face most similar to the person (mean cosine over models)."""
    sims = [
        torch.nn.functional.cosine_similarity(clean[m], _person_refs(person, m, len(clean[m])), dim=1)
        for m in clean
        if m in person.references
    ]
    return int(torch.stack(sims).mean(0).argmax()) if sims else 0


def protect(
    image: np.ndarray,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    budget: float = 1.0,
    fill: str = "black",
    person: Person | None = None,
    seed: int = 0,
    settings: LeamSettings | None = None,
    cloak_settings: CloakSettings | None = None,
    faces: Sequence[Face] | None = None,
    detector=None,
    parser=None,
    largest_only: bool = False,
    far: float = 1e-3,
) -> ProtectResult:
    """Protect every face of `image` (uint8 RGB (H, W, 3)); returns the new image and what was done.

    budget: percent of each face's region (in the common template) whose pixels may change.
    fill:   an occlusion fill from `facecloak.fills.FILLS` or "cloak" (optimised pixel values).
    person: identity references (and optionally a profile) for the person these photos show.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"protect expects a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    if fill not in FILL_NAMES:
        FILLS.get(fill)  # raises with suggestions
    models = tuple(models)
    for m in models:
        get_spec(m)
    settings = settings or LeamSettings()
    if budget != settings.budget:
        settings = LeamSettings(**{**settings.__dict__, "budget": budget})
    if faces is None:
        faces = (detector or default_detector()).detect(image)
    faces = sorted(faces, key=lambda f: f.area, reverse=True)[:1] if largest_only else list(faces)
    empty = np.zeros(image.shape[:2], bool)
    if not faces:
        return ProtectResult(image.copy(), empty, (), None, fill, budget, models, notes=("no face found",))
    parser = parser or default_parser()

    common = settings.common_template
    common_aligned = [align(image, f, common) for f in faces]
    crops = {m: np.stack([align(image, f, get_spec(m).template).crop for f in faces]) for m in models}
    clean = _clean_references(models, crops)
    match = _match_person(person, clean) if person is not None else -1
    refs = {m: (_person_refs(person, m, len(faces)) if person is not None else clean[m]) for m in models}

    # Relevance: a person's saved profile for their face, the ensemble of the source models' maps otherwise.
    use_refs = person is not None and settings.target in ("auto", "reference", "contrast")
    maps: list[ModelMaps] = [
        model_maps(m, cached_model(m), crops[m], settings, references=refs[m] if use_refs else None) for m in models
    ]
    overall = ensemble(maps)
    if person is not None and person.profile_overall is not None:
        overall[match] = person.profile_overall

    size = int(common_aligned[0].crop.shape[0])
    regions = np.stack(
        [face_region(labels_in_template(parser.parse(image, f), a.matrix, size)) for f, a in
         zip(faces, common_aligned, strict=True)]
    )
    template_masks = select_pixels(overall, settings, region=regions, seed=seed)
    # One full-resolution map at a time: 20 faces on a 48 MP photo must not hold 20 full-size masks and maps.
    mask = np.zeros(image.shape[:2], bool)
    heat = np.zeros(image.shape[:2], np.float32)
    face_pixels: list[np.ndarray] = []  # flat indices of each face's mask (sparse: a few % of the face)
    for tm, o, a in zip(template_masks, overall, common_aligned, strict=True):
        face_mask = warp_to_photo(tm, a.matrix, image.shape[:2], interpolation="nearest").astype(bool)
        face_pixels.append(np.flatnonzero(face_mask))
        mask |= face_mask
        del face_mask
        face_heat = warp_to_photo(o / max(o.max(), 1e-12), a.matrix, image.shape[:2], interpolation="bilinear")
        np.maximum(heat, face_heat, out=heat)
        del face_heat

    steps = 0
    if fill == "cloak":
        sources = []
        for m in models:
            thr = load_thresholds(m)
            sources.append(SourceModel(
                id=m, module=cached_model(m), size=get_spec(m).input_size,
                matrices=np.stack([align(image, f, get_spec(m).template).matrix for f in faces]),
                references=refs[m], threshold=thr.at(far) if thr else None,
            ))
        protected, steps = cloak(image, mask, sources, cloak_settings or CloakSettings(), seed=seed)
    else:
        protected = FILLS.get(fill)(image, mask, rng=np.random.default_rng(seed))

    after = similarities(protected, faces, models, refs)
    before = {m: torch.nn.functional.cosine_similarity(clean[m], refs[m], dim=1).numpy() for m in models}
    changed = (protected != image).any(2)
    outcomes = tuple(
        FaceOutcome(
            face=f,
            pixels_changed=int(changed.flat[face_pixels[i]].sum()),
            cosine_before={m: float(before[m][i]) for m in models},
            cosine_after={m: float(after[m][i]) for m in models},
            person_match=i == match,
        )
        for i, f in enumerate(faces)
    )
    return ProtectResult(protected, mask, outcomes, heat, fill, budget, models, steps, references=refs)


def similarities(
    image: np.ndarray, faces: Sequence[Face], models: Sequence[str], references: dict[str, torch.Tensor]
) -> dict[str, np.ndarray]:
    """Cosine of each face of `image` (aligned with the given detections) to its reference, per model."""
    out = {}
    for m in models:
        crops = np.stack([align(image, f, get_spec(m).template).crop for f in faces])
        emb = embed_crops(cached_model(m), crops)
        out[m] = torch.nn.functional.cosine_similarity(emb, references[m].to(emb), dim=1).numpy()
    return out


def build_person(
    name: str,
    photos: Sequence[np.ndarray],
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    settings: LeamSettings | None = None,
    photo_hashes: Sequence[str] | None = None,
    detector=None,
) -> tuple[Person, leam.Profile]:
    """Identity centroids and the LEAM profile of the person shown (largest face) in `photos`.

    The profile is the mean ensemble map (common template) of the photos, each explained against the
    leave-this-photo-out centroid of the others (flip target for a single photo). Photos without a face are
    skipped; the centroids stay in memory (never written), the profile holds relevance maps only.
    """
    settings = settings or LeamSettings()
    detector = detector or default_detector()
    hashes = list(photo_hashes) if photo_hashes is not None else [str(i) for i in range(len(photos))]
    found = [
        (img, h, max(detector.detect(img), key=lambda f: f.area, default=None))
        for img, h in zip(photos, hashes, strict=True)
    ]
    usable = [(img, h, f) for img, h, f in found if f is not None]
    if not usable:
        raise ConfigError(f"no face found in any of the {len(photos)} photos of {name!r}")
    refs: dict[str, np.ndarray] = {}
    maps: list[ModelMaps] = []
    for m in models:
        crops = np.stack([align(img, f, get_spec(m).template).crop for img, _, f in usable])
        emb = embed_crops(cached_model(m), crops)
        unit = torch.nn.functional.normalize(emb, dim=1)
        refs[m] = torch.nn.functional.normalize(unit.mean(0), dim=0).numpy()
        loo = leam.reference_target(emb).reference if len(usable) >= 2 else None
        # With one photo there is no "other photos" centroid: reference falls back to the mirrored photo.
        single = loo is None and settings.target == "reference"
        per_photo = LeamSettings(**{**settings.__dict__, "target": "flip"}) if single else settings
        maps.append(model_maps(m, cached_model(m), crops, per_photo, references=loo))
    mean = ensemble(maps).mean(0)
    profile = leam.Profile(
        overall=mean / mean.sum(),
        layer_maps=np.zeros((0, *mean.shape), np.float32),
        model_ids=tuple(models),
        layers=(),
        method=settings.method,
        target=settings.target,
        photo_hashes=tuple(h for _, h, _ in usable),
        template=settings.common_template,
        n_photos=len(usable),
    )
    return Person(name, refs, profile.overall, len(usable)), profile


def protect_batch(images: Iterable[np.ndarray], **options: Any) -> Iterator[ProtectResult]:
    """`protect` over many images, lazily (one result at a time, models loaded once per process).

    Options are those of `protect`; the same `seed` is used for every image, so results do not depend on the
    batch they were in.
    """
    for image in images:
        yield protect(image, **options)
