"""Five-point similarity alignment of faces into model templates, and warping maps back to the photo.

Coordinates follow OpenCV (`cv2.warpAffine`): (x, y) pixels, centre of the top-left pixel at (0, 0).
Every matrix here is a 2x3 float64 affine map applied as `M @ [x, y, 1]`. `align` returns the photo -> crop
matrix; `warp_to_photo` uses it to put a map or mask made on the crop back onto the photo.

Crops are sampled bilinearly with a constant black (0) border outside the photo, as insightface's
`norm_crop` and dlib's `extract_image_chip` do: the recognition models were trained and evaluated on crops
padded that way. When a face is much larger than the template (more than 2 photo pixels per crop pixel) the
photo region is first shrunk with area averaging, so the crop is not aliased (dlib uses an image pyramid for
the same reason); the returned matrix is exact either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from facecloak.errors import ConfigError, ImageError, NoFaceError
from facecloak.faces.face import AlignedFace, Face
from leam.registry import Registry

Interpolation = Literal["auto", "nearest", "bilinear"]


@dataclass(frozen=True)
class Template:
    """Where the five ArcFace-ordered landmarks go in a size x size crop (crop pixels, float)."""

    name: str
    size: int
    points: np.ndarray

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=np.float64)
        if points.shape != (5, 2):
            raise ValueError(f"template {self.name!r}: points must have shape (5, 2), got {points.shape}")
        points.setflags(write=False)
        object.__setattr__(self, "points", points)


TEMPLATES: Registry[Template] = Registry("alignment template")

# insightface's `arcface_dst` (utils/face_align.py): the template every ArcFace-family model is trained on.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

# dlib's face chip (dlib/image_transforms/interpolation.h, get_face_chip_details): a chip of `size` px with
# `padding` maps the mean face shape of the 68-point iBUG scheme, normalised to [0, 1], to
#     chip = (padding + mean) / (2 * padding + 1) * size.
# These are dlib's `mean_face_shape_x/y` arrays verbatim; they hold points 17..67 (entry k is point k + 17).
_DLIB_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)  # fmt: skip
_DLIB_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)  # fmt: skip
_DLIB_FIRST_POINT = 17


def _dlib_mean_point(index: int) -> np.ndarray:
    """Point `index` (0..67, iBUG 68-point scheme) of dlib's mean face, in [0, 1] face units."""
    k = index - _DLIB_FIRST_POINT
    return np.array([_DLIB_MEAN_FACE_X[k], _DLIB_MEAN_FACE_Y[k]])


def dlib_chip_points(size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The five ArcFace-ordered points of dlib's face chip, in the chip's pixel-centre coordinates.

    dlib builds the chip rectangle with `centered_drect(centre, size * scale, ...)`, which subtracts one pixel
    from the width before halving it: chip pixel 0 then lies half a pixel right of where the formula above
    puts the template's origin, so every point moves by -0.5 px in x and y (exact at 1 photo px per chip px,
    within 0.15 px at other scales). For size 150, padding 0.25 this gives (x, y):
    left eye (47.05, 46.10), right eye (99.98, 46.10), nose (73.51, 76.06),
    mouth left (49.91, 102.52), mouth right (97.11, 102.52).
    """
    five = np.array(
        [
            np.mean([_dlib_mean_point(i) for i in range(36, 42)], axis=0),  # image-left eye (subject's right)
            np.mean([_dlib_mean_point(i) for i in range(42, 48)], axis=0),
            _dlib_mean_point(30),  # nose tip
            _dlib_mean_point(48),  # image-left mouth corner
            _dlib_mean_point(54),
        ]
    )
    return (padding + five) / (2 * padding + 1) * size - 0.5


TEMPLATES.register("arcface112", Template("arcface112", 112, ARCFACE_112))
# Twice the resolution, scaled plainly as insightface's `estimate_norm(..., image_size=224)` does (a strict
# pixel-centre scaling would differ by half a pixel).
TEMPLATES.register("arcface224", Template("arcface224", 224, ARCFACE_112 * 2))
TEMPLATES.register("dlib150", Template("dlib150", 150, dlib_chip_points(150, 0.25)))


# ----------------------------------------------------------------------------------------------------------
# Affine helpers (pure).


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    if abs(np.linalg.det(full[:2, :2])) < 1e-12:
        raise ValueError("affine matrix is singular and cannot be inverted")
    return np.linalg.inv(full)[:2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 map x -> outer(inner(x))."""
    return outer[:, :2] @ inner + np.hstack([np.zeros((2, 2)), outer[:, 2:]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix; returns (N, 2) float64."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def affine_scale(matrix: np.ndarray) -> float:
    """Isotropic scale of an affine map (sqrt of |det|): output pixels per input pixel."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking src to dst.

    Umeyama (1991), as insightface and skimage's `SimilarityTransform` use. src, dst: (N, 2), N >= 2.
    Returns the 2x3 matrix M with dst ~ M @ [src, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise NoFaceError("the face's landmarks all coincide, so it cannot be aligned")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best rotation would be a reflection: take the next best
        flip[1, 1] = -1.0
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(sigma) @ flip)) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def template_matrix(face: Face, template: Template) -> np.ndarray:
    """Photo -> crop matrix that puts the face's five landmarks on the template's."""
    return estimate_similarity(face.landmarks, template.points)


def template_to_template(src: Template | str, dst: Template | str) -> np.ndarray:
    """Similarity from one template's crop to another's, fitted on their five points."""
    src_t = TEMPLATES.get(src) if isinstance(src, str) else src
    dst_t = TEMPLATES.get(dst) if isinstance(dst, str) else dst
    return estimate_similarity(src_t.points, dst_t.points)


# ----------------------------------------------------------------------------------------------------------
# Photo -> crop.


def align(image: np.ndarray, face: Face, template_name: str, *, antialias: bool = True) -> AlignedFace:
    """Warp one face of a uint8 RGB (H, W, 3) photo into a template's crop (bilinear, black outside the photo)."""
    _check_image(image)
    template = TEMPLATES.get(template_name)
    matrix = template_matrix(face, template)
    crop = warp_crop(image, matrix, template.size, antialias=antialias)
    return AlignedFace(crop=crop, matrix=matrix, template=template.name, face=face)


def align_batch(
    image: np.ndarray, faces: Sequence[Face], template_name: str, *, antialias: bool = True
) -> list[AlignedFace]:
    """`align` for each face of one photo, in the given order."""
    return [align(image, face, template_name, antialias=antialias) for face in faces]


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int, *, antialias: bool = True) -> np.ndarray:
    """Sample a size x size crop through the photo -> crop `matrix`; keeps the image's dtype and channels."""
    source, to_crop = image, np.asarray(matrix, dtype=np.float64)
    if antialias and affine_scale(to_crop) < 0.5:
        source, to_crop = _shrink_for_crop(image, to_crop, size)
    return cv2.warpAffine(
        source, to_crop, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _shrink_for_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the part of the photo the crop sees down to 2 photo px per crop px; returns that region
    and the matrix from it to the crop (composed, so the crop's geometry is unchanged)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = _footprint(matrix, size, width, height, margin=4.0 / affine_scale(matrix))
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the photo
        return image, matrix
    region = image[y0:y1, x0:x1]
    factor = 2.0 * affine_scale(matrix)
    new_w, new_h = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
    small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
    # small pixel centre = (photo - x0 + 0.5) * f - 0.5, the mapping cv2.resize uses.
    small_to_photo = np.array([[1 / fx, 0.0, x0 + 0.5 / fx - 0.5], [0.0, 1 / fy, y0 + 0.5 / fy - 0.5]])
    return small, compose_affine(matrix, small_to_photo)


def _footprint(matrix: np.ndarray, size: int, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """Integer photo pixel range [x0, x1) x [y0, y1) covering the crop's preimage plus `margin` px, clipped."""
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    pts = apply_affine(invert_affine(matrix), corners)
    x0 = max(int(np.floor(pts[:, 0].min() - margin)), 0)
    y0 = max(int(np.floor(pts[:, 1].min() - margin)), 0)
    x1 = min(int(np.ceil(pts[:, 0].max() + margin)) + 1, width)
    y1 = min(int(np.ceil(pts[:, 1].max() + margin)) + 1, height)
    return x0, y0, x1, y1


# ----------------------------------------------------------------------------------------------------------
# Crop -> photo, crop -> crop.


def warp_to_photo(
    map_or_mask: np.ndarray,
    matrix: np.ndarray,
    photo_shape: tuple[int, ...],
    *,
    interpolation: Interpolation = "auto",
) -> np.ndarray:
    """Put a (S, S) map or mask made on a crop back onto the photo; returns (H, W), zero/False elsewhere.

    matrix       the photo -> crop matrix from `align` (`AlignedFace.matrix`).
    photo_shape  the photo's shape; only (H, W) is used.
    interpolation "auto" = "nearest" for bool masks, "bilinear" for float maps (returned as float32).

    Nearest is an exact coverage rule, not a dilation: a photo pixel is in the mask when its centre falls
    inside a masked crop pixel's square (the photo pixels a crop pixel covers are exactly those).
    """
    data = np.asarray(map_or_mask)
    if data.ndim != 2 or data.shape[0] != data.shape[1]:
        raise ValueError(f"expected a square (S, S) map or mask, got shape {data.shape}")
    height, width = int(photo_shape[0]), int(photo_shape[1])
    method = _resolve(interpolation, data)
    is_mask = data.dtype == np.bool_
    out: np.ndarray = np.zeros((height, width), dtype=np.bool_ if is_mask else np.float32)
    x0, y0, x1, y1 = _footprint(matrix, data.shape[0], width, height, margin=1.0)
    if x1 <= x0 or y1 <= y0:
        return out
    # Work only on the photo region the crop covers: a face in a 24 MP photo stays cheap.
    region_to_crop = compose_affine(matrix, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))
    if method == "nearest":
        ys, xs = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
        u = region_to_crop[0, 0] * xs + region_to_crop[0, 1] * ys + region_to_crop[0, 2]
        v = region_to_crop[1, 0] * xs + region_to_crop[1, 1] * ys + region_to_crop[1, 2]
        col, row = np.floor(u + 0.5).astype(np.int64), np.floor(v + 0.5).astype(np.int64)
        size = data.shape[0]
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        values = np.zeros(col.shape, dtype=data.dtype)
        values[inside] = data[row[inside], col[inside]]
        out[y0:y1, x0:x1] = values
    else:
        out[y0:y1, x0:x1] = cv2.warpAffine(
            data.astype(np.float32),
            region_to_crop,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return out


def warp_between_templates(
    map_or_mask: np.ndarray,
    src_template: str,
    dst_template: str,
    *,
    src_matrix: np.ndarray | None = None,
    dst_matrix: np.ndarray | None = None,
    interpolation: Interpolation = "auto",
) -> np.ndarray:
    """Move a map or mask from one template's crop to another's (e.g. to average an ensemble's relevance maps).

    Without matrices the template-to-template similarity fitted on the two templates' points is used. Given
    both photo -> crop matrices of the same face (`AlignedFace.matrix`), the exact map dst ∘ src⁻¹ is used.
    Returns (S_dst, S_dst): float32 for maps, bool for masks; zero where the source crop has no data.
    """
    data = np.asarray(map_or_mask)
    src_t, dst_t = TEMPLATES.get(src_template), TEMPLATES.get(dst_template)
    if data.shape != (src_t.size, src_t.size):
        raise ValueError(f"map shape {data.shape} does not match template {src_t.name!r} ({src_t.size} px)")
    if (src_matrix is None) != (dst_matrix is None):
        raise ConfigError("give both src_matrix and dst_matrix, or neither")
    if src_matrix is not None and dst_matrix is not None:
        src_to_dst = compose_affine(dst_matrix, invert_affine(src_matrix))
    else:
        src_to_dst = template_to_template(src_t, dst_t)
    # Crop -> crop is the same problem as crop -> photo with the destination crop as the "photo".
    return warp_to_photo(data, invert_affine(src_to_dst), (dst_t.size, dst_t.size), interpolation=interpolation)


def _resolve(interpolation: Interpolation, data: np.ndarray) -> Literal["nearest", "bilinear"]:
    if interpolation == "auto":
        return "nearest" if data.dtype == np.bool_ else "bilinear"
    if interpolation not in ("nearest", "bilinear"):
        raise ConfigError(f"interpolation must be 'auto', 'nearest' or 'bilinear', got {interpolation!r}")
    if interpolation == "bilinear" and data.dtype == np.bool_:
        raise ConfigError("a bool mask cannot be warped bilinearly; pass a float map or use 'nearest'")
    return interpolation


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"expected a uint8 RGB photo of shape (H, W, 3), got {got}")


__all__ = [
    "TEMPLATES",
    "Template",
    "affine_scale",
    "align",
    "align_batch",
    "apply_affine",
    "compose_affine",
    "dlib_chip_points",
    "estimate_similarity",
    "invert_affine",
    "template_matrix",
    "template_to_template",
    "warp_between_templates",
    "warp_crop",
    "warp_to_photo",
]
