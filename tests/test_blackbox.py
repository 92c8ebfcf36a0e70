"""Black-box recognisers: the `onnx:` path on hand-built tiny graphs, name resolution, dlib, and the originals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from facecloak.errors import ConfigError, FacecloakError, ImageError, ModelNotPulledError
from facecloak.models.blackbox import RECOGNISERS, Recogniser, get_recogniser, onnx_recogniser
from leam.registry import UnknownNameError
from tests.conftest import require_pulled


def _channel_mean_onnx(path: Path, shape: list, layout: str = "NCHW") -> Path:
    """A weightless graph whose 'embedding' is the per-channel mean of its input: (N, 3)."""
    import onnx
    from onnx import TensorProto, helper

    axes = [2, 3] if layout == "NCHW" else [1, 2]
    node = helper.make_node("ReduceMean", ["image"], ["embedding"], axes=axes, keepdims=0)
    graph = helper.make_graph(
        [node], "channel_mean",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [shape[0], 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    onnx.save(model, str(path))
    return path


def _solid_crops(colours: list[tuple[int, int, int]], size: int = 112) -> np.ndarray:
    return np.stack([np.full((size, size, 3), c, np.uint8) for c in colours])


COLOURS = [(255, 0, 128), (0, 255, 64), (30, 60, 90)]


def _expected(colours: list[tuple[int, int, int]], mean: float = 127.5, std: float = 127.5) -> np.ndarray:
    return (np.array(colours, np.float32) - mean) / std


def test_onnx_recogniser_dynamic_batch_nchw_default_normalisation(tmp_path: Path) -> None:
    path = _channel_mean_onnx(tmp_path / "m.onnx", ["N", 3, 112, 112])
    rec = get_recogniser(f"onnx:{path}")
    assert (rec.template, rec.input_size, rec.id) == ("arcface112", 112, f"onnx:{path}")
    out = rec.embed(_solid_crops(COLOURS))
    assert out.dtype == np.float32 and out.shape == (3, 3)
    # ReduceMean over 112x112 floats rounds at ~1e-4; a wrong mean (127 vs 127.5) would be off by 4e-3.
    np.testing.assert_allclose(out, _expected(COLOURS), atol=5e-4)
    assert out[0].tolist() == pytest.approx([1.0, -1.0, 0.5 / 127.5], abs=1e-6)


def test_onnx_recogniser_fixed_batch_is_chunked_and_padding_dropped(tmp_path: Path) -> None:
    path = _channel_mean_onnx(tmp_path / "m.onnx", [2, 3, 96, 96])
    rec = onnx_recogniser(path, mean=127.0, std=128.0)
    assert rec.input_size == 96  # read from the graph
    out = rec.embed(_solid_crops(COLOURS, 96))  # 3 crops through a batch-2 graph
    np.testing.assert_allclose(out, _expected(COLOURS, 127.0, 128.0), atol=5e-4)


def test_onnx_recogniser_nhwc_and_bgr(tmp_path: Path) -> None:
    path = _channel_mean_onnx(tmp_path / "m.onnx", [1, 112, 112, 3], layout="NHWC")
    rec = onnx_recogniser(path, colour_order="BGR")
    out = rec.embed(_solid_crops(COLOURS))
    np.testing.assert_allclose(out, _expected(COLOURS)[:, ::-1], atol=5e-4)


def test_recogniser_refuses_wrong_crops(tmp_path: Path) -> None:
    rec = get_recogniser(f"onnx:{_channel_mean_onnx(tmp_path / 'm.onnx', ['N', 3, 112, 112])}")
    with pytest.raises(ImageError, match=r"uint8 RGB crops of shape \(N, 112, 112, 3\)"):
        rec.embed(np.zeros((1, 112, 112, 3), np.float32))
    with pytest.raises(ImageError, match="arcface112"):
        rec.embed(np.zeros((1, 150, 150, 3), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        rec.embed(np.zeros((0, 112, 112, 3), np.uint8))


def test_onnx_recogniser_rejects_non_image_graphs_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a fixed square image size"):
        onnx_recogniser(_channel_mean_onnx(tmp_path / "a.onnx", ["N", 3, "H", "W"]))
    with pytest.raises(ConfigError, match="not found"):
        get_recogniser(f"onnx:{tmp_path / 'absent.onnx'}")


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(UnknownNameError, match="did you mean mbf-arc-onnx"):
        get_recogniser("mbf-arc-onx")


def test_registered_names() -> None:
    assert {"mbf-arc-onnx", "dlib-native"} <= set(RECOGNISERS.names())


def test_mbf_arc_onnx_needs_a_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECLOAK_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelNotPulledError, match="mbf-arc-onnx"):
        get_recogniser("mbf-arc-onnx")


def test_dlib_native_without_dlib_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(FacecloakError, match=r"facecloak\[dlib\]"):
        get_recogniser("dlib-native")


# --- real originals on real faces ------------------------------------------------------------------------------


def _lfw_crops(lfw_dir: Path, size: int, people: tuple[str, ...]) -> np.ndarray:
    """Central size x size crops of LFW photos (250x250, face centred): uint8 RGB (N, size, size, 3)."""
    import cv2

    lo = (250 - size) // 2
    crops = []
    for person in people:
        path = lfw_dir / person / f"{person}_0001.jpg"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            pytest.skip(f"LFW photo missing: {path}")
        crops.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[lo:lo + size, lo:lo + size])
    return np.stack(crops)


PEOPLE = ("George_W_Bush", "Colin_Powell", "Serena_Williams")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.real
def test_mbf_arc_onnx_agrees_with_the_torch_port(lfw_dir: Path) -> None:
    require_pulled("mbf-arc")
    crops = _lfw_crops(lfw_dir, 112, PEOPLE)
    black_box = get_recogniser("mbf-arc-onnx")
    port = get_recogniser("mbf-arc")  # a MODELS id resolves to the differentiable model
    assert (black_box.template, black_box.input_size) == (port.template, port.input_size) == ("arcface112", 112)
    a, b = black_box.embed(crops), port.embed(crops)
    assert a.shape == b.shape == (3, 512)
    assert _cosine(a, b).min() >= 0.999
    assert _cosine(a[:1], a[1:2])[0] < 0.9  # different people stay apart


@pytest.mark.real
def test_differentiable_recogniser_batching_does_not_change_embeddings(lfw_dir: Path) -> None:
    require_pulled("mbf-tf")
    from facecloak.models.blackbox import differentiable_recogniser

    crops = _lfw_crops(lfw_dir, 112, PEOPLE)
    one_by_one = differentiable_recogniser("mbf-tf", batch_size=1)
    together = differentiable_recogniser("mbf-tf")
    assert isinstance(together, Recogniser) and together.id == "mbf-tf"
    np.testing.assert_allclose(one_by_one.embed(crops), together.embed(crops), atol=1e-4)


def test_dlib_native_embeds_chips(lfw_dir: Path) -> None:
    try:
        rec = get_recogniser("dlib-native")
    except FacecloakError as exc:
        pytest.skip(str(exc))
    assert (rec.template, rec.input_size) == ("dlib150", 150)
    crops = _lfw_crops(lfw_dir, 150, PEOPLE)
    out = rec.embed(np.concatenate([crops, crops[:1]]))
    assert out.shape == (4, 128) and np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], out[3])  # deterministic (no jitter)
    assert np.linalg.norm(out[0] - out[1]) > 0.1  # different people differ
