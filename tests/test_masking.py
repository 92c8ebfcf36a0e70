"""facecloak.masking.stage (the one masking stage), the template-space parser labels, the device option, the selector
registry dispatch, the bundled photos and the on-disk impostor bank."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_fresh
from torch import nn

import leam
from facecloak.errors import ConfigError
from facecloak.faces.align import TEMPLATES, align, template_matrix
from facecloak.faces.face import Face
from facecloak.faces.parse import OTHER, REGIONS, Landmarks5Parser, face_region, labels_in_template, template_labels
from facecloak.masking import impostors
from facecloak.masking.leamface import LeamSettings, select_pixels
from facecloak.masking.stage import align_faces, mask_faces, resolve_device
from facecloak.models import embed_crops, to_tensor


class TinyNet(nn.Module):
    """A seeded conv net with the models' contract: (N, 3, S, S) in [0, 255] -> (N, 8) embeddings."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # a test fixture: the module's own weights
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x / 255.0 - 0.5))
        return torch.relu(self.conv2(h)).mean(dim=(2, 3)) + 0.1 * h.mean(dim=(2, 3)).repeat(1, 2)[:, :8]


def _photo_and_faces() -> tuple[np.ndarray, list[Face]]:
    """A textured 220 x 300 photo with two faces: the ArcFace template scaled by 1.2 and by 0.9, shifted."""
    rng = np.random.default_rng(0)
    photo = (rng.random((220, 300, 3)) * 255).astype(np.uint8)
    base = TEMPLATES.get("arcface112").points
    faces = []
    for scale, shift in ((1.2, (20.0, 30.0)), (0.9, (180.0, 60.0))):
        points = base * scale + np.array(shift)
        faces.append(Face(box=(shift[0], shift[1], shift[0] + 112 * scale, shift[1] + 112 * scale), score=0.99,
                          landmarks=points))
    return photo, faces


def test_align_faces_matches_align_and_reuses_given_matrices() -> None:
    photo, faces = _photo_and_faces()
    batch = align_faces(photo, faces, ("arcface224",), crop_templates=("arcface112",))
    assert set(batch.matrices) == {"arcface224", "arcface112"} and set(batch.inputs) == {"arcface112"}
    for i, face in enumerate(faces):
        ref = align(photo, face, "arcface112")
        np.testing.assert_array_equal(batch.matrices["arcface112"][i], ref.matrix)
        wide = template_matrix(face, TEMPLATES.get("arcface224"))
        np.testing.assert_array_equal(batch.matrices["arcface224"][i], wide)
    # The model input is exactly what to_tensor makes of the crops (same values, same memory layout).
    expected = to_tensor(np.stack([align(photo, f, "arcface112").crop for f in faces]))
    assert torch.equal(batch.inputs["arcface112"], expected)
    assert batch.inputs["arcface112"].stride() == expected.stride()
    # Given matrices are used as they are (e.g. to cut the protected copy exactly like the clean one).
    shifted = {"arcface112": batch.matrices["arcface112"] + np.array([[0, 0, 3.0], [0, 0, 0]])}
    again = align_faces(photo, faces, (), crop_templates=("arcface112",), matrices=shifted)
    np.testing.assert_array_equal(again.matrices["arcface112"], shifted["arcface112"])
    assert not torch.equal(again.inputs["arcface112"], batch.inputs["arcface112"])


def test_template_labels_equal_photo_labels_under_an_integer_shift() -> None:
    """With a pure integer translation, rasterising in the template and painting the photo then warping with
    nearest neighbour give the same label map; under scaling they agree except along region borders."""
    photo, faces = _photo_and_faces()
    parser = Landmarks5Parser()
    shift = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, -20.0]])
    direct = template_labels(parser, photo, faces[0], shift, 160)
    warped = labels_in_template(parser.parse(photo, faces[0]), shift, 160)
    np.testing.assert_array_equal(direct, warped)
    matrix = template_matrix(faces[0], TEMPLATES.get("arcface112"))
    direct = template_labels(parser, photo, faces[0], matrix, 112)
    warped = labels_in_template(parser.parse(photo, faces[0]), matrix, 112)
    assert set(np.unique(direct)) <= set(REGIONS)
    assert (direct == warped).mean() > 0.95
    assert face_region(direct).sum() > 0.3 * 112 * 112


def test_template_labels_fall_back_to_parse_for_other_parsers() -> None:
    photo, faces = _photo_and_faces()

    class OnlyParse:
        def parse(self, image: np.ndarray, face: Face):
            return Landmarks5Parser().parse(image, face)

    matrix = template_matrix(faces[0], TEMPLATES.get("arcface112"))
    np.testing.assert_array_equal(
        template_labels(OnlyParse(), photo, faces[0], matrix, 112),
        labels_in_template(Landmarks5Parser().parse(photo, faces[0]), matrix, 112),
    )


def test_mask_faces_selects_k_percent_of_each_face_region_and_maps_back() -> None:
    photo, faces = _photo_and_faces()
    settings = LeamSettings(layers=("conv1", "conv2"), budget=2.0, target="auto")
    batch = align_faces(photo, faces, ("arcface112",), crop_templates=("arcface112",))
    stage = mask_faces(photo, batch, models=("mbf-arc",), parser=Landmarks5Parser(), settings=settings,
                       load_model=lambda _: TinyNet())
    assert stage.overall.shape == stage.labels.shape == stage.template_masks.shape == (2, 112, 112)
    for i in range(2):
        region = face_region(stage.labels[i])
        assert stage.template_masks[i].sum() == leam.selection_count(2.0, int(region.sum()))
        assert not (stage.template_masks[i] & ~region).any()
        assert stage.overall[i].sum() == pytest.approx(1.0, abs=1e-4)
    mask, heat, per_face = stage.union_in_photo(photo.shape)
    assert mask.shape == heat.shape == photo.shape[:2] and mask.dtype == bool
    assert mask.sum() == len(np.union1d(per_face[0], per_face[1])) and mask.sum() > 0
    np.testing.assert_array_equal(np.flatnonzero(stage.mask_in_photo(1, photo.shape)), per_face[1])
    assert 0.9 < heat.max() <= 1.0 and heat.min() >= 0.0
    # A profile override replaces that face's map (and so its selection); the other face is unchanged.
    flat = np.full((112, 112), 1.0 / 112**2, np.float32)
    flat[:10, :10] = 0.0
    flat /= flat.sum()
    other = mask_faces(photo, batch, models=("mbf-arc",), parser=Landmarks5Parser(), settings=settings,
                       overall_override={0: flat}, load_model=lambda _: TinyNet())
    np.testing.assert_array_equal(other.overall[0], flat)
    np.testing.assert_array_equal(other.template_masks[1], stage.template_masks[1])
    with pytest.raises(ConfigError):
        mask_faces(photo, align_faces(photo, [], ("arcface112",)), models=("mbf-arc",), parser=Landmarks5Parser(),
                   settings=settings)


def test_selection_goes_through_the_selector_registry() -> None:
    p = np.random.default_rng(1).random((2, 16, 16)).astype(np.float32)
    region = np.zeros((2, 16, 16), bool)
    region[:, 2:14, 3:15] = True
    for name, direct in (
        ("topk", lambda: leam.topk_mask(p, 5.0, region=region)),
        ("stratified", lambda: leam.stratified_mask(p, 5.0, grid=(4, 4), region=region)),
        ("sampled", lambda: leam.sampled_mask(p, 5.0, 2.0, generator=torch.Generator().manual_seed(7), region=region)),
    ):
        settings = LeamSettings(selection=name, budget=5.0, grid=4, gamma=2.0)
        np.testing.assert_array_equal(select_pixels(p, settings, region=region, seed=7), np.asarray(direct()))


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # cuDNN's default; restored after the test
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32  # a property of torch's C module: restored by hand
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        # indexed, as tensors on the device report it, so "cuda" and "cuda:1" are one cache entry (`model_on`)
        assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32  # float32 figures
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def _run(code: str) -> subprocess.CompletedProcess:
    return run_fresh(code, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("first", ["facecloak.masking.leamface", "facecloak.masking.impostors",
                                   "facecloak.photos.bundled", "facecloak.protection.protect",
                                   "facecloak.masking.stage", "facecloak.explain"])
def test_no_import_loop_whatever_is_imported_first(first: str) -> None:
    everything = "facecloak.masking.leamface, facecloak.masking.impostors, facecloak.protection.protect"
    done = _run(f"import {first}; import {everything}")
    assert done.returncode == 0, done.stderr[-2000:]


def test_bundled_photos_do_not_import_insightface() -> None:
    pytest.importorskip("skimage")
    done = _run(
        "import sys\n"
        "from facecloak.photos.bundled import bundled_photos\n"
        "photos = bundled_photos()\n"
        "from skimage import data\n"
        "assert (photos['astronaut'] == data.astronaut()).all()\n"
        "assert 'insightface' not in sys.modules, 'insightface was imported'\n"
        "print(sorted(photos))\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "astronaut" in done.stdout


def test_impostor_bank_is_cached_on_disk_by_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import require_pulled

    require_pulled("mbf-arc")  # the bank's faces come from MTCNN, whose weights are pulled with the models
    pytest.importorskip("skimage")
    from facecloak.faces.detect import default_detector

    default_detector()  # loaded from the real cache before FACECLOAK_HOME moves
    monkeypatch.setenv("FACECLOAK_HOME", str(tmp_path))
    monkeypatch.setattr(impostors, "_BANKS", type(impostors._BANKS)())
    model = TinyNet()
    path = impostors.bank_path("mbf-arc", model)
    assert path.parent == tmp_path / "impostors" and not path.exists()
    fresh = impostors.bundled_impostors("mbf-arc", model)
    assert path.is_file() and fresh.shape[1] == 8 and len(fresh) >= 6
    torch.testing.assert_close(fresh.norm(dim=1), torch.ones(len(fresh)))

    # A new process (empty memory cache) reads the file instead of detecting and embedding again.
    monkeypatch.setattr(impostors, "_BANKS", type(impostors._BANKS)())

    def refuse(*_: object) -> torch.Tensor:
        raise AssertionError("the bank was recomputed despite the cache file")

    monkeypatch.setattr(impostors, "compute_bank", refuse)
    assert torch.equal(impostors.bundled_impostors("mbf-arc", model), fresh)
    # Other weights never reuse it.
    assert impostors.bank_path("mbf-arc", TinyNet(seed=1)) != path
    # The cached bank equals the embedding of the bundled faces.
    monkeypatch.undo()
    from facecloak.photos.bundled import bundled_photos

    photos = bundled_photos().values()
    crops = [align(img, f, "arcface112").crop for img in photos for f in default_detector().detect(img)]
    torch.testing.assert_close(fresh, torch.nn.functional.normalize(embed_crops(model, np.stack(crops)), dim=1))


def test_unknown_parser_code_never_appears() -> None:
    photo, faces = _photo_and_faces()
    labels = template_labels(Landmarks5Parser(), photo, faces[1], np.array([[1.0, 0, 500.0], [0, 1.0, 500.0]]), 32)
    assert (labels == OTHER).all()  # the face lies outside this crop entirely


def test_the_pipeline_modules_import_facecloak_at_the_top_only() -> None:
    """The loop leamface -> impostors -> demo/protection -> leamface was held together by imports inside
    functions; the modules of the masking path now import what they use at module level."""
    import ast

    for name in ("masking/leamface", "masking/impostors", "masking/stage", "photos/bundled", "protection/protect",
                 "explain"):
        tree = ast.parse((REPO / "facecloak" / f"{name}.py").read_text())
        late = [
            node.module
            for func in ast.walk(tree)
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(func)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("facecloak")
        ]
        assert not late, f"facecloak/{name}.py imports {late} inside functions"
