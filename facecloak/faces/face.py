"""Frozen values passed between the face pipeline's stages (detect -> align -> ...).

Coordinates follow OpenCV's `cv2.warpAffine` convention: (x, y) floats in pixels, the centre of the
top-left pixel at (0, 0), x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face in a photo.

    box        (x1, y1, x2, y2) in photo pixels; (x1, y1) is the top-left corner, (x2, y2) the bottom-right.
    score      detector confidence in [0, 1].
    landmarks  (5, 2) float32 photo pixels in ArcFace order: left eye (image-left), right eye, nose tip,
               left mouth corner (image-left), right mouth corner.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        landmarks = np.array(self.landmarks, dtype=np.float32)  # a private copy: the caller's array stays writable
        if landmarks.shape != (5, 2):
            raise ValueError(f"Face.landmarks must have shape (5, 2), got {landmarks.shape}")
        landmarks.setflags(write=False)  # frozen means the points cannot be edited in place either
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye landmarks in photo pixels (a scale that ignores box conventions)."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


@dataclass(frozen=True)
class AlignedFace:
    """A face warped into a template.

    crop      uint8 RGB (S, S, 3), S = the template's size.
    matrix    (2, 3) float64 affine map photo pixels -> crop pixels (`cv2.warpAffine` convention).
    template  name of the template in `facecloak.faces.align.TEMPLATES`.
    face      the detection it came from (photo coordinates).
    """

    crop: np.ndarray
    matrix: np.ndarray
    template: str
    face: Face

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])
