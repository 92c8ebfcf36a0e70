"""facecloak.explain (per-face LEAM outputs) and the `facecloak explain` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facecloak.errors import ConfigError, ImageError
from facecloak.explain import explain_faces, heat_overlay, leave_one_out_references, mask_image, to_heatmap
from facecloak.faces.align import TEMPLATES, template_matrix
from facecloak.faces.face import Face
from facecloak.faces.parse import Landmarks5Parser, face_region
from facecloak.masking.leamface import LeamSettings
from leam import selection_count


class TinyNet(nn.Module):
    """A seeded two-layer conv net with the models' contract: (N, 3, S, S) in [0, 255] -> (N, 8) embeddings."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # a test fixture: the module's own weights, not global randomness of the code under test
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x / 255.0 - 0.5))
        return torch.relu(self.conv2(h)).mean(dim=(2, 3)) + 0.1 * h.mean(dim=(2, 3)).repeat(1, 2)[:, :8]


def _photo_and_face() -> tuple[np.ndarray, Face]:
    """A textured 200 x 240 photo and a face whose five points are the ArcFace template scaled by 1.2, shifted."""
    rng = np.random.default_rng(0)
    photo = (rng.random((200, 240, 3)) * 255).astype(np.uint8)
    points = TEMPLATES.get("arcface112").points * 1.2 + np.array([50.0, 30.0])
    return photo, Face(box=(50.0, 30.0, 50 + 134.4, 30 + 134.4), score=0.99, landmarks=points)


def _explain(**kwargs):
    photo, face = _photo_and_face()
    settings = kwargs.pop("settings", LeamSettings(layers=("conv1", "conv2"), budget=2.0, target="auto"))
    return photo, face, explain_faces(photo, [face], models=["mbf-arc"], parser=Landmarks5Parser(),
                                      settings=settings, load_model=lambda _: TinyNet(), **kwargs)


def test_explain_faces_shapes_mask_count_and_shares() -> None:
    photo, _, (ex,) = _explain()
    assert ex.heatmap.shape == photo.shape[:2] and ex.heatmap.dtype == np.float32
    assert ex.heatmap.min() >= 0.0 and 0.9 < ex.heatmap.max() <= 1.0  # bilinear: the peak falls between pixels
    assert set(ex.layer_heatmaps) == {"mbf-arc/conv1", "mbf-arc/conv2"}
    assert all(h.shape == photo.shape[:2] for h in ex.layer_heatmaps.values())
    assert ex.template_overall.sum() == pytest.approx(1.0, abs=1e-4)
    region = face_region(ex.template_labels)
    assert ex.template_mask.sum() == selection_count(2.0, int(region.sum()))  # exactly k % of the face region
    assert not (ex.template_mask & ~region).any()
    # On the photo the face is 1/1.2 the template's scale per axis: about 1.44 x the pixels.
    assert ex.mask.sum() == pytest.approx(1.44 * ex.template_mask.sum(), rel=0.15)
    assert sum(ex.region_shares.values()) == pytest.approx(1.0)
    assert ex.region_shares["other"] == 0.0
    assert ex.target == "flip"
    summary = ex.summary(2.0)
    assert summary["mask_pixels_template"] == int(ex.template_mask.sum())
    json.dumps(summary)  # JSON-ready


def test_explain_is_deterministic_and_uses_references() -> None:
    _, _, (a,) = _explain()
    _, _, (b,) = _explain()
    np.testing.assert_array_equal(a.template_overall, b.template_overall)
    np.testing.assert_array_equal(a.mask, b.mask)
    ref = {"mbf-arc": np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)}
    _, _, (c,) = _explain(references=ref)
    assert c.target == "reference"
    assert not np.array_equal(c.template_overall, a.template_overall)


def test_explain_rejects_bad_input() -> None:
    photo, face = _photo_and_face()
    with pytest.raises(ImageError):
        explain_faces(photo.astype(np.float32), [face], models=["mbf-arc"], parser=Landmarks5Parser())
    with pytest.raises(ConfigError):
        explain_faces(photo, [face], models=[], parser=Landmarks5Parser())
    assert explain_faces(photo, [], models=["mbf-arc"], parser=Landmarks5Parser()) == []


def test_to_heatmap_warps_back_to_the_face() -> None:
    photo, face = _photo_and_face()
    p = np.zeros((112, 112), np.float32)
    p[71, 56] = 1.0  # the nose tip of the ArcFace template (56.03, 71.74)
    heat = to_heatmap(p, template_matrix(face, TEMPLATES.get("arcface112")), photo.shape)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    nose = face.landmarks[2]
    assert abs(x - nose[0]) <= 2 and abs(y - nose[1]) <= 2
    assert to_heatmap(np.zeros((112, 112)), np.eye(2, 3), photo.shape).max() == 0.0


def test_overlay_and_mask_image() -> None:
    rgb = np.full((4, 5, 3), 100, np.uint8)
    heat = np.zeros((4, 5), np.float32)
    heat[0, 0] = 1.0
    out = heat_overlay(rgb, heat)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert out[0, 0].tolist() != out[1, 1].tolist()
    with pytest.raises(ImageError):
        heat_overlay(rgb, heat[:3])
    m = np.zeros((4, 5), bool)
    m[1, 2] = True
    img = mask_image(m)
    assert img.shape == (4, 5, 3) and img[1, 2].tolist() == [255, 255, 255] and img.sum() == 3 * 255


def test_leave_one_out_references_skip_missing_faces() -> None:
    e = np.array([[1, 0], [0, 1], [np.nan, np.nan], [1, 1]], np.float32)
    refs = leave_one_out_references({"m": e})["m"]
    assert np.isnan(refs[2]).all()
    expected0 = np.array([0, 1]) + np.array([1, 1]) / np.sqrt(2)
    np.testing.assert_allclose(refs[0], expected0 / np.linalg.norm(expected0), atol=1e-6)
    with pytest.raises(ConfigError):
        leave_one_out_references({"m": e[:1]})


@pytest.mark.real
def test_explain_cli_on_a_bundled_photo(tmp_path: Path) -> None:
    from conftest import require_pulled
    from PIL import Image
    from skimage import data as skdata
    from typer.testing import CliRunner

    import leam
    from facecloak.cli import app
    from facecloak.faces.detect import DETECTORS
    from facecloak.models.pull import is_pulled

    require_pulled("mbf-arc")
    if not is_pulled(DETECTORS.get("mtcnn")):
        pytest.skip("MTCNN weights not pulled; run `facecloak models pull`")
    rgb = skdata.astronaut()
    Image.fromarray(rgb).save(tmp_path / "astronaut.png")
    Image.fromarray(rgb[:, ::-1].copy()).save(tmp_path / "mirrored.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "astronaut.png"), str(tmp_path / "mirrored.png"),
                                      "-o", str(out), "--models", "mbf-arc", "--parser", "landmarks5",
                                      "--person", "Eileen"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = out / "astronaut"
    overall = np.asarray(Image.open(folder / "face0_overall.png"))
    assert overall.shape == rgb.shape
    for layer in ("stem", "stage1", "stage2", "head"):
        assert np.asarray(Image.open(folder / f"face0_mbf-arc_{layer}.png")).shape == rgb.shape
    mask = np.asarray(Image.open(folder / "face0_mask.png"))[..., 0] > 127
    facts = json.loads((folder / "face0_regions.json").read_text())
    assert facts["target"] == "reference"  # explained against the other photo of the person
    assert facts["mask_pixels_template"] == selection_count(1.0, facts["face_region_pixels_template"])
    assert mask.sum() == facts["mask_pixels_photo"]
    # The photo mask covers ~1 % of the face region warped onto the photo (same scale for both).
    from facecloak.faces.detect import load_detector

    face = max(load_detector("mtcnn").detect(rgb), key=lambda f: f.area)
    region = face_region(Landmarks5Parser().parse(rgb, face).labels)
    assert mask.sum() / region.sum() == pytest.approx(0.01, abs=0.003)
    assert sum(facts["region_shares"].values()) == pytest.approx(1.0)
    profile = leam.load_profile(out / "Eileen.profile.npz")
    assert profile.n_photos == 2 and profile.model_ids == ("mbf-arc",)
    summary = json.loads((out / "explain.json").read_text())
    assert [p["status"] for p in summary["photos"]] == ["explained", "explained"]
