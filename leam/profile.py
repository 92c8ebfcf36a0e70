"""Person profiles: the mean LEAM maps of one person's photos, in one template, stored next to how they were made.

A profile file is a `.npz` (numpy zip, no pickle) holding `overall` (H, W) float32, `layer_maps` (L, H, W)
float32 and `meta`, a JSON string with the other fields. It is written atomically (temp file + os.replace).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from .errors import ProfileError
from .relevance import Relevance

PROFILE_FORMAT = "leam-profile"
PROFILE_VERSION = 1
_MASS_TOLERANCE = 1e-3

MapT = TypeVar("MapT", Tensor, np.ndarray)


def _check_distribution(name: str, p: np.ndarray, allow_empty: bool = False) -> None:
    if not np.isfinite(p).all() or (p < 0).any():
        raise ProfileError(f"{name} must be finite and non-negative")
    mass = float(p.sum(dtype=np.float64))
    if not (allow_empty and mass == 0) and abs(mass - 1) > _MASS_TOLERANCE:
        raise ProfileError(f"{name} must sum to 1 (a distribution over pixels), sums to {mass:.6f}")


@dataclass(frozen=True, eq=False)
class Profile:
    """Mean relevance of one person's photos in template space (pixels of the `template` crop).

    overall    (H, W) float32 distribution.
    layer_maps (L, H, W) float32, one distribution per name in `layers`, or all zeros for a layer that was empty
               in every photo; L may be 0 (e.g. an ensemble of several models keeps only the overall map).
    model_ids  the source model(s); several for an ensemble warped into a common template.
    target     how the identity score was defined ("reference", "flip", "contrast", ...).
    photo_hashes one hash per photo used (as given by the caller, e.g. sha256 of the file), n_photos of them.
    Arrays are stored read-only.
    """

    overall: np.ndarray
    layer_maps: np.ndarray
    model_ids: tuple[str, ...]
    layers: tuple[str, ...]
    method: str
    target: str
    photo_hashes: tuple[str, ...]
    template: str
    n_photos: int
    version: int = field(default=PROFILE_VERSION)

    def __post_init__(self) -> None:
        overall = np.array(self.overall, dtype=np.float32)
        layer_maps = np.array(self.layer_maps, dtype=np.float32)
        if overall.ndim != 2:
            raise ProfileError(f"overall must be (H, W), got shape {overall.shape}")
        if layer_maps.ndim != 3 or layer_maps.shape[1:] != overall.shape:
            raise ProfileError(f"layer_maps must be (L, *{overall.shape}), got {layer_maps.shape}")
        for name in ("model_ids", "layers", "photo_hashes"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        if layer_maps.shape[0] != len(self.layers):
            raise ProfileError(f"{layer_maps.shape[0]} layer maps for {len(self.layers)} layer names")
        if not self.model_ids:
            raise ProfileError("a profile needs at least one model id")
        if self.n_photos < 1 or len(self.photo_hashes) != self.n_photos:
            raise ProfileError(f"n_photos={self.n_photos} but {len(self.photo_hashes)} photo hashes")
        if self.version != PROFILE_VERSION:
            raise ProfileError(f"profile version {self.version} is not supported (this leam reads {PROFILE_VERSION})")
        _check_distribution("overall", overall)
        for name, p in zip(self.layers, layer_maps, strict=True):
            _check_distribution(f"layer map {name!r}", p, allow_empty=True)
        overall.setflags(write=False)
        layer_maps.setflags(write=False)
        object.__setattr__(self, "overall", overall)
        object.__setattr__(self, "layer_maps", layer_maps)

    @property
    def photos_digest(self) -> str:
        """sha256 over the sorted photo hashes: the same set of photos gives the same digest (cache key)."""
        return hashlib.sha256("\n".join(sorted(self.photo_hashes)).encode()).hexdigest()

    def metadata(self) -> dict[str, object]:
        return {
            "format": PROFILE_FORMAT,
            "version": self.version,
            "model_ids": list(self.model_ids),
            "layers": list(self.layers),
            "method": self.method,
            "target": self.target,
            "photo_hashes": list(self.photo_hashes),
            "template": self.template,
            "n_photos": self.n_photos,
        }


def _normalised_mean(maps: np.ndarray) -> np.ndarray:
    mean = maps.mean(axis=0, dtype=np.float64)
    total = mean.sum()
    return mean / total if total > 0 else mean


def build_profile(
    relevances: Relevance | Sequence[Relevance],
    *,
    model_id: str,
    target: str,
    photo_hashes: Sequence[str],
    template: str,
) -> Profile:
    """Profile of one model from the relevance of a person's photos (crops in that model's `template`).

    overall: mean of the photos' overall maps, renormalised. Per layer: mean over the photos where that layer was
    not empty. A photo without relevance in any layer is an error, not silently dropped.
    """
    items = [relevances] if isinstance(relevances, Relevance) else list(relevances)
    if not items:
        raise ProfileError("build_profile needs the relevance of at least one photo")
    layers, method = items[0].layers, items[0].method
    if any(r.layers != layers or r.method != method for r in items):
        raise ProfileError("all relevances of a profile must use the same layers and method")
    overall = np.concatenate([r.overall.detach().cpu().numpy() for r in items])
    layer_maps = np.concatenate([r.layer_maps.detach().cpu().numpy() for r in items])
    blank = np.flatnonzero(overall.reshape(len(overall), -1).sum(axis=1) == 0)
    if blank.size:
        raise ProfileError(f"photos {blank.tolist()} have no relevance in any layer; drop them or change the target")
    if len(photo_hashes) != len(overall):
        raise ProfileError(f"{len(photo_hashes)} photo hashes for {len(overall)} photos")
    per_layer = []
    for j in range(len(layers)):
        maps = layer_maps[:, j]
        present = maps.reshape(len(maps), -1).sum(axis=1) > 0
        per_layer.append(_normalised_mean(maps[present]) if present.any() else np.zeros(maps.shape[1:]))
    h, w = overall.shape[1:]
    return Profile(
        overall=_normalised_mean(overall),
        layer_maps=np.stack(per_layer) if per_layer else np.zeros((0, h, w)),
        model_ids=(model_id,),
        layers=layers,
        method=method,
        target=target,
        photo_hashes=tuple(photo_hashes),
        template=template,
        n_photos=len(overall),
    )


def ensemble_maps(maps: Sequence[MapT], weights: Sequence[float] | None = None) -> MapT:
    """Weighted mean of relevance maps (H, W) already warped into one common template, as a distribution.

    Each map is renormalised first: warping drops the mass that falls outside the common crop, and a model should
    not count less because of it. Returns the kind (numpy or torch) of the first map.
    """
    if not maps:
        raise ProfileError("ensemble_maps needs at least one map")
    is_torch = isinstance(maps[0], Tensor)
    arrays = [m.detach().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m) for m in maps]
    if any(a.shape != arrays[0].shape or a.ndim != 2 for a in arrays):
        raise ProfileError(f"maps to ensemble must all be (H, W) of one shape, got {[a.shape for a in arrays]}")
    w = np.full(len(arrays), 1.0 / len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ProfileError(f"need one finite non-negative weight per map, not all zero; got {weights}")
    total = np.zeros(arrays[0].shape, dtype=np.float64)
    for i, (a, wi) in enumerate(zip(arrays, w / w.sum(), strict=True)):
        a = a.astype(np.float64)
        if not np.isfinite(a).all() or (a < 0).any() or a.sum() <= 0:
            raise ProfileError(f"map {i} must be finite, non-negative and not all zero")
        total += wi * a / a.sum()
    out = (total / total.sum()).astype(np.float32)
    return torch.from_numpy(out).to(maps[0].device) if is_torch else out  # type: ignore[return-value,union-attr]


def save_profile(path: str | os.PathLike[str], profile: Profile) -> Path:
    """Write `profile` to `path` (.npz) atomically: a reader sees the old file or the new one, never half of one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                overall=np.asarray(profile.overall),
                layer_maps=np.asarray(profile.layer_maps),
                meta=np.array(json.dumps(profile.metadata(), sort_keys=True)),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile written by `save_profile`; anything malformed raises `ProfileError`."""
    source = Path(path)
    try:
        with np.load(source, allow_pickle=False) as data:
            missing = {"overall", "layer_maps", "meta"} - set(data.files)
            if missing:
                raise ProfileError(f"{source} is not a LEAM profile (missing {', '.join(sorted(missing))})")
            overall, layer_maps, meta_text = data["overall"], data["layer_maps"], str(data["meta"])
    except FileNotFoundError:
        raise ProfileError(f"profile {source} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ProfileError(f"cannot read profile {source}: {exc}") from None
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile {source} has malformed metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{source} is not a LEAM profile (format tag missing)")
    expected = {"version", "model_ids", "layers", "method", "target", "photo_hashes", "template", "n_photos"}
    if set(meta) - {"format"} != expected:
        raise ProfileError(f"profile {source} metadata fields {sorted(meta)} differ from {sorted(expected)}")
    try:
        return Profile(
            overall=overall,
            layer_maps=layer_maps,
            model_ids=tuple(meta["model_ids"]),
            layers=tuple(meta["layers"]),
            method=str(meta["method"]),
            target=str(meta["target"]),
            photo_hashes=tuple(meta["photo_hashes"]),
            template=str(meta["template"]),
            n_photos=int(meta["n_photos"]),
            version=int(meta["version"]),
        )
    except ProfileError as exc:
        raise ProfileError(f"profile {source}: {exc}") from None
