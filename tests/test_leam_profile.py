"""Person profiles (build, atomic save, validated load, ensemble) and map metrics (BC, overlap, tests)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from leam import (
    LeamError,
    Profile,
    ProfileError,
    Relevance,
    bhattacharyya,
    build_profile,
    ensemble_maps,
    identity_permutation_p,
    layer_diversity,
    load_profile,
    mann_whitney_p,
    mask_overlap_bc,
    permutation_p,
    save_profile,
)


def distributions(n: int, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    p = torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed))
    return p / p.sum(dim=(-2, -1), keepdim=True)


def relevance(n: int, seed: int = 0) -> Relevance:
    layer_maps = distributions(n * 2, seed=seed).view(n, 2, 6, 5).clone()
    layer_maps[0, 1] = 0  # photo 0: second layer empty
    overall = torch.stack([layer_maps[0, 0], *((layer_maps[i, 0] + layer_maps[i, 1]) / 2 for i in range(1, n))])
    return Relevance(
        layers=("stage2", "stage4"),
        method="gradcam",
        layer_maps=layer_maps,
        overall=overall,
        empty=((0, "stage4"),),
        scores=torch.ones(n),
        weights=(0.5, 0.5),
    )


def make_profile(n: int = 3) -> Profile:
    return build_profile(
        [relevance(2, seed=1), relevance(n - 2, seed=2)] if n > 2 else relevance(n),
        model_id="mbf_arc",
        target="reference",
        photo_hashes=[f"{i:064x}" for i in range(n)],
        template="arcface112",
    )


# --- profiles --------------------------------------------------------------------------------------------------


def test_build_profile_means_the_photos() -> None:
    a, b = relevance(2, seed=1), relevance(1, seed=2)
    profile = make_profile(3)
    overall = torch.cat([a.overall, b.overall]).double().mean(0)
    np.testing.assert_allclose(profile.overall, (overall / overall.sum()).numpy(), rtol=1e-5)
    # stage4 was empty in photo 0 of each relevance: its mean is over photo 1 of `a` only
    np.testing.assert_allclose(profile.layer_maps[1], a.layer_maps[1, 1].numpy(), rtol=1e-5)
    assert profile.n_photos == 3 and profile.layers == ("stage2", "stage4") and profile.model_ids == ("mbf_arc",)
    assert not profile.overall.flags.writeable


def test_profile_round_trip(tmp_path: Path) -> None:
    profile = make_profile(3)
    path = save_profile(tmp_path / "people" / "alice.npz", profile)
    assert [p.name for p in path.parent.iterdir()] == ["alice.npz"]  # no temporary file left behind
    loaded = load_profile(path)
    assert np.array_equal(loaded.overall, profile.overall) and np.array_equal(loaded.layer_maps, profile.layer_maps)
    assert loaded.metadata() == profile.metadata()
    assert loaded.photos_digest == profile.photos_digest
    with np.load(path, allow_pickle=False) as data:  # readable without pickle
        assert json.loads(str(data["meta"]))["format"] == "leam-profile"


def test_load_rejects_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(junk)
    profile = make_profile(3)
    meta = profile.metadata() | {"version": 99}
    bad = tmp_path / "future.npz"
    np.savez(bad, overall=profile.overall, layer_maps=profile.layer_maps, meta=np.array(json.dumps(meta)))
    with pytest.raises(ProfileError, match="version 99"):
        load_profile(bad)
    good = np.array(json.dumps(profile.metadata()))
    np.savez(bad, overall=profile.overall * 2, layer_maps=profile.layer_maps, meta=good)
    with pytest.raises(ProfileError, match="sum to 1"):
        load_profile(bad)
    np.savez(bad, overall=profile.overall, layer_maps=profile.layer_maps)
    with pytest.raises(ProfileError, match="missing meta"):
        load_profile(bad)


def test_profile_validation() -> None:
    profile = make_profile(3)
    with pytest.raises(ProfileError, match="photo hashes"):
        replace(profile, n_photos=4)
    with pytest.raises(ProfileError, match="layer maps for"):
        replace(profile, layers=("only_one",))
    blank = relevance(2)
    object.__setattr__(blank, "overall", torch.zeros_like(blank.overall))
    with pytest.raises(ProfileError, match=r"photos \[0, 1\] have no relevance"):
        build_profile(blank, model_id="m", target="flip", photo_hashes=["a", "b"], template="t")


def test_ensemble_maps_renormalises_and_weights() -> None:
    a = np.zeros((2, 2))
    a[0, 0] = 0.5  # lost half its mass when warped: counts as a full distribution
    b = np.zeros((2, 2))
    b[1, 1] = 1.0
    np.testing.assert_allclose(ensemble_maps([a, b]), [[0.5, 0], [0, 0.5]])
    np.testing.assert_allclose(ensemble_maps([a, b], weights=[3, 1]), [[0.75, 0], [0, 0.25]])
    out = ensemble_maps([torch.from_numpy(a), torch.from_numpy(b)])
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    with pytest.raises(ProfileError, match="not all zero"):
        ensemble_maps([a, np.zeros((2, 2))])


# --- metrics ---------------------------------------------------------------------------------------------------


def test_bhattacharyya_identical_disjoint_and_by_hand() -> None:
    p = distributions(3)
    np.testing.assert_allclose(bhattacharyya(p, p), np.ones(3), rtol=1e-6)
    left, right = np.zeros((2, 2)), np.zeros((2, 2))
    left[:, 0], right[:, 1] = 0.5, 0.5
    assert bhattacharyya(left, right) == 0.0
    q = np.array([[0.25, 0.25], [0.5, 0.0]])
    assert bhattacharyya(left, q) == pytest.approx(np.sqrt(0.125) + np.sqrt(0.25))
    with pytest.raises(LeamError, match="distributions"):
        bhattacharyya(left * 2, q)


def test_mask_overlap_is_the_shared_fraction() -> None:
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros((4, 4), dtype=bool)
    a[0, :4] = True  # 4 pixels
    b[0, 2:] = True  # 2 pixels, both in a
    b[1, 0] = True  # one outside a
    assert mask_overlap_bc(a, b) == pytest.approx(2 / np.sqrt(4 * 3))
    # equals the BC of the masks taken as uniform distributions
    assert mask_overlap_bc(a, b) == pytest.approx(bhattacharyya(a / a.sum(), b / b.sum()))
    assert mask_overlap_bc(torch.from_numpy(a), torch.from_numpy(a)) == 1.0


def test_layer_diversity_matrix() -> None:
    maps = distributions(3).numpy()
    maps[2] = 0  # an empty layer
    bc = layer_diversity(maps)
    assert bc.shape == (3, 3)
    np.testing.assert_allclose(np.diag(bc)[:2], 1.0, rtol=1e-6)
    assert bc[0, 1] == pytest.approx(float(bhattacharyya(maps[0], maps[1])))
    assert np.isnan(bc[2]).all() and np.isnan(bc[:, 2]).all()
    assert layer_diversity(np.stack([maps, maps])).shape == (2, 3, 3)


def test_significance_tests() -> None:
    rng = np.random.default_rng(0)
    same, different = rng.normal(0.5, 0.05, 40), rng.normal(0.1, 0.05, 60)
    assert mann_whitney_p(same, different) == pytest.approx(mannwhitneyu(same, different).pvalue)
    assert mann_whitney_p(same, different, "greater") < 1e-10
    p = permutation_p(same, different, 999, np.random.default_rng(1))
    assert p == pytest.approx(1 / 1000)  # no relabelling beats a gap of 0.4
    assert p == permutation_p(same, different, 999, np.random.default_rng(1))
    null = permutation_p(different[:30], different[30:], 999, np.random.default_rng(1))
    assert null > 0.05
    with pytest.raises(LeamError, match="non-empty"):
        permutation_p([], different, 10, rng)


def _block_similarity(ids: list[str], same: float, different: float) -> np.ndarray:
    labels = np.asarray(ids)
    return np.where(labels[:, None] == labels[None, :], same, different).astype(np.float64)


def test_identity_permutation_p_separates_person_structure_from_none() -> None:
    ids = [p for p in "abcdefgh" for _ in range(3)]  # 8 people, 3 photos each
    clear = _block_similarity(ids, 0.9, 0.1)
    p = identity_permutation_p(clear, ids, 499, np.random.default_rng(0))
    # Only relabellings that keep every group together reach the observed gap; at 24 photos that is ~never.
    assert p == pytest.approx(1 / 500)
    assert p == identity_permutation_p(clear, ids, 499, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    noise = rng.random((24, 24))
    noise = (noise + noise.T) / 2  # symmetric, no person structure
    assert identity_permutation_p(noise, ids, 499, np.random.default_rng(0)) > 0.05
    # Same-person pairs *less* similar: one-sided test, p near 1.
    assert identity_permutation_p(_block_similarity(ids, 0.1, 0.9), ids, 99, np.random.default_rng(0)) > 0.9


def test_identity_permutation_p_keeps_its_level_where_pair_level_mann_whitney_does_not() -> None:
    """Null data with photo effects (sim = s_i + s_j + noise, no person structure) and one large person: pairs
    that share a photo are correlated, so pair-level Mann-Whitney rejects far more often than 5 %; the photo-level
    permutation test stays near its nominal level (measured: 29 % vs 6 % of 200 data sets)."""
    ids = ["a"] * 12 + [p for p in "bcdefg" for _ in range(2)]
    labels = np.asarray(ids)
    iu, ju = np.triu_indices(len(ids), k=1)
    same = labels[iu] == labels[ju]
    mw_rejects = perm_rejects = 0
    for k in range(200):
        rng = np.random.default_rng(k)
        s = rng.normal(0, 1, len(ids))
        sim = s[:, None] + s[None, :] + 0.1 * rng.normal(size=(len(ids), len(ids)))
        sim = (sim + sim.T) / 2
        mw_rejects += mann_whitney_p(sim[iu, ju][same], sim[iu, ju][~same], "greater") < 0.05
        perm_rejects += identity_permutation_p(sim, ids, 199, np.random.default_rng(k)) < 0.05
    assert mw_rejects > 40  # > 20 % false positives
    assert perm_rejects < 20  # < 10 %: binomial(200, 0.05) has mean 10, sd 3.1


def test_identity_permutation_p_refuses_bad_input() -> None:
    with pytest.raises(LeamError, match="N, N"):
        identity_permutation_p(np.zeros((3, 3)), ["a", "a"], 9, np.random.default_rng(0))
    with pytest.raises(LeamError, match="both"):
        identity_permutation_p(np.zeros((3, 3)), ["a", "a", "a"], 9, np.random.default_rng(0))
    with pytest.raises(LeamError, match="n >= 1"):
        identity_permutation_p(np.zeros((2, 2)), ["a", "b"], 0, np.random.default_rng(0))
