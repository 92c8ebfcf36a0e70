"""mbf-arc and mbf-tf: architecture contracts (no weights), converter checks, and fidelity to the originals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facecloak.errors import PullError
from facecloak.models import get_spec, load_model
from tests.conftest import require_pulled

MODEL_IDS = ("mbf-arc", "mbf-tf")
LFW_PEOPLE = ("George_W_Bush", "Colin_Powell", "Serena_Williams", "Tony_Blair", "Angelina_Jolie", "Hugo_Chavez")


# --- no weights needed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_architecture_output_shape_and_default_layers(model_id: str) -> None:
    spec = get_spec(model_id)
    torch.manual_seed(0)  # the random init only; the test asserts shapes
    module = spec.build().eval()
    x = torch.rand(2, 3, spec.input_size, spec.input_size) * 255
    assert module(x).shape == (2, spec.embedding_dim)
    assert len(spec.default_layers) == 4
    activations: dict[str, torch.Tensor] = {}
    handles = [
        module.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: activations.update({name: out}))
        for name in spec.default_layers
    ]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    shapes = [tuple(activations[name].shape) for name in spec.default_layers]
    # early -> late, one layer per resolution: stem, stage1, stage2, head (last map before the embedding)
    assert shapes == [(2, 64, 56, 56), (2, 64, 28, 28), (2, 128, 14, 14), (2, 512, 7, 7)]


def test_mbf_arc_converter_rejects_a_different_graph(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from facecloak.models import mbf_arc

    weight = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["input", "w"], ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 112, 112])],
        initializer=[weight],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), str(path))
    with pytest.raises(PullError, match="not the expected MobileFaceNet graph"):
        mbf_arc.convert({mbf_arc.ONNX_FILE: path})


# --- real weights and real faces ------------------------------------------------------------------------------


def _lfw_crops(lfw_dir: Path) -> np.ndarray:
    """Six LFW photos (250x250, face centred), central 112x112 crop: uint8 RGB (6, 112, 112, 3)."""
    import cv2

    crops = []
    for person in LFW_PEOPLE:
        path = lfw_dir / person / f"{person}_0001.jpg"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            pytest.skip(f"LFW photo missing: {path}")
        crops.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[69:181, 69:181])
    return np.stack(crops)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _torch_embed(model_id: str, crops: np.ndarray) -> np.ndarray:
    module = load_model(model_id)
    with torch.no_grad():
        return module(torch.from_numpy(crops).permute(0, 3, 1, 2).float()).numpy()


@pytest.mark.real
def test_mbf_arc_matches_onnxruntime_on_faces(lfw_dir: Path) -> None:
    require_pulled("mbf-arc")
    import onnxruntime as ort

    from facecloak.models import mbf_arc
    from facecloak.models.pull import cached_source_files

    crops = _lfw_crops(lfw_dir)
    onnx_path = cached_source_files(mbf_arc.SOURCE, "mbf-arc")[mbf_arc.ONNX_FILE]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = (crops.astype(np.float32).transpose(0, 3, 1, 2) - 127.0) / 128.0  # the package's JS preprocessing
    reference = np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])  # batch 1
    ours = _torch_embed("mbf-arc", crops)
    assert ours.shape == reference.shape == (len(LFW_PEOPLE), 512)
    assert _cosine(ours, reference).min() >= 0.999
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max())


@pytest.mark.real
def test_mbf_tf_matches_tflite_on_faces(lfw_dir: Path) -> None:
    require_pulled("mbf-tf")
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter", reason="needs facecloak[tflite]")

    from facecloak.models import mbf_tf
    from facecloak.models.pull import cached_source_files

    crops = _lfw_crops(lfw_dir)
    path = cached_source_files(mbf_tf.SOURCE, "mbf-tf")[mbf_tf.TFLITE_FILE]
    interpreter = interpreter_mod.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = (crops.astype(np.float32) - 127.5) / 128.0  # NHWC, the package's Kotlin preprocessing
    reference = []
    for start in range(0, len(x), 2):  # the file's batch is fixed at 2
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(x[start:start + 2]))
        interpreter.invoke()
        reference.append(interpreter.get_tensor(out["index"]).copy())
    reference_arr = np.concatenate(reference)
    ours = _torch_embed("mbf-tf", crops)
    assert ours.shape == reference_arr.shape == (len(LFW_PEOPLE), 192)
    assert _cosine(ours, reference_arr).min() >= 0.999
    np.testing.assert_allclose(ours, reference_arr, atol=1e-4 * np.abs(reference_arr).max())


@pytest.mark.real
@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_pulled_model_is_differentiable_at_input_and_default_layers(model_id: str, lfw_dir: Path) -> None:
    require_pulled(model_id)
    spec = get_spec(model_id)
    module = load_model(model_id)
    x = torch.from_numpy(_lfw_crops(lfw_dir)[:2]).permute(0, 3, 1, 2).float().requires_grad_(True)
    activations: dict[str, torch.Tensor] = {}
    handles = [
        module.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: activations.update({name: out}))
        for name in spec.default_layers
    ]
    try:
        emb = module(x)
    finally:
        for h in handles:
            h.remove()
    score = nn.functional.cosine_similarity(emb[0:1], emb[1:2]).sum()
    grads = torch.autograd.grad(score, [x, *(activations[n] for n in spec.default_layers)])
    assert grads[0].shape == x.shape and grads[0].abs().sum() > 0
    for name, grad in zip(spec.default_layers, grads[1:], strict=True):
        assert activations[name].ndim == 4, name
        assert grad.abs().sum() > 0, f"no gradient reaches {name}"
    # Parameters stay frozen: load_model must not let a LEAM pass train the model.
    assert not any(p.requires_grad for p in module.parameters())
