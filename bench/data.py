"""The labelled photos of a benchmark run: sampled, detected once (cached on disk), paired, parsed.

Photos without a face, unreadable photos and people left with fewer than two usable photos are counted and
listed, never dropped silently. Paths in the lists are relative to the data folder (no absolute paths leave the
machine in results.json).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import DataConfig
from facecloak.errors import DataError
from facecloak.faces.align import TEMPLATES, template_matrix
from facecloak.faces.face import Face
from facecloak.faces.parse import FaceParser, face_region, template_labels
from facecloak.photos.labelled import load_labelled_set, sample
from facecloak.progress import Progress, no_progress
from facecloak.verification.embedding_cache import detect_photos, detector_settings


@dataclass(frozen=True)
class BenchPhoto:
    """One usable photo: its main (largest) face in photo pixel coordinates."""

    index: int  # position in `BenchSet.photos`; seeds the controls of this photo
    path: Path
    identity: str
    gender: str | None
    sha256: str
    shape: tuple[int, int]  # (H, W) of the photo as read (EXIF orientation applied)
    face: Face


@dataclass(frozen=True)
class BenchSet:
    """Photos usable for genuine pairs (every identity has >= 2 of them) and the ones that were not."""

    root: Path
    photos: tuple[BenchPhoto, ...]
    n_sampled: int
    no_face: tuple[str, ...]  # no face detected
    unreadable: tuple[str, ...]  # the file could not be read (message appended)
    single: tuple[str, ...]  # a face was found, but no other photo of that person has one

    @property
    def identities(self) -> list[str]:
        return sorted({p.identity for p in self.photos})

    def groups(self) -> dict[str, list[int]]:
        """identity -> indices of its photos, in `photos` order."""
        out: dict[str, list[int]] = {}
        for p in self.photos:
            out.setdefault(p.identity, []).append(p.index)
        return out

    def fingerprint(self) -> str:
        """sha256 of every photo's content hash, identity and detected landmarks: equal sets, equal keys."""
        rows = [[p.sha256, p.identity, np.round(p.face.landmarks, 2).tolist()] for p in self.photos]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def prepare(
    data_dir: Path,
    config: DataConfig,
    detector: Any,
    *,
    use_cache: bool = True,
    progress: Progress = no_progress,
) -> BenchSet:
    """Sample the labelled folder (seeded), detect every photo once (cached), keep people with >= 2 faces."""
    root = Path(data_dir)
    labelled = sample(load_labelled_set(root), identities=config.identities, per_identity=config.per_identity,
                      min_photos=config.min_photos, seed=config.seed)
    if not labelled.photos:
        raise DataError(f"no person in {root} has {config.min_photos} or more photos; lower data.min_photos")
    detected = detect_photos([p.path for p in labelled.photos], detector, settings=detector_settings(detector),
                             use_cache=use_cache, progress=progress)
    no_face, unreadable = [], []
    found: list[tuple[Any, Any]] = []
    for lp, dp in zip(labelled.photos, detected, strict=True):
        rel = _relative(lp.path, root)
        if dp.error:
            unreadable.append(f"{rel}: {dp.error}")
        elif dp.main_face is None:
            no_face.append(rel)
        else:
            found.append((lp, dp))
    counts: dict[str, int] = {}
    for lp, _ in found:
        counts[lp.identity] = counts.get(lp.identity, 0) + 1
    single = [_relative(lp.path, root) for lp, _ in found if counts[lp.identity] < 2]
    usable = [(lp, dp) for lp, dp in found if counts[lp.identity] >= 2]
    photos = tuple(
        BenchPhoto(i, lp.path, lp.identity, lp.gender, dp.sha256, (int(dp.shape[0]), int(dp.shape[1])), dp.main_face)
        for i, (lp, dp) in enumerate(usable)
    )
    if not photos:
        raise DataError(f"no person in {root} has two photos with a detected face; genuine pairs need two")
    return BenchSet(root, photos, len(labelled.photos), tuple(no_face), tuple(unreadable), tuple(single))


def genuine_pairs(data: BenchSet, max_per_identity: int, seed: int) -> list[tuple[int, int]]:
    """(probe, reference) photo indices: two different photos of one person, at most `max_per_identity` per person.

    Ordered pairs (the probe is protected, the reference stays clean), drawn without replacement with a Generator
    seeded by (seed, 0x9A125); sorted, so the list does not depend on the order people are visited in.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A125]))
    pairs: list[tuple[int, int]] = []
    groups = data.groups()
    for identity in sorted(groups):
        idx = groups[identity]
        ordered = [(i, j) for i in idx for j in idx if i != j]
        if len(ordered) > max_per_identity:
            keep = sorted(rng.choice(len(ordered), size=max_per_identity, replace=False).tolist())
            ordered = [ordered[k] for k in keep]
        pairs.extend(ordered)
    return sorted(pairs)


def common_matrix(photo: BenchPhoto, template: str) -> np.ndarray:
    """Photo -> crop matrix of the photo's face in `template` (what `align` would return), without warping."""
    return template_matrix(photo.face, TEMPLATES.get(template))


def face_regions(
    data: BenchSet,
    parser: FaceParser,
    template: str,
    read: Callable[[Path], np.ndarray],
    progress: Progress = no_progress,
) -> np.ndarray:
    """(N, S, S) bool: each photo's parsed face region (skin, forehead, nose, eyes, brows, lips) in `template`, as
    the masking stage makes it (`facecloak.faces.parse.template_labels`: the regions rasterised in the template)."""
    size = TEMPLATES.get(template).size
    out = np.zeros((len(data.photos), size, size), dtype=bool)
    for p in progress(data.photos, "parsing faces"):
        out[p.index] = face_region(template_labels(parser, read(p.path), p.face, common_matrix(p, template), size))
    return out
