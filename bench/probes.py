"""Probes of the transfer benchmark: each variant's mask filled, written and read back, defended, re-detected.

One probe photo gives, per variant (the LEAM mask and its controls): the photo filled on the variant's pixels
(an occlusion fill or the sparse cloak), encoded and decoded as a user's file would be, passed through each
defence of the recipe, aligned (original detection or re-detection) for every target template, read by every
own-pipeline target, and the image quality of its LEAM variant. The masks themselves come from the masking stage
(`bench.transfer_run.TransferRun.template_masks`).

Coordinates: template masks are (S, S) in the common template; photo masks are (H, W) photo pixels. Images are
uint8 RGB.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from bench import controls as ctl
from bench.config import OWN_PREFIX, Defence
from bench.data import BenchPhoto, common_matrix
from bench.defences import apply_defence
from bench.stats import changed_share, psnr, ssim, ssim_local_change
from facecloak.faces.align import TEMPLATES, align, warp_to_photo
from facecloak.faces.face import Face
from facecloak.masking.stage import align_faces
from facecloak.protection.cloak import SourceModel
from facecloak.protection.fills import get_fill
from facecloak.verification.independent import get_independent, iou, match_faces, read_photo

if TYPE_CHECKING:
    from bench.transfer_run import TransferRun

CLOAK = "cloak"
LEAM = "leam"
NONE = "none"  # the defence name of the protected photo as written (no further processing)
CLEAN = "clean"  # variant: the unprotected probe (its dodging share is the target's false-reject rate)
DEFENCE_ONLY = "defence-only"  # variant: the clean photo under the defence (what the defence alone costs)


@dataclass
class Probe:
    """What one protected probe photo gives the targets: crops per template, defence and variant, and the
    quality numbers of its LEAM variant per defence (vs the original photo, inside the face box)."""

    index: int
    # template -> defence -> variant -> (S, S, 3) uint8 crop
    crops: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)
    # own-pipeline target -> defence -> variant -> unit embedding (None: that pipeline found no face there)
    own: dict[str, dict[str, dict[str, np.ndarray | None]]] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # defence -> psnr/ssim/changed_share
    variants: list[str] = field(default_factory=list)  # LEAM first, then the controls
    template_pixels: int = 0
    photo_pixels: int = 0
    cloak_steps: int = 0
    redetect_failed: dict[str, int] = field(default_factory=dict)  # defence -> 1 when the LEAM variant lost its face


# --------------------------------------------------------------------------------------------------------------
# Small pure helpers


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def encode_decode(image: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """The photo as a user would get it back from disk: encoded as PNG or JPEG (quality) in memory and decoded."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


def face_box_slices(face: Face, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the face's detection box, clipped to the photo (at least 7x7 for SSIM when possible)."""
    h, w = shape
    x0, y0 = max(math.floor(face.box[0]), 0), max(math.floor(face.box[1]), 0)
    x1, y1 = min(math.ceil(face.box[2]), w), min(math.ceil(face.box[3]), h)
    if x1 - x0 < 7 or y1 - y0 < 7:
        return slice(0, h), slice(0, w)
    return slice(y0, y1), slice(x0, x1)


def own_pipeline(target: str) -> str | None:
    """`own:dlib` -> `dlib`: a target that reads whole photos through its own pipeline; None for crop targets."""
    return target.removeprefix(OWN_PREFIX) if target.startswith(OWN_PREFIX) else None


def own_embeddings(image: np.ndarray, face: Face, pipelines: Sequence[str]) -> dict[str, np.ndarray | None]:
    """Per pipeline, the unit embedding of the face it finds at `face`'s place in `image` (None: not found).
    Detection and landmarks run once for all pipelines."""
    found = read_photo(image, [get_independent(p) for p in pipelines])
    return {p: (lambda f: None if f is None else f.embedding)(match_faces([face.box], found[p])[0]) for p in pipelines}


# --------------------------------------------------------------------------------------------------------------
# Fill, defences, re-detection


def fill_photo(
    run: TransferRun, image: np.ndarray, mask: np.ndarray, fill: str, members: tuple[str, ...], photo: BenchPhoto,
    budget: float, variant: str,
) -> tuple[np.ndarray, int]:
    """`image` with the pixels of `mask` filled; returns (photo, cloak steps). An occlusion fill of
    `facecloak.protection.fills.FILLS`, or the sparse cloak against the `members` (each with the
    leave-this-photo-out centroid of the person on that model and its threshold at the recipe's strictest FAR)."""
    rng = ctl.control_rng(run.recipe.seed, photo.index, budget, f"fill:{fill}:{variant}")
    spec = get_fill(fill)
    if not spec.needs_models:
        return spec(image, mask, rng=rng), 0
    settings = run.recipe.cloak
    strictest = min(run.recipe.evaluation.far)
    # the masking stage's alignment step: the matrices of the face in every member's template, without warping
    nets = [run.backend.network(m) for m in members]
    matrices = align_faces(image, [photo.face], [n.template for n in nets]).matrices
    sources = []
    for net in nets:
        ref = run.reference(net.id, photo.index)
        sources.append(SourceModel(
            id=net.id, module=net.module, size=TEMPLATES.get(net.template).size,
            matrices=np.asarray(matrices[net.template]),
            references=torch.from_numpy(ref[None].astype(np.float32)).to(run.backend.device),
            threshold=run.thresholds(net.id)[0][strictest],
        ))
    # torch warns on read-only arrays (decoded photos are): hand the cloak a writable copy
    writable = image if image.flags.writeable else image.copy()
    return spec.function(writable, mask, sources, settings, seed=int(rng.integers(2**31)))


def eval_face(run: TransferRun, image: np.ndarray, photo: BenchPhoto) -> tuple[Face, bool]:
    """The face a recogniser sees in `image` (a processed copy of `photo`): the original detection, or with
    `evaluation.redetect` the re-detection overlapping it best. Returns (face, found); when re-detection
    finds nothing that overlaps (IoU <= 0.3), the original detection is used and found is False."""
    if not run.recipe.evaluation.redetect:
        return photo.face, True
    found = run.backend.detector.detect(image)
    best = max(found, key=lambda f: iou(f.box, photo.face.box), default=None)
    if best is not None and iou(best.box, photo.face.box) > 0.3:
        return best, True
    return photo.face, False


def defended(defences: Sequence[Defence], decoded: np.ndarray, mask: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(defence name, photo) for "none" (the decoded photo itself) and every defence of the recipe."""
    yield NONE, decoded
    for d in defences:
        yield d.name, apply_defence(d, decoded, mask)


# --------------------------------------------------------------------------------------------------------------
# One probe


def protect_probe(
    run: TransferRun, members: tuple[str, ...], fill: str, budget: float, index: int, templates: Iterable[str],
    own: Sequence[str] = (),
) -> Probe:
    """Every variant of one probe, protected, encoded and decoded, through every defence, aligned to each
    template and read by each own-pipeline target in `own` (pipeline names). The defences see the whole photo
    and (inpaint-mask) exactly the pixels of that variant's mask."""
    photo = run.data.photos[index]
    image = run.read(photo.path)
    matrix = common_matrix(photo, run.common)
    ev = run.recipe.evaluation
    templates = list(templates)
    probe = Probe(index)
    box = face_box_slices(photo.face, photo.shape)
    masks = run.template_masks(members, index, budget)
    for variant, tmask in masks.items():
        pmask = warp_to_photo(tmask, matrix, image.shape, interpolation="nearest").astype(bool)
        protected, steps = fill_photo(run, image, pmask, fill, members, photo, budget, variant)
        decoded = encode_decode(protected, ev.format, ev.jpeg_quality)
        probe.variants.append(variant)
        if variant == LEAM:
            probe.template_pixels = int(tmask.sum())
            probe.photo_pixels = int(pmask.sum())
            probe.cloak_steps = steps
        for defence, seen in defended(run.defences, decoded, pmask):
            face, found = eval_face(run, seen, photo)
            for template in templates:
                probe.crops.setdefault(template, {}).setdefault(defence, {})[variant] = align(
                    seen, face, template).crop
            if own:  # the decoded file as the world reads it: own detection, landmarks and alignment
                for pipe, emb in own_embeddings(seen, photo.face, own).items():
                    probe.own.setdefault(pipe, {}).setdefault(defence, {})[variant] = emb
            if variant == LEAM:  # the cells report the LEAM variant's image quality
                probe.redetect_failed[defence] = int(not found)
                a, b = image[box], seen[box]
                probe.quality[defence] = {"psnr": psnr(a, b), "ssim": ssim(a, b),
                                          "changed_share": changed_share(a, b), "psnr_photo": psnr(image, seen),
                                          "ssim_photo": ssim_local_change(image, seen)}
    return probe


def defended_clean(run: TransferRun, target: str, defence: Defence) -> np.ndarray:
    """(len(run.probes), D) unit embeddings by `target` of the clean probes (encoded and decoded like the
    protected ones) after the blind `defence`: what the defence alone does."""
    ev = run.recipe.evaluation
    pipe = own_pipeline(target)
    seen_photos = []
    for i in run.probes:
        photo = run.data.photos[i]
        decoded = encode_decode(run.read(photo.path), ev.format, ev.jpeg_quality)
        seen_photos.append((apply_defence(defence, decoded, np.zeros(decoded.shape[:2], bool)), photo))
    if pipe is not None:
        dim = run.embeddings(target).shape[1]
        rows = [own_embeddings(seen, photo.face, [pipe])[pipe] for seen, photo in seen_photos]
        return np.stack([np.zeros(dim) if r is None else r for r in rows])
    rec = run.backend.recogniser(target)
    crops = [align(seen, eval_face(run, seen, photo)[0], rec.template).crop for seen, photo in seen_photos]
    return unit_rows(rec.embed(np.stack(crops)))
