"""Face detection: the MTCNN cascade (P-Net -> R-Net -> O-Net) in plain PyTorch and numpy.

The three nets and their weights are those of `facenet-pytorch==2.6.0` (MIT; converted there from
Zhang et al.'s original MTCNN via davidsandberg/facenet). We take only the three state dicts out of the
wheel through the pull step; facenet-pytorch itself is never imported (it pins old torch and torchvision).

The cascade follows facenet-pytorch's `detect_face` (image pyramid with factor 0.709, NMS 0.5 per scale,
0.7 across scales, 0.7 after R-Net, 0.7 "min" after O-Net; box regression; boxes made square before each
refinement stage) with two deliberate differences:

- a box reaching over the photo's edge is cropped with zero (black) padding, as in the original MTCNN,
  instead of being clipped to the photo and stretched; the O-Net landmarks are relative to the whole box,
  so padding keeps them right for faces cut by the border;
- resizing uses OpenCV's INTER_AREA (as davidsandberg/facenet did) instead of torch's adaptive pooling.

Coordinates in the returned `Face`s follow OpenCV: (x, y) pixels, centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from torch import nn

from facecloak.errors import ConfigError, ImageError
from facecloak.faces.face import Face
from facecloak.models.spec import Converter, Source, SourceFile
from leam.registry import Registry

# ----------------------------------------------------------------------------------------------------------
# The three nets. Layer names match facenet-pytorch's state dicts, so its files load without renaming.


class PNet(nn.Module):
    """Proposal net: fully convolutional; per 12x12 window (stride 2) a face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) normalised RGB. Returns offsets (N, 4, H', W') and face probability (N, H', W')."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]
        return self.conv4_2(x), prob


class RNet(nn.Module):
    """Refinement net: 24x24 patches -> face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, 24, 24). Returns offsets (N, 4) and face probability (N,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The dense weights were trained on (N, W, H, C)-ordered features (Caffe -> TF lineage).
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net: 48x48 patches -> face probability, box offsets and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 3, 48, 48). Returns offsets (N, 4), landmarks (N, 10) as 5 x then 5 y fractions of the box,
        and face probability (N,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


class Mtcnn(nn.Module):
    """Container of the three nets; its state dict is what the pull step stores (keys `pnet.*` ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()


# ----------------------------------------------------------------------------------------------------------
# Spec, conversion and registry.

_NETS = ("pnet", "rnet", "onet")
_WHEEL_DATA = "facenet_pytorch/data"

MTCNN_SOURCE = Source(
    registry="pypi",
    package="facenet-pytorch",
    version="2.6.0",
    files=(
        SourceFile(f"{_WHEEL_DATA}/pnet.pt", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
        SourceFile(f"{_WHEEL_DATA}/rnet.pt", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
        SourceFile(f"{_WHEEL_DATA}/onet.pt", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
    ),
)


def convert_mtcnn(files: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """The three plain state dicts of the wheel -> one state dict of `Mtcnn` (keys prefixed by net name)."""
    state: dict[str, torch.Tensor] = {}
    for net in _NETS:
        # weights_only: the files are plain tensors; never run pickled code from a downloaded package.
        part = torch.load(files[f"{_WHEEL_DATA}/{net}.pt"], map_location="cpu", weights_only=True)
        state.update({f"{net}.{key}": value.float() for key, value in part.items()})
    return state


class Detector(Protocol):
    """What the pipeline needs from a face detector."""

    def detect(self, image: np.ndarray) -> list[Face]: ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...


@dataclass(frozen=True)
class DetectorSpec:
    """A face detector whose weights come through the pull step (satisfies `facecloak.models.pull.Pullable`).

    `create(**options)` returns a ready `Detector` with the verified cached weights loaded.
    """

    id: str
    description: str
    sources: tuple[Source, ...]
    build: Callable[[], nn.Module]
    convert: Converter
    create: Callable[..., Detector]
    licence: str


DETECTORS: Registry[DetectorSpec] = Registry("face detector")


def load_detector(name: str = "mtcnn", **options: object) -> Detector:
    """Create a registered detector by name; options go to its constructor (e.g. `min_face_size=40`)."""
    return DETECTORS.get(name).create(**options)


@lru_cache(maxsize=1)
def default_detector() -> Detector:
    """MTCNN with default settings, loaded once per process."""
    return load_detector("mtcnn")


def load_mtcnn_module() -> Mtcnn:
    """The three nets with verified cached weights, in eval mode, parameters frozen."""
    from facecloak.models.pull import load_state

    module = Mtcnn()
    module.load_state_dict(load_state(DETECTORS.get("mtcnn")), strict=True)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# ----------------------------------------------------------------------------------------------------------
# Pure numpy steps of the cascade. Boxes inside the cascade use MTCNN's own convention (1-based inclusive
# pixel indices, as in the original MATLAB code); `_to_photo_coordinates` converts at the very end.


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which P-Net's 12 px window sees faces from `min_face_size` px up to the photo's short side."""
    scale = 12.0 / min_face_size
    short_side = min(height, width) * scale
    scales = []
    while short_side >= 12:
        scales.append(scale)
        scale *= factor
        short_side *= factor
    return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: Literal["union", "min"] = "union") -> np.ndarray:
    """Greedy non-maximum suppression. boxes (N, 4) x1, y1, x2, y2; returns kept indices, best score first.

    "union" divides the overlap by the union (areas without +1, like torchvision's nms that facenet-pytorch
    used); "min" divides by the smaller box's area (with MTCNN's +1 pixel areas), which also removes a small
    box lying inside a big one.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    plus = 1.0 if mode == "min" else 0.0
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + plus)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + plus)
        inter = inter_w * inter_h
        if mode == "min":
            overlap = inter / np.minimum(area[best], area[rest])
        else:
            overlap = inter / np.maximum(area[best] + area[rest] - inter, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, mode: Literal["union", "min"] = "union"
) -> np.ndarray:
    """NMS independently within each group (image); returns kept indices sorted ascending."""
    kept = [
        np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], threshold, mode)]
        for g in np.unique(groups)
    ]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def pnet_candidates(offsets: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """P-Net output of one image at one scale -> candidates (K, 9): box (4), score, offsets (4).

    offsets (4, H', W'), prob (H', W'). Each output cell is a 12x12 window with stride 2 at this scale.
    """
    ys, xs = np.nonzero(prob >= threshold)
    cells = np.stack([xs, ys], axis=1).astype(np.float64)
    top_left = np.floor((2 * cells + 1) / scale)
    bottom_right = np.floor((2 * cells + 12) / scale)
    return np.concatenate([top_left, bottom_right, prob[ys, xs][:, None], offsets[:, ys, xs].T], axis=1).astype(
        np.float64
    )


def regress_boxes(boxes: np.ndarray, offsets: np.ndarray, *, inclusive: bool = True) -> np.ndarray:
    """Apply predicted offsets (fractions of the box size) to boxes (N, 4); returns new boxes.

    P-Net's offsets are scaled by x2 - x1, R-/O-Net's by x2 - x1 + 1 (`inclusive`), as in the original.
    """
    plus = 1.0 if inclusive else 0.0
    size = np.stack([boxes[:, 2] - boxes[:, 0] + plus, boxes[:, 3] - boxes[:, 1] + plus], axis=1)
    return boxes[:, :4] + offsets * np.concatenate([size, size], axis=1)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Grow each box (N, 4) to a square around its centre (side = the longer side)."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    x1 = boxes[:, 0] + width * 0.5 - side * 0.5
    y1 = boxes[:, 1] + height * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut boxes (N, 4; 1-based inclusive, truncated to integers) out of a float32 HxWx3 image, zero-padding
    outside the image, and resize each to size x size. Returns (N, size, size, 3) float32."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.trunc(boxes[:, :4]).astype(np.int64)):
        # 0-based half-open pixel ranges [left, right) x [top, bottom) of the box and of its part in the image.
        left, top, right, bottom = x1 - 1, y1 - 1, x2, y2
        patch = np.zeros((bottom - top, right - left, 3), dtype=np.float32)
        src_l, src_t, src_r, src_b = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
        if src_r > src_l and src_b > src_t:
            patch[src_t - top : src_b - top, src_l - left : src_r - left] = image[src_t:src_b, src_l:src_r]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _normalise(patches: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) float RGB 0-255 -> (N, 3, H, W) in [-1, 1) as the nets were trained."""
    return torch.from_numpy((patches - 127.5) * 0.0078125).permute(0, 3, 1, 2).contiguous()


def _run_in_chunks(net: nn.Module, patches: np.ndarray, chunk: int = 1024) -> list[np.ndarray]:
    outputs: list[list[np.ndarray]] = []
    for start in range(0, len(patches), chunk):
        result = net(_normalise(patches[start : start + chunk]))
        outputs.append([t.numpy() for t in result])
    return [np.concatenate(parts, axis=0) for parts in zip(*outputs, strict=True)]


def _valid_by_image(boxes: np.ndarray, image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop boxes that cover no pixel once truncated to integers; order the rest by image (for cropping)."""
    t = np.trunc(boxes[:, :4])
    ok = np.flatnonzero((t[:, 2] >= t[:, 0]) & (t[:, 3] >= t[:, 1]))
    order = ok[np.argsort(image_index[ok], kind="stable")]
    return boxes[order], image_index[order]


def _crop_batch(stack: np.ndarray, boxes: np.ndarray, image_index: np.ndarray, size: int) -> np.ndarray:
    """`crop_patches` over a batch; boxes must be ordered by image index (see `_valid_by_image`)."""
    parts = [crop_patches(stack[b], boxes[image_index == b], size) for b in range(len(stack))]
    return np.concatenate(parts) if parts else np.zeros((0, size, size, 3), dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# The detector.


@dataclass(frozen=True)
class _Detections:
    """Raw cascade output for a batch: boxes (N, 4, MTCNN convention), scores (N,), landmarks (N, 5, 2)
    (0-based pixel centres), image index (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    image_index: np.ndarray


class MtcnnDetector:
    """MTCNN face detector.

    min_face_size    smallest face side in pixels (of the image the cascade runs on) that is searched for.
    thresholds       P-Net, R-Net, O-Net probability thresholds of the cascade.
    score_threshold  faces with a final (O-Net) score below this are dropped.
    max_side         photos whose longer side exceeds this run on a downscaled copy (INTER_AREA); results are
                     mapped back to full-resolution coordinates. Faces smaller than `min_face_size` pixels in
                     the downscaled copy are then missed.
    factor           scale step of the image pyramid.
    module           the three nets; loaded from the pull cache when not given (tests pass their own).
    """

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        score_threshold: float = 0.9,
        max_side: int = 1600,
        factor: float = 0.709,
        *,
        module: Mtcnn | None = None,
    ) -> None:
        if min_face_size < 12:
            raise ConfigError(f"min_face_size must be at least 12 px (P-Net's window), got {min_face_size}")
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"pyramid factor must be between 0 and 1, got {factor}")
        if max_side < 48:
            raise ConfigError(f"max_side must be at least 48 px, got {max_side}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ConfigError(f"thresholds must be three probabilities, got {thresholds}")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        self.factor = float(factor)
        self.module = module if module is not None else load_mtcnn_module()

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one uint8 RGB (H, W, 3) photo, best score first, in the photo's pixel coordinates."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """`detect` for several photos; photos of the same size go through the nets together."""
        for i, image in enumerate(images):
            _check_image(image, i)
        results: list[list[Face]] = [[] for _ in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for indices in by_shape.values():
            for i, faces in zip(indices, self._detect_same_size([images[i] for i in indices]), strict=True):
                results[i] = faces
        return results

    def _detect_same_size(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        height, width = images[0].shape[:2]
        small_w, small_h = _working_size(width, height, self.max_side)
        stack = np.stack([_resize(img, small_w, small_h) for img in images]).astype(np.float32)
        with torch.inference_mode():
            found = self._cascade(stack)
        sx, sy = width / small_w, height / small_h
        per_image: list[list[Face]] = [[] for _ in images]
        for k in np.argsort(-found.scores, kind="stable"):
            if found.scores[k] < self.score_threshold:
                continue
            box, points = _to_photo_coordinates(found.boxes[k], found.landmarks[k], sx, sy)
            per_image[found.image_index[k]].append(Face(box=box, score=float(found.scores[k]), landmarks=points))
        return per_image

    def _cascade(self, stack: np.ndarray) -> _Detections:
        """The three stages on a (B, H, W, 3) float32 batch of equally sized images."""
        empty = _Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), np.zeros(0, dtype=np.int64))
        candidates, image_index = self._propose(stack)
        if len(candidates) == 0:
            return empty

        # Stage 2: R-Net re-scores 24x24 patches of the squared proposals and refines their boxes.
        boxes = square_boxes(regress_boxes(candidates[:, :4], candidates[:, 5:9], inclusive=False))
        boxes, image_index = _valid_by_image(boxes, image_index)
        if len(boxes) == 0:
            return empty
        offsets, scores = _run_in_chunks(self.module.rnet, _crop_batch(stack, boxes, image_index, 24))
        keep = scores > self.thresholds[1]
        boxes, scores, offsets, image_index = boxes[keep], scores[keep], offsets[keep], image_index[keep]
        keep = batched_nms(boxes, scores, image_index, 0.7)
        boxes = square_boxes(regress_boxes(boxes[keep], offsets[keep]))
        image_index = image_index[keep]
        boxes, image_index = _valid_by_image(boxes, image_index)
        if len(boxes) == 0:
            return empty

        # Stage 3: O-Net scores 48x48 patches and predicts the five landmarks relative to the box.
        offsets, points, scores = _run_in_chunks(self.module.onet, _crop_batch(stack, boxes, image_index, 48))
        keep = scores > self.thresholds[2]
        boxes, scores, offsets, points, image_index = (
            boxes[keep],
            scores[keep],
            offsets[keep],
            points[keep],
            image_index[keep],
        )
        # Landmarks are fractions of the (inclusive, 1-based) box O-Net saw; the - 1 makes them 0-based pixel centres.
        size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], axis=1)
        landmarks = np.stack(
            [size[:, :1] * points[:, :5] + boxes[:, :1] - 1, size[:, 1:] * points[:, 5:] + boxes[:, 1:2] - 1], axis=2
        )
        boxes = regress_boxes(boxes, offsets)
        keep = batched_nms(boxes, scores, image_index, 0.7, mode="min")
        return _Detections(boxes[keep], scores[keep], landmarks[keep], image_index[keep])

    def _propose(self, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: P-Net over the image pyramid -> candidates (K, 9) and their image index (K,)."""
        batch, height, width = stack.shape[:3]
        found: list[np.ndarray] = []
        found_image: list[np.ndarray] = []
        for scale in pyramid_scales(height, width, self.min_face_size, self.factor):
            size_w, size_h = int(width * scale + 1), int(height * scale + 1)
            level = np.stack([cv2.resize(img, (size_w, size_h), interpolation=cv2.INTER_AREA) for img in stack])
            offsets, prob = (t.numpy() for t in self.module.pnet(_normalise(level)))
            for b in range(batch):
                cand = pnet_candidates(offsets[b], prob[b], scale, self.thresholds[0])
                cand = cand[nms(cand[:, :4], cand[:, 4], 0.5)]
                found.append(cand)
                found_image.append(np.full(len(cand), b, dtype=np.int64))
        if not found:
            return np.zeros((0, 9)), np.zeros(0, dtype=np.int64)
        candidates, image_index = np.concatenate(found), np.concatenate(found_image)
        keep = batched_nms(candidates[:, :4], candidates[:, 4], image_index, 0.7)
        return candidates[keep], image_index[keep]


def _check_image(image: np.ndarray, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"image {index}: expected a uint8 RGB array of shape (H, W, 3), got {got}")
    if min(image.shape[:2]) < 12:
        raise ImageError(f"image {index}: {image.shape[1]}x{image.shape[0]} px is too small to hold a face")


def _working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size the cascade runs at: the photo's own, or downscaled so that the longer side is `max_side`."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    ratio = max_side / longer
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _to_photo_coordinates(
    box: np.ndarray, landmarks: np.ndarray, sx: float, sy: float
) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """MTCNN's 1-based inclusive box and 0-based landmarks on the working image -> OpenCV pixel-centre
    coordinates on the full photo (the working image is the photo resized by 1/sx, 1/sy)."""
    # Inclusive 1-based pixels [x1, x2] span pixel centres x1 - 1 ... x2 - 1, i.e. edges x1 - 1.5 ... x2 - 0.5.
    edges = np.array([box[0] - 1.5, box[1] - 1.5, box[2] - 0.5, box[3] - 0.5])
    scale = np.array([sx, sy, sx, sy])
    # cv2.resize maps pixel centres as x_photo = (x_small + 0.5) * s - 0.5.
    photo_box = (edges + 0.5) * scale - 0.5
    photo_points = (landmarks + 0.5) * np.array([sx, sy]) - 0.5
    x1, y1, x2, y2 = (float(v) for v in photo_box)
    return (x1, y1, x2, y2), photo_points.astype(np.float32)


def _create_mtcnn(**options: object) -> Detector:
    return MtcnnDetector(**options)  # type: ignore[arg-type]


DETECTORS.register(
    "mtcnn",
    DetectorSpec(
        id="mtcnn",
        description="MTCNN cascade (P/R/O-Net), boxes + 5 landmarks",
        sources=(MTCNN_SOURCE,),
        build=Mtcnn,
        convert=convert_mtcnn,
        create=_create_mtcnn,
        licence="MIT (facenet-pytorch weights, from Zhang et al. MTCNN via davidsandberg/facenet)",
    ),
)

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorSpec",
    "Mtcnn",
    "MtcnnDetector",
    "batched_nms",
    "default_detector",
    "load_detector",
    "nms",
    "pyramid_scales",
]
