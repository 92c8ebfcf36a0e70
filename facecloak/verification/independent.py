"""Recognisers that read a whole photo through their OWN pipeline: detection, landmarks, alignment, resampling.

facecloak makes its masks and cloaks on the pixel grid of its own MTCNN alignment. A real recogniser never sees
that grid: it detects the face itself, finds its own landmarks, aligns and resamples in its own way. Measuring a
protection by feeding a recogniser facecloak's own crops measures the lab, not the world, so every protection
claim (the bench's held-out cells, `facecloak protect`'s verification) goes through these pipelines instead.

Nothing here is shared with facecloak's detector, landmarks or resampling (the similarity fit and ArcFace's five
template points are the same math and constants as insightface's, and a test pins the crops to insightface's):

`dlib`         dlib's HOG detector, its 5-point shape predictor, `dlib.get_face_chip` (150 px, padding 0.25) and
               dlib's ResNet descriptor: exactly what `face_recognition` / dlib users run.
`arcface`      dlib's HOG detector and 68-point landmarks reduced to the five ArcFace points, insightface's
               `norm_crop` (112 px) and the original `fr_feature.onnx` run as insightface's `ArcFaceONNX` runs it
               (onnxruntime, `cv2.dnn.blobFromImages` with its mean and scale, BGR in and swapped).
`hse`          the same detector and landmarks, `norm_crop` at 224 px, and the hse-mnv1 MobileNet descriptor.

insightface's two steps are restated here (`norm_crop`, `ArcFaceOnnx`) rather than imported: the package's eager
`__init__` pulls in onnx, albumentations and its liveness add-on: about 1.8 s of every protect run, and 94 MiB of the
default CLI's peak memory, for ten lines of code (`bench/results/speed-protect-verifier-imports`).
`tests/test_independent.py` pins both to insightface's own output on real faces.

Each returns, per face it finds, the box and a unit embedding; `match_faces` pairs them with known boxes.
All need the `dlib` extra (`pip install 'facecloak[dlib]'`); `arcface` and `hse` also need the pulled models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from facecloak.faces.align import TEMPLATES, estimate_similarity
from facecloak.models.blackbox import frontal_face_detector, import_dlib
from leam.registry import Registry

# Detect on a copy whose long side is at most this (HOG on a 4352 px photo takes seconds, and is what a real
# deployment avoids too); landmarks and crops are taken on the full-resolution photo.
DETECT_MAX_SIDE = 1024
HOG_UPSAMPLE = 1  # dlib's default in face_recognition: finds faces down to ~40 px


@dataclass(frozen=True)
class SeenFace:
    """One face as a pipeline sees it: box (x0, y0, x1, y1) in photo pixels, unit embedding (D,)."""

    box: tuple[float, float, float, float]
    embedding: np.ndarray = field(repr=False, compare=False)

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class IndependentRecogniser:
    """A recogniser with its own pipeline after detection: `embed(rgb, detections)` -> one unit embedding per
    detection (the pipelines share dlib's HOG detector and landmarks, computed once per photo by `read_photo`)."""

    id: str
    description: str
    embed: Callable[[np.ndarray, Detections], list[np.ndarray]] = field(repr=False, compare=False)

    def read(self, rgb: np.ndarray) -> list[SeenFace]:
        """Every face this pipeline finds in `rgb` (uint8 RGB (H, W, 3)), with its embedding."""
        return read_photo(rgb, [self])[self.id]


@dataclass
class Detections:
    """dlib HOG rectangles of one photo, with their 68-point landmarks computed on first use."""

    rects: list[Any]
    _five: list[np.ndarray] | None = None

    def five_points(self, rgb: np.ndarray) -> list[np.ndarray]:
        if self._five is None:
            self._five = [five_points(rgb, r) for r in self.rects]
        return self._five


INDEPENDENT: Registry[Callable[[], IndependentRecogniser]] = Registry("independent recogniser")


@dataclass(frozen=True)
class _Dlib:
    detector: Any
    shape5: Any
    shape68: Any
    descriptor: Any


@cache
def _dlib() -> _Dlib:
    dlib, files = import_dlib("independent verification")
    return _Dlib(
        detector=frontal_face_detector(dlib),
        shape5=dlib.shape_predictor(files.shape5),
        shape68=dlib.shape_predictor(files.shape68),
        descriptor=dlib.face_recognition_model_v1(files.descriptor),
    )


def hog_faces(rgb: np.ndarray) -> list[Any]:
    """dlib HOG detections (dlib.rectangle, full-photo pixels), found on a copy of at most DETECT_MAX_SIDE."""
    import dlib
    from PIL import Image

    factor = min(1.0, DETECT_MAX_SIDE / max(rgb.shape[:2]))
    if factor < 1.0:
        size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    else:
        small = rgb
    found = _dlib().detector(np.ascontiguousarray(small), HOG_UPSAMPLE)
    return [dlib.rectangle(*(round(v / factor) for v in (r.left(), r.top(), r.right(), r.bottom()))) for r in found]


def _box(rect: Any) -> tuple[float, float, float, float]:
    return (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(-1)
    return x / max(float(np.linalg.norm(x)), 1e-12)


def five_points(rgb: np.ndarray, rect: Any) -> np.ndarray:
    """ArcFace's five points (left eye, right eye, nose tip, mouth corners; (5, 2) x, y) from dlib's 68."""
    shape = _dlib().shape68(rgb, rect)
    p = np.array([[q.x, q.y] for q in shape.parts()], np.float32)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


def _dlib_pipeline() -> IndependentRecogniser:
    import dlib

    tools = _dlib()

    def embed(rgb: np.ndarray, found: Detections) -> list[np.ndarray]:
        chips = [dlib.get_face_chip(rgb, tools.shape5(rgb, r), size=150, padding=0.25) for r in found.rects]
        return [_unit(np.array(tools.descriptor.compute_face_descriptor(c, 0))) for c in chips]

    return IndependentRecogniser("dlib", "dlib HOG + 5-point shape predictor + get_face_chip + dlib ResNet", embed)


def norm_crop(rgb: np.ndarray, five: np.ndarray, size: int) -> np.ndarray:
    """insightface's `face_align.norm_crop`: the similarity that puts the five points on ArcFace's template scaled
    to `size` (a multiple of 112), then `cv2.warpAffine` (bilinear, black border)."""
    import cv2

    if size % 112:  # insightface shifts the template for multiples of 128; nothing here uses those
        raise ValueError(f"norm_crop sizes are multiples of 112, got {size}")
    matrix = estimate_similarity(five, TEMPLATES.get("arcface112").points * (size / 112))
    return cv2.warpAffine(rgb, matrix, (size, size), borderValue=0.0)


def _norm_crops(rgb: np.ndarray, found: Detections, size: int) -> np.ndarray:
    return np.stack([norm_crop(rgb, p, size) for p in found.five_points(rgb)])


class ArcFaceOnnx:
    """An ArcFace ONNX model run as insightface's `model_zoo.ArcFaceONNX.get_feat` runs it: BGR crops through
    `cv2.dnn.blobFromImages` (mean and std 127.5, the values insightface picks for a graph that does not normalise
    its own input, as `fr_feature.onnx`), R and B swapped, one onnxruntime session on the CPU."""

    MEAN = STD = 127.5

    def __init__(self, path: str) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.size = tuple(self.input.shape[2:4][::-1])

    def features(self, bgr_crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (N, D) of uint8 BGR crops (S, S, 3)."""
        import cv2

        blob = cv2.dnn.blobFromImages(list(bgr_crops), 1.0 / self.STD, self.size, (self.MEAN,) * 3, swapRB=True)
        return self.session.run(None, {self.input.name: np.ascontiguousarray(blob, np.float32)})[0]


def _arcface_pipeline() -> IndependentRecogniser:
    from facecloak.models.mbf_arc import ONNX_FILE, SOURCE
    from facecloak.models.pull import cached_source_files

    path = cached_source_files(SOURCE, "the arcface verifier (the original fr_feature.onnx of `mbf-arc`)")[ONNX_FILE]
    model = ArcFaceOnnx(str(path))

    def embed(rgb: np.ndarray, found: Detections) -> list[np.ndarray]:
        crops = _norm_crops(rgb, found, 112)[..., ::-1]  # insightface models take BGR, as cv2 reads files
        return [_unit(model.features([np.ascontiguousarray(c)])) for c in crops]

    return IndependentRecogniser(
        "arcface", "dlib HOG + 68 landmarks -> 5 points + insightface norm_crop + ArcFaceONNX fr_feature.onnx", embed
    )


def _hse_pipeline() -> IndependentRecogniser:
    import torch

    from facecloak.models import cached_model

    module = cached_model("hse-mnv1")  # the cloak's source, when it is one: one copy per process

    def embed(rgb: np.ndarray, found: Detections) -> list[np.ndarray]:
        crops = _norm_crops(rgb, found, 224)
        with torch.no_grad():
            emb = module(torch.from_numpy(crops).permute(0, 3, 1, 2).float()).numpy()
        return [_unit(e) for e in emb]

    return IndependentRecogniser("hse", "dlib HOG + 68 landmarks -> 5 points + insightface norm_crop 224 + hse-mnv1",
                                 embed)


INDEPENDENT.register("dlib", _dlib_pipeline)
INDEPENDENT.register("arcface", _arcface_pipeline)
INDEPENDENT.register("hse", _hse_pipeline)

# Which differentiable model (if any) each pipeline's network is: a pipeline whose network built the cloak
# is not held out, whatever its alignment.
NETWORK_OF = {"dlib": "dlib-r29", "arcface": "mbf-arc", "hse": "hse-mnv1"}


@cache
def get_independent(name: str) -> IndependentRecogniser:
    """The named pipeline, loaded once per process."""
    return INDEPENDENT.get(name)()


def read_photo(rgb: np.ndarray, recognisers: Sequence[IndependentRecogniser]) -> dict[str, list[SeenFace]]:
    """Every face each recogniser finds in `rgb` (uint8 RGB (H, W, 3)); detection and landmarks run once."""
    rgb = np.ascontiguousarray(rgb)
    found = Detections(hog_faces(rgb))
    if not found.rects:
        return {r.id: [] for r in recognisers}
    boxes = [_box(r) for r in found.rects]
    return {r.id: [SeenFace(b, e) for b, e in zip(boxes, r.embed(rgb, found), strict=True)] for r in recognisers}


def threshold_id(name: str) -> str:
    """Key of the pipeline's calibrated thresholds in `facecloak.verification.thresholds` (calibrated on its own
    pipeline)."""
    return f"{name}-own"


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_faces(
    boxes: Sequence[Sequence[float]], seen: Sequence[SeenFace], min_iou: float = 0.3
) -> list[SeenFace | None]:
    """For each known box, the seen face overlapping it best (IoU > min_iou), else None; greedy, one-to-one."""
    pairs = sorted((-iou(b, s.box), i, j) for i, b in enumerate(boxes) for j, s in enumerate(seen))
    out: list[SeenFace | None] = [None] * len(boxes)
    used: set[int] = set()
    for negative, i, j in pairs:  # best overlap first; ties go to the earlier box
        if -negative <= min_iou:
            break
        if out[i] is None and j not in used:
            out[i] = seen[j]
            used.add(j)
    return out
