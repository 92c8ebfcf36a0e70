"""Property-based fuzzing (issue 6 item 5), bounded and seeded so CI time is fixed.

- the decoder path: any bytes under any image suffix -> a `Photo` or an `ImageError`, never anything else;
  mutations of real encoded files (truncations, flipped bytes) exercise the decoders beyond their magic numbers;
- the fills: any mask and seed -> same shape and dtype, pixels outside the mask byte-identical;
- LEAM selection: any map, region and budget -> exactly `selection_count` pixels, all inside the region.

Example counts per test (`max_examples`) are in EXAMPLES: 1000 examples in all.
"""

from __future__ import annotations

import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

import leam
from facecloak.errors import ImageError
from facecloak.photos.io import Photo, read_image
from facecloak.protection.fills import FILLS

EXAMPLES = {"random_bytes": 300, "mutated_files": 300, "fills": 200, "selection": 200}
SUFFIXES = [".jpg", ".png", ".gif", ".tif", ".webp", ".bmp", ".heic"]
FUZZ = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}


def _decode_or_refuse(data: bytes, suffix: str) -> Photo | None:
    """read_image on `data` saved under `suffix`: the Photo, or None after an ImageError; anything else fails."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            photo = read_image(path, max_pixels=4_000_000)
        except ImageError as exc:
            message = str(exc)
            assert (message and "\n" not in message and str(path) in message) or "HEIC" in message
            return None
    assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
    assert photo.alpha is None or photo.alpha.shape == photo.rgb.shape[:2]
    return photo


@settings(max_examples=EXAMPLES["random_bytes"], **FUZZ)
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_decode_to_a_photo_or_an_image_error(data: bytes, suffix: str) -> None:
    _decode_or_refuse(data, suffix)


def _encoded_samples() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    samples = []
    for fmt, suffix, mode in [("JPEG", ".jpg", "RGB"), ("PNG", ".png", "RGBA"), ("PNG", ".png", "P"),
                              ("GIF", ".gif", "P"), ("TIFF", ".tif", "CMYK"), ("WEBP", ".webp", "RGB"),
                              ("BMP", ".bmp", "L"), ("PNG", ".png", "I;16")]:  # fmt: skip
        buffer = BytesIO()
        image = Image.fromarray(rgb).convert("RGBA" if mode == "RGBA" else "RGB")
        if mode == "I;16":
            image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
        elif mode not in ("RGB", "RGBA"):
            image = image.convert(mode)
        image.save(buffer, format=fmt)
        samples.append((suffix, buffer.getvalue()))
    return samples


SAMPLES = _encoded_samples()


@seed(6)
@settings(max_examples=EXAMPLES["mutated_files"], **FUZZ)
@given(
    sample=st.sampled_from(SAMPLES),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
)
def test_damaged_real_files_decode_or_are_refused(
    sample: tuple[str, bytes], cut: float, flips: list[tuple[float, int]]
) -> None:
    suffix, data = sample
    damaged = bytearray(data[: max(1, round(len(data) * (0.5 + cut / 2)))] if cut < 0.5 else data)
    for where, value in flips:
        damaged[min(len(damaged) - 1, int(where * len(damaged)))] ^= value
    photo = _decode_or_refuse(bytes(damaged), suffix)
    if photo is not None:
        assert photo.rgb.shape[:2] == (24, 32) or photo.rgb.size > 0  # a header flip may change the declared size


def test_undamaged_samples_all_decode() -> None:
    for suffix, data in SAMPLES:
        photo = _decode_or_refuse(data, suffix)
        assert photo is not None and photo.rgb.shape == (24, 32, 3), suffix


@st.composite
def images_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed_ = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed_)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    density = draw(st.sampled_from([0.0, 0.01, 0.2, 0.7, 1.0]))
    mask = rng.random((height, width)) < density
    return image, mask


OCCLUSION_FILLS = sorted(name for name in FILLS if not FILLS.get(name).needs_models)  # the cloak needs models


@settings(max_examples=EXAMPLES["fills"], **FUZZ)
@given(case=images_and_masks(), name=st.sampled_from(OCCLUSION_FILLS), fill_seed=st.integers(0, 1000))
def test_fills_change_nothing_outside_the_mask(case: tuple[np.ndarray, np.ndarray], name: str, fill_seed: int) -> None:
    image, mask = case
    original = image.copy()
    out = FILLS.get(name)(image, mask, rng=np.random.default_rng(fill_seed))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], image[~mask])
    assert np.array_equal(image, original)  # the input is never modified
    again = FILLS.get(name)(image, mask, rng=np.random.default_rng(fill_seed))
    assert np.array_equal(out, again)  # same seed, same bytes


@st.composite
def maps_regions_budgets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, float]:
    size = draw(st.integers(2, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "flat", "spiky", "zeros"]))
    values = {
        "random": rng.random((size, size)),
        "flat": np.ones((size, size)),
        "spiky": (rng.random((size, size)) > 0.97) * 1.0,
        "zeros": np.zeros((size, size)),
    }[kind]
    region = rng.random((size, size)) < draw(st.sampled_from([0.05, 0.5, 1.0]))
    region.flat[rng.integers(size * size)] = True  # never empty
    budget = draw(st.one_of(st.sampled_from([0.001, 1.0, 2.0, 50.0, 100.0]), st.floats(0.001, 100.0)))
    return torch.from_numpy(values.astype(np.float32)), torch.from_numpy(region), budget


@settings(max_examples=EXAMPLES["selection"], **FUZZ)
@given(case=maps_regions_budgets(), method=st.sampled_from(["topk", "stratified", "sampled"]))
def test_selection_picks_exactly_the_budget_inside_the_region(
    case: tuple[torch.Tensor, torch.Tensor, float], method: str
) -> None:
    p, region, budget = case
    if method == "topk":
        mask = leam.topk_mask(p[None], budget, region=region[None])
    elif method == "stratified":
        cells = min(4, p.shape[0])  # a grid finer than the map is refused on purpose
        mask = leam.stratified_mask(p[None], budget, grid=(cells, cells), region=region[None])
    else:
        mask = leam.sampled_mask(p[None], budget, gamma=1.0, generator=torch.Generator().manual_seed(0),
                                 region=region[None])  # fmt: skip
    mask = np.asarray(mask[0], bool)
    expected = leam.selection_count(budget, int(region.sum()))
    assert int(mask.sum()) == expected
    assert not (mask & ~region.numpy()).any()

