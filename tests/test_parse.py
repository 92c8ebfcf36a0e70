"""Face parser: label helpers on synthetic maps, the five-point parser's geometry, and FaceMesh on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facecloak.errors import ConfigError, ImageError, ModelNotPulledError
from facecloak.faces.align import apply_affine
from facecloak.faces.face import Face
from facecloak.faces.parse import (
    BROWS,
    EYES,
    FACEMESH_FILE,
    FACEMESH_SHA256,
    FOREHEAD,
    LIPS,
    NOSE,
    OTHER,
    PARSER_SOURCE,
    PARSERS,
    REGIONS,
    SKIN,
    FaceFrame,
    FaceMeshParser,
    Landmarks5Parser,
    Parsing,
    face_region,
    get_parser,
    is_parser_pulled,
    labels_in_template,
    paint_regions,
    region_shares,
    roi_from_mesh,
    square_roi_matrix,
)
from leam.registry import UnknownNameError

# An upright synthetic face: eyes 40 px apart, mouth 44 px below the eyes (face unit = 44 px).
FIVE = np.array([[80.0, 100.0], [120.0, 100.0], [100.0, 122.0], [82.0, 144.0], [118.0, 144.0]])


def _face(points: np.ndarray) -> Face:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return Face(box=(lo[0] - 30, lo[1] - 40, hi[0] + 30, hi[1] + 30), score=0.99, landmarks=points)


def _rotate(points: np.ndarray, degrees: float, centre: tuple[float, float] = (100.0, 120.0)) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return apply_affine(matrix, points)


def _label_at(labels: np.ndarray, point: np.ndarray) -> int:
    x, y = np.round(point).astype(int)
    return int(labels[y, x])


# --- registry and labels -----------------------------------------------------------------------------------


def test_regions_have_fixed_codes_and_names() -> None:
    assert REGIONS == {0: "other", 1: "skin", 2: "forehead", 3: "nose", 4: "eyes", 5: "brows", 6: "lips"}
    assert (OTHER, SKIN, FOREHEAD, NOSE, EYES, BROWS, LIPS) == (0, 1, 2, 3, 4, 5, 6)


def test_registry_holds_both_parsers_and_suggests_on_typos() -> None:
    assert set(PARSERS.names()) == {"facemesh", "landmarks5"}
    assert isinstance(get_parser("landmarks5"), Landmarks5Parser)
    with pytest.raises(UnknownNameError, match="did you mean facemesh"):
        PARSERS.get("facemes")


def test_face_region_is_codes_one_to_six() -> None:
    labels = np.arange(8, dtype=np.uint8).reshape(2, 4)
    np.testing.assert_array_equal(face_region(labels), [[False, True, True, True], [True, True, True, False]])


def test_region_shares_counts_mask_pixels_per_region() -> None:
    labels = np.zeros((4, 5), dtype=np.uint8)
    labels[0, :] = NOSE  # 5 px
    labels[1, :2] = EYES  # 2 px
    labels[2:, :] = SKIN  # 10 px
    mask = np.zeros_like(labels, dtype=bool)
    mask[0, :4] = True  # 4 nose
    mask[1, :] = True  # 2 eyes + 3 other
    mask[3, 0] = True  # 1 skin
    shares = region_shares(mask, labels)
    assert list(shares) == list(REGIONS.values())
    assert shares == pytest.approx(
        {"other": 0.3, "skin": 0.1, "forehead": 0.0, "nose": 0.4, "eyes": 0.2, "brows": 0.0, "lips": 0.0}
    )
    assert sum(shares.values()) == pytest.approx(1.0)


def test_region_shares_empty_mask_and_shape_mismatch() -> None:
    labels = np.full((3, 3), SKIN, dtype=np.uint8)
    assert set(region_shares(np.zeros((3, 3), bool), labels).values()) == {0.0}
    with pytest.raises(ValueError, match="shape"):
        region_shares(np.ones((3, 4), bool), labels)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_region_shares_sum_to_one_on_random_maps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(REGIONS), size=(9, 11)).astype(np.uint8)
    mask = rng.random((9, 11)) < 0.4
    mask[0, 0] = True
    shares = region_shares(mask, labels)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["eyes"] == pytest.approx((labels[mask] == EYES).mean())


def _synthetic_parsing() -> Parsing:
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[2:8, 3:9] = EYES
    labels[10:18, 12:20] = LIPS
    return Parsing(labels=labels, landmarks=np.zeros((5, 2), np.float32))


def test_labels_in_template_identity_translation_and_border() -> None:
    parsing = _synthetic_parsing()
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(labels_in_template(parsing, identity, 20), parsing.labels[:, :20])
    shift = np.array([[1.0, 0, -3], [0, 1.0, -2]])  # crop (u, v) = photo (x - 3, y - 2)
    out = labels_in_template(parsing, shift, 16)
    np.testing.assert_array_equal(out[:6, :6], EYES)  # photo rows 2..7, cols 3..8
    np.testing.assert_array_equal(out[8:16, 9:16], LIPS)
    outside = np.array([[1.0, 0, 25], [0, 1.0, 0]])  # crop's left 25 columns come from x < 0
    assert (labels_in_template(parsing, outside, 20)[:, :25] == OTHER).all()


def test_labels_in_template_upscale_is_nearest_neighbour() -> None:
    parsing = _synthetic_parsing()
    double = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5]])  # pixel-centre convention for an exact 2x upsampling
    out = labels_in_template(parsing, double, 40)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(parsing.labels[:20, :20], 2, 0), 2, 1))
    with pytest.raises(ValueError, match="matrix"):
        labels_in_template(parsing, np.eye(3), 10)


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(-180, 180), scale=st.floats(0.3, 3.0), tx=st.floats(-10, 10), ty=st.floats(-10, 10))
def test_labels_in_template_never_invents_codes(angle: float, scale: float, tx: float, ty: float) -> None:
    parsing = _synthetic_parsing()
    matrix = cv2.getRotationMatrix2D((15.0, 10.0), angle, scale)
    matrix[:, 2] += np.array([tx, ty])
    out = labels_in_template(parsing, matrix, 24)
    assert out.shape == (24, 24) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {OTHER, EYES, LIPS}


def test_paint_regions_later_regions_win() -> None:
    square = np.array([[2.0, 2.0], [17.0, 2.0], [17.0, 17.0], [2.0, 17.0]])
    inner = np.array([[6.0, 6.0], [12.0, 6.0], [12.0, 12.0], [6.0, 12.0]])
    labels = paint_regions((20, 20), {LIPS: [inner], SKIN: [square]})  # given out of order on purpose
    assert labels[9, 9] == LIPS and labels[3, 3] == SKIN and labels[0, 0] == OTHER
    assert labels[6, 6] == LIPS and labels[12, 12] == LIPS  # vertices are inside (OpenCV fills them)
    assert (labels == LIPS).sum() == 49


def test_parsing_is_read_only_and_checks_dtype() -> None:
    parsing = _synthetic_parsing()
    with pytest.raises(ValueError):
        parsing.labels[0, 0] = 1
    with pytest.raises(ValueError, match="uint8"):
        Parsing(labels=np.zeros((2, 2), np.int32), landmarks=np.zeros((5, 2), np.float32))


# --- geometry ------------------------------------------------------------------------------------------------


def test_face_frame_units_and_round_trip() -> None:
    frame = FaceFrame.from_five(FIVE)
    assert frame.eye_span == pytest.approx(40.0) and frame.mouth_drop == pytest.approx(44.0)
    assert frame.unit == pytest.approx(44.0)
    np.testing.assert_allclose(frame.to_local(FIVE)[2], [0.0, 0.5])  # nose tip: on the midline, half-way down
    np.testing.assert_allclose(frame.to_photo(frame.to_local(FIVE)), FIVE, atol=1e-9)


def test_face_frame_turns_with_an_upside_down_face() -> None:
    frame = FaceFrame.from_five(_rotate(FIVE, 180.0))
    np.testing.assert_allclose(frame.y_axis, [0.0, -1.0], atol=1e-9)  # towards the chin, which is now up
    assert frame.mouth_drop == pytest.approx(44.0)


def test_square_roi_matrix_centres_and_levels_the_face() -> None:
    angle = np.deg2rad(30.0)
    x_axis = np.array([np.cos(angle), np.sin(angle)])
    matrix = square_roi_matrix(np.array([50.0, 60.0]), x_axis, side=96.0, out=192)
    centre, along = apply_affine(matrix, np.array([[50.0, 60.0], [50.0 + 10 * x_axis[0], 60.0 + 10 * x_axis[1]]]))
    np.testing.assert_allclose(centre, [95.5, 95.5])
    np.testing.assert_allclose(along - centre, [20.0, 0.0], atol=1e-9)  # 2 crop px per photo px, along +x


def test_roi_from_mesh_uses_the_box_in_the_rolled_frame() -> None:
    rng = np.random.default_rng(0)
    local = rng.uniform([-40, -60], [40, 60], size=(468, 2))
    local[[0, 1]] = [[-40, -60], [40, 60]]  # pin the extent: 80 x 120
    local[33], local[263] = [-20, 0], [20, 0]  # the roll points: level
    mesh = _rotate(local + np.array([100.0, 100.0]), -25.0, centre=(100.0, 100.0))
    centre, x_axis, side = roi_from_mesh(mesh)
    np.testing.assert_allclose(centre, [100.0, 100.0], atol=1e-6)
    assert side == pytest.approx(1.5 * 120.0)
    assert np.degrees(np.arctan2(x_axis[1], x_axis[0])) == pytest.approx(25.0)


# --- five-point parser ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [0.0, 20.0, -35.0, 180.0])
def test_landmarks5_regions_sit_at_the_landmarks(degrees: float) -> None:
    points = _rotate(FIVE, degrees)
    image = np.zeros((240, 200, 3), dtype=np.uint8)
    parsing = Landmarks5Parser().parse(image, _face(points))
    labels = parsing.labels
    assert labels.shape == (240, 200) and labels.dtype == np.uint8
    frame = FaceFrame.from_five(points)
    assert _label_at(labels, points[0]) == EYES and _label_at(labels, points[1]) == EYES
    assert _label_at(labels, (points[3] + points[4]) / 2) == LIPS
    assert _label_at(labels, frame.to_photo(np.array([[0.0, 0.3]]))[0]) == NOSE  # on the bridge
    assert _label_at(labels, frame.to_photo(np.array([[0.0, -0.7]]))[0]) == FOREHEAD
    assert _label_at(labels, frame.to_photo(np.array([[-0.2, -0.27]]))[0]) == BROWS  # above the image-left eye
    assert _label_at(labels, frame.to_photo(np.array([[-0.8, 0.6]]))[0]) == SKIN  # a cheek
    assert _label_at(labels, frame.to_photo(np.array([[0.0, 2.0]]))[0]) == OTHER  # below the chin
    assert labels[0, 0] == OTHER and labels[-1, -1] == OTHER
    np.testing.assert_allclose(parsing.landmarks, points, atol=1e-4)
    assert parsing.confidence == 1.0


def test_landmarks5_is_rotation_equivariant() -> None:
    image = np.zeros((240, 200, 3), dtype=np.uint8)
    upright = Landmarks5Parser().parse(image, _face(FIVE)).labels
    turned = Landmarks5Parser().parse(image, _face(_rotate(FIVE, 30.0))).labels
    back = cv2.warpAffine(turned, cv2.getRotationMatrix2D((100.0, 120.0), -30.0, 1.0), (200, 240),
                          flags=cv2.INTER_NEAREST)
    agree = (back == upright)[face_region(upright)].mean()
    assert agree > 0.97  # only boundary pixels differ (nearest-neighbour resampling of the label map)
    for code in (SKIN, FOREHEAD, NOSE, EYES, BROWS, LIPS):
        assert (upright == code).sum() == pytest.approx((turned == code).sum(), rel=0.05)


def test_parsers_refuse_non_rgb_images() -> None:
    with pytest.raises(ImageError, match="RGB uint8"):
        Landmarks5Parser().parse(np.zeros((50, 50), np.uint8), _face(FIVE))
    with pytest.raises(ConfigError, match="refine_steps"):
        FaceMeshParser(Path("unused.tflite"), refine_steps=-1)


def test_facemesh_parser_without_pulled_file_says_how_to_pull(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("FACECLOAK_HOME", str(tmp_path))
    assert not is_parser_pulled()
    with pytest.raises(ModelNotPulledError, match="facecloak models pull"):
        get_parser("facemesh")


# --- FaceMesh on real photos ---------------------------------------------------------------------------------

# Small photos of four different people (fast to detect in).
REAL_PHOTOS = ("df13/img25.jpg", "df01/img5.jpg", "df04/img12.jpg", "df05/img62.jpg")


@pytest.fixture(scope="module")
def facemesh() -> FaceMeshParser:
    if not is_parser_pulled():
        pytest.skip("the FaceMesh parser file is not pulled; run `facecloak models pull facemesh`")
    return FaceMeshParser()


@pytest.fixture(scope="module")
def real_faces(deepface_dir: Path) -> list[tuple[np.ndarray, Face]]:
    from facecloak.faces.detect import DETECTORS, load_detector
    from facecloak.models.pull import is_pulled
    from facecloak.photos.io import read_image

    if not is_pulled(DETECTORS.get("mtcnn")):
        pytest.skip("MTCNN weights are not pulled; run `facecloak models pull mtcnn`")
    detector = load_detector("mtcnn")
    found = []
    for name in REAL_PHOTOS:
        image = read_image(deepface_dir / name).rgb
        faces = detector.detect(image)
        assert faces, f"no face found in {name}"
        found.append((image, max(faces, key=lambda f: f.area)))
    return found


@pytest.mark.real
@pytest.mark.shared
def test_facemesh_file_is_the_pinned_one(facemesh: FaceMeshParser) -> None:
    from facecloak.files import sha256_file
    from facecloak.models.pull import cached_source_files

    path = cached_source_files(PARSER_SOURCE, "the face parser")[FACEMESH_FILE]
    assert sha256_file(path) == FACEMESH_SHA256
    (inp,) = facemesh._interpreter.get_input_details()
    assert tuple(inp["shape"]) == (1, 192, 192, 3) and inp["dtype"] == np.float32


@pytest.mark.real
@pytest.mark.shared
def test_facemesh_points_agree_with_the_detector(facemesh: FaceMeshParser,
                                                real_faces: list[tuple[np.ndarray, Face]]) -> None:
    """Checks the input normalisation ([0, 1]) and the crop geometry end to end: FaceMesh's eye centres, nose tip
    and mouth corners land on MTCNN's five points (mean error 0.04 eye distances over the 61 deepface photos)."""
    from facecloak.faces.parse import LEFT_EYE, RIGHT_EYE

    for image, face in real_faces:
        mesh, presence = facemesh.landmarks(image, face)
        assert mesh.shape == (468, 2) and presence > 0.9
        ours = np.stack([mesh[list(RIGHT_EYE)].mean(0), mesh[list(LEFT_EYE)].mean(0), mesh[1], mesh[61], mesh[291]])
        error = np.linalg.norm(ours - face.landmarks, axis=1) / face.eye_distance
        assert error.max() < 0.2, f"FaceMesh vs MTCNN points, in eye distances: {error.round(3)}"
        assert error.mean() < 0.1, f"FaceMesh vs MTCNN points, in eye distances: {error.round(3)}"


@pytest.mark.real
@pytest.mark.shared
def test_facemesh_regions_on_real_faces(facemesh: FaceMeshParser,
                                        real_faces: list[tuple[np.ndarray, Face]]) -> None:
    for image, face in real_faces:
        parsing = facemesh.parse(image, face)
        labels = parsing.labels
        assert labels.shape == image.shape[:2] and parsing.landmarks.shape == (468, 2)
        frame = FaceFrame.from_five(face.landmarks)
        # MTCNN puts mouth corners a little outside the lip contour (up to 0.08 eye distances on these photos).
        for code, point, radius in ((EYES, face.landmarks[0], 0.05), (EYES, face.landmarks[1], 0.05),
                                    (LIPS, face.landmarks[3], 0.12), (LIPS, face.landmarks[4], 0.12)):
            assert _near(labels, point, radius * face.eye_distance, code), f"no {REGIONS[code]} near {point}"
        # Region centroids in the face frame (y down, in face units): brows above eyes above nose above lips,
        # forehead on top, nose on the midline.
        centroid = {code: frame.to_local(np.argwhere(labels == code)[:, ::-1].astype(float)).mean(0)
                    for code in (FOREHEAD, BROWS, EYES, NOSE, LIPS)}
        assert centroid[FOREHEAD][1] < centroid[BROWS][1] < centroid[EYES][1] < centroid[NOSE][1] < centroid[LIPS][1]
        assert 0.1 < centroid[NOSE][1] < frame.to_local(face.landmarks)[3:, 1].mean()
        assert abs(centroid[NOSE][0]) < 0.2
        shares = region_shares(face_region(labels), labels)
        assert sum(shares.values()) == pytest.approx(1.0) and shares["other"] == 0.0
        assert max(shares, key=shares.__getitem__) == "skin"
        assert all(shares[name] > 0.005 for name in ("forehead", "nose", "eyes", "brows", "lips"))


@pytest.mark.real
@pytest.mark.shared
def test_landmarks5_roughly_matches_facemesh(facemesh: FaceMeshParser,
                                             real_faces: list[tuple[np.ndarray, Face]]) -> None:
    """The approximate parser's face region overlaps FaceMesh's (IoU 0.87 on average over the 61 deepface photos)."""
    for image, face in real_faces:
        mesh_face = face_region(facemesh.parse(image, face).labels)
        five_face = face_region(Landmarks5Parser().parse(image, face).labels)
        assert (mesh_face & five_face).sum() / (mesh_face | five_face).sum() > 0.75


@pytest.mark.real
@pytest.mark.shared
def test_facemesh_labels_follow_alignment_into_the_template(facemesh: FaceMeshParser,
                                                           real_faces: list[tuple[np.ndarray, Face]]) -> None:
    from facecloak.faces.align import TEMPLATES, template_matrix

    template = TEMPLATES.get("arcface112")
    for image, face in real_faces[:2]:
        crop_labels = labels_in_template(facemesh.parse(image, face), template_matrix(face, template), 112)
        assert crop_labels.shape == (112, 112)
        for code, point in ((EYES, template.points[0]), (EYES, template.points[1]), (NOSE, template.points[2])):
            assert _near(crop_labels, point, 4.0, code), f"no {REGIONS[code]} near template point {point}"
        # The crop's central half (eyes to mouth) is all face; its borders hold hair and background.
        assert face_region(crop_labels[28:84, 28:84]).mean() > 0.97


def _near(labels: np.ndarray, point: np.ndarray, radius: float, code: int) -> bool:
    """Whether any pixel within `radius` of `point` carries `code`."""
    ys, xs = np.mgrid[: labels.shape[0], : labels.shape[1]]
    disc = (xs - point[0]) ** 2 + (ys - point[1]) ** 2 <= radius**2
    return bool((labels[disc] == code).any())
