"""Numbers the benchmark reports: summaries with bootstrap intervals, image quality, significance, dodging.

Pure functions on numpy arrays (scipy / scikit-image underneath); randomness comes in as a seed or a
`numpy.random.Generator`, never from global state. Images are uint8 RGB (H, W, 3) unless stated; cosines are
plain floats in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps
from skimage.metrics import structural_similarity

from facecloak.protection.fills import bounding_box

DEFAULT_RESAMPLES = 2000
_BOOTSTRAP_CELLS = 4_000_000  # resample indices drawn per block, to bound memory on large n


def _as_rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _finite_1d(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or fix them before summarising")
    return x


def _resample_blocks(n: int, rng: np.random.Generator, n_resamples: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (start, stop, indices (stop - start, n)) blocks of bootstrap resample indices, memory-bounded."""
    block = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        yield start, stop, rng.integers(0, n, size=(stop - start, n))


def bootstrap_means(
    values: ArrayLike, seed: int | np.random.Generator = 0, n_resamples: int = DEFAULT_RESAMPLES
) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement, same size) of `values`; deterministic for a seed."""
    x = _finite_1d(values, "values")
    if x.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    out = np.empty(n_resamples)
    for start, stop, idx in _resample_blocks(x.size, _as_rng(seed), n_resamples):
        out[start:stop] = x[idx].mean(axis=1)
    return out


def summaries(
    columns: Mapping[str, ArrayLike],
    seed: int | np.random.Generator = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """`summary` of several equally long columns (e.g. per-pair metrics of one cell) from shared resamples.

    Sharing the resampled rows keeps paired metrics paired (LEAM and its control are resampled together) and
    costs one draw of indices instead of one per column.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data = {k: _finite_1d(v, k) for k, v in columns.items()}
    sizes = {x.size for x in data.values()}
    if len(sizes) > 1:
        raise ValueError(f"columns differ in length: {({k: x.size for k, x in data.items()})}")
    n = sizes.pop() if sizes else 0
    if n == 0:
        return {k: {"mean": None, "std": None, "ci95": None, "n": 0} for k in data}
    varying = [k for k, x in data.items() if n > 1 and not np.all(x == x[0])]
    means = {k: np.empty(n_resamples) for k in varying}
    if varying:
        for start, stop, idx in _resample_blocks(n, _as_rng(seed), n_resamples):
            for k in varying:
                means[k][start:stop] = data[k][idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    out: dict[str, dict[str, Any]] = {}
    for k, x in data.items():
        mean = float(x.mean())
        if k in means:
            lo, hi = np.percentile(means[k], [tail, 100 - tail])
            ci = [float(lo), float(hi)]
        else:  # one value, or all equal: every resample has the same mean
            ci = [mean, mean]
        out[k] = {"mean": mean, "std": float(x.std(ddof=1)) if n > 1 else 0.0, "ci95": ci, "n": n}
    return out


def summary(
    values: ArrayLike,
    seed: int | np.random.Generator = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """`{"mean", "std", "ci95": [lo, hi], "n"}` of a sample.

    std is the sample standard deviation (ddof=1; 0 for one value). ci95 is the percentile interval of
    `n_resamples` bootstrap means (`confidence` sets its level; the key keeps its name). An empty sample gives
    n = 0 and None elsewhere, so a report can say "no data" instead of inventing a number.
    """
    return summaries({"values": values}, seed, n_resamples, confidence)["values"]


# --- image quality -------------------------------------------------------------------------------------------


def _same_images(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, `10 log10(data_range² / MSE)`; `inf` for identical images."""
    a, b = _same_images(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (scikit-image, 7×7 window, data range 255) of two (H, W, 3) or (H, W) images."""
    a, b = _same_images(a, b)
    if min(a.shape[:2]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {a.shape[:2]}")
    channel_axis = -1 if a.ndim == 3 else None
    return float(structural_similarity(a, b, channel_axis=channel_axis, data_range=255))


def ssim_local_change(a: np.ndarray, b: np.ndarray) -> float:
    """`ssim(a, b)` of two whole photos that differ only in a small area, without filtering the whole photo.

    Every 7×7 window that touches no changed pixel compares identical content and scores exactly 1, so only the
    bounding box of the changes (plus a margin wider than the window) is filtered; the rest is added as ones. Equals
    scikit-image's mean SSIM (which skips a 3-pixel border) up to float rounding — a 24-megapixel photo costs as
    much as its face.
    """
    a, b = _same_images(a, b)
    changed = a != b
    if changed.ndim == 3:
        changed = changed.any(axis=-1)
    if not changed.any():
        return 1.0
    h, w = changed.shape
    pad, margin = 3, 8  # scikit-image's 7×7 window: half-width 3, border of 3 left out of the mean
    if min(h, w) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {(h, w)}")
    rows, cols = bounding_box(changed, margin=margin)
    y0, y1, x0, x1 = rows.start, rows.stop, cols.start, cols.stop
    if y1 - y0 < 7 or x1 - x0 < 7:
        return ssim(a, b)
    channel_axis = -1 if a.ndim == 3 else None
    _, local = structural_similarity(a[rows, cols], b[rows, cols], channel_axis=channel_axis, data_range=255,
                                     full=True)
    local = local if local.ndim == 3 else local[..., None]
    # Keep the positions that the whole-photo mean would count (not within 3 pixels of the photo's edge).
    ys, xs = np.arange(y0, y1), np.arange(x0, x1)
    keep = ((ys >= pad) & (ys < h - pad))[:, None] & ((xs >= pad) & (xs < w - pad))[None, :]
    deficit = (1.0 - local.astype(np.float64))[keep].sum(axis=0).mean()
    return float(1.0 - deficit / ((h - 2 * pad) * (w - 2 * pad)))


def changed_share(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixel positions (H × W) where any channel differs, in [0, 1]."""
    a, b = _same_images(a, b)
    diff = a != b
    if diff.ndim == 3:
        diff = diff.any(axis=-1)
    return float(diff.mean())


# --- significance --------------------------------------------------------------------------------------------


def mann_whitney(a: ArrayLike, b: ArrayLike, alternative: str = "two-sided") -> float:
    """p-value of the Mann-Whitney U test of samples `a` and `b` (`alternative="greater"`: a tends to exceed b)."""
    x, y = _finite_1d(a, "a"), _finite_1d(b, "b")
    if x.size == 0 or y.size == 0:
        raise ValueError("Mann-Whitney needs two non-empty samples")
    return float(sps.mannwhitneyu(x, y, alternative=alternative).pvalue)


def permutation_test(
    a: ArrayLike, b: ArrayLike, rng: np.random.Generator | int = 0, n: int = 10_000, alternative: str = "two-sided"
) -> float:
    """p-value of a permutation test on the difference of means, `(#{|d*| >= |d|} + 1) / (n + 1)`.

    The +1 counts the observed labelling, so p is never 0. `alternative="greater"` tests mean(a) > mean(b).
    """
    x, y = _finite_1d(a, "a"), _finite_1d(b, "b")
    if x.size == 0 or y.size == 0:
        raise ValueError("a permutation test needs two non-empty samples")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    gen = _as_rng(rng)
    pooled = np.concatenate([x, y])
    observed = x.mean() - y.mean()
    block = max(1, _BOOTSTRAP_CELLS // pooled.size)
    hits = 0
    # A tiny tolerance so that permutations reproducing the observed difference count despite rounding.
    tol = 1e-12 * max(1.0, abs(observed))
    for start in range(0, n, block):
        size = min(block, n - start)
        perm = gen.permuted(np.broadcast_to(pooled, (size, pooled.size)), axis=1)
        d = perm[:, : x.size].mean(axis=1) - perm[:, x.size:].mean(axis=1)
        if alternative == "two-sided":
            hits += int(np.sum(np.abs(d) >= abs(observed) - tol))
        elif alternative == "greater":
            hits += int(np.sum(d >= observed - tol))
        else:
            hits += int(np.sum(d <= observed + tol))
    return (hits + 1) / (n + 1)


# --- dodging -------------------------------------------------------------------------------------------------


def dodged(cos_to_refs: Sequence[ArrayLike], threshold: float) -> np.ndarray:
    """Per protected photo: True when its cosine to EVERY clean photo of the same person is below `threshold`.

    cos_to_refs[i] holds photo i's cosines (target model's embeddings) to that person's other, clean photos.
    """
    out = np.empty(len(cos_to_refs), dtype=bool)
    for i, refs in enumerate(cos_to_refs):
        c = _finite_1d(refs, f"cos_to_refs[{i}]")
        if c.size == 0:
            raise ValueError(f"photo {i} has no clean reference photo; a person needs at least two photos")
        out[i] = bool(np.all(c < threshold))
    return out


def dodge_rate(cos_to_refs: Sequence[ArrayLike], threshold: float) -> float:
    """Share of protected photos that are dodged (see `dodged`), in [0, 1]."""
    flags = dodged(cos_to_refs, threshold)
    if flags.size == 0:
        raise ValueError("no protected photos to compute a dodge rate on")
    return float(flags.mean())
