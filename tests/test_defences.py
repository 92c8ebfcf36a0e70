"""Robustness defences (bench.defences): pure, shape- and dtype-keeping, and doing what their names say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.config import parse_defence
from bench.defences import DEFENCES, MASK_AWARE, apply_defence, blur, inpaint_mask, jpeg, resize
from facecloak.protection.fills import FILLS

RECIPE_NAMES = ("jpeg90", "jpeg75", "jpeg50", "resize50", "blur1", "inpaint-mask")


def _smooth(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    """A photo-like image: a coarse random pattern scaled up smoothly (JPEG and resizing are near-lossless on it)."""
    base = np.random.default_rng(seed).integers(30, 225, size=(6, 6, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


def _scatter(shape: tuple[int, int], count: int, seed: int = 1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    rng = np.random.default_rng(seed)
    mask.flat[rng.choice(mask.size, count, replace=False)] = True
    return mask


def test_registry_has_every_kind_the_recipe_parser_knows() -> None:
    assert set(DEFENCES) == {"jpeg", "resize", "blur", "inpaint-mask"}
    assert {parse_defence(n).kind for n in RECIPE_NAMES} == set(DEFENCES)
    assert sorted(MASK_AWARE) == ["inpaint-mask"]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(RECIPE_NAMES), st.integers(2, 40), st.integers(2, 40), st.integers(0, 2**16))
def test_every_defence_keeps_shape_and_dtype_and_leaves_its_input_alone(name: str, h: int, w: int, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)
    mask = _scatter((h, w), max(1, h * w // 10), seed)
    before, mask_before = image.copy(), mask.copy()
    out = apply_defence(parse_defence(name), image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    assert out is not image
    assert np.array_equal(image, before) and np.array_equal(mask, mask_before)
    again = apply_defence(parse_defence(name), image, mask)
    assert np.array_equal(out, again)  # deterministic


def test_jpeg100_is_nearly_the_identity_and_lower_quality_loses_more() -> None:
    image = _smooth()
    none = np.zeros(image.shape[:2], bool)
    err = {q: np.abs(jpeg(image, mask=none, value=q).astype(int) - image).mean() for q in (100, 90, 75, 50)}
    assert err[100] < 1.0
    assert err[100] < err[90] < err[75] < err[50]
    assert err[50] < 6.0  # still the same photo


def test_resize100_is_the_identity_and_resize50_keeps_a_smooth_photo() -> None:
    image = _smooth()
    none = np.zeros(image.shape[:2], bool)
    assert np.array_equal(resize(image, mask=none, value=100.0), image)
    half = resize(image, mask=none, value=50.0)
    assert half.shape == image.shape
    assert 0.0 < np.abs(half.astype(int) - image).mean() < 3.0
    flat = np.full((31, 45, 3), 123, np.uint8)  # odd sizes: the way back must hit the exact size
    assert np.array_equal(resize(flat, mask=np.zeros((31, 45), bool), value=50.0), flat)


def test_blur_keeps_flat_areas_and_removes_pixel_noise() -> None:
    flat = np.full((20, 20, 3), 77, np.uint8)
    none = np.zeros((20, 20), bool)
    assert np.array_equal(blur(flat, mask=none, value=1.0), flat)
    noisy = np.clip(128 + np.random.default_rng(0).normal(0, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
    smoothed = blur(noisy, mask=np.zeros((40, 40), bool), value=1.0)
    assert smoothed.astype(float).std() < 0.5 * noisy.astype(float).std()
    assert abs(smoothed.astype(float).mean() - noisy.astype(float).mean()) < 1.0


def test_inpaint_mask_changes_only_the_masked_pixels() -> None:
    image = _smooth()
    mask = _scatter(image.shape[:2], 60)
    blacked = image.copy()
    blacked[mask] = 0
    out = inpaint_mask(blacked, mask=mask, value=None)
    assert np.array_equal(out[~mask], blacked[~mask])
    # the black pixels come back close to the smooth photo they were cut from
    assert np.abs(out[mask].astype(int) - image[mask]).mean() < 8.0
    assert np.abs(blacked[mask].astype(int) - image[mask]).mean() > 60.0


def test_inpaint_mask_hardly_depends_on_what_the_masked_pixels_were_filled_with() -> None:
    # Why the `inpaint` fill gains nothing against this defender: Telea fills each masked pixel from the pixels
    # already known around it, so the old masked values almost never matter (a pixel or two by a level or two).
    image = _smooth()
    mask = _scatter(image.shape[:2], 80, seed=3)
    rng = np.random.default_rng(0)
    filled = {name: FILLS.get(name)(image, mask, rng=rng) for name in ("black", "noise", "inpaint")}
    outs = {name: inpaint_mask(f, mask=mask, value=None).astype(int) for name, f in filled.items()}
    for name in ("noise", "inpaint"):
        diff = np.abs(outs[name] - outs["black"])
        assert diff.max() <= 4 and (diff.max(axis=-1) > 0).sum() <= 0.05 * mask.sum(), name
    assert np.abs(outs["black"] - filled["inpaint"]).max() <= 4


def test_inpaint_mask_with_an_empty_or_full_mask_returns_a_copy() -> None:
    image = _smooth(16, 16)
    for mask in (np.zeros((16, 16), bool), np.ones((16, 16), bool)):
        out = inpaint_mask(image, mask=mask, value=None)
        assert np.array_equal(out, image) and out is not image


def test_contract_violations_are_value_errors() -> None:
    image = _smooth(8, 8)
    with pytest.raises(ValueError, match="uint8 RGB"):
        jpeg(image.astype(np.float32), mask=np.zeros((8, 8), bool), value=75)
    with pytest.raises(ValueError, match="bool mask"):
        blur(image, mask=np.zeros((8, 9), bool), value=1.0)
    with pytest.raises(ValueError, match="needs a value"):
        resize(image, mask=np.zeros((8, 8), bool), value=None)
