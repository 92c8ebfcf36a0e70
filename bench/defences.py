"""Robustness defences: what a photo may go through between the user and a recogniser (`robustness` recipe).

Each defence is a pure function ``defence(image, *, mask, value) -> new image``:

- `image` is uint8 RGB (H, W, 3), the whole protected photo as decoded from disk; the result has the same shape
  and dtype, and the input is never modified.
- `mask` is bool (H, W) in the same pixel grid: the pixels the protection changed. Only the adaptive defence
  (`inpaint-mask`) reads it; the others are blind, whole-photo processing.
- `value` is the number in the recipe's name (`jpeg75` -> 75.0): JPEG quality, resize percent, blur sigma in
  pixels; None for `inpaint-mask`.

`DEFENCES` is keyed by `bench.config.Defence.kind`; `apply_defence` takes a parsed `Defence`.
"""

from __future__ import annotations

import io
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from bench.config import Defence
from facecloak.protection.fills import check_image_and_mask
from leam.registry import Registry

MASK_AWARE = frozenset({"inpaint-mask"})  # kinds that read the mask; the others are blind whole-photo processing
INPAINT_RADIUS = 3.0  # px, OpenCV Telea: the same radius as the `inpaint` fill, so the defender's guess is a good one


class DefenceFn(Protocol):
    """The call signature of every registered defence."""

    def __call__(self, image: np.ndarray, *, mask: np.ndarray, value: float | None) -> np.ndarray: ...


DEFENCES: Registry[DefenceFn] = Registry("defence")


def _needs(value: float | None, what: str) -> float:
    if value is None:
        raise ValueError(f"the {what} defence needs a value")
    return float(value)


@DEFENCES("jpeg")
def jpeg(image: np.ndarray, *, mask: np.ndarray, value: float | None) -> np.ndarray:
    """Encoded as JPEG at quality `value` (1-100) with Pillow's defaults (4:2:0 chroma subsampling) and decoded,
    as a photo sharing site re-encodes an upload."""
    check_image_and_mask(image, mask, "defences")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(_needs(value, "jpeg")))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()


@DEFENCES("resize")
def resize(image: np.ndarray, *, mask: np.ndarray, value: float | None) -> np.ndarray:
    """Down to `value` % of the width and height (area averaging) and back up to the original size (bilinear):
    a thumbnail scaled up again. 100 % is the identity."""
    check_image_and_mask(image, mask, "defences")
    h, w = image.shape[:2]
    scale = _needs(value, "resize") / 100.0
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))  # OpenCV sizes are (width, height)
    if small_size == (w, h):
        return image.copy()
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


@DEFENCES("blur")
def blur(image: np.ndarray, *, mask: np.ndarray, value: float | None) -> np.ndarray:
    """Gaussian blur with sigma `value` px in both directions (OpenCV picks the kernel size, reflected borders)."""
    check_image_and_mask(image, mask, "defences")
    sigma = _needs(value, "blur")
    return np.ascontiguousarray(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                                 borderType=cv2.BORDER_REFLECT_101))


@DEFENCES("inpaint-mask")
def inpaint_mask(image: np.ndarray, *, mask: np.ndarray, value: float | None = None) -> np.ndarray:
    """The adaptive defender who knows the mask: exactly the masked pixels are inpainted from their surroundings
    (OpenCV Telea, radius 3 px); every other pixel is kept byte for byte.

    Telea fills each masked pixel from the known pixels around it, so the result hardly depends on how the mask
    was filled: a black-filled and an inpaint-filled photo come back (almost) identical. An empty mask returns a
    copy; a mask covering the whole photo leaves nothing to inpaint from and also returns a copy.
    """
    check_image_and_mask(image, mask, "defences")
    if not mask.any() or mask.all():
        return image.copy()
    filled = cv2.inpaint(np.ascontiguousarray(image), mask.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    out = image.copy()
    out[mask] = filled[mask]
    return out


def apply_defence(defence: Defence, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`defence` (parsed from the recipe) applied to the whole photo; `mask` = the pixels the protection changed."""
    return DEFENCES.get(defence.kind)(image, mask=mask, value=defence.value)


__all__ = ["DEFENCES", "INPAINT_RADIUS", "MASK_AWARE", "DefenceFn", "apply_defence", "blur", "inpaint_mask", "jpeg",
           "resize"]
