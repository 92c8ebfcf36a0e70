"""MTCNN detector: pure cascade steps (fast, no weights), the weight conversion, and real photos (marked)."""

from __future__ import annotations

import csv
import importlib.resources
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from facecloak.errors import ConfigError, ImageError
from facecloak.faces.detect import (
    DETECTORS,
    Mtcnn,
    MtcnnDetector,
    batched_nms,
    convert_mtcnn,
    crop_patches,
    nms,
    pnet_candidates,
    pyramid_scales,
    regress_boxes,
    square_boxes,
)
from facecloak.faces.face import Face
from facecloak.models.pull import is_pulled

# ---------------------------------------------------------------------------------------------- pure steps


def test_nms_union_keeps_best_of_overlapping_and_all_disjoint() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=float)
    scores = np.array([0.8, 0.9, 0.5, 0.7])
    # box 1 (best) suppresses 0 (IoU 81/119 = 0.68 > 0.5) and 3; box 2 is disjoint.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 2]  # 0.68 <= 0.7 keeps box 0; box 3 overlaps 0 by 0.9


def test_nms_min_removes_box_inside_a_bigger_one() -> None:
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], dtype=float)
    scores = np.array([0.9, 0.95])
    assert nms(boxes, scores, 0.7, mode="union").tolist() == [1, 0]  # IoU is tiny
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [1]  # the small box lies wholly inside
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_batched_nms_never_suppresses_across_images() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5).tolist() == [0, 1]


def test_pyramid_scales_cover_min_face_to_short_side() -> None:
    scales = pyramid_scales(100, 200, min_face_size=20, factor=0.5)
    assert scales == pytest.approx([0.6, 0.3, 0.15])  # 12 / 20, then halving while 100 * s >= 12
    assert pyramid_scales(30, 30, min_face_size=40, factor=0.7) == []  # smaller than the smallest face


def test_pnet_candidates_map_cells_to_windows() -> None:
    prob = np.zeros((3, 4), dtype=np.float32)
    prob[2, 1] = 0.9
    offsets = np.arange(48, dtype=np.float32).reshape(4, 3, 4)
    cand = pnet_candidates(offsets, prob, scale=0.5, threshold=0.6)
    assert cand.shape == (1, 9)
    # cell (x=1, y=2), stride 2, 12 px window, at half scale -> 1-based inclusive [6, 28] x [10, 32]
    assert cand[0, :5].tolist() == [6.0, 10.0, 28.0, 32.0, pytest.approx(0.9)]
    assert cand[0, 5:].tolist() == offsets[:, 2, 1].tolist()


def test_square_and_regress_boxes() -> None:
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])
    assert square_boxes(boxes).tolist() == [[0.0, 20.0, 40.0, 60.0]]
    moved = regress_boxes(boxes, np.array([[0.1, 0.0, -0.1, 0.5]]), inclusive=False)
    assert moved.tolist() == [[12.0, 20.0, 28.0, 80.0]]
    moved = regress_boxes(boxes, np.array([[0.1, 0.0, 0.0, 0.0]]))  # inclusive: width 21
    assert moved[0, 0] == pytest.approx(12.1)


def test_crop_patches_pads_outside_the_image_with_black() -> None:
    image = np.full((10, 10, 3), 200.0, dtype=np.float32)
    # 1-based inclusive box [-4, 5] x [1, 10]: left half outside the image.
    patch = crop_patches(image, np.array([[-4.0, 1.0, 5.0, 10.0]]), 10)[0]
    assert patch.shape == (10, 10, 3)
    assert np.all(patch[:, :5] == 0.0)
    assert np.all(patch[:, 5:] == 200.0)


# ---------------------------------------------------------------------------------------------- types, spec


def test_face_holds_a_private_read_only_copy_of_landmarks() -> None:
    points = np.arange(10, dtype=np.float64).reshape(5, 2)
    face = Face(box=(1, 2, 11, 22), score=0.5, landmarks=points)
    points[0, 0] = 99.0
    assert face.landmarks.dtype == np.float32 and face.landmarks[0, 0] == 0.0
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 1.0
    assert (face.width, face.height, face.area) == (10.0, 20.0, 200.0)
    with pytest.raises(ValueError):
        Face(box=(0, 0, 1, 1), score=1.0, landmarks=np.zeros((4, 2)))


def test_spec_is_registered_and_pullable() -> None:
    spec = DETECTORS.get("mtcnn")
    assert spec.id == "mtcnn"
    (source,) = spec.sources
    assert (source.registry, source.package, source.version) == ("pypi", "facenet-pytorch", "2.6.0")
    assert [f.path.rsplit("/", 1)[-1] for f in source.files] == ["pnet.pt", "rnet.pt", "onet.pt"]
    assert all(len(f.sha256) == 64 for f in source.files)
    with pytest.raises(KeyError, match="did you mean mtcnn"):
        DETECTORS.get("mtcn")


def test_convert_prefixes_the_three_state_dicts(tmp_path: Path) -> None:
    reference = Mtcnn()
    files = {}
    for net in ("pnet", "rnet", "onet"):
        path = tmp_path / f"{net}.pt"
        torch.save(getattr(reference, net).state_dict(), path)
        files[f"facenet_pytorch/data/{net}.pt"] = path
    state = convert_mtcnn(files)
    module = Mtcnn()
    module.load_state_dict(state, strict=True)
    assert set(state) == set(reference.state_dict())
    assert torch.equal(module.onet.dense6_3.weight, reference.onet.dense6_3.weight)


def test_net_output_shapes() -> None:
    module = Mtcnn().eval()
    with torch.inference_mode():
        offsets, prob = module.pnet(torch.zeros(2, 3, 30, 40))
        assert offsets.shape == (2, 4, 10, 15) and prob.shape == (2, 10, 15)
        offsets, prob = module.rnet(torch.zeros(5, 3, 24, 24))
        assert offsets.shape == (5, 4) and prob.shape == (5,)
        offsets, points, prob = module.onet(torch.zeros(5, 3, 48, 48))
        assert offsets.shape == (5, 4) and points.shape == (5, 10) and prob.shape == (5,)


def test_detector_rejects_bad_input_and_options() -> None:
    detector = MtcnnDetector(module=Mtcnn().eval())
    with pytest.raises(ImageError, match="uint8 RGB"):
        detector.detect(np.zeros((50, 50, 3), dtype=np.float32))
    with pytest.raises(ImageError, match="uint8 RGB"):
        detector.detect(np.zeros((50, 50), dtype=np.uint8))
    with pytest.raises(ConfigError, match="min_face_size"):
        MtcnnDetector(min_face_size=5, module=Mtcnn())


# ---------------------------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    if not is_pulled(DETECTORS.get("mtcnn")):
        pytest.skip("MTCNN weights are not pulled; run `facecloak models pull mtcnn`")
    return MtcnnDetector()


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def _group_photo() -> np.ndarray:
    try:
        path = importlib.resources.files("insightface") / "data" / "images" / "t1.jpg"
    except ModuleNotFoundError:
        pytest.skip("insightface is not installed (its group photo t1.jpg is the test image)")
    return _read_rgb(Path(str(path)))


@pytest.mark.real
def test_blank_image_has_no_faces(detector: MtcnnDetector) -> None:
    assert detector.detect(np.zeros((240, 320, 3), dtype=np.uint8)) == []
    assert detector.detect(np.full((240, 320, 3), 128, dtype=np.uint8)) == []


@pytest.mark.real
def test_group_photo_has_six_faces_with_sane_landmarks(detector: MtcnnDetector) -> None:
    image = _group_photo()
    faces = detector.detect(image)
    assert len(faces) == 6
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for face in faces:
        x1, y1, x2, y2 = face.box
        left_eye, right_eye, _, mouth_left, mouth_right = face.landmarks
        assert 40 < face.width < 200 and 40 < face.height < 200
        assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # ArcFace order: image-left first
        assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1])  # upright faces only here


@pytest.mark.real
def test_downscaled_detection_maps_back_to_full_resolution(detector: MtcnnDetector) -> None:
    image = _group_photo()
    # A 2x pixel-replicated copy shrinks back (INTER_AREA) to exactly the original when max_side is the
    # original's longer side, so its faces must be the original's mapped through x -> 2 (x + 0.5) - 0.5.
    height, width = image.shape[:2]
    doubled = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    shrinking = MtcnnDetector(max_side=max(height, width), module=detector.module)
    original, mapped = detector.detect(image), shrinking.detect(doubled)
    assert len(original) == len(mapped) == 6
    for a, b in zip(original, mapped, strict=True):
        np.testing.assert_allclose(b.landmarks, (a.landmarks + 0.5) * 2 - 0.5, atol=1e-3)
        np.testing.assert_allclose(b.box, (np.array(a.box) + 0.5) * 2 - 0.5, atol=1e-3)


@pytest.mark.real
def test_batch_detection_equals_one_by_one(detector: MtcnnDetector) -> None:
    image = _group_photo()
    flipped = np.ascontiguousarray(image[:, ::-1])
    one = [detector.detect(image), detector.detect(flipped)]
    both = detector.detect_batch([image, flipped])
    for single, batched in zip(one, both, strict=True):
        assert len(single) == len(batched) == 6
        for a, b in zip(single, batched, strict=True):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.real
@pytest.mark.shared
@pytest.mark.slow
def test_finds_a_face_in_nearly_every_deepface_photo(detector: MtcnnDetector, deepface_dir: Path) -> None:
    with open(deepface_dir / "manifest.csv", newline="") as fh:
        paths = [deepface_dir / row["path"] for row in csv.DictReader(fh)]
    found, seconds = 0, 0.0
    for path in paths:
        image = _read_rgb(path)
        start = time.perf_counter()
        faces = detector.detect(image)
        seconds += time.perf_counter() - start
        found += bool(faces)
    print(f"MTCNN: faces in {found}/{len(paths)} photos, {1000 * seconds / len(paths):.0f} ms per photo")
    assert len(paths) == 61
    assert found >= 60
