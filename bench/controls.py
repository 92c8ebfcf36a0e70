"""Seeded control masks of the transfer benchmark: the same pixel count as the LEAM mask, other positions.

Pure functions on boolean masks in template space ((S, S), the common template of `leam.common_template`).
Randomness comes in as a `numpy.random.Generator`; `control_rng` derives one per (recipe seed, photo, budget,
control) so a control does not change when another budget, control or source is added to a recipe.

Why two random controls (docs LEAM.md, "Validation occlusion"): scattered single pixels disturb a CNN far more
than one compact blob of the same area, so `random-scatter` and `random-shape` bracket what "the same number of
random pixels" can mean.
"""

from __future__ import annotations

import hashlib

import numpy as np

SHAPE_TRIES = 50  # random offsets tried by `random_shape`; the one keeping most pixels inside the region wins


def _name_entropy(name: str) -> int:
    """A stable 32-bit integer for a name (Python's `hash` of a str changes between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def control_rng(seed: int, photo_index: int, budget: float, control: str) -> np.random.Generator:
    """Generator for one control mask: SeedSequence of (seed, photo index, budget in 1/1000 %, control name)."""
    if seed < 0 or photo_index < 0:
        raise ValueError(f"seed and photo_index must be >= 0, got {seed} and {photo_index}")
    milli = round(float(budget) * 1000)
    return np.random.default_rng(np.random.SeedSequence([seed, photo_index, milli, _name_entropy(control)]))


def _check(mask: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, r = np.asarray(mask, dtype=bool), np.asarray(region, dtype=bool)
    if m.ndim != 2 or m.shape != r.shape:
        raise ValueError(f"mask and region must be equal (H, W) arrays, got {m.shape} and {r.shape}")
    return m, r


def random_scatter(count: int, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct pixels drawn uniformly from the True pixels of `region` ((H, W) bool)."""
    r = np.asarray(region, dtype=bool)
    eligible = np.flatnonzero(r)
    if count < 0 or count > eligible.size:
        raise ValueError(f"cannot draw {count} pixels from a region of {eligible.size}")
    out = np.zeros(r.size, dtype=bool)
    out[rng.choice(eligible, size=count, replace=False)] = True
    return out.reshape(r.shape)


def _shift(mask: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, int]:
    """`mask` translated by (dy, dx) pixels, and how many of its pixels fell off the array."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    out = np.zeros_like(mask)
    out[ys[keep], xs[keep]] = True
    return out, int((~keep).sum())


def _offset_range(lo_mask: int, hi_mask: int, lo_region: int, hi_region: int) -> tuple[int, int]:
    """Offsets along one axis that put the mask's extent [lo_mask, hi_mask] inside the region's [lo_region,
    hi_region]; when the mask is the longer one, the offsets between its two edge-flush placements."""
    a, b = lo_region - lo_mask, hi_region - hi_mask
    return (a, b) if a <= b else (b, a)


def random_shape(
    mask: np.ndarray, region: np.ndarray, rng: np.random.Generator, tries: int = SHAPE_TRIES
) -> np.ndarray:
    """The mask's shape moved by a random offset to another place in `region`; exactly as many pixels as `mask`.

    Offsets are drawn so that the mask's bounding box lands inside the region's bounding box; of `tries` offsets
    the one that keeps most pixels inside the region is taken (ties: the first drawn). Pixels that still land
    outside the region (or off the array) are re-placed at random free region pixels, so the count is exact.
    """
    m, r = _check(mask, region)
    count = int(m.sum())
    if count == 0:
        return np.zeros_like(m)
    if count > int(r.sum()):
        raise ValueError(f"a mask of {count} pixels cannot be placed inside a region of {int(r.sum())}")
    mys, mxs = np.nonzero(m)
    rys, rxs = np.nonzero(r)
    y_lo, y_hi = _offset_range(int(mys.min()), int(mys.max()), int(rys.min()), int(rys.max()))
    x_lo, x_hi = _offset_range(int(mxs.min()), int(mxs.max()), int(rxs.min()), int(rxs.max()))
    best, best_inside = m, -1
    for _ in range(max(1, tries)):
        dy, dx = int(rng.integers(y_lo, y_hi + 1)), int(rng.integers(x_lo, x_hi + 1))
        moved, _ = _shift(m, dy, dx)
        inside = int((moved & r).sum())
        if inside > best_inside:
            best, best_inside = moved, inside
        if inside == count:
            break
    placed = best & r
    missing = count - int(placed.sum())
    if missing:
        free = r & ~placed
        placed = placed | random_scatter(missing, free, rng)
    return placed


def other_person_index(identities: list[str], index: int, rng: np.random.Generator) -> int:
    """Seeded pick of a photo (index into `identities`) whose identity differs from photo `index`'s."""
    others = [i for i, ident in enumerate(identities) if ident != identities[index]]
    if not others:
        raise ValueError("the other-person control needs photos of at least two people")
    return int(others[int(rng.integers(len(others)))])
