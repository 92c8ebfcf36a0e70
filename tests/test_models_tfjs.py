"""The TFJS-graph recognition models `hse-mnv1` and `mobileface`: reader, layout, fidelity, gradients.

Fidelity references are embeddings that TensorFlow.js itself computed on crops of `skimage.data.astronaut()`
(see tests/fixtures/tfjs/README.md). Running this file as a script writes those input crops for the
Node.js reference script:

    python tests/test_models_tfjs.py write-inputs /tmp/tfjsref/inputs
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facecloak.errors import ChecksumError, ModelNotPulledError, PullError
from facecloak.models import get_spec
from facecloak.models.tfjs import depthwise_kernel, read_weights

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tfjs"
TFJS_MODELS = ("hse-mnv1", "mobileface")

# Square boxes (centre x, centre y, side) in astronaut() pixels around the face (eyes near y=110, x 203..243):
# a tight, a loose and a shifted crop, so that the references cover more than one framing.
ASTRONAUT_BOXES: tuple[tuple[float, float, float], ...] = (
    (223.0, 128.0, 128.0),
    (223.0, 125.0, 170.0),
    (212.0, 118.0, 112.0),
)


def astronaut_crops(size: int) -> np.ndarray:
    """The reference input crops: (3, size, size, 3) uint8 RGB, NHWC, from skimage's bundled astronaut photo.

    Each box is cut out and resized with torch's antialiased bilinear interpolation, then rounded to uint8,
    so the crops depend only on the pinned torch and the photo shipped with scikit-image.
    """
    from skimage.data import astronaut

    photo = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float()
    crops = []
    for cx, cy, side in ASTRONAUT_BOXES:
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        box = photo[:, :, y0 : y0 + round(side), x0 : x0 + round(side)]
        resized = torch.nn.functional.interpolate(box, size=(size, size), mode="bilinear", antialias=True,
                                                  align_corners=False)
        crops.append(resized.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy())
    return np.stack(crops)


def crops_sha256(crops: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(crops, dtype=np.uint8).tobytes()).hexdigest()


def write_inputs(folder: Path) -> None:
    """Step 1 of the reference regeneration: `<model>.bin` = float32 NHWC crops, plus `<model>.json` shape."""
    folder.mkdir(parents=True, exist_ok=True)
    for model_id in TFJS_MODELS:
        size = get_spec(model_id).input_size
        crops = astronaut_crops(size)
        (folder / f"{model_id}.bin").write_bytes(crops.astype("<f4").tobytes())
        meta = {"shape": list(crops.shape), "sha256": crops_sha256(crops)}
        (folder / f"{model_id}.json").write_text(json.dumps(meta))


# --- reader and TF semantics (no weights needed) -----------------------------------------------------------


def test_read_weights_decodes_float16_uint8_and_float32_in_manifest_order() -> None:
    half = np.array([1.5, -2.0, 0.25], dtype="<f2")
    codes = np.array([0, 10, 255], dtype="u1")
    plain = np.array([[3.0, 4.0]], dtype="<f4")
    manifest = [{
        "paths": ["a.bin", "b.bin"],
        "weights": [
            {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            {"name": "q", "shape": [3], "dtype": "float32",
             "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
            {"name": "f", "shape": [1, 2], "dtype": "float32"},
            {"name": "i", "shape": [], "dtype": "int32"},
        ],
    }]
    data = half.tobytes() + codes.tobytes() + plain.tobytes() + np.array([7], "<i4").tobytes()
    got = read_weights(manifest, {"a.bin": data[:5], "b.bin": data[5:]})  # a tensor may straddle two shards
    np.testing.assert_array_equal(got["h"], [1.5, -2.0, 0.25])
    np.testing.assert_allclose(got["q"], [-1.0, 4.0, 126.5])
    np.testing.assert_array_equal(got["f"], [[3.0, 4.0]])
    assert got["i"].shape == () and int(got["i"]) == 7


def test_read_weights_refuses_size_mismatch() -> None:
    manifest = [{"paths": ["a.bin"], "weights": [{"name": "f", "shape": [2], "dtype": "float32"}]}]
    with pytest.raises(PullError, match="shorter"):
        read_weights(manifest, {"a.bin": b"\0" * 4})
    with pytest.raises(PullError, match="does not name"):
        read_weights(manifest, {"a.bin": b"\0" * 12})
    with pytest.raises(PullError, match="missing"):
        read_weights(manifest, {})


def test_depthwise_kernel_layout_matches_grouped_conv() -> None:
    rng = np.random.default_rng(0)
    hwcm = rng.normal(size=(3, 3, 2, 1)).astype(np.float32)
    weight = depthwise_kernel(hwcm)
    assert weight.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(weight[1, 0].numpy(), hwcm[:, :, 1, 0])


# --- real weights ------------------------------------------------------------------------------------------


def _source_files(model_id: str) -> dict[str, Path]:
    from facecloak.models.pull import cached_source_files

    spec = get_spec(model_id)
    try:
        return cached_source_files(spec.sources[0], model_id)
    except (ModelNotPulledError, ChecksumError) as exc:
        pytest.skip(str(exc))  # says which model and the command to run


def _model(model_id: str) -> torch.nn.Module:
    spec = get_spec(model_id)
    module = spec.build()
    module.load_state_dict(spec.convert(_source_files(model_id)), strict=True)
    return module.eval()


def _nchw(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().contiguous()


@pytest.mark.real
@pytest.mark.parametrize("model_id", TFJS_MODELS)
def test_matches_tensorflow_js(model_id: str) -> None:
    reference = json.loads((FIXTURES / f"{model_id}.json").read_text())
    spec = get_spec(model_id)
    crops = astronaut_crops(spec.input_size)
    # Another torch/scikit-image release may round a few pixels of the crops differently; then only the
    # cosine bound applies. On identical inputs the port agrees with TFJS to float rounding (~2e-6 relative).
    same_inputs = crops_sha256(crops) == reference["input_sha256"]
    expected = torch.tensor(reference["embeddings"], dtype=torch.float32)
    with torch.no_grad():
        got = _model(model_id)(_nchw(crops))
    assert got.shape == expected.shape == (len(ASTRONAUT_BOXES), spec.embedding_dim)
    cosines = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    assert cosines.min().item() >= 0.999, cosines.tolist()
    # Same scale too, not only the same direction: the raw embedding is the contract.
    torch.testing.assert_close(got.norm(dim=1), expected.norm(dim=1), rtol=1e-3, atol=1e-3)
    if same_inputs:
        relative_error = (got - expected).norm(dim=1) / expected.norm(dim=1)
        assert relative_error.max().item() < 1e-4, relative_error.tolist()


@pytest.mark.real
@pytest.mark.parametrize("model_id", TFJS_MODELS)
def test_gradients_reach_input_and_every_default_layer(model_id: str) -> None:
    spec = get_spec(model_id)
    model = _model(model_id)
    x = _nchw(astronaut_crops(spec.input_size)[:1]).requires_grad_(True)
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in spec.default_layers
    ]
    try:
        embedding = model(x)
    finally:
        for h in handles:
            h.remove()
    score = torch.nn.functional.cosine_similarity(embedding, embedding.detach() + 1.0, dim=1).sum()
    grads = torch.autograd.grad(score, [x, *(captured[n] for n in spec.default_layers)])
    for name, act, grad in zip(("input", *spec.default_layers), (x, *captured.values()), grads, strict=True):
        assert act.dim() == 4 and act.shape[0] == 1, f"{name}: activations must be (N, C, h, w)"
        assert grad.shape == act.shape
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{name}: zero or non-finite gradient"


@pytest.mark.real
@pytest.mark.parametrize("model_id", TFJS_MODELS)
def test_default_layers_span_the_network(model_id: str) -> None:
    spec = get_spec(model_id)
    model = _model(model_id)
    shapes: list[tuple[int, ...]] = []
    handles = [
        model.get_submodule(n).register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for n in spec.default_layers
    ]
    try:
        with torch.no_grad():
            out = model(torch.full((2, 3, spec.input_size, spec.input_size), 128.0))
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (2, spec.embedding_dim)
    assert len(shapes) == 4
    sides = [s[2] for s in shapes]
    assert sides == sorted(sides, reverse=True) and sides[0] > sides[-1], shapes


@pytest.mark.real
def test_a_channels_last_model_loads_that_layout_and_embeds_as_the_plain_one() -> None:
    """`ModelSpec.channels_last` changes only the weights' memory layout: the same embeddings and input gradients
    (to float rounding), from inputs in either layout."""
    from conftest import require_pulled

    from facecloak.models import load_model

    require_pulled("hse-mnv1")
    assert get_spec("hse-mnv1").channels_last
    fast = load_model("hse-mnv1")
    weights = [p for p in fast.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    plain = _model("hse-mnv1")
    x = _nchw(astronaut_crops(224)[:2])
    for given in (x, x.contiguous(memory_format=torch.channels_last)):
        a, b = given.clone().requires_grad_(True), given.clone().requires_grad_(True)
        ya, yb = fast(a), plain(b)
        torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-3)
        ya.sum().backward()
        yb.sum().backward()
        assert a.grad is not None and b.grad is not None
        # Rounding flips a few ReLU6 units at their kinks (0.26 % of the gradient's norm here): compare wholes.
        assert float((a.grad - b.grad).norm() / b.grad.norm()) < 1e-2


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "write-inputs":
        sys.exit("usage: python tests/test_models_tfjs.py write-inputs FOLDER")
    write_inputs(Path(sys.argv[2]))
