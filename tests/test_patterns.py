"""bench.patterns and bench.variants: the analyses' arithmetic on synthetic maps (no weights), plus one real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.patterns import (
    N_PERMUTATIONS,
    PairSet,
    analyse_model,
    compare,
    cross_model_bc,
    different_pairs,
    mean_region_shares,
    pair_bc,
    pair_mask_bc,
    pairwise_bc,
    pairwise_mask_bc,
    same_pairs,
    top_masks,
)
from bench.variants import (
    BASELINE,
    FACTORS,
    Variant,
    choose_probes,
    combinations,
    layer_indices,
    one_factor_design,
    overall_from_layers,
)
from facecloak.faces.parse import EYES, NOSE, REGIONS, SKIN

S = 16


def _blob(y: int, x: int, size: int = 4) -> np.ndarray:
    """A distribution (S, S), uniform on a size x size square at (y, x)."""
    p = np.zeros((S, S), np.float32)
    p[y:y + size, x:x + size] = 1.0
    return p / p.sum()


def _labels() -> np.ndarray:
    """Face region = whole crop as skin, a nose square at rows/cols 0..7, eyes at rows 8..15 cols 8..15."""
    lab = np.full((S, S), SKIN, np.uint8)
    lab[0:8, 0:8] = NOSE
    lab[8:16, 8:16] = EYES
    return lab


IDS = ["a", "a", "a", "b", "b", "c", "c", "c"]
SPOT = {"a": (0, 0), "b": (8, 8), "c": (0, 8)}  # a: nose, b: eyes, c: skin; disjoint 4x4 squares


def _synthetic() -> tuple[np.ndarray, np.ndarray, PairSet]:
    maps = np.stack([_blob(*SPOT[i]) for i in IDS])
    labels = np.stack([_labels()] * len(IDS))
    pairs = PairSet(same_pairs(IDS), different_pairs(IDS, 1000, np.random.default_rng(0)))
    return maps, labels, pairs


def test_pairs_enumerate_same_and_sample_different() -> None:
    same = same_pairs(IDS)
    assert len(same) == 3 + 1 + 3  # C(3,2) + C(2,2) + C(3,2)
    assert all(IDS[i] == IDS[j] and i < j for i, j in same)
    every = different_pairs(IDS, 1000, np.random.default_rng(0))
    assert len(every) == 28 - 7 and all(IDS[i] != IDS[j] for i, j in every)
    few = different_pairs(IDS, 5, np.random.default_rng(3))
    assert len(few) == 5 and len({tuple(p) for p in few}) == 5
    np.testing.assert_array_equal(few, different_pairs(IDS, 5, np.random.default_rng(3)))  # seeded


def test_bc_is_one_for_identical_and_zero_for_disjoint_maps() -> None:
    maps = np.stack([_blob(0, 0), _blob(0, 0), _blob(8, 8)])
    pairs = np.array([[0, 1], [0, 2]])
    np.testing.assert_allclose(pair_bc(maps, pairs), [1.0, 0.0], atol=1e-6)
    masks = maps > 0
    np.testing.assert_allclose(pair_mask_bc(masks, pairs), [1.0, 0.0])
    # Half overlap: two 4x4 squares shifted by 2 columns share 8 of 16 pixels.
    half = np.stack([_blob(0, 0), _blob(0, 2)])
    np.testing.assert_allclose(pair_bc(half, np.array([[0, 1]])), [0.5], atol=1e-6)


def test_region_shares_sum_to_one_and_follow_the_labels() -> None:
    labels = np.stack([_labels()] * 2)
    masks = np.zeros((2, S, S), bool)
    masks[0, 0:2, 0:2] = True  # 4 nose pixels
    masks[1, 0:2, 6:10] = True  # 4 nose + 4 skin pixels
    shares = mean_region_shares(masks, labels)
    assert set(shares) == set(REGIONS.values())
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["nose"] == pytest.approx((1.0 + 0.5) / 2)
    assert shares["skin"] == pytest.approx(0.25)
    assert mean_region_shares(np.zeros((1, S, S), bool), labels[:1])["nose"] == 0.0


def test_top_masks_count_is_k_percent_of_the_face_region() -> None:
    labels = np.zeros((1, S, S), np.uint8)  # all "other" ...
    labels[0, 4:12, 4:12] = SKIN  # ... except a 64-pixel face
    rng = np.random.default_rng(0)
    p = rng.random((1, S, S)).astype(np.float32)
    p /= p.sum()
    mask = top_masks(p, labels, 10.0)
    assert mask.sum() == round(0.1 * 64)  # 6 pixels, all inside the face
    assert not (mask & (labels == 0)).any()
    assert top_masks(p, labels, 10.0, restrict_to_face=False).sum() == round(0.1 * S * S)


def test_analyse_model_on_person_specific_synthetic_maps() -> None:
    maps, labels, pairs = _synthetic()
    layer_maps = np.stack([maps, maps], axis=1)  # two identical layers
    genders = ["f", "f", "f", "m", "m", "f", "f", "f"]
    block = analyse_model(maps, labels, pairs, budget=25.0, genders=genders, layer_maps=layer_maps,
                          layer_names=("l1", "l2"))
    assert block["bc_full"]["same"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert block["bc_full"]["different"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert block["bc_full"]["same"]["n"] == 7 and block["bc_full"]["different"]["n"] == 21
    assert block["bc_full"]["p_value"] < 0.01
    # 25 % of 256 pixels = 64 > the 16-pixel blob: the rest is chosen by raster order, identically for every
    # photo, so mask BC is 1 for the same person and below 1 for different people.
    assert block["bc_mask"]["same"]["mean"] == pytest.approx(1.0)
    assert block["bc_mask"]["different"]["mean"] < 1.0
    assert sum(block["region_shares"].values()) == pytest.approx(1.0)
    assert block["layer_diversity"]["mean"] == pytest.approx(1.0, abs=1e-6)  # identical layers
    assert set(block["layers"]) == {"l1", "l2"}
    assert block["layer_bc_matrix"]["l1"]["l2"] == pytest.approx(1.0, abs=1e-6)
    f = block["by_gender"]["f"]
    assert f["n_faces"] == 6 and f["bc_full"]["same"]["n"] == 6 and f["bc_full"]["different"]["n"] == 9
    assert "bc_full" not in block["by_gender"]["m"]  # one person: no different-person pairs


def test_analyse_model_nose_share_of_a_nose_blob() -> None:
    maps = np.stack([_blob(2, 2)] * 4)  # every map peaks on the nose square
    labels = np.stack([_labels()] * 4)
    pairs = PairSet(same_pairs(["a", "a", "b", "b"]), different_pairs(["a", "a", "b", "b"], 10,
                                                                      np.random.default_rng(0)))
    block = analyse_model(maps, labels, pairs, budget=100 * 16 / 256)
    assert block["region_shares"]["nose"] == pytest.approx(1.0)
    assert block["bc_mask"]["different"]["mean"] == pytest.approx(1.0)  # not person-specific at all
    assert block["bc_mask"]["p_value"] > 0.4


def test_compare_and_cross_model_bc() -> None:
    result = compare(np.array([0.9, 0.8, 0.85]), np.array([0.1, 0.2, 0.15, 0.1]))
    assert result["same"]["n"] == 3 and result["different"]["n"] == 4
    assert result["gap"] == pytest.approx(0.85 - 0.1375)
    assert result["p_value"] < 0.05
    maps, _, _ = _synthetic()
    cross = cross_model_bc({"x": maps, "y": maps, "z": np.roll(maps, 4, axis=2)})
    assert cross["x"]["y"] == pytest.approx(1.0, abs=1e-6)
    assert cross["x"]["z"] < 0.9


# --- variants ------------------------------------------------------------------------------------------------


def test_one_factor_design_varies_one_factor_at_a_time() -> None:
    design = one_factor_design()
    assert design[0] == BASELINE
    assert len(design) == 1 + sum(len(v) - 1 for v in FACTORS.values())  # 10
    for v in design[1:]:
        assert sum(getattr(v, f) != getattr(BASELINE, f) for f in FACTORS) == 1


def test_combinations_take_the_best_levels_and_skip_tried_ones() -> None:
    order = {"method": ["layercam", "gradcam"], "layers": ["early", "default"], "selection": ["topk", "sampled"],
             "target": ["contrast", "reference"]}
    combos = combinations(order, one_factor_design(), n=2)
    assert combos[0] == Variant("layercam", "early", "topk", "contrast")
    assert combos[1] == Variant("gradcam", "early", "topk", "contrast")


def test_layer_sets_and_overall_from_layers_skip_empty_layers() -> None:
    assert layer_indices("default", 4) == [0, 1, 2, 3]
    assert layer_indices("early", 4) == [0, 1]
    assert layer_indices("last", 4) == [3]
    assert layer_indices("default+input", 4) == [0, 1, 2, 3, 4]
    a, b = _blob(0, 0), _blob(8, 8)
    layers = np.stack([np.stack([a, b, np.zeros_like(a)])])  # (1, 3, S, S): third layer empty
    overall = overall_from_layers(layers, [0, 1, 2])
    np.testing.assert_allclose(overall[0], 0.5 * a + 0.5 * b, atol=1e-7)
    assert overall_from_layers(layers, [2]).sum() == 0.0  # only the empty layer: no relevance


def test_choose_probes_refer_to_other_photos_of_the_same_person() -> None:
    probes = choose_probes(IDS, 2, np.random.default_rng(0))
    assert len(probes) == 2 + 2 + 2
    for p in probes:
        assert p.index not in p.references
        assert {IDS[r] for r in p.references} == {IDS[p.index]}
        assert len(p.references) == IDS.count(IDS[p.index]) - 1
    assert len(choose_probes(IDS, None, np.random.default_rng(0))) == len(IDS)


# --- real ----------------------------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.shared
@pytest.mark.slow
def test_run_patterns_on_deepface(deepface_dir: Path, tmp_path: Path) -> None:
    from conftest import require_pulled

    from bench.patterns import run_patterns

    require_pulled("mbf-arc", "mbf-tf")
    from facecloak.faces.parse import is_parser_pulled

    if not is_parser_pulled():
        pytest.skip("the FaceMesh parser is not pulled; run `facecloak models pull`")
    payload = run_patterns(deepface_dir, tmp_path, identities=4, models=["mbf-arc", "mbf-tf"], seed=0)
    saved = json.loads((tmp_path / "patterns.json").read_text())
    assert saved["n_identities"] == 4 and saved["n_photos"] == payload["n_photos"] >= 8
    assert set(saved["models"]) == {"mbf-arc", "mbf-tf", "ensemble"}
    for block in saved["models"].values():
        for key in ("bc_full", "bc_mask"):
            assert block[key]["same"]["n"] > 0 and block[key]["different"]["n"] > 0
            assert 0.0 <= block[key]["same"]["mean"] <= 1.0 and 0.0 <= block[key]["p_value"] <= 1.0
        assert sum(block["region_shares"].values()) == pytest.approx(1.0)
        assert block["region_shares"]["other"] == 0.0  # masks are restricted to the face region
    assert saved["cross_model_bc"]["mbf-arc"]["mbf-arc"] == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "patterns.md").read_text().startswith("# LEAM patterns")
    assert (tmp_path / "figures" / "bc_mask_mbf-arc.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "example_layers.png").is_file()


def test_pairwise_matrices_match_the_pair_functions_and_feed_the_permutation_test() -> None:
    maps, labels, pairs = _synthetic()
    masks = top_masks(maps, labels, 25.0)
    full, mask = pairwise_bc(maps), pairwise_mask_bc(masks)
    for p in (pairs.same, pairs.different):
        np.testing.assert_allclose(full[p[:, 0], p[:, 1]], pair_bc(maps, p), atol=1e-5)
        np.testing.assert_allclose(mask[p[:, 0], p[:, 1]], pair_mask_bc(masks, p), atol=1e-9)
    block = analyse_model(maps, labels, pairs, budget=25.0, identities=list(IDS))
    for key in ("bc_full", "bc_mask"):
        assert block[key]["n_permutations"] == N_PERMUTATIONS
        assert block[key]["p_value_permutation"] < 0.05  # the synthetic maps are person-specific
    assert "p_value_permutation" not in analyse_model(maps, labels, pairs, budget=25.0)["bc_full"]


def test_parse_variants_reads_the_cli_list_and_names_a_bad_entry() -> None:
    from bench.variants import parse_variants
    from facecloak.errors import ConfigError

    assert parse_variants(None) == [] and parse_variants(" ; ") == []
    assert parse_variants("layercam/early/topk/contrast;gradcam/default/topk/reference") == [
        Variant("layercam", "early", "topk", "contrast"), BASELINE]
    with pytest.raises(ConfigError, match="expected method/layers/selection/target"):
        parse_variants("layercam/early/topk")
    with pytest.raises(ConfigError, match="selection 'top' is not one of"):
        parse_variants("layercam/early/top/contrast")


def test_bench_variants_is_a_cli_command_that_refuses_a_bad_variant_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facecloak.cli import app
    from facecloak.errors import ConfigError

    result = CliRunner().invoke(app, ["bench", "variants", "--data", str(tmp_path / "missing"), "-o",
                                      str(tmp_path / "out"), "--variants", "layercam/early/topk/nobody"])
    assert isinstance(result.exception, ConfigError) and "target 'nobody'" in str(result.exception)
    assert not (tmp_path / "out").exists()
