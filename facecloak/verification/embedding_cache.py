"""Detect -> align -> embed over many photos, batched, with on-disk caches keyed by file hash and settings.

The caches (detections and embeddings under `$FACECLOAK_HOME`) serve `models check`, `calibrate` and `bench`,
which re-read the same labelled sets many times. `facecloak protect` never writes them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facecloak import paths
from facecloak.errors import FacecloakError
from facecloak.faces.align import align
from facecloak.faces.face import Face
from facecloak.files import atomic_path, atomic_write_bytes, sha256_file
from facecloak.photos.io import read_image
from facecloak.progress import Progress, no_progress


@dataclass(frozen=True)
class DetectedPhoto:
    """One photo's detections (photo pixel coordinates); `error` is set when the photo could not be read."""

    path: Path
    sha256: str
    shape: tuple[int, int]
    faces: tuple[Face, ...]
    error: str | None = None

    @property
    def main_face(self) -> Face | None:
        """The largest face: labelled sets show one person per photo, sometimes with bystanders."""
        return max(self.faces, key=lambda f: f.area, default=None)


@dataclass
class Timings:
    """Accumulated wall-clock seconds per stage and the number of faces they covered."""

    seconds: dict[str, float] = field(default_factory=dict)
    faces: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, seconds: float, faces: int) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.faces[stage] = self.faces.get(stage, 0) + faces

    def ms_per_face(self, stage: str) -> float:
        n = self.faces.get(stage, 0)
        return 1000.0 * self.seconds.get(stage, 0.0) / n if n else float("nan")


def detector_settings(detector) -> dict:
    """The options that change a detector's output (the detection cache key): its own `settings` dict if it has
    one, else its public numbers."""
    settings = getattr(detector, "settings", None)
    if isinstance(settings, dict):
        return settings
    keys = ("min_face_size", "thresholds", "score_threshold", "max_side", "factor")
    found = {k: getattr(detector, k) for k in keys if hasattr(detector, k)}
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in found.items()}
    return {"detector": type(detector).__name__, **plain}


def _settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _face_to_json(face: Face) -> dict:
    return {"box": list(map(float, face.box)), "score": float(face.score), "landmarks": face.landmarks.tolist()}


def _face_from_json(d: dict) -> Face:
    return Face(box=tuple(d["box"]), score=d["score"], landmarks=np.asarray(d["landmarks"], np.float32))


def detect_photos(
    photo_paths: Sequence[Path],
    detector,
    *,
    settings: dict,
    use_cache: bool = True,
    progress: Progress = no_progress,
    timings: Timings | None = None,
) -> list[DetectedPhoto]:
    """Detect faces in every photo; an unreadable photo gets `error` set instead of stopping the run."""
    key = _settings_key(settings)
    cache_dir = paths.home() / "detections" / key
    results: list[DetectedPhoto] = []
    for path in progress(photo_paths, "detecting faces"):
        path = Path(path)
        try:
            digest = sha256_file(path)
        except OSError as exc:
            results.append(DetectedPhoto(path, "", (0, 0), (), error=f"cannot read: {exc.strerror}"))
            continue
        cached = cache_dir / f"{digest}.json"
        if use_cache and cached.is_file():
            d = json.loads(cached.read_text())
            results.append(DetectedPhoto(path, digest, tuple(d["shape"]), tuple(map(_face_from_json, d["faces"]))))
            continue
        try:
            photo = read_image(path)
        except FacecloakError as exc:
            results.append(DetectedPhoto(path, digest, (0, 0), (), error=str(exc)))
            continue
        start = time.perf_counter()
        faces = tuple(detector.detect(photo.rgb))
        if timings is not None:
            timings.add("detect", time.perf_counter() - start, max(len(faces), 1))
        shape = photo.rgb.shape[:2]
        if use_cache:
            payload = {"shape": list(shape), "faces": [_face_to_json(f) for f in faces]}
            atomic_write_bytes(cached, json.dumps(payload).encode(), durable=False)  # a cache: atomic is enough
        results.append(DetectedPhoto(path, digest, (int(shape[0]), int(shape[1])), faces))
    return results


def embed_main_faces(
    photos: Sequence[DetectedPhoto],
    recogniser,
    *,
    cache_tag: str | None,
    batch_size: int = 32,
    progress: Progress = no_progress,
    timings: Timings | None = None,
) -> np.ndarray:
    """Embeddings (N, D) of each photo's main face with one recogniser; rows are NaN where no face was found.

    `recogniser` has `id`, `template`, `embed(crops uint8 (B,S,S,3)) -> (B,D)`. `cache_tag` (e.g. model id +
    weights hash) keys the on-disk cache; None disables it.
    """
    cache_dir = paths.embeddings_dir() / cache_tag if cache_tag else None
    out: list[np.ndarray | None] = [None] * len(photos)
    todo: list[int] = []
    for i, p in enumerate(photos):
        if p.main_face is None:
            continue
        if cache_dir is not None and (cache_dir / f"{p.sha256}.npy").is_file():
            out[i] = np.load(cache_dir / f"{p.sha256}.npy")
        else:
            todo.append(i)
    batches = [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)]
    for batch in progress(batches, f"embedding with {recogniser.id}"):
        crops = []
        start = time.perf_counter()
        for i in batch:
            face = photos[i].main_face
            assert face is not None
            crops.append(align(read_image(photos[i].path).rgb, face, recogniser.template).crop)
        if timings is not None:
            timings.add("align", time.perf_counter() - start, len(batch))
        start = time.perf_counter()
        emb = np.asarray(recogniser.embed(np.stack(crops)), np.float32)
        if timings is not None:
            timings.add("embed", time.perf_counter() - start, len(batch))
        for i, e in zip(batch, emb, strict=True):
            out[i] = e
            if cache_dir is not None:
                with atomic_path(cache_dir / f"{photos[i].sha256}.npy", durable=False) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, e)
    dim = next((e.shape[0] for e in out if e is not None), 1)
    nan = np.full(dim, np.nan, np.float32)
    return np.stack([e if e is not None else nan for e in out]) if out else np.zeros((0, dim), np.float32)
