"""Comparisons of relevance maps and masks, and the significance tests the analyses report.

Maps and masks may be numpy arrays or torch tensors; results are numpy (float64) because they end up in reports.
Randomness (`permutation_p`) comes from a `numpy.random.Generator` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from torch import Tensor

from .errors import LeamError

Alternative = Literal["two-sided", "greater", "less"]
_MASS_TOLERANCE = 1e-3


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _distributions(name: str, p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    if p.ndim < 2 or not np.isfinite(p).all() or (p < 0).any():
        raise LeamError(f"{name} must be finite, non-negative maps (..., H, W)")
    mass = p.sum(axis=(-2, -1))
    if np.abs(mass - 1).max() > _MASS_TOLERANCE:
        raise LeamError(f"{name} must be distributions (each map sums to 1), sums {mass.min():.4g}..{mass.max():.4g}")
    return p


def bhattacharyya(p: Tensor | np.ndarray, q: Tensor | np.ndarray) -> np.ndarray:
    """BC(P, Q) = Σ_pixels sqrt(P·Q) for maps (H, W) or batches (N, H, W) of pairs: 1 identical, 0 disjoint."""
    a, b = _distributions("P", _np(p)), _distributions("Q", _np(q))
    if a.shape != b.shape:
        raise LeamError(f"P and Q differ in shape: {a.shape} vs {b.shape}")
    return np.sqrt(a * b).sum(axis=(-2, -1))


def mask_overlap_bc(mask_a: Tensor | np.ndarray, mask_b: Tensor | np.ndarray) -> np.ndarray:
    """BC of two masks taken as uniform distributions over their pixels: |A ∩ B| / sqrt(|A| |B|).

    Masks are bool (H, W) or (N, H, W); for masks of equal size this is the share of pixels they have in common.
    """
    a, b = _np(mask_a).astype(bool), _np(mask_b).astype(bool)
    if a.shape != b.shape or a.ndim < 2:
        raise LeamError(f"masks must be (..., H, W) of one shape, got {a.shape} and {b.shape}")
    size_a, size_b = a.sum(axis=(-2, -1)), b.sum(axis=(-2, -1))
    if (size_a == 0).any() or (size_b == 0).any():
        raise LeamError("an empty mask has no distribution; every mask needs at least one pixel")
    return (a & b).sum(axis=(-2, -1)) / np.sqrt(size_a.astype(np.float64) * size_b)


def layer_diversity(layer_maps: Tensor | np.ndarray) -> np.ndarray:
    """(L, L) BC between the layer maps (L, H, W) of one model, or (N, L, L) for (N, L, H, W).

    An all-zero (empty) layer map has no distribution: its row and column are NaN.
    """
    maps = _np(layer_maps).astype(np.float64)
    if maps.ndim not in (3, 4) or not np.isfinite(maps).all() or (maps < 0).any():
        raise LeamError(f"layer maps must be finite, non-negative, (L, H, W) or (N, L, H, W); got {maps.shape}")
    roots = np.sqrt(maps.reshape(*maps.shape[:-2], -1))
    bc = roots @ np.swapaxes(roots, -1, -2)
    empty = maps.sum(axis=(-2, -1)) == 0
    bc[empty[..., :, None] | empty[..., None, :]] = np.nan
    return bc


def _samples(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise LeamError("both samples must be non-empty and finite")
    return x, y


def mann_whitney_p(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, alternative: Alternative = "two-sided"
) -> float:
    """p-value of the Mann-Whitney U test of a vs b ("greater": a tends to be larger than b)."""
    from scipy.stats import mannwhitneyu  # scipy is only needed for this test

    x, y = _samples(a, b)
    return float(mannwhitneyu(x, y, alternative=alternative).pvalue)


def permutation_p(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n: int,
    rng: np.random.Generator,
    alternative: Alternative = "two-sided",
) -> float:
    """Permutation test p-value for the difference of means, mean(a) − mean(b), with `n` random relabellings.

    p = (1 + #{permuted statistics at least as extreme as observed}) / (n + 1), so never 0.
    """
    if n < 1:
        raise LeamError(f"permutation_p needs n >= 1 permutations, got {n}")
    x, y = _samples(a, b)
    pooled = np.concatenate([x, y])
    observed = x.mean() - y.mean()
    perms = np.argsort(rng.random((n, pooled.size)), axis=1)  # n independent shuffles, vectorised
    shuffled = pooled[perms]
    stats = shuffled[:, : x.size].mean(axis=1) - shuffled[:, x.size :].mean(axis=1)
    # A small slack so that floating-point noise in equal statistics counts as "as extreme".
    slack = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        extreme = stats >= observed - slack
    elif alternative == "less":
        extreme = stats <= observed + slack
    else:
        extreme = np.abs(stats) >= abs(observed) - slack
    return float((1 + extreme.sum()) / (n + 1))


def identity_permutation_p(
    similarity: np.ndarray, identities: Sequence[str], n: int, rng: np.random.Generator
) -> float:
    """One-sided p-value that same-person pairs are more similar than different-person pairs, photos as the unit.

    similarity: (N, N) symmetric pairwise scores (e.g. BC) of N photos; identities: N labels. The statistic is
    mean(same-person pairs) − mean(different-person pairs) over all i < j; its null distribution comes from `n`
    random permutations of the labels over the photos (group sizes kept), so the dependence between pairs that
    share a photo — which makes a pair-level test such as Mann-Whitney optimistic — is respected (a Mantel-type test).
    p = (1 + #{permuted statistic >= observed}) / (n + 1).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    ids = np.asarray(identities)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] != ids.size:
        raise LeamError(f"similarity must be (N, N) with N = len(identities); got {sim.shape} and {ids.size}")
    if n < 1:
        raise LeamError(f"identity_permutation_p needs n >= 1 permutations, got {n}")
    iu, ju = np.triu_indices(ids.size, k=1)
    same = ids[iu] == ids[ju]
    if not same.any() or same.all():
        raise LeamError("need both same-person and different-person pairs")
    si, sj = iu[same], ju[same]
    total, n_same, n_diff = sim[iu, ju].sum(), int(same.sum()), int((~same).sum())

    def statistic(order: np.ndarray) -> float:
        same_sum = sim[order[si], order[sj]].sum()  # relabelling photos = permuting rows and columns together
        return float(same_sum / n_same - (total - same_sum) / n_diff)

    observed = statistic(np.arange(ids.size))
    stats = np.array([statistic(rng.permutation(ids.size)) for _ in range(n)])
    slack = 1e-12 * max(1.0, abs(observed))
    return float((1 + (stats >= observed - slack).sum()) / (n + 1))
