"""Fills: what replaces the pixels inside a mask; every other pixel is left alone.

Every occlusion fill is a pure function with the signature ``fill(image, mask, *, rng, **params) -> new image``:

- `image` is uint8 RGB (H, W, 3), `mask` is bool (H, W) in the same pixel grid; True marks pixels to replace.
- `rng` is always passed (even to fills that draw nothing) so callers treat all fills alike; the same seed
  gives byte-identical output.
- Parameters are keyword-only with defaults; the result is a new array of the same shape and dtype, and every
  pixel outside the mask is byte-identical to the input. The input is never modified.

Every fill is registered by name in `FILLS` as a `Fill`. One of them, `cloak` (a sparse adversarial perturbation
inside the mask, optimised in `facecloak.protection.cloak`), declares `needs_models`: it also needs the source
recognition models and each face's alignment, which `facecloak.protect` supplies, so it is run through `protect` (or
`Fill.function` with those arguments), not called like the others. `get_fill` is the one validation of a fill name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np

from facecloak.errors import ConfigError
from leam.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from facecloak.protection.cloak import CloakSettings, SourceModel


@dataclass(frozen=True)
class Fill:
    """A registered fill: its function and what it needs besides the image, the mask and `rng`.

    Fills without `needs_models` are called directly: `fill(image, mask, rng=rng, **params)`. A fill that
    `needs_models` (the cloak) has its own signature (see `cloak_fill`); calling it like an occlusion fill
    raises a `ConfigError` that says so.
    """

    name: str
    function: Callable[..., Any]
    needs_models: bool = False

    def __call__(self, image: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator, **params: Any) -> np.ndarray:
        if self.needs_models:
            raise ConfigError(f"the {self.name!r} fill needs source models and faces: use "
                              f"facecloak.protect(image, fill={self.name!r})")
        return self.function(image, mask, rng=rng, **params)


FILLS: Registry[Fill] = Registry("fill")
FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])


def _register(name: str, *, needs_models: bool = False) -> Callable[[FunctionT], FunctionT]:
    """Decorator: register the function as fill `name` and return it unchanged (it stays callable by itself)."""

    def deco(function: FunctionT) -> FunctionT:
        FILLS.register(name, Fill(name, function, needs_models))
        return function

    return deco


def get_fill(name: str) -> Fill:
    """The registered fill `name`; an unknown name raises `ConfigError` naming the close ones and every fill."""
    try:
        return FILLS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None


def check_image_and_mask(image: np.ndarray, mask: np.ndarray, user: str = "fills") -> None:
    """Refuse anything but a uint8 RGB (H, W, 3) image with a bool (H, W) mask; `user` names the caller's kind
    in the message (fills here, defences in the benchmark)."""
    # Contract violations by calling code, not user input: ValueError, not a FacecloakError.
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{user} need a uint8 RGB image of shape (H, W, 3), got {image.dtype} {image.shape}")
    if mask.dtype != np.bool_ or mask.shape != image.shape[:2]:
        raise ValueError(f"{user} need a bool mask of shape {image.shape[:2]}, got {mask.dtype} {mask.shape}")


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Rows and columns of the smallest box holding every True pixel, grown by `margin` px, clipped to the image."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    top, bottom = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height)
    left, right = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width)
    return slice(top, bottom), slice(left, right)


def _paste(image: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Copy of `image` whose masked pixels, in row-major order, become `values` (uint8, (N, 3) or one (3,))."""
    out = image.copy()
    out[mask] = values
    return out


def _paste_from(image: np.ndarray, mask: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Copy of `image` whose masked pixels are taken from the same pixels of `source` (uint8, (H, W, 3))."""
    return _paste(image, mask, source[mask])


@_register("black")
def black(image: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Masked pixels become (0, 0, 0)."""
    check_image_and_mask(image, mask)
    return _paste(image, mask, np.zeros(3, dtype=np.uint8))


@_register("mean")
def mean(image: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator, margin_fraction: float = 0.1) -> np.ndarray:
    """Masked pixels become one colour: the mean of the unmasked pixels around the mask.

    "Around" is the mask's bounding box grown by `margin_fraction` of its larger side (at least 2 px), so the
    colour matches the surroundings (skin, hair, background) instead of being a tell-tale black shape, and it
    carries no information from inside the mask. When the mask covers that whole box, the mean of the whole
    unmasked image is used, and when the mask covers the whole image, the mean of the image. Rounded to uint8.
    """
    check_image_and_mask(image, mask)
    if not mask.any():
        return image.copy()
    rows, cols = bounding_box(mask)
    side = max(rows.stop - rows.start, cols.stop - cols.start)
    rows, cols = bounding_box(mask, margin=max(2, round(margin_fraction * side)))
    around = image[rows, cols][~mask[rows, cols]]
    if around.size == 0:
        around = image[~mask] if not mask.all() else image.reshape(-1, 3)
    colour = np.round(around.astype(np.float64).mean(axis=0)).astype(np.uint8)
    return _paste(image, mask, colour)


@_register("blur")
def blur(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    rng: np.random.Generator,
    sigma: float | None = None,
    sigma_fraction: float = 0.02,
) -> np.ndarray:
    """Masked pixels come from a Gaussian blur of the image.

    The standard deviation is `sigma` pixels, or `sigma_fraction` of the image's shorter side when `sigma` is
    None (0.02: about 10 px on a 500 px photo, 60 px on a 3000 px one), at least 0.5 px. The blur sees the
    original masked pixels too: it hides detail, not the colour layout. Edges are mirrored (OpenCV REFLECT_101).
    """
    check_image_and_mask(image, mask)
    if not mask.any():
        return image.copy()
    std = float(sigma) if sigma is not None else sigma_fraction * min(image.shape[:2])
    std = max(std, 0.5)
    # Only the neighbourhood of the mask influences the result: blur a crop 3 sigma larger, not the whole photo.
    # Where the crop meets the photo's own border the mirror is the same as for the full image.
    reach = int(np.ceil(3 * std)) + 1
    rows, cols = bounding_box(mask, margin=reach)
    crop = image[rows, cols]
    kernel = 2 * reach + 1
    blurred = cv2.GaussianBlur(crop, (kernel, kernel), sigmaX=std, sigmaY=std, borderType=cv2.BORDER_REFLECT_101)
    return _paste(image, mask, blurred[mask[rows, cols]])


@_register("pixelate")
def pixelate(image: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator, block: int = 16) -> np.ndarray:
    """Masked pixels become the mean of their `block` x `block` px cell, rounded.

    Cells are aligned to the image's top-left corner (not to the mask), so the same photo pixelates the same way
    whatever the mask; a cell's mean uses all its pixels, masked or not, and cells cut by the right or bottom
    edge average only the pixels they have.
    """
    check_image_and_mask(image, mask)
    if block < 1:
        raise ValueError(f"pixelate block must be >= 1 px, got {block}")
    if not mask.any():
        return image.copy()
    height, width = mask.shape
    rows, cols = bounding_box(mask)
    # Expand the box outward to whole cells so every touched cell is averaged completely.
    top, left = rows.start // block * block, cols.start // block * block
    bottom, right = min(-(-rows.stop // block) * block, height), min(-(-cols.stop // block) * block, width)
    crop = image[top:bottom, left:right].astype(np.int64)
    row_starts = np.arange(0, bottom - top, block)
    col_starts = np.arange(0, right - left, block)
    sums = np.add.reduceat(np.add.reduceat(crop, row_starts, axis=0), col_starts, axis=1)
    counts = np.outer(np.diff(np.append(row_starts, bottom - top)), np.diff(np.append(col_starts, right - left)))
    means = np.round(sums / counts[:, :, None]).astype(np.uint8)
    cells = np.repeat(np.repeat(means, block, axis=0), block, axis=1)[: bottom - top, : right - left]
    return _paste(image, mask, cells[mask[top:bottom, left:right]])


@_register("noise")
def noise(image: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Masked pixels become uniform random colours (each channel 0..255) drawn from `rng`, in row-major order."""
    check_image_and_mask(image, mask)
    count = int(mask.sum())
    return _paste(image, mask, rng.integers(0, 256, size=(count, 3), dtype=np.uint8))


@_register("inpaint")
def inpaint(image: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator, radius: float = 3.0) -> np.ndarray:
    """Masked pixels are inpainted from their surroundings (OpenCV Telea fast marching, `radius` px).

    For scattered single pixels (a sparse top-k mask) this is a near-invisible fill; for large blobs it smears.
    A mask covering the whole image leaves nothing to inpaint from; it is filled like `mean` (the image's mean).
    """
    check_image_and_mask(image, mask)
    if not mask.any():
        return image.copy()
    if mask.all():
        return mean(image, mask, rng=rng)
    filled = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), float(radius), cv2.INPAINT_TELEA)
    return _paste_from(image, mask, filled)


@_register("cloak", needs_models=True)
def cloak_fill(
    image: np.ndarray,
    mask: np.ndarray,
    sources: list[SourceModel],
    settings: CloakSettings | None = None,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """The sparse cloak (`facecloak.protection.cloak.cloak`): (cloaked image, optimisation steps used). `sources` are
    the differentiable source models with each face's photo->crop matrix and reference; `facecloak.protect` builds
    them. Pixels outside `mask` are byte-identical to `image`."""
    from facecloak.protection.cloak import (  # torch: imported when the cloak runs, not with the fills
        CloakSettings,
        cloak,
    )

    return cloak(image, mask, sources, settings or CloakSettings(), seed=seed)
