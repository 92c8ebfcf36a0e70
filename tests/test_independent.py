"""Independent recognisers (own detection + alignment), the verification verdict, the transfer cloak's
ingredients and the independent evaluation's statistics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.independent import choose_probes, column_names, gmsd, settings_by_name, table, wilson
from facecloak.errors import ConfigError
from facecloak.protection.cloak import (
    Adam,
    CloakSettings,
    SourceModel,
    _Draw,
    _embeddings,
    _jittered,
    _jpeg_through,
    _LookTerm,
    _photo_transform,
    cloak,
    crop_grid,
)
from facecloak.verification.independent import SeenFace, iou, match_faces
from facecloak.verification.panel import FaceVerdict

# --- pure pieces ----------------------------------------------------------------------------------------------


def test_match_faces_pairs_each_box_with_its_best_overlap_one_to_one() -> None:
    a = SeenFace((0, 0, 10, 10), np.ones(2))
    b = SeenFace((100, 100, 110, 110), np.ones(2))
    c = SeenFace((1, 1, 11, 11), np.ones(2))
    boxes = [(0, 0, 10, 10), (100, 100, 112, 112), (500, 500, 510, 510)]
    assert match_faces(boxes, [b, c, a]) == [a, b, None]
    assert match_faces([(0, 0, 10, 10), (0, 0, 10, 10)], [a]) == [a, None]  # one face serves one box
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_face_verdict_counts_only_recognisers_that_could_judge() -> None:
    v = FaceVerdict((0, 0, 1, 1), matched_by=("arcface",), judged_by=("dlib", "arcface"),
                    cosine={"dlib": None, "arcface": 0.8}, held_out=("dlib",))
    assert (v.k, v.m, v.protected) == (1, 2, False)
    assert v.text() == "matched by 1 of 2 local recognisers (arcface)"
    assert v.as_json()["cosine"] == {"dlib": None, "arcface": 0.8}
    assert FaceVerdict((0, 0, 1, 1), (), ("dlib",)).protected
    nobody = FaceVerdict((0, 0, 1, 1), (), ())
    assert not nobody.protected and "not verifiable" in nobody.text()


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = wilson(7, 56)
    assert lo < 7 / 56 < hi and lo > 0.05 and hi < 0.25
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_gmsd_is_zero_for_identical_images_and_grows_with_damage() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    dots = img.copy()
    dots[rng.random((64, 64)) < 0.02] = 0
    noisy = np.clip(img.astype(int) + rng.integers(-60, 60, img.shape), 0, 255).astype(np.uint8)
    assert gmsd(img, img) == 0.0
    assert 0 < gmsd(img, dots) < gmsd(img, noisy)


def test_dodge_table_uses_only_probes_the_pipeline_could_read() -> None:
    thr = {"dlib": 0.9}
    rows = [
        {"clean": {"dlib": 0.95}, "s": {"match": {"dlib": 0.5}, "self": {"dlib": 0.95}, **_cost()}},  # dodged
        {"clean": {"dlib": 0.95}, "s": {"match": {"dlib": None}, "self": {"dlib": None}, **_cost()}},  # face lost
        {"clean": {"dlib": 0.95}, "s": {"match": {"dlib": 0.93}, "self": {"dlib": 0.99}, **_cost()}},  # matched
        {"clean": {"dlib": None}, "s": {"match": {"dlib": 0.1}, "self": {"dlib": 0.1}, **_cost()}},  # unreadable
    ]
    lines = {t["setting"]: t for t in table(rows, ["s"], thr)}
    assert lines["clean"]["n"] == 3 and lines["clean"]["dodged"] == 0
    assert lines["s"]["dodged"] == 2 and lines["s"]["rate"] == pytest.approx(2 / 3)
    assert lines["s"]["no_face_found"] == 1
    assert lines["s"]["self_dodged"] == 1  # only the lost face is unmatched to its own original


def _cost() -> dict:
    return {"faces": 1, "cpu_s": 1.0, "steps": 10, "changed_of_face": 0.02, "psnr_photo": 40.0, "ssim_photo": 0.99,
            "gmsd_face": 0.01}


def test_defence_columns_put_the_unprotected_file_beside_each_setting() -> None:
    names = column_names(["low", "high"], ["jpeg75", "inpaint-mask"])
    assert names == ["low", "high", "unprotected@jpeg75", "low@jpeg75", "high@jpeg75",
                     "unprotected@inpaint-mask", "low@inpaint-mask", "high@inpaint-mask"]
    assert column_names(["high"], []) == ["high"]
    rows = [{"clean": {"dlib": 0.95}, "high": {"match": {"dlib": 0.5}, **_cost()},
             "unprotected@jpeg75": {"match": {"dlib": 0.94}, **_cost()},
             "high@jpeg75": {"match": {"dlib": 0.93}, **_cost()}}]
    lines = {t["setting"]: t["dodged"] for t in table(rows, column_names(["high"], ["jpeg75"]), {"dlib": 0.9})}
    assert lines == {"clean": 0, "high": 1, "unprotected@jpeg75": 0, "high@jpeg75": 0}


def test_settings_by_name_knows_levels_ablation_and_random_controls() -> None:
    s = settings_by_name(["medium", "black1", "cloak2-eot+random"])
    assert [x.name for x in s] == ["medium", "black1", "cloak2-eot+random"]
    assert s[2].random and s[2].leam().selection == "sampled" and s[2].leam().gamma == 0.0
    assert not s[0].random and s[0].fill == "cloak"
    with pytest.raises(Exception, match="unknown setting"):
        settings_by_name(["glitter"])


def test_cloak_settings_refuse_unknown_transformations() -> None:
    with pytest.raises(ConfigError, match="unknown cloak transformation"):
        CloakSettings(eot=("jitter", "sparkle"))
    with pytest.raises(ConfigError):
        CloakSettings(samples=0)


def test_identity_draw_changes_nothing_and_jpeg_passes_the_gradient_straight_through() -> None:
    grid = crop_grid(np.array([[0.5, 0, 3], [0, 0.5, 2]]), (0, 0, 200, 180), 112)
    assert torch.equal(_jittered(grid, _Draw(), 200, 180), grid)
    moved = _jittered(grid, _Draw(scale=1.05, angle=0.05), 200, 180)
    assert not torch.allclose(moved, grid)
    # rotating about the crop centre keeps the centre where it was
    assert torch.allclose(moved.mean(dim=(1, 2)), grid.mean(dim=(1, 2)), atol=1e-4)
    x = torch.full((1, 3, 16, 16), 100.0, requires_grad=True)
    y = _jpeg_through(x, 50)
    y.sum().backward()
    assert x.grad is not None and torch.all(x.grad == 1)
    same = _photo_transform(x.detach(), _Draw())
    assert torch.equal(same, x.detach())
    assert _photo_transform(x.detach(), _Draw(blur=1.0, resize=0.5)).shape == x.shape


def test_the_look_term_is_the_measured_structural_dissimilarity() -> None:
    from bench.stats import ssim

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    noisy = np.clip(img.astype(int) + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(2, 0, 1).float()[None]

    assert float(_LookTerm(t(img))(t(img))) == pytest.approx(0.0, abs=1e-6)
    assert float(_LookTerm(t(img))(t(noisy))) == pytest.approx(1 - ssim(noisy, img), abs=0.02)
    # changes confined to a mask: filtering only around it gives the same mean
    mask = np.zeros(img.shape[:2], bool)
    mask[10:20, 30:36] = True
    spot = np.where(mask[..., None], noisy, img)
    full = float(_LookTerm(t(img))(t(spot)))
    assert full > 0 and float(_LookTerm(t(img), mask)(t(spot))) == pytest.approx(full, rel=1e-4)


def _tiny_cloak(settings: CloakSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, mask, cloaked) for a random 64x64 photo, one 32 px 'face' read by a tiny random network."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.LazyLinear(16))
    rng = np.random.default_rng(1)
    photo = rng.integers(40, 215, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 16:48] = True
    matrix = np.array([[0.5, 0, 0], [0, 0.5, 0]])  # the whole photo -> a 32 px crop: 2 photo px per crop px
    with torch.no_grad():
        ref = net(torch.from_numpy(photo).permute(2, 0, 1).float()[None, :, ::2, ::2])
    source = SourceModel("tiny", net, 32, matrix[None], ref, threshold=None)
    out, _ = cloak(photo, mask, [source], settings)
    return photo, mask, out


def test_a_coarse_grain_makes_a_smooth_change_inside_the_mask_and_nothing_outside() -> None:
    base = CloakSettings(steps=8, step_size=8.0, epsilon=20.0, early_stop=False, diversity=False)
    photo, mask, fine = _tiny_cloak(base)
    _, _, smooth = _tiny_cloak(replace(base, grain=14.0))  # 14 of 112 crop px: 8 photo px between nodes
    for out in (fine, smooth):
        change = out.astype(int) - photo.astype(int)
        assert np.array_equal(out[~mask], photo[~mask])  # byte-identical outside the mask
        assert np.abs(change).max() <= 20 and np.abs(change[mask]).mean() > 1

    def roughness(out: np.ndarray) -> float:  # mean step between horizontal neighbours inside the mask
        c = out.astype(float) - photo.astype(float)
        return float(np.abs(np.diff(c, axis=1))[mask[:, 1:] & mask[:, :-1]].mean())

    assert roughness(smooth) < 0.5 * roughness(fine)


def test_the_look_term_trades_change_for_structure() -> None:
    from bench.stats import ssim

    base = CloakSettings(steps=10, step_size=8.0, epsilon=24.0, early_stop=False, diversity=False)
    photo, mask, plain = _tiny_cloak(base)
    _, _, careful = _tiny_cloak(replace(base, look=50.0))
    assert np.array_equal(careful[~mask], photo[~mask])
    assert ssim(careful, photo) > ssim(plain, photo)
    with pytest.raises(ConfigError):
        CloakSettings(look=-1.0)


def test_pruning_keeps_the_share_of_the_mask_the_cloak_moved_most() -> None:
    base = CloakSettings(steps=9, step_size=8.0, early_stop=False, diversity=False)
    photo, mask, pruned = _tiny_cloak(replace(base, keep=0.2))
    changed = (pruned != photo).any(2)
    assert not changed[~mask].any()  # nothing outside the mask
    assert 0.1 * mask.sum() < changed.sum() <= round(0.2 * mask.sum()) + 1  # a fifth of the mask at most
    _, _, full = _tiny_cloak(base)
    assert (full != photo).any(2).sum() > changed.sum()
    _, _, short = _tiny_cloak(replace(base, keep=0.2, steps=1))  # one step: no room for two rounds
    assert (short != photo).any(2).sum() <= round(0.2 * mask.sum())
    for keep in (0.0, 1.5):
        with pytest.raises(ConfigError, match="keep"):
            CloakSettings(keep=keep)


def test_the_cloaks_adam_takes_the_same_steps_as_torch_optim_adam_to_the_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    ours, theirs = torch.zeros(2, 3, 5, 7, requires_grad=True), torch.zeros(2, 3, 5, 7, requires_grad=True)
    mine, reference = Adam(ours, lr=12.0), torch.optim.Adam([theirs], lr=12.0)
    for _ in range(40):
        target = torch.randn(2, 3, 5, 7, generator=gen) * 30
        for param, opt in ((ours, mine), (theirs, reference)):
            opt.zero_grad()
            ((param - target) ** 2).sum().backward()
            opt.step()
        assert torch.equal(ours, theirs)
    assert float(ours.abs().max()) > 1.0  # it moved


def test_a_stochastic_ensemble_runs_the_drawn_sources_only() -> None:
    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.head = torch.nn.Conv2d(3, 4, 8, stride=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.head(x).flatten(1)

    photo = np.random.default_rng(2).integers(40, 215, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    nets = [Counting(), Counting(), Counting()]
    sources = [SourceModel(f"s{i}", n, 32, np.array([[[0.5, 0, 0], [0, 0.5, 0]]]), torch.ones(1, 64), None)
               for i, n in enumerate(nets)]
    settings = CloakSettings(steps=12, early_stop=False, diversity=False, sources_per_step=1)
    out, steps = cloak(photo, mask, sources, settings)
    assert steps == 12 and sum(n.calls for n in nets) == 12  # one source per step, not three
    assert sum(n.calls > 0 for n in nets) >= 2  # drawn, not always the same one
    assert not np.array_equal(out[mask], photo[mask])


def test_the_feature_term_hooks_a_mid_layer_of_a_real_source_and_leaves_no_hook_behind() -> None:
    from conftest import require_pulled

    from facecloak.models import cached_model
    from facecloak.protection.cloak import _feature_layer

    require_pulled("mbf-arc")
    net = cached_model("mbf-arc")
    rng = np.random.default_rng(3)
    photo = rng.integers(40, 215, (112, 112, 3), dtype=np.uint8)
    mask = np.zeros((112, 112), bool)
    mask[30:80, 25:90] = rng.random((50, 65)) < 0.3
    with torch.no_grad():
        ref = net(torch.from_numpy(photo).permute(2, 0, 1).float()[None])
    source = SourceModel("mbf-arc", net, 112, np.array([[[1.0, 0, 0], [0, 1.0, 0]]]), ref, threshold=None)
    layer = _feature_layer(source)
    assert layer is not net and not layer._forward_hooks
    settings = CloakSettings(steps=3, early_stop=False, diversity=False, features=1.0)
    out, steps = cloak(photo, mask, [source], settings)
    assert steps == 3 and not layer._forward_hooks  # removed after the cloak
    assert np.array_equal(out[~mask], photo[~mask]) and not np.array_equal(out[mask], photo[mask])
    without, _ = cloak(photo, mask, [source], replace(settings, features=0.0))
    assert not np.array_equal(out, without)  # the term changes the result
    with pytest.raises(ConfigError):
        CloakSettings(features=-1.0)


def test_a_large_face_is_processed_at_the_size_align_samples_it_from() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(8))
    photo = torch.from_numpy(np.random.default_rng(4).uniform(0, 255, (1, 3, 256, 256))).float()
    matrix = np.array([[[0.125, 0, 0], [0, 0.125, 0]]])  # 8 photo px per crop px: `align` shrinks it to a quarter
    source = SourceModel("tiny", net, 32, matrix, torch.ones(1, 8), None)
    grids = {"tiny": crop_grid(matrix[0], (0, 0, 256, 256), 32)}

    def seen(d: _Draw) -> torch.Tensor:
        with torch.no_grad():
            return _embeddings([source], photo, grids, [d])["tiny"]

    # The processing runs on the view `align` would sample: the window area-downscaled to a quarter.
    small = torch.nn.functional.interpolate(photo, size=(64, 64), mode="area")
    for d in (_Draw(), _Draw(resize=0.6), _Draw(jpeg=40), _Draw(blur=2.0)):
        view = _photo_transform(small, replace(d, blur=d.blur * 0.25))  # the blur radius scaled along
        crop = torch.nn.functional.grid_sample(view, grids["tiny"], mode="bilinear", align_corners=False)
        with torch.no_grad():
            assert torch.allclose(seen(d)[0], net(crop.clamp(0, 255)), atol=1e-4)
    assert not torch.allclose(seen(_Draw(resize=0.6)), seen(_Draw()))


def test_choose_probes_is_seeded_and_keeps_the_probe_out_of_its_gallery(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        "path,identity\n" + "".join(f"{p}/{i}.jpg,{p}\n" for p in "abcde" for i in range(3)) + "z/0.jpg,z\n")
    first = choose_probes(tmp_path, people=3, seed=1)
    assert first == choose_probes(tmp_path, people=3, seed=1)
    assert len(first) == 3 and all(p.identity != "z" for p in first)  # z has a single photo
    assert all(p.probe not in p.gallery and len(p.gallery) == 2 for p in first)


# --- real pipelines on real faces -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel():
    pytest.importorskip("dlib")
    from conftest import require_pulled

    from facecloak.verification.panel import Panel

    require_pulled("hse-mnv1", "mbf-arc")
    return Panel()


@pytest.mark.real
@pytest.mark.shared
def test_each_pipeline_matches_the_same_person_and_not_another(panel, lfw_dir: Path) -> None:
    from facecloak.photos.io import read_image

    same = [read_image(lfw_dir / "Aaron_Peirsol" / f"Aaron_Peirsol_000{i}.jpg").rgb for i in (1, 2)]
    other = read_image(lfw_dir / "AJ_Cook" / "AJ_Cook_0001.jpg").rgb
    seen = [panel.read(x) for x in (*same, other)]
    for name, thr in panel.thresholds.items():
        a, b, c = (max(s[name], key=lambda f: f.box[2] - f.box[0]).embedding for s in seen)
        assert float(a @ b) > thr > float(a @ c), name


@pytest.mark.real
@pytest.mark.shared
def test_verdict_of_an_unchanged_photo_is_matched_by_every_recogniser_and_a_blurred_one_is_not(
    panel, lfw_dir: Path
) -> None:
    import cv2

    from facecloak.photos.io import read_image

    rgb = read_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").rgb
    found = panel.read(rgb)["dlib"]
    boxes = [found[0].box]
    refs = panel.references(rgb, boxes)
    same = panel.verify(rgb, boxes, refs, sources=("mbf-arc",))[0]
    assert same.k == same.m == 3 and not same.protected and "dlib" in same.held_out
    assert "arcface" not in same.held_out  # its network made the (hypothetical) protection
    blurred = cv2.GaussianBlur(rgb, (0, 0), 12)
    assert panel.verify(blurred, boxes, refs)[0].protected


@pytest.mark.real
@pytest.mark.shared
def test_python_api_verify_finds_the_faces_itself(panel, lfw_dir: Path) -> None:
    import facecloak
    from facecloak.photos.io import read_image

    rgb = read_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").rgb
    verdicts = facecloak.verify(rgb, rgb.copy())
    assert len(verdicts) >= 1 and all(v.k == v.m >= 1 for v in verdicts)


def test_the_cloaks_per_source_backward_gives_the_gradient_of_the_whole_loss() -> None:
    """`_backward` runs each source on a few faces at a time (memory); its gradient must be the one loss's."""
    from facecloak.protection.cloak import FACES_PER_PASS, _backward

    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    n_faces = FACES_PER_PASS + 1  # two passes per source
    sources = []
    for name, size in (("a", 24), ("b", 32)):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * (size - 2) ** 2, 8))
        matrices = np.array([[[0.5, 0, 4.0 * i], [0, 0.5, 3.0 * i]] for i in range(n_faces)])
        sources.append(SourceModel(name, net, size, matrices, torch.randn(n_faces, 8), None,
                                   decoys=torch.nn.functional.normalize(torch.randn(n_faces, 8), dim=1)))
    patch = torch.from_numpy(rng.uniform(0, 255, (1, 3, 96, 96))).float()
    grids = {s.id: torch.cat([crop_grid(m, (0, 0, 96, 96), s.size) for m in s.matrices]) for s in sources}
    draws = [_Draw(), _Draw(scale=1.03, mirror=True, blur=0.8)]
    settings = CloakSettings(decoy=0.5, look=4.0)
    look = _LookTerm(patch)

    def gradient(split: bool) -> torch.Tensor:
        delta = torch.zeros_like(patch, requires_grad=True)
        x = (patch + delta).clamp(0, 255)
        decoys = {s.id: s.decoys for s in sources}
        if split:
            _backward(sources, x, grids, draws, settings, look=look, decoys=decoys)
        else:  # the loss written out as one expression
            emb = _embeddings(sources, x, grids, draws)
            terms = []
            for s in sources:
                e = torch.nn.functional.normalize(emb[s.id], dim=-1)
                refs = torch.nn.functional.normalize(s.references, dim=1)
                terms.append((e * refs).sum(-1).mean() - settings.decoy * (e * decoys[s.id]).sum(-1).mean())
            (torch.stack(terms).mean() + settings.look * look(x)).backward()
        assert delta.grad is not None
        return delta.grad

    split, whole = gradient(True), gradient(False)
    assert split.abs().max() > 0
    assert torch.allclose(split, whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))


def test_a_cloak_imports_none_of_torchs_compiler_machinery() -> None:
    """`torch.optim` imports `torch._dynamo` and `backward(grad_tensors=...)` the symbolic shapes: 1.5 s and 0.75 s
    of a one-photo run's start-up that the cloak avoids (its own `Adam`, one scalar per backward)."""
    from conftest import run_fresh

    code = (
        "import sys, numpy as np, torch\n"
        "from facecloak.protection.cloak import CloakSettings, SourceModel, cloak\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 8))\n"
        "matrices = np.array([[[0.5, 0, 0], [0, 0.5, 0]]] * 2)\n"
        "source = SourceModel('tiny', net, 32, matrices, torch.randn(2, 8), None)\n"
        "photo = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)\n"
        "mask = np.zeros((64, 64), bool); mask[10:50, 10:50] = True\n"
        "_, steps = cloak(photo, mask, [source], CloakSettings(steps=3, look=1.0, keep=0.5))\n"
        "assert steps == 3\n"
        "loaded = [m for m in ('torch._dynamo', 'torch.fx.experimental.symbolic_shapes') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = run_fresh(code)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.real
@pytest.mark.shared
@pytest.mark.filterwarnings("ignore::FutureWarning")  # insightface calls a deprecated skimage API
def test_the_arcface_verifier_crops_and_embeds_as_insightface_does(lfw_dir: Path) -> None:
    """The verifier restates insightface's `norm_crop` and `ArcFaceONNX.get_feat` (so a protect run does not import
    the package); on a real face at both crop sizes it gives insightface's own crops and embeddings."""
    pytest.importorskip("dlib")
    face_align = pytest.importorskip("insightface.utils.face_align")
    from conftest import require_pulled
    from insightface.model_zoo import get_model

    from facecloak.models.mbf_arc import ONNX_FILE, SOURCE
    from facecloak.models.pull import cached_source_files
    from facecloak.photos.io import read_image
    from facecloak.verification.independent import ArcFaceOnnx, five_points, hog_faces, norm_crop

    require_pulled("mbf-arc")
    rgb = read_image(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").rgb
    five = five_points(rgb, hog_faces(rgb)[0])
    for size in (112, 224):
        ours, theirs = norm_crop(rgb, five, size).astype(int), face_align.norm_crop(rgb, five, size).astype(int)
        assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 1e-3, size
    path = str(cached_source_files(SOURCE, "the test")[ONNX_FILE])
    reference = get_model(path, providers=["CPUExecutionProvider"])
    assert (reference.input_mean, reference.input_std) == (ArcFaceOnnx.MEAN, ArcFaceOnnx.STD)
    bgr = np.ascontiguousarray(face_align.norm_crop(rgb, five, 112)[..., ::-1])
    assert np.array_equal(ArcFaceOnnx(path).features([bgr]), reference.get_feat(bgr))


@pytest.mark.real
def test_loading_every_verifier_imports_no_insightface() -> None:
    """insightface's package init costs a protect run about 1.8 s and 94 MiB of the default's peak
    (`bench/results/speed-protect-verifier-imports`); the verifiers do without it."""
    pytest.importorskip("dlib")
    from conftest import require_pulled, run_fresh

    require_pulled("hse-mnv1", "mbf-arc")
    code = (
        "import sys\n"
        "from facecloak.verification.independent import INDEPENDENT, get_independent\n"
        "names = INDEPENDENT.names()\n"
        "assert {'dlib', 'arcface', 'hse'} <= set(names), names\n"
        "for name in names: get_independent(name)\n"
        "assert 'insightface' not in sys.modules, 'insightface was imported'\n"
    )
    done = run_fresh(code)
    assert done.returncode == 0, done.stderr[-2000:]
