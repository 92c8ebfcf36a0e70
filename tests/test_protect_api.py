"""`facecloak.protect` (in facecloak.protection.protect): the Python API under the CLI and the transform, arrays
in/out."""

from __future__ import annotations

import numpy as np
import pytest
from _protect_support import astronaut, need_weights

from facecloak.errors import ConfigError
from facecloak.faces.parse import get_parser
from facecloak.protection.protect import protect
from leam.registry import UnknownNameError


@pytest.fixture(scope="module")
def fast() -> dict:
    need_weights()
    return {"models": ("mbf-arc",), "parser": get_parser("landmarks5")}


@pytest.mark.real
def test_only_the_mask_changes_and_the_input_is_untouched(fast: dict) -> None:
    image = astronaut(256)
    original = image.copy()
    result = protect(image, fill="noise", budget=2.0, seed=3, **fast)
    assert np.array_equal(image, original)
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.image[~result.mask], image[~result.mask])
    assert len(result.faces) == 1 and result.faces[0].pixels_changed == int(((result.image != image).any(2)).sum())
    assert result.heatmap is not None and result.heatmap.shape == image.shape[:2]
    assert float(result.heatmap.min()) >= 0.0 and float(result.heatmap.max()) <= 1.0 + 1e-6
    outcome = result.faces[0]
    assert outcome.cosine_before["mbf-arc"] == pytest.approx(1.0, abs=1e-4)  # reference: the clean face itself
    assert outcome.cosine_after["mbf-arc"] < 0.99
    again = protect(image, fill="noise", budget=2.0, seed=3, **fast)
    assert np.array_equal(again.image, result.image)  # deterministic for a seed


@pytest.mark.real
def test_budget_scales_the_number_of_changed_pixels(fast: dict) -> None:
    image = astronaut(256)
    one, four = (protect(image, fill="black", budget=b, **fast).pixels_changed for b in (1.0, 4.0))
    assert 3.0 < four / one < 5.0  # budget is a percentage of the face region (warping blurs the ratio a little)


@pytest.mark.real
def test_a_pruning_cloak_reports_the_pixels_it_kept_as_its_mask(fast: dict) -> None:
    from facecloak.protection.cloak import CloakSettings

    image = astronaut(256)
    settings = CloakSettings(steps=3, early_stop=False, keep=0.25)
    full = protect(image, fill="black", budget=8.0, **fast).mask
    result = protect(image, fill="cloak", budget=8.0, cloak_settings=settings, **fast)
    changed = (result.image != image).any(2)
    assert np.array_equal(result.mask, changed) and not (result.mask & ~full).any()
    assert 0.15 * full.sum() < result.pixels_changed <= 0.25 * full.sum() + 1


@pytest.mark.real
def test_every_face_is_protected_unless_largest_only(fast: dict) -> None:
    big, small = astronaut(256), astronaut(160)
    image = np.full((256, 448, 3), 128, np.uint8)
    image[:, :256] = big
    image[48:208, 272:432] = small
    both = protect(image, **fast)
    largest = protect(image, largest_only=True, **fast)
    assert len(both.faces) == 2 and len(largest.faces) == 1
    assert largest.faces[0].face.width == max(f.face.width for f in both.faces)
    assert not largest.mask[:, 256:].any() and both.mask[:, 256:].any()


@pytest.mark.real
def test_no_face_returns_an_equal_copy(fast: dict) -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    result = protect(image, **fast)
    assert result.faces == () and not result.mask.any() and np.array_equal(result.image, image)
    assert result.image is not image and result.notes == ("no face found",)


def test_bad_arguments_are_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match="uint8 RGB"):
        protect(np.zeros((8, 8), np.uint8))
    with pytest.raises(ConfigError, match="uint8 RGB"):
        protect(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match="unknown fill 'blak'; did you mean black"):
        protect(np.zeros((8, 8, 3), np.uint8), fill="blak")
    with pytest.raises(UnknownNameError, match="mbf-arc"):
        protect(np.zeros((8, 8, 3), np.uint8), models=["mbf-ar"])
    with pytest.raises(ConfigError, match="budget"):
        protect(np.zeros((8, 8, 3), np.uint8), budget=0, faces=[])


@pytest.mark.parametrize("budget", [0, -1, 100.5, float("nan"), float("inf"), "a lot"])
def test_every_entry_refuses_a_bad_budget_with_the_same_config_error(budget: object) -> None:
    from facecloak.masking.leamface import LeamSettings, check_budget
    from facecloak.serve.policy import strength_for
    from facecloak.transforms import LeamOcclusion

    message = r"budget must be a percentage in \(0, 100\]"
    with pytest.raises(ConfigError, match=message):
        check_budget(budget)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        LeamSettings(budget=budget)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        strength_for("low", budget=budget)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        LeamOcclusion(models=["mbf-arc"], budget=(1.0, budget))  # type: ignore[arg-type]
    assert check_budget(2) == 2.0 and isinstance(check_budget(2), float)


@pytest.mark.real
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_the_cloak_runs_on_the_gpu_and_changes_only_the_mask(fast: dict) -> None:
    """`device="cuda"` puts the cloak's pixels beside its source models (before, the cloak ran on the CPU whatever
    the device): the result keeps every pixel outside the mask and moves the face as the CPU run does."""
    from facecloak.protection.cloak import CloakSettings

    image = astronaut(256)
    settings = CloakSettings(steps=10, early_stop=False)
    runs = {dev: protect(image, fill="cloak", budget=4.0, cloak_settings=settings, device=dev, **fast)
            for dev in ("cpu", "cuda")}
    gpu, cpu = runs["cuda"], runs["cpu"]
    assert gpu.cloak_steps == 10 and np.array_equal(gpu.image[~gpu.mask], image[~gpu.mask])
    assert gpu.references["mbf-arc"].device.type == "cuda"
    assert gpu.faces[0].cosine_after["mbf-arc"] < gpu.faces[0].cosine_before["mbf-arc"] - 0.1
    assert abs(gpu.faces[0].cosine_after["mbf-arc"] - cpu.faces[0].cosine_after["mbf-arc"]) < 0.1
