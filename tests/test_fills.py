"""Occlusion fills: the contract over every registered fill (property test) and each fill's values by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from facecloak.errors import ConfigError
from facecloak.protection.fills import FILLS, blur, cloak_fill, get_fill, inpaint, mean, noise, pixelate

EXPECTED_FILLS = {"black", "mean", "blur", "pixelate", "noise", "inpaint"}  # occlusion fills: image, mask, rng


@st.composite
def image_and_mask(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    height = draw(st.integers(1, 24))
    width = draw(st.integers(1, 24))
    image = draw(hnp.arrays(np.uint8, (height, width, 3)))
    mask = draw(hnp.arrays(np.bool_, (height, width)))
    return image, mask


def test_registry_holds_the_documented_fills_and_the_cloak() -> None:
    assert set(FILLS.names()) == EXPECTED_FILLS | {"cloak"}
    assert {name for name in FILLS if not FILLS.get(name).needs_models} == EXPECTED_FILLS
    assert get_fill("cloak").needs_models and get_fill("cloak").function is cloak_fill
    assert all(FILLS.get(name).name == name for name in FILLS)


def test_unknown_fill_is_a_config_error_with_suggestions() -> None:
    with pytest.raises(ConfigError, match=r"unknown fill 'clok'; did you mean cloak\?.*known: .*inpaint"):
        get_fill("clok")


def test_the_cloak_refuses_to_be_called_like_an_occlusion_fill() -> None:
    image, mask = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool)
    with pytest.raises(ConfigError, match="needs source models"):
        get_fill("cloak")(image, mask, rng=np.random.default_rng(0))


def test_cloak_fill_without_sources_changes_nothing() -> None:
    image = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out, steps = cloak_fill(image, np.ones((6, 5), bool), [])
    assert steps == 0 and np.array_equal(out, image) and out is not image


@pytest.mark.parametrize("name", sorted(EXPECTED_FILLS))
@settings(max_examples=40, deadline=None)
@given(case=image_and_mask(), seed=st.integers(0, 2**32 - 1))
def test_fill_contract(name: str, case: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    image, mask = case
    before = image.copy()
    fill = FILLS.get(name)

    out = fill(image, mask, rng=np.random.default_rng(seed))
    again = fill(image, mask, rng=np.random.default_rng(seed))

    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], image[~mask]), "a pixel outside the mask changed"
    assert np.array_equal(out, again), "same seed, different output"
    assert np.array_equal(image, before), "the input was modified"
    assert out is not image


@pytest.mark.parametrize("name", sorted(EXPECTED_FILLS))
def test_empty_mask_returns_an_equal_copy(name: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    out = FILLS.get(name)(image, np.zeros((9, 7), bool), rng=np.random.default_rng(0))
    assert np.array_equal(out, image) and out is not image


@pytest.mark.parametrize("name", sorted(EXPECTED_FILLS))
def test_wrong_inputs_are_refused(name: str) -> None:
    fill = FILLS.get(name)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        fill(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), bool), rng=rng)
    with pytest.raises(ValueError, match="bool mask"):
        fill(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), bool), rng=rng)
    with pytest.raises(ValueError, match="bool mask"):
        fill(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), rng=rng)


def test_black_sets_masked_pixels_to_zero() -> None:
    image = np.full((3, 3, 3), 200, np.uint8)
    mask = np.zeros((3, 3), bool)
    mask[1, 2] = True
    out = FILLS.get("black")(image, mask, rng=np.random.default_rng(0))
    assert out[1, 2].tolist() == [0, 0, 0]
    assert int(out.sum()) == 200 * 3 * 8


def test_mean_uses_the_unmasked_neighbourhood_only() -> None:
    # Left half red, right half blue; a blob in the red half whose 2-px neighbourhood is all red.
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = (200, 10, 10)
    image[:, 20:] = (10, 10, 200)
    mask = np.zeros((20, 40), bool)
    mask[8:12, 5:9] = True
    image[mask] = (0, 255, 0)  # must not leak into the colour
    out = mean(image, mask, rng=np.random.default_rng(0))
    assert np.all(out[mask] == (200, 10, 10))


def test_mean_of_a_mask_covering_the_whole_image_is_the_image_mean() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0] = (100, 0, 4)  # means: 25, 0, 1
    out = mean(image, np.ones((2, 2), bool), rng=np.random.default_rng(0))
    assert np.all(out == (25, 0, 1))


def test_blur_equals_a_full_image_blur_inside_the_mask() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[10:20, 30:45] = True
    mask[55:, 0:3] = True  # touches the image border, where the crop's mirror must equal the image's
    sigma = 2.5
    reach = int(np.ceil(3 * sigma)) + 1
    full = cv2.GaussianBlur(image, (2 * reach + 1,) * 2, sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    out = blur(image, mask, rng=rng, sigma=sigma)
    assert np.array_equal(out[mask], full[mask])


def test_blur_sigma_scales_with_image_size() -> None:
    # Default sigma is 2% of the shorter side (4 px here): enough to turn a 1-px checkerboard mid-grey.
    board = (np.indices((200, 200)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(board[:, :, None], 3, axis=2)
    mask = np.zeros((200, 200), bool)
    mask[90:110, 90:110] = True
    out = blur(image, mask, rng=np.random.default_rng(0))  # sigma = 4 px
    assert np.abs(out[mask].astype(int) - 127.5).max() <= 2


def test_pixelate_block_means_aligned_to_the_image_corner() -> None:
    image = np.zeros((6, 5, 3), np.uint8)
    image[:, :, 0] = np.arange(30, dtype=np.uint8).reshape(6, 5)
    mask = np.zeros((6, 5), bool)
    mask[1, 1] = True  # cell rows 0..3, cols 0..3: mean of 0,1,2,5,6,7,10,11,12 = 6
    mask[5, 4] = True  # edge cell rows 3..6, col 3..5: mean of 18,19,23,24,28,29 = 23.5 -> 24 (half to even)
    out = pixelate(image, mask, rng=np.random.default_rng(0), block=3)
    assert out[1, 1].tolist() == [6, 0, 0]
    assert out[5, 4].tolist() == [24, 0, 0]
    with pytest.raises(ValueError, match="block"):
        pixelate(image, mask, rng=np.random.default_rng(0), block=0)


def test_noise_draws_from_the_given_generator_in_row_major_order() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    mask = np.eye(4, dtype=bool)
    out = noise(image, mask, rng=np.random.default_rng(7))
    expected = np.random.default_rng(7).integers(0, 256, size=(4, 3), dtype=np.uint8)
    assert np.array_equal(out[mask], expected)
    other = noise(image, mask, rng=np.random.default_rng(8))
    assert not np.array_equal(out, other)


def test_inpaint_fills_scattered_pixels_from_their_smooth_surroundings() -> None:
    # A smooth horizontal ramp with scattered holes: Telea restores each hole to within a few levels.
    ramp = np.linspace(0, 255, 64)
    image = np.repeat(np.tile(ramp, (48, 1))[:, :, None], 3, axis=2).round().astype(np.uint8)
    rng = np.random.default_rng(3)
    mask = rng.random((48, 64)) < 0.02
    damaged = image.copy()
    damaged[mask] = (255, 0, 255)
    out = inpaint(damaged, mask, rng=rng)
    error = np.abs(out[mask].astype(int) - image[mask].astype(int))
    assert mask.sum() > 20
    assert error.max() <= 8, error.max()
