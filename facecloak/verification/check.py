"""`models check` and `models calibrate`: verification quality of every recogniser on a labelled set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facecloak.errors import DataError
from facecloak.faces.detect import load_detector
from facecloak.photos.labelled import LabelledSet, load_labelled_set, read_lfw_pairs, sample
from facecloak.progress import Progress, no_progress
from facecloak.verification.embedding_cache import (
    DetectedPhoto,
    Timings,
    detect_photos,
    detector_settings,
    embed_main_faces,
)
from facecloak.verification.roc import pair_scores, roc_auc, tar_at, ten_fold_accuracy, threshold_at_far

FAR_KEYS = {"0.01": 1e-2, "0.001": 1e-3}


def _detect(paths: Sequence[Path], *, use_cache: bool, progress: Progress, timings: Timings) -> list[DetectedPhoto]:
    detector = load_detector("mtcnn")
    return detect_photos(
        paths, detector, settings=detector_settings(detector), use_cache=use_cache, progress=progress, timings=timings
    )


def _cache_tag(recogniser, use_cache: bool) -> str | None:
    return getattr(recogniser, "cache_tag", None) if use_cache else None


def run_check(
    data: Path,
    *,
    recognisers: Sequence,
    pairs: Path | None = None,
    identities: int | None = None,
    per_identity: int | None = None,
    seed: int = 0,
    max_impostor: int = 2_000_000,
    use_cache: bool = True,
    progress: Progress = no_progress,
) -> dict:
    # A sample of people is drawn among those with two or more photos: genuine pairs need them.
    labelled: LabelledSet = sample(
        load_labelled_set(data), identities=identities, per_identity=per_identity, seed=seed,
        min_photos=2 if identities else 1,
    )
    timings = Timings()
    photos = _detect([p.path for p in labelled.photos], use_cache=use_cache, progress=progress, timings=timings)
    found = np.array([p.main_face is not None for p in photos])
    ids = np.array([p.identity for p in labelled.photos])
    lfw_pairs = read_lfw_pairs(pairs) if pairs else None
    pair_photos: list[DetectedPhoto] = []
    if lfw_pairs:
        unique = sorted({p for _, a, b, _ in lfw_pairs for p in (a, b)})
        missing = [p for p in unique if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} photos named in {pairs} are missing, e.g. {missing[0]}")
        pair_photos = _detect(unique, use_cache=use_cache, progress=progress, timings=timings)
    report: dict = {
        "photos": len(photos),
        "faces_found": int(found.sum()),
        "unreadable": [str(p.path) for p in photos if p.error],
        "no_face": [str(p.path) for p in photos if p.error is None and p.main_face is None],
        "n_identities": len(set(ids[found])),
        "models": {},
    }
    for rec in recognisers:
        emb_timing = Timings()
        emb = embed_main_faces(
            photos, rec, cache_tag=_cache_tag(rec, use_cache), progress=progress, timings=emb_timing
        )
        genuine, impostor = pair_scores(emb[found], ids[found], max_impostor=max_impostor, seed=seed)
        thresholds = {k: threshold_at_far(impostor, far) for k, far in FAR_KEYS.items()}
        entry: dict = {
            "auc": roc_auc(genuine, impostor),
            "n_genuine": int(genuine.size),
            "n_impostor": int(impostor.size),
            "mean_genuine": float(genuine.mean()) if genuine.size else float("nan"),
            "mean_impostor": float(impostor.mean()),
            "threshold_at_far": thresholds,
            "tar_at_far": {k: tar_at(genuine, t) for k, t in thresholds.items()},
            "ms_per_face": emb_timing.ms_per_face("embed"),
        }
        timings.add("align", emb_timing.seconds.get("align", 0.0), emb_timing.faces.get("align", 0))
        if lfw_pairs:
            entry["lfw_accuracy"] = _lfw_accuracy(lfw_pairs, pair_photos, rec, use_cache, progress)
        report["models"][rec.id] = entry
    report["ms_per_face_detect"] = timings.ms_per_face("detect")
    report["ms_per_face_align"] = timings.ms_per_face("align")
    return report


def _lfw_accuracy(lfw_pairs, pair_photos: list[DetectedPhoto], rec, use_cache: bool, progress: Progress) -> dict:
    index = {p.path: i for i, p in enumerate(pair_photos)}
    emb = embed_main_faces(pair_photos, rec, cache_tag=_cache_tag(rec, use_cache), progress=progress)
    norm = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    a = np.array([index[x] for _, x, _, _ in lfw_pairs])
    b = np.array([index[y] for _, _, y, _ in lfw_pairs])
    scores = np.nan_to_num((norm[a] * norm[b]).sum(1), nan=-1.0)  # no face found: counted as "different"
    same = np.array([s for *_, s in lfw_pairs])
    folds = np.array([f for f, *_ in lfw_pairs])
    mean, std = ten_fold_accuracy(scores, same, folds)
    missing = int((np.isnan(emb[a]).any(1) | np.isnan(emb[b]).any(1)).sum())
    return {"mean": mean, "std": std, "n_pairs": len(lfw_pairs), "pairs_without_face": missing}


def run_calibration(
    data: Path,
    *,
    recognisers: Sequence,
    n_photos: int,
    max_impostor: int,
    seed: int,
    progress: Progress = no_progress,
) -> dict[str, dict]:
    """Thresholds from different-person pairs only: one photo per identity, `n_photos` identities (seeded)."""
    labelled = load_labelled_set(data)
    one_each = sample(labelled, identities=n_photos, per_identity=1, seed=seed)
    photos = _detect([p.path for p in one_each.photos], use_cache=True, progress=progress, timings=Timings())
    found = np.array([p.main_face is not None for p in photos])
    ids = np.array([p.identity for p in one_each.photos])[found]
    entries: dict[str, dict] = {}
    for rec in recognisers:
        emb = embed_main_faces(photos, rec, cache_tag=_cache_tag(rec, True), progress=progress)[found]
        _, impostor = pair_scores(emb, ids, max_impostor=max_impostor, seed=seed)
        entries[rec.id] = {
            "at_far": {k: threshold_at_far(impostor, far) for k, far in {**FAR_KEYS, "0.0001": 1e-4}.items()},
            "n_impostor": int(impostor.size),
            "n_photos": int(found.sum()),
            "data": data.resolve().name,
            "seed": seed,
        }
    return entries
