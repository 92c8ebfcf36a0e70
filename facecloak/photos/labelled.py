"""Labelled photo sets: a folder with `manifest.csv` (path,identity[,gender]) or one sub-folder per identity."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecloak.errors import DataError
from facecloak.photos.io import SUPPORTED_SUFFIXES as IMAGE_SUFFIXES


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    identity: str
    gender: str | None = None  # 'f' / 'm' where labelled


@dataclass(frozen=True)
class LabelledSet:
    root: Path
    photos: tuple[LabelledPhoto, ...]

    @property
    def identities(self) -> list[str]:
        return sorted({p.identity for p in self.photos})

    def by_identity(self) -> dict[str, list[LabelledPhoto]]:
        groups: dict[str, list[LabelledPhoto]] = defaultdict(list)
        for p in self.photos:
            groups[p.identity].append(p)
        return dict(groups)


def load_labelled_set(root: Path) -> LabelledSet:
    """Read `root/manifest.csv` if present, else treat each sub-folder as one identity."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    manifest = root / "manifest.csv"
    photos: list[LabelledPhoto] = []
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "identity"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{manifest} lacks column(s) {', '.join(sorted(missing))}")
            for row in reader:
                gender = (row.get("gender") or "").strip() or None
                photos.append(LabelledPhoto(root / row["path"], row["identity"].strip(), gender))
    else:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(sub.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    photos.append(LabelledPhoto(f, sub.name))
    if not photos:
        raise DataError(f"no labelled photos in {root} (expected manifest.csv or one sub-folder per identity)")
    return LabelledSet(root, tuple(photos))


def sample(
    data: LabelledSet,
    *,
    identities: int | None = None,
    per_identity: int | None = None,
    min_photos: int = 1,
    seed: int = 0,
) -> LabelledSet:
    """Seeded subset: `identities` people having >= `min_photos` photos, at most `per_identity` photos each.

    People and photos are drawn with a numpy Generator from `seed`; the result is sorted, so the same seed
    always gives the same set whatever the manifest order.
    """
    rng = np.random.default_rng(seed)
    groups = {k: sorted(v, key=lambda p: str(p.path)) for k, v in data.by_identity().items()}
    eligible = sorted(k for k, v in groups.items() if len(v) >= min_photos)
    if identities is not None and identities < len(eligible):
        eligible = sorted(rng.choice(eligible, size=identities, replace=False).tolist())
    chosen: list[LabelledPhoto] = []
    for name in eligible:
        photos = groups[name]
        if per_identity is not None and per_identity < len(photos):
            idx = sorted(rng.choice(len(photos), size=per_identity, replace=False).tolist())
            photos = [photos[i] for i in idx]
        chosen.extend(photos)
    return LabelledSet(data.root, tuple(chosen))


def read_lfw_pairs(path: Path) -> list[tuple[int, Path, Path, bool]]:
    """Parse LFW `pairs.txt`: returns (fold, photo_a, photo_b, same_person), paths relative to the file's folder."""
    path = Path(path)
    lines = path.read_text().split("\n")
    try:
        folds, per = (int(v) for v in lines[0].split())
    except ValueError as exc:
        raise DataError(f"{path}: first line must be '<folds> <pairs per fold>'") from exc
    root = path.parent

    def photo(name: str, number: str) -> Path:
        return root / name / f"{name}_{int(number):04d}.jpg"

    pairs: list[tuple[int, Path, Path, bool]] = []
    rows = [ln.split() for ln in lines[1:] if ln.strip()]
    if len(rows) != folds * per * 2:
        raise DataError(f"{path}: expected {folds * per * 2} pairs, found {len(rows)}")
    for i, row in enumerate(rows):
        fold = i // (2 * per)
        if len(row) == 3:
            pairs.append((fold, photo(row[0], row[1]), photo(row[0], row[2]), True))
        elif len(row) == 4:
            pairs.append((fold, photo(row[0], row[1]), photo(row[2], row[3]), False))
        else:
            raise DataError(f"{path}: line {i + 2} is not a pair: {' '.join(row)}")
    return pairs


def genuine_pairs(photos: Sequence[LabelledPhoto]) -> list[tuple[int, int]]:
    """All index pairs (i < j) of two different photos of one person."""
    return [
        (i, j)
        for i in range(len(photos))
        for j in range(i + 1, len(photos))
        if photos[i].identity == photos[j].identity and photos[i].path != photos[j].path
    ]
