"""Pixel selectors: exact counts, deterministic ties, regions, proportional strata, seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leam import SELECTORS, LeamError, sampled_mask, selection_count, stratified_mask, topk_mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_selection_count_rounds_half_up_with_a_minimum_of_one() -> None:
    assert selection_count(1, 12544) == 125  # 125.44
    assert selection_count(2.5, 100) == 3  # 2.5 -> 3, not to even
    assert selection_count(0.01, 10) == 1
    assert selection_count(100, 7) == 7
    with pytest.raises(LeamError):
        selection_count(0, 10)
    with pytest.raises(LeamError, match="region is empty"):
        selection_count(1, 0)


def test_topk_picks_the_highest_pixels() -> None:
    p = torch.tensor([[0.1, 0.5, 0.0], [0.3, 0.05, 0.05]])
    mask = topk_mask(p, 50)  # 3 of 6 pixels
    assert mask.tolist() == [[True, True, False], [True, False, False]]


def test_topk_ties_go_to_the_lowest_raster_index_and_are_deterministic() -> None:
    p = torch.full((4, 5), 0.05)
    p[3, 4] = 0.5
    mask = topk_mask(p, 20)  # 4 pixels: the peak, then the first 3 of the tied ones in raster order
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0, :3] = True
    expected[3, 4] = True
    assert torch.equal(mask, expected)
    assert all(torch.equal(topk_mask(p, 20), mask) for _ in range(3))


def test_topk_region_and_batch_and_numpy() -> None:
    p = np.arange(16, dtype=np.float32).reshape(4, 4)
    region = np.zeros((4, 4), dtype=bool)
    region[:2] = True  # the top two rows hold the lowest values
    mask = topk_mask(p, 25, region=region)  # 25 % of 8 eligible = 2
    assert isinstance(mask, np.ndarray) and mask.dtype == bool
    assert np.argwhere(mask).tolist() == [[1, 2], [1, 3]]
    batch = topk_mask(torch.stack([torch.from_numpy(p), torch.from_numpy(-p)]), 12.5)
    assert batch.shape == (2, 4, 4) and batch.sum(dim=(1, 2)).tolist() == [2, 2]
    assert batch[1, 0, :2].all()


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.floats(0.01, 100),
    seed=st.integers(0, 2**16),
    region_share=st.floats(0.05, 1.0),
)
def test_topk_count_and_region_property(h: int, w: int, k: float, seed: int, region_share: float) -> None:
    g = gen(seed)
    p = torch.rand(h, w, generator=g).round(decimals=1)  # rounding makes many ties
    region = torch.rand(h, w, generator=g) < region_share
    region.view(-1)[0] = True  # never empty
    mask = topk_mask(p, k, region=region)
    n = int(region.sum())
    assert int(mask.sum()) == max(1, min(n, int(np.floor(k / 100 * n + 0.5))))
    assert not (mask & ~region).any()
    # every selected pixel is at least as relevant as every eligible pixel left out
    if (region & ~mask).any():
        assert p[mask].min() >= p[region & ~mask].max()
    assert torch.equal(mask, topk_mask(p.clone(), k, region=region.clone()))


def test_stratified_counts_follow_cell_mass() -> None:
    p = torch.zeros(4, 4)
    p[:2, :2] = 0.5 / 4  # cell masses (2x2 grid): 0.5, 0.25, 0.25, 0
    p[:2, 2:] = 0.25 / 4
    p[2:, :2] = 0.25 / 4
    p[0, 0] += 1e-3  # make the within-cell order visible
    mask = stratified_mask(p, 25, grid=(2, 2))  # 4 pixels -> 2, 1, 1, 0
    counts = [int(mask[r : r + 2, c : c + 2].sum()) for r in (0, 2) for c in (0, 2)]
    assert counts == [2, 1, 1, 0]
    assert mask[0, 0] and mask[0, 1]  # the peak, then the raster-order tie
    assert int(mask.sum()) == int(topk_mask(p, 25).sum())


@settings(max_examples=40, deadline=None)
@given(k=st.floats(0.5, 100), seed=st.integers(0, 2**16), gh=st.integers(1, 6), gw=st.integers(1, 6))
def test_stratified_total_equals_topk(k: float, seed: int, gh: int, gw: int) -> None:
    g = gen(seed)
    p = torch.rand(2, 12, 10, generator=g) ** 4
    region = torch.rand(12, 10, generator=g) < 0.7
    region[0, 0] = True
    mask = stratified_mask(p, k, grid=(gh, gw), region=region)
    assert mask.sum(dim=(1, 2)).tolist() == topk_mask(p, k, region=region).sum(dim=(1, 2)).tolist()
    assert not (mask & ~region).any()


def test_stratified_spreads_a_compact_blob_less_than_topk() -> None:
    p = torch.full((16, 16), 1e-4)
    p[6:10, 6:10] = 1.0
    top = topk_mask(p, 5)
    strat = stratified_mask(p, 5, grid=(2, 2))
    assert top[6:10, 6:10].sum() == top.sum()  # top-k stays inside the blob
    # the blob straddles the four cells, so every cell gets its share
    assert [int(strat[r : r + 8, c : c + 8].sum()) for r in (0, 8) for c in (0, 8)] == [
        4,
        3,
        3,
        3,
    ]  # 12.8 -> 13 pixels; the tie for the extra one goes to the first cell


def test_sampled_is_reproducible_and_seed_dependent() -> None:
    p = torch.rand(20, 20, generator=gen(0))
    a = sampled_mask(p, 10, generator=gen(7))
    b = sampled_mask(p, 10, generator=gen(7))
    c = sampled_mask(p, 10, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.sum()) == 40 == int(c.sum())


def test_sampled_follows_the_weights() -> None:
    p = torch.zeros(10, 10)
    p[0, :5] = 1.0  # only 5 pixels carry weight
    mask = sampled_mask(p, 8, generator=gen(1))  # 8 pixels: the 5 weighted ones, then 3 uniform among the rest
    assert int(mask.sum()) == 8 and mask[0, :5].all()
    with pytest.raises(LeamError, match=r"torch\.Generator"):
        sampled_mask(p, 8, generator=np.random.default_rng(0))  # type: ignore[arg-type]
    region = torch.zeros(10, 10, dtype=torch.bool)
    region[5:] = True
    in_region = sampled_mask(p, 10, generator=gen(2), region=region)
    assert int(in_region.sum()) == 5 and not (in_region & ~region).any()


def test_registry_holds_the_three_selectors() -> None:
    assert SELECTORS.names() == ["topk", "stratified", "sampled"]
    p = torch.rand(8, 8, generator=gen(3))
    assert torch.equal(SELECTORS.get("topk")(p, 10), topk_mask(p, 10))


def test_bad_inputs_raise() -> None:
    with pytest.raises(LeamError, match="NaN"):
        topk_mask(torch.tensor([[float("nan"), 1.0]]), 50)
    with pytest.raises(LeamError, match="region shape"):
        topk_mask(torch.rand(4, 4), 50, region=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(LeamError, match="region is empty"):
        topk_mask(torch.rand(4, 4), 50, region=torch.zeros(4, 4, dtype=torch.bool))
