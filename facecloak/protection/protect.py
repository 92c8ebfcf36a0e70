"""`facecloak.protect` (defined here, in `facecloak.protection.protect`): detect faces, find the pixels that recognition
relies on most, change only those.

Pure with respect to files: takes and returns arrays. The CLI and the albumentations transform are thin shells.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

import leam
from facecloak.errors import ConfigError
from facecloak.faces.align import align
from facecloak.faces.detect import default_detector
from facecloak.faces.face import Face
from facecloak.faces.parse import default_parser
from facecloak.masking.leamface import LeamSettings, ModelMaps, ensemble, model_maps
from facecloak.masking.stage import (
    align_faces,
    embed_batch,
    mask_faces,
    model_on,
    model_templates,
    resolve_device,
)
from facecloak.models import embed_crops, get_spec
from facecloak.protection.cloak import CloakSettings, SourceModel
from facecloak.protection.fills import get_fill
from facecloak.verification.thresholds import load_thresholds

DEFAULT_MODELS = ("mbf-arc", "mbf-tf", "mobileface")


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
    # Flat photo indices of the pixels changed for this face (its share of the result's mask).
    changed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)


@dataclass(frozen=True)
class ProtectResult:
    image: np.ndarray  # uint8 (H, W, 3) RGB, protected
    mask: np.ndarray  # bool (H, W): the pixels the fill was allowed to change (a pruning cloak: those it changed)
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


def _person_refs(person: Person, model: str, n_faces: int, device: torch.device | str = "cpu") -> torch.Tensor:
    if model not in person.references:
        raise ConfigError(f"person {person.name!r} has no reference for model {model!r}; rebuild the profile")
    ref = torch.from_numpy(np.asarray(person.references[model], np.float32)).to(device)
    return ref[None].expand(n_faces, -1)


def _match_person(person: Person, clean: dict[str, torch.Tensor]) -> int:
    """Index of the face most similar to the person (mean cosine over models)."""
    sims = [
        torch.nn.functional.cosine_similarity(clean[m], _person_refs(person, m, len(clean[m]), clean[m].device), dim=1)
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
    device: str | torch.device = "cpu",
) -> ProtectResult:
    """Protect every face of `image` (uint8 RGB (H, W, 3)); returns the new image and what was done.

    budget: percent of each face's region (in the common template) whose pixels may change.
    fill:   a fill from `facecloak.protection.fills.FILLS`: an occlusion fill or "cloak" (optimised pixel values).
    person: identity references (and optionally a profile) for the person these photos show.
    faces:  the faces to protect (None: detect them); the result's `faces` follow their order (with
            `largest_only`, the largest one alone).
    device: where the recognition models run: "cpu" (default), "cuda", "cuda:N" or "auto" (CUDA when present).
            Detection and parsing stay on the CPU; the LEAM maps, the cloak's optimisation and the measures run there.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"protect expects a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    fill_spec = get_fill(fill)
    models = tuple(models)
    for m in models:
        get_spec(m)
    dev = resolve_device(device)
    settings = replace(settings or LeamSettings(), budget=budget)  # validated once, by LeamSettings
    if faces is None:
        faces = (detector or default_detector()).detect(image)
    faces = sorted(faces, key=lambda f: f.area, reverse=True)[:1] if largest_only else list(faces)
    empty = np.zeros(image.shape[:2], bool)
    if not faces:
        return ProtectResult(image.copy(), empty, (), None, fill, budget, models, notes=("no face found",))
    parser = parser or default_parser()

    # Masking: one alignment per template, the clean embeddings, then the masking stage.
    batch = align_faces(image, faces, (settings.common_template,), crop_templates=model_templates(models), device=dev)
    clean = embed_batch(batch, models, dev)
    match = _match_person(person, clean) if person is not None else -1
    refs = {m: (_person_refs(person, m, len(faces), dev) if person is not None else clean[m]) for m in models}
    # Relevance: a person's saved profile for their face, the ensemble of the source models' maps otherwise.
    use_refs = person is not None and settings.target in ("auto", "reference", "contrast")
    override = {match: person.profile_overall} if person is not None and person.profile_overall is not None else {}
    masks = mask_faces(
        image, batch, models=models, parser=parser, settings=settings,
        references=dict(refs) if use_refs else None, overall_override=override, seed=seed, device=dev,
    )
    mask, heat, face_pixels = masks.union_in_photo(image.shape)

    # Fill.
    steps, pruned = 0, False
    if fill_spec.needs_models:
        sources = []
        for m in models:
            thr = load_thresholds(m)
            # The cloak runs on the models' device: its pixel tensors follow the references there.
            sources.append(SourceModel(
                id=m, module=model_on(m, dev), size=get_spec(m).input_size,
                matrices=np.asarray(batch.matrices[get_spec(m).template]),
                references=refs[m], threshold=thr.at(far) if thr else None,
            ))
        cloak_settings = cloak_settings or CloakSettings()
        protected, steps = fill_spec.function(image, mask, sources, cloak_settings, seed=seed)
        pruned = cloak_settings.keep < 1  # the cloak chose its support inside the selection
    else:
        protected = fill_spec(image, mask, rng=np.random.default_rng(seed))
    changed = (protected != image).any(2)
    if pruned:  # the mask is what the cloak kept
        mask &= changed
    face_changed = [pixels[changed.flat[pixels]] for pixels in face_pixels]

    # Measure, on crops cut out exactly as the clean ones were.
    after = similarities(protected, faces, models, refs, matrices=batch.matrices)
    before = {m: torch.nn.functional.cosine_similarity(clean[m], refs[m], dim=1).cpu().numpy() for m in models}
    outcomes = tuple(
        FaceOutcome(
            face=f,
            pixels_changed=len(face_changed[i]),
            cosine_before={m: float(before[m][i]) for m in models},
            cosine_after={m: float(after[m][i]) for m in models},
            person_match=i == match,
            changed=face_changed[i],
        )
        for i, f in enumerate(faces)
    )
    return ProtectResult(protected, mask, outcomes, heat, fill, budget, models, steps, references=refs)


def similarities(
    image: np.ndarray,
    faces: Sequence[Face],
    models: Sequence[str],
    references: dict[str, torch.Tensor],
    *,
    matrices: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Cosine of each face of `image` (aligned with the given detections) to its reference, per model.

    The models run on the references' device. `matrices` (template -> (F, 2, 3), e.g. `AlignedBatch.matrices`)
    skip re-estimating the alignment.
    """
    if not models:
        return {}
    device = next(iter(references.values())).device
    batch = align_faces(image, faces, (), crop_templates=model_templates(models), device=device, matrices=matrices)
    emb = embed_batch(batch, models, device)
    return {
        m: torch.nn.functional.cosine_similarity(emb[m], references[m].to(emb[m]), dim=1).cpu().numpy()
        for m in models
    }


def build_person(
    name: str,
    photos: Sequence[np.ndarray],
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    settings: LeamSettings | None = None,
    photo_hashes: Sequence[str] | None = None,
    detector=None,
    device: str | torch.device = "cpu",
) -> tuple[Person, leam.Profile]:
    """Identity centroids and the LEAM profile of the person shown (largest face) in `photos`.

    The profile is the mean ensemble map (common template) of the photos, each explained against the
    leave-this-photo-out centroid of the others (flip target for a single photo). Photos without a face are
    skipped; the centroids stay in memory (never written), the profile holds relevance maps only.
    """
    settings = settings or LeamSettings()
    detector = detector or default_detector()
    dev = resolve_device(device)
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
        model = model_on(m, dev)
        emb = embed_crops(model, crops)
        unit = torch.nn.functional.normalize(emb, dim=1)
        refs[m] = torch.nn.functional.normalize(unit.mean(0), dim=0).numpy()
        loo = leam.reference_target(emb).reference if len(usable) >= 2 else None
        # With one photo there is no "other photos" centroid: reference falls back to the mirrored photo.
        single = loo is None and settings.target == "reference"
        per_photo = replace(settings, target="flip") if single else settings
        maps.append(model_maps(m, model, crops, per_photo, references=loo))
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
