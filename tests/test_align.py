"""Alignment: templates, similarity estimation, crops, and warping maps/masks back (property tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facecloak.errors import ConfigError, ImageError, NoFaceError
from facecloak.faces.align import (
    _DLIB_MEAN_FACE_X,
    _DLIB_MEAN_FACE_Y,
    TEMPLATES,
    affine_scale,
    align,
    align_batch,
    apply_affine,
    compose_affine,
    estimate_similarity,
    invert_affine,
    template_matrix,
    template_to_template,
    warp_between_templates,
    warp_crop,
    warp_to_photo,
)
from facecloak.faces.face import Face

ANGLES = st.floats(-np.pi, np.pi)
SCALES = st.floats(0.3, 3.0)
SHIFTS = st.floats(-200.0, 200.0)


def similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def face_matrix(angle: float, scale: float, photo_centre: tuple[float, float], size: int) -> np.ndarray:
    """Photo -> crop similarity taking `photo_centre` to the crop's centre."""
    m = similarity(angle, scale, 0.0, 0.0)
    m[:, 2] = (size - 1) / 2.0 - m[:, :2] @ np.asarray(photo_centre)
    return m


def face_from_template(template: str, matrix: np.ndarray) -> Face:
    """A face whose landmarks are exactly the template's points seen through crop -> photo = inv(matrix)."""
    points = apply_affine(invert_affine(matrix), TEMPLATES.get(template).points)
    return Face(box=(0.0, 0.0, 1.0, 1.0), score=1.0, landmarks=points)


def smooth_photo_map(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return (0.5 + 0.25 * np.sin(xs / 15.0) + 0.25 * np.cos(ys / 20.0)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- templates


def test_templates_are_registered_with_their_geometry() -> None:
    assert set(TEMPLATES.names()) >= {"arcface112", "arcface224", "dlib150"}
    arc = TEMPLATES.get("arcface112")
    assert arc.size == 112
    np.testing.assert_allclose(arc.points[0], [38.2946, 51.6963])
    np.testing.assert_allclose(TEMPLATES.get("arcface224").points, 2 * arc.points)
    dlib = TEMPLATES.get("dlib150")
    assert dlib.size == 150
    assert len(_DLIB_MEAN_FACE_X) == len(_DLIB_MEAN_FACE_Y) == 68 - 17  # dlib's own compile-time check
    # From dlib's mean face: (0.25 + mean) / 1.5 * 150 - 0.5 px (see dlib_chip_points).
    expected = [[47.05, 46.10], [99.98, 46.10], [73.51, 76.06], [49.91, 102.52], [97.11, 102.52]]
    np.testing.assert_allclose(dlib.points, expected, atol=0.01)
    with pytest.raises(ValueError):
        dlib.points[0, 0] = 0.0


def test_unknown_template_suggests_close_names() -> None:
    with pytest.raises(KeyError, match="did you mean arcface112"):
        TEMPLATES.get("arcface11")


# ---------------------------------------------------------------------------------------------- affine algebra


@given(ANGLES, SCALES, SHIFTS, SHIFTS)
def test_invert_affine_twice_is_identity(angle: float, scale: float, tx: float, ty: float) -> None:
    m = similarity(angle, scale, tx, ty)
    np.testing.assert_allclose(invert_affine(invert_affine(m)), m, atol=1e-9)
    np.testing.assert_allclose(compose_affine(m, invert_affine(m)), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@given(ANGLES, SCALES, SHIFTS, SHIFTS, st.integers(0, 2**32 - 1))
def test_estimate_similarity_recovers_a_known_similarity(
    angle: float, scale: float, tx: float, ty: float, seed: int
) -> None:
    truth = similarity(angle, scale, tx, ty)
    src = np.random.default_rng(seed).uniform(0, 300, size=(5, 2))
    src += [[0, 0], [60, 0], [30, 30], [5, 60], [55, 60]]  # never degenerate
    np.testing.assert_allclose(estimate_similarity(src, apply_affine(truth, src)), truth, atol=1e-8)


def test_estimate_similarity_never_returns_a_reflection() -> None:
    src = TEMPLATES.get("arcface112").points
    mirrored = src * [-1.0, 1.0]
    assert np.linalg.det(estimate_similarity(src, mirrored)[:, :2]) > 0
    with pytest.raises(NoFaceError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), src)


def test_template_matrix_puts_landmarks_on_the_template() -> None:
    m = face_matrix(0.4, 0.7, (150.0, 120.0), 112)
    face = face_from_template("arcface112", m)
    np.testing.assert_allclose(template_matrix(face, TEMPLATES.get("arcface112")), m, atol=1e-4)


# ---------------------------------------------------------------------------------------------- photo -> crop


def test_align_samples_the_photo_through_its_matrix() -> None:
    # A linear ramp is reproduced exactly by bilinear sampling: crop pixel (u, v) must hold the photo's
    # value at inv(M) @ (u, v).
    ys, xs = np.mgrid[0:240, 0:240]
    photo = np.stack([xs, ys, (xs + ys) // 2], axis=2).clip(0, 255).astype(np.uint8)
    m = face_matrix(-0.3, 1.1, (120.0, 110.0), 112)
    aligned = align(photo, face_from_template("arcface112", m), "arcface112")
    assert aligned.crop.shape == (112, 112, 3) and aligned.crop.dtype == np.uint8
    assert aligned.template == "arcface112"
    grid = np.stack(np.meshgrid(np.arange(112), np.arange(112)), axis=2).reshape(-1, 2)
    where = apply_affine(invert_affine(aligned.matrix), grid)
    assert np.abs(aligned.crop[..., 0].reshape(-1) - where[:, 0]).max() <= 1.0
    assert np.abs(aligned.crop[..., 1].reshape(-1) - where[:, 1]).max() <= 1.0


@pytest.mark.filterwarnings("ignore::FutureWarning")  # insightface calls a deprecated skimage API
def test_align_matches_insightface_norm_crop() -> None:
    face_align = pytest.importorskip("insightface.utils.face_align")
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8), (0, 0), 2)
    m = face_matrix(0.2, 0.8, (150.0, 140.0), 112)
    face = face_from_template("arcface112", m)
    ours = align(photo, face, "arcface112").crop.astype(int)
    theirs = face_align.norm_crop(photo, face.landmarks).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_align_batch_keeps_order_and_black_border_outside_the_photo() -> None:
    photo = np.full((100, 100, 3), 255, dtype=np.uint8)
    inside = face_from_template("dlib150", face_matrix(0.0, 1.5, (50.0, 50.0), 150))
    at_edge = face_from_template("dlib150", face_matrix(0.0, 1.5, (0.0, 50.0), 150))
    first, second = align_batch(photo, [inside, at_edge], "dlib150")
    assert first.face is inside and second.face is at_edge
    assert first.crop[75, 75].tolist() == [255, 255, 255]
    assert second.crop[75, 10].tolist() == [0, 0, 0]  # left of the photo's edge


def test_antialiasing_prevents_moire_on_big_faces_and_keeps_the_matrix() -> None:
    ys, xs = np.mgrid[0:800, 0:800]
    checker = (((xs + ys) % 2) * 255).astype(np.uint8)
    photo = np.repeat(checker[..., None], 3, axis=2)
    m = face_matrix(0.3, 0.2, (400.0, 400.0), 112)  # 5 photo px per crop px
    face = face_from_template("arcface112", m)
    smooth = align(photo, face, "arcface112")
    aliased = align(photo, face, "arcface112", antialias=False)
    np.testing.assert_array_equal(smooth.matrix, aliased.matrix)
    assert abs(float(smooth.crop.mean()) - 127.5) < 3 and float(smooth.crop.std()) < 5
    assert float(aliased.crop.std()) > 30


def test_align_rejects_non_rgb_uint8() -> None:
    face = face_from_template("arcface112", face_matrix(0.0, 1.0, (50.0, 50.0), 112))
    with pytest.raises(ImageError):
        align(np.zeros((100, 100, 3), dtype=np.float32), face, "arcface112")


# ---------------------------------------------------------------------------------------------- crop -> photo


@settings(max_examples=40, deadline=None)
@given(ANGLES, st.floats(0.5, 2.0), st.floats(80.0, 120.0), st.floats(80.0, 120.0))
def test_round_trip_photo_crop_photo_recovers_a_smooth_map(angle: float, scale: float, cx: float, cy: float) -> None:
    photo_map = smooth_photo_map(200, 200)
    m = face_matrix(angle, scale, (cx, cy), 112)
    crop_map = warp_crop(photo_map, m, 112, antialias=False)
    back = warp_to_photo(crop_map, m, photo_map.shape)
    assert back.dtype == np.float32 and back.shape == (200, 200)
    ys, xs = np.mgrid[0:200, 0:200]
    uv = apply_affine(m, np.stack([xs.ravel(), ys.ravel()], axis=1)).reshape(200, 200, 2)
    # Away from the crop's and the photo's edges, where the black border bleeds into bilinear samples.
    inside_face = np.all((uv >= 2) & (uv <= 109), axis=2)
    inside_face[:4] = inside_face[-4:] = inside_face[:, :4] = inside_face[:, -4:] = False  # 2 crop px at scale 0.5
    assert inside_face.sum() > 1000
    assert np.abs(back - photo_map)[inside_face].max() < 0.01
    outside = np.any((uv < -1.5) | (uv > 112.5), axis=2)
    assert np.all(back[outside] == 0.0)


def test_mask_with_integer_shift_lands_exactly() -> None:
    mask = np.random.default_rng(1).random((112, 112)) > 0.5
    m = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, -20.0]])  # crop = photo - (10, 20)
    out = warp_to_photo(mask, m, (200, 200, 3))
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out[20:132, 10:122], mask)
    assert out.sum() == mask.sum()


@settings(max_examples=30, deadline=None)
@given(ANGLES, SCALES)
def test_mask_covers_its_true_area_without_dilation(angle: float, scale: float) -> None:
    ys, xs = np.mgrid[0:112, 0:112]
    disc = (xs - 55.5) ** 2 + (ys - 55.5) ** 2 <= 30.0**2
    m = face_matrix(angle, scale, (250.123, 249.877), 112)
    out = warp_to_photo(disc, m, (500, 500))
    expected = disc.sum() / scale**2  # each crop pixel covers 1 / scale² photo pixels
    perimeter = 2 * np.pi * 30.0 / scale
    assert abs(int(out.sum()) - expected) <= 0.5 * perimeter + 4
    # Every photo pixel in the mask has its centre inside a masked crop pixel (centres that fall exactly on
    # a crop pixel's edge may round either way in floating point, so they are left out of the check).
    py, px = np.nonzero(out)
    uv = apply_affine(m, np.stack([px, py], axis=1))
    clear = np.all(np.abs(uv - np.floor(uv) - 0.5) > 1e-6, axis=1)
    cell = np.floor(uv[clear] + 0.5).astype(int)
    assert clear.mean() > 0.9
    assert disc[cell[:, 1], cell[:, 0]].all()


def test_warp_to_photo_interpolation_choices() -> None:
    mask = np.zeros((112, 112), dtype=bool)
    m = face_matrix(0.0, 1.0, (60.0, 60.0), 112)
    with pytest.raises(ConfigError, match="bilinearly"):
        warp_to_photo(mask, m, (120, 120), interpolation="bilinear")
    values = np.arange(112 * 112, dtype=np.float32).reshape(112, 112)
    nearest = warp_to_photo(values, m, (120, 120), interpolation="nearest")
    assert set(np.unique(nearest)) <= set(values.ravel()) | {0.0}
    with pytest.raises(ValueError, match="square"):
        warp_to_photo(np.zeros((10, 20)), m, (120, 120))


# ---------------------------------------------------------------------------------------------- crop -> crop


def test_template_to_template_moves_a_peak_to_the_same_landmark() -> None:
    src, dst = TEMPLATES.get("arcface112"), TEMPLATES.get("dlib150")
    ys, xs = np.mgrid[0:112, 0:112]
    eye = src.points[0]
    blob = np.exp(-((xs - eye[0]) ** 2 + (ys - eye[1]) ** 2) / (2 * 3.0**2)).astype(np.float32)
    moved = warp_between_templates(blob, "arcface112", "dlib150")
    assert moved.shape == (150, 150)
    peak_y, peak_x = np.unravel_index(np.argmax(moved), moved.shape)
    fitted = apply_affine(template_to_template(src, dst), eye[None])[0]
    assert np.hypot(peak_x - fitted[0], peak_y - fitted[1]) <= 1.0
    assert np.hypot(peak_x - dst.points[0, 0], peak_y - dst.points[0, 1]) <= 3.0  # the templates nearly agree


def test_template_to_template_with_face_matrices_is_exact() -> None:
    photo_map = smooth_photo_map(300, 300)
    rng = np.random.default_rng(3)
    landmarks = apply_affine(
        invert_affine(face_matrix(0.25, 0.9, (150.0, 150.0), 112)), TEMPLATES.get("arcface112").points
    ) + rng.normal(0, 2.0, (5, 2))  # real landmarks never fit a template exactly
    face = Face(box=(0.0, 0.0, 1.0, 1.0), score=1.0, landmarks=landmarks)
    m_arc = template_matrix(face, TEMPLATES.get("arcface112"))
    m_dlib = template_matrix(face, TEMPLATES.get("dlib150"))
    arc_map = warp_crop(photo_map, m_arc, 112, antialias=False)
    dlib_map = warp_crop(photo_map, m_dlib, 150, antialias=False)
    moved = warp_between_templates(arc_map, "arcface112", "dlib150", src_matrix=m_arc, dst_matrix=m_dlib)
    ys, xs = np.mgrid[0:150, 0:150]
    uv = apply_affine(compose_affine(m_arc, invert_affine(m_dlib)), np.stack([xs.ravel(), ys.ravel()], 1))
    inside = np.all((uv >= 2) & (uv <= 109), axis=1).reshape(150, 150)
    assert inside.mean() > 0.5
    assert np.abs(moved - dlib_map)[inside].max() < 0.01
    assert affine_scale(m_dlib) > affine_scale(m_arc)  # dlib chips are tighter than ArcFace crops
    with pytest.raises(ConfigError, match="both"):
        warp_between_templates(arc_map, "arcface112", "dlib150", src_matrix=m_arc)


# ---------------------------------------------------------------------------------------------- native dlib


def _dlib_chip_to_image(details) -> np.ndarray:  # type: ignore[no-untyped-def]
    """dlib's own chip -> image map for `chip_details` (extract_image_chips: chip corners to rotated rect)."""
    rect, angle = details.rect, details.angle
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.left(), rect.bottom()]])
    to = (corners - centre) @ rotation.T + centre
    src = np.array([[0, 0], [details.cols - 1, 0], [0, details.rows - 1]], dtype=np.float32)
    return cv2.getAffineTransform(src, to.astype(np.float32)).astype(np.float64)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dlib150_matches_native_dlib_face_chips(deepface_dir: Path) -> None:
    """dlib's own 68 landmarks, mapped into dlib's own 150 px / 0.25 chip, sit on average on the dlib150
    template points (one face varies by several pixels with its pose and expression, so the mean is tested)."""
    from conftest import require_dlib

    dlib, files = require_dlib("the dlib150 template check")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(files.shape68)
    with open(deepface_dir / "manifest.csv", newline="") as fh:
        paths = [deepface_dir / row["path"] for row in csv.DictReader(fh)][::2]
    found = []
    for path in paths:
        image = _read_rgb_max_side(path, 800)  # keeps dlib's HOG detector quick
        rects = detector(image, 0)
        if len(rects) == 0:
            continue
        shape = predictor(image, max(rects, key=lambda r: r.area()))
        points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        five = np.array([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])
        to_chip = invert_affine(_dlib_chip_to_image(dlib.get_face_chip_details(shape, 150, 0.25)))
        found.append(apply_affine(to_chip, five))
    assert len(found) >= 20
    offset = np.abs(np.mean(found, axis=0) - TEMPLATES.get("dlib150").points)
    # Measured (n = 30): eyes and nose within 0.9 px; mouth corners 1.5-2.2 px wider, since the mean face's
    # mouth is a neutral one and these photos smile.
    assert offset[:3].max() < 1.5, offset
    assert offset[3:].max() < 3.0, offset


def _read_rgb_max_side(path: Path, max_side: int) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        pytest.fail(f"cannot read {path}")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    ratio = max_side / max(image.shape[:2])
    if ratio < 1:
        image = cv2.resize(image, None, fx=ratio, fy=ratio, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)
