"""`dlib-r29`: architecture, TFJS weight loading, and fidelity against native dlib on real faces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_dlib, require_pulled, run_fresh

from facecloak.errors import PullError
from facecloak.models import MODELS
from facecloak.models import dlib_r29 as d

# (dotted layer name, expected activation shape for one 150x150 input)
EXPECTED_LAYER_SHAPES = {
    "stage32": (1, 32, 35, 35),
    "stage64": (1, 64, 17, 17),
    "stage128": (1, 128, 8, 8),
    "stage256.res2": (1, 256, 4, 4),
}


def _random_model(seed: int = 0) -> d.DlibResNet29:
    """A model with seeded random weights at a scale that keeps activations finite (no global seeding)."""
    gen = torch.Generator().manual_seed(seed)
    model = d.DlibResNet29().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _face_api_tensors_from(model: d.DlibResNet29) -> dict[str, np.ndarray]:
    """The inverse of `state_from_face_api`: a torch state dict in face-api names and TF layouts."""
    torch_to_face_api = {v: k for k, v in d._face_api_to_torch_names().items()}
    leaf_to_face_api = {v: "/".join(k) for k, v in d._LEAF_NAMES.items()}
    out: dict[str, np.ndarray] = {}
    for key, value in model.state_dict().items():
        array = value.numpy()
        if key == "fc.weight":
            out["fc"] = array.T.copy()
            continue
        parts = key.split(".")
        leaf = ".".join(parts[-2:])
        module_parts = parts[:-2]
        # "stage64.down.conv1" -> block "stage64.down", sub "conv1"; "stem" -> block "stem"
        block = ".".join(module_parts[:2]) if module_parts[0] != "stem" else "stem"
        sub = module_parts[2:] if module_parts[0] != "stem" else []
        name = "/".join([torch_to_face_api[block], *sub, leaf_to_face_api[leaf]])
        out[name] = array.transpose(2, 3, 1, 0).copy() if leaf == "conv.weight" else array.copy()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Architecture and contract (no weights needed)


def test_spec_is_registered_with_the_dlib_contract() -> None:
    spec = MODELS.get("dlib-r29")
    assert spec is d.SPEC
    assert (spec.input_size, spec.embedding_dim, spec.template) == (150, 128, "dlib150")
    assert spec.mean == (122.782, 117.001, 104.298)
    assert spec.std == (256.0, 256.0, 256.0)
    pinned = {f.path: f.sha256 for f in spec.sources[0].files}
    assert pinned[d.BIN_PATH] == "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"
    assert spec.sources[0].label == "@vladmandic/face-api@1.7.15 (npm)"


def test_default_layers_give_4d_activations_of_the_expected_sizes() -> None:
    model = _random_model()
    captured: dict[str, tuple[int, ...]] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, tuple(out.shape))
        )
        for name in d.SPEC.default_layers
    ]
    try:
        out = model(torch.full((1, 3, 150, 150), 128.0))
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (1, 128)
    assert captured == EXPECTED_LAYER_SHAPES
    assert tuple(EXPECTED_LAYER_SHAPES) == d.SPEC.default_layers


def test_parameter_count_matches_dlib_resnet29() -> None:
    # 5.6 M parameters in dlib_face_recognition_resnet_model_v1 (conv weights + biases + affine + fc).
    assert sum(p.numel() for p in d.DlibResNet29().parameters()) == 5_614_592


def test_normalisation_is_dlib_mean_over_256_inside_the_module() -> None:
    model = _random_model()
    seen: list[torch.Tensor] = []
    handle = model.stem.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        pixels = torch.tensor([122.782 + 256.0, 117.001, 104.298 - 128.0]).view(1, 3, 1, 1).expand(1, 3, 150, 150)
        model(pixels)
    finally:
        handle.remove()
    assert torch.allclose(seen[0][0, :, 0, 0], torch.tensor([1.0, 0.0, -0.5]), atol=1e-6)


def test_down_block_shortcut_is_avg_pooled_and_zero_padded_top_left() -> None:
    # With the branch silenced (zero conv and affine), the block is relu(zero-padded 2x2 average pool of x).
    block = d.DownBlock(1, 2)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    out = block(x)
    # 4x4 input: the branch is 1x1 (3x3 stride 2, no padding), the shortcut 2x2: the sum takes the larger size.
    assert out.shape == (1, 2, 2, 2)
    assert torch.equal(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))  # the extra channel of the shortcut is zero-padded


def test_down_block_adds_the_branch_at_the_top_left_of_a_larger_shortcut() -> None:
    block = d.DownBlock(1, 1)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        block.conv2.scale.bias.fill_(100.0)  # the branch becomes a constant 100 over its 1x1 map
    out = block(torch.zeros(1, 1, 4, 4))
    assert torch.equal(out[0, 0], torch.tensor([[100.0, 0.0], [0.0, 0.0]]))


def test_gradients_reach_the_input_pixels() -> None:
    model = _random_model()
    x = torch.full((1, 3, 150, 150), 120.0, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    assert grad.shape == x.shape
    assert float(grad.abs().sum()) > 0.0


# ---------------------------------------------------------------------------------------------------------------
# TFJS manifest + bin reading and name mapping


def _write_manifest(folder: Path, weights: list[dict], payload: bytes) -> Path:
    (folder / "w.bin").write_bytes(payload)
    manifest = folder / "m.json"
    manifest.write_text(json.dumps([{"paths": ["w.bin"], "weights": weights}]))
    return manifest


def test_tfjs_reader_dequantises_uint8_and_reads_float32(tmp_path: Path) -> None:
    q = np.array([0, 1, 255, 10], dtype=np.uint8)
    f = np.array([1.5, -2.0], dtype="<f4")
    manifest = _write_manifest(
        tmp_path,
        [
            {"name": "a", "shape": [2, 2], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
            {"name": "b", "shape": [2], "dtype": "float32"},
        ],
        q.tobytes() + f.tobytes(),
    )
    tensors = d.read_tfjs_weights(manifest, tmp_path)
    np.testing.assert_allclose(tensors["a"], [[-1.0, -0.5], [126.5, 4.0]])
    np.testing.assert_array_equal(tensors["b"], f)
    assert tensors["a"].dtype == np.float32


def test_tfjs_reader_refuses_leftover_or_missing_bytes(tmp_path: Path) -> None:
    entry = {"name": "b", "shape": [2], "dtype": "float32"}
    with pytest.raises(PullError, match="left over"):
        d.read_tfjs_weights(_write_manifest(tmp_path, [entry], bytes(12)), tmp_path)
    with pytest.raises(PullError, match="past the end"):
        d.read_tfjs_weights(_write_manifest(tmp_path, [entry], bytes(4)), tmp_path)


def test_tfjs_reader_refuses_unknown_stored_dtypes(tmp_path: Path) -> None:
    entry = {"name": "c", "shape": [1], "dtype": "float32", "quantization": {"dtype": "float16"}}
    with pytest.raises(PullError, match="unsupported stored dtype"):
        d.read_tfjs_weights(_write_manifest(tmp_path, [entry], bytes(2)), tmp_path)


def test_face_api_names_and_layouts_round_trip_into_the_module() -> None:
    source = _random_model(seed=1)
    state = d.state_from_face_api(_face_api_tensors_from(source))
    target = d.DlibResNet29()
    target.load_state_dict(state, strict=True)
    x = torch.linspace(0, 255, 3 * 150 * 150).view(1, 3, 150, 150)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_face_api_filters_are_transposed_from_hwio() -> None:
    filters = np.arange(7 * 7 * 3 * 32, dtype=np.float32).reshape(7, 7, 3, 32)
    state = d.state_from_face_api({"conv32_down/conv/filters": filters})
    weight = state["stem.conv.weight"]
    assert weight.shape == (32, 3, 7, 7)
    assert float(weight[5, 2, 1, 4]) == float(filters[1, 4, 2, 5])


def test_unknown_face_api_tensor_names_are_refused() -> None:
    with pytest.raises(PullError, match="unexpected tensor"):
        d.state_from_face_api({"conv512_1/conv1/conv/filters": np.zeros((3, 3, 1, 1), np.float32)})
    with pytest.raises(PullError, match="unexpected tensor"):
        d.state_from_face_api({"conv32_1/conv1/bn/gamma": np.zeros(32, np.float32)})


# ---------------------------------------------------------------------------------------------------------------
# Fidelity against native dlib on real faces

FIDELITY_MIN_COSINE = 0.999  # measured min 0.99954 over n=31 faces; the gap is face-api's uint8 quantisation
LFW_PHOTOS = ("George_W_Bush/George_W_Bush_0001.jpg", "Colin_Powell/Colin_Powell_0001.jpg",
              "Serena_Williams/Serena_Williams_0001.jpg", "Gloria_Macapagal_Arroyo/Gloria_Macapagal_Arroyo_0001.jpg")
DEEPFACE_PEOPLE = ("df01", "df02", "df03", "df05")


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    # Detection is slow on big photos and these faces are large: 800 px on the long side is plenty.
    rgb.thumbnail((800, 800))
    return np.asarray(rgb)


def _dlib_chips(paths: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """dlib's own pipeline: HOG detector (largest face), 5-point shape, 150 px chip with padding 0.25,
    and native descriptors computed on that chip. Returns (chips, descriptors); photos without a face fail."""
    dlib, files = require_dlib("the native-dlib comparison")
    detector = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(files.shape5)
    recogniser = dlib.face_recognition_model_v1(files.descriptor)
    chips, descriptors = [], []
    for path in paths:
        rgb = _read_rgb(path)
        boxes = list(detector(rgb, 1))
        assert boxes, f"dlib found no face in {path.name}"
        box = max(boxes, key=lambda r: r.width() * r.height())
        chip = np.asarray(dlib.get_face_chip(rgb, shape5(rgb, box), size=150, padding=0.25))
        chips.append(chip)
        descriptors.append(np.asarray(recogniser.compute_face_descriptor(chip, 0)))
    return chips, descriptors


@pytest.mark.real
@pytest.mark.shared
def test_port_matches_native_dlib_on_real_faces(shared_faces: Path) -> None:
    require_pulled("dlib-r29")
    from facecloak.models import load_model

    paths = [shared_faces / "lfw" / p for p in LFW_PHOTOS]
    with open(shared_faces / "deepface" / "manifest.csv", newline="") as fh:
        first_of: dict[str, Path] = {}
        for row in csv.DictReader(fh):
            first_of.setdefault(row["identity"], shared_faces / "deepface" / row["path"])
    paths += [first_of[p] for p in DEEPFACE_PEOPLE]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"photos missing from the shared set: {missing[0]}")

    chips, native = _dlib_chips(paths)
    model = load_model("dlib-r29")
    with torch.no_grad():
        port = model(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    native_arr = np.stack(native)
    cosine = np.sum(port * native_arr, 1) / (np.linalg.norm(port, axis=1) * np.linalg.norm(native_arr, axis=1))
    assert len(cosine) == 8
    assert cosine.min() >= FIDELITY_MIN_COSINE, f"cosines {np.round(cosine, 5)}"
    # Raw (unnormalised) descriptors agree in scale too, not only in direction.
    np.testing.assert_allclose(np.linalg.norm(port, axis=1), np.linalg.norm(native_arr, axis=1), rtol=0.01)


def test_import_dlib_finds_the_model_files_without_importing_their_package() -> None:
    """`face_recognition_models` imports the deprecated pkg_resources only to return three paths; facecloak finds
    them itself (a fresh interpreter, so no other test has imported either)."""
    pytest.importorskip("dlib")
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models is not installed (pip install 'facecloak[dlib]')")

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from facecloak.models.blackbox import import_dlib\n"
        "dlib, files = import_dlib('a test')\n"
        "assert all(Path(p).is_file() for p in (files.shape5, files.shape68, files.descriptor))\n"
        "loaded = [m for m in ('face_recognition_models', 'pkg_resources') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = run_fresh(code)
    assert done.returncode == 0, done.stderr[-2000:]


def test_import_dlib_without_its_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dlib")
    import importlib.util

    from facecloak.errors import FacecloakError
    from facecloak.models.blackbox import import_dlib

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(FacecloakError, match=r"the test needs dlib and its models: pip install 'facecloak\[dlib\]'"):
        import_dlib("the test")


def test_import_dlib_names_a_missing_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dlib")
    import importlib.machinery
    import importlib.util

    from facecloak.errors import FacecloakError
    from facecloak.models.blackbox import import_dlib

    (tmp_path / "models").mkdir()
    for name in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
        (tmp_path / "models" / name).write_bytes(b"")
    spec = importlib.machinery.ModuleSpec("face_recognition_models", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(FacecloakError, match=r"missing .*shape_predictor_68_face_landmarks\.dat"):
        import_dlib("the test")


@pytest.mark.real
def test_the_cached_face_detector_is_dlibs_own_and_a_damaged_copy_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verifiers load dlib's HOG detector from a saved copy (1 ms instead of 0.34 s): the copy must detect
    exactly what `get_frontal_face_detector()` detects, be used on the next run, and be rebuilt when damaged."""
    dlib, _ = require_dlib("the cached face detector")
    from facecloak.models.blackbox import frontal_face_detector
    from facecloak.photos.bundled import bundled_photos

    monkeypatch.setenv("FACECLOAK_HOME", str(tmp_path))
    own = dlib.get_frontal_face_detector()
    frontal_face_detector(dlib)
    (saved,) = (tmp_path / "dlib").glob("*.svm")
    with monkeypatch.context() as m:  # the next run does not build it
        m.setattr(dlib, "get_frontal_face_detector", lambda: pytest.fail("rebuilt although a good copy was saved"))
        cached = frontal_face_detector(dlib)
    for rgb in list(bundled_photos().values())[:3]:
        rects, scores, kinds = own.run(rgb, 1, -0.5)  # below the threshold too: every candidate and its score
        assert rects, "no candidate at all: the comparison would be empty"
        assert cached.run(rgb, 1, -0.5) == (rects, scores, kinds)
    good = saved.read_bytes()
    saved.write_bytes(good[: len(good) // 2])  # a torn write or a damaged disk
    rebuilt = frontal_face_detector(dlib)
    assert [p.name for p in (tmp_path / "dlib").glob("*.svm")] == [saved.name] and saved.read_bytes() == good
    rgb = next(iter(bundled_photos().values()))
    assert rebuilt.run(rgb, 1, 0.0) == own.run(rgb, 1, 0.0)


@pytest.mark.real
def test_the_face_detector_is_built_when_the_cache_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache folder that cannot be created (here: under a file) costs the saved copy, never the detector."""
    dlib, _ = require_dlib("the cached face detector")
    from facecloak.models.blackbox import frontal_face_detector
    from facecloak.photos.bundled import bundled_photos

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FACECLOAK_HOME", str(blocker / "home"))
    detector = frontal_face_detector(dlib)
    rgb = next(iter(bundled_photos().values()))
    assert detector.run(rgb, 1, 0.0) == dlib.get_frontal_face_detector().run(rgb, 1, 0.0)
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]
