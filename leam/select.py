"""Pixel selection: which `budget` % of a relevance map's pixels to change. Pure functions.

Maps P are (H, W) or (N, H, W); `region` (same shape, or (H, W) shared by the batch) restricts the eligible
pixels (e.g. the face region from a parser). Every selector returns a bool mask of P's shape with exactly
`selection_count(budget, #eligible)` pixels set per map, all of them eligible. Torch in, torch out; a numpy map gives a
numpy mask. Selection runs on the CPU (masks are small) and the mask comes back on P's device.

Randomness (`sampled`) comes from a `torch.Generator` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from .errors import LeamError
from .registry import Registry

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)
SelectFn = Callable[..., Any]

SELECTORS: Registry[SelectFn] = Registry("pixel selector")


def selection_count(budget: float, n_eligible: int) -> int:
    """round(budget % × n_eligible) with halves rounded up (not to even), at least 1 pixel."""
    if not 0 < budget <= 100:
        raise LeamError(f"budget must be a percentage in (0, 100], got {budget}")
    if n_eligible < 1:
        raise LeamError("no eligible pixels: the region is empty")
    return max(1, min(n_eligible, math.floor(budget / 100 * n_eligible + 0.5)))


def _order(values: Tensor) -> Tensor:
    """Indices of a flat map from most to least relevant; ties keep ascending flat (raster) order."""
    return torch.sort(-values, stable=True).indices


def _cpu(x: Tensor | np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x.detach().cpu()


def _batched(select_one: Callable[[Tensor, Tensor], Tensor], p: ArrayT, region: ArrayT | None) -> ArrayT:
    """Validate, move to CPU float64, run `select_one(map (H, W), eligible (H, W))` per map, restore kind/device."""
    is_numpy = isinstance(p, np.ndarray)
    device = torch.device("cpu") if isinstance(p, np.ndarray) else p.device
    maps = _cpu(p).to(torch.float64)
    if maps.ndim not in (2, 3):
        raise LeamError(f"relevance map must be (H, W) or (N, H, W), got shape {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise LeamError("relevance map contains NaN or inf")
    single = maps.ndim == 2
    maps = maps.unsqueeze(0) if single else maps
    if region is None:
        eligible = torch.ones(maps.shape, dtype=torch.bool)
    else:
        r = _cpu(region).bool()
        if r.shape not in (maps.shape[1:], maps.shape):
            raise LeamError(f"region shape {tuple(r.shape)} does not match map shape {tuple(maps.shape[1:])}")
        eligible = r.expand(maps.shape)
    mask = torch.stack([select_one(m, e) for m, e in zip(maps, eligible, strict=True)])
    mask = mask[0] if single else mask
    return mask.numpy() if is_numpy else mask.to(device)  # type: ignore[return-value]


def _topk_one(p: Tensor, eligible: Tensor, budget: float) -> Tensor:
    flat, ok = p.flatten(), eligible.flatten()
    count = selection_count(budget, int(ok.sum()))
    idx = torch.nonzero(ok).flatten()
    chosen = idx[_order(flat[idx])[:count]]
    mask = torch.zeros_like(ok)
    mask[chosen] = True
    return mask.view_as(p)


@SELECTORS("topk")
def topk_mask(p: ArrayT, budget: float, region: ArrayT | None = None) -> ArrayT:
    """The `budget` % eligible pixels with the highest relevance; ties go to the lower flat (raster) index."""
    return _batched(lambda m, e: _topk_one(m, e, budget), p, region)


def _cell_edges(size: int, cells: int) -> list[int]:
    if not 1 <= cells <= size:
        raise LeamError(f"grid of {cells} cells does not fit {size} pixels")
    return [round(i * size / cells) for i in range(cells + 1)]


def _quotas(total: int, mass: list[float], capacity: list[int]) -> list[int]:
    """Split `total` pixels over cells in proportion to `mass` (largest remainder), never above `capacity`."""
    if sum(mass) <= 0:  # no relevance anywhere eligible: spread in proportion to the eligible area instead
        mass = [float(c) for c in capacity]
    ideal = [total * m / sum(mass) for m in mass]
    quota = [min(math.floor(v), c) for v, c in zip(ideal, capacity, strict=True)]
    cells = range(len(mass))
    # Hamilton's method: leftover pixels go to the largest remainders first; once those had theirs, to the most
    # relevant cells that still have room (only needed when a cell is full).
    by_remainder = sorted(cells, key=lambda c: (-(ideal[c] - math.floor(ideal[c])), -mass[c], c))
    by_mass = sorted(cells, key=lambda c: (-mass[c], c))
    left = total - sum(quota)
    for order in [by_remainder, *([by_mass] * total)]:
        for c in order:
            if left == 0:
                return quota
            if quota[c] < capacity[c]:
                quota[c] += 1
                left -= 1
    return quota


def _stratified_one(p: Tensor, eligible: Tensor, budget: float, grid: tuple[int, int]) -> Tensor:
    total = selection_count(budget, int(eligible.sum()))
    rows, cols = _cell_edges(p.shape[0], grid[0]), _cell_edges(p.shape[1], grid[1])
    index = torch.arange(p.numel()).view_as(p)
    cells = [
        (index[r0:r1, c0:c1][eligible[r0:r1, c0:c1]], p[r0:r1, c0:c1][eligible[r0:r1, c0:c1]])
        for r0, r1 in pairwise(rows)
        for c0, c1 in pairwise(cols)
    ]
    quota = _quotas(total, [float(v.clamp_min(0).sum()) for _, v in cells], [int(i.numel()) for i, _ in cells])
    mask = torch.zeros(p.numel(), dtype=torch.bool)
    for (idx, values), q in zip(cells, quota, strict=True):
        mask[idx[_order(values)[:q]]] = True  # idx is in raster order, so ties keep the raster order
    return mask.view_as(p)


@SELECTORS("stratified")
def stratified_mask(
    p: ArrayT, budget: float, grid: tuple[int, int] = (8, 8), region: ArrayT | None = None
) -> ArrayT:
    """Top pixels of each cell of a rows × cols grid, each cell's count ∝ its relevance mass (same total as top-k).

    Spreads the selection over the face where a late layer's top-k would be one compact blob. Cell edges are
    round(i × H / rows); counts use largest-remainder rounding and never exceed a cell's eligible pixels.
    """
    return _batched(lambda m, e: _stratified_one(m, e, budget, grid), p, region)


def _sampled_one(p: Tensor, eligible: Tensor, budget: float, gamma: float, generator: torch.Generator) -> Tensor:
    flat, ok = p.flatten(), eligible.flatten()
    count = selection_count(budget, int(ok.sum()))
    idx = torch.nonzero(ok).flatten()
    weight = flat[idx].clamp_min(0) ** gamma
    positive = idx[weight > 0]
    # multinomial without replacement cannot draw zero-weight pixels: take them uniformly once the rest are drawn.
    n_weighted = min(count, int(positive.numel()))
    chosen = (
        positive[torch.multinomial(weight[weight > 0], n_weighted, replacement=False, generator=generator)]
        if n_weighted
        else positive[:0]
    )
    if n_weighted < count:
        zero = idx[weight <= 0]
        chosen = torch.cat([chosen, zero[torch.randperm(zero.numel(), generator=generator)[: count - n_weighted]]])
    mask = torch.zeros_like(ok)
    mask[chosen] = True
    return mask.view_as(p)


@SELECTORS("sampled")
def sampled_mask(
    p: ArrayT,
    budget: float,
    gamma: float = 1.0,
    *,
    generator: torch.Generator,
    region: ArrayT | None = None,
) -> ArrayT:
    """Eligible pixels drawn without replacement with probability ∝ P^gamma (gamma 0: uniform; large: ~top-k).

    The same `generator` state gives the same mask; a batch draws its maps in order from one generator.
    """
    if not math.isfinite(gamma) or gamma < 0:
        raise LeamError(f"gamma must be a finite number >= 0, got {gamma}")
    if not isinstance(generator, torch.Generator):
        raise LeamError("sampled_mask needs a seeded torch.Generator (e.g. torch.Generator().manual_seed(0))")
    return _batched(lambda m, e: _sampled_one(m, e, budget, gamma, generator), p, region)
